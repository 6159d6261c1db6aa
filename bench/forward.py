"""Network forward benchmark: wall time, peak memory and achieved FLOP/s of the full-size models.

    .venv/bin/python bench/forward.py [--views 4 12] [--variants MVD MVDp] [--threads 2]
                                      [--modes predict forward] [--json results.json]
    .venv/bin/python bench/forward.py --flops --views 4 12 24 100   (work only, seconds)

Every row runs in a fresh process (so its peak RSS is its own): it builds the full released
configuration with random weights (eval mode), measures this machine's float32 (and bfloat16)
matmul peak, then times ONE call on random 224×224 images:

- ``predict``: the pipeline's call (path 0 only, shared keys/values, chunked) — fp32 by default;
  ``predict:bf16-skip-cnn``, ``predict:bf16``, ``predict:no-skip-cnn`` are the opt-in fast modes;
- ``forward``: our official-semantics forward (every path's heads, as the official code).

FLOPs are counted with ``torch.utils.flop_counter`` on the meta device (same code path, no data),
so "achieved" = counted FLOPs / wall time, shown as a fraction of the matmul peak measured in the
same process. On a shared machine the wall time includes time the threads wait for a core, so
the process CPU time divided by the thread count is reported beside it. Peak memory = the
highest RSS sampled every 20 ms during the call.
``--mem-views N`` adds a memory-only row per variant: predict on N views with the full widths but
one encoder and one decoder layer and no skip CNN (what grows with N is the per-layer decoder
state; the encoder and the heads run ``view_chunk`` views at a time, so their share is the same
as in the full rows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:    # imported where used: the parent process only spawns one process per row
    import torch

    from mvdust3r_blender.engine.config import ModelConfig
    from mvdust3r_blender.engine.model import MultiViewModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 1024 ** 3


@dataclass
class Row:
    variant: str
    views: int
    mode: str
    seconds: float
    cpu_seconds: float
    tflop: float
    peak_fp32_gflops: float
    peak_bf16_gflops: float
    rss_before_gib: float
    peak_rss_gib: float
    threads: int

    @property
    def achieved_gflops(self) -> float:
        return self.tflop * 1e3 / self.seconds

    @property
    def busy_seconds(self) -> float:
        """CPU time over threads: what the call takes with its threads never preempted."""
        return self.cpu_seconds / self.threads


def matmul_peak(dtype_name: str) -> float:
    """Best of 5 GFLOP/s of a 4096² matmul in this process."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(4096, 4096).to(dtype)
    b = torch.randn(4096, 4096).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 ** 3 / best / 1e9


class PeakRss:
    """Samples this process's RSS in a thread while the block runs."""

    def __enter__(self) -> "PeakRss":
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def call(model: MultiViewModel, images: torch.Tensor, mode: str) -> object:
    """Run one benchmark call of ``mode`` on ``images`` [N,3,H,W]."""
    import torch

    if mode.startswith("predict"):
        options: dict[str, dict[str, Any]] = {
            "predict": {}, "predict:bf16-skip-cnn": {"precision": "bf16-skip-cnn"},
            "predict:bf16": {"precision": "bf16"}, "predict:no-skip-cnn": {"skip_cnn": False}}
        return model.predict(images, **options[mode])
    if mode == "forward":
        views = [{"img": images[i:i + 1]} for i in range(images.shape[0])]
        with torch.no_grad():
            return model(views[0], views[1:])
    raise ValueError(f"unknown mode {mode!r}")


def released_config(variant: str, layers: int | None = None) -> ModelConfig:
    """The released ``variant``'s config, with ``layers`` encoder and decoder layers if given."""
    from mvdust3r_blender.engine.config import ModelConfig

    cfg = ModelConfig.released_mvdp() if variant == "MVDp" else ModelConfig.released_mvd()
    return cfg if layers is None else replace(cfg, enc_depth=layers, dec_depth=layers)


def run_row(variant: str, views: int, mode: str, threads: int, layers: int | None) -> Row:
    import torch

    from mvdust3r_blender.engine.model import build_model

    torch.set_num_threads(threads)
    # bf16 modes do the fp32 mode's operations (autocast has no meta device)
    tflop = count_tflop(variant, views, "predict" if "bf16" in mode else mode, layers)

    torch.manual_seed(0)
    model = build_model(released_config(variant, layers)).eval()
    images = torch.rand(views, 3, 224, 224) * 2 - 1
    peak32, peak16 = matmul_peak("float32"), matmul_peak("bfloat16")
    import psutil

    before = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        t, cpu = time.perf_counter(), time.process_time()
        call(model, images, mode)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    return Row(variant, views, mode if layers is None else f"{mode} ({layers}-layer, memory)",
               seconds, cpu, tflop, peak32, peak16, before / GIB, rss.peak / GIB, threads)


