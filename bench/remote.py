"""Benchmark: what running the worker over ssh costs on top of running it locally, on loopback.

    .venv/bin/python bench/remote.py [--photos 12 100] [--megabytes 5]     (as root: it starts sshd)

The link itself is free on loopback, so this measures the remote mode's own overhead: ssh's
encryption, base64 in JSON lines, the copies into the job folder and back, the bundle's check and
rewrite on arrival. It starts the tests' sshd with its throw-away user (tests/helpers/remote_host.py),
writes N JPEG photos of about M MB each (noise, so they do not compress), and reconstructs them
with the built-in model on the CPU, locally (:class:`WorkerClient`) and through ssh
(:class:`RemoteWorkerClient`), each after a warm-up request that loads the model (and, remotely,
sends the engine). For each: wall seconds of the request, the seconds from the first to the last
``upload`` / ``download`` progress event, bytes each way, and the peak resident memory of this
client process and of the worker process (sampled every 20 ms with psutil; on loopback the
"remote" worker is a process of this machine). Prints a markdown table for docs/remote.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvdust3r_blender.core.protocol.events import Event, HelloEvent, ProgressEvent, ResultEvent  # noqa: E402
from mvdust3r_blender.client.remote import RemoteTarget, RemoteWorkerClient  # noqa: E402
from mvdust3r_blender.client.worker_client import WorkerClient  # noqa: E402
from tests.helpers.photos import noise_jpegs  # noqa: E402

MODEL = ROOT / "models" / "default.safetensors"


class PeakMemory:
    """The peak RSS of some processes while it runs (a sampling thread)."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = [0] * len(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for k, proc in enumerate(self.processes):
                try:
                    self.peak[k] = max(self.peak[k], proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(client: WorkerClient, photos: list[Path], out: Path, checkpoint: str) -> dict[str, Any]:
    """One request after a warm-up: seconds, stage spans, sizes, peak memory."""
    client.wait(client.reconstruct(photos[:4], out / "warm.npz", checkpoint=checkpoint, device="cpu"), 600)
    hello = client.wait(client.hello(), 60)
    assert isinstance(hello, HelloEvent)
    spans: dict[str, list[float]] = {}

    def follow(event: Event) -> None:
        if isinstance(event, ProgressEvent):
            spans.setdefault(event.stage, []).append(time.perf_counter())

    with PeakMemory([psutil.Process().pid, hello.pid]) as memory:
        started = time.perf_counter()
        result = client.wait(client.reconstruct(photos, out / "scene.npz", checkpoint=checkpoint, device="cpu"),
                             600, on_event=follow)
        seconds = time.perf_counter() - started
    assert isinstance(result, ResultEvent)
    span: Callable[[str], float] = lambda s: (spans[s][-1] - spans[s][0]) if s in spans else 0.0
    return {"seconds": seconds, "upload": span("upload"), "download": span("download"),
            "worker": result.timings.get("total", 0.0), "bundle": Path(result.bundle).stat().st_size,
            "client_rss": memory.peak[0], "worker_rss": memory.peak[1]}


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table. Overhead = what the client waited beyond the worker's own compute time,
    over ssh minus locally: the worker's compute varies from run to run on a shared machine, the
    transfer's cost does not hide in it."""
    lines = ["| photos | MB sent | local: wall / compute (s) | over ssh: wall / compute (s) | overhead (s) "
             "| upload (s) | download (s) | bundle (MB) | client peak RSS local / ssh (MB) "
             "| worker peak RSS local / ssh (MB) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        local, remote = row["local"], row["remote"]
        overhead = (remote["seconds"] - remote["worker"]) - (local["seconds"] - local["worker"])
        lines.append(f"| {row['photos']} | {row['megabytes']:.0f} | {local['seconds']:.2f} / {local['worker']:.2f} "
                     f"| {remote['seconds']:.2f} / {remote['worker']:.2f} | {overhead:.2f} | {remote['upload']:.2f} "
                     f"| {remote['download']:.2f} | {remote['bundle'] / 1e6:.1f} "
                     f"| {local['client_rss'] / 1e6:.0f} / {remote['client_rss'] / 1e6:.0f} "
                     f"| {local['worker_rss'] / 1e6:.0f} / {remote['worker_rss'] / 1e6:.0f} |")
    return "\n".join(lines)


def main() -> int:
    from tests.helpers import remote_host

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[12, 100])
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args()
    host = remote_host.start(remote_host.default_worker_python())
    rows = []
    try:
        target = RemoteTarget(host.destination, host.ssh_command(), host.python)
        checkpoint = host.place(MODEL)
        with tempfile.TemporaryDirectory(prefix="mvd-bench-remote-") as tmp:
            photos = noise_jpegs(Path(tmp), max(args.photos), args.megabytes)
            sent = [sum(p.stat().st_size for p in photos[:n]) for n in args.photos]
            for n, total in zip(args.photos, sent):
                row: dict[str, Any] = {"photos": n, "megabytes": total / 1e6}
                for name, client in (("local", WorkerClient(remote_host.default_worker_python())),
                                     ("remote", RemoteWorkerClient(target))):
                    out = Path(tmp) / f"{name}-{n}"
                    out.mkdir()
                    with client:
                        row[name] = measure(client, photos[:n], out, str(MODEL) if name == "local" else checkpoint)
                rows.append(row)
                print(f"{n} photos: {row}", file=sys.stderr, flush=True)
    finally:
        host.stop()
    print(f"- Machine: {platform.machine()}, {psutil.cpu_count()} vCPUs, {platform.platform()}; "
          f"date {time.strftime('%Y-%m-%d')}; built-in model on the CPU; sshd and ssh on 127.0.0.1.\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
