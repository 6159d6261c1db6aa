"""Score models on validation scenes that the training generator cannot make, against the trivial baseline.

    .venv/bin/python -m training.validation --scenes runs/validation \\
        --checkpoint models/default.safetensors [--out runs/validation.md]

The scenes are rendered by Blender's Cycles with the ``bpy`` wheel (``training/validation_scenes.py``:
other shapes, materials and lights than :mod:`training.scenes`, exact truth from Blender's own ray
casts). Each scene is a folder of ``view_NN.png`` photos at the network's input size (so the pipeline
neither crops nor resizes and the truth lines up with the prediction pixel for pixel) and a
``truth.npz`` (the format of :mod:`training.heldout`): ``pts3d`` [V,H,W,3] in view 0's OpenCV frame,
``valid`` [V,H,W], ``cam2world`` [V,4,4] (view i → view 0), ``intrinsics`` [V,3,3] (the photo
spans [0,W]×[0,H]). Metrics are those of :mod:`training.evaluate` (RRE, RTE, mAA@30, focal error
mAE, ND / DAc@0.2 / CD of the points, ND₂₊ / own), one row per scene and method.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mvdust3r_blender.engine.checkpoint import load_model

from .evaluate import EvalRow, Predictor, markdown_table, network_prediction, score_scene, trivial_prediction

TRUTH = "truth.npz"


@dataclass(frozen=True)
class ValidationScene:
    name: str
    images: Tensor      # float32 [V,3,H,W] in [-1, 1]
    pts3d: Tensor       # float32 [V,H,W,3], view 0's frame
    valid: Tensor       # bool [V,H,W]
    cam2world: Tensor   # float32 [V,4,4], view i → view 0
    focal: Tensor       # float32 [V], pixels


def scene_folders(root: Path) -> list[Path]:
    """The scene folders under ``root`` (each holding ``truth.npz``), sorted by name."""
    folders = sorted(p.parent for p in root.glob(f"*/{TRUTH}"))
    if not folders:
        raise SystemExit(f"{root} holds no validation scenes (folders with {TRUTH}; "
                         "render them with training/validation_scenes.py)")
    return folders


def load_scene(folder: Path, size: tuple[int, int]) -> ValidationScene:
    """One scene folder, checked against the network input ``size`` (h, w)."""
    truth = np.load(folder / TRUTH)
    photos = sorted(folder.glob("view_*.png"))
    if len(photos) != len(truth["pts3d"]):
        raise SystemExit(f"{folder}: {len(photos)} photos but truth for {len(truth['pts3d'])} views")
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in photos])
    if rgb.shape[1:3] != tuple(size) or truth["pts3d"].shape[1:3] != tuple(size):
        raise SystemExit(f"{folder}: photos of {rgb.shape[2]}×{rgb.shape[1]} pixels, but the model reads "
                         f"{size[1]}×{size[0]} (render the scenes at the model's input size)")
    images = (torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    return ValidationScene(folder.name, images, torch.from_numpy(truth["pts3d"]).float(),
                           torch.from_numpy(truth["valid"]).bool(), torch.from_numpy(truth["cam2world"]).float(),
                           torch.from_numpy(truth["intrinsics"][:, 0, 0]).float())


def evaluate_validation(method: str, predictor: Predictor, root: Path, size: tuple[int, int],
                        cd_points: int = 20000) -> list[EvalRow]:
    """One row per scene under ``root``: ``method · scene``."""
    rows = []
    for folder in scene_folders(root):
        scene = load_scene(folder, size)
        scores = score_scene(predictor, scene.images, scene.pts3d, scene.valid, scene.cam2world, scene.focal, cd_points)
        rows.append(EvalRow(f"{method} · {scene.name}", len(scene.images), 1, *(float(v) for v in scores)))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.validation", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=Path, required=True, help="folder of scene folders")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], help="a model (repeat to compare)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [(path.stem, load_model(path)) for path in args.checkpoint]
    if models:
        size = models[0][1].config.img_size
    else:   # the baseline alone: the photos' own size
        width, height = Image.open(next(scene_folders(args.scenes)[0].glob("view_*.png"))).size
        size = (height, width)
    methods: list[tuple[str, Predictor]] = [("trivial baseline", trivial_prediction)]
    methods += [(f"{name} ({model.config.variant})", network_prediction(model)) for name, model in models]
    rows = [row for name, predictor in methods for row in evaluate_validation(name, predictor, args.scenes, size)]
    table = markdown_table(rows)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
