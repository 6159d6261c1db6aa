"""Errors a user can cause, each with a stable code and a hint on what to do.

Raised anywhere in the engine, caught once at the boundary (worker loop, command line), and shown:
the worker turns them into ``error`` events (code, message, hint). Standard library only.
"""
from __future__ import annotations

import errno
import sys
from typing import Optional

from ..core.errors import UserError, mentions_out_of_memory


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


class OutOfMemory(EngineError):
    """Host or device memory ran out; the worker frees what it can and keeps serving."""

    code = "out_of_memory"


OUT_OF_MEMORY_HINT = ("use fewer or smaller photos; on an NVIDIA GPU, the lower precision 'fast' keeps the weights "
                      "in bfloat16, half their memory; close other programs, or release other GPU memory (other Blender sessions, "
                      "other CUDA programs), or choose a device with more memory")


def out_of_memory(exc: BaseException, what: str, where: str) -> Optional[OutOfMemory]:
    """The :class:`OutOfMemory` error for `exc` when it is an allocator failure — Python's
    ``MemoryError``, torch's ``OutOfMemoryError`` (CUDA), or any error whose text an allocator
    or loader writes on CPU, CUDA, ROCm or MPS (``DefaultCPUAllocator: can't allocate memory``,
    ``MPS backend out of memory``, ``failed to map segment``) — else None. `what` is the request
    (``reconstruct``), `where` the device."""
    torch = sys.modules.get("torch")
    torch_oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if not (isinstance(exc, MemoryError)
            or (torch_oom is not None and isinstance(exc, torch_oom))
            or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)
            or (isinstance(exc, (RuntimeError, OSError, ImportError)) and mentions_out_of_memory(str(exc)))):
        return None
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return OutOfMemory(f"{what} ran out of memory on {where}: {detail}", OUT_OF_MEMORY_HINT)
