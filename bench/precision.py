"""The accuracy budget of each precision: how far its outputs and cameras move from ``exact``.

    .venv/bin/python bench/precision.py [--golden ../shared/golden]

Cases: the two golden models (reduced official MV-DUSt3R and MV-DUSt3R+ with random weights, far
more sensitive than trained ones; each golden scene of 4 views at 64² / 48²), and the built-in
model (``models/default.safetensors``) on ``samples/room`` through the whole pipeline. Modes: what
``auto`` and ``fast`` run on this CPU (``engine.precision``), and "fast, bf16 weights" — what ``fast``
runs on CUDA (weights in bfloat16 on the device), emulated here with the same dtypes. On the golden
models a control row changes only the float32 summation order (views one at a time): the cameras
recovered from their random-weight points move as much under it as under any mode, so there the
camera columns measure PnP-RANSAC's instability, not the precision.

Per mode and case: pts3d relative change per pixel (median, 99th percentile), confidence relative
change (median, 99th percentile), and the cameras recovered from the points (the pipeline's
``estimate_cameras``: shared focal, PnP-RANSAC): largest rotation change over the views (degrees),
largest camera-centre change relative to the scene's median depth, and the focal change (%).
Prints a markdown table for ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvdust3r_blender.core.options import ReconstructOptions  # noqa: E402
from training.official_cameras import estimate_cameras  # noqa: E402
from mvdust3r_blender.engine.checkpoint import load_model  # noqa: E402
from mvdust3r_blender.engine.model import MultiViewModel, Precision  # noqa: E402
from mvdust3r_blender.engine.pipeline import reconstruct  # noqa: E402
from mvdust3r_blender.engine.precision import plan_for  # noqa: E402


@dataclass(frozen=True)
class Mode:
    """One way of computing: a label, the run's precision and the weights' dtype."""

    label: str
    precision: str
    weights: torch.dtype
    view_chunk: int = 8      # views the encoder and heads take at a time (changes only the rounding)

    @property
    def compute(self) -> Precision:
        return plan_for(self.precision, torch.device("cpu")).compute


@dataclass(frozen=True)
class Outputs:
    pts3d: np.ndarray        # [N,H,W,3]
    conf: np.ndarray         # [N,H,W]
    cam2world: np.ndarray    # [N,4,4]
    focal: np.ndarray        # [N] (grid or photo pixels: compared as ratios)


def modes() -> list[Mode]:
    cpu = torch.device("cpu")
    auto, fast = plan_for("auto", cpu), plan_for("fast", cpu)
    return [Mode("exact", "exact", torch.float32),
            Mode(f"auto (CPU: {auto.compute})", "auto", auto.weights),
            Mode(f"fast (CPU: {fast.compute})", "fast", fast.weights),
            Mode("fast with bf16 weights (as on CUDA)", "fast", torch.bfloat16)]


CONTROL = Mode("control: exact, one view at a time (float32 rounding only)", "exact", torch.float32, view_chunk=1)


def golden_outputs(checkpoint: Path, cache: Path, scene: np.ndarray, mode: Mode) -> Outputs:
    """One golden scene [N,3,H,W] through ``predict`` and the pipeline's camera recovery."""
    model = load_model(checkpoint, dtype=mode.weights, cache_dir=cache)
    plan = plan_for(mode.precision, torch.device("cpu"))
    pred = model.predict(torch.from_numpy(scene), precision=plan.compute, channels_last=plan.channels_last,
                         gaussians=False, view_chunk=mode.view_chunk)
    pts, conf = pred.pts3d.float(), pred.conf.float()
    cams = estimate_cameras(pts, conf, ReconstructOptions().pose_drop_percent)
    n = pts.shape[0]
    return Outputs(pts.numpy(), conf.numpy(), cams.poses.cam2world, np.full(n, cams.focal))


def room_outputs(model: MultiViewModel, photos: Sequence[Path], mode: Mode) -> Outputs:
    """The built-in model on the sample photos through the whole pipeline (cameras in photo pixels)."""
    bundle = reconstruct(photos, model, ReconstructOptions(gaussians=False, precision=mode.precision))
    assert bundle.meta["precision"]["compute"] == mode.compute
    return Outputs(bundle.pts3d, bundle.conf, bundle.cam2world, bundle.intrinsics[:, 0, 0])


@dataclass
class Change:
    case: str
    mode: str
    pts_median: float
    pts_p99: float
    conf_median: float
    conf_p99: float
    rot_deg: float
    centre_rel: float
    focal_pct: float


def rotation_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of a[i]⁻¹·b[i] (rotations of [N,4,4] cam2world) in degrees."""
    rel = np.einsum("nji,njk->nik", a[:, :3, :3].astype(np.float64), b[:, :3, :3].astype(np.float64))
    cos = (np.trace(rel, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def change(case: str, mode: str, ref: Outputs, got: Outputs) -> Change:
    rel = np.linalg.norm(got.pts3d - ref.pts3d, axis=-1) / np.maximum(np.linalg.norm(ref.pts3d, axis=-1), 1e-12)
    conf = np.abs(got.conf - ref.conf) / ref.conf
    depth = float(np.median(np.linalg.norm(ref.pts3d, axis=-1)))
    centre = np.linalg.norm(got.cam2world[:, :3, 3] - ref.cam2world[:, :3, 3], axis=-1) / depth
    return Change(case, mode, float(np.median(rel)), float(np.percentile(rel, 99)), float(np.median(conf)),
                  float(np.percentile(conf, 99)), float(rotation_deg(ref.cam2world, got.cam2world).max()),
                  float(centre.max()), float(np.abs(got.focal / ref.focal - 1).max() * 100))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--golden", type=Path, default=ROOT.parent / "shared" / "golden")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: list[Change] = []
    all_modes = modes()
    with tempfile.TemporaryDirectory(prefix="mvdust3r-precision-") as cache:
        for name, case in (("mvd", "mvd_b2_v4_64x64"), ("mvdp", "mvdp_b2_v4_48x48")):
            inputs = np.load(args.golden / f"{case}.inputs.npz")
            views = sorted(k for k in inputs.files if k.endswith(".img"))
            for b in range(inputs[views[0]].shape[0]):
                scene = np.stack([inputs[k][b] for k in views])
                label = f"golden {name.upper().replace('MVDP', 'MVD+')} scene {b}"
                golden_modes = [*all_modes, CONTROL]
                outs = [golden_outputs(args.golden / f"{name}_reduced_ckpt.pth", Path(cache), scene, m)
                        for m in golden_modes]
                rows += [change(label, m.label, outs[0], o) for m, o in zip(golden_modes[1:], outs[1:])]
    photos = sorted((ROOT / "samples" / "room").glob("view_*.png"))
    outs = [room_outputs(load_model(ROOT / "models" / "default.safetensors", dtype=m.weights), photos, m)
            for m in all_modes]
    rows += [change(f"built-in, samples/room ({len(photos)} photos)", m.label, outs[0], o)
             for m, o in zip(all_modes[1:], outs[1:])]
    print(f"- Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; "
          f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n")
    print("| case | mode | pts3d median | pts3d p99 | conf median | conf p99 | rotation ° (max) "
          "| centre / depth (max) | focal % (max) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.case} | {r.mode} | {r.pts_median:.1e} | {r.pts_p99:.1e} | {r.conf_median:.1e} | "
              f"{r.conf_p99:.1e} | {r.rot_deg:.4f} | {r.centre_rel:.1e} | {r.focal_pct:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
