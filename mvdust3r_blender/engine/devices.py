"""Which torch device a run uses: the user's choice, checked against this runtime.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Asking for a device this runtime lacks is a
:class:`DeviceError` that says what is available, never a silent fallback.
"""
from __future__ import annotations

import torch

from ..core.options import DEVICES
from .errors import DeviceError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The device kinds this runtime can use, best first (always ends with ``cpu``)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(choice: str = "auto") -> torch.device:
    """Turn ``auto``/``cuda``/``mps``/``cpu`` (or ``cuda:1``) into a usable :class:`torch.device`."""
    name = (choice or "auto").strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICES or (":" in name and kind != "cuda"):
        raise DeviceError(f"unknown device {choice!r}", f"use one of {', '.join(DEVICES)}")
    available = available_devices()
    if kind == "auto":
        return torch.device(available[0])
    if kind not in available:
        raise DeviceError(f"device {choice!r} is not available in this runtime (torch {torch.__version__})",
                          f"available here: {', '.join(available)}; choose one of those or 'auto'")
    if kind == "cuda" and ":" in name:
        index_text = name.split(":", 1)[1]
        if not index_text.isdigit() or int(index_text) >= torch.cuda.device_count():
            raise DeviceError(f"device {choice!r} does not exist",
                              f"this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 upwards")
    return torch.device(name)
