"""The checks every splat file reader shares: the memory an import needs, checked before the
decoded arrays are allocated, and the decoded values (finite numbers, positive scales, rotation
quaternions that can be made unit)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..splat_field import SplatField, sh_count
from .file import SplatFileError, fail

BLENDER_BYTES_PER_GAUSSIAN = 320
"""About what one Gaussian costs in Blender besides its decoded arrays: the points' attributes
(≈ 70 bytes), the evaluated splat instances and Cycles' copy of them at render. An estimate, kept on
the safe side, for refusing a file before Blender runs out of memory."""



def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux ``MemAvailable``, else the free physical
    pages; Windows through ``GlobalMemoryStatusEx``), or None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if os.name == "nt":
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("available", ctypes.c_ulonglong), ("page_total", ctypes.c_ulonglong),
                        ("page_free", ctypes.c_ulonglong), ("virtual_total", ctypes.c_ulonglong),
                        ("virtual_free", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]
        status = _Status()
        status.length = ctypes.sizeof(_Status)
        if getattr(ctypes, "windll").kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.available)
        return None
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_needed(count: int, sh_degree: int) -> int:
    """Bytes an import of `count` Gaussians of `sh_degree` takes: the decoded field plus Blender's share."""
    field_bytes = 4 * (3 + 4 + 3 + 1 + 3 * sh_count(sh_degree))
    return count * (field_bytes + BLENDER_BYTES_PER_GAUSSIAN + 12 * (sh_count(sh_degree) - 1))


def check_memory(path: Path, count: int, sh_degree: int) -> None:
    need, free = memory_needed(count, sh_degree), available_memory()
    if free is not None and need > free:
        raise SplatFileError(f"{path}: {count:,} Gaussians (SH degree {sh_degree}) need about {need / 2**30:.1f} GiB "
                             f"to import, and this machine has {free / 2**30:.1f} GiB free",
                             "split or decimate the splats first (e.g. splat-transform's --decimate), or free memory")


def check_values(path: Path, field: SplatField) -> None:
    """Non-finite numbers make no Gaussian: say which attribute holds them and how many."""
    for name, values in (("positions", field.position), ("rotations", field.rotation), ("scales", field.scale),
                         ("opacities", field.opacity), ("colours (SH coefficients)", field.sh)):
        bad = ~np.isfinite(values).reshape(len(field), -1).all(axis=1)
        if bad.any():
            raise fail(path, f"{int(bad.sum()):,} of its {len(field):,} Gaussians have non-finite {name} (NaN or "
                       f"infinity), the first at index {int(np.argmax(bad))}",
                       "remove them in the tool that made the file (e.g. splat-transform's --filter-nan)")
    if len(field) and (field.scale <= 0).any():
        raise fail(path, "has Gaussians with a scale of zero or below", "re-export the file from its source")


def unit_quaternions(path: Path, wxyz: np.ndarray) -> np.ndarray:
    """float32 [M,4]: the rotations `wxyz` scaled to unit length; a zero quaternion cannot be."""
    norm = np.linalg.norm(wxyz, axis=1, keepdims=True)
    if len(wxyz) and not (norm > 0).all():
        raise fail(path, f"{int((norm[:, 0] <= 0).sum()):,} Gaussians have a zero rotation quaternion",
                   "remove them in the tool that made the file (e.g. splat-transform's --filter-nan)")
    return (wxyz / np.where(norm > 0, norm, 1)).astype(np.float32)
