"""Benchmark: camera recovery for many views — the serial OpenCV loop against the batched solve, in one run.

    .venv/bin/python bench/cameras.py [--views 100] [--size 224] [--threads 2] [--device cpu] [--repeat 3]

Both solve the same synthetic scene (tests/helpers/synthetic_scenes.py: `--views` cameras on an arc,
smooth depth, 0.3 % noise, the 3 % confidence mask):

- before: ``cv2.solvePnPRansac`` per view with the official settings and the true grid K
  (``training.official_cameras.solve_poses``, what the pipeline ran before recover_cameras) — poses only, the focal given;
- after: ``cameras.recover_cameras`` — the camera's focal AND every pose, batched on `--device`.

Each is timed `--repeat` times (best kept; the first of each is a warm-up on a GPU); the errors
against the truth are printed beside the times. Prints a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rotation_errors_deg(c2w: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per view: the angle between its rotation and the true one (atan2 of sine and cosine: exact near 0)."""
    D = np.swapaxes(c2w[:, :3, :3], 1, 2) @ truth[:, :3, :3]
    sin = np.linalg.norm(D - np.swapaxes(D, 1, 2), axis=(1, 2)) / (2 * np.sqrt(2))
    return np.degrees(np.arctan2(sin, (np.trace(D, axis1=1, axis2=2) - 1) / 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import cv2
    import torch

    from mvdust3r_blender.engine.cameras import ViewGeometry, pose_mask, recover_cameras
    from training.official_cameras import grid_intrinsics, solve_poses
    from tests.helpers.synthetic_scenes import make_scene

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    focal = args.size * 0.9
    scene = make_scene(args.views, args.size, args.size, focal=focal, seed=0, noise=0.003)
    pts3d, conf = torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf)
    square = float(args.size)
    geometry = ViewGeometry(np.tile([0.0, 0.0, square, square], (args.views, 1)),
                            np.tile([square, square], (args.views, 1)), np.zeros(args.views, dtype=np.int64))
    device_pts, device_conf = pts3d.to(args.device), conf.to(args.device)

    def serial() -> tuple[np.ndarray, float]:
        mask = pose_mask(conf, 3.0)
        return solve_poses(pts3d, mask, grid_intrinsics(focal, args.size, args.size)).cam2world, focal

    def batched() -> tuple[np.ndarray, float]:
        cams = recover_cameras(device_pts, device_conf, geometry)
        return cams.cam2world, float(cams.focal[0])

    rows = []
    for label, run in (("serial cv2.solvePnPRansac (focal given)", serial), ("batched recover_cameras", batched)):
        times = []
        for _ in range(args.repeat):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            c2w, f = run()
            times.append(time.perf_counter() - started)
        err = rotation_errors_deg(c2w, scene.c2w)
        centre = np.linalg.norm(c2w[:, :3, 3] - scene.c2w[:, :3, 3], axis=1).max()
        rows.append((label, min(times), err.max(), centre, abs(f / focal - 1)))
    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; python {platform.python_version()}, "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}; threads {args.threads}; device {args.device}; "
          f"{args.views} views at {args.size}²")
    print("| method | seconds (best of %d) | max rotation error ° | max centre error | focal error |" % args.repeat)
    print("|---|---:|---:|---:|---:|")
    for label, seconds, rot, centre, ferr in rows:
        print(f"| {label} | {seconds:.3f} | {rot:.3f} | {centre:.4f} | {ferr:.2e} |")
    print(f"speed-up: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
