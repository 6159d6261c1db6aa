"""The run controller: from the panel's photos to a new collection, without blocking Blender.

One :class:`WorkerSession` per Blender session holds the worker process (so the model stays
loaded between runs) and routes its events to whoever asked. A :class:`RunController` sends one
``reconstruct`` request; its :meth:`RunController.step` — called on the main thread by a timer or
the Reconstruct operator's modal loop, and by tests directly, since timers never fire in module
mode — reads the events that arrived, mirrors progress into ``window_manager.mvdust3r_run`` and,
when the bundle is ready, imports it (``api.import_bundle``) as one undo step. A failure or a
cancel imports nothing, and an import that fails removes what it created, so the user's scene is
left exactly as it was.
"""
from __future__ import annotations

import enum
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import bpy

from . import photos, preferences
from .errors import UserError
from .preferences import SetupError
from .protocol import ErrorEvent, Event, HelloEvent, ProgressEvent, ResultEvent
from .runtime import subprocess_env
from .worker_client import WorkerClient, WorkerError

POLL_INTERVAL = 0.1
CANCEL_GRACE = 15.0  # seconds a cancelled run may take to stop before its worker is stopped


class RunError(UserError):
    """Photos or options that cannot be reconstructed; `message` names the input, `hint` the fix."""


class WorkerSession:
    """The one worker of this Blender session and a mailbox per request id.

    Events are read once (``client.poll``) and sorted into mailboxes, so the runtime check and a
    run can wait on the same worker. An event that answers no request (the worker died, a broken
    line) goes into every open mailbox, because each waiting request is affected.
    """

    def __init__(self) -> None:
        self.client: Optional[WorkerClient] = None
        self._mail: dict[str, list[Event]] = {}

    def ensure(self, python: str, log_path: Optional[Path] = None) -> WorkerClient:
        """The running worker for `python`, (re)started when it is missing, dead or for another Python."""
        client = self.client
        if client is not None and client.alive and str(client.python) == python:
            return client
        self.shutdown()
        client = WorkerClient(python, env=subprocess_env(), log_path=log_path)
        try:
            client.start()
        except (OSError, RuntimeError) as exc:
            raise SetupError(f"cannot start the worker with '{python}': {exc}",
                             "check the runtime in the add-on's preferences") from None
        self.client = client
        return client

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


class Phase(enum.Enum):
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass
class RunRequest:
    """Everything one reconstruction needs, read from the scene and preferences at start."""

    photos: list[str]
    python: str
    checkpoint: str
    device: str
    engine_options: dict[str, Any]
    import_options: dict[str, Any]
    scene_name: str
    log_path: Optional[Path] = None

    @classmethod
    def from_context(cls, context: bpy.types.Context) -> "RunRequest":
        """Read the panel and preferences; :class:`RunError` / :class:`SetupError` name what is wrong."""
        scene = context.scene
        assert scene is not None
        settings = scene.mvdust3r  # type: ignore[attr-defined]
        photos = [bpy.path.abspath(p.filepath) for p in settings.photos]
        check_photos(photos)
        prefs = preferences.get()
        python = preferences.worker_python(prefs)
        checkpoint = str(preferences.checkpoint_file(prefs))
        reference = int(settings.reference_photo)
        if reference > len(photos):
            raise RunError(f"reference photo {reference} does not exist: there are {len(photos)} photos",
                           "set Reference Photo to a number from the list, or 0 for automatic")
        engine_options: dict[str, Any] = {"gaussians": bool(settings.import_gaussians)}
        if reference:
            engine_options["reference_view"] = reference - 1
        return cls(photos=photos, python=python, checkpoint=checkpoint, device=str(prefs.device),
                   engine_options=engine_options, import_options=settings.import_options(),
                   scene_name=scene.name, log_path=preferences.user_dir() / "worker.log")


def folder_photos(folder: Path) -> list[str]:
    """Absolute paths of the image files in `folder` (by extension), sorted by name."""
    return [str(p.absolute()) for p in photos.folder_photos(folder)]


def check_photos(photos: list[str]) -> None:
    """Raise :class:`RunError` naming the first photo that is missing (the worker checks contents)."""
    if len(photos) < 2:
        raise RunError(f"{len(photos)} photo{'s' if len(photos) != 1 else ''} in the list",
                       "add at least 2 photos of the same scene (4 or more for MV-DUSt3R+)")
    for path in photos:
        if not Path(path).is_file():
            raise RunError(f"the photo '{path}' does not exist", "remove it from the list or restore the file")
    seen: set[str] = set()
    for path in photos:
        if path in seen:
            raise RunError(f"the photo '{path}' is in the list twice", "remove the duplicate")
        seen.add(path)


