"""Errors a user can cause, each with a stable code and a hint on what to do.

Raised anywhere in the engine, caught once at the boundary (worker loop, command line), and shown:
the worker turns them into ``error`` events (code, message, hint). Standard library only.
"""
from __future__ import annotations

from ..core.errors import UserError


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
