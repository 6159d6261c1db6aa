"""The worker's Python runtime: creating a private environment with torch, and checking a Python.

Blender's own Python has no torch, so the worker runs under another interpreter: either a private
virtual environment that this module creates in the extension's user folder, or a Python the user
already has. Nothing here imports bpy: the preferences start a :class:`Job` and a timer polls it,
so the UI never waits on an installer.

How the environment is made (docs/runtime.md says why):

- with ``uv`` (bundled in the extension as a wheel, else on PATH) when it runs: ``uv venv`` then
  ``uv pip install torch ... --torch-backend=<backend>``; uv's ``auto`` backend picks the CUDA /
  ROCm / CPU build of PyTorch for this machine's driver;
- otherwise ``python -m venv`` then pip, with PyTorch's index for the build that
  :mod:`.torch_build` picks from the driver (pip alone would take PyPI's torch: CPU-only on Windows).

A wheels folder (the preference, or ``$MVDUST3R_WHEELS``) makes either install from that folder
only, with no index and no network (studios without internet; the tests).

The API (also used to set up a remote runtime): :func:`choose_installer` says which installer runs
and why, :func:`~.torch_build.choose_build` which PyTorch build and why, :func:`plan_environment`
turns both into plain command lines (:class:`Step`), a :class:`Job` runs them, and an
:class:`InstallRecord` of the choices is kept beside the environment for Check to show.

Every step is a plain command line (shown to the user), its output goes to one log file, and a
failure is reported with the step, the command, the installer's last lines and a hint.
"""
from __future__ import annotations

import enum
import glob
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence

from ..core.errors import UserError
from .torch_build import AUTO, DEFAULT, TorchBuild

# What the worker imports (engine/): torch plus the image and checkpoint libraries.
WORKER_REQUIREMENTS: tuple[str, ...] = (
    "torch", "numpy>=1.26", "pillow>=10", "opencv-python-headless>=4.8", "safetensors>=0.4",
)
# A folder of wheels to install from, offline, when the preference names none (managed installs).
WHEELS_ENV = "MVDUST3R_WHEELS"


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


def env_python(env_dir: Path) -> Path:
    """The interpreter of the virtual environment at `env_dir` (it may not exist yet)."""
    if sys.platform == "win32":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


def subprocess_env(base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment for a child Python: Blender's PYTHONHOME / PYTHONPATH would make the
    child load Blender's standard library instead of its own, so they are dropped."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
        env.pop(key, None)
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local packages must not shadow the environment's own
    env["PYTHONUNBUFFERED"] = "1"  # stream installer output to the log as it comes
    return env


def find_uv(search_paths: Optional[Sequence[str]] = None) -> Optional[str]:
    """The uv executable: the one from a uv wheel on `search_paths` (default ``sys.path``), else
    the one on PATH, else None.

    Blender unpacks an extension's wheels verbatim into ``extensions/.local/lib/python3.X/
    site-packages``, so uv's binary lands in ``uv-<version>.data/scripts/uv`` there, without its
    executable bit and out of reach of ``uv.find_uv_bin()``: look there (the newest version first,
    if several extensions bring one) and make it executable. A ``pip install uv`` puts it where
    ``find_uv_bin`` looks, so try that too.
    """
    exe = "uv.exe" if sys.platform == "win32" else "uv"
    for entry in sys.path if search_paths is None else search_paths:
        found = glob.glob(os.path.join(entry, "uv-*.data", "scripts", exe))
        for candidate in sorted(found, key=_wheel_data_version, reverse=True):
            if _ensure_executable(candidate):
                return candidate
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]
        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def _wheel_data_version(script: str) -> tuple[int, ...]:
    """(0, 13, 9) for ``.../uv-0.13.9.data/scripts/uv``: numeric, so 0.13.10 sorts after 0.13.9."""
    folder = Path(script).parent.parent.name
    return tuple(int(n) for n in re.findall(r"\d+", folder[len("uv-"):-len(".data")]))


@dataclass(frozen=True)
class Installer:
    """Which installer makes the environment: `uv` (its path) or None for venv + pip, and why."""

    uv: Optional[str]
    description: str


def choose_installer(uv: Optional[str] = None, timeout: float = 30.0) -> Installer:
    """uv if it is found (`uv`, default :func:`find_uv`) and runs (``uv --version``), else pip.

    A uv that is found but cannot run (blocked by policy, a broken file) falls back to pip, and
    the description says so, with the error."""
    path = uv if uv is not None else find_uv()
    if path is None:
        return Installer(None, "venv + pip: no uv for this platform in the extension, and none on PATH")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=subprocess_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return Installer(None, f"venv + pip: uv at {path} cannot run ({exc})")
    version = done.stdout.strip()
    if done.returncode != 0 or not version.startswith("uv "):
        said = (done.stderr or done.stdout).strip().splitlines()
        return Installer(None, f"venv + pip: uv at {path} cannot run (exit {done.returncode}"
                               f"{': ' + said[-1] if said else ''})")
    return Installer(path, f"{version.split(' (')[0]} at {path}")


