"""The extension's Python API: what scripts, other add-ons and the extension's own operators call.

    import bl_ext.user_default.mvdust3r_blender.api as mvd   # (or the repository the extension is in)
    result = mvd.import_bundle("/path/scene.npz", align="level", gaussians=False)
    result.points, result.cameras, result.collection, result.report

    result = mvd.reconstruct("/photos/kitchen")                  # blocks; settings from the preferences
    mvd.export(result, ["ply", "glb"], "/out/kitchen")
    splats = mvd.import_splats("/scans/statue.spz")                # any 3DGS .ply, .spz or KHR glTF
    report = mvd.reconstruct_many(["/photos/a", "/photos/b"], "/out")   # one .blend per scene

Everything here runs on Blender's main thread. docs/scripting.md has worked examples.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import bpy

from .batch import BatchReport, SceneOutcome, reconstruct_many
from .core.bundle import Bundle
from .import_options import ImportOptions
from .importers import scene as scene_import
from .importers.scene import ImportResult
from .importers.splat_file import SplatImport, import_splat_file
from .reconstruction import Result, export, reconstruct, with_preferred_align

__all__ = ["BatchReport", "ImportOptions", "ImportResult", "Result", "SceneOutcome", "SplatImport", "export",
           "import_bundle", "import_splats", "reconstruct", "reconstruct_many"]


def import_bundle(path_or_bundle: Union[str, "os.PathLike[str]", Bundle], *,
                  scene: Optional[bpy.types.Scene] = None, **options: Any) -> ImportResult:
    """Import a reconstruction bundle (a ``.npz`` path or a :class:`~.core.bundle.Bundle`) into a new collection.

    `options` are the fields of :class:`~.import_options.ImportOptions`: ``points``, ``cameras``,
    ``gaussians``, ``background_images``, ``image_planes`` (what to create), ``align`` (``"level"``:
    upright, the floor at z = 0, the origin under the centre — the default; ``"first_camera"``; ``"none"``:
    the network's frame), ``confidence_drop_percent`` / ``min_confidence``, ``point_radius`` /
    ``point_size``, ``opacity_threshold``, ``scale_multiplier``, ``name`` (of the collection).
    `scene` defaults to the context's scene. Existing objects are never modified; if anything fails,
    everything this import created is removed again and the error is raised: ``BundleError`` for a
    bad file (the message names it), ``OptionError`` (a ValueError) for a bad option.
    """
    settings = ImportOptions.from_keywords(**with_preferred_align(options))
    target = scene if scene is not None else bpy.context.scene
    if target is None:
        raise ValueError("no scene to import into: pass scene=")
    return scene_import.import_bundle(path_or_bundle, settings, target)


def import_splats(path: Union[str, "os.PathLike[str]"], *, scene: Optional[bpy.types.Scene] = None,
                  name: Optional[str] = None) -> SplatImport:
    """Import a 3D Gaussian splat file made by any tool — the INRIA 3DGS ``.ply`` (SH up to degree 3),
    Niantic's ``.spz`` (versions 2 and 3) or ``.glb``/``.gltf`` with ``KHR_gaussian_splatting`` — into
    a new collection (named `name`, else after the file) as the add-on's splats: they render on F12
    like a 3DGS rasteriser, with view-dependent colour from the SH evaluated for the render camera.

    `scene` defaults to the context's scene. Returns the collection, the Gaussians object, the count,
    the SH degree and a report. A bad file raises ``SplatFileError`` (a ``UserError``) naming the file
    and the problem, with the scene unchanged.
    """
    target = scene if scene is not None else bpy.context.scene
    if target is None:
        raise ValueError("no scene to import into: pass scene=")
    return import_splat_file(path, target, name)
