"""Benchmark: the photo stage — one huge photo's memory and time (camera recovery: bench/cameras.py).

    .venv/bin/python bench/pipeline.py [--megapixels 50]

1. Writes a synthetic JPEG of `--megapixels` (4:3, smooth content), then loads it in fresh
   processes twice — with the default huge-photo path (DCT-scaled ``draft`` decode) and with the
   exact full decode — and reports seconds and peak RSS of each (``ru_maxrss``, whole process,
   including torch's import).
2. The photo stage (``load_photos``) on `--photos` JPEGs of 12 MP, decoded on one thread and on the
   decoder pool (``DECODE_THREADS``), best of 2 each, in this process.
Prints a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers.photos import smooth_photos  # noqa: E402

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
    height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    width = int(round(height * 4 / 3))
    (path,) = smooth_photos(folder, 1, (width, height), coarse=(height // 64, width // 64), name="huge.jpg",
                            quality=90)
    return path


def decode_rows(count: int, folder: Path) -> list[str]:
    """The photo stage on `count` 12 MP JPEGs: one decoder thread against the pool, in one run."""
    from concurrent.futures import ThreadPoolExecutor

    from mvdust3r_blender.engine import images

    paths = smooth_photos(folder, count, (4000, 3000), seed=1, coarse=(47, 63), name="photo_{:02d}.jpg", quality=90)
    rows = []
    for threads in (1, images.DECODE_THREADS):
        images._POOL = ThreadPoolExecutor(max_workers=threads)
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            images.load_photos(paths, (224, 224))
            best = min(best, time.perf_counter() - t)
        images._POOL.shutdown()
        rows.append(f"| {count} JPEGs of 12 MP → 224², {threads} decoder thread{'s' if threads > 1 else ''} "
                    f"| {best:.2f} | | | best of 2 |")
    images._POOL = None
    return rows


def run(code: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megapixels", type=float, default=50.0)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--skip", nargs="*", default=[], choices=("huge",), help="parts not to run")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "huge" not in args.skip:
            path = huge_photo(args.megapixels, Path(tmp))
            base = float(run(_BASELINE.format(root=str(ROOT)))[0])
            for label, limit in [("draft (default)", 24_000_000), ("exact full decode", 10**12)]:
                seconds, rss, approx = run(_LOAD.format(root=str(ROOT), path=str(path), limit=limit))
                rows.append(f"| {args.megapixels:.0f} MP JPEG, {label} | {float(seconds):.2f} | {float(rss):.0f} "
                            f"| {float(rss) - base:.0f} | approximate={approx} |")
        if args.photos:
            rows += decode_rows(args.photos, Path(tmp))
    print("| what | seconds | peak RSS (MiB) | over import (MiB) | notes |\n|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
