"""Benchmark: the photo stage — one huge photo's memory and time (camera recovery: bench/cameras.py).

    .venv/bin/python bench/pipeline.py [--megapixels 50]

1. Writes a synthetic JPEG of `--megapixels` (4:3, smooth content), then loads it in fresh
   processes twice — with the default huge-photo path (DCT-scaled ``draft`` decode) and with the
   exact full decode — and reports seconds and peak RSS of each (``ru_maxrss``, whole process,
   including torch's import).
Prints a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_LOAD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from mvdust3r_blender.engine.images import load_photo
t = time.perf_counter()
p = load_photo({path!r}, (224, 224), max_exact_pixels={limit})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, p.approximate)
"""
_BASELINE = """
import resource, sys
sys.path.insert(0, {root!r})
import mvdust3r_blender.engine.images
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def huge_photo(megapixels: float, folder: Path) -> Path:
    from PIL import Image

    height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    width = int(round(height * 4 / 3))
    small = (np.random.default_rng(0).random((height // 64, width // 64, 3)) * 255).astype(np.uint8)
    path = folder / "huge.jpg"
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=50.0)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = huge_photo(args.megapixels, Path(tmp))
        base = float(run(_BASELINE.format(root=str(ROOT)))[0])
        for label, limit in [("draft (default)", 24_000_000), ("exact full decode", 10**12)]:
            seconds, rss, approx = run(_LOAD.format(root=str(ROOT), path=str(path), limit=limit))
            rows.append(f"| {args.megapixels:.0f} MP JPEG, {label} | {float(seconds):.2f} | {float(rss):.0f} "
                        f"| {float(rss) - base:.0f} | approximate={approx} |")
    print("| what | seconds | peak RSS (MiB) | over import (MiB) | notes |\n|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
