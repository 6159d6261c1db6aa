"""The errors a user fixes before a run can start: set-up (runtime, checkpoint) and the run's input."""
from __future__ import annotations

from ..core.errors import UserError


class SetupError(UserError):
    """Something the user has to set up first; `message` says what is missing, `hint` how to fix it."""

    code = "setup"


class RunError(UserError):
    """Photos or options that cannot be reconstructed; `message` names the input, `hint` the fix."""
