"""Settings: the preferences' choices (or a script's) turned into what the worker runs with."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import bpy

from .. import preferences
from ..client.remote import RemoteError, RemoteTarget
from ..client.runtime import env_python
from ..core.options import DEFAULT_PRECISION, check_precision
from ..core.registry import checkpoint_path
from .errors import SetupError

WORKER_PYTHON_ENV = "MVDUST3R_WORKER_PYTHON"
"""Environment variable naming the worker's Python; wins over the preferences (tests, render farms)."""

PathLike = Union[str, "os.PathLike[str]"]

SCRIPT_PYTHON_HINT = (f"pass python='/path/to/env/bin/python' (command line: --python PATH), an environment with "
                      f"torch, or set ${WORKER_PYTHON_ENV}; or set up the runtime in Preferences > Add-ons > MV-DUSt3R+")
SCRIPT_CHECKPOINT_HINT = ("pass checkpoint='builtin' for the built-in small model (works offline) or "
                          "checkpoint='/path/to/MVDp_s2.pth' (command line: --checkpoint builtin / --checkpoint PATH); "
                          "or choose or download a model in Preferences > Add-ons > MV-DUSt3R+")
"""What a script or the command line is told when the preferences name no usable runtime or model."""


def worker_python(prefs: preferences.MVDUST3R_AddonPreferences) -> str:
    """The interpreter the worker runs under; SetupError when none is set up."""
    if prefs.runtime_mode == "EXISTING":
        path = bpy.path.abspath(prefs.python_path) if prefs.python_path else ""
        if not path:
            raise SetupError("no Python is set for the worker",
                             "set Preferences > Add-ons > MV-DUSt3R+ > Python, or create the private environment")
        if not Path(path).is_file():
            raise SetupError(f"the worker Python '{path}' does not exist",
                             "pick the python executable of an environment with torch")
        return path
    python = env_python(preferences.runtime_dir())
    if not (python.is_file() and preferences.runtime_ready_marker().is_file()):
        raise SetupError("the PyTorch runtime is not set up",
                         "open Preferences > Add-ons > MV-DUSt3R+ and press Create Environment "
                         "(or choose Existing Python)")
    return str(python)


def checkpoint_file(prefs: preferences.MVDUST3R_AddonPreferences) -> Path:
    """The checkpoint to load; SetupError when it is not on disk."""
    if prefs.checkpoint == preferences.LOCAL:
        if not prefs.checkpoint_path:
            raise SetupError("no checkpoint file is chosen", "pick one in the add-on's preferences (Model)")
        path = Path(bpy.path.abspath(prefs.checkpoint_path))
        if not path.is_file():
            raise SetupError(f"the checkpoint '{path}' does not exist", "pick an existing file, or download a model")
        return path
    if prefs.checkpoint == preferences.BUILTIN:
        if not preferences.BUILTIN_MODEL.is_file():
            raise SetupError(f"the built-in model '{preferences.BUILTIN_MODEL}' is missing from this installation",
                             "reinstall the extension, or pick another model")
        return preferences.BUILTIN_MODEL
    path = preferences.models_dir() / prefs.checkpoint
    if not path.is_file():
        raise SetupError(f"the model {prefs.checkpoint} is not downloaded",
                         "download it in the add-on's preferences (Model), or choose the Built-in Small Model "
                         "(works offline) or a local file")
    return path


def remote_target(destination: str, ssh_command: Optional[str], python: Optional[PathLike]) -> RemoteTarget:
    """A :class:`RemoteTarget`, its problems as :class:`SetupError`; an empty or missing ssh command
    or Python is the default one (``ssh``, ``python3``)."""
    try:
        return RemoteTarget(destination, ssh_command or "ssh", os.fspath(python) if python else "python3")
    except RemoteError as exc:
        raise SetupError(exc.message, exc.hint) from None


