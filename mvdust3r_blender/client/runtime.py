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
turns both into plain command lines (:class:`~.setup_steps.Step`), a :class:`~.setup_steps.Job` runs them, and an
:class:`InstallRecord` of the choices is kept beside the environment for Check to show.

Every step is a plain command line (shown to the user), its output goes to one log file, and a
failure is reported with the step, the command, the installer's last lines and a hint.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..core.arguments import argument
from .setup_steps import RuntimeSetupError, Step, subprocess_env
from .torch_build import AUTO, DEFAULT, TorchBuild

# What the worker imports (engine/): torch plus the image and checkpoint libraries.
WORKER_REQUIREMENTS: tuple[str, ...] = (
    "torch", "numpy>=1.26", "pillow>=10", "opencv-python-headless>=4.8", "safetensors>=0.4",
)
# A folder of wheels to install from, offline, when the preference names none (managed installs).
WHEELS_ENV = "MVDUST3R_WHEELS"


def env_python(env_dir: Path) -> Path:
    """The interpreter of the virtual environment at `env_dir` (it may not exist yet)."""
    if sys.platform == "win32":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


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
    for value, what in ((base_python, "the base Python"), (str(env_dir), "the environment folder"),
                        (wheels, "the wheels folder"), (uv, "the uv program")):
        if value is not None:
            argument(value, what)  # a word of uv's or pip's command line: never an option
    python = str(env_python(env_dir))
    offline = ("--no-index", "--find-links", wheels) if wheels else ()
    if uv is not None:
        backend = () if build.backend == DEFAULT else (f"--torch-backend={build.backend}",)
        uv_offline = ("--offline", "--no-config") if wheels else ()  # no uv.toml may add an index
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
    # a wheels folder means only that folder: no pip.conf (user, global, site; PIP_CONFIG_FILE names none)
    # and no PIP_* variable may add an index or links (--isolated)
    isolated: tuple[str, ...] = ("--isolated",) if wheels else ()
    pip = (python, "-m", "pip", *isolated, "install", "--disable-pip-version-check", "--no-input")
    pip_env = (("PIP_CONFIG_FILE", os.devnull),) if wheels else ()
    steps = [Step("Create the environment", (base_python, "-m", "venv", str(env_dir)))]
    if torch_reqs:
        index = () if wheels or build.index_url is None else ("--index-url", build.index_url)
        steps.append(Step("Install PyTorch", (*pip, *index, *offline, *torch_reqs), pip_env))
    if other_reqs:
        steps.append(Step("Install the worker's libraries", (*pip, *offline, *other_reqs), pip_env))
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