@dataclass
class RunController:
    """One reconstruction: sends the request, follows it, imports the result on the main thread."""

    request: RunRequest
    session: WorkerSession = field(default_factory=lambda: SESSION)
    phase: Phase = Phase.RUNNING
    stage: str = "Starting the worker"
    fraction: float = 0.0
    message: str = ""
    hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    collection_name: str = ""
    request_id: str = ""
    _workdir: Optional[Path] = None
    _cancelled_at: float = 0.0

    def start(self) -> None:
        """Start (or reuse) the worker and send the request; raises SetupError if it cannot start."""
        client = self.session.ensure(self.request.python, self.request.log_path)
        self._workdir = Path(tempfile.mkdtemp(prefix="mvdust3r-run-"))
        try:
            self.request_id = self.session.expect(client.reconstruct(
                list(self.request.photos), self._workdir / "bundle.npz", self.request.engine_options,
                checkpoint=self.request.checkpoint, device=self.request.device))
        except WorkerError as exc:
            self._finish(Phase.FAILED, exc.message, exc.hint)
        self.publish()

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED, Phase.CANCELLED)

    def cancel(self) -> None:
        """Ask the worker to stop; the run ends (CANCELLED) when it answers. Nothing is imported."""
        if self.finished or self.phase is Phase.CANCELLING:
            return
        self.phase = Phase.CANCELLING
        self.stage = "Cancelling"
        self._cancelled_at = time.monotonic()
        client = self.session.client
        try:
            if client is not None:
                client.cancel(self.request_id)
        except WorkerError as exc:
            self._finish(Phase.FAILED, exc.message, exc.hint)
        self.publish()

    def step(self) -> Optional[float]:
        """Handle what arrived; return when to call again (seconds), or None when the run is over."""
        if self.finished:
            return None
        for event in self.session.take(self.request_id):
            self._handle(event)
            if self.finished:
                break
        if self.phase is Phase.CANCELLING and time.monotonic() - self._cancelled_at > CANCEL_GRACE:
            self.session.shutdown()  # stuck (e.g. inside a GPU kernel): stop it; the next run starts a new one
            self._finish(Phase.CANCELLED, "cancelled; the worker did not stop in time and was stopped. "
                                          "Nothing was imported")
        self.publish()
        return None if self.finished else POLL_INTERVAL

    def _handle(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.stage, self.fraction = event.stage, event.fraction
        elif isinstance(event, ResultEvent):
            if self.phase is Phase.CANCELLING:
                self._finish(Phase.CANCELLED, "cancelled; nothing was imported")
            else:
                self.timings = dict(event.timings)
                self._apply(Path(event.bundle))
        elif isinstance(event, ErrorEvent):
            if event.code == "cancelled":
                self._finish(Phase.CANCELLED, "cancelled; nothing was imported")
            elif event.code == "worker_exited":
                self._finish(Phase.FAILED, f"{event.message}; the scene was not changed",
                             f"the next run starts a new worker. Its last output:\n{event.hint}")
            else:
                self._finish(Phase.FAILED, event.message, event.hint)

    def _apply(self, bundle_path: Path) -> None:
        """Import the bundle into the run's scene as one undo step. ``api.import_bundle`` removes
        whatever it created when it fails, so a failure leaves the scene as it was."""
        from . import api  # here, not at the top: api imports reconstruction, which imports this one

        scene = bpy.data.scenes.get(self.request.scene_name)
        if scene is None:
            self._finish(Phase.FAILED, f"the scene '{self.request.scene_name}' was deleted during the run",
                         "run the reconstruction again")
            return
        self.stage = "Importing"
        started = time.perf_counter()
        try:
            result = api.import_bundle(bundle_path, scene=scene, **self.request.import_options)
        except Exception as exc:  # reported, never half-applied: the importer cleaned up after itself
            self._finish(Phase.FAILED, f"importing the result failed: {exc}",
                         "the scene was left as it was; please report this with the worker log")
            return
        self.timings["import"] = time.perf_counter() - started
        self.collection_name = result.collection.name
        _push_undo("MV-DUSt3R Reconstruction")
        self._finish(Phase.DONE, f"{len(self.request.photos)} photos → {self.collection_name}")

    def _finish(self, phase: Phase, message: str, hint: str = "") -> None:
        self.phase, self.message, self.hint = phase, message, hint
        self.stage = phase.value.capitalize()
        if phase is Phase.DONE:
            self.fraction = 1.0
        self.session.close(self.request_id)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    @property
    def timings_text(self) -> str:
        """``total 12.3 s · network 8.1 s · import 0.4 s`` (the slowest stages first)."""
        parts = sorted(self.timings.items(), key=lambda kv: (kv[0] != "total", -kv[1]))
        return " · ".join(f"{name} {seconds:.1f} s" for name, seconds in parts[:6])

    def publish(self) -> None:
        """Mirror the state into ``window_manager.mvdust3r_run`` for the panel (main thread only)."""
        wm = bpy.context.window_manager
        state = getattr(wm, "mvdust3r_run", None) if wm is not None else None
        if state is None:
            return
        state.state = self.phase.value
        state.stage = self.stage
        state.progress = min(max(self.fraction, 0.0), 1.0)
        state.message = self.message
        state.hint = self.hint
        state.timings = self.timings_text
        state.collection = self.collection_name
        status = None if self.finished else f"MV-DUSt3R+: {self.stage} {self.fraction * 100:.0f} %"
        _show(status)


def _push_undo(message: str) -> None:
    """Make what was just imported one undo step. Timers run without a window in the context, so
    borrow the first one; background Blender has no undo stack to push to."""
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm is not None and len(wm.windows) else None)
    if bpy.app.background or window is None:
        return
    with bpy.context.temp_override(window=window):
        bpy.ops.ed.undo_push(message=message)


