"""Properties the panel edits and shows.

``scene.mvdust3r`` (:class:`MVDUST3R_PG_scene`, saved with the .blend): the photo list and the
options of a reconstruction. ``window_manager.mvdust3r_run`` and ``window_manager.mvdust3r_setup``
(never saved): the state of the current run and of the runtime / model set-up, written only on
the main thread by the run controller and the set-up timers, read by the panel and preferences.
"""
from __future__ import annotations

from typing import Callable

import bpy

from .import_options import ImportSettings, PlacementSettings
from .session import RunState

RUN_STATES = tuple((state.value, state.label, state.description) for state in RunState)
TASK_STATES = (
    ("IDLE", "Idle", ""),
    ("RUNNING", "Running", ""),
    ("DONE", "Done", ""),
    ("FAILED", "Failed", ""),
    ("CANCELLED", "Cancelled", ""),
)


class MVDUST3R_PG_photo(bpy.types.PropertyGroup):
    """One input photo (``name`` is the file name shown in the list)."""

    filepath: bpy.props.StringProperty(name="File", subtype="FILE_PATH")  # type: ignore[valid-type]


class MVDUST3R_PG_scene(ImportSettings, PlacementSettings, bpy.types.PropertyGroup):
    """The photos and options of the next reconstruction in this scene. What to import and how
    comes from :class:`~.import_options.ImportSettings`, as for File > Import; what the artist knows
    about an import's size from :class:`~.import_options.PlacementSettings`."""

    photos: bpy.props.CollectionProperty(  # type: ignore[valid-type]
        type=MVDUST3R_PG_photo, name="Photos", description="The photos to reconstruct, of one scene")
    photo_index: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Active Photo", default=0, min=0, description="The photo selected in the list")
    reference_photo: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Reference Photo", default=0, min=0,
        description="The number, as in the list (1 = the first), of the photo whose camera becomes the world "
                    "origin; 0 lets the model choose. Scripts and the command line count from 0 (reference_view)")
    focal_mode: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Focal Length", description="Where the cameras' focal lengths come from",
        items=[("AUTO", "Auto", "From the photos' EXIF where it is plausible, else estimated from the points"),
               ("ESTIMATE", "Estimate", "Always estimated from the points (one per camera)"),
               ("GIVEN", "Given", "The focal length below for every photo; only the poses are solved")],
        default="AUTO")
    focal_mm: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Focal (35 mm equiv.)", default=26.0, min=4.0, max=2000.0, subtype="DISTANCE_CAMERA",
        description="Focal length in mm, 35 mm equivalent (by the diagonal), of every photo")

    def focal(self) -> str:
        """The ``focal`` option these settings choose (ReconstructOptions)."""
        return f"{self.focal_mm:g}" if self.focal_mode == "GIVEN" else str(self.focal_mode).lower()


class MVDUST3R_PG_run(bpy.types.PropertyGroup):
    """The current or last reconstruction of this Blender session."""

    state: bpy.props.EnumProperty(items=RUN_STATES, default="IDLE")  # type: ignore[valid-type]
    stage: bpy.props.StringProperty()  # type: ignore[valid-type]
    progress: bpy.props.FloatProperty(min=0.0, max=1.0, subtype="FACTOR")  # type: ignore[valid-type]
    message: bpy.props.StringProperty()  # type: ignore[valid-type]
    hint: bpy.props.StringProperty()  # type: ignore[valid-type]
    timings: bpy.props.StringProperty()  # type: ignore[valid-type]
    collection: bpy.props.StringProperty()  # type: ignore[valid-type]


class MVDUST3R_PG_setup(bpy.types.PropertyGroup):
    """Runtime installation, runtime check and model download, as the preferences show them."""

    runtime_state: bpy.props.EnumProperty(items=TASK_STATES, default="IDLE")  # type: ignore[valid-type]
    runtime_step: bpy.props.StringProperty()  # type: ignore[valid-type]
    runtime_command: bpy.props.StringProperty()  # type: ignore[valid-type]
    runtime_message: bpy.props.StringProperty()  # type: ignore[valid-type]
    runtime_hint: bpy.props.StringProperty()  # type: ignore[valid-type]
    runtime_tail: bpy.props.StringProperty()  # type: ignore[valid-type]
    runtime_log: bpy.props.StringProperty(subtype="FILE_PATH")  # type: ignore[valid-type]
    check_state: bpy.props.EnumProperty(items=TASK_STATES, default="IDLE")  # type: ignore[valid-type]
    check_message: bpy.props.StringProperty()  # type: ignore[valid-type]
    download_state: bpy.props.EnumProperty(items=TASK_STATES, default="IDLE")  # type: ignore[valid-type]
    download_progress: bpy.props.FloatProperty(min=0.0, max=1.0, subtype="FACTOR")  # type: ignore[valid-type]
    download_message: bpy.props.StringProperty()  # type: ignore[valid-type]


CLASSES = (MVDUST3R_PG_photo, MVDUST3R_PG_scene, MVDUST3R_PG_run, MVDUST3R_PG_setup)

_register_classes: Callable[[], None]
_unregister_classes: Callable[[], None]
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None


def register() -> None:
    _register_classes()
    # setattr: the stubs type the property functions as returning None
    setattr(bpy.types.Scene, "mvdust3r", bpy.props.PointerProperty(type=MVDUST3R_PG_scene))  # type: ignore[func-returns-value]
    setattr(bpy.types.WindowManager, "mvdust3r_run", bpy.props.PointerProperty(type=MVDUST3R_PG_run))  # type: ignore[func-returns-value]
    setattr(bpy.types.WindowManager, "mvdust3r_setup", bpy.props.PointerProperty(type=MVDUST3R_PG_setup))  # type: ignore[func-returns-value]


def unregister() -> None:
    delattr(bpy.types.WindowManager, "mvdust3r_setup")
    delattr(bpy.types.WindowManager, "mvdust3r_run")
    delattr(bpy.types.Scene, "mvdust3r")
    _unregister_classes()
