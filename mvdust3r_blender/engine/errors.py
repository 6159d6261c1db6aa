"""Errors a user can cause, each with a stable code and a hint on what to do.

Raised anywhere in the engine, caught once at the boundary (worker loop, command line), and shown:
the worker turns them into ``error`` events (code, message, hint). Standard library only.
"""
from __future__ import annotations

import errno
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

from ..core.errors import UserError, mentions_out_of_memory


resource: Optional[ModuleType]
try:  # now, while there is memory to load it: near the limit, loading it fails too
    import resource
except ImportError:  # Windows has no address-space limit
    resource = None


class EngineError(UserError):
    """Base class: `message` names the input and the problem; `hint` says what to do about it."""

    code = "engine"


class CheckpointError(EngineError):
    """A checkpoint file is missing, corrupt, of an unsupported kind or unsafe to load."""

    code = "checkpoint"


class InputError(EngineError):
    """Photos or options that cannot be reconstructed (too few, unreadable, duplicated, ...)."""

    code = "input"


class DeviceError(EngineError):
    """The requested compute device is not available in this runtime."""

    code = "device"


class Cancelled(EngineError):
    """The run was cancelled on request."""

    code = "cancelled"


class BadRequest(EngineError):
    """A well-formed worker request whose values the worker cannot use (unknown option, dtype, ...)."""

    code = "bad_request"


class NotLoaded(EngineError):
    """A reconstruct request came before any model was loaded."""

    code = "not_loaded"


class RuntimeIncomplete(EngineError):
    """The worker's Python lacks a library a run needs (found by hello, so Check says it)."""

    code = "runtime"


class OutOfMemory(EngineError):
    """Host or device memory ran out; the worker frees what it can and keeps serving."""

    code = "out_of_memory"


OUT_OF_MEMORY_HINT = ("use fewer or smaller photos; on an NVIDIA GPU, the lower precision 'fast' keeps the weights "
                      "in bfloat16, half their memory; close other programs, or release other GPU memory (other Blender sessions, "
                      "other CUDA programs), or choose a device with more memory")


# torch's C++ check ("[enforce fail at alloc_cpu.cpp:127] err == 0. "): where and which condition, not what
_ENFORCE = re.compile(r"\[enforce fail at [^\]]*\]\s*(?:[^:.]*\.\s+)?")


def out_of_memory(exc: BaseException, what: str, where: str) -> Optional[OutOfMemory]:
    """The :class:`OutOfMemory` error for `exc` when it is an allocator failure — Python's
    ``MemoryError``, torch's ``OutOfMemoryError`` (CUDA), or any error whose text an allocator
    or loader writes on CPU, CUDA, ROCm or MPS (``DefaultCPUAllocator: can't allocate memory``,
    ``MPS backend out of memory``, ``failed to map segment``) — or any failure at all while the
    process has used up most of its address-space limit (:func:`address_space_pressure`); else
    None. `what` is the request (``reconstruct``), `where` the device."""
    if isinstance(exc, UserError):
        return None
    torch = sys.modules.get("torch")
    torch_oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    allocator = (isinstance(exc, MemoryError)
                 or (torch_oom is not None and isinstance(exc, torch_oom))
                 or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)
                 or (isinstance(exc, (RuntimeError, OSError, ImportError)) and mentions_out_of_memory(str(exc))))
    pressure = address_space_pressure()
    if not (allocator or pressure):
        return None
    said = _ENFORCE.sub("", (str(exc).strip().splitlines() or [""])[0])[:300]
    detail = said if allocator and said else f"{type(exc).__name__}{': ' + said if said else ''}"
    if pressure is None:
        return OutOfMemory(f"{what} ran out of memory on {where}: {detail}", OUT_OF_MEMORY_HINT)
    return OutOfMemory(f"{what} ran out of memory on {where}: {detail} ({pressure})",
                       "raise the address-space limit (ulimit -v) Blender and the worker run under; " + OUT_OF_MEMORY_HINT)


def address_space_pressure() -> Optional[str]:
    """What says that this process has mapped at least half of its address-space limit
    (``ulimit -v``), when it runs under one; else None. So close to the limit, loading a library
    or allocating fails in ways whose words never say memory — ``SystemError: ... returned NULL
    without setting an exception``, a half-initialised module's ``AttributeError``, a
    ``KeyboardInterrupt`` nobody sent — and those are the limit's doing, not the program's."""
    if resource is None:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY or limit <= 0:
        return None
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # no /proc (macOS)
        return None
    except MemoryError:  # not even the memory to read how much is mapped
        return f"nothing was left of the {limit >> 20} MiB its address-space limit allows"
    mapped = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), 0)
    if mapped < limit // 2:
        return None
    return f"it had mapped {mapped >> 20} MiB of the {limit >> 20} MiB its address-space limit allows"
