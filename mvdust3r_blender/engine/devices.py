"""Which torch device a run uses: the user's choice, checked against this runtime; and what this
runtime can compute on (:func:`device_infos`, the worker's answer to ``hello``).

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Asking for a device this runtime lacks is a
:class:`DeviceError` that says what is available, never a silent fallback.
"""
from __future__ import annotations

import os
import platform

import torch

from ..core.options import DEVICES
from ..core.protocol.events import DeviceInfo
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


def device_infos() -> list[DeviceInfo]:
    """What this runtime can compute on, best first (the order ``auto`` picks from)."""
    found: list[DeviceInfo] = []
    for kind in available_devices():
        if kind == "cuda":
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                found.append(DeviceInfo(name=f"cuda:{index}", label=props.name, memory=int(props.total_memory),
                                        free=_free_memory(index, int(props.total_memory))))
        elif kind == "mps":
            found.append(DeviceInfo(name="mps", label="Apple GPU (Metal)"))
        else:
            found.append(DeviceInfo(name=kind, label=platform.processor() or platform.machine(),
                                    memory=_physical_memory()))
    return found


def _free_memory(index: int, total: int) -> int:
    """Free bytes on GPU `index`: from NVML when it is installed (no CUDA context is made on a GPU
    the run may never use), else from the CUDA driver (which makes one)."""
    try:
        return max(total - int(torch.cuda.device_memory_used(index)), 0)
    except Exception:  # noqa: BLE001 -- no pynvml / amdsmi, or an older torch: ask the driver
        return int(torch.cuda.mem_get_info(index)[0])


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 0
