"""glTF 2.0 binary (.glb): the kept points as one POINTS primitive and a perspective camera per view.

glTF is Y-up with cameras looking down -Z (+Y up in the image); the bundle is OpenCV (y down,
cameras looking down +Z). :func:`opencv_to_gltf` is the one place that changes axes, for points and
cameras alike. Colours go into COLOR_0 as linear float RGB (glTF defines vertex colours as linear;
the photos are sRGB). glTF cameras have no principal point: an off-centre one is dropped, the field
of view and aspect ratio are kept exactly.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..atomic import atomic_file
from ..bundle import srgb8_to_linear
from .errors import ExportError
from ..rotations import quaternion_from_matrix

_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
"""OpenCV -> glTF: a half turn about x. As a world change it turns y-down/z-forward into y-up; on
the camera side it turns a +Z-looking, y-down camera into a -Z-looking, y-up one."""

_GLB_MAGIC, _GLB_VERSION = 0x46546C67, 2
_CHUNK_JSON, _CHUNK_BIN = 0x4E4F534A, 0x004E4942
_FLOAT, _ARRAY_BUFFER, _MODE_POINTS = 5126, 34962, 0


def opencv_to_gltf(points: np.ndarray, cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points [M,3] float32, camera node matrices [N,4,4] float64) in glTF's frame, from OpenCV
    world `points` [M,3] and OpenCV `cam2world` [N,4,4]. The first view's camera becomes the
    identity (at the origin, looking down -Z) when it is the identity in the bundle."""
    pts = (np.asarray(points, dtype=np.float32) * _FLIP.diagonal()[:3].astype(np.float32))
    return pts, _FLIP @ np.asarray(cam2world, dtype=np.float64) @ _FLIP


def _camera(intrinsics: np.ndarray, photo_size: np.ndarray, znear: float, name: str) -> dict[str, Any]:
    """A glTF perspective camera with the vertical field of view and the aspect ratio of the photo's
    pinhole (W fy / (H fx), which is W/H for square pixels)."""
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    width, height = float(photo_size[0]), float(photo_size[1])
    return {"name": name, "type": "perspective",
            "perspective": {"yfov": 2.0 * float(np.arctan(height / (2.0 * fy))),
                            "aspectRatio": width * fy / (height * fx), "znear": znear}}


def write_glb(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """Write the kept points (`keep`: bool [N,h,w]) and every view's camera to `path` as .glb, atomically."""
    points, cams = opencv_to_gltf(bundle.pts3d[keep], bundle.cam2world)
    colors = srgb8_to_linear(bundle.images[keep])
    lo, hi = (points.min(axis=0), points.max(axis=0)) if len(points) else (np.zeros(3), np.zeros(3))
    corners = np.concatenate([[lo, hi], cams[:, :3, 3]])
    size = float(np.ptp(corners, axis=0).max())
    znear = 1e-3 * size if size > 0 else 1e-3  # 1/1000 of the scene: no clipping, depth precision kept

    names = [Path(p).name for p in bundle.photo_paths]
    quats = quaternion_from_matrix(cams[:, :3, :3])[:, [1, 2, 3, 0]]  # glTF stores x, y, z, w
    nodes: list[dict[str, Any]] = [
        {"name": names[v], "camera": v, "translation": cams[v, :3, 3].tolist(), "rotation": quats[v].tolist()}
        for v in range(bundle.num_views)]
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "MV-DUSt3R+ for Blender"},
        "scene": 0,
        "cameras": [_camera(bundle.intrinsics[v], bundle.photo_size[v], znear, names[v])
                    for v in range(bundle.num_views)],
    }
    arrays: list[np.ndarray] = []
    if len(points):
        nbytes = points.nbytes
        doc["meshes"] = [{"name": "points", "primitives": [
            {"attributes": {"POSITION": 0, "COLOR_0": 1}, "mode": _MODE_POINTS}]}]
        doc["accessors"] = [
            {"bufferView": 0, "componentType": _FLOAT, "count": len(points), "type": "VEC3",
             "min": lo.tolist(), "max": hi.tolist()},
            {"bufferView": 1, "componentType": _FLOAT, "count": len(points), "type": "VEC3"}]
        doc["bufferViews"] = [
            {"buffer": 0, "byteOffset": 0, "byteLength": nbytes, "target": _ARRAY_BUFFER},
            {"buffer": 0, "byteOffset": nbytes, "byteLength": colors.nbytes, "target": _ARRAY_BUFFER}]
        doc["buffers"] = [{"byteLength": nbytes + colors.nbytes}]
        nodes.insert(0, {"name": "points", "mesh": 0})
        arrays = [np.ascontiguousarray(points, "<f4"), np.ascontiguousarray(colors, "<f4")]
    doc["nodes"] = nodes
    doc["scenes"] = [{"name": "MV-DUSt3R", "nodes": list(range(len(nodes)))}]

    return pack_glb(path, doc, arrays, f"{len(points)} points")


def pack_glb(path: Path, doc: dict[str, Any], arrays: list[np.ndarray], what: str) -> Path:
    """Write the glTF JSON `doc` and the binary chunk of `arrays` (each a multiple of 4 bytes, laid
    out as `doc`'s buffer views say) to `path` as .glb, atomically; `what` names the content when it
    is over the format's 4 GiB."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    blob_length = sum(a.nbytes for a in arrays)
    total = 12 + 8 + len(text) + (8 + blob_length if arrays else 0)
    if total >= 1 << 32:
        raise ExportError(f"{path}: {what} make a .glb over the format's 4 GiB limit",
                          "raise the confidence threshold, or export 'ply' instead")
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<III", _GLB_MAGIC, _GLB_VERSION, total))
        f.write(struct.pack("<II", len(text), _CHUNK_JSON) + text)
        if arrays:
            f.write(struct.pack("<II", blob_length, _CHUNK_BIN))
            for a in arrays:
                f.write(np.ascontiguousarray(a).data)
    return path
