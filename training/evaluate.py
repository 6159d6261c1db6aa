"""Evaluate checkpoints on held-out synthetic scenes with the paper's metrics; compare to a baseline.

    python -m training.evaluate --checkpoint runs/mvd-small/checkpoint-last.pth \
        --checkpoint runs/mvdp-s2/checkpoint-last.pth --views 4 8 12 --scenes 50 --out eval.md

Each method turns a scene's images into pointmaps + confidences (path 0, view 0's frame); the
engine's own camera recovery (confidence mask, focal from view 0, PnP-RANSAC) turns those into
cameras, exactly as a user's reconstruction does; the engine's metrics score them
(``training.metrics``): ND, DAc@0.2 and CD on ``avg_dis``-normalised points; RRE,
RTE (degrees, all view pairs), mAE (relative focal error) and mAA@30. Numbers are means over scenes.

Two more columns say whether a network places the views relative to each other, independently of
the camera recovery: ND over the views other than view 0, against the truth in view 0's frame
(``ND₂₊``) and against each view's truth in its OWN camera frame (``own``). A network that
has learned where the other cameras are has ``ND₂₊ < own``; one that predicts every view as if
it were the reference (a good monocular depth, no relative pose) has ``own < ND₂₊``.

The trivial baseline knows nothing about the images: every view is a fronto-parallel plane at
unit depth seen with a 60° field of view, so all cameras coincide (RRE = the true relative
rotation, RTE = 90°). A trained network must beat it on every metric.

Held-out scenes come from their own seed (``HELDOUT_SEED``), never used for training, drawn from a
world of :mod:`training.world` (``--world``; the tables of docs/default-model.md name theirs).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mvdust3r_blender.engine.checkpoint import load_model
from mvdust3r_blender.engine.model import MultiViewModel
from training.metrics import camera_metrics, normalise_points, point_metrics

from .dataset import SampleKey, SyntheticScenes
from .official_cameras import estimate_cameras, fallback_focal, pixel_grid
from .world import ROOMS_V1, WORLDS, World

HELDOUT_SEED = 2_147_483_647
# images [N,3,H,W] in [-1,1] -> (pts3d [N,H,W,3] in view 0's frame, conf [N,H,W])
Predictor = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class EvalRow:
    """Means over ``scenes`` held-out scenes of ``views`` views each."""

    method: str
    views: int
    scenes: int
    nd: float
    dac: float
    cd: float
    rre: float
    rte: float
    mae: float
    maa30: float
    nd_others: float      # ND of views 2.. against the truth in view 0's frame
    nd_others_own: float  # the same against each view's truth in its own camera frame


def placement(pred: np.ndarray, true: np.ndarray, valid: np.ndarray, cam2world: np.ndarray) -> tuple[float, float]:
    """(ND of views 1.. against `true`, against the same truth in each view's own camera frame).

    `pred`, `true` [N,h,w,3] in view 0's frame, `valid` [N,h,w], `cam2world` [N,4,4] (view i → view 0).
    Every pointmap set is divided by its own mean distance over all valid pixels, as ND does."""
    rot, shift = cam2world[:, :3, :3], cam2world[:, None, None, :3, 3]
    own = np.einsum("nji,nhwj->nhwi", rot, true - shift)             # R^T (X - t): view i's own frame
    p, t, o = (normalise_points(x, valid) for x in (pred, true, own))
    others = valid.copy()
    others[0] = False
    return (float(np.linalg.norm(p[others] - t[others], axis=-1).mean()),
            float(np.linalg.norm(p[others] - o[others], axis=-1).mean()))


def trivial_prediction(images: Tensor) -> tuple[Tensor, Tensor]:
    """The baseline: each view a plane at depth 1 through a 60° camera, all at the origin."""
    n, _, h, w = images.shape
    pix = pixel_grid(h, w).float()                                   # the engine's (x, y) pixel grid
    focal = fallback_focal(h, w)
    xy = (pix - torch.tensor([w / 2, h / 2])) / focal
    plane = torch.cat([xy, torch.ones(h, w, 1)], dim=-1)
    return plane.expand(n, h, w, 3).clone(), torch.ones(n, h, w)


def network_prediction(model: MultiViewModel) -> Predictor:
    """Path 0 of ``model.predict`` (eval-mode maths, as the add-on runs it)."""
    device = next(model.parameters()).device

    def predict(images: Tensor) -> tuple[Tensor, Tensor]:
        pred = model.predict(images.to(device), gaussians=False)
        return pred.pts3d, pred.conf
    return predict


def score_scene(predictor: Predictor, images: Tensor, pts3d: Tensor, valid: Tensor, cam2world: Tensor,
                focal: Tensor, cd_points: int = 20000) -> list[float]:
    """The metrics of :class:`EvalRow` (ND … own) for one scene: images [N,3,h,w] in [-1,1], the true
    points [N,h,w,3] in view 0's frame with their mask [N,h,w], cameras [N,4,4] (view i → view 0)
    and focal lengths [N] in the network grid's pixels."""
    with torch.no_grad():
        pred, conf = predictor(images)
    pred, conf = pred.float().cpu(), conf.float().cpu()
    truth, mask, poses = pts3d.cpu().numpy(), valid.cpu().numpy(), cam2world.cpu().double().numpy()
    points = point_metrics(pred.numpy(), truth, mask, max_points=cd_points)
    cams = estimate_cameras(pred, conf)
    views = len(images)
    camera = camera_metrics(cams.poses.cam2world, poses, np.full(views, cams.focal), focal.cpu().double().numpy())
    placed = placement(pred.numpy(), truth, mask, poses)
    return [points.nd, points.dac, points.cd, camera.rre, camera.rte, camera.mae, camera.maa30, *placed]


def evaluate(method: str, predictor: Predictor, views: int, scenes: int, resolution: tuple[int, int],
             seed: int = HELDOUT_SEED, cd_points: int = 20000, world: World = ROOMS_V1) -> EvalRow:
    """Score ``predictor`` on ``scenes`` held-out scenes of ``world`` with ``views`` views at ``resolution``.

    CD uses a seeded subset of at most ``cd_points`` valid pixels (the engine's brute-force
    Chamfer costs ≈ 8 s a scene at 20 000 points on one CPU core; 5 000 is 16× cheaper)."""
    data = SyntheticScenes(resolution, seed=seed, world=world)
    scores = []
    for index in range(scenes):
        sample = data[SampleKey(index, views, 0)]
        scores.append(score_scene(predictor, sample["img"], sample["pts3d"], sample["valid"], sample["cam2world"],
                                  sample["intrinsics"][:, 0, 0], cd_points))
    mean = np.mean(scores, axis=0)
    return EvalRow(method, views, scenes, *(float(v) for v in mean))


def markdown_table(rows: Sequence[EvalRow]) -> str:
    """Rows as a markdown table (↓ lower is better, ↑ higher is better)."""
    head = ("| method | views | scenes | ND ↓ | DAc@0.2 ↑ | CD ↓ | RRE° ↓ | RTE° ↓ | mAE ↓ | mAA@30 ↑ "
            "| ND₂₊ ↓ | own |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.views} | {r.scenes} | {r.nd:.3f} | {r.dac:.3f} | {r.cd:.3f} | "
                     f"{r.rre:.2f} | {r.rte:.2f} | {r.mae:.3f} | {r.maa30:.3f} | {r.nd_others:.3f} | "
                     f"{r.nd_others_own:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, action="append", default=[],
                   help="a .pth or .safetensors model (repeat to compare several)")
    p.add_argument("--views", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--resolution", type=int, default=None,
                   help="square size; default: the first checkpoint's training size (64 without one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cd-points", type=int, default=20000, help="points per cloud for the Chamfer distance")
    p.add_argument("--world", choices=sorted(WORLDS), default="wide", help="the held-out scenes' world")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [(path.stem if path.suffix == ".safetensors" else path.parent.name, load_model(path))
              for path in args.checkpoint]
    size = args.resolution or (models[0][1].config.img_size[0] if models else 64)
    methods: list[tuple[str, Predictor]] = [("trivial baseline", trivial_prediction)]
    methods += [(f"{name} ({model.config.variant})", network_prediction(model)) for name, model in models]
    rows = [evaluate(name, predictor, n, args.scenes, (size, size), cd_points=args.cd_points,
                     world=WORLDS[args.world])
            for n in args.views for name, predictor in methods]
    table = markdown_table(rows)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

