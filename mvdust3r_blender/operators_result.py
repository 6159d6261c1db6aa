"""Operators of the Result panel and the context menus: look through a camera, Export…, Save
Bundle…, hide what blocks the render, and the render settings measured for splats.

Each names its reconstruction by collection (empty: the active one, :func:`.result_settings.active`)
and its camera by object name, so a button, a menu entry and a script all do the same thing.
Errors a user can cause are reported and change nothing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import bpy

from . import bundles
from .core.bundle import BundleError, read_bundle
from .core.errors import UserError
from .core.exports import FORMATS, GAUSSIAN_FORMATS, export
from .importers import render
from .importers import result as imported
from .importers.cameras import set_render_camera
from .importers.placement import standing
from .importers.result import Reconstruction
from .result_settings import active

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

_FORMAT_WORDS = {
    "ply": ("Points (.ply)", "The shown points with colour and confidence: points.ply"),
    "gaussians": ("Gaussians (.ply)", "3D Gaussian Splatting PLY (INRIA layout) for splat viewers: gaussians.ply"),
    "splat": ("Web Splat (.splat)", "The Gaussians as a compact .splat for web viewers: scene.splat"),
    "colmap": ("COLMAP", "Cameras, points and photos as a COLMAP text model: colmap/"),
    "glb": ("glTF (.glb)", "Points and one camera per photo as glTF 2.0 binary: scene.glb"),
}
# Every format the exporters write (core.exports.FORMATS): one added there appears here, described by its name.
FORMAT_ITEMS = [(name, *_FORMAT_WORDS.get(name, (name, f"The {name} export"))) for name in FORMATS]


def _target(context: bpy.types.Context, name: str) -> Optional[Reconstruction]:
    if name:
        collection = bpy.data.collections.get(name)
        return Reconstruction.of(collection) if collection is not None else None
    return active(context)


def _missing(operator: bpy.types.Operator, name: str) -> set["OperatorReturnItems"]:
    operator.report({"ERROR"}, f"No reconstruction '{name}'" if name else
                    "No reconstruction: reconstruct some photos or import a bundle first")
    return {"CANCELLED"}


_COLLECTION_DOC = "Collection of the reconstruction (empty: the active one)"


class MVDUST3R_BLENDER_OT_look_through(bpy.types.Operator):
    """Make this photo's camera the render camera (with its photo's resolution) and look through it in the viewport"""

    bl_idname = "mvdust3r_blender.look_through"
    bl_label = "Look Through"
    bl_options = {"REGISTER", "UNDO"}

    camera: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Camera", default="", description="Camera object name (empty: the active object)")

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        obj = bpy.data.objects.get(self.camera) if self.camera else context.active_object
        if obj is None or context.scene is None:
            self.report({"ERROR"}, f"No camera '{self.camera}'" if self.camera else "No active camera")
            return {"CANCELLED"}
        try:
            set_render_camera(context.scene, obj)
        except KeyError as exc:
            self.report({"ERROR"}, str(exc.args[0]))
            return {"CANCELLED"}
        screen = context.screen
        for area in screen.areas if screen is not None else ():
            space = area.spaces.active if area.type == "VIEW_3D" else None
            region = getattr(space, "region_3d", None)
            if region is not None:
                region.view_perspective = "CAMERA"
                area.tag_redraw()
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_export_result(bpy.types.Operator):
    """Write the reconstruction's shown points (the current cut), cameras and Gaussians in the formats
    chosen, into a folder, placed as the import stands in the scene (levelled, scaled)"""

    bl_idname = "mvdust3r_blender.export_result"
    bl_label = "Export Reconstruction"
    bl_options = {"REGISTER"}

    collection: bpy.props.StringProperty(name="Collection", description=_COLLECTION_DOC)  # type: ignore[valid-type]
    directory: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Folder", subtype="DIR_PATH", description="The folder the files are written into")
    formats: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Formats", items=FORMAT_ITEMS, options={"ENUM_FLAG"}, default={"ply", "glb"},
        description="The files to write (each replaces one of its name in the folder)")
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set["OperatorReturnItems"]:
        reconstruction = _target(context, self.collection)
        if reconstruction is None:
            return _missing(self, self.collection)
        self.collection = reconstruction.collection.name
        if reconstruction.gaussians is not None:
            self.formats = set(self.formats) | set(GAUSSIAN_FORMATS)
        assert context.window_manager is not None
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        layout.label(text="Formats")
        col = layout.column(align=True)
        for name, label, _ in FORMAT_ITEMS:
            col.prop_enum(self, "formats", name, text=label)
        reconstruction = _target(context, self.collection)
        if reconstruction is not None:
            layout.label(text=f"The shown {reconstruction.shown:,} points "
                              f"(least confident {reconstruction.hide_percent:.1f} % left out)")

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        reconstruction = _target(context, self.collection)
        if reconstruction is None:
            return _missing(self, self.collection)
        if not self.directory:
            self.report({"ERROR"}, "No folder chosen: pick the folder to write into")
            return {"CANCELLED"}
        try:
            bundle = read_bundle(_bundle_of(reconstruction))
            written = export(bundle, sorted(self.formats, key=FORMATS.index), bpy.path.abspath(self.directory),
                             cut=reconstruction.cut, alignment=standing(reconstruction.collection))
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {', '.join(Path(p).name for p in written.values())} "
                              f"to {bpy.path.abspath(self.directory)}")
        return {"FINISHED"}


def _bundle_of(reconstruction: Reconstruction) -> str:
    """The reconstruction's bundle file; BundleError saying why there is none."""
    path = reconstruction.bundle_path
    if not path:
        raise BundleError(f"'{reconstruction.collection.name}' was imported from data, not a bundle file",
                          "export it from the script that made it (api.export)")
    if not os.path.isfile(path):
        raise BundleError(f"the bundle of '{reconstruction.collection.name}' is gone: {path}",
                          "reconstruct again (bundles in Blender's temporary folder go when it quits: "
                          "use Save Bundle… or choose Keep Results In in the preferences)")
    return path


