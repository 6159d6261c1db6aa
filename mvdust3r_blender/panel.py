"""The "MV-DUSt3R" tab of the 3D viewport's sidebar: photos, options, run.

Drawing only reads state (``scene.mvdust3r``, ``window_manager.mvdust3r_run``, the preferences);
every change goes through an operator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bpy

from . import bundles, preferences, result_settings, run, session
from .core.photos import MIN_PHOTOS_PLUS, PHOTO_COUNT
from .importers import render
from .importers.placement import recorded_alignment
from .importers.result import Reconstruction
from .preferences import draw_task
from .session import SetupError

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import RegionTypeItems, SpaceTypeItems

CATEGORY = "MV-DUSt3R"


class MVDUST3R_UL_photos(bpy.types.UIList):
    """The photo list: number and file name, the reference photo marked."""

    def draw_item(self, context: bpy.types.Context, layout: bpy.types.UILayout, data: Any, item: Any,
                  icon: int | None, active_data: Any, active_property: str | None, index: int | None = 0,
                  flt_flag: int | None = 0) -> None:
        number = (index or 0) + 1
        reference = number == data.reference_photo
        layout.label(text=f"{number}. {item.name}", icon="OUTLINER_OB_CAMERA" if reference else "IMAGE_DATA")


class _SidebarPanel:
    bl_space_type: "SpaceTypeItems" = "VIEW_3D"
    bl_region_type: "RegionTypeItems" = "UI"
    bl_category = CATEGORY


class VIEW3D_PT_mvdust3r_photos(_SidebarPanel, bpy.types.Panel):
    """Photos to reconstruct."""

    bl_label = "MV-DUSt3R+ Photos"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None or context.scene is None:
            return
        settings = context.scene.mvdust3r  # type: ignore[attr-defined]
        count = len(settings.photos)
        row = layout.row()
        row.template_list("MVDUST3R_UL_photos", "", settings, "photos", settings, "photo_index", rows=4)
        col = row.column(align=True)
        col.operator("mvdust3r_blender.add_photos", text="", icon="ADD")
        col.operator("mvdust3r_blender.remove_photo", text="", icon="REMOVE")
        col.separator()
        col.operator("mvdust3r_blender.clear_photos", text="", icon="TRASH")
        layout.label(text=f"{count} photo{'s' if count != 1 else ''}" + (f": add {PHOTO_COUNT}" if count < MIN_PHOTOS_PLUS
                                                                           else ""))
        layout.prop(settings, "reference_photo", text="Reference Photo (0 = Auto)")
        layout.prop(settings, "focal_mode")
        if settings.focal_mode == "GIVEN":
            layout.prop(settings, "focal_mm")


class VIEW3D_PT_mvdust3r_options(_SidebarPanel, bpy.types.Panel):
    """What to import and how it is shown."""

    bl_label = "Import Options"
    bl_parent_id = "VIEW3D_PT_mvdust3r_photos"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None or context.scene is None:
            return
        settings = context.scene.mvdust3r  # type: ignore[attr-defined]
        settings.draw_import_options(layout)


class VIEW3D_PT_mvdust3r_run(_SidebarPanel, bpy.types.Panel):
    """Reconstruct, its progress, the last run's result or error."""

    bl_label = "MV-DUSt3R+ Reconstruct"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        state = getattr(context.window_manager, "mvdust3r_run", None)
        missing = _missing_setup()
        if missing is not None:
            box = layout.box()
            draw_task(box, "FAILED", "Set-up needed", missing.message, missing.hint)
            box.operator("preferences.addon_show", text="Open Preferences", icon="PREFERENCES").module = \
                __package__ or ""
        if run.active() is not None and state is not None:
            layout.progress(factor=state.progress, type="BAR", text=f"{state.stage} {state.progress * 100:.0f} %")
            layout.operator("mvdust3r_blender.cancel", text="Cancel", icon="CANCEL")
            return
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = missing is None
        row.operator("mvdust3r_blender.reconstruct", text="Reconstruct", icon="PLAY")
        if session.SESSION.client is not None:  # only a running worker holds a model to unload
            layout.operator("mvdust3r_blender.release", text="Unload Model (Free Memory)", icon="X")
        if state is None or state.state == "IDLE":
            return
        if state.state == "DONE":
            draw_task(layout, "DONE", "Last run", state.message, state.hint)  # the hint: the import's warnings
        elif state.state in ("FAILED", "CANCELLED"):
            draw_task(layout, state.state, "Last run", state.message, state.hint)
        if state.timings:
            layout.label(text=state.timings, icon="TIME")


