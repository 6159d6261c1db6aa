"""Set-up operators of the preferences: create the runtime, check it, download a model, stop.

Each starts a background task (an installer :class:`~.client.setup_steps.Job`, a worker ``hello``, a
:class:`~.core.download.Download`) and returns at once; :func:`poll_tasks`, registered as a
``bpy.app.timers`` callback, advances them on the main thread and mirrors their state into
``window_manager.mvdust3r_setup`` for the preferences to draw. (Timers never fire in module-mode
bpy; tests call :func:`poll_tasks` themselves.)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import bpy

from . import preferences
from .core.download import Download, DownloadState, check_checkpoint_file
from .core import registry
from .run import active
from .client.remote import REMOTE_RUNTIME_PYTHON, RemoteError, plan_remote_environment
from .session import SESSION, RemoteFetch, RuntimeCheck, SetupError, log_path, preferred_remote, worker_python
from .client.runtime import InstallRecord, choose_installer, plan_environment, wheels_folder
from .client.setup_steps import Job, JobState, RuntimeSetupError
from .client.torch_build import choose_build

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

POLL_INTERVAL = 0.25


@dataclass
class _Tasks:
    """What runs in the background now (at most one of each kind)."""

    install: Optional[Job] = None
    install_record: Optional[InstallRecord] = None  # None: the install job sets up the remote runtime
    check: Optional[RuntimeCheck] = None
    download: Optional[Download] = None
    fetch: Optional[RemoteFetch] = None


TASKS = _Tasks()


def _setup_state() -> Any:
    wm = bpy.context.window_manager
    return getattr(wm, "mvdust3r_setup", None) if wm is not None else None


def poll_tasks() -> Optional[float]:
    """Advance every task and publish its state; None (stop the timer) when nothing runs."""
    state = _setup_state()
    busy = False
    job = TASKS.install
    if job is not None:
        job.poll()
        if state is not None:
            state.runtime_state = {JobState.PENDING: "RUNNING"}.get(job.state, job.state.value)
            state.runtime_step = job.current.title
            state.runtime_command = job.current.command_line
            state.runtime_tail = "\n".join(job.error.log_tail if job.error else job.tail(8))
            state.runtime_message = job.error.message if job.error else _job_message(job)
            state.runtime_hint = job.error.hint if job.error else ""
        if job.state is JobState.DONE and TASKS.install_record is not None:
            TASKS.install_record.write(preferences.runtime_ready_marker())
        elif job.state is JobState.DONE:
            preferences.get().remote_python = REMOTE_RUNTIME_PYTHON
        if job.finished:
            TASKS.install = None
        else:
            busy = True
    check = TASKS.check
    if check is not None:
        check.step()
        if check.finished:
            TASKS.check = None
            if state is not None:
                state.check_state = "DONE" if check.result is not None else "FAILED"
                state.check_message = check.error
            if check.result is not None:
                preferences.get().runtime_summary = check.summary
        else:
            busy = True
    download = TASKS.download
    if download is not None:
        progress = download.progress
        if state is not None:
            state.download_state = progress.state.value
            state.download_progress = progress.fraction
            state.download_message = str(progress.error) if progress.error else _download_message(progress)
        if progress.state is not DownloadState.RUNNING:
            TASKS.download = None
        else:
            busy = True
    fetch = TASKS.fetch
    if fetch is not None:
        fetch.step()
        if state is not None:
            state.download_state = "RUNNING" if not fetch.finished else ("DONE" if fetch.result else "FAILED")
            state.download_progress = fetch.fraction
            state.download_message = fetch.error or (f"on {fetch.remote}: {fetch.result.path}" if fetch.result
                                                     else f"on {fetch.remote}")
        if fetch.result is not None:
            preferences.get().remote_checkpoint = fetch.result.path
        if fetch.finished:
            TASKS.fetch = None
        else:
            busy = True
    _redraw_preferences()
    return POLL_INTERVAL if busy else None


def _job_message(job: Job) -> str:
    if job.state is JobState.DONE:
        return "the environment is ready; press Check"
    if job.state is JobState.CANCELLED:
        return "stopped; press Retry to start again"
    return f"step {job.step_index + 1} of {len(job.steps)}: {job.current.title}"


def _download_message(progress: Any) -> str:
    done = progress.done_bytes / 1e9
    if progress.state is DownloadState.DONE:
        return f"done ({done:.2f} GB)"
    total = f" of {progress.total_bytes / 1e9:.2f} GB" if progress.total_bytes else ""
    return f"{done:.2f} GB{total} at {progress.bytes_per_second / 1e6:.1f} MB/s"


def _redraw_preferences() -> None:
    wm = bpy.context.window_manager
    for window in wm.windows if wm is not None else ():
        for area in window.screen.areas if window.screen is not None else ():
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _start_timer() -> None:
    if not bpy.app.timers.is_registered(poll_tasks):
        bpy.app.timers.register(poll_tasks, first_interval=POLL_INTERVAL, persistent=True)


class MVDUST3R_BLENDER_OT_create_runtime(bpy.types.Operator):
    """Create the private Python environment with PyTorch for the worker (runs in the background)"""

    bl_idname = "mvdust3r_blender.create_runtime"
    bl_label = "Create PyTorch Environment"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if TASKS.install is not None and not TASKS.install.finished:
            self.report({"WARNING"}, "The environment is already being created")
            return {"CANCELLED"}
        if active() is not None:
            self.report({"ERROR"}, "A reconstruction is running: wait for it or cancel it first")
            return {"CANCELLED"}
        prefs = preferences.get()
        try:
            wheels = wheels_folder(bpy.path.abspath(prefs.wheels_folder) if prefs.wheels_folder else "")
        except RuntimeSetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if wheels is None and not bpy.app.online_access:
            self.report({"ERROR"}, "Online access is off: allow it in Preferences > System to download PyTorch, "
                                   "set a Wheels Folder, or choose Existing Python")
            return {"CANCELLED"}
        target = preferences.runtime_dir()
        installer = choose_installer()
        build = choose_build(str(prefs.torch_backend), uv_runs=installer.uv is not None)
        steps = plan_environment(target, base_python=sys.executable, uv=installer.uv, build=build, wheels=wheels)
        record = InstallRecord.of(installer, build, wheels)
        SESSION.shutdown()  # a worker running from the environment must not see it change under it
        preferences.runtime_ready_marker().unlink(missing_ok=True)
        job = Job(steps, preferences.user_dir() / "runtime-install.log", notes=record.lines())
        job.start()
        TASKS.install, TASKS.install_record = job, record
        state = _setup_state()
        if state is not None:
            state.runtime_log = str(job.log_path)
        prefs.runtime_summary = ""
        poll_tasks()
        _start_timer()
        self.report({"INFO"}, f"Creating the PyTorch environment in {target} (log: {job.log_path})")
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_check_runtime(bpy.types.Operator):
    """Start the worker with the chosen Python and show its PyTorch version and devices"""

    bl_idname = "mvdust3r_blender.check_runtime"
    bl_label = "Check Runtime"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        prefs = preferences.get()
        try:
            if prefs.worker_location == "REMOTE":
                remote = preferred_remote(prefs)
                check = RuntimeCheck(remote.python, remote=remote)
            else:
                check = RuntimeCheck(worker_python(prefs))
        except SetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        check.start(log_path())
        TASKS.check = check
        state = _setup_state()
        if state is not None:
            state.check_state, state.check_message = "RUNNING", ""
        poll_tasks()
        _start_timer()
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_create_remote_runtime(bpy.types.Operator):
    """Create a Python environment with PyTorch on the remote machine over ssh (uv, the chosen PyTorch build)"""

    bl_idname = "mvdust3r_blender.create_remote_runtime"
    bl_label = "Set Up Remote Runtime"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if TASKS.install is not None and not TASKS.install.finished:
            self.report({"WARNING"}, "An environment is already being created")
            return {"CANCELLED"}
        prefs = preferences.get()
        try:
            target = preferred_remote(prefs)
            steps = plan_remote_environment(target, backend=str(prefs.torch_backend))
        except (SetupError, RemoteError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        SESSION.shutdown()
        job = Job(steps, preferences.user_dir() / "remote-runtime-install.log")
        job.start()
        TASKS.install, TASKS.install_record = job, None
        state = _setup_state()
        if state is not None:
            state.runtime_log = str(job.log_path)
        prefs.runtime_summary = ""
        poll_tasks()
        _start_timer()
        self.report({"INFO"}, f"Setting up the PyTorch environment on {target} (log: {job.log_path})")
        return {"FINISHED"}


def _released_model(operator: bpy.types.Operator, prefs: Any, not_released: str) -> Optional[registry.ReleasedCheckpoint]:
    """The released checkpoint the preferences chose, its licence accepted; None (reported) if not."""
    entry = registry.find_released(prefs.checkpoint)
    if entry is None:
        operator.report({"ERROR"}, not_released)
    elif not prefs.licence_accepted:
        operator.report({"ERROR"}, f"Accept the model licence ({entry.licence}, non-commercial) first")
        return None
    return entry


class MVDUST3R_BLENDER_OT_fetch_remote_model(bpy.types.Operator):
    """Download the chosen released checkpoint on the remote machine (resumes an interrupted download);
    Remote Checkpoint is set to it when done"""

    bl_idname = "mvdust3r_blender.fetch_remote_model"
    bl_label = "Download Model on Remote"
    bl_options = {"REGISTER", "INTERNAL"}

    url: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        prefs = preferences.get()
        entry = _released_model(self, prefs, "Choose a released model to download on the remote")
        if entry is None:
            return {"CANCELLED"}
        if TASKS.fetch is not None or active() is not None:
            self.report({"WARNING"}, "The remote worker is busy: wait for it")
            return {"CANCELLED"}
        try:
            remote = preferred_remote(prefs)
        except SetupError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        fetch = RemoteFetch(remote, self.url or entry.url, entry.filename, entry.download_bytes)
        fetch.start(log_path())
        TASKS.fetch = fetch
        poll_tasks()
        _start_timer()
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_download_model(bpy.types.Operator):
    """Download the chosen released checkpoint from Hugging Face (resumes an interrupted download)"""

    bl_idname = "mvdust3r_blender.download_model"
    bl_label = "Download Model"
    bl_options = {"REGISTER", "INTERNAL"}

    url: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        prefs = preferences.get()
        entry = _released_model(self, prefs, "Choose a released model to download (a local file needs no download)")
        if entry is None:
            return {"CANCELLED"}
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Online access is off: allow it in Preferences > System, or pick a local file")
            return {"CANCELLED"}
        if TASKS.download is not None:
            self.report({"WARNING"}, "A download is already running")
            return {"CANCELLED"}
        download = Download(self.url or entry.url, preferences.models_dir() / entry.filename, entry.download_bytes,
                            sha256=entry.sha256, check=check_checkpoint_file)
        download.start()
        TASKS.download = download
        poll_tasks()
        _start_timer()
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_cancel_setup(bpy.types.Operator):
    """Stop the environment creation or the download (a download resumes later)"""

    bl_idname = "mvdust3r_blender.cancel_setup"
    bl_label = "Stop"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if TASKS.install is not None:
            TASKS.install.cancel()
        if TASKS.download is not None:
            TASKS.download.cancel()
            TASKS.download.join(5.0)
        poll_tasks()
        return {"FINISHED"}


CLASSES = (MVDUST3R_BLENDER_OT_create_runtime, MVDUST3R_BLENDER_OT_create_remote_runtime,
           MVDUST3R_BLENDER_OT_check_runtime,
           MVDUST3R_BLENDER_OT_download_model, MVDUST3R_BLENDER_OT_fetch_remote_model, MVDUST3R_BLENDER_OT_cancel_setup)

_register_classes: Callable[[], None]
_unregister_classes: Callable[[], None]
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None


def register() -> None:
    _register_classes()


def unregister() -> None:
    if bpy.app.timers.is_registered(poll_tasks):
        bpy.app.timers.unregister(poll_tasks)
    if TASKS.install is not None:
        TASKS.install.cancel()
    if TASKS.download is not None:
        TASKS.download.cancel()
    TASKS.install = TASKS.check = TASKS.download = TASKS.fetch = None
    TASKS.install_record = None
    _unregister_classes()