class MVDUST3R_BLENDER_OT_save_bundle(bpy.types.Operator):
    """Save the reconstruction's bundle (.npz: points, cameras, Gaussians), for File › Import later"""

    bl_idname = "mvdust3r_blender.save_bundle"
    bl_label = "Save Bundle"
    bl_options = {"REGISTER"}

    collection: bpy.props.StringProperty(name="Collection", description=_COLLECTION_DOC)  # type: ignore[valid-type]
    filepath: bpy.props.StringProperty(subtype="FILE_PATH", name="File")  # type: ignore[valid-type]
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set["OperatorReturnItems"]:
        reconstruction = _target(context, self.collection)
        if reconstruction is None:
            return _missing(self, self.collection)
        self.collection = reconstruction.collection.name
        folder = Path(bpy.data.filepath).parent if bpy.data.filepath else Path.home()
        self.filepath = str(folder / f"{bpy.path.clean_name(reconstruction.collection.name)}.npz")
        assert context.window_manager is not None
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        reconstruction = _target(context, self.collection)
        if reconstruction is None:
            return _missing(self, self.collection)
        target = Path(bpy.path.abspath(self.filepath))
        if target.suffix.lower() != ".npz":
            target = target.with_name(target.name + ".npz")
        try:
            source = Path(_bundle_of(reconstruction))
            if target.resolve() != source.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.part")
                shutil.copyfile(source, partial)
                os.replace(partial, target)
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except OSError as exc:
            self.report({"ERROR"}, f"Could not write {target}: {exc.strerror or exc}")
            return {"CANCELLED"}
        reconstruction.collection[imported.BUNDLE] = str(target)  # it is the one to export from now
        self.report({"INFO"}, f"Saved {target} (File › Import › MV-DUSt3R Reconstruction opens it)")
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_hide_blockers(bpy.types.Operator):
    """Hide from render (and the viewport) the objects that enclose the cameras or the reconstruction,
    so that F12 shows the reconstruction; nothing is deleted"""

    bl_idname = "mvdust3r_blender.hide_blockers"
    bl_label = "Hide from Render"
    bl_options = {"REGISTER", "UNDO"}

    collection: bpy.props.StringProperty(name="Collection", description=_COLLECTION_DOC)  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        reconstruction = _target(context, self.collection)
        if reconstruction is None or context.scene is None:
            return _missing(self, self.collection)
        found = [obj for obj, _ in render.blockers(context.scene, reconstruction)]
        if not found:
            self.report({"INFO"}, "Nothing hides the reconstruction")
            return {"CANCELLED"}
        render.hide_from_render(found, context.view_layer)
        self.report({"INFO"}, f"Hidden from render: {', '.join(o.name for o in found)} (the Outliner shows "
                              "them back)")
        return {"FINISHED"}


