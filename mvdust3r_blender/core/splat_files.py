"""Reading 3D Gaussian splat files other tools make (numpy and the standard library, no bpy): the
INRIA 3DGS PLY with spherical harmonics up to degree 3, Niantic's SPZ (versions 2 and 3), and glTF
(.glb / .gltf) with ``KHR_gaussian_splatting``.

Each reader checks what it can before it allocates (the header's count against the file's length
and against the memory this machine has free), decodes with whole-array numpy (no per-Gaussian
Python) and returns a :class:`SplatFile`: a :class:`~.splat_field.SplatField` in the OpenCV-like
frame the bundle uses (x right, y down, z forward: the INRIA PLY's own; SPZ's right-up-back and
glTF's +Y up are turned half about x), and the rotation that takes its directions into the frame its
SH coefficients were fitted in (identity but for glTF node rotations). Anything wrong raises
:class:`SplatFileError` naming the file and the problem.
"""
from __future__ import annotations

import base64
import gzip
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from .errors import UserError
from .rotations import quaternion_from_matrix, quaternion_multiply
from .splat_field import SH_C0, SplatField, half_turn_x, sh_count, sh_degree_of

EXTENSIONS = (".ply", ".spz", ".glb", ".gltf")
"""The file name endings :func:`read_splat_file` reads."""

BLENDER_BYTES_PER_GAUSSIAN = 320
"""About what one Gaussian costs in Blender besides its decoded arrays: the points' attributes
(≈ 70 bytes), the evaluated splat instances and Cycles' copy of them at render. An estimate, kept on
the safe side, for refusing a file before Blender runs out of memory."""


class SplatFileError(UserError):
    """A splat file cannot be imported; the message names the file and what is wrong with it."""

    code = "splat_file"


@dataclass(frozen=True)
class SplatFile:
    """What a splat file holds, ready to become splats."""

    path: Path
    format: str                     # "ply", "spz" or "gltf"
    field: SplatField               # OpenCV-like frame (see the module docstring)
    sh_frame: np.ndarray = dataclass_field(default_factory=lambda: np.eye(3, dtype=np.float32))
    """float32 [3,3]: field-frame directions → the SH coefficients' frame."""


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux ``MemAvailable``, else the free physical
    pages; Windows through ``GlobalMemoryStatusEx``), or None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if os.name == "nt":
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total", ctypes.c_ulonglong),
                        ("available", ctypes.c_ulonglong), ("page_total", ctypes.c_ulonglong),
                        ("page_free", ctypes.c_ulonglong), ("virtual_total", ctypes.c_ulonglong),
                        ("virtual_free", ctypes.c_ulonglong), ("extended", ctypes.c_ulonglong)]
        status = _Status()
        status.length = ctypes.sizeof(_Status)
        if getattr(ctypes, "windll").kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.available)
        return None
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_needed(count: int, sh_degree: int) -> int:
    """Bytes an import of `count` Gaussians of `sh_degree` takes: the decoded field plus Blender's share."""
    field_bytes = 4 * (3 + 4 + 3 + 1 + 3 * sh_count(sh_degree))
    return count * (field_bytes + BLENDER_BYTES_PER_GAUSSIAN + 12 * (sh_count(sh_degree) - 1))


def _check_memory(path: Path, count: int, sh_degree: int) -> None:
    need, free = memory_needed(count, sh_degree), available_memory()
    if free is not None and need > free:
        raise SplatFileError(f"{path}: {count:,} Gaussians (SH degree {sh_degree}) need about {need / 2**30:.1f} GiB "
                             f"to import, and this machine has {free / 2**30:.1f} GiB free",
                             "split or decimate the splats first (e.g. splat-transform's --decimate), or free memory")


def _fail(path: Path, problem: str, hint: str = "") -> SplatFileError:
    return SplatFileError(f"{path}: {problem}", hint)


