"""Moving an existing import as one: level it, scale it (Blender glue for ``core.alignment``).

An import is the collection ``scene.import_reconstruction`` made, marked with its alignment
(:data:`ALIGNMENT_PROPERTY`). :func:`transform_import` applies one similarity to everything in it
at once — point positions and point radius, Gaussian positions, rotations, sizes and pixel
footprints, camera poses (kept rigid, so each photo still lines up), camera drawing and clipping,
image planes — and records it, so the collection always knows its frame relative to the bundle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Optional

import bpy
import numpy as np
from mathutils import Matrix

from ..core.alignment import Alignment, estimate_alignment
from ..core.conventions import OPENCV_TO_BLENDER_CAMERA
from ..core.rotations import quaternion_from_matrix, quaternion_multiply
from . import gaussians, points
from .nodes import get_modifier_input, set_modifier_input

ALIGNMENT_PROPERTY = "mvdust3r_alignment"
"""The collection's custom property: its :class:`Alignment` (``to_meta`` as JSON), bundle world → this import."""
REFERENCE_PROPERTY = "mvdust3r_reference_view"
"""The collection's custom property: the bundle's reference view (the camera that looks along +Y when levelled)."""


@dataclass
class ImportParts:
    """The objects of one import, by role."""

    collection: bpy.types.Collection
    points: list[bpy.types.Object] = field(default_factory=list)
    gaussians: list[bpy.types.Object] = field(default_factory=list)
    cameras: list[bpy.types.Object] = field(default_factory=list)


def record_alignment(collection: bpy.types.Collection, alignment: Alignment, reference_view: int) -> None:
    collection[ALIGNMENT_PROPERTY] = json.dumps(alignment.to_meta())
    collection[REFERENCE_PROPERTY] = int(reference_view)


def recorded_alignment(collection: bpy.types.Collection) -> Alignment:
    return Alignment.from_meta(json.loads(str(collection[ALIGNMENT_PROPERTY])))


def standing(collection: bpy.types.Collection) -> Optional[Alignment]:
    """Where the import in `collection` stands: the alignment it was imported with, as Level & Ground
    and the scale operators left it; None for a collection that holds no import of a bundle."""
    return recorded_alignment(collection) if ALIGNMENT_PROPERTY in collection else None  # type: ignore[operator]


def reference_view(parts: ImportParts) -> int:
    collection = parts.collection
    return int(collection[REFERENCE_PROPERTY]) if REFERENCE_PROPERTY in collection else 0  # type: ignore[operator]


def import_of(obj: Optional[bpy.types.Object]) -> Optional[ImportParts]:
    """The import `obj` belongs to (a camera's image plane counts as its camera), or None."""
    while obj is not None and obj.parent is not None and obj.type != "CAMERA":
        obj = obj.parent
    if obj is None:
        return None
    for collection in obj.users_collection:
        parts = parts_of(collection)
        if parts is not None:
            return parts
    return None


def parts_of(collection: bpy.types.Collection) -> Optional[ImportParts]:
    """The points, Gaussians and cameras of the import `collection` holds, or None if it holds none."""
    if ALIGNMENT_PROPERTY not in collection:  # type: ignore[operator]
        return None
    parts = ImportParts(collection)
    for member in collection.objects:
        if points.MODIFIER in member.modifiers:
            parts.points.append(member)
        elif gaussians.MODIFIER in member.modifiers:
            parts.gaussians.append(member)
        elif member.type == "CAMERA" and "view" in member:  # type: ignore[operator]
            parts.cameras.append(member)
    return parts


def _vectors(data: bpy.types.bpy_prop_collection, name: str, width: int) -> np.ndarray:
    values = np.empty(len(data) * width, dtype=np.float32)
    data.foreach_get(name, values)
    return values.reshape(-1, width)


def _attribute(mesh: bpy.types.Mesh, name: str, field_name: str, width: int) -> tuple[bpy.types.Attribute, np.ndarray]:
    attribute = mesh.attributes[name]
    return attribute, _vectors(getattr(attribute, "data"), field_name, width)


def _move_vertices(obj: bpy.types.Object, delta: np.ndarray) -> np.ndarray:
    """Apply the world similarity `delta` to `obj`'s vertices (in its own frame); the local similarity used."""
    mesh = obj.data
    assert isinstance(mesh, bpy.types.Mesh)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    local = np.linalg.inv(matrix) @ delta @ matrix
    co = _vectors(mesh.vertices, "co", 3).astype(np.float64)
    mesh.vertices.foreach_set("co", (co @ local[:3, :3].T + local[:3, 3]).astype(np.float32).ravel())
    mesh.update()
    return local


