"""Benchmark: the level alignment on the Blender-rendered truth scenes, with the exact pointmaps and
with the shipped default model (whose numbers are reported, not gated).

    .venv/bin/python bench/alignment.py [--model models/default.safetensors] [--out DIR]

Renders the alignment scenes of tests/engine/blender_truth_scenes.py (with the bpy venv, at the
model's input size), reconstructs each through the whole pipeline twice — the exact-pointmap
stand-in network and the model — and prints, per scene, the up error (degrees), the floor's height
error and the centre's distance (percent of the scene's size), how the alignment decided and how
long it took. Writes the ring scene's bundle (stand-in network) to DIR/ring.npz for the picture
(bench/alignment_picture.py). Prints a markdown table for docs/benchmarks.md ("Alignment").
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mvdust3r_blender.core.alignment import Alignment, estimate_alignment  # noqa: E402
from mvdust3r_blender.core.bundle import write_bundle  # noqa: E402
from mvdust3r_blender.core.options import ReconstructOptions  # noqa: E402
from mvdust3r_blender.engine.checkpoint import load_model  # noqa: E402
from mvdust3r_blender.engine.images import load_photo  # noqa: E402
from mvdust3r_blender.engine.pipeline import reconstruct  # noqa: E402
from mvdust3r_blender.core.bundle import Bundle  # noqa: E402
from tests.engine.truth_scenes import (ALIGNMENT_TRUTH, TruthNetwork, TruthScene,  # noqa: E402
                                       alignment_errors, render_truth_scenes)

SCENES = ("scan", "ring", "walkaround", "strip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.safetensors")
    parser.add_argument("--out", type=Path, default=None, help="where to keep ring.npz (default: not kept)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    grid = (int(model.config.img_size[0]), int(model.config.img_size[1]))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, model {args.model.name}, "
          f"grid {grid[0]}x{grid[1]}", file=sys.stderr)
    rows: list[tuple[str, str, float, float, float, Optional[float], Alignment, float]] = []
    with tempfile.TemporaryDirectory(prefix="mvd-align-bench-") as work:
        scenes = render_truth_scenes(Path(work), grid[0], SCENES)
        for name in SCENES:
            scene = scenes[name]
            crops = np.stack([load_photo(p, grid).image for p in scene.photos])
            points = scene.points_in_world().reshape(-1, 3)
            size = float(np.linalg.norm(points.max(0) - points.min(0)))
            floor_z, centre = ALIGNMENT_TRUTH[name]
            for network_name, network in (("exact points", TruthNetwork(scene, crops, model.config)),
                                          (args.model.name, model)):
                bundle = reconstruct(scene.photos, network, ReconstructOptions(gaussians=False))
                alignment = Alignment.from_meta(bundle.meta["alignment"])
                to_bundle = np.linalg.inv(scene.cam2world[bundle.meta["reference_view"]])
                truth_to_bundle = _truth_scale(bundle, scene, to_bundle)
                up, floor, off = alignment_errors(alignment.matrix @ truth_to_bundle, floor_z, centre, size)
                cameras_only = estimate_alignment(bundle.cam2world, np.zeros((0, 3)),
                                                  reference=bundle.meta["reference_view"])
                up_cameras = alignment_errors(cameras_only.matrix @ truth_to_bundle, floor_z, centre, size)[0]
                rows.append((name, network_name, up, up_cameras, 100 * floor, 100 * off if centre else None,
                             alignment, bundle.meta["timings"]["align"]))
                if name == "ring" and network_name == "exact points" and args.out is not None:
                    write_bundle(bundle, args.out / "ring.npz")
    print("| scene | network | up error | up from the cameras alone | floor error | centre error | decided | align time |")
    print("|---|---|---|---|---|---|---|---|")
    for name, network_name, up, up_cameras, floor, centre_error, alignment, seconds in rows:
        shown = f"{centre_error:.2f} %" if centre_error is not None else "—"
        how = f"{alignment.up_source}, {alignment.centre_source}" if alignment.method == "level" else \
            f"fallback: {alignment.fallback_reason}"
        print(f"| {name} | {network_name} | {up:.3f}° | {up_cameras:.2f}° | {floor:.2f} % | {shown} | {how} | "
              f"{seconds * 1000:.0f} ms |")


def _truth_scale(bundle: Bundle, scene: TruthScene, to_bundle: np.ndarray) -> np.ndarray:
    """Truth world → bundle world as a similarity: the model's units are not metres, so the rigid map to
    the reference camera is scaled by the ratio of the spreads of the points (pixel for pixel, the
    bundle's points and the truth's are the same surface points)."""
    truth = scene.points_in_world().reshape(-1, 3) @ to_bundle[:3, :3].T + to_bundle[:3, 3]
    got = bundle.pts3d.reshape(-1, 3).astype(np.float64)
    scale = np.linalg.norm(got - got.mean(0), axis=1).sum() / np.linalg.norm(truth - truth.mean(0), axis=1).sum()
    return np.diag([scale, scale, scale, 1.0]) @ to_bundle


if __name__ == "__main__":
    main()