def count_tflop(variant: str, views: int, mode: str, layers: int | None = None) -> float:
    """TFLOPs of one call, counted on the meta device (no data, seconds)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mvdust3r_blender.engine.model import build_model

    with torch.device("meta"):
        model = build_model(released_config(variant, layers)).eval()
    counter = FlopCounterMode(display=False)
    with counter:
        call(model, torch.empty(views, 3, 224, 224, device="meta"), mode)
    return counter.get_total_flops() / 1e12


def official_extra_tflop(variant: str, views: int) -> float:
    """Work the official code does on top of our ``forward``: it projects the keys/values of
    every other view again for each query view, where we project each view once per
    block and path. Per layer, with R paths and N views, the official code projects
    R·(N-1)² + R·(N-1) views in the reference/source blocks and R·N·(R-1) in the
    cross-reference blocks; ours R·N + R·(N-1) and R·N. One view's k and v: 2·(2·T·D²)."""
    r, n, t, d, layers = (4 if variant == "MVDp" else 1), views, 196, 768, 12
    extra = r * (n - 1) ** 2 - r * n
    if variant == "MVDp":
        extra += r * n * (r - 1) - r * n
    return layers * extra * 4 * t * d * d / 1e12


def flops_table(variants: list[str], views: list[int]) -> str:
    lines = ["| model | views | predict TFLOP | our forward TFLOP | official forward TFLOP (est.) "
             "| official / predict |", "|---|---|---|---|---|---|"]
    for v in variants:
        for n in views:
            pred, fwd = count_tflop(v, n, "predict"), count_tflop(v, n, "forward")
            off = fwd + official_extra_tflop(v, n)
            lines.append(f"| {v} | {n} | {pred:.2f} | {fwd:.2f} | {off:.2f} | {off / pred:.2f}× |")
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    lines = ["| model | views | call | wall s | CPU s / threads | TFLOP | achieved GFLOP/s "
             "| of fp32 mm peak | peak RSS GiB (before call) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.views} | {r.mode} | {r.seconds:.1f} | "
                     f"{r.busy_seconds:.1f} | {r.tflop:.2f} | "
                     f"{r.achieved_gflops:.0f} | {r.achieved_gflops / r.peak_fp32_gflops:.0%} "
                     f"(peak {r.peak_fp32_gflops:.0f}; bf16 {r.peak_bf16_gflops:.0f}) | "
                     f"{r.peak_rss_gib:.2f} ({r.rss_before_gib:.2f}) |")
    by_key = {(r.variant, r.views, r.mode): r for r in rows}
    ratios = []
    for (v, n, m), fwd in by_key.items():
        pred = by_key.get((v, n, "predict"))
        if m == "forward" and pred is not None:
            ratios.append(f"- {v} {n} views: forward / predict = "
                          f"{fwd.seconds / pred.seconds:.2f}× wall, "
                          f"{fwd.cpu_seconds / pred.cpu_seconds:.2f}× CPU time")
    return "\n".join(lines + [""] + ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, nargs="+", default=[4, 12])
    ap.add_argument("--variants", nargs="+", default=["MVD", "MVDp"], choices=["MVD", "MVDp"])
    ap.add_argument("--modes", nargs="*", default=["predict", "forward"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mem-views", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--flops", action="store_true",
                    help="only print counted FLOPs (ours) and the official estimate, no timing")
    ap.add_argument("--row", nargs=4, metavar=("VARIANT", "VIEWS", "MODE", "LAYERS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        variant, views, mode, layers = args.row
        row = run_row(variant, int(views), mode, args.threads,
                      None if layers == "full" else int(layers))
        print("ROW " + json.dumps(asdict(row)), flush=True)
        return

    if args.flops:
        print(flops_table(args.variants, args.views))
        return
    plan = [(v, n, m, "full") for v in args.variants for n in args.views for m in args.modes]
    if args.mem_views:
        plan += [(v, args.mem_views, "predict:no-skip-cnn", "1") for v in args.variants]
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, threads {args.threads}", flush=True)
    rows = []
    for variant, views, mode, layers in plan:
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                              "--row", variant, str(views), mode, layers],
                             capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ROW ")), None)
        if line is None:
            sys.exit(f"row {variant} {views} {mode} failed:\n{out.stderr[-3000:]}")
        rows.append(Row(**json.loads(line[4:])))
        r = rows[-1]
        print(f"{r.variant} {r.views} {r.mode}: {r.seconds:.1f} s (CPU {r.cpu_seconds:.1f} s), "
              f"{r.tflop:.2f} TFLOP, "
              f"{r.achieved_gflops:.0f} GFLOP/s (fp32 peak {r.peak_fp32_gflops:.0f}), "
              f"peak RSS {r.peak_rss_gib:.2f} GiB", flush=True)
        if args.json:
            args.json.write_text(json.dumps([asdict(x) for x in rows], indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