def preferred_remote(prefs: preferences.MVDUST3R_AddonPreferences) -> RemoteTarget:
    """The remote machine the preferences name (Host, ssh Command, Remote Python), however the
    worker's location is set: the one place the panel, scripts and the set-up operators read it."""
    return remote_target(prefs.remote_destination, prefs.remote_ssh_command, prefs.remote_python)


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker runs with: its Python, the checkpoint file, the device, the precision, and
    where it runs: here, or on `remote` over ssh (then `python` and `checkpoint` are the remote's)."""

    python: str
    checkpoint: str
    device: str
    remote: Optional[RemoteTarget] = None
    precision: str = DEFAULT_PRECISION  # auto, exact or fast (core.options.PRECISIONS)

    @classmethod
    def from_preferences(cls, prefs: preferences.MVDUST3R_AddonPreferences) -> "WorkerSettings":
        """The preferences' worker: local, or on the remote GPU machine when that is chosen."""
        if prefs.worker_location == "REMOTE":
            target = preferred_remote(prefs)
            if not prefs.remote_checkpoint:
                raise SetupError("no checkpoint is set for the remote worker",
                                 "set Remote Checkpoint to the model file's path on the remote machine")
            return cls(python=target.python, checkpoint=prefs.remote_checkpoint, device=str(prefs.device),
                       remote=target, precision=str(prefs.precision))
        return cls(python=worker_python(prefs), checkpoint=str(checkpoint_file(prefs)), device=str(prefs.device),
                   precision=str(prefs.precision))

    @classmethod
    def resolve(cls, python: Optional[PathLike] = None, checkpoint: Optional[PathLike] = None,
                device: Optional[str] = None, remote: Union[str, RemoteTarget, None] = None,
                ssh_command: Optional[str] = None, precision: Optional[str] = None) -> "WorkerSettings":
        """Each setting from its argument, else (the Python only) ``$MVDUST3R_WORKER_PYTHON``, else
        the add-on's preferences. Raises :class:`SetupError` naming a missing file. With `remote`
        (an ssh destination, with `ssh_command`, or a :class:`RemoteTarget`) the worker runs there:
        `python` (default ``python3``) and `checkpoint` are then the remote's, not checked here.
        When none of `python`, `remote`, `ssh_command` and ``$MVDUST3R_WORKER_PYTHON`` says where
        the worker runs, the preferences' Worker choice does (a remote GPU there is used by scripts
        too). An unknown `precision` is an ``OptionError`` naming it."""
        precision = check_precision(precision if precision is not None else str(preferences.get().precision))
        device = device if device is not None else str(preferences.get().device)
        if remote is None and python is None and ssh_command is None and not os.environ.get(WORKER_PYTHON_ENV):
            prefs = preferences.get()
            if prefs.worker_location == "REMOTE":
                remote = preferred_remote(prefs)
                checkpoint = checkpoint if checkpoint is not None else (prefs.remote_checkpoint or None)
        if isinstance(remote, str):
            remote = remote_target(remote, ssh_command, python)
        elif remote is not None and not isinstance(remote, RemoteTarget):
            raise SetupError(f"remote must be an ssh destination (user@host) or a RemoteTarget, not {remote!r}")
        elif ssh_command is not None and remote is None:
            raise SetupError(f"an ssh command ('{ssh_command}') is given but no remote machine",
                             "give the remote too (remote= / --remote user@host), or leave the ssh command out")
        if remote is not None:
            if checkpoint is None:
                raise SetupError(f"no checkpoint is given for the remote worker on {remote}",
                                 "pass checkpoint= (a path on the remote machine, or 'builtin': the built-in "
                                 "model travels with the engine)")
            return cls(python=remote.python, checkpoint=os.fspath(checkpoint), device=device, remote=remote,
                       precision=precision)
        python = python if python is not None else os.environ.get(WORKER_PYTHON_ENV) or None
        if python is None:
            try:
                python = worker_python(preferences.get())
            except SetupError as exc:
                raise SetupError(exc.message, SCRIPT_PYTHON_HINT) from None
        elif not Path(python).is_file():
            raise SetupError(f"the worker Python '{os.fspath(python)}' does not exist",
                             f"pass the python of an environment with torch (or set ${WORKER_PYTHON_ENV})")
        if checkpoint is None:
            try:
                checkpoint = checkpoint_file(preferences.get())
            except SetupError as exc:
                raise SetupError(exc.message, SCRIPT_CHECKPOINT_HINT) from None
        else:
            checkpoint = checkpoint_path(os.fspath(checkpoint))
        if not Path(checkpoint).is_file():
            raise SetupError(f"the checkpoint '{os.fspath(checkpoint)}' does not exist",
                             "pass an existing MV-DUSt3R(+) checkpoint file")
        return cls(python=str(Path(python).absolute()), checkpoint=str(Path(checkpoint).absolute()), device=device,
                   precision=precision)


def preferred_align() -> str:
    """The preferences' ``align``: where a script's reconstruction lands when it does not say."""
    return str(preferences.get().align)


def log_path() -> Path:
    """Where the worker's stderr is kept (the user's extension folder)."""
    return preferences.user_dir() / "worker.log"