class MVDUST3R_BLENDER_OT_render_settings(bpy.types.Operator):
    """Cycles with the settings measured for splats: 8 samples, no adaptive sampling, no denoiser,
    enough transparent light paths (as good as Blender's defaults in a tenth of the time)"""

    bl_idname = "mvdust3r_blender.render_settings"
    bl_label = "Use Splat Render Settings"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        if context.scene is None:
            return {"CANCELLED"}
        lines = render.apply_splat_settings(context.scene)
        if not lines:
            self.report({"INFO"}, "The render settings were already the splats' (nothing changed)")
        for line in lines:
            self.report({"INFO"}, line)
        return {"FINISHED"}


def draw_camera_menu(self: Any, context: bpy.types.Context) -> None:
    """Set Render Camera and Look Through for a reconstructed camera (Object and Outliner menus)."""
    obj = context.active_object
    if self.layout is None or obj is None or obj.type != "CAMERA" or not imported.has(obj, "view"):
        return
    self.layout.separator()
    self.layout.operator("mvdust3r_blender.set_render_camera", icon="RESTRICT_RENDER_OFF").camera = obj.name
    self.layout.operator("mvdust3r_blender.look_through", icon="HIDE_OFF").camera = obj.name


def draw_collection_menu(self: Any, context: bpy.types.Context) -> None:
    """Export… and Save Bundle… for a reconstruction's collection (the Outliner's collection menu)."""
    collection = getattr(context, "collection", None)
    if self.layout is None or collection is None or Reconstruction.of(collection) is None:
        return
    self.layout.separator()
    self.layout.operator("mvdust3r_blender.export_result", text="Export Reconstruction…",
                         icon="EXPORT").collection = collection.name
    self.layout.operator("mvdust3r_blender.save_bundle", text="Save Bundle…", icon="FILE_TICK").collection = \
        collection.name


CLASSES = (MVDUST3R_BLENDER_OT_look_through, MVDUST3R_BLENDER_OT_export_result, MVDUST3R_BLENDER_OT_save_bundle,
           MVDUST3R_BLENDER_OT_hide_blockers, MVDUST3R_BLENDER_OT_render_settings)
CAMERA_MENUS = ("VIEW3D_MT_object", "VIEW3D_MT_object_context_menu", "OUTLINER_MT_object")
COLLECTION_MENUS = ("OUTLINER_MT_collection",)


def _menus() -> list[tuple[Any, Any]]:
    return [(getattr(bpy.types, name), draw_camera_menu) for name in CAMERA_MENUS if hasattr(bpy.types, name)] + \
        [(getattr(bpy.types, name), draw_collection_menu) for name in COLLECTION_MENUS if hasattr(bpy.types, name)]

_register_classes: Callable[[], None]
_unregister_classes: Callable[[], None]
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None


def register() -> None:
    _register_classes()
    for menu, entry in _menus():
        menu.append(entry)


def unregister() -> None:
    for menu, entry in _menus():
        menu.remove(entry)
    _unregister_classes()
