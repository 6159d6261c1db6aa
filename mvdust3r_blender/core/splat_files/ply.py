"""The INRIA 3DGS PLY (binary, either byte order; SH degree 0–3 in ``f_dc_*`` / ``f_rest_*``): its
header parsed by hand, its vertices read with one numpy record dtype."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..splat_field import SplatField, sh_count, sh_degree_of
from .checks import check_memory, unit_quaternions
from .file import SplatFile, fail

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
        raise fail(path, "is not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise fail(path, "has no complete PLY header (no 'end_header' in its first 64 KiB: truncated?)")
    length = head.find(b"\n", end) + 1
    if length == 0:
        raise fail(path, "ends inside its PLY header (truncated)")
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
                raise fail(path, f"has a malformed PLY element line '{raw.strip()}'") from None
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif len(words) == 3 and words[1] in _PLY_DTYPES:
                elements[-1][2].append((words[2], _PLY_DTYPES[words[1]]))
            else:
                raise fail(path, f"has a PLY property of unknown type: '{raw.strip()}'")
    return fmt, elements, length


def read_ply(path: Path) -> SplatFile:
    fmt, elements, header_length = _ply_header(path)
    names = [e[0] for e in elements]
    if "chunk" in names:
        raise fail(path, "is a compressed splat PLY (PlayCanvas's chunked layout), not the 3DGS PLY",
                   "convert it first: splat-transform file.compressed.ply file.ply")
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise fail(path, f"is a PLY in '{fmt or 'no'}' format; 3D Gaussian splat PLYs are binary",
                   "convert it to binary little-endian (3DGS trainers and splat-transform write that)")
    if "vertex" not in names:
        raise fail(path, "has no 'vertex' element, so it holds no Gaussians")
    before = elements[:names.index("vertex")]
    _, count, props = elements[names.index("vertex")]
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = header_length
    for name, n, p in before:
        if any(t == "list" for _, t in p):
            raise fail(path, f"has a list property in the '{name}' element before the Gaussians")
        offset += n * np.dtype([(q, order + t) for q, t in p]).itemsize
    present = {q for q, _ in props}
    missing = [q for q in _PLY_REQUIRED if q not in present]
    if missing:
        raise fail(path, f"is not a 3D Gaussian splat PLY: its vertices lack {', '.join(missing)}",
                   "a plain point cloud or mesh imports with File › Import › Stanford PLY")
    if any(t == "list" for _, t in props):
        raise fail(path, "has list properties on its vertices, which a 3D Gaussian splat PLY never has")
    rest = sorted((q for q in present if q.startswith("f_rest_")), key=lambda q: int(q[7:]) if q[7:].isdigit() else -1)
    degree = sh_degree_of(len(rest) // 3 + 1) if len(rest) % 3 == 0 else None
    if degree is None or rest != [f"f_rest_{i}" for i in range(len(rest))]:
        raise fail(path, f"has {len(rest)} f_rest_* coefficients, which is no spherical-harmonics degree up to 3 "
                   "(0, 9, 24 or 45 expected)")
    dtype = np.dtype([(q, order + t) for q, t in props])
    check_memory(path, count, degree)
    size = path.stat().st_size
    if size < offset + count * dtype.itemsize:
        whole = max(0, (size - offset) // dtype.itemsize)
        raise fail(path, f"ends after {whole:,} of the {count:,} Gaussians its header declares (truncated: "
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
        rotation=unit_quaternions(path, columns("rot_0", "rot_1", "rot_2", "rot_3")),
        scale=np.exp(columns("scale_0", "scale_1", "scale_2")),
        opacity=(1.0 / (1.0 + np.exp(-logit))).astype(np.float32), sh=sh)
    return SplatFile(path, "ply", field)
