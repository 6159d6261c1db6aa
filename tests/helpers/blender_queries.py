"""Reading back what Blender made, for the tests: evaluated geometry, projections, renders.

Imported by the test modules (pytest puts this folder on sys.path); no fixtures, no state.
"""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector


def evaluated_point_count(obj: bpy.types.Object) -> int:
    """Points the object's modifiers output (the point cloud instance in the depsgraph; 4.2 and 5.0)."""
    dg = bpy.context.evaluated_depsgraph_get()
    counts = [len(i.object.data.points) for i in dg.object_instances
              if i.is_instance and i.parent and i.parent.original == obj and i.object.type == "POINTCLOUD"]
    return int(sum(counts))


def evaluated_point_radii(obj: bpy.types.Object) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    for i in dg.object_instances:
        if i.is_instance and i.parent and i.parent.original == obj and i.object.type == "POINTCLOUD":
            cloud = i.object.data
            radii = np.zeros(len(cloud.points), dtype=np.float32)
            cloud.attributes["radius"].data.foreach_get("value", radii)
            return radii
    return np.zeros(0, dtype=np.float32)


def instance_matrices(obj: bpy.types.Object) -> np.ndarray:
    """[M,4,4] world matrices of the mesh instances `obj`'s modifiers make, in depsgraph order."""
    dg = bpy.context.evaluated_depsgraph_get()
    mats = [np.array(i.matrix_world) for i in dg.object_instances
            if i.is_instance and i.parent and i.parent.original == obj and i.object.type == "MESH"]
    return np.array(mats).reshape(-1, 4, 4)


def project(scene: bpy.types.Scene, camera: bpy.types.Object, points: np.ndarray) -> np.ndarray:
    """[M,3] (u, v, depth): Blender's own camera model, u,v in pixels of the scene's render size."""
    bpy.context.view_layer.update()
    width, height = scene.render.resolution_x, scene.render.resolution_y
    out = np.zeros((len(points), 3))
    for n, p in enumerate(points):
        ndc = world_to_camera_view(scene, camera, Vector([float(c) for c in p]))
        out[n] = ndc.x * width, (1.0 - ndc.y) * height, ndc.z
    return out


def render_rgba(scene: bpy.types.Scene, path: Path, samples: int = 16) -> np.ndarray:
    """Render `scene` with Cycles (CPU, Standard view, transparent film) → float [H,W,4] in [0,1], row 0 on top."""
    from PIL import Image

    scene.render.engine = "CYCLES"
    scene.cycles.samples = samples
    scene.cycles.device = "CPU"
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0


def render_linear(scene: bpy.types.Scene, path: Path, samples: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Render `scene` with Cycles (CPU, transparent film, no denoising) to an OpenEXR file and read it back:
    (colour [H,W,3] linear and premultiplied, alpha [H,W]), row 0 on top."""
    scene.render.engine = "CYCLES"
    scene.cycles.samples = samples
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    return render_exr(scene, path)


def render_exr(scene: bpy.types.Scene, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Render `scene` with its engine as set to an OpenEXR file; (colour [H,W,3] linear premultiplied, alpha [H,W])."""
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    try:
        width, height = image.size
        pixels = np.zeros(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    rgba = pixels.reshape(height, width, 4)[::-1]
    return rgba[..., :3].astype(np.float64), rgba[..., 3].astype(np.float64)
