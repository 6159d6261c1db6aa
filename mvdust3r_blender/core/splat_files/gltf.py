"""glTF (.glb / .gltf) with ``KHR_gaussian_splatting``: the document and its buffers (GLB chunk,
data: URIs or files beside it), typed accessors, and the node transform that places the splats."""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from ..rotations import quaternion_from_matrix, quaternion_multiply
from ..splat_field import SH_C0, SplatField, half_turn_x, sh_count
from .checks import check_memory, unit_quaternions
from .file import SplatFile, fail

_GLTF_EXTENSION = "KHR_gaussian_splatting"
_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _gltf_document(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """The glTF JSON and its buffers' bytes (the GLB's BIN chunk, data: URIs or files beside it)."""
    raw = path.read_bytes()
    binary: bytes | None = None
    if raw[:4] == b"glTF":
        if len(raw) < 20:
            raise fail(path, "is too short for a GLB header (truncated)")
        _, _, total = struct.unpack("<III", raw[:12])
        if total > len(raw):
            raise fail(path, f"is {len(raw):,} bytes where its GLB header says {total:,} (truncated)",
                       "copy or download the file again")
        json_length, json_type = struct.unpack("<II", raw[12:20])
        text = raw[20:20 + json_length]
        rest = 20 + json_length
        if rest + 8 <= len(raw):
            bin_length, _ = struct.unpack("<II", raw[rest:rest + 8])
            binary = raw[rest + 8:rest + 8 + bin_length]
    else:
        text = raw
    try:
        doc: dict[str, Any] = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(path, f"has no readable glTF JSON ({exc})") from exc
    buffers: list[bytes] = []
    for i, buffer in enumerate(doc.get("buffers", [])):
        uri = buffer.get("uri")
        if uri is None:
            if binary is None:
                raise fail(path, f"buffer {i} refers to a GLB binary chunk the file does not have (truncated?)")
            buffers.append(binary)
        elif uri.startswith("data:"):
            buffers.append(base64.b64decode(uri.split(",", 1)[1]))
        else:
            source = path.parent / unquote(uri)
            if not source.is_file():
                raise fail(path, f"buffer {i} is the file '{uri}', which is missing beside it")
            buffers.append(source.read_bytes())
        if len(buffers[-1]) < int(buffer.get("byteLength", 0)):
            raise fail(path, f"buffer {i} holds {len(buffers[-1]):,} of its {buffer.get('byteLength'):,} bytes "
                       "(truncated)", "copy or download the file again")
    return doc, buffers


def _accessor(path: Path, doc: dict[str, Any], buffers: list[bytes], index: int, name: str) -> np.ndarray:
    """float32 [count, width] of accessor `index` (strides and normalised integers handled)."""
    try:
        acc = doc["accessors"][index]
        dtype = np.dtype(_COMPONENTS[acc["componentType"]])
        width = _WIDTHS[acc["type"]]
        count = int(acc["count"])
        if "bufferView" not in acc:                                          # all zeros, as the spec says
            return np.zeros((count, width), dtype=np.float32)
        view = doc["bufferViews"][acc["bufferView"]]
        data = buffers[view["buffer"]]
    except (KeyError, IndexError, TypeError) as exc:
        raise fail(path, f"the accessor of {name} is malformed ({exc!r})") from exc
    start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))
    stride = int(view.get("byteStride", 0)) or dtype.itemsize * width
    end = start + (count - 1) * stride + dtype.itemsize * width if count else start
    if end > len(data) or end > int(view.get("byteOffset", 0)) + int(view["byteLength"]):
        raise fail(path, f"the data of {name} runs past its buffer (truncated?)", "copy or download the file again")
    rows: np.ndarray = np.ndarray((count, width), dtype=dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize))
    values = rows.astype(np.float32)
    if acc.get("normalized") and dtype.kind in "iu":
        values = values / np.float32(np.iinfo(dtype).max)
        if dtype.kind == "i":
            values = np.maximum(values, -1.0)
    return values