def _show(status: Optional[str]) -> None:
    """Redraw the sidebar and put `status` in the status bar (None clears it) in every window."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        if window.workspace is not None:
            window.workspace.status_text_set(status)
        screen = window.screen
        for area in screen.areas if screen is not None else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()


# ---------------------------------------------------------------------------------------------
# The active run of this session (one at a time) and the timer that drives it


_active: Optional[RunController] = None


def active() -> Optional[RunController]:
    """The current run, if one is in progress."""
    return _active if _active is not None and not _active.finished else None


def start(context: bpy.types.Context) -> RunController:
    """Start a run from the panel's settings; RunError / SetupError say what to fix first."""
    global _active
    if active() is not None:
        raise RunError("a reconstruction is already running", "wait for it or cancel it")
    controller = RunController(RunRequest.from_context(context))
    controller.start()
    _active = controller
    return controller


def tick() -> Optional[float]:
    """The timer callback: step the active run; None (stop the timer) when it is over."""
    controller = active()
    return controller.step() if controller is not None else None


# ---------------------------------------------------------------------------------------------
# The runtime check: start the worker and ask it what it runs on


@dataclass
class RuntimeCheck:
    """A ``hello`` to the worker, answered without blocking (see :meth:`step`)."""

    python: str
    session: WorkerSession = field(default_factory=lambda: SESSION)
    request_id: str = ""
    result: Optional[HelloEvent] = None
    error: str = ""

    def start(self, log_path: Optional[Path] = None) -> None:
        try:
            self.request_id = self.session.expect(self.session.ensure(self.python, log_path).hello())
        except (SetupError, WorkerError) as exc:
            self.error = str(exc)

    @property
    def finished(self) -> bool:
        return self.result is not None or bool(self.error)

    def step(self) -> Optional[float]:
        if self.finished:
            return None
        for event in self.session.take(self.request_id):
            if isinstance(event, HelloEvent):
                self.result = event
            elif isinstance(event, ErrorEvent):
                self.error = f"{event.message}: {event.hint}" if event.hint else event.message
        if self.finished:
            self.session.close(self.request_id)
            return None
        return POLL_INTERVAL

    @property
    def summary(self) -> str:
        """``torch 2.13.0 · cuda:0 (NVIDIA …), cpu · Python 3.11.7``."""
        if self.result is None:
            return ""
        devices = ", ".join(f"{d.name} ({d.label})" if d.label else d.name for d in self.result.devices)
        return f"torch {self.result.torch} · {devices} · Python {self.result.python}"


@bpy.app.handlers.persistent
def _cancel_on_load(*_args: Any) -> None:
    """Another .blend is being opened: its scenes are not the run's, so the run imports nothing."""
    controller = active()
    if controller is not None:
        controller.cancel()


def register() -> None:
    bpy.app.handlers.load_pre.append(_cancel_on_load)


def unregister() -> None:
    """Blender quits or the add-on is disabled: stop the run and the worker."""
    global _active
    if _cancel_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_load)
    if _active is not None and not _active.finished:
        _active.cancel()
    _active = None
    SESSION.shutdown()
