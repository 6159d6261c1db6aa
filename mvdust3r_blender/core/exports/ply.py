"""Binary little-endian PLY: one chunked record writer, and the coloured point cloud built on it.

Rows are gathered and packed a chunk at a time into one reused numpy structured array, so millions
of points cost a few large ``write`` calls and bounded memory (no per-point Python).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from ..atomic import atomic_file

CHUNK_ROWS = 1 << 18
"""Rows packed per write: large enough for throughput, small enough to bound memory."""

_PLY_TYPES = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort",
              "i2": "short", "u4": "uint", "i4": "int"}

POINTS_DTYPE = np.dtype([
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
    ("red", "u1"), ("green", "u1"), ("blue", "u1"),
    ("confidence", "<f4"), ("view", "<i4"),
])
"""The point cloud's vertex layout: position (world, OpenCV axes), photo colour, the network's
confidence and the 0-based index of the view the point was predicted from."""


def ply_header(dtype: np.dtype, count: int, comments: Sequence[str] = ()) -> bytes:
    """The ASCII header for one ``vertex`` element whose properties are the fields of `dtype`."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {count}")
    for name, code, *_shape in dtype.descr:
        lines.append(f"property {_PLY_TYPES[code.lstrip('<|=')]} {name}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_records(path: Path, dtype: np.dtype, rows: np.ndarray,
                  fill: Callable[[np.ndarray, np.ndarray], None], header: bytes = b"") -> Path:
    """Write `header`, then ``len(rows)`` packed records of `dtype`, to `path` atomically.

    `rows` are indices into the caller's flattened arrays; ``fill(buf, chunk)`` sets the fields of
    the structured array `buf` (len(chunk) rows of `dtype`) for those indices. Fields `fill` leaves
    alone stay zero.
    """
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        buf = np.zeros(min(len(rows), CHUNK_ROWS), dtype=dtype)
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start:start + CHUNK_ROWS]
            part = buf[:len(chunk)]
            fill(part, chunk)
            f.write(part.data)
    return path


def write_vertex_ply(path: Path, dtype: np.dtype, rows: np.ndarray,
                     fill: Callable[[np.ndarray, np.ndarray], None],
                     comments: Sequence[str] = ()) -> Path:
    """A PLY of ``len(rows)`` vertices with the fields of `dtype`, written as :func:`write_records`."""
    return write_records(path, dtype, rows, fill, ply_header(dtype, len(rows), comments))


def write_points_ply(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """The kept points (`keep`: bool [N,h,w]) as a coloured PLY point cloud with confidence and view."""
    pts = bundle.pts3d.reshape(-1, 3)
    rgb = bundle.images.reshape(-1, 3)
    conf = bundle.conf.reshape(-1)
    h, w = bundle.grid_size

    def fill(buf: np.ndarray, idx: np.ndarray) -> None:
        p, c = pts[idx], rgb[idx]
        buf["x"], buf["y"], buf["z"] = p[:, 0], p[:, 1], p[:, 2]
        buf["red"], buf["green"], buf["blue"] = c[:, 0], c[:, 1], c[:, 2]
        buf["confidence"] = conf[idx]
        buf["view"] = idx // (h * w)

    return write_vertex_ply(path, POINTS_DTYPE, np.flatnonzero(keep), fill,
                            comments=["MV-DUSt3R point cloud; world = OpenCV camera frame of view 0"])
