"""The worker of this Blender session and how a run is asked of it: below both drivers.

Both drivers — the panel's run (:mod:`.run`, never blocks) and the scripting side
(:mod:`.reconstruction`, blocks) — start runs through this module, so they resolve settings the
same way (:class:`WorkerSettings`), check photos the same way (:func:`photo_list`), build the same
request (:func:`plan_run`) and share one worker (:data:`SESSION`), which keeps the model loaded
from one run to the next, whoever starts it. The runtime check of the preferences
(:class:`RuntimeCheck`) asks the same worker.

Errors a user fixes: :class:`SetupError` (runtime, checkpoint), :class:`RunError` (photos, options).
"""
from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import bpy

from . import preferences
from .core import photos as photo_files
from .core.confidence import DEFAULT_DROP_PERCENT, ConfidenceCut
from .core.errors import UserError
from .core.exports import needing_gaussians, parse_formats
from .core.options import DEFAULT_PRECISION, ReconstructOptions, check_precision
from .core.protocol import DeviceInfo, ErrorEvent, Event, FetchedEvent, HelloEvent, ProgressEvent
from .core.remote import RemoteError, RemoteTarget, RemoteWorkerClient
from .core.runtime import env_python, subprocess_env
from .core.worker_client import WorkerClient, WorkerError

POLL_INTERVAL = 0.1  # seconds between looks at the worker's events from Blender's main thread

WORKER_PYTHON_ENV = "MVDUST3R_WORKER_PYTHON"
"""Environment variable naming the worker's Python; wins over the preferences (tests, render farms)."""

PathLike = Union[str, "os.PathLike[str]"]
PhotoSource = Union[PathLike, Sequence[PathLike]]
"""A folder (its image files, sorted by name) or a list of photo paths."""


class SetupError(UserError):
    """Something the user has to set up first; `message` says what is missing, `hint` how to fix it."""

    code = "setup"


class RunError(UserError):
    """Photos or options that cannot be reconstructed; `message` names the input, `hint` the fix."""


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


# ---------------------------------------------------------------------------------------------
# Settings: the preferences' choices (or a script's) turned into paths


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
    """A :class:`RemoteTarget`, its problems as :class:`SetupError`."""
    try:
        return RemoteTarget(destination, ssh_command or "ssh", os.fspath(python) if python is not None else "python3")
    except RemoteError as exc:
        raise SetupError(exc.message, exc.hint) from None


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
            target = remote_target(prefs.remote_destination, prefs.remote_ssh_command, prefs.remote_python or None)
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
                remote = remote_target(prefs.remote_destination, prefs.remote_ssh_command, prefs.remote_python or None)
                checkpoint = checkpoint if checkpoint is not None else (prefs.remote_checkpoint or None)
        if isinstance(remote, str):
            remote = remote_target(remote, ssh_command, python)
        elif ssh_command is not None and remote is None:
            raise SetupError(f"an ssh command ('{ssh_command}') is given but no remote machine",
                             "give the remote too (remote= / --remote user@host), or leave the ssh command out")
        if remote is not None:
            if checkpoint is None:
                raise SetupError(f"no checkpoint is given for the remote worker on {remote}",
                                 "pass checkpoint= (a path on the remote machine)")
            return cls(python=remote.python, checkpoint=os.fspath(checkpoint), device=device, remote=remote,
                       precision=precision)
        python = python if python is not None else os.environ.get(WORKER_PYTHON_ENV) or None
        if python is None:
            python = worker_python(preferences.get())
        elif not Path(python).is_file():
            raise SetupError(f"the worker Python '{os.fspath(python)}' does not exist",
                             f"pass the python of an environment with torch (or set ${WORKER_PYTHON_ENV})")
        if checkpoint is None:
            checkpoint = checkpoint_file(preferences.get())
        elif not Path(checkpoint).is_file():
            raise SetupError(f"the checkpoint '{os.fspath(checkpoint)}' does not exist",
                             "pass an existing MV-DUSt3R(+) checkpoint file")
        return cls(python=str(Path(python).absolute()), checkpoint=str(Path(checkpoint).absolute()), device=device,
                   precision=precision)


