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

from mvdust3r_blender.core.bundle import Bundle  # noqa: E402
from mvdust3r_blender.core.exports import FORMATS, export  # noqa: E402
from bundles import synthetic_bundle  # noqa: E402  (bench/ is this script's folder)


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
        bundle = synthetic_bundle(Bundle, args.views, args.size, work / "photos")
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
