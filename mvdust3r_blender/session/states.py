"""Where the panel's run is: the states the panel shows (``properties.RUN_STATES``)."""
from __future__ import annotations

import enum


class RunState(enum.Enum):
    """Where the panel's run is (the value is the identifier the panel's property stores)."""

    IDLE = "IDLE"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @property
    def description(self) -> str:
        return _RUN_STATE_DESCRIPTIONS[self]


_RUN_STATE_DESCRIPTIONS = {
    RunState.IDLE: "No reconstruction has run in this session",
    RunState.RUNNING: "A reconstruction is running",
    RunState.CANCELLING: "Waiting for the worker to stop",
    RunState.DONE: "The last reconstruction was imported",
    RunState.FAILED: "The last reconstruction failed",
    RunState.CANCELLED: "The last reconstruction was cancelled",
}


FINISHED_STATES = (RunState.DONE, RunState.FAILED, RunState.CANCELLED)