# ---------------------------------------------------------------------------------------------
# Photos: one check, one message, whoever starts the run


def folder_photos(folder: Path) -> list[str]:
    """Absolute paths of the image files in `folder` (by extension), sorted by name."""
    return [str(p.absolute()) for p in photo_files.folder_photos(folder)]


def check_photos(paths: list[str]) -> None:
    """Raise :class:`RunError` naming every photo that is missing, a folder or empty, or listed twice,
    in the worker's own words (``core.photos``: one check, one message); the worker checks the contents."""
    if len(paths) < 2:
        raise RunError(f"{len(paths)} photo{'s' if len(paths) != 1 else ''} in the list",
                       "add at least 2 photos of the same scene (4 or more for MV-DUSt3R+)")
    failures = [f"{path}: {problem}" for path in paths if (problem := photo_files.photo_problem(Path(path)))]
    if failures:
        raise RunError(photo_files.unreadable_message(failures, len(paths)), photo_files.UNREADABLE_HINT)
    duplicates = photo_files.duplicate_photos([Path(path) for path in paths])
    if duplicates:
        raise RunError(photo_files.duplicate_message(duplicates), photo_files.DUPLICATE_HINT)


def photo_list(photos: PhotoSource) -> list[str]:
    """Absolute paths of `photos`: a folder's image files sorted by name, or the list as given.
    Raises :class:`RunError` naming a missing or unlistable folder, a missing photo, a duplicate, or
    too few photos (and, with too few, the photos in the folder this add-on cannot read, e.g. HEIC)."""
    if isinstance(photos, (str, os.PathLike)):
        folder = Path(photos)
        if not folder.is_dir():
            raise RunError(f"'{folder}' is not a folder", "pass a folder of photos or a list of photo files")
        try:
            paths = folder_photos(folder)
        except OSError as exc:
            raise RunError(f"cannot list the folder '{folder}': {exc.strerror or exc}",
                           "check that you may read it, or pass a list of photo files") from None
        if len(paths) < 2:
            skipped = photo_files.unsupported_photos(folder)
            note = f" ({photo_files.skipped_message(skipped)})" if skipped else ""
            raise RunError(f"the folder '{folder}' holds {len(paths)} photo{'s' if len(paths) != 1 else ''}{note}",
                           f"put at least 2 photos of one scene in it ({', '.join(photo_files.IMAGE_EXTENSIONS)})")
    elif isinstance(photos, Iterable):
        items = list(photos)
        bad = [p for p in items if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise RunError(f"photos holds {bad[0]!r}, which is not a path", "pass a folder or a list of photo paths")
        paths = [str(Path(p).absolute()) for p in items]
    else:
        raise RunError(f"photos={photos!r} is neither a folder nor a list of photos",
                       "pass a folder of photos or a list of photo files")
    check_photos(paths)
    return paths


# ---------------------------------------------------------------------------------------------
# The one request builder


@dataclass(frozen=True)
class RunPlan:
    """One ``reconstruct`` request as both drivers build it (see :func:`plan_run`)."""

    photos: list[str]
    settings: WorkerSettings
    options: ReconstructOptions
    output: Path
    exports: list[str] = field(default_factory=list)
    export_dir: Optional[Path] = None
    cut: ConfidenceCut = ConfidenceCut()


def plan_run(photos: list[str], settings: WorkerSettings, output: Path, *, reference_view: Optional[int] = None,
             pose_drop_percent: float = DEFAULT_DROP_PERCENT, focal: str | float = "auto",
             import_gaussians: bool = True,
             exports: Sequence[str] = (), export_dir: Optional[Path] = None,
             cut: ConfidenceCut = ConfidenceCut(), keep_bundle: bool = False) -> RunPlan:
    """The request for `photos`. One rule for the Gaussians: they are computed when they are
    imported, when an export needs them, or when the bundle outlives the run (`keep_bundle`: a
    script may export them later), and not otherwise. `reference_view` is a 0-based photo index;
    `focal`: ``auto``, ``estimate`` or a 35 mm-equivalent focal length in mm (ReconstructOptions).
    The precision is the settings' (:class:`WorkerSettings`).
    Exports go to `export_dir` (default: beside `output`). Bad options raise the core's
    ``OptionError`` / ``ExportError``, naming the option, before any worker starts."""
    formats = parse_formats(exports)
    gaussians = import_gaussians or keep_bundle or bool(needing_gaussians(formats))
    options = ReconstructOptions(reference_view=reference_view, pose_drop_percent=pose_drop_percent,
                                 gaussians=gaussians, focal=str(focal), precision=settings.precision)
    if reference_view is not None and reference_view >= len(photos):
        raise RunError(f"reference view {reference_view} does not exist: there are {len(photos)} photos "
                       f"(indices 0 to {len(photos) - 1})", "choose one of the photos, or leave it automatic")
    return RunPlan(photos=list(photos), settings=settings, options=options, output=output, exports=formats,
                   export_dir=(export_dir if export_dir is not None else output.parent) if formats else None,
                   cut=cut)


# ---------------------------------------------------------------------------------------------
# The worker of this session


class WorkerSession:
    """The one worker of this Blender session and a mailbox per request id.

    Events are read once (``client.poll``) and sorted into mailboxes, so the runtime check and a
    run can wait on the same worker. An event that answers no request (the worker died, a broken
    line) goes into every open mailbox, because each waiting request is affected.
    """

    def __init__(self) -> None:
        self.client: Optional[WorkerClient] = None
        self._mail: dict[str, list[Event]] = {}
        self._remote: Optional[RemoteTarget] = None

    def ensure(self, python: str, log_path: Optional[Path] = None,
               remote: Optional[RemoteTarget] = None) -> WorkerClient:
        """The running worker for `python` (on `remote` when given), (re)started when it is missing,
        dead or for another Python or machine."""
        client = self.client
        if client is not None and client.alive and str(client.python) == python and self._remote == remote:
            return client
        self.shutdown()
        client = WorkerClient(python, env=subprocess_env(), log_path=log_path) if remote is None else \
            RemoteWorkerClient(remote, env=subprocess_env(), log_path=log_path)
        try:
            client.start()
        except (OSError, RuntimeError) as exc:
            where = f"'{python}'" if remote is None else f"ssh ({remote.ssh_command}) to {remote}"
            raise SetupError(f"cannot start the worker with {where}: {exc}",
                             "check the runtime in the add-on's preferences") from None
        self.client, self._remote = client, remote
        return client

    def submit(self, plan: RunPlan, log_path: Optional[Path] = None) -> tuple[WorkerClient, str]:
        """Send `plan` to the (started if needed) worker; its client and the request's id, whose
        events :meth:`take` hands out. Raises SetupError when the worker cannot start."""
        client = self.ensure(plan.settings.python, log_path, plan.settings.remote)
        request_id = self.expect(client.reconstruct(
            list(plan.photos), plan.output, plan.options, checkpoint=plan.settings.checkpoint,
            device=plan.settings.device, exports=plan.exports, export_dir=plan.export_dir, export_cut=plan.cut))
        return client, request_id

    def expect(self, request_id: str) -> str:
        """Open the mailbox of a request just sent; returns its id."""
        self._mail.setdefault(request_id, [])
        return request_id

    def take(self, request_id: str) -> list[Event]:
        """The events for `request_id` that arrived since the last call (never blocks)."""
        if self.client is not None:
            for event in self.client.poll():
                if event.id is not None and event.id in self._mail:
                    self._mail[event.id].append(event)
                elif event.id is None and isinstance(event, ErrorEvent):
                    for box in self._mail.values():
                        box.append(event)
        events = self._mail.get(request_id)
        if events is None:  # closed: the request already ended
            return []
        self._mail[request_id] = []
        return events

    def close(self, request_id: str) -> None:
        self._mail.pop(request_id, None)

    def release(self) -> bool:
        """Ask the worker to free the model's memory; False when no worker runs."""
        if self.client is None or not self.client.alive:
            return False
        self.client.release()
        return True

    def shutdown(self) -> None:
        if self.client is not None:
            self.client.shutdown(timeout=5.0)
        self.client = None
        self._mail.clear()


SESSION = WorkerSession()


# ---------------------------------------------------------------------------------------------
# The runtime check: start the worker and ask it what it runs on


@dataclass(kw_only=True)
class FollowedRequest:
    """One request to the session's worker, followed without blocking: :meth:`step` (a timer's
    callback) takes what arrived; ``error`` or the subclass's result ends it."""

    session: WorkerSession = field(default_factory=lambda: SESSION)
    request_id: str = ""
    error: str = ""

    def _send(self, send: Callable[[], str]) -> None:
        """Send the request `send` makes (it may start the worker); a failure becomes ``error``."""
        try:
            self.request_id = self.session.expect(send())
        except (SetupError, WorkerError) as exc:
            self.error = str(exc)

    @property
    def answered(self) -> bool:
        """Whether the final answer arrived (the subclass's result is set)."""
        raise NotImplementedError

    def _receive(self, event: Event) -> None:
        """Take one event other than an error."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        return self.answered or bool(self.error)

    def step(self) -> Optional[float]:
        if self.finished:
            return None
        for event in self.session.take(self.request_id):
            if isinstance(event, ErrorEvent):
                self.error = f"{event.message}: {event.hint}" if event.hint else event.message
            else:
                self._receive(event)
        if self.finished:
            self.session.close(self.request_id)
            return None
        return POLL_INTERVAL


@dataclass
class RuntimeCheck(FollowedRequest):
    """A ``hello`` to the worker: what it runs on."""

    python: str
    remote: Optional[RemoteTarget] = None
    result: Optional[HelloEvent] = None

    def start(self, log_path: Optional[Path] = None) -> None:
        self._send(lambda: self.session.ensure(self.python, log_path, self.remote).hello())

    @property
    def answered(self) -> bool:
        return self.result is not None

    def _receive(self, event: Event) -> None:
        if isinstance(event, HelloEvent):
            self.result = event

    @property
    def summary(self) -> str:
        """``torch 2.13.0 · cuda:0 (NVIDIA …, 79.1 of 80.0 GB free), cpu · Python 3.11.7`` (and
        ``on user@gpu-box`` first for a remote worker)."""
        if self.result is None:
            return ""
        devices = ", ".join(_device_text(d) for d in self.result.devices)
        where = f"on {self.remote} · " if self.remote is not None else ""
        return f"{where}torch {self.result.torch} · {devices} · Python {self.result.python}"


def _device_text(device: DeviceInfo) -> str:
    free = f", {device.free / 1e9:.1f} of {device.memory / 1e9:.1f} GB free" if device.free else ""
    return f"{device.name} ({device.label}{free})" if device.label else device.name


@dataclass
class RemoteFetch(FollowedRequest):
    """A released checkpoint downloaded on the remote worker's machine (a ``fetch`` request);
    ``result.path`` is the file there."""

    remote: RemoteTarget
    url: str
    filename: str
    size: Optional[int] = None
    fraction: float = 0.0
    result: Optional[FetchedEvent] = None

    def start(self, log_path: Optional[Path] = None) -> None:
        def send() -> str:
            client = self.session.ensure(self.remote.python, log_path, self.remote)
            assert isinstance(client, RemoteWorkerClient)
            return client.fetch(self.url, self.filename, self.size)

        self._send(send)

    @property
    def answered(self) -> bool:
        return self.result is not None

    def _receive(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.fraction = event.fraction
        elif isinstance(event, FetchedEvent):
            self.result = event


def log_path() -> Path:
    """Where the worker's stderr is kept (the user's extension folder)."""
    return preferences.user_dir() / "worker.log"
