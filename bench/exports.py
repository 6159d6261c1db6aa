"""Benchmark: write every export format for a 100-view, 224x224 bundle (5.0 M points).

    .venv/bin/python bench/exports.py [--views 100] [--size 224] [--out DIR]

Prints one line per format (seconds, file size, points written) and a markdown table row set
for docs/benchmarks.md. The bundle is synthetic (random but valid); the exporters' cost does not
depend on the values. The default confidence rule keeps 97 % of the points.
"""
from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvdust3r_blender.bundle import Bundle  # noqa: E402
from mvdust3r_blender.engine.exports import FORMATS, export  # noqa: E402


def synthetic_bundle(views: int, size: int, photo_dir: Path) -> Bundle:
    rng = np.random.default_rng(0)
    n, h, w = views, size, size
    quat = rng.normal(size=(n, h, w, 4)).astype(np.float32)
    photo_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(n):
        path = photo_dir / f"IMG_{v:04d}.jpg"
        path.write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())  # a 200 kB "photo"
        paths.append(str(path))
    return Bundle(
        images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        pts3d=rng.normal(size=(n, h, w, 3)).astype(np.float32),
        conf=(1 + rng.exponential(2.0, (n, h, w))).astype(np.float32),
        intrinsics=np.tile(np.array([[800, 0, 512], [0, 800, 384], [0, 0, 1]], np.float32), (n, 1, 1)),
        cam2world=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        photo_size=np.tile(np.array([1024, 768], np.int32), (n, 1)),
        crop_box=np.tile(np.array([128, 0, 896, 768], np.float32), (n, 1)),
        photo_paths=paths,
        gaussian_rotation=quat / np.linalg.norm(quat, axis=-1, keepdims=True),
        gaussian_scale=rng.uniform(1e-3, 0.1, (n, h, w, 3)).astype(np.float32),
        gaussian_opacity=rng.uniform(0, 1, (n, h, w)).astype(np.float32),
    )


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-exports-"))
    try:
        bundle = synthetic_bundle(args.views, args.size, work / "photos")
        total = bundle.conf.size
        print(f"{args.views} views x {args.size}^2 = {total / 1e6:.2f} M points; "
              f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
        rows = []
        for name in FORMATS:
            start = time.perf_counter()
            path = export(bundle, [name], work / "out")[name]
            seconds = time.perf_counter() - start
            rows.append((name, seconds, size_of(path) / 1e6))
            print(f"{name:10s} {seconds:6.2f} s  {size_of(path) / 1e6:8.1f} MB  {path}")
        print("\n| format | seconds | size (MB) |\n|---|---:|---:|")
        for name, seconds, mb in rows:
            print(f"| {name} | {seconds:.2f} | {mb:.0f} |")
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
