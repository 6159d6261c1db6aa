"""A splat file made by another tool (3DGS PLY, SPZ, KHR_gaussian_splatting glTF) → a new collection
holding one Gaussians object, the same splats the reconstruction import makes (same material, the
same low-pass kept by the same handlers), rolled back whole on failure.

View-dependent colour: a file's SH coefficients of degree ≥ 1 are kept as point attributes
``sh_0`` … ``sh_15`` (FLOAT_VECTOR, r g b), with the object properties ``mvdust3r_sh_degree`` and
``mvdust3r_sh_frame`` (the rotation from the object's local axes to the axes the SH were fitted in).
The viewport shows the degree-0 colour; before every render :func:`sync_view_colours` evaluates the
SH for the render camera (3DGS's direction: from the camera to each Gaussian, in the object's own
space, so moving the object or the camera both count) and writes ``Col``; after the render (or its
cancellation) :func:`restore_base_colours` puts the degree-0 colour back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union, cast

import bpy
import numpy as np

from ..core.conventions import transform_points, transform_rotations, world_axes
from ..core.photos import display_name
from ..core.splat_field import SplatField, sh_count, view_colours
from ..core.splat_files import SplatFile, read_splat_file
from .gaussians import ALPHA_MIN, create_gaussians
from .render import prepare_render
from .points import COLOR_ATTRIBUTE
from .scene import rollback_on_error

SH_DEGREE_PROPERTY = "mvdust3r_sh_degree"
SH_FRAME_PROPERTY = "mvdust3r_sh_frame"
SCALE_MULTIPLIER = 3.0          # 3σ, the Khronos ellipse kernel's and the INRIA rasteriser's cut-off
FALLBACK_FOCAL_PX = 1000.0      # Focal Length (px) until the scene has a camera (the low-pass needs one)


@dataclass
class SplatImport:
    """What one splat-file import created, and what it says about it."""

    collection: bpy.types.Collection
    gaussians: bpy.types.Object
    path: str
    count: int
    sh_degree: int
    report: list[str] = field(default_factory=list)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """float32: display sRGB in [0, 1] (clipped) → linear, the colour attribute's space."""
    c = np.clip(srgb, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def sh_attribute(k: int) -> str:
    return f"sh_{k}"


def import_splat_file(source: Union[str, "os.PathLike[str]", SplatFile], scene: bpy.types.Scene,
                      name: Optional[str] = None) -> SplatImport:
    """Read `source` (a path, or a file already read) and import it into `scene` as a new collection
    of splats. A bad file raises :class:`~..core.splat_files.SplatFileError` before anything is made."""
    splat_file = source if isinstance(source, SplatFile) else read_splat_file(source)
    f = splat_file.field
    name = name or display_name(splat_file.path.stem) or "Gaussian Splats"
    to_blender = world_axes("Z_UP")[:3, :3]
    with rollback_on_error():
        collection = bpy.data.collections.new(name)
        scene.collection.children.link(collection)
        obj = create_gaussians(
            f"{name} Gaussians", transform_points(f.position, "Z_UP"), transform_rotations(f.rotation, "Z_UP"),
            f.scale, f.opacity, srgb_to_linear(f.rgb()), np.zeros(len(f), dtype=np.float32), FALLBACK_FOCAL_PX,
            ALPHA_MIN, SCALE_MULTIPLIER, collection, scene)
        if f.sh_degree > 0:
            mesh = obj.data
            assert isinstance(mesh, bpy.types.Mesh)
            for k in range(sh_count(f.sh_degree)):
                attribute = mesh.attributes.new(sh_attribute(k), "FLOAT_VECTOR", "POINT")
                getattr(attribute, "data").foreach_set("vector", np.ascontiguousarray(f.sh[:, k]).ravel())
            obj[SH_DEGREE_PROPERTY] = f.sh_degree
            # Blender local directions → the file's frame (turned back from Z-up) → the SH's frame
            obj[SH_FRAME_PROPERTY] = (splat_file.sh_frame.astype(np.float64) @ to_blender.T).ravel().tolist()
        result = SplatImport(collection, obj, str(splat_file.path), len(f), f.sh_degree)
        result.report.append(f"{len(f):,} Gaussians from {splat_file.path.name} ({splat_file.format.upper()}, "
                             f"SH degree {f.sh_degree}, {splat_file.field.nbytes / 2**20:.0f} MiB decoded)")
        result.report.extend(prepare_render(scene))  # last: nothing after it can fail
    return result


def _sh_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    # ID properties: the stubs type get() as returning nothing
    return [obj for obj in scene.objects
            if cast(Any, obj).get(SH_DEGREE_PROPERTY, 0) and isinstance(obj.data, bpy.types.Mesh)]


def _read_field(obj: bpy.types.Object) -> SplatField:
    """The object's points and SH coefficients (local coordinates) as a field; rotations, scales and
    opacities are not needed for colour and are zeros."""
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    n = len(mesh.vertices)
    position = np.empty(n * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", position)
    degree = int(obj[SH_DEGREE_PROPERTY])
    sh = np.empty((n, sh_count(degree), 3), dtype=np.float32)
    values = np.empty(n * 3, dtype=np.float32)
    for k in range(sh_count(degree)):
        getattr(mesh.attributes[sh_attribute(k)], "data").foreach_get("vector", values)
        sh[:, k] = values.reshape(n, 3)
    zero = np.float32(0.0)                       # stand-ins without memory: colour needs none of these
    return SplatField(position.reshape(n, 3), np.broadcast_to(zero, (n, 4)), np.broadcast_to(zero, (n, 3)),
                      np.broadcast_to(zero, (n,)), sh)


def _write_colours(obj: bpy.types.Object, linear: np.ndarray) -> None:
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    rgba = np.ones((len(linear), 4), dtype=np.float32)
    rgba[:, :3] = linear
    getattr(mesh.color_attributes[COLOR_ATTRIBUTE], "data").foreach_set("color", rgba.ravel())
    mesh.update()


def sync_view_colours(scene: bpy.types.Scene) -> None:
    """Colour each SH-carrying splat object as the scene camera sees it (before a render)."""
    camera = scene.camera
    if camera is None:
        return
    for obj in _sh_objects(scene):
        f = _read_field(obj)
        eye = np.array(obj.matrix_world.inverted() @ camera.matrix_world.translation, dtype=np.float32)
        frame = np.array(obj[SH_FRAME_PROPERTY], dtype=np.float32).reshape(3, 3)
        # the SH were fitted in `frame`'s axes: evaluate with positions and eye turned into them
        turned = SplatField(f.position @ frame.T, f.rotation, f.scale, f.opacity, f.sh)
        _write_colours(obj, srgb_to_linear(view_colours(turned, frame @ eye)))


def restore_base_colours(scene: bpy.types.Scene) -> None:
    """Put the view-independent (degree-0) colour back on SH-carrying splats (after a render)."""
    for obj in _sh_objects(scene):
        _write_colours(obj, srgb_to_linear(_read_field(obj).rgb()))

