"""``collection.mvdust3r``: the Result panel's live controls of one imported reconstruction.

The values live in the collection's own ``mvdust3r_*`` custom properties (written by the import,
:mod:`.importers.result`) and in its objects' visibility, so these properties only read and write
those: there is one copy of each value, it is saved with the .blend, and a File › Import, a panel
run and a script's import all get the same controls. Setting one applies it at once (and Undo
reverts it).
"""
from __future__ import annotations

from typing import Any, Optional

import bpy

from .core.confidence import DEFAULT_DROP_PERCENT
from .importers import result as imported
from .importers.placement import ImportParts, parts_of
from .importers.result import Reconstruction


def _reconstruction(self: Any) -> Optional[Reconstruction]:
    return Reconstruction.of(self.id_data)


def _get_hide(self: Any) -> float:
    return float(self.id_data.get(imported.DROP_PERCENT, DEFAULT_DROP_PERCENT))


def _set_hide(self: Any, value: float) -> None:
    reconstruction = _reconstruction(self)
    if reconstruction is not None:
        imported.apply_cut(reconstruction, min(max(float(value), 0.0), 99.0))


def _get_size(self: Any) -> float:
    return float(self.id_data.get(imported.POINT_SIZE, 1.0))


def _set_size(self: Any, value: float) -> None:
    reconstruction = _reconstruction(self)
    if reconstruction is not None:
        imported.set_point_size(reconstruction, value)


_RENDER_KEYS = [key for key, _, _ in imported.RENDERS]


def _get_renders(self: Any) -> int:
    reconstruction = _reconstruction(self)
    return _RENDER_KEYS.index(imported.renders(reconstruction)) if reconstruction is not None else 0


def _set_renders(self: Any, value: int) -> None:
    reconstruction = _reconstruction(self)
    if reconstruction is not None:
        imported.set_renders(reconstruction, _RENDER_KEYS[value])


def _get_cameras(self: Any) -> bool:
    reconstruction = _reconstruction(self)
    return reconstruction is not None and any(not c.hide_viewport for c in reconstruction.cameras)


def _set_cameras(self: Any, value: bool) -> None:
    reconstruction = _reconstruction(self)
    for camera in reconstruction.cameras if reconstruction is not None else ():
        camera.hide_viewport = not value


def _get_photos(self: Any) -> bool:
    reconstruction = _reconstruction(self)
    return reconstruction is not None and imported.photos_shown(reconstruction)


def _set_photos(self: Any, value: bool) -> None:
    reconstruction = _reconstruction(self)
    if reconstruction is not None:
        imported.show_photos(reconstruction, value)


class MVDUST3R_PG_result(bpy.types.PropertyGroup):
    """The live controls of the reconstruction in this collection (see the module doc)."""

    hide_percent: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Hide Least Confident", min=0.0, max=99.0, soft_max=50.0, subtype="PERCENTAGE", precision=1,
        get=_get_hide, set=_set_hide,
        description="Hide this share of the points, the least confident first (exactly this share, even where "
                    "many points have the same confidence); Export… writes the points shown")
    point_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Point Size", min=0.01, max=100.0, soft_max=10.0, get=_get_size, set=_set_size,
        description="Point radius relative to the automatic one (at 1, neighbouring points just touch)")
    renders: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Renders", items=imported.RENDERS, get=_get_renders, set=_set_renders,
        description="What F12 renders of this reconstruction (the viewport shows what is checked below)")
    show_cameras: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Cameras", get=_get_cameras, set=_set_cameras, description="Show the cameras in the viewport")
    show_photos: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Photos", get=_get_photos, set=_set_photos,
        description="Show the photos as camera backgrounds (seen through a camera) and image planes")


def active_import(context: bpy.types.Context) -> Optional[ImportParts]:
    """The parts of the :func:`active` reconstruction that Level & Ground and the scale operators move."""
    reconstruction = active(context)
    return parts_of(reconstruction.collection) if reconstruction is not None else None


def active(context: bpy.types.Context) -> Optional[Reconstruction]:
    """The reconstruction the Result panel shows: the active object's, else the last run's or
    import's (``window_manager.mvdust3r_run.collection``), else the newest one in the scene."""
    found = imported.of_object(getattr(context, "active_object", None))
    if found is not None:
        return found
    state = getattr(context.window_manager, "mvdust3r_run", None)
    last = bpy.data.collections.get(state.collection) if state is not None and state.collection else None
    scene = context.scene
    if last is not None and scene is not None and last in list(scene.collection.children_recursive):
        found = Reconstruction.of(last)
        if found is not None:
            return found
    for collection in reversed(list(scene.collection.children_recursive) if scene is not None else []):
        found = Reconstruction.of(collection)
        if found is not None:
            return found
    return None


def register() -> None:
    bpy.utils.register_class(MVDUST3R_PG_result)
    setattr(bpy.types.Collection, "mvdust3r", bpy.props.PointerProperty(type=MVDUST3R_PG_result))  # type: ignore[func-returns-value]


def unregister() -> None:
    delattr(bpy.types.Collection, "mvdust3r")
    bpy.utils.unregister_class(MVDUST3R_PG_result)
