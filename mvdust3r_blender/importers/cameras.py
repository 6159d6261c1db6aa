"""Cameras: one Blender camera per photo, with exact intrinsics, its pose and (optionally) its photo.

Resolution and pixel aspect belong to the scene, not to a camera, so photos of different sizes
cannot all be exact at once: each camera object keeps its photo's size and intrinsics as custom
properties (``W``, ``H``, ``fx``, ``fy``, ``cx``, ``cy``, ``photo``) and :func:`set_render_camera`
applies them to the scene when that camera is made the active one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import bpy
import numpy as np
from mathutils import Matrix

from ..core.conventions import BlenderCamera, blender_camera, image_plane_corners
from ..core.photos import display_name, upright
from .nodes import new_node_material

INTRINSIC_PROPS = ("W", "H", "fx", "fy", "cx", "cy")


def apply_camera(data: bpy.types.Camera, params: BlenderCamera) -> None:
    """Lens, explicit sensor fit and principal-point shift of `params` onto camera data."""
    data.type = "PERSP"
    data.sensor_fit = params.sensor_fit
    data.sensor_width = params.sensor_width
    data.lens = params.lens
    data.shift_x = params.shift_x
    data.shift_y = params.shift_y


def apply_render_settings(scene: bpy.types.Scene, params: BlenderCamera) -> None:
    """The scene's resolution (100 %) and pixel aspect for a camera's photo."""
    render = scene.render
    render.resolution_x, render.resolution_y = params.resolution_x, params.resolution_y
    render.resolution_percentage = 100
    render.pixel_aspect_x, render.pixel_aspect_y = params.pixel_aspect_x, params.pixel_aspect_y


def stored_intrinsics(obj: bpy.types.Object) -> tuple[np.ndarray, int, int]:
    """(K [3,3], W, H) stored on an imported camera object; KeyError names what is missing."""
    missing = [key for key in INTRINSIC_PROPS if key not in obj]  # type: ignore[operator]
    if obj.type != "CAMERA" or missing:
        raise KeyError(f"{obj.name!r} is not a camera imported from a reconstruction "
                       f"(missing properties: {', '.join(missing) or 'it is not a camera'})")
    k = np.array([[obj["fx"], 0.0, obj["cx"]], [0.0, obj["fy"], obj["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
    return k, int(obj["W"]), int(obj["H"])


def set_render_camera(scene: bpy.types.Scene, obj: bpy.types.Object) -> None:
    """Make `obj` the scene camera and give the scene its photo's resolution and pixel aspect."""
    k, width, height = stored_intrinsics(obj)
    params = blender_camera(k, width, height)
    assert isinstance(obj.data, bpy.types.Camera)
    apply_camera(obj.data, params)
    apply_render_settings(scene, params)
    scene.camera = obj


def load_photo(path: str, orientation: int = 1) -> tuple[bpy.types.Image | None, str | None]:
    """(image, None) or (None, why not): a missing or unreadable photo is reported, not fatal. The
    image is shown as the photo is meant to be seen: an upright copy (packed into the .blend) when
    EXIF `orientation` turns or mirrors it, since Blender ignores EXIF orientation."""
    shown = display_name(path)
    try:
        if not Path(path).is_file():
            return None, f"photo not found: {shown}"
    except OSError as exc:  # e.g. a name longer than the file system allows
        return None, f"photo cannot be opened: {shown} ({exc.strerror or exc})"
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except (RuntimeError, UnicodeError) as exc:  # Blender's message may hold the name's undecodable bytes
        return None, f"photo unreadable: {shown} ({display_name(str(exc))})"
    if image.size[0] == 0 or image.size[1] == 0:  # Blender loads lazily: a file that is not an image has no pixels
        bpy.data.images.remove(image)
        return None, f"photo unreadable: {shown} (not an image Blender can read)"
    if orientation != 1:
        image = upright_copy(image, orientation)
    return image, None


def upright_copy(image: bpy.types.Image, orientation: int) -> bpy.types.Image:
    """A packed copy of `image` turned and mirrored as its EXIF `orientation` says (``core.photos.upright``),
    replacing it; the file on disk is untouched."""
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)  # type: ignore[attr-defined]  # the stubs type pixels as a float
    rows = pixels.reshape(height, width, 4)[::-1]                    # Blender's rows run bottom-up
    turned = np.ascontiguousarray(upright(rows, orientation)[::-1])
    copy = bpy.data.images.new(f"{image.name} (upright)", turned.shape[1], turned.shape[0], alpha=True)
    if copy.colorspace_settings is not None and image.colorspace_settings is not None:
        copy.colorspace_settings.name = image.colorspace_settings.name
    copy.pixels.foreach_set(turned.ravel())  # type: ignore[attr-defined]
    copy.pack()
    bpy.data.images.remove(image)
    return copy


