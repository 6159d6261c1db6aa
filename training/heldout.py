"""Write held-out synthetic scenes as photo folders with their ground truth, for checks that run
where torch and the renderer are not (the Blender end-to-end test, a user comparing by eye).

    python -m training.heldout --out /tmp/heldout --views 8 --resolution 64 [--index 0 1 2 ...]

Writes, for each scene index K, ``OUT/scene_KK/view_00.png`` … (the network's input images exactly: the held-out sample's colours,
photo size = ``--resolution``, so the pipeline neither crops nor resizes and the network grid is the
photo's pixels) and ``OUT/scene_KK/truth.npz``:

- ``pts3d`` float32 [V,H,W,3]: true world points, OpenCV frame of view 0 (the network's frame);
- ``valid`` bool [V,H,W]: pixels that see a surface (the rest is sky);
- ``cam2world`` float32 [V,4,4]: true cameras in view 0's frame (OpenCV axes);
- ``intrinsics`` float32 [V,3,3]: in the bundle's convention (the photo spans [0,W]×[0,H]).

The scenes are those of :func:`training.evaluate.evaluate` (``HELDOUT_SEED``), never trained on.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .cameras import centre_convention
from .dataset import SampleKey, SyntheticScenes
from .evaluate import HELDOUT_SEED


def write_heldout_scene(out: Path, index: int = 0, views: int = 8, resolution: int = 64) -> list[Path]:
    """Held-out scene `index` with `views` views as PNGs + ``truth.npz`` in `out`; returns the photos."""
    sample = SyntheticScenes((resolution, resolution), seed=HELDOUT_SEED)[SampleKey(index, views, 0)]
    rgb = ((sample["img"].permute(0, 2, 3, 1) * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for k in range(views):
        photos.append(out / f"view_{k:02d}.png")
        Image.fromarray(rgb[k]).save(photos[-1])
    np.savez(out / "truth.npz", pts3d=sample["pts3d"].numpy(), valid=sample["valid"].numpy(),
             cam2world=sample["cam2world"].numpy(), intrinsics=centre_convention(sample["intrinsics"]).numpy())
    return photos


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.heldout", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--index", type=int, nargs="+", default=[0], help="which held-out scenes")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--resolution", type=int, default=64, help="square photo size (the model's input size)")
    args = p.parse_args(argv)
    for index in args.index:
        folder = args.out / f"scene_{index:02d}"
        photos = write_heldout_scene(folder, index, args.views, args.resolution)
        print(f"{len(photos)} photos and truth.npz in {folder}")


if __name__ == "__main__":
    main()