def wheels_folder(preference: str = "", environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The folder to install from offline: the preference, else ``$MVDUST3R_WHEELS``, else None
    (install from the internet). RuntimeSetupError when the named folder does not exist."""
    env = os.environ if environ is None else environ
    folder = preference or env.get(WHEELS_ENV, "")
    if not folder:
        return None
    if not os.path.isdir(folder):
        source = "the Wheels Folder preference" if preference else f"${WHEELS_ENV}"
        raise RuntimeSetupError(f"the wheels folder '{folder}' ({source}) does not exist",
                                "point it to a folder of wheels (see docs/runtime.md), or clear it to "
                                "install from the internet")
    return folder


def _ensure_executable(path: str) -> bool:
    if os.access(path, os.X_OK):
        return True
    try:
        mode = os.stat(path).st_mode
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError:
        return False
    return os.access(path, os.X_OK)


def plan_environment(
    env_dir: Path,
    *,
    base_python: str,
    uv: Optional[str],
    build: TorchBuild,
    requirements: Sequence[str] = WORKER_REQUIREMENTS,
    wheels: Optional[str] = None,
) -> list[Step]:
    """The commands that create the worker's environment at `env_dir`.

    `base_python` is the interpreter the environment is made from (Blender's own Python inside
    Blender); `uv` the uv executable (:class:`Installer`'s) or None for venv + pip; `build` the
    PyTorch build (:func:`~.torch_build.choose_build`: ``auto`` only with uv). `wheels`: a folder
    to install from only, with no index and no network. Paths are of the machine that runs the
    steps, so the same plan serves a remote machine when its paths are given.
    """
    python = str(env_python(env_dir))
    offline = ("--no-index", "--find-links", wheels) if wheels else ()
    if uv is not None:
        backend = () if build.backend == DEFAULT else (f"--torch-backend={build.backend}",)
        uv_offline = ("--offline",) if wheels else ()
        return [
            Step("Create the environment",
                 (uv, "venv", *uv_offline, "--allow-existing", "--python", base_python, str(env_dir))),
            Step("Install PyTorch and the worker's libraries",
                 (uv, "pip", "install", *uv_offline, "--python", python, *backend, *offline, *requirements)),
        ]
    if build.backend == AUTO:
        raise ValueError("pip cannot resolve the 'auto' build: pass choose_build(..., uv_runs=False)'s choice")
    torch_reqs = [r for r in requirements if _name(r) == "torch"]
    other_reqs = [r for r in requirements if _name(r) != "torch"]
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input")
    steps = [Step("Create the environment", (base_python, "-m", "venv", str(env_dir)))]
    if torch_reqs:
        index = () if wheels or build.index_url is None else ("--index-url", build.index_url)
        steps.append(Step("Install PyTorch", (*pip, *index, *offline, *torch_reqs)))
    if other_reqs:
        steps.append(Step("Install the worker's libraries", (*pip, *offline, *other_reqs)))
    return steps


@dataclass(frozen=True)
class InstallRecord:
    """What made an environment, kept beside it (``mvdust3r-runtime-complete``) for Check to show:
    the installer, the PyTorch build with its reason, and the wheels folder (empty: the internet)."""

    installer: str
    backend: str
    reason: str
    wheels: str = ""

    @classmethod
    def of(cls, installer: Installer, build: TorchBuild, wheels: Optional[str]) -> "InstallRecord":
        return cls(installer.description, build.backend, build.reason, wheels or "")

    def lines(self) -> list[str]:
        """What the log and the preferences show, one fact a line."""
        build = TorchBuild(self.backend, self.reason).describe()
        source = f"only from the wheels folder {self.wheels}" if self.wheels else "from the internet"
        return [f"Installer: {self.installer}", f"PyTorch build: {build}", f"Packages: {source}"]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Optional["InstallRecord"]:
        """The record at `path`, or None (no environment, or one made before records existed)."""
        try:
            data = json.loads(path.read_text())
            return cls(**{k: str(data[k]) for k in ("installer", "backend", "reason", "wheels")})
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _name(requirement: str) -> str:
    for sep in "<>=!~;[ ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower()


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
                                          stdin=subprocess.DEVNULL, env=self.env)
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
