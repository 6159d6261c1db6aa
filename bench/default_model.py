"""Benchmark: the shipped default model on this CPU — one reconstruction of 4, 8 and 12 photos.

    .venv/bin/python bench/default_model.py [--model models/default.safetensors] [--views 4 8 12]
                                            [--threads 2] [--repeat 3]

Photos: held-out synthetic scenes at the model's input size (``training.heldout``). Each row is
``engine.pipeline.reconstruct`` on them with the model already loaded (what a second Reconstruct
in Blender costs), split into its stages (photo loading, network, camera recovery, Gaussians);
the best of ``--repeat`` runs. The model's first load is timed once. Prints a markdown table for
docs/benchmarks.md ("Default model").
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mvdust3r_blender.engine.checkpoint import load_model  # noqa: E402
from mvdust3r_blender.engine.pipeline import reconstruct  # noqa: E402
from training.heldout import write_heldout_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.safetensors")
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = load_model(args.model)
    load_seconds = time.perf_counter() - started
    size = model.config.img_size[0]
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.model.name}: {model.config.variant}, {size}×{size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, first load {load_seconds:.2f} s")
    print("\n| photos | total (s) | load | network | cameras | gaussians |\n|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="mvd-bench-default-") as work:
        for views in args.views:
            photos = write_heldout_scene(Path(work) / f"v{views}", views=views, resolution=size)
            runs = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                bundle = reconstruct(photos, model)
                runs.append((time.perf_counter() - began, bundle.meta["timings"]))
            total, stages = min(runs, key=lambda r: r[0])
            cells = " | ".join(f"{stages.get(k, 0.0):.2f}" for k in ("load", "network", "cameras", "gaussians"))
            print(f"| {views} | {total:.2f} | {cells} |")


if __name__ == "__main__":
    main()
