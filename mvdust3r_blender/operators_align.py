"""Level & Ground and the scale operators: an existing import moved as one (importers.placement).

Each scale operator takes what the artist knows — the distance between two picked points, a
camera's height above the floor, the size of what was photographed — measures the same in the
scene, and scales the cameras, points, Gaussians and point size together about the origin (on the
floor once levelled). A value given to the operator wins; 0 takes the panel's field
(``import_options.PlacementSettings``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import bpy
import numpy as np

from . import result_settings
from .importers.placement import ImportParts, level_and_ground, scale_import, shown_points

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def _parts(operator: bpy.types.Operator, context: bpy.types.Context) -> Optional[ImportParts]:
    parts = result_settings.active_import(context)
    if parts is None:
        operator.report({"ERROR"}, "select an object of an imported reconstruction (its points, a camera or its Gaussians)")
    return parts


class _PlacementOperator:
    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return result_settings.active_import(context) is not None


class MVDUST3R_BLENDER_OT_level_ground(_PlacementOperator, bpy.types.Operator):
    """Turn the selected reconstruction upright, its floor onto Blender's grid and its centre to the origin"""

    bl_idname = "mvdust3r_blender.level_ground"
    bl_options = {"REGISTER", "UNDO"}
    bl_label = "Level & Ground"

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        parts = _parts(self, context)
        if parts is None:
            return {"CANCELLED"}
        alignment = level_and_ground(parts)
        self.report({"WARNING"} if alignment.fallback_reason else {"INFO"}, alignment.summary())
        return {"FINISHED"}


class _ScaleOperator(_PlacementOperator):
    """Scale the import so that what `measure` finds becomes the known value."""

    setting = ""

    def known(self, context: bpy.types.Context) -> float:
        given = float(getattr(self, "value"))
        return given if given > 0 else float(getattr(getattr(context.scene, "mvdust3r"), self.setting))

    def measure(self, context: bpy.types.Context, parts: ImportParts) -> float:
        raise NotImplementedError

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        parts = _parts(self, context)  # type: ignore[arg-type]
        if parts is None:
            return {"CANCELLED"}
        try:
            measured = self.measure(context, parts)
        except ValueError as exc:
            getattr(self, "report")({"ERROR"}, str(exc))
            return {"CANCELLED"}
        known = self.known(context)
        if not (measured > 0 and known > 0):
            getattr(self, "report")({"ERROR"}, f"cannot scale a measured {measured:.4g} to {known:.4g}: both must be > 0")
            return {"CANCELLED"}
        scale_import(parts, known / measured)
        getattr(self, "report")({"INFO"}, f"scaled by {known / measured:.6g} ({measured:.4g} → {known:.4g})")
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_scale_distance(_ScaleOperator, bpy.types.Operator):
    """Scale the reconstruction so the two picked points (two selected vertices, or one and the 3D cursor) are this far apart"""

    bl_idname = "mvdust3r_blender.scale_distance"
    bl_options = {"REGISTER", "UNDO"}
    bl_label = "Scale to Known Distance"
    setting = "known_distance"
    value: bpy.props.FloatProperty(name="Distance", default=0.0, min=0.0, subtype="DISTANCE", unit="LENGTH",  # type: ignore[valid-type]
                                   description="The real distance (0: the panel's)")

    def measure(self, context: bpy.types.Context, parts: ImportParts) -> float:
        picked = shown_points(parts, selected_only=True)
        if len(picked) == 1 and context.scene is not None:
            picked = np.concatenate([picked, np.array(context.scene.cursor.location, dtype=np.float64)[None]])
        if len(picked) != 2:
            raise ValueError(f"{len(picked)} points picked: select two vertices of the point cloud in Edit Mode, "
                             "or one and put the 3D cursor on the other")
        return float(np.linalg.norm(picked[1] - picked[0]))


class MVDUST3R_BLENDER_OT_scale_camera_height(_ScaleOperator, bpy.types.Operator):
    """Scale the reconstruction so the active camera (else the cameras' median) is this high above the floor (z = 0)"""

    bl_idname = "mvdust3r_blender.scale_camera_height"
    bl_options = {"REGISTER", "UNDO"}
    bl_label = "Scale to Camera Height"
    setting = "known_camera_height"
    value: bpy.props.FloatProperty(name="Height", default=0.0, min=0.0, subtype="DISTANCE", unit="LENGTH",  # type: ignore[valid-type]
                                   description="The real height above the floor (0: the panel's)")

    def measure(self, context: bpy.types.Context, parts: ImportParts) -> float:
        active = context.active_object
        cameras = [active] if active in parts.cameras else parts.cameras
        if not cameras:
            raise ValueError("this reconstruction has no cameras")
        height = float(np.median([c.matrix_world.translation.z for c in cameras if c is not None]))
        if height <= 0:
            raise ValueError(f"the cameras are {height:.3g} above the floor: use Level & Ground first")
        return height


class MVDUST3R_BLENDER_OT_scale_size(_ScaleOperator, bpy.types.Operator):
    """Scale the reconstruction so the longest side of the selected points' bounding box (else every shown point's) has this length"""

    bl_idname = "mvdust3r_blender.scale_size"
    bl_options = {"REGISTER", "UNDO"}
    bl_label = "Scale to Known Size"
    setting = "known_size"
    value: bpy.props.FloatProperty(name="Size", default=0.0, min=0.0, subtype="DISTANCE", unit="LENGTH",  # type: ignore[valid-type]
                                   description="The real length of the longest side (0: the panel's)")

    def measure(self, context: bpy.types.Context, parts: ImportParts) -> float:
        chosen = shown_points(parts, selected_only=True)
        total = sum(len(getattr(p.data, "vertices")) for p in parts.points)
        if len(chosen) < 2 or len(chosen) == total:   # nothing picked (a new mesh has every vertex selected)
            chosen = shown_points(parts)
        if len(chosen) < 2:
            raise ValueError("no points to measure: the reconstruction shows fewer than two")
        return float((chosen.max(0) - chosen.min(0)).max())


CLASSES = (MVDUST3R_BLENDER_OT_level_ground, MVDUST3R_BLENDER_OT_scale_distance,
           MVDUST3R_BLENDER_OT_scale_camera_height, MVDUST3R_BLENDER_OT_scale_size)

register, unregister = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None