def image_plane(name: str, image: bpy.types.Image, corners: np.ndarray, camera: bpy.types.Object,
                collection: bpy.types.Collection) -> bpy.types.Object:
    """A quad showing `image` (emission, unlit), parented to `camera` with `corners` [4,3] in its frame."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(4)
    mesh.vertices.foreach_set("co", corners.ravel())
    mesh.loops.add(4)
    mesh.loops.foreach_set("vertex_index", np.arange(4, dtype=np.int32))
    mesh.polygons.add(1)
    mesh.polygons.foreach_set("loop_start", np.zeros(1, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(1, 4, dtype=np.int32))
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", np.array([0, 0, 1, 0, 1, 1, 0, 1], dtype=np.float32))
    mesh.update(calc_edges=True)
    mesh.validate()
    material, nodes, links = new_node_material(name)
    texture = nodes.new("ShaderNodeTexImage")
    setattr(texture, "image", image)
    texture.location = (-400, 0)
    emission = nodes.new("ShaderNodeEmission")
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    obj.parent = camera
    obj.matrix_parent_inverse = Matrix.Identity(4)
    obj.hide_render = True  # a reference, not part of the reconstruction's renders
    return obj


def create_cameras(intrinsics: np.ndarray, photo_size: np.ndarray, matrix_world: np.ndarray,
                   photo_paths: list[str], collection: bpy.types.Collection, scene_scale: float,
                   background_images: bool = True, image_planes: bool = False,
                   orientations: Optional[list[int]] = None) -> tuple[list[bpy.types.Object], list[str]]:
    """One camera object per view in `collection`; (cameras, report lines).

    intrinsics [N,3,3] in photo pixels, photo_size [N,2] (W,H), matrix_world [N,4,4] Blender camera
    matrices (see conventions.camera_matrix_world); `scene_scale` (a typical camera-to-point
    distance) sizes the camera drawing, clipping range and image-plane distance. `orientations`: each
    photo's EXIF orientation (the bundle's ``meta.photo_orientation``; None for bundles without it).
    """
    cameras: list[bpy.types.Object] = []
    report: list[str] = []
    missing = 0
    for k, path in enumerate(photo_paths):
        width, height = int(photo_size[k, 0]), int(photo_size[k, 1])
        name = display_name(Path(path).stem) or f"View {k}"
        data = bpy.data.cameras.new(name)
        apply_camera(data, blender_camera(intrinsics[k], width, height))
        data.display_size = 0.1 * scene_scale
        data.clip_start = 0.01 * scene_scale
        data.clip_end = 100.0 * scene_scale
        obj = bpy.data.objects.new(name, data)
        collection.objects.link(obj)
        obj.matrix_world = Matrix(matrix_world[k].tolist())
        for key, value in zip(INTRINSIC_PROPS, (width, height, *(float(v) for v in (
                intrinsics[k, 0, 0], intrinsics[k, 1, 1], intrinsics[k, 0, 2], intrinsics[k, 1, 2])))):
            obj[key] = value
        obj["photo"] = path
        obj["view"] = k
        cameras.append(obj)
        if not (background_images or image_planes):
            continue
        image, problem = load_photo(path, orientations[k] if orientations is not None else 1)
        if image is None:
            missing += 1
            report.append(f"{problem}; camera {obj.name!r} has no background image")
            continue
        if orientations is None and tuple(image.size) == (height, width) != (width, height):
            report.append(f"photo {display_name(path)} is stored sideways and this bundle does not record its EXIF "
                          f"orientation, so it shows turned; reconstruct it again to show it upright")
        if background_images:
            background = data.background_images.new()
            background.image = image
            background.frame_method = "STRETCH"
            background.alpha = 0.5
            data.show_background_images = True
        if image_planes:
            corners = image_plane_corners(intrinsics[k], width, height, 0.15 * scene_scale)
            image_plane(f"{name} Photo", image, corners, obj, collection)
    if missing:
        report.append(f"{missing} of {len(photo_paths)} photos could not be loaded; their cameras are still exact")
    return cameras, report


def camera_focal_px(scene: bpy.types.Scene) -> float | None:
    """`scene`'s camera's focal length in render pixels along x (Blender's camera model: sensor fit,
    resolution percentage, pixel aspect), or None without a perspective scene camera."""
    camera = scene.camera
    data = camera.data if camera is not None else None
    if not isinstance(data, bpy.types.Camera) or data.type != "PERSP":
        return None
    render = scene.render
    scale = render.resolution_percentage / 100.0
    width, height = render.resolution_x * scale, render.resolution_y * scale
    aspect_x, aspect_y = render.pixel_aspect_x, render.pixel_aspect_y
    horizontal = data.sensor_fit == "HORIZONTAL" or (data.sensor_fit == "AUTO" and width * aspect_x >= height * aspect_y)
    if horizontal:
        return float(data.lens / data.sensor_width * width)
    sensor = data.sensor_height if data.sensor_fit == "VERTICAL" else data.sensor_width  # AUTO: the width
    return float(data.lens / sensor * height * aspect_y / aspect_x)
