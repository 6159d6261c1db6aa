"""The speed of each precision on one device, in one short call: ``bench/gpu.py``.

    .venv/bin/python bench/gpu.py                              # CUDA: full size, 4/12/24/100 views
    .venv/bin/python bench/gpu.py --device cpu --views 4       # a minute on a laptop (the test runs this)
    .venv/bin/python bench/gpu.py --device cpu --config full --variants MVDp --views 12 \\
        --precisions exact auto --no-pipeline                   # the CPU goal: auto vs exact, one run

Network rows: MV-DUSt3R and MV-DUSt3R+ with random weights (eval mode, 224², batch 1), one
``predict`` per precision (``auto``, ``exact``, ``fast``, planned by ``engine.precision`` for this
device) and view count: the first call (cuDNN autotuning and lazy initialisation included) and the
best of ``--repeat`` warm calls, peak device memory (CUDA), and how far pts3d moved from ``exact``
(median relative change). Pipeline rows: ``engine.pipeline.reconstruct`` on generated JPEG photos
(``--photos`` of ``--photo-size``), stage by stage, first and warm.

``--config full`` is the released size; ``reduced`` narrows every layer and takes 64² input (same code
paths) so the CPU run takes seconds: full size on a 2-core CPU costs ≈ 20 s per 4-view call. The
default is full on CUDA and MPS, reduced on the CPU. Prints a markdown table with the device, torch,
CUDA and the date, for ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvdust3r_blender.core.options import PRECISIONS, ReconstructOptions  # noqa: E402
from mvdust3r_blender.engine.config import ModelConfig  # noqa: E402
from mvdust3r_blender.engine.devices import resolve_device  # noqa: E402
from mvdust3r_blender.engine.model import MultiViewModel, build_model  # noqa: E402
from mvdust3r_blender.engine.pipeline import reconstruct  # noqa: E402
from mvdust3r_blender.engine.precision import PrecisionPlan, numerics, plan_for  # noqa: E402
from tests.helpers.photos import smooth_photos  # noqa: E402

T = TypeVar("T")
VARIANTS = ("MVD", "MVDp")
STAGES = ("load", "network", "cameras", "gaussians")


def model_config(variant: str, size: str) -> ModelConfig:
    """The released configuration of `variant`, or its reduced twin (every width and depth cut)."""
    full = ModelConfig.released_mvdp() if variant == "MVDp" else ModelConfig.released_mvd()
    if size == "full":
        return full
    return replace(full, enc_embed_dim=128, enc_depth=2, enc_num_heads=4, dec_embed_dim=96, dec_depth=2,
                   dec_num_heads=4, skip_dim=16, gs_mlp_dim=64, img_size=(64, 64))


def random_model(variant: str, size: str, device: torch.device, seed: int) -> MultiViewModel:
    """A network of `variant` on `device` with random weights everywhere: the layers the official
    initialisation starts at zero (the skip CNN's last convolution, the cross-reference blocks'
    outputs) get small random weights too, so every precision's arithmetic shows in the outputs."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = build_model(model_config(variant, size)).eval()
    with torch.no_grad():
        for weight in model.parameters():
            if not weight.any():
                weight.normal_(std=0.02)
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(device: torch.device, run: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of `run()` (the device's queue drained before and after) and its result."""
    sync(device)
    started = time.perf_counter()
    out = run()
    sync(device)
    return time.perf_counter() - started, out


def with_weights(model: MultiViewModel, plan: PrecisionPlan) -> MultiViewModel:
    """`model` itself when its weights already have the plan's dtype, else a copy cast to it
    (BatchNorm stays float32, as the checkpoint loader keeps it)."""
    if model.patch_embed.proj.weight.dtype == plan.weights:
        return model
    cast = copy.deepcopy(model).to(plan.weights)
    for module in cast.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.float()
    return cast


@dataclass
class NetworkRow:
    variant: str
    views: int
    precision: str
    plan: str
    first_s: float
    first_cpu_s: float           # process CPU time of the first call over the torch threads (CPU runs)
    warm_s: Optional[float]
    peak_gib: Optional[float]
    change: Optional[float]      # median relative pts3d change against exact (None: exact not run)
    error: str = ""


def network_rows(variant: str, size: str, device: torch.device, views: Sequence[int], precisions: Sequence[str],
                 repeat: int, seed: int) -> list[NetworkRow]:
    base = random_model(variant, size, device, seed)
    rows = []
    reference: dict[int, torch.Tensor] = {}
    for precision in precisions:
        plan = plan_for(precision, device)
        model = with_weights(base, plan)
        for n in views:
            gen = torch.Generator().manual_seed(seed + n)
            images = (torch.rand(n, 3, *model.config.img_size, generator=gen) * 2 - 1).to(device)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)

            def call() -> torch.Tensor:
                with numerics(plan):
                    return model.predict(images, precision=plan.compute, channels_last=plan.channels_last).pts3d

            try:
                cpu = time.process_time()
                first, pts = timed(device, call)
                first_cpu = (time.process_time() - cpu) / torch.get_num_threads()
                warm = min((timed(device, call)[0] for _ in range(repeat)), default=None)
            except torch.OutOfMemoryError as exc:
                rows.append(NetworkRow(variant, n, precision, describe(plan), float("nan"), float("nan"), None, None, None,
                                       error=f"out of memory: {str(exc).splitlines()[0][:80]}"))
                continue
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
            pts = pts.float().cpu()
            if precision == "exact":
                reference[n] = pts
            change = None
            if n in reference:
                ref = reference[n]
                change = float(((pts - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-12)).median())
            rows.append(NetworkRow(variant, n, precision, describe(plan), first, first_cpu, warm, peak, change))
            del pts
        del model
    return rows


def describe(plan: PrecisionPlan) -> str:
    parts = [f"{plan.weights_name} weights", plan.compute] + (["TF32"] if plan.tf32 else []) \
        + (["channels-last"] if plan.channels_last else [])
    return ", ".join(parts) + (f" ({plan.note})" if plan.note else "")


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    """`count` JPEGs of `size` (W, H): smooth random colour fields, so they compress like photos."""
    return smooth_photos(folder, count, size, seed, coarse=(12, 16), name="photo_{:03d}.jpg", quality=90)


@dataclass
class PipelineRow:
    variant: str
    precision: str
    call: str                      # "first" or "warm"
    stages: dict[str, float]
    total: float


def pipeline_rows(variant: str, size: str, device: torch.device, photos: Sequence[Path], precisions: Sequence[str],
                  repeat: int, seed: int) -> list[PipelineRow]:
    base = random_model(variant, size, device, seed)
    rows = []
    for precision in precisions:
        model = with_weights(base, plan_for(precision, device))
        options = ReconstructOptions(precision=precision)
        for call in ["first"] + ["warm"] * repeat:
            total, bundle = timed(device, lambda: reconstruct(photos, model, options))
            timings = dict(bundle.meta["timings"])
            rows.append(PipelineRow(variant, precision, call, {k: float(timings.get(k, 0.0)) for k in STAGES}, total))
        del model
    return rows


def header(device: torch.device, size: str) -> list[str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        what = f"{name} ({memory:.0f} GiB)"
    elif device.type == "mps":
        what = f"Apple GPU (MPS) on {platform.machine()}"
    else:
        what = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return [f"- Device: {what}; model size: {size}",
            f"- Software: torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, "
            f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'}, "
            f"Python {platform.python_version()}",
            f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]


def fmt(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(net: Sequence[NetworkRow], pipe: Sequence[PipelineRow]) -> list[str]:
    lines = ["| model | views | precision | plan | first s | first CPU s / threads | warm s | peak GiB "
             "| pts3d change vs exact |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in net:
        change = "–" if r.change is None else f"{r.change:.2e}"
        if r.error:
            lines.append(f"| {r.variant} | {r.views} | {r.precision} | {r.plan} | {r.error} | | | | |")
        else:
            lines.append(f"| {r.variant} | {r.views} | {r.precision} | {r.plan} | {r.first_s:.3f} | "
                         f"{r.first_cpu_s:.3f} | {fmt(r.warm_s)} | {fmt(r.peak_gib, 2)} | {change} |")
    if pipe:
        lines += ["", "| pipeline model | precision | call | " + " | ".join(STAGES) + " | total s |",
                  "|---|---|---|" + "---:|" * (len(STAGES) + 1)]
        for p in pipe:
            lines.append(f"| {p.variant} | {p.precision} | {p.call} | "
                         + " | ".join(f"{p.stages[k]:.3f}" for k in STAGES) + f" | {p.total:.3f} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, mps or cpu")
    parser.add_argument("--config", choices=("full", "reduced"), help="model size (default: full on a GPU, "
                                                                      "reduced on the CPU)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--views", nargs="+", type=int, default=[4, 12, 24, 100])
    parser.add_argument("--precisions", nargs="+", choices=tuple(PRECISIONS), default=["exact", "auto", "fast"])
    parser.add_argument("--repeat", type=int, help="warm calls after the first (default 2 on a GPU, 1 on the CPU)")
    parser.add_argument("--photos", type=int, help="photos for the pipeline rows (default 12 on a GPU, 4 on the CPU)")
    parser.add_argument("--photo-size", default=None, help="W×H of the generated photos (default 4000x3000 "
                                                          "on a GPU, 640x480 on the CPU)")
    parser.add_argument("--no-pipeline", action="store_true", help="network rows only")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type != "cpu"
    size = args.config or ("full" if gpu else "reduced")
    repeat = args.repeat if args.repeat is not None else (2 if gpu else 1)
    started = time.perf_counter()
    net: list[NetworkRow] = []
    for variant in args.variants:
        net += network_rows(variant, size, device, args.views, args.precisions, repeat, args.seed)
        print(f"[{time.perf_counter() - started:.0f} s] {variant} network rows done", file=sys.stderr, flush=True)
    pipe: list[PipelineRow] = []
    if not args.no_pipeline:
        w, h = (int(v) for v in (args.photo_size or ("4000x3000" if gpu else "640x480")).lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="mvdust3r-bench-") as folder:
            photos = write_photos(Path(folder), args.photos or (12 if gpu else 4), (w, h), args.seed)
            pipe = pipeline_rows("MVDp", size, device, photos, args.precisions, repeat, args.seed)
    print("\n".join(header(device, size) + [f"- Wall time of this benchmark: {time.perf_counter() - started:.0f} s", ""]
                    + table(net, pipe)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
