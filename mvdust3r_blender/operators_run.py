"""Operators of the panel: the photo list, Reconstruct, Cancel, Release GPU memory, and a file
handler that adds photos dropped on the 3D viewport.

The operators stay thin: photos are checked and runs are driven by :mod:`.run`; errors a user can
cause (:class:`~.session.RunError`, :class:`~.session.SetupError`) are caught here, once, and
reported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import bpy

from . import run
from .core.photos import IMAGE_EXTENSIONS, display_name, skipped_message, unsupported_photos
from .session import POLL_INTERVAL, SESSION, RunError, SetupError, folder_photos

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def add_photos(settings: Any, paths: Iterable[str]) -> tuple[int, list[str]]:
    """Append image files to the scene's photo list, skipping ones already there.

    Returns (how many were added, the paths skipped because they are not images). A file name that
    is not UTF-8 keeps its exact path (a file path property holds it) and is listed under its name
    with U+FFFD for the undecodable bytes (a list item's name must be UTF-8).
    """
    present = {bpy.path.abspath(p.filepath) for p in settings.photos}
    added, rejected = 0, []
    for path in paths:
        absolute = os.path.abspath(bpy.path.abspath(path))
        if not absolute.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(absolute):
            rejected.append(absolute)
            continue
        if absolute in present:
            continue
        item = settings.photos.add()
        item.filepath = absolute
        item.name = display_name(os.path.basename(absolute))
        present.add(absolute)
        added += 1
    if added:
        settings.photo_index = len(settings.photos) - 1
    return added, rejected


def _names(paths: list[str]) -> str:
    """Up to five file names, shown as valid UTF-8."""
    return ", ".join(display_name(os.path.basename(p)) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")


def _settings(context: bpy.types.Context) -> Any:
    return context.scene.mvdust3r  # type: ignore[union-attr]


def _photos_changed(context: bpy.types.Context) -> None:
    """A failed or cancelled run's message was about the old list: it goes once the list changes."""
    state = getattr(context.window_manager, "mvdust3r_run", None)
    if state is not None and state.state in ("FAILED", "CANCELLED"):
        state.state, state.message, state.hint = "IDLE", "", ""


class MVDUST3R_BLENDER_OT_add_photos(bpy.types.Operator):
    """Add photos to the list: pick several files, or a folder to add all its images"""

    bl_idname = "mvdust3r_blender.add_photos"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}

    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    files: bpy.props.CollectionProperty(  # type: ignore[valid-type]
        type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and run.active() is None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set["OperatorReturnItems"]:
        if self.directory and len(self.files) > 0:  # dropped on the viewport: no browser needed
            return self.execute(context)
        assert context.window_manager is not None
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        names = [f.name for f in self.files if f.name]
        folder = Path(bpy.path.abspath(self.directory)) if self.directory else None
        if folder is None:
            self.report({"ERROR"}, "No photos chosen: pick image files or a folder")
            return {"CANCELLED"}
        skipped: list[Path] = []
        if names:
            paths = [str(folder / name) for name in names]
        elif folder.is_dir():  # a folder without a selection: all of its images, in name order
            try:
                paths = folder_photos(folder)
            except OSError as exc:
                self.report({"ERROR"}, f"Cannot list the folder '{display_name(str(folder))}': {exc.strerror or exc}")
                return {"CANCELLED"}
            skipped = unsupported_photos(folder)
        else:
            self.report({"ERROR"}, f"The folder '{display_name(str(folder))}' does not exist")
            return {"CANCELLED"}
        added, rejected = add_photos(_settings(context), paths)
        if rejected:
            self.report({"WARNING"}, f"Skipped {len(rejected)} file(s) that are not images: {_names(rejected)}")
        if skipped:
            message = skipped_message(skipped)
            self.report({"WARNING"}, message[0].upper() + message[1:])
        if not added and not (rejected or skipped):
            self.report({"WARNING"}, f"No new images in {display_name(str(folder))}")
            return {"CANCELLED"}
        if added:
            _photos_changed(context)
        self.report({"INFO"}, f"Added {added} photo(s); {len(_settings(context).photos)} in the list")
        return {"FINISHED"} if added else {"CANCELLED"}


class MVDUST3R_BLENDER_OT_remove_photo(bpy.types.Operator):
    """Remove the selected photo from the list (the file stays on disk)"""

    bl_idname = "mvdust3r_blender.remove_photo"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(default=-1, options={"SKIP_SAVE"},  # type: ignore[valid-type]
                                 description="Which photo (-1: the selected one)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and len(_settings(context).photos) > 0 and run.active() is None

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        settings = _settings(context)
        index = settings.photo_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.photos):
            self.report({"ERROR"}, f"There is no photo {index + 1} (the list has {len(settings.photos)})")
            return {"CANCELLED"}
        settings.photos.remove(index)
        settings.photo_index = max(0, min(index, len(settings.photos) - 1))
        _photos_changed(context)
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_clear_photos(bpy.types.Operator):
    """Remove every photo from the list (the files stay on disk)"""

    bl_idname = "mvdust3r_blender.clear_photos"
    bl_label = "Clear Photos"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and len(_settings(context).photos) > 0 and run.active() is None

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        settings = _settings(context)
        settings.photos.clear()
        settings.photo_index = 0
        _photos_changed(context)
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_reconstruct(bpy.types.Operator):
    """Reconstruct the listed photos in the background; the result is added as a new collection.
    Esc cancels"""

    bl_idname = "mvdust3r_blender.reconstruct"
    bl_label = "Reconstruct"
    # No UNDO flag: this operator returns before anything changes; the run controller pushes one
    # undo step when it imports the result.
    bl_options = {"REGISTER"}

    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and run.active() is None

    def _start(self, context: bpy.types.Context) -> bool:
        try:
            run.start(context)
        except (RunError, SetupError) as exc:
            self.report({"ERROR"}, str(exc))
            _publish_error(context, exc)
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        """Start the run and let a timer drive it (scripts, and where no modal loop runs)."""
        if not self._start(context):
            return {"CANCELLED"}
        _drive_with_timer()
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set["OperatorReturnItems"]:
        """Start the run and drive it from this modal operator, so that Esc cancels it (from a
        timer when there is no window to run a modal loop in)."""
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        if wm is None or context.window is None or not wm.modal_handler_add(self):
            _drive_with_timer()
            return {"FINISHED"}
        self._timer = wm.event_timer_add(POLL_INTERVAL, window=context.window)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set["OperatorReturnItems"]:
        controller = run.active()
        if controller is None:
            return self._end(context)
        if event.type == "ESC" and event.value == "PRESS":
            controller.cancel()
            return {"RUNNING_MODAL"}  # Esc is ours while a run goes on
        if event.type == "TIMER":
            controller.step()
        if controller.finished:
            return self._end(context)
        return {"PASS_THROUGH"}

    def _end(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if self._timer is not None and context.window_manager is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        state = context.window_manager.mvdust3r_run  # type: ignore[union-attr]
        if state.state == "FAILED":
            self.report({"ERROR"}, f"Reconstruction failed: {state.message}")
        elif state.state == "DONE":
            self.report({"INFO"}, f"Reconstruction imported: {state.collection}")
            for line in state.hint.splitlines():
                self.report({"WARNING"}, line)
        return {"FINISHED"}


def _drive_with_timer() -> None:
    if not bpy.app.timers.is_registered(run.tick):
        # persistent: a run outlives loading another file (it then reports its scene is gone)
        bpy.app.timers.register(run.tick, first_interval=POLL_INTERVAL, persistent=True)


def _publish_error(context: bpy.types.Context, exc: RunError | SetupError) -> None:
    state = getattr(context.window_manager, "mvdust3r_run", None)
    if state is not None:
        state.state, state.stage, state.progress = "FAILED", "", 0.0
        state.message, state.hint = exc.message, exc.hint


class MVDUST3R_BLENDER_OT_cancel(bpy.types.Operator):
    """Cancel the running reconstruction; nothing is imported"""

    bl_idname = "mvdust3r_blender.cancel"
    bl_label = "Cancel Reconstruction"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return run.active() is not None

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        controller = run.active()
        if controller is not None:
            controller.cancel()
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_release(bpy.types.Operator):
    """Unload the model from the worker to free its memory (GPU or main memory); the next run loads it again"""

    bl_idname = "mvdust3r_blender.release"
    bl_label = "Unload Model"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return run.active() is None

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if SESSION.release():
            self.report({"INFO"}, "The model was unloaded; its memory is free")
        else:
            self.report({"INFO"}, "No worker is running: nothing to release")
        return {"FINISHED"}


class MVDUST3R_FH_photos(bpy.types.FileHandler):
    """Drop photos on the 3D viewport to add them to the MV-DUSt3R+ photo list."""

    bl_idname = "MVDUST3R_FH_photos"
    bl_label = "MV-DUSt3R+ Photos"
    bl_import_operator = "mvdust3r_blender.add_photos"
    bl_file_extensions = ";".join(IMAGE_EXTENSIONS)

    @classmethod
    def poll_drop(cls, context: bpy.types.Context) -> bool:
        return context.area is not None and context.area.type == "VIEW_3D"


CLASSES = (MVDUST3R_BLENDER_OT_add_photos, MVDUST3R_BLENDER_OT_remove_photo, MVDUST3R_BLENDER_OT_clear_photos,
           MVDUST3R_BLENDER_OT_reconstruct, MVDUST3R_BLENDER_OT_cancel, MVDUST3R_BLENDER_OT_release,
           MVDUST3R_FH_photos)

_register_classes: Callable[[], None]
_unregister_classes: Callable[[], None]
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None


def register() -> None:
    _register_classes()


def unregister() -> None:
    if bpy.app.timers.is_registered(run.tick):
        bpy.app.timers.unregister(run.tick)
    _unregister_classes()
