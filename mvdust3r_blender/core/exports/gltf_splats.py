"""glTF 2.0 binary with ``KHR_gaussian_splatting``: the Gaussians as one POINTS primitive whose
attributes a splat renderer reads, and which any other glTF viewer shows as coloured points.

Attributes (one tightly packed buffer view each), as the Khronos extension defines them:

- ``POSITION`` float32 VEC3, with min/max;
- ``COLOR_0`` normalised uint8 VEC4: the fallback point colour — linear RGB (glTF's vertex colours
  are linear; the splats' colour is display sRGB, so it is decoded) and the opacity as alpha;
- ``KHR_gaussian_splatting:ROTATION`` float32 VEC4, unit quaternion (x, y, z, w);
- ``KHR_gaussian_splatting:SCALE`` float32 VEC3, standard deviations, activated (linear, not log:
  the extension's text since February 2026, and what PlayCanvas's SplatTransform writes);
- ``KHR_gaussian_splatting:OPACITY`` float32 SCALAR, post-sigmoid in [0, 1];
- ``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n`` float32 VEC3 (r, g, b): the SH coefficients, degree 0
  always, higher degrees when the field has them.

The primitive's extension object says ``kernel: ellipse``, ``colorSpace: srgb_rec709_display`` (3DGS
colours), ``projection: perspective``, ``sortingMethod: cameraDistance``. The extension is in
``extensionsUsed`` only, so viewers without it still draw the points. Frame: glTF's +Y up, the same
half turn about x of the bundle's OpenCV world as the ``glb`` export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..splat_field import SplatField, half_turn_x
from .glb import pack_glb
from .kept_field import kept_field

EXTENSION = "KHR_gaussian_splatting"
_FLOAT, _UNSIGNED_BYTE, _ARRAY_BUFFER, _MODE_POINTS = 5126, 5121, 34962, 0
_TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}


def _linear(srgb: np.ndarray) -> np.ndarray:
    c = np.clip(srgb, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def encode_gltf_splats(field: SplatField, path: Path) -> Path:
    """Write `field` (already in glTF's frame) to `path` as .glb with ``KHR_gaussian_splatting``."""
    n = len(field)
    colour = np.empty((n, 4), dtype=np.uint8)
    colour[:, :3] = np.clip(np.rint(_linear(field.rgb()) * 255.0), 0, 255)
    colour[:, 3] = np.clip(np.rint(field.opacity * 255.0), 0, 255)
    columns: list[tuple[str, np.ndarray]] = [
        ("POSITION", field.position), ("COLOR_0", colour),
        (f"{EXTENSION}:ROTATION", field.rotation[:, [1, 2, 3, 0]]), (f"{EXTENSION}:SCALE", field.scale),
        (f"{EXTENSION}:OPACITY", field.opacity[:, None])]
    k = 0
    for degree in range(field.sh_degree + 1):
        for coefficient in range(2 * degree + 1):
            columns.append((f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{coefficient}", field.sh[:, k]))
            k += 1
    arrays = [np.ascontiguousarray(a, dtype=np.uint8 if a.dtype == np.uint8 else "<f4") for _, a in columns]
    accessors: list[dict[str, Any]] = []
    views: list[dict[str, Any]] = []
    offset = 0
    for i, ((name, _), a) in enumerate(zip(columns, arrays)):
        accessor: dict[str, Any] = {"bufferView": i, "componentType": _UNSIGNED_BYTE if a.dtype == np.uint8 else _FLOAT,
                                    "count": n, "type": _TYPES[a.shape[1]]}
        if a.dtype == np.uint8:
            accessor["normalized"] = True
        if name == "POSITION":
            lo, hi = (a.min(axis=0), a.max(axis=0)) if n else (np.zeros(3), np.zeros(3))
            accessor["min"], accessor["max"] = lo.tolist(), hi.tolist()
        accessors.append(accessor)
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": a.nbytes, "target": _ARRAY_BUFFER})
        offset += a.nbytes                                                   # every column is 4-byte aligned
    primitive = {"attributes": {name: i for i, (name, _) in enumerate(columns)}, "mode": _MODE_POINTS,
                 "extensions": {EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                                            "projection": "perspective", "sortingMethod": "cameraDistance"}}}
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "MV-DUSt3R+ for Blender"},
        "extensionsUsed": [EXTENSION],
        "scene": 0, "scenes": [{"name": "MV-DUSt3R", "nodes": [0]}],
        "nodes": [{"name": "gaussians", "mesh": 0}],
        "meshes": [{"name": "gaussians", "primitives": [primitive]}],
        "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": offset}],
    }
    return pack_glb(path, doc, arrays, f"{n} Gaussians")


def write_gltf_splats(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """The kept Gaussians (`keep`: bool [N,h,w]) as .glb with ``KHR_gaussian_splatting``, +Y up."""
    return encode_gltf_splats(half_turn_x(kept_field(bundle, keep)), path)
