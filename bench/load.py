"""Checkpoint loading benchmark: a full-size MV-DUSt3R+ training checkpoint with random weights.

    .venv/bin/python bench/load.py [--dir DIR] [--variant MVDp|MVD] [--baseline] [--json out.json]

Writes a file laid out like the released ``MVDp_s*.pth`` (``torch.save`` of model + full AdamW
moments + args: 2.65 GB of weights, ≈ 7.9 GB on disk) into DIR, then times, each in a fresh
process with both files dropped from the page cache first (cold reads from disk):

1. ``first``: ``load_model`` on the pickle — weights-only mmap read, safetensors cache written;
2. ``cached``: ``load_model`` again — the cache is memory-mapped, nothing is read up front;
3. ``cached+touch``: the same, then every weight read once (what the first forward pays);
4. with ``--baseline``: ``torch.load(weights_only=True)`` without mmap, as the official loader
   reads the file (all of it, optimizer included) — needs ≈ 8 GB of free RAM.

Peak memory is the process's VmHWM; "growth" is over the process after importing torch and the
engine. The files are deleted at the end (also on failure).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1e9

CHILD = r"""
import argparse, json, sys, time
import torch
from mvdust3r_blender.engine.checkpoint import load_model

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

mode, path, cache = sys.argv[1:4]
torch.set_num_threads(2)
base = kib("VmRSS")
start = time.perf_counter()
if mode == "baseline":
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    n = sum(t.numel() for t in ckpt["model"].values())
else:
    model = load_model(path, cache_dir=cache)
    if mode == "cached+touch":
        for p in model.state_dict().values():
            p.sum()
    n = sum(t.numel() for t in model.state_dict().values())
seconds = time.perf_counter() - start
print(json.dumps({"mode": mode, "seconds": seconds, "base": base, "peak": kib("VmHWM"), "elements": n}))
"""


def drop_cache(*paths: Path) -> None:
    from tests.helpers.checkpoint_files import drop_from_page_cache

    for path in paths:
        if path.is_file():
            drop_from_page_cache(path)


def run(mode: str, path: Path, cache: Path) -> dict:
    drop_cache(path, *cache.glob("*.safetensors"))
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(cache)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--variant", choices=("MVDp", "MVD"), default="MVDp")
    parser.add_argument("--baseline", action="store_true", help="also time a full (non-mmap) torch.load")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch
    from tests.helpers.checkpoint_files import write_like_release

    from mvdust3r_blender.engine.config import ModelConfig

    config = ModelConfig.released_mvdp() if args.variant == "MVDp" else ModelConfig.released_mvd()
    work = Path(tempfile.mkdtemp(prefix="mvd-load-bench-", dir=args.dir))
    try:
        path = work / f"{args.variant}_random.pth"
        start = time.perf_counter()
        write_like_release(path, config)
        written = time.perf_counter() - start
        with torch.device("meta"):
            from mvdust3r_blender.engine.model import build_model
            weights = sum(t.nbytes for t in build_model(config).state_dict().values())
        print(f"wrote {path.name}: {path.stat().st_size / GB:.2f} GB ({weights / GB:.2f} GB weights) "
              f"in {written:.1f} s", flush=True)
        cache = work / "cache"
        rows = [run(mode, path, cache) for mode in ("first", "cached", "cached+touch")]
        if args.baseline:
            rows.append(run("baseline", path, cache))
        cache_file = next(cache.glob("*.safetensors"))
        print(f"cache: {cache_file.stat().st_size / GB:.2f} GB\n")
        print("| load | seconds | peak RSS (GB) | growth over imports (GB) | growth / weights |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            growth = row["peak"] - row["base"]
            print(f"| {row['mode']} | {row['seconds']:.2f} | {row['peak'] / GB:.2f} | {growth / GB:.2f} | "
                  f"{growth / weights:.2f} |")
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
        if args.json:
            args.json.write_text(json.dumps({"weights": weights, "file": path.stat().st_size,
                                             "cache": cache_file.stat().st_size, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
