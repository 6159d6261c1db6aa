"""Render the demo's sample photos: 6 views of one procedural room (training/render.py's ray caster).

    .venv/bin/python samples/make_samples.py            # writes samples/room/view_0.png ... view_5.png

The room is ``training.scenes.random_scene(SEED)``; the cameras walk an arc around its centre
(``training.cameras.sample_trajectory``), all with one focal length, as a phone would. The exact
cameras are written beside the photos (``cameras.json``: OpenCV cam2world and intrinsics), so a
reconstruction of them can be compared with the truth. Deterministic: the same files every run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
VIEWS = 6
WIDTH, HEIGHT = 320, 240


def make_samples(out: Path, seed: int = SEED, views: int = VIEWS) -> list[Path]:
    """Render `views` photos of room `seed` into `out`; returns their paths."""
    sys.path.insert(0, str(ROOT))
    import torch
    from PIL import Image

    from training.cameras import centre_convention, sample_intrinsics, sample_trajectory
    from training.render import render
    from training.scenes import random_scene

    scene = random_scene(seed)
    gen = torch.Generator().manual_seed(seed)
    intrinsics = sample_intrinsics(gen, views, HEIGHT, WIDTH)
    cam2world = sample_trajectory(gen, scene, views)
    rgb = render(scene, intrinsics, cam2world, HEIGHT, WIDTH).rgb.numpy()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(views):
        path = out / f"view_{k}.png"
        Image.fromarray(rgb[k]).save(path, optimize=True)
        paths.append(path)
    (out / "cameras.json").write_text(json.dumps({
        "source": f"training.scenes.random_scene({seed}), samples/make_samples.py",
        "convention": "OpenCV cam2world [4,4]; intrinsics in pixels of the full photo, which spans "
                      "[0,W]x[0,H] (pixel centres at +0.5), as in the bundle",
        "width": WIDTH, "height": HEIGHT,
        "cam2world": cam2world.tolist(), "intrinsics": centre_convention(intrinsics).tolist()}, indent=1))
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "samples" / "room")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in make_samples(args.out, args.seed):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
