"""The one shape of an error a user can fix: what went wrong (naming the input) and what to do.

Every such error in both processes derives from :class:`UserError`, and each subclass lives in
the room that raises it: the engine's (``engine/errors.py``: checkpoints, photos, devices), the
bundle's, the exports', the options', the worker client's, downloads, runtime set-up, and the
Blender side's run and set-up errors (``session.errors``). A boundary (operator, command line, worker
loop) catches this one type and shows ``message`` and ``hint``; ``code`` is the stable name the
worker puts in its ``error`` events. Standard library only.
"""
from __future__ import annotations


class UserError(Exception):
    """`message` names the input and the problem; `hint` says what to do about it (may be empty)."""

    code: str = "input"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        """One line for a terminal: ``message — hint`` (a dash, since both may hold brackets)."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


# What allocators and loaders say when memory runs out: torch's CPU allocator ("DefaultCPUAllocator:
# can't allocate memory"), CUDA/HIP/MPS ("... out of memory"), C++ (std::bad_alloc), the dynamic
# loader under an address-space limit ("failed to map segment from shared object"), ENOMEM's text.
# torch's CPU allocator says "not enough memory"; OpenBLAS "Memory allocation (still) failed" or "too many
# memory regions"; libgomp "Out of memory allocating N bytes" (then exit(1), no signal).
_OUT_OF_MEMORY_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
                          "failed to map segment", "memoryerror", "not enough memory", "memory allocation failed",
                          "memory allocation still failed",
                          "too many memory regions")


def mentions_out_of_memory(text: str) -> bool:
    """Whether an error message or a log line says that memory ran out (host or device)."""
    lowered = text.lower()
    return any(phrase in lowered for phrase in _OUT_OF_MEMORY_PHRASES)


class OptionError(UserError, ValueError):
    """An option out of range, of the wrong kind or unknown; the message names the option and value."""
