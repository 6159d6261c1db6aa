"""Benchmark: a batch on a local two-node Ray cluster against the local one-worker batch.

    .venv/bin/python bench/ray_batch.py [--scenes 8] [--views 8] [--megabytes 1]

Starts the tests' cluster (tests/helpers/ray_cluster.py: two nodes on 127.0.0.1, token auth, one CPU each),
writes `scenes` scenes of `views` noise JPEGs of about `megabytes` MB each, and reconstructs them
with the built-in model on the CPU twice, in one run: by one local worker (one request after the
other, the model loaded once, as the local batch does) and through the Ray driver
(:class:`~mvdust3r_blender.core.farm.FarmClient`, as ``reconstruct_many(ray=)`` does). Both walls
include starting the workers and loading the model. On two cores there is nothing to gain, so the
ratio says what Ray costs; the per-scene overhead is split as the driver measures it: before the
actor began (photos' upload, scheduling, queueing behind the actor's current scene), the actor's own
work around the worker's (photos written, results read and hashed), after it ended (results'
download, SHA-256 and bundle checks, atomic writes). Prints a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import ray_cluster  # noqa: E402
from tests.helpers.photos import noise_jpegs  # noqa: E402

from mvdust3r_blender.client.farm import FarmClient
from mvdust3r_blender.core.farm import FarmEvent, FarmJob, FarmScene  # noqa: E402
from mvdust3r_blender.core.protocol.requests import ReconstructRequest  # noqa: E402
from mvdust3r_blender.core.protocol.wire import encode  # noqa: E402
from mvdust3r_blender.client.worker_client import WorkerClient  # noqa: E402

MODEL = ROOT / "models" / "default.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--local-threads", type=int, default=1,
                        help="torch threads of the local worker (each actor gets 1, as Ray gives an actor of 1 CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mvd-bench-ray-") as tmp:
        root = Path(tmp)
        photos = [noise_jpegs(root / f"scene{i}", args.views, args.megabytes, seed=i) for i in range(args.scenes)]
        local_wall, local_compute = local_batch(photos, root / "local", args.local_threads)
        ray_wall, events = ray_batch(photos, root / "ray")
    done = [e for e in events if e.kind == "done"]
    assert len(done) == args.scenes, [e for e in events if e.kind in ("failed", "error")]
    compute = statistics.mean(e.timings["total"] for e in done)
    before = sorted(e.timings["before"] for e in done)
    first_per_actor = before[: len({e.actor for e in done})]  # scenes that did not queue behind another
    actor = statistics.mean(e.timings["actor"] for e in done)
    after = statistics.mean(e.timings["after"] for e in done)
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"{args.scenes} scenes × {args.views} photos of ≈{args.megabytes:g} MB; date {time.strftime('%Y-%m-%d')}")
    print()
    print("| | wall (s) | scenes/min | compute per scene (s) |")
    print("|---|---:|---:|---:|")
    threads = f"{args.local_threads} thread{'s' if args.local_threads != 1 else ''}"
    print(f"| local, one worker ({threads}) | {local_wall:.1f} | {60 * args.scenes / local_wall:.1f} "
          f"| {local_compute:.2f} |")
    print(f"| Ray, two nodes × 1 CPU | {ray_wall:.1f} | {60 * args.scenes / ray_wall:.1f} | {compute:.2f} |")
    print()
    print(f"Ray/local throughput: {local_wall / ray_wall:.2f}. Per-scene overhead: before the actor began "
          f"{statistics.mean(first_per_actor):.3f} s (first scene per actor; with a queue "
          f"{statistics.mean(before):.3f} s), around the worker on the actor {actor:.3f} s, after it ended "
          f"{after:.3f} s (download, checks, writes).")
    return 0


def requests(photos: list[list[Path]], out: Path) -> list[ReconstructRequest]:
    return [ReconstructRequest(id=f"scene{i}", photos=[str(p) for p in scene], output=str(out / f"scene{i}.npz"),
                               device="cpu") for i, scene in enumerate(photos)]


def local_batch(photos: list[list[Path]], out: Path, threads: int) -> tuple[float, float]:
    """Wall seconds of the local batch (worker start and model load included), mean compute per scene."""
    started = time.perf_counter()
    totals = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with WorkerClient(ray_cluster.worker_python(), env=env) as client:
        for request in requests(photos, out):
            result = client.wait(client.reconstruct(request.photos, request.output, checkpoint=MODEL, device="cpu"),
                                 timeout=600)
            totals.append(float(getattr(result, "timings")["total"]))
    return time.perf_counter() - started, statistics.mean(totals)


def ray_batch(photos: list[list[Path]], out: Path) -> tuple[float, list[FarmEvent]]:
    cluster = ray_cluster.start(nodes=2)
    try:
        scenes = [FarmScene(r.id, encode(r)) for r in requests(photos, out)]
        started = time.perf_counter()
        client = FarmClient(cluster.python, FarmJob(address=cluster.address, scenes=scenes, checkpoint=str(MODEL),
                                                    device="cpu"), env=cluster.env())
        try:
            events = list(client.events())
        finally:
            client.stop()
        return time.perf_counter() - started, events
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
