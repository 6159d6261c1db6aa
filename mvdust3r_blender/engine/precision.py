"""What a run's ``precision`` (``auto``, ``exact``, ``fast``; :data:`~..core.options.PRECISIONS`)
means on the device it runs on: the weights' dtype, the network's arithmetic, and the TF32 switches.

:func:`choose` is the decision, a pure function of the choice and what the device can do
(:class:`DeviceCaps`), so every branch is tested on any machine; :func:`probe` asks torch what a
device can do; :func:`plan_for` is the two together. Measured accuracy and speed of each choice:
``docs/benchmarks.md`` ("Precision").

- ``exact``: float32 weights and arithmetic, TF32 off for matmuls and convolutions (cuDNN's
  default is TF32 for convolutions): parity with the official code.
- ``auto`` (the default): what keeps the results. CUDA: TF32 matmuls and convolutions (Ampere or
  newer) and the bf16 skip CNN; the CPU and MPS: the bf16 skip CNN where bf16 runs natively. The
  skip CNN's output is added ×1e-4, so bf16 there stays within the float32 parity tolerance; it is
  the largest CPU saving that does. A bf16 skip CNN runs in channels-last layout on CUDA and the
  CPU (same maths; oneDNN's bf16 convolutions took half the time in it here, cuDNN's tensor cores
  want it), not on MPS.
- ``fast``: bfloat16 autocast over the whole network; on CUDA the weights are kept in bf16 on the
  device too (half the memory). Points move by about 1–2 %.

A device without native bf16 (a CPU without AVX-512 BF16/AMX, a pre-Ampere GPU, an MPS runtime
whose bf16 fails) falls back to float32 arithmetic, and the plan's ``note`` says why (logged and
recorded in the bundle's meta), never silently.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from ..core.options import PRECISIONS, check_precision
from .model import Precision

log = logging.getLogger("mvdust3r.precision")


@dataclass(frozen=True)
class DeviceCaps:
    """What one device can do for :func:`choose`."""

    kind: str                 # "cuda", "mps" or "cpu"
    bf16: bool                # bfloat16 matmuls and convolutions run natively (fast and correct)
    tf32: bool = False        # TF32 tensor cores (CUDA compute capability 8.0 or newer)
    why_not: str = ""         # when not bf16: why (for the plan's note)


@dataclass(frozen=True)
class PrecisionPlan:
    """How one run computes; :meth:`meta` is what the bundle records."""

    precision: str            # what was asked: auto, exact or fast
    device: str               # the device kind it was planned for
    weights: torch.dtype      # the dtype the weights are loaded in (BatchNorm stays float32)
    compute: Precision        # the network's arithmetic (``MultiViewModel.predict(precision=)``)
    tf32: bool                # TF32 matmuls and convolutions (CUDA only)
    note: str = ""            # why the plan is less than asked (a fallback), or ""
    channels_last: bool = False  # the skip CNN in NHWC layout (``predict(channels_last=)``)

    @property
    def weights_name(self) -> str:
        return str(self.weights).removeprefix("torch.")

    def meta(self, weights: Optional[torch.dtype] = None) -> dict[str, object]:
        """The bundle's ``meta["precision"]``; `weights` is the loaded model's dtype when it differs
        from the plan (a model loaded with an explicit dtype)."""
        return {"precision": self.precision, "weights": str(weights or self.weights).removeprefix("torch."),
                "compute": self.compute, "tf32": self.tf32, "channels_last": self.channels_last, "note": self.note}


def choose(precision: str, caps: DeviceCaps) -> PrecisionPlan:
    """The plan for `precision` on a device that can do `caps` (see the module doc)."""
    check_precision(precision)
    if precision == "exact":
        return PrecisionPlan(precision, caps.kind, torch.float32, "fp32", tf32=False)
    tf32 = caps.kind == "cuda" and caps.tf32
    nhwc = caps.bf16 and caps.kind != "mps"
    note = "" if caps.bf16 else f"bfloat16 is not used on this {caps.kind}: {caps.why_not}"
    if precision == "fast" and caps.bf16:
        weights = torch.bfloat16 if caps.kind == "cuda" else torch.float32  # CPU: fp32 files stay mapped
        return PrecisionPlan(precision, caps.kind, weights, "bf16", tf32=tf32, channels_last=nhwc)
    return PrecisionPlan(precision, caps.kind, torch.float32, "bf16-skip-cnn" if caps.bf16 else "fp32",
                         tf32=tf32, note=note, channels_last=nhwc)


@functools.lru_cache(maxsize=None)
def probe(device: torch.device) -> DeviceCaps:
    """Ask torch what `device` can do (on MPS: run a tiny bf16 convolution and matmul); asked once
    per device and process."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        native = major >= 8
        return DeviceCaps("cuda", bf16=native, tf32=native,
                          why_not="" if native else f"{name} (compute capability {major}.x) has no bf16 tensor cores")
    if device.type == "mps":
        try:
            x = torch.ones(1, 2, 4, 4, device=device)
            conv = torch.nn.Conv2d(2, 2, 3, padding=1).to(device)
            with torch.autocast("mps", dtype=torch.bfloat16):
                y = conv(x).flatten(1) @ torch.ones(32, 2, device=device)
            finite = bool(torch.isfinite(y.float()).all().item())
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            return DeviceCaps("mps", bf16=False, why_not=f"bfloat16 fails here ({str(exc).splitlines()[0]})")
        return DeviceCaps("mps", bf16=finite, why_not="" if finite else "bfloat16 gave non-finite numbers")
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return DeviceCaps("cpu", bf16=native,
                      why_not="" if native else "this CPU has no native bfloat16 (AVX-512 BF16 or AMX), "
                                                "where it would be slower than float32")


def plan_for(precision: str, device: torch.device) -> PrecisionPlan:
    """:func:`choose` for `device` as :func:`probe` finds it; a fallback is logged."""
    plan = choose(precision, probe(device))
    if plan.note:
        log.info("precision %s on %s: %s", precision, device, plan.note)
    return plan


@contextmanager
def numerics(plan: PrecisionPlan) -> Iterator[None]:
    """The plan's TF32 switches for the duration (CUDA only; restored afterwards). Uses torch's
    ``fp32_precision`` settings only: mixing them with the legacy ``allow_tf32`` flags is an error."""
    if plan.device != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]  # set at import by torch.backends.cudnn
    before = (matmul.fp32_precision, conv.fp32_precision)
    wanted = "tf32" if plan.tf32 else "ieee"
    matmul.fp32_precision = conv.fp32_precision = wanted
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


__all__ = ["PRECISIONS", "DeviceCaps", "PrecisionPlan", "choose", "numerics", "plan_for", "probe"]
