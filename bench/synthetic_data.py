"""Benchmark: synthetic training samples per second (procedural room + 8 ray-cast views).

    .venv/bin/python bench/synthetic_data.py [--views 8] [--sizes 224 64] [--scenes 10] [--threads 1]
                                             [--supersample 2 1] [--world rooms-v1 wide] [--device cpu|cuda] [--batch 1]

A sample is what the training loop consumes: scene generation, camera sampling, ray casting of all
views, and the conversion to network inputs and view-0 ground truth
(:class:`training.dataset.SyntheticScenes`). Prints one line per resolution and markdown rows for
the "Synthetic data" section of docs/benchmarks.md. The first sample of each size is a warm-up.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.dataset import SampleKey, SyntheticScenes  # noqa: E402
from training.world import WORLDS  # noqa: E402


def measure(size: int, views: int, scenes: int, supersample: int, world: str = "rooms-v1",
            device: str = "cpu", batch: int = 1) -> tuple[float, float]:
    """(scenes per second, mean fraction of valid pixels) over ``scenes`` samples at size×size,
    rendered on ``device`` ``batch`` scenes a pass (``SyntheticScenes.batch``: what training on a
    GPU does); reading the valid fraction back waits for a GPU to finish each pass."""
    ds = SyntheticScenes((size, size), seed=123, supersample=supersample, world=WORLDS[world], device=device)
    ds.batch([SampleKey(10_000 + i, views, 0) for i in range(batch)])
    valid = 0.0
    start = time.perf_counter()
    for first in range(0, scenes, batch):
        keys = [SampleKey(i, views, 0) for i in range(first, min(scenes, first + batch))]
        valid += float(ds.batch(keys)["valid"].float().mean()) * len(keys)
    return scenes / (time.perf_counter() - start), valid / scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--scenes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--supersample", type=int, nargs="+", default=[2, 1],
                   help="rays a pixel per axis (2: the training default, anti-aliased)")
    p.add_argument("--world", nargs="+", choices=sorted(WORLDS), default=["rooms-v1"])
    p.add_argument("--device", default="cpu", help="where the rays are cast (cuda: the training GPU)")
    p.add_argument("--batch", type=int, default=1, help="scenes ray-cast in one pass (training on a GPU: its batch)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.views} views, device {args.device}, {args.batch} scene(s) a pass")
    rows = []
    for world in args.world:
        for size in args.sizes:
            for ss in args.supersample:
                rate, valid = measure(size, args.views, args.scenes, ss, world, args.device, args.batch)
                print(f"{world} {size}x{size}, {ss}x{ss} rays a pixel: {rate:.2f} scenes/s "
                      f"({rate * args.views:.1f} views/s), valid pixels {valid:.1%}")
                rows.append(f"| {world} | {size}×{size} | {ss}×{ss} | {args.views} | {rate:.2f} | "
                            f"{rate * args.views:.1f} | {args.device} | {args.threads} |")
    print("\n| world | resolution | rays a pixel | views | scenes/s | views/s | device | threads |\n"
          "|---|---|---|---:|---:|---:|---|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