def _node_matrices(doc: dict[str, Any]) -> dict[int, np.ndarray]:
    """{mesh index: world matrix of the first node that shows it} over the default scene."""
    nodes = doc.get("nodes", [])
    found: dict[int, np.ndarray] = {}

    def local(node: dict[str, Any]) -> np.ndarray:
        if "matrix" in node:
            return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T
        m = np.eye(4)
        x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
        m[:3, :3] = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                              [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                              [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        m[:3, :3] *= np.array(node.get("scale", [1.0, 1.0, 1.0]))[None, :]
        m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
        return m

    def visit(index: int, parent: np.ndarray, depth: int) -> None:
        if depth > 64 or index >= len(nodes):
            return
        world = parent @ local(nodes[index])
        if "mesh" in nodes[index]:
            found.setdefault(int(nodes[index]["mesh"]), world)
        for child in nodes[index].get("children", []):
            visit(int(child), world, depth + 1)

    scenes = doc.get("scenes", [])
    roots = scenes[doc.get("scene", 0)]["nodes"] if scenes else range(len(nodes))
    for root in roots:
        visit(int(root), np.eye(4), 0)
    return found


def read_gltf(path: Path) -> SplatFile:
    doc, buffers = _gltf_document(path)
    required = set(doc.get("extensionsRequired", [])) - {_GLTF_EXTENSION}
    if required:
        raise fail(path, f"requires the glTF extension{'s' if len(required) > 1 else ''} "
                   f"{', '.join(sorted(required))}, which this add-on does not read",
                   "convert it to plain KHR_gaussian_splatting (e.g. with splat-transform to .ply, then import that)")
    found = [(m, p) for m, mesh in enumerate(doc.get("meshes", [])) for p in mesh.get("primitives", [])
             if _GLTF_EXTENSION in p.get("extensions", {})]
    if not found:
        raise fail(path, f"has no primitive with {_GLTF_EXTENSION}, so it holds no Gaussian splats",
                   "a plain glTF scene imports with File › Import › glTF 2.0")
    mesh_index, prim = found[0]
    attributes: dict[str, int] = prim.get("attributes", {})
    names = {"POSITION": "POSITION", "rotation": f"{_GLTF_EXTENSION}:ROTATION",
             "scale": f"{_GLTF_EXTENSION}:SCALE", "opacity": f"{_GLTF_EXTENSION}:OPACITY"}
    missing = [n for n in names.values() if n not in attributes]
    if missing:
        raise fail(path, f"its splat primitive lacks the attribute{'s' if len(missing) > 1 else ''} "
                   f"{', '.join(missing)}, which {_GLTF_EXTENSION} requires")
    count = int(doc["accessors"][attributes["POSITION"]]["count"])
    degree = 0
    while degree < 3 and f"{_GLTF_EXTENSION}:SH_DEGREE_{degree + 1}_COEF_0" in attributes:
        degree += 1
    check_memory(path, count, degree)

    def read(name: str) -> np.ndarray:
        values = _accessor(path, doc, buffers, attributes[name], name)
        if len(values) != count:
            raise fail(path, f"{name} has {len(values):,} values for {count:,} Gaussians")
        return values

    sh = np.empty((count, sh_count(degree), 3), dtype=np.float32)
    dc = f"{_GLTF_EXTENSION}:SH_DEGREE_0_COEF_0"
    if dc in attributes:
        sh[:, 0] = read(dc)
    elif "COLOR_0" in attributes:
        sh[:, 0] = (read("COLOR_0")[:, :3] - 0.5) / SH_C0
    else:
        raise fail(path, f"its splat primitive has neither {dc} nor COLOR_0, so its Gaussians have no colour")
    k = 1
    for d in range(1, degree + 1):
        for n in range(2 * d + 1):
            name = f"{_GLTF_EXTENSION}:SH_DEGREE_{d}_COEF_{n}"
            if name not in attributes:
                raise fail(path, f"has spherical harmonics of degree {d} without {name}")
            sh[:, k] = read(name)
            k += 1
    xyzw = read(names["rotation"])
    field = SplatField(read("POSITION"), unit_quaternions(path, xyzw[:, [3, 0, 1, 2]]), read(names["scale"]),
                       read(names["opacity"])[:, 0], sh)
    sh_frame = np.eye(3)
    world = _node_matrices(doc).get(mesh_index)
    if world is not None and not np.allclose(world, np.eye(4)):
        linear = world[:3, :3]
        size = abs(float(np.linalg.det(linear))) ** (1.0 / 3.0)
        turn = linear / size if size > 0 else linear
        if size <= 0 or not np.allclose(turn @ turn.T, np.eye(3), atol=1e-4) or np.linalg.det(turn) < 0:
            raise fail(path, "places its splats with a node transform that shears, mirrors or scales unevenly",
                       "apply the transform in the tool that made the file")
        q_turn = quaternion_from_matrix(turn).astype(np.float32)
        field = SplatField((field.position @ linear.T + world[:3, 3]).astype(np.float32),
                           quaternion_multiply(q_turn[None, :], field.rotation).astype(np.float32),
                           (field.scale * size).astype(np.float32), field.opacity, field.sh)
        sh_frame = turn.T                                                    # world directions → the SH's frame
    # the field (and its directions) turn half about x into the OpenCV-like frame; the SH coefficients
    # turn with it (half_turn_x), so the SH frame is conjugated by the same involution
    flip = np.diag([1.0, -1.0, -1.0])
    return SplatFile(path, "gltf", half_turn_x(field), (flip @ sh_frame @ flip).astype(np.float32))
