"""Setup steps: command lines run one after another in child processes, logged to one file and
never blocking the UI — how the worker's runtime is installed, here or on a remote over ssh.

A :class:`Job` is advanced by :meth:`Job.poll` from a timer (the preferences' install) or by
:meth:`Job.wait` (scripts, tests); a failed step becomes a :class:`RuntimeSetupError` naming the
step and its command, with the installer's last lines and a hint (:func:`diagnose`).
"""
from __future__ import annotations

import enum
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence

from ..core.errors import UserError


class RuntimeSetupError(UserError):
    """The runtime cannot be made or used; `message` names what failed, `hint` what to do, and
    `log_tail` holds the installer's last lines."""

    def __init__(self, message: str, hint: str = "", log_tail: Sequence[str] = ()) -> None:
        super().__init__(message, hint)
        self.log_tail = tuple(log_tail)


@dataclass(frozen=True)
class Step:
    """One command of a job, with the title the UI shows while it runs."""

    title: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # variables set for this command beyond the job's environment

    @property
    def command_line(self) -> str:
        """The exact command, quoted so that it can be pasted into a terminal."""
        return shlex.join(self.argv)


class JobState(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


def subprocess_env(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment for a child Python: Blender's PYTHONHOME / PYTHONPATH would make the
    child load Blender's standard library instead of its own, so they are dropped."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
        env.pop(key, None)
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local packages must not shadow the environment's own
    env["PYTHONUNBUFFERED"] = "1"  # stream installer output to the log as it comes
    return env


def diagnose(log_tail: Sequence[str]) -> str:
    """A hint for an installer failure, from the last lines of its output."""
    text = "\n".join(log_tail).lower()
    if any(s in text for s in ("no space left", "errno 28", "disk quota")):
        return "the disk is full: free some space (PyTorch with CUDA needs about 5 GB) and retry"
    if any(s in text for s in ("failed to establish", "name or service not known", "temporary failure in name",
                               "connection refused", "timed out", "network is unreachable", "dns error",
                               "failed to fetch", "connection reset", "could not connect")):
        return ("the installer could not reach the package index: check the internet connection or proxy "
                "(HTTPS_PROXY), then Retry")
    if any(s in text for s in ("no matching distribution", "no solution found", "could not find a version",
                               "unsatisfiable", "not available for")):
        return ("no PyTorch build matches this Python, platform or backend: choose another PyTorch build "
                "(e.g. 'cpu') or point to an existing Python with torch")
    if any(s in text for s in ("permission denied", "errno 13", "access is denied")):
        return "the environment folder is not writable: check its permissions, or remove it and Retry"
    if "ensurepip" in text or "no module named venv" in text:
        return "this Python cannot create environments: install uv (pip install uv) or point to a Python with torch"
    return "see the log file for the installer's full output, fix the cause, then Retry"


class Job:
    """Runs `steps` one after another in subprocesses, appending their output to `log_path`.

    Never blocks: :meth:`poll` advances it (call it from a timer). Output goes straight to the log
    file (no pipe to drain, so no reader thread); :meth:`tail` reads its last lines for the UI.
    `notes` (e.g. :meth:`InstallRecord.lines`: which installer and build, and why) head the log.
    """

    def __init__(self, steps: Sequence[Step], log_path: Path, env: Optional[Mapping[str, str]] = None,
                 notes: Sequence[str] = ()) -> None:
        if not steps:
            raise ValueError("a job needs at least one step")
        self.steps = tuple(steps)
        self.notes = tuple(notes)
        self.log_path = Path(log_path)
        self.env = subprocess_env(env)
        self.state = JobState.PENDING
        self.step_index = 0
        self.returncode: Optional[int] = None
        self.error: Optional[RuntimeSetupError] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None
        self._started = 0.0

    @property
    def current(self) -> Step:
        return self.steps[min(self.step_index, len(self.steps) - 1)]

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.state = JobState.RUNNING
        self._write("".join(f"\n# {note}" for note in self.notes))
        self._launch()

    def _launch(self) -> None:
        assert self._log is not None
        step = self.current
        self._write(f"\n=== {step.title}\n$ {step.command_line}\n")
        self._started = time.monotonic()
        try:
            self._proc = subprocess.Popen(step.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env={**self.env, **dict(step.env)})
        except OSError as exc:
            self._write(f"cannot start: {exc}\n")
            self._fail(f"cannot start '{step.argv[0]}': {exc}", "check that the program exists and is executable")

    def _write(self, text: str) -> None:
        assert self._log is not None
        self._log.write(text.encode())
        self._log.flush()

    def poll(self) -> JobState:
        """Advance to the next step when the current one ends; return the state."""
        if self.state is not JobState.RUNNING or self._proc is None:
            return self.state
        code = self._proc.poll()
        if code is None:
            return self.state
        self.returncode = code
        step = self.current
        self._write(f"=== exit {code} after {time.monotonic() - self._started:.1f} s\n")
        if code != 0:
            tail = self.tail()
            self._fail(f"'{step.title}' failed (exit {code}): {step.command_line}", diagnose(tail))
        elif self.step_index + 1 < len(self.steps):
            self.step_index += 1
            self._launch()
        else:
            self.state = JobState.DONE
            self._close()
        return self.state

    def _fail(self, message: str, hint: str) -> None:
        self.error = RuntimeSetupError(message, hint, self.tail())
        self.state = JobState.FAILED
        self._close()

    def cancel(self) -> None:
        """Stop the running step (its partial result stays on disk; a Retry starts over)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if not self.finished:
            if self._log is not None:
                self._write("=== cancelled\n")
            self.state = JobState.CANCELLED
            self._close()

    def wait(self, timeout: float, interval: float = 0.05) -> JobState:
        """Poll until finished or `timeout` seconds pass (scripts and tests; the UI uses a timer)."""
        deadline = time.monotonic() + timeout
        while not self.finished and time.monotonic() < deadline:
            self.poll()
            if not self.finished:
                time.sleep(interval)
        return self.state

    def output(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 12) -> list[str]:
        """The last non-empty lines of the log (what the UI shows on failure)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