def read_splat_file(path: str | os.PathLike[str]) -> SplatFile:
    """Read the splat file at `path` (by its ending: .ply, .spz, .glb or .gltf)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise _fail(path, f"is not a splat file this add-on reads (a '{suffix}' file)",
                    f"choose a {', '.join(EXTENSIONS)} file")
    if not path.is_file():
        raise _fail(path, "does not exist" if not path.exists() else "is not a file", "choose an existing file")
    try:
        if suffix == ".ply":
            result = _read_ply(path)
        elif suffix == ".spz":
            result = _read_spz(path)
        else:
            result = _read_gltf(path)
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from exc
    _check_values(path, result.field)
    return result


def _check_values(path: Path, field: SplatField) -> None:
    """Non-finite numbers make no Gaussian: say which attribute holds them and how many."""
    for name, values in (("positions", field.position), ("rotations", field.rotation), ("scales", field.scale),
                         ("opacities", field.opacity), ("colours (SH coefficients)", field.sh)):
        bad = ~np.isfinite(values).reshape(len(field), -1).all(axis=1)
        if bad.any():
            raise _fail(path, f"{int(bad.sum()):,} of its {len(field):,} Gaussians have non-finite {name} (NaN or "
                        f"infinity), the first at index {int(np.argmax(bad))}",
                        "remove them in the tool that made the file (e.g. splat-transform's --filter-nan)")
    if len(field) and (field.scale <= 0).any():
        raise _fail(path, "has Gaussians with a scale of zero or below", "re-export the file from its source")


def _unit_quaternions(path: Path, wxyz: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(wxyz, axis=1, keepdims=True)
    if len(wxyz) and not (norm > 0).all():
        raise _fail(path, f"{int((norm[:, 0] <= 0).sum()):,} Gaussians have a zero rotation quaternion",
                    "remove them in the tool that made the file (e.g. splat-transform's --filter-nan)")
    return (wxyz / np.where(norm > 0, norm, 1)).astype(np.float32)


# -- PLY ---------------------------------------------------------------------------------------------

_PLY_DTYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
               "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
               "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                 "rot_0", "rot_1", "rot_2", "rot_3")
_MAX_HEADER = 1 << 16


def _ply_header(path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """(format, [(element, count, [(property, numpy type)])], header length) of a PLY file."""
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    if not head.startswith(b"ply"):
        raise _fail(path, "is not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise _fail(path, "has no complete PLY header (no 'end_header' in its first 64 KiB: truncated?)")
    length = head.find(b"\n", end) + 1
    if length == 0:
        raise _fail(path, "ends inside its PLY header (truncated)")
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for raw in head[:end].decode("ascii", "replace").splitlines():
        words = raw.split()
        if not words:
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            try:
                elements.append((words[1], int(words[2]), []))
            except ValueError:
                raise _fail(path, f"has a malformed PLY element line '{raw.strip()}'") from None
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif len(words) == 3 and words[1] in _PLY_DTYPES:
                elements[-1][2].append((words[2], _PLY_DTYPES[words[1]]))
            else:
                raise _fail(path, f"has a PLY property of unknown type: '{raw.strip()}'")
    return fmt, elements, length


def _read_ply(path: Path) -> SplatFile:
    fmt, elements, header_length = _ply_header(path)
    names = [e[0] for e in elements]
    if "chunk" in names:
        raise _fail(path, "is a compressed splat PLY (PlayCanvas's chunked layout), not the 3DGS PLY",
                    "convert it first: splat-transform file.compressed.ply file.ply")
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise _fail(path, f"is a PLY in '{fmt or 'no'}' format; 3D Gaussian splat PLYs are binary",
                    "convert it to binary little-endian (3DGS trainers and splat-transform write that)")
    if "vertex" not in names:
        raise _fail(path, "has no 'vertex' element, so it holds no Gaussians")
    before = elements[:names.index("vertex")]
    _, count, props = elements[names.index("vertex")]
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = header_length
    for name, n, p in before:
        if any(t == "list" for _, t in p):
            raise _fail(path, f"has a list property in the '{name}' element before the Gaussians")
        offset += n * np.dtype([(q, order + t) for q, t in p]).itemsize
    present = {q for q, _ in props}
    missing = [q for q in _PLY_REQUIRED if q not in present]
    if missing:
        raise _fail(path, f"is not a 3D Gaussian splat PLY: its vertices lack {', '.join(missing)}",
                    "a plain point cloud or mesh imports with File › Import › Stanford PLY")
    if any(t == "list" for _, t in props):
        raise _fail(path, "has list properties on its vertices, which a 3D Gaussian splat PLY never has")
    rest = sorted((q for q in present if q.startswith("f_rest_")), key=lambda q: int(q[7:]) if q[7:].isdigit() else -1)
    degree = sh_degree_of(len(rest) // 3 + 1) if len(rest) % 3 == 0 else None
    if degree is None or rest != [f"f_rest_{i}" for i in range(len(rest))]:
        raise _fail(path, f"has {len(rest)} f_rest_* coefficients, which is no spherical-harmonics degree up to 3 "
                    "(0, 9, 24 or 45 expected)")
    dtype = np.dtype([(q, order + t) for q, t in props])
    _check_memory(path, count, degree)
    size = path.stat().st_size
    if size < offset + count * dtype.itemsize:
        whole = max(0, (size - offset) // dtype.itemsize)
        raise _fail(path, f"ends after {whole:,} of the {count:,} Gaussians its header declares (truncated: "
                    f"{size:,} bytes, {offset + count * dtype.itemsize:,} expected)",
                    "copy or download the file again")
    data = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if all(t == "f4" for _, t in props):
        # the usual case: every property float32, so the records are rows of one matrix and each
        # attribute is one gather of its columns (far fewer passes over the file than field by field)
        table = data.view(order + "f4").reshape(count, len(props))
        where = {q: i for i, (q, _) in enumerate(props)}

        def columns(*keys: str) -> np.ndarray:
            return np.ascontiguousarray(table[:, [where[k] for k in keys]], dtype=np.float32)
    else:
        def columns(*keys: str) -> np.ndarray:
            return np.stack([data[k].astype(np.float32) for k in keys], axis=1)

    rest_count = sh_count(degree) - 1
    sh = np.empty((count, rest_count + 1, 3), dtype=np.float32)
    sh[:, 0] = columns("f_dc_0", "f_dc_1", "f_dc_2")
    if rest_count:                               # f_rest is channel-major: all of red, then green, then blue
        sh[:, 1:] = columns(*rest).reshape(count, 3, rest_count).transpose(0, 2, 1)
    logit = columns("opacity")[:, 0]
    field = SplatField(
        position=columns("x", "y", "z"),
        rotation=_unit_quaternions(path, columns("rot_0", "rot_1", "rot_2", "rot_3")),
        scale=np.exp(columns("scale_0", "scale_1", "scale_2")),
        opacity=(1.0 / (1.0 + np.exp(-logit))).astype(np.float32), sh=sh)
    return SplatFile(path, "ply", field)


# -- SPZ ---------------------------------------------------------------------------------------------

_SPZ_MAGIC = 0x5053474E
_SPZ_COLOR_SCALE = 0.15


def _read_spz(path: Path) -> SplatFile:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise _fail(path, f"is a damaged gzip stream ({exc}): truncated?", "copy or download the file again") from exc
    if len(raw) < 16:
        raise _fail(path, f"is too short for an SPZ header ({len(raw)} bytes)")
    magic, version, count, degree, bits, _flags, _reserved = struct.unpack("<IIIBBBB", raw[:16])
    if magic != _SPZ_MAGIC:
        raise _fail(path, "is not an SPZ file (no 'NGSP' magic)")
    if version == 4:
        raise _fail(path, "is SPZ version 4 (Zstandard streams), which Blender's Python cannot decompress",
                    "convert it to version 3: splat-transform file.spz --spz-version 3 file-v3.spz")
    if version not in (2, 3):
        raise _fail(path, f"is SPZ version {version}, which this add-on does not know (it reads versions 2 and 3)",
                    "convert it with a current splat-transform to version 3")
    if degree > 3:
        raise _fail(path, f"has spherical harmonics of degree {degree}; splats here go up to degree 3")
    _check_memory(path, count, degree)
    rest = sh_count(degree) - 1
    rot_bytes = 3 if version == 2 else 4
    sizes = [9 * count, count, 3 * count, 3 * count, rot_bytes * count, 3 * rest * count]
    if len(raw) < 16 + sum(sizes):
        raise _fail(path, f"holds {len(raw) - 16:,} bytes of Gaussians where its header's {count:,} need "
                    f"{sum(sizes):,} (truncated)", "copy or download the file again")
    starts = np.cumsum([16] + sizes)
    block = [np.frombuffer(raw, np.uint8, size, int(start)) for size, start in zip(sizes, starts)]

    b = block[0].reshape(count, 3, 3).astype(np.int32)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000                                    # sign-extend 24 bits
    position = (fixed / float(1 << bits)).astype(np.float32)
    opacity = (block[1] / 255.0).astype(np.float32)
    sh = np.empty((count, rest + 1, 3), dtype=np.float32)
    sh[:, 0] = (block[2].reshape(count, 3) / 255.0 - 0.5) / _SPZ_COLOR_SCALE
    sh[:, 1:] = (block[5].reshape(count, rest, 3).astype(np.float32) - 128.0) / 128.0
    scale = np.exp(block[3].reshape(count, 3) / 16.0 - 10.0).astype(np.float32)
    if version == 2:
        xyz = block[4].reshape(count, 3) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(axis=1)))
        wxyz = np.concatenate([w[:, None], xyz], axis=1)
    else:
        packed = block[4].view("<u4").astype(np.uint32)
        largest = (packed >> 30).astype(np.int64)
        xyzw = np.zeros((count, 4))
        for j in range(3, -1, -1):                                            # the last component in the low bits
            used = largest != j
            code = packed & 0x3FF
            value = (code & 0x1FF) / 511.0 * math.sqrt(0.5) * np.where(code & 0x200, -1.0, 1.0)
            xyzw[:, j] = np.where(used, value, 0.0)
            packed = np.where(used, packed >> 10, packed)
        xyzw[np.arange(count), largest] = np.sqrt(np.maximum(0.0, 1.0 - (xyzw ** 2).sum(axis=1)))
        wxyz = xyzw[:, [3, 0, 1, 2]]
    field = SplatField(position, _unit_quaternions(path, wxyz.astype(np.float32)), scale, opacity, sh)
    return SplatFile(path, "spz", half_turn_x(field))


# -- glTF --------------------------------------------------------------------------------------------

_GLTF_EXTENSION = "KHR_gaussian_splatting"
_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _gltf_document(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """The glTF JSON and its buffers' bytes (the GLB's BIN chunk, data: URIs or files beside it)."""
    raw = path.read_bytes()
    binary: bytes | None = None
    if raw[:4] == b"glTF":
        if len(raw) < 20:
            raise _fail(path, "is too short for a GLB header (truncated)")
        _, _, total = struct.unpack("<III", raw[:12])
        if total > len(raw):
            raise _fail(path, f"is {len(raw):,} bytes where its GLB header says {total:,} (truncated)",
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
        raise _fail(path, f"has no readable glTF JSON ({exc})") from exc
    buffers: list[bytes] = []
    for i, buffer in enumerate(doc.get("buffers", [])):
        uri = buffer.get("uri")
        if uri is None:
            if binary is None:
                raise _fail(path, f"buffer {i} refers to a GLB binary chunk the file does not have (truncated?)")
            buffers.append(binary)
        elif uri.startswith("data:"):
            buffers.append(base64.b64decode(uri.split(",", 1)[1]))
        else:
            source = path.parent / unquote(uri)
            if not source.is_file():
                raise _fail(path, f"buffer {i} is the file '{uri}', which is missing beside it")
            buffers.append(source.read_bytes())
        if len(buffers[-1]) < int(buffer.get("byteLength", 0)):
            raise _fail(path, f"buffer {i} holds {len(buffers[-1]):,} of its {buffer.get('byteLength'):,} bytes "
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
        raise _fail(path, f"the accessor of {name} is malformed ({exc!r})") from exc
    start = int(view.get("byteOffset", 0)) + int(acc.get("byteOffset", 0))
    stride = int(view.get("byteStride", 0)) or dtype.itemsize * width
    end = start + (count - 1) * stride + dtype.itemsize * width if count else start
    if end > len(data) or end > int(view.get("byteOffset", 0)) + int(view["byteLength"]):
        raise _fail(path, f"the data of {name} runs past its buffer (truncated?)", "copy or download the file again")
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


def _read_gltf(path: Path) -> SplatFile:
    doc, buffers = _gltf_document(path)
    required = set(doc.get("extensionsRequired", [])) - {_GLTF_EXTENSION}
    if required:
        raise _fail(path, f"requires the glTF extension{'s' if len(required) > 1 else ''} "
                    f"{', '.join(sorted(required))}, which this add-on does not read",
                    "convert it to plain KHR_gaussian_splatting (e.g. with splat-transform to .ply, then import that)")
    found = [(m, p) for m, mesh in enumerate(doc.get("meshes", [])) for p in mesh.get("primitives", [])
             if _GLTF_EXTENSION in p.get("extensions", {})]
    if not found:
        raise _fail(path, f"has no primitive with {_GLTF_EXTENSION}, so it holds no Gaussian splats",
                    "a plain glTF scene imports with File › Import › glTF 2.0")
    mesh_index, prim = found[0]
    attributes: dict[str, int] = prim.get("attributes", {})
    names = {"POSITION": "POSITION", "rotation": f"{_GLTF_EXTENSION}:ROTATION",
             "scale": f"{_GLTF_EXTENSION}:SCALE", "opacity": f"{_GLTF_EXTENSION}:OPACITY"}
    missing = [n for n in names.values() if n not in attributes]
    if missing:
        raise _fail(path, f"its splat primitive lacks the attribute{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)}, which {_GLTF_EXTENSION} requires")
    count = int(doc["accessors"][attributes["POSITION"]]["count"])
    degree = 0
    while degree < 3 and f"{_GLTF_EXTENSION}:SH_DEGREE_{degree + 1}_COEF_0" in attributes:
        degree += 1
    _check_memory(path, count, degree)

    def read(name: str) -> np.ndarray:
        values = _accessor(path, doc, buffers, attributes[name], name)
        if len(values) != count:
            raise _fail(path, f"{name} has {len(values):,} values for {count:,} Gaussians")
        return values

    sh = np.empty((count, sh_count(degree), 3), dtype=np.float32)
    dc = f"{_GLTF_EXTENSION}:SH_DEGREE_0_COEF_0"
    if dc in attributes:
        sh[:, 0] = read(dc)
    elif "COLOR_0" in attributes:
        sh[:, 0] = (read("COLOR_0")[:, :3] - 0.5) / SH_C0
    else:
        raise _fail(path, f"its splat primitive has neither {dc} nor COLOR_0, so its Gaussians have no colour")
    k = 1
    for d in range(1, degree + 1):
        for n in range(2 * d + 1):
            name = f"{_GLTF_EXTENSION}:SH_DEGREE_{d}_COEF_{n}"
            if name not in attributes:
                raise _fail(path, f"has spherical harmonics of degree {d} without {name}")
            sh[:, k] = read(name)
            k += 1
    xyzw = read(names["rotation"])
    field = SplatField(read("POSITION"), _unit_quaternions(path, xyzw[:, [3, 0, 1, 2]]), read(names["scale"]),
                       read(names["opacity"])[:, 0], sh)
    sh_frame = np.eye(3)
    world = _node_matrices(doc).get(mesh_index)
    if world is not None and not np.allclose(world, np.eye(4)):
        linear = world[:3, :3]
        size = abs(float(np.linalg.det(linear))) ** (1.0 / 3.0)
        turn = linear / size if size > 0 else linear
        if size <= 0 or not np.allclose(turn @ turn.T, np.eye(3), atol=1e-4) or np.linalg.det(turn) < 0:
            raise _fail(path, "places its splats with a node transform that shears, mirrors or scales unevenly",
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
