"""Look through an imported camera: make it the scene camera with its photo's resolution and aspect."""
from __future__ import annotations

from typing import TYPE_CHECKING

import bpy

from .importers.cameras import set_render_camera

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


class MVDUST3R_BLENDER_OT_set_render_camera(bpy.types.Operator):
    """Make this photo's camera the scene camera, with the photo's resolution and pixel aspect"""

    bl_idname = "mvdust3r_blender.set_render_camera"
    bl_label = "Set Render Camera"
    bl_options = {"REGISTER", "UNDO"}

    camera: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Camera", default="", description="Camera object name (empty: the active object)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        obj = bpy.data.objects.get(self.camera) if self.camera else context.active_object
        if obj is None:
            self.report({"ERROR"}, f"no camera {self.camera!r}" if self.camera else "no active object")
            return {"CANCELLED"}
        assert context.scene is not None
        try:
            set_render_camera(context.scene, obj)
        except KeyError as exc:
            self.report({"ERROR"}, str(exc.args[0]))
            return {"CANCELLED"}
        return {"FINISHED"}


def register() -> None:
    bpy.utils.register_class(MVDUST3R_BLENDER_OT_set_render_camera)


def unregister() -> None:
    bpy.utils.unregister_class(MVDUST3R_BLENDER_OT_set_render_camera)
