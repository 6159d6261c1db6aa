"""The run controller: from the panel's photos to a new collection, without blocking Blender.

The panel is one face of the run spec: :func:`panel_spec` turns its photos and settings and the
preferences into a :class:`~.session.RunSpec` once. A :class:`RunController` submits it through
:mod:`.session`, as every run is, to the session's worker (which keeps the model loaded between
runs); its :meth:`RunController.step` — called on the main thread by a timer or the Reconstruct
operator's modal loop, and by tests directly, since timers never fire in module mode — reads the
request handle's events, mirrors progress into ``window_manager.mvdust3r_run`` and, when the bundle is
ready, imports it (:func:`~.importers.scene.import_bundle`) as one undo step. A failure or a
cancel imports nothing, and an import that fails removes what it created, so the user's scene is
left exactly as it was.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import bpy

from . import bundles, preferences, session
from .client.requests import RequestHandle
from .client.worker_client import WorkerError
from .core.options import ReconstructOptions
from .core.protocol.events import ErrorEvent, Event, ProgressEvent, ResultEvent
from .import_options import ImportOptions
from .importers.scene import import_bundle
from .session import FINISHED_STATES, SESSION, RunError, RunSpec, RunState, WorkerSession, WorkerSettings

CANCEL_GRACE = 15.0  # seconds a cancelled run may take to stop before its worker is stopped


def panel_spec(context: bpy.types.Context) -> RunSpec:
    """The run the panel and the preferences describe; :class:`RunError` / :class:`SetupError`
    name what is wrong (the Reference Photo as the panel counts: from 1, 0 for automatic)."""
    scene = context.scene
    assert scene is not None
    settings = scene.mvdust3r  # type: ignore[attr-defined]
    photos = [bpy.path.abspath(p.filepath) for p in settings.photos]
    session.check_photos(photos)
    reference = int(settings.reference_photo)
    if reference > len(photos):
        raise RunError(f"reference photo {reference} does not exist: there are {len(photos)} photos",
                       "set Reference Photo to a number from the list, or 0 for automatic")
    worker = WorkerSettings.from_preferences(preferences.get())
    return RunSpec(photos=tuple(photos), worker=worker,
                   options=ReconstructOptions(reference_view=reference - 1 if reference else None,
                                              focal=settings.focal()),
                   imports=ImportOptions.from_keywords(**settings.import_options()))


@dataclass
class RunController:
    """One reconstruction of `spec` into the scene `scene_name` (found by `scene_uid`, its
    ``ID.session_uid`` — unique in this Blender session and kept by a rename — when given): submits
    it, follows it, imports the result on the main thread."""

    spec: RunSpec
    scene_name: str                  # for messages, and to find the scene when no scene_uid is given
    log_path: Optional[Path] = None
    scene_uid: Optional[int] = None
    session: WorkerSession = field(default_factory=lambda: SESSION)
    phase: RunState = RunState.RUNNING
    stage: str = "Starting the worker"
    fraction: float = 0.0
    message: str = ""
    hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    collection_name: str = ""
    handle: Optional[RequestHandle] = None
    _workdir: Optional[Path] = None
    _cancelled_at: float = 0.0

    def scene(self) -> Optional[bpy.types.Scene]:
        """The scene the run was started in, if it still exists (renamed or not)."""
        if self.scene_uid is None:
            return bpy.data.scenes.get(self.scene_name)
        return next((s for s in bpy.data.scenes if s.session_uid == self.scene_uid), None)

    def start(self) -> None:
        """Start (or reuse) the worker and send the request; raises SetupError if it cannot start
        (the run's folder is removed then, as after any end)."""
        self._workdir = Path(tempfile.mkdtemp(prefix="mvdust3r-run-"))
        _WORKDIRS.add(self._workdir)
        try:
            self.handle = self.session.submit(self.spec, self._workdir / "bundle.npz", self.log_path)
        except WorkerError as exc:
            self._finish(RunState.FAILED, exc.message, exc.hint)
        except BaseException:
            self._remove_workdir()
            raise
        self.publish()

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_STATES

    def cancel(self) -> None:
        """Ask the worker to stop; the run ends (CANCELLED) when it answers. Nothing is imported."""
        if self.finished or self.phase is RunState.CANCELLING:
            return
        self.phase = RunState.CANCELLING
        self.stage = "Cancelling"
        self._cancelled_at = time.monotonic()
        try:
            if self.handle is not None:
                self.handle.cancel()
        except WorkerError as exc:
            self._finish(RunState.FAILED, exc.message, exc.hint)
        self.publish()

    def step(self) -> Optional[float]:
        """Handle what arrived; return when to call again (seconds), or None when the run is over."""
        if self.finished:
            return None
        for event in self.handle.events() if self.handle is not None else ():
            self._handle(event)
            if self.finished:
                break
        if self.phase is RunState.CANCELLING and time.monotonic() - self._cancelled_at > CANCEL_GRACE:
            self.session.shutdown()  # stuck (e.g. inside a GPU kernel): stop it; the next run starts a new one
            self._finish(RunState.CANCELLED, "cancelled; the worker did not stop in time and was stopped. "
                                          "Nothing was imported")
        self.publish()
        return None if self.finished else session.POLL_INTERVAL

    def _handle(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.stage, self.fraction = event.stage, event.fraction
        elif isinstance(event, ResultEvent):
            if self.phase is RunState.CANCELLING:
                self._finish(RunState.CANCELLED, "cancelled; nothing was imported")
            else:
                self.timings = dict(event.timings)
                self._apply(Path(event.bundle))
        elif isinstance(event, ErrorEvent):
            if event.code == "cancelled":
                self._finish(RunState.CANCELLED, "cancelled; nothing was imported")
            elif event.code == "worker_exited":
                self._finish(RunState.FAILED, f"{event.message}; the scene was not changed",
                             f"the next run starts a new worker. Its last output:\n{event.hint}")
            else:
                self._finish(RunState.FAILED, event.message, event.hint)

    def _apply(self, bundle_path: Path) -> None:
        """Import the bundle into the run's scene as one undo step. ``api.import_bundle`` removes
        whatever it created when it fails, so a failure leaves the scene as it was."""
        scene = self.scene()
        if scene is None:
            self._finish(RunState.FAILED, f"the scene '{self.scene_name}' was deleted during the run",
                         "run the reconstruction again")
            return
        self.stage = "Importing"
        started = time.perf_counter()
        try:
            kept = bundles.keep(bundle_path, self.spec.photos)
        except OSError as exc:
            self._finish(RunState.FAILED, f"the result could not be kept in {bundles.folder()}: {exc}",
                         "choose a writable folder in the add-on's preferences (Keep Results In)")
            return
        try:
            result = import_bundle(kept, self.spec.imports, scene)
        except Exception as exc:  # reported, never half-applied: the importer cleaned up after itself
            self._finish(RunState.FAILED, f"importing the result failed: {exc}",
                         f"the scene was left as it was; the result is kept in {kept} — "
                         "please report this with the worker log")
            return
        self.timings["import"] = time.perf_counter() - started
        self.collection_name = result.collection.name
        _push_undo("MV-DUSt3R Reconstruction")
        # what the import warns about (an object hiding the result, a camera's fallback) stays in view
        said = f"; {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}" if result.warnings else ""
        self._finish(RunState.DONE, f"{len(self.spec.photos)} photos → {self.collection_name}{said}",
                     "\n".join(result.warnings))

    def _finish(self, phase: RunState, message: str, hint: str = "") -> None:
        self.phase, self.message, self.hint = phase, message, hint
        self.stage = phase.label
        if phase is RunState.DONE:
            self.fraction = 1.0
        if self.handle is not None:
            self.handle.close()
        self._remove_workdir()

    def _remove_workdir(self) -> None:
        """The run's own folder goes when the run ends (an imported bundle was moved out first: :mod:`.bundles`)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            _WORKDIRS.discard(self._workdir)
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
_WORKDIRS: set[Path] = set()
"""The folders of runs not finished yet: removed at any exit of Blender (``atexit``), even one in
the middle of a run, which ends without the run's own clean-up."""


@atexit.register
def _remove_workdirs() -> None:
    for folder in list(_WORKDIRS):
        shutil.rmtree(folder, ignore_errors=True)
    _WORKDIRS.clear()


def active() -> Optional[RunController]:
    """The current run, if one is in progress."""
    return _active if _active is not None and not _active.finished else None


def start(context: bpy.types.Context) -> RunController:
    """Start a run from the panel's settings; RunError / SetupError say what to fix first."""
    global _active
    if active() is not None:
        raise RunError("a reconstruction is already running", "wait for it or cancel it")
    scene = context.scene
    assert scene is not None
    controller = RunController(panel_spec(context), scene.name, session.log_path(), scene_uid=scene.session_uid)
    controller.start()
    _active = controller
    return controller


def tick() -> Optional[float]:
    """The timer callback: step the active run; None (stop the timer) when it is over."""
    controller = active()
    return controller.step() if controller is not None else None


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
        _active._remove_workdir()  # nothing will be imported: the run's folder goes now
    _active = None
    SESSION.shutdown()
