"""File > Import > MV-DUSt3R Reconstruction (.npz) and > Gaussian Splats (.ply, .spz, .glb, .gltf), and
dropping either onto the 3D viewport.

A thin operator over :func:`.api.import_bundle`: the option mixins give its properties and layout,
errors a user can cause (a bad file, a bad option) are reported and cancel with the scene unchanged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import bpy
from bpy_extras.io_utils import ImportHelper

from .api import import_bundle, import_splats
from .core.bundle import BundleError
from .core.splat_files import SplatFileError
from .import_options import ImportSettings

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


class IMPORT_SCENE_OT_mvdust3r_bundle(bpy.types.Operator, ImportHelper, ImportSettings):  # type: ignore[misc]
    """Import a saved MV-DUSt3R reconstruction bundle (.npz): points, cameras and Gaussians"""

    bl_idname = "import_scene.mvdust3r_bundle"
    bl_label = "Import MV-DUSt3R Reconstruction"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".npz"
    if TYPE_CHECKING:
        filepath: str  # ImportHelper's property (the stubs don't declare it)
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context,  # type: ignore[override]
               event: bpy.types.Event) -> set["OperatorReturnItems"]:
        # A dropped file arrives with filepath set: show the options only (Blender 4.2+), else browse.
        if self.filepath and hasattr(ImportHelper, "invoke_popup"):
            return self.invoke_popup(context)  # type: ignore[func-returns-value, return-value]
        return ImportHelper.invoke(self, context, event)  # type: ignore[func-returns-value, return-value]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        self.draw_import_options(layout)

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        try:
            result = import_bundle(self.filepath, scene=context.scene, **self.import_options())
        except (BundleError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for line in result.report:
            self.report({"WARNING"} if line in result.warnings else {"INFO"}, line)
        state = getattr(context.window_manager, "mvdust3r_run", None)
        if state is not None:  # the Result panel shows the newest import
            state.collection = result.collection.name
        return {"FINISHED"}


class _DropOnViewport:
    """A file handler that takes files dropped onto the 3D viewport."""

    @classmethod
    def poll_drop(cls, context: bpy.types.Context) -> bool:
        return context.area is not None and context.area.type == "VIEW_3D"


class MVDUST3R_FH_bundle(_DropOnViewport, bpy.types.FileHandler):
    """Drop a reconstruction bundle (.npz) onto the 3D viewport to import it."""

    bl_idname = "MVDUST3R_FH_bundle"
    bl_label = "MV-DUSt3R Reconstruction"
    bl_import_operator = "import_scene.mvdust3r_bundle"
    bl_file_extensions = ".npz"


class IMPORT_SCENE_OT_mvdust3r_splats(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import 3D Gaussian splats made by any tool (3DGS .ply, .spz, glTF with KHR_gaussian_splatting) as splats that render on F12"""

    bl_idname = "import_scene.mvdust3r_splats"
    bl_label = "Import Gaussian Splats"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    if TYPE_CHECKING:
        filepath: str
    filter_glob: bpy.props.StringProperty(default="*.ply;*.spz;*.glb;*.gltf", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context,  # type: ignore[override]
               event: bpy.types.Event) -> set["OperatorReturnItems"]:
        if self.filepath:  # dropped: nothing to choose
            return self.execute(context)
        return ImportHelper.invoke(self, context, event)  # type: ignore[func-returns-value, return-value]

    def execute(self, context: bpy.types.Context) -> set["OperatorReturnItems"]:
        try:
            result = import_splats(self.filepath, scene=context.scene)
        except (SplatFileError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for line in result.report:
            self.report({"INFO"}, line)
        return {"FINISHED"}


class MVDUST3R_FH_splats(_DropOnViewport, bpy.types.FileHandler):
    """Drop a Gaussian splat file onto the 3D viewport to import it as splats."""

    bl_idname = "MVDUST3R_FH_splats"
    bl_label = "Gaussian Splats"
    bl_import_operator = "import_scene.mvdust3r_splats"
    bl_file_extensions = ".ply;.spz;.glb;.gltf"


def menu_import(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    if self.layout is not None:
        self.layout.operator(IMPORT_SCENE_OT_mvdust3r_bundle.bl_idname, text="MV-DUSt3R Reconstruction (.npz)")
        self.layout.operator(IMPORT_SCENE_OT_mvdust3r_splats.bl_idname, text="Gaussian Splats (.ply, .spz, .glb)")


_CLASSES = (IMPORT_SCENE_OT_mvdust3r_bundle, MVDUST3R_FH_bundle, IMPORT_SCENE_OT_mvdust3r_splats, MVDUST3R_FH_splats)

_register_classes: Callable[[], None]
_unregister_classes: Callable[[], None]
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(_CLASSES)  # type: ignore[func-returns-value,misc]  # the stubs say None


def register() -> None:
    _register_classes()
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    _unregister_classes()
