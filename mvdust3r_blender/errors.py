"""The one shape of an error a user can fix: what went wrong (naming the input) and what to do.

Every such error in both processes derives from :class:`UserError` — the engine's (checkpoints,
photos, devices), the worker client's, downloads, runtime set-up, runs — so a boundary (operator,
command line, worker loop) catches one type and shows ``message`` and ``hint``. Standard library only.
"""
from __future__ import annotations


class UserError(Exception):
    """`message` names the input and the problem; `hint` says what to do about it (may be empty)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