def transform_import(parts: ImportParts, delta: np.ndarray, alignment: Optional[Alignment] = None) -> None:
    """Apply the similarity `delta` [4,4] (Blender world → Blender world) to the whole import and record
    the collection's new alignment (`alignment`'s diagnostics when given, else the old ones)."""
    scale = float(np.cbrt(np.linalg.det(delta[:3, :3])))
    for obj in parts.points:
        _move_vertices(obj, delta)
        modifier = obj.modifiers[points.MODIFIER]
        assert isinstance(modifier, bpy.types.NodesModifier)
        set_modifier_input(obj, modifier, points.RADIUS, float(get_modifier_input(modifier, points.RADIUS)) * scale)
    for obj in parts.gaussians:
        local = _move_vertices(obj, delta)
        mesh = obj.data
        assert isinstance(mesh, bpy.types.Mesh)
        q_local = quaternion_from_matrix(local[:3, :3] / scale)
        rot, wxyz = _attribute(mesh, "rot", "value", 4)
        left = quaternion_multiply(q_local[None, :], np.eye(4)).astype(np.float32)
        getattr(rot, "data").foreach_set("value", (wxyz @ left).ravel())
        for name, field_name, width in (("scale", "vector", 3), (gaussians.PIXEL_SIZE_ATTRIBUTE, "value", 1)):
            attribute, values = _attribute(mesh, name, field_name, width)
            getattr(attribute, "data").foreach_set(field_name, (values * scale).ravel())
        mesh.update()
    for camera in parts.cameras:
        matrix: np.ndarray = delta @ np.array(camera.matrix_world, dtype=np.float64)
        matrix[:3, :3] = matrix[:3, :3] / scale
        camera.matrix_world = Matrix(matrix.tolist())
        data = camera.data
        assert isinstance(data, bpy.types.Camera)
        data.display_size *= scale
        data.clip_start *= scale
        data.clip_end *= scale
        for child in camera.children:   # image planes: camera-local corners at a scene-scaled depth
            if isinstance(child.data, bpy.types.Mesh):
                co = _vectors(child.data.vertices, "co", 3)
                child.data.vertices.foreach_set("co", (co * scale).ravel())
                child.data.update()
    old = recorded_alignment(parts.collection)
    new = alignment if alignment is not None else old
    record_alignment(parts.collection, replace(new, matrix=delta @ old.matrix), reference_view(parts))


def cameras_opencv(parts: ImportParts) -> np.ndarray:
    """float64 [N,4,4]: the import's cameras as OpenCV camera-to-world matrices in Blender's world, by view."""
    ordered = sorted(parts.cameras, key=lambda c: int(c["view"]))
    return np.stack([np.array(c.matrix_world, dtype=np.float64) @ OPENCV_TO_BLENDER_CAMERA for c in ordered])


def shown_points(parts: ImportParts, selected_only: bool = False) -> np.ndarray:
    """float64 [M,3]: world positions of the points the import shows (confidence at or above the
    modifier's threshold), or of the selected vertices with `selected_only`."""
    found = []
    for obj in parts.points:
        if obj.mode == "EDIT":
            obj.update_from_editmode()
        mesh = obj.data
        assert isinstance(mesh, bpy.types.Mesh)
        co = _vectors(mesh.vertices, "co", 3).astype(np.float64)
        if selected_only:
            chosen = np.zeros(len(mesh.vertices), dtype=bool)
            mesh.vertices.foreach_get("select", chosen)
        else:
            modifier = obj.modifiers[points.MODIFIER]
            assert isinstance(modifier, bpy.types.NodesModifier)
            _, conf = _attribute(mesh, "confidence", "value", 1)
            chosen = conf[:, 0] >= float(get_modifier_input(modifier, points.THRESHOLD))
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        found.append(co[chosen] @ matrix[:3, :3].T + matrix[:3, 3])
    return np.concatenate(found) if found else np.zeros((0, 3))


def level_and_ground(parts: ImportParts) -> Alignment:
    """Level the import where it stands (``estimate_alignment`` on its cameras and shown points); the
    alignment found, relative to the import's frame before."""
    alignment = estimate_alignment(cameras_opencv(parts), shown_points(parts), reference=reference_view(parts))
    transform_import(parts, alignment.matrix if alignment.method == "level" else np.eye(4), alignment)
    return alignment


def scale_import(parts: ImportParts, factor: float) -> None:
    """Scale the whole import by `factor` about the world origin (the floor stays at z = 0)."""
    transform_import(parts, np.diag([factor, factor, factor, 1.0]))