class VIEW3D_PT_mvdust3r_result(_SidebarPanel, bpy.types.Panel):
    """The active reconstruction: what shows, its cameras, Export…, Save Bundle… and a first F12 that works."""

    bl_label = "MV-DUSt3R+ Result"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None or context.scene is None:
            return
        reconstruction = result_settings.active(context)
        if reconstruction is None:
            layout.label(text="No reconstruction yet: reconstruct photos above or use File › Import", icon="INFO")
            return
        collection = reconstruction.collection
        controls = collection.mvdust3r  # type: ignore[attr-defined]
        layout.label(text=collection.name, icon="OUTLINER_COLLECTION")
        if reconstruction.points is not None:
            col = layout.column(align=True)
            col.prop(controls, "hide_percent")
            col.label(text=f"{reconstruction.shown:,} of {reconstruction.total:,} points shown "
                           f"(confidence ≥ {reconstruction.threshold:.4g})")
            layout.prop(controls, "point_size")
        row = layout.row(align=True)
        if reconstruction.points is not None:
            row.prop(reconstruction.points, "hide_viewport", text="Points", invert_checkbox=True, toggle=True)
        if reconstruction.gaussians is not None:
            row.prop(reconstruction.gaussians, "hide_viewport", text="Splats", invert_checkbox=True, toggle=True)
        if reconstruction.cameras:
            row.prop(controls, "show_cameras", toggle=True)
            row.prop(controls, "show_photos", toggle=True)
        if reconstruction.points is not None and reconstruction.gaussians is not None:
            layout.prop(controls, "renders")
        _draw_cameras(layout, context.scene, reconstruction)
        _draw_render(layout, context.scene, reconstruction)
        row = layout.row(align=True)
        row.operator("mvdust3r_blender.export_result", text="Export…", icon="EXPORT").collection = collection.name
        row.operator("mvdust3r_blender.save_bundle", text="Save Bundle…", icon="FILE_TICK").collection = \
            collection.name
        if not reconstruction.bundle_path:
            layout.label(text="Imported from data: no bundle to export or save", icon="ERROR")
        elif bundles.is_temporary(reconstruction.bundle_path):
            layout.label(text="Unsaved: its bundle goes when Blender quits — Save Bundle… keeps it", icon="ERROR")


def _draw_cameras(layout: bpy.types.UILayout, scene: bpy.types.Scene, reconstruction: Reconstruction) -> None:
    """One row per camera: its photo's number and name, Set Render Camera, Look Through."""
    if not reconstruction.cameras:
        return
    box = layout.box()
    box.label(text=f"Cameras ({len(reconstruction.cameras)}), numbered like the photo list", icon="CAMERA_DATA")
    col = box.column(align=True)
    for camera in reconstruction.cameras:
        row = col.row(align=True)
        current = scene.camera is not None and scene.camera == camera
        row.label(text=f"{int(camera['view']) + 1}. {camera.name}",
                  icon="OUTLINER_OB_CAMERA" if current else "CAMERA_DATA")
        row.operator("mvdust3r_blender.set_render_camera", text="", icon="RESTRICT_RENDER_OFF").camera = camera.name
        row.operator("mvdust3r_blender.look_through", text="", icon="HIDE_OFF").camera = camera.name


def _draw_render(layout: bpy.types.UILayout, scene: bpy.types.Scene, reconstruction: Reconstruction) -> None:
    """What would spoil F12, with its fix, and the splats' render settings."""
    found = render.blockers(scene, reconstruction)
    if found:
        box = layout.box()
        for _, why in found:
            box.label(text=f"{why}: F12 would show it", icon="ERROR")
        box.operator("mvdust3r_blender.hide_blockers", text="Hide from Render", icon="HIDE_ON").collection = \
            reconstruction.collection.name
    layout.operator("mvdust3r_blender.render_settings", icon="SCENE")


class VIEW3D_PT_mvdust3r_placement(_SidebarPanel, bpy.types.Panel):
    """Where the Result panel's reconstruction stands: level it, scale it to what the artist knows."""

    bl_label = "MV-DUSt3R+ Placement"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None or context.scene is None:
            return
        parts = result_settings.active_import(context)
        if parts is None:
            layout.label(text="No reconstruction yet: reconstruct photos above or use File › Import", icon="INFO")
            return
        alignment = recorded_alignment(parts.collection)
        layout.label(text=parts.collection.name, icon="OUTLINER_COLLECTION")
        layout.label(text=alignment.summary())
        layout.label(text=f"scale {alignment.scale:.4g} × the network's units")
        context.scene.mvdust3r.draw_placement(layout)  # type: ignore[attr-defined]


def _missing_setup() -> SetupError | None:
    """What must be set up before a run can start (no runtime, no model), or None."""
    try:
        prefs = preferences.get()
        session.worker_python(prefs)
        session.checkpoint_file(prefs)
    except SetupError as exc:
        return exc
    return None


CLASSES = (MVDUST3R_UL_photos, VIEW3D_PT_mvdust3r_photos, VIEW3D_PT_mvdust3r_options, VIEW3D_PT_mvdust3r_run,
           VIEW3D_PT_mvdust3r_result, VIEW3D_PT_mvdust3r_placement)

register, unregister = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None
