"""The one model a worker keeps loaded between requests.

It is reused while the checkpoint file (path, size, modification times), the device and the
weights' dtype stay the same, and loaded anew — the old one freed first — when any of them changes:
a run's ``precision`` can change the dtype (``fast`` keeps the weights in bfloat16 on CUDA, see
:mod:`.precision`). torch is imported on first load, so a worker answers ``hello`` without it.
"""
from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ..core.protocol.events import ModelInfo
from ..core.registry import checkpoint_path
from .errors import BadRequest

if TYPE_CHECKING:
    from .config import ModelConfig
    from .model import MultiViewModel
    from .precision import PrecisionPlan

log = logging.getLogger("mvdust3r.worker")

DTYPES = ("float32", "float16", "bfloat16")
ModelKey = tuple[str, int, tuple[int, int], str, Optional[str]]  # file path, size, (mtime, ctime) in ns, device, dtype


class LoadedModel:
    """The worker's model slot: the network, what identifies it, and how many loads it took."""

    def __init__(self) -> None:
        self.network: Optional[MultiViewModel] = None
        self.key: Optional[ModelKey] = None
        self.info: Optional[ModelInfo] = None
        self.loads = 0  # checkpoints loaded by this process: a reused model does not count

    @property
    def dtype(self) -> Optional[str]:
        """The dtype the loaded weights were asked in (None: the checkpoint's own, or nothing loaded)."""
        return self.key[4] if self.key is not None else None

    def ensure(self, checkpoint: str, device: str, dtype: str, progress: Callable[[str, float], None],
               opened: Optional[Callable[[ModelConfig], None]] = None) -> bool:
        """Load `checkpoint` unless the same file is loaded with the same device and weights'
        `dtype` (:func:`weights_dtype`); returns whether the loaded model was reused.
        `opened(config)` is called once the file is read and checked, before its weights load
        (the slow part on a GPU)."""
        from .checkpoint import open_checkpoint
        from .devices import resolve_device

        path = Path(checkpoint_path(checkpoint)).expanduser().resolve()  # "builtin": the engine's own copy
        torch_device = resolve_device(device)
        try:
            stat = path.stat()
            key: Optional[ModelKey] = (str(path), stat.st_size, (stat.st_mtime_ns, stat.st_ctime_ns), str(torch_device),
                                       dtype)
        except OSError:
            key = None  # open_checkpoint reports the missing or unreadable file
        if key is not None and key == self.key and self.network is not None:
            return True
        progress("load", 0.0)
        import torch

        checked = open_checkpoint(path)  # a bad file fails here, while the old model is still loaded
        if opened is not None:
            opened(checked.model.config)
        self.drop()                      # free it before the new weights need the memory
        network = checked.materialise(torch_device, getattr(torch, dtype) if dtype else None)
        del checked
        self.network, self.key = network, key
        first = next(iter(network.parameters()), None)
        self.info = ModelInfo(checkpoint=str(path), device=str(torch_device),
                              dtype=str(first.dtype).removeprefix("torch.") if first is not None else "",
                              variant=network.config.variant)
        self.loads += 1
        progress("load", 1.0)
        log.info("loaded %s on %s (%s)", path, torch_device, self.info.dtype)
        return False

    def drop(self) -> None:
        """Let go of the network and give its memory back."""
        self.network = self.key = self.info = None
        free_cached_memory()


def weights_dtype(dtype: Optional[str], plan: PrecisionPlan) -> str:
    """The request's `dtype` when given (checked), else the one the run's `plan` keeps the weights in."""
    if dtype is not None and dtype not in DTYPES:
        raise BadRequest(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}, or null for the checkpoint's own")
    return dtype or plan.weights_name


def plan_precision(precision: str, device: str) -> PrecisionPlan:
    """What `precision` means on `device` (``auto``, ``cuda:1``, ...): planned once per request."""
    from .devices import resolve_device
    from .precision import plan_for

    return plan_for(precision, resolve_device(device))


def free_cached_memory() -> None:
    """Collect garbage and return the allocators' cached blocks to the device."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    backend = getattr(torch.backends, "mps", None)
    if mps is not None and backend is not None and backend.is_available():
        mps.empty_cache()
