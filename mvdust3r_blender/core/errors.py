"""The one shape of an error a user can fix: what went wrong (naming the input) and what to do.

Every such error in both processes derives from :class:`UserError`, and each subclass lives in
the room that raises it: the engine's (``engine/errors.py``: checkpoints, photos, devices), the
bundle's, the exports', the options', the worker client's, downloads, runtime set-up, and the
Blender side's run and set-up errors (``session.py``). A boundary (operator, command line, worker
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
        return f"{self.message} ({self.hint})" if self.hint else self.message


class OptionError(UserError, ValueError):
    """An option out of range, of the wrong kind or unknown; the message names the option and value."""
