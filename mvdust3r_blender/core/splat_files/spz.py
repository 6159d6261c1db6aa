"""Niantic's SPZ, versions 2 and 3 (gzip; version 4's Zstandard is refused with a way out): its
fixed-point blocks decoded with whole-array numpy, right-up-back turned into the OpenCV-like frame."""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..splat_field import SplatField, half_turn_x, sh_count
from .checks import check_memory, unit_quaternions
from .file import SplatFile, fail

_SPZ_MAGIC = 0x5053474E
_SPZ_COLOR_SCALE = 0.15


def read_spz(path: Path) -> SplatFile:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise fail(path, f"is a damaged gzip stream ({exc}): truncated?", "copy or download the file again") from exc
    if len(raw) < 16:
        raise fail(path, f"is too short for an SPZ header ({len(raw)} bytes)")
    magic, version, count, degree, bits, _flags, _reserved = struct.unpack("<IIIBBBB", raw[:16])
    if magic != _SPZ_MAGIC:
        raise fail(path, "is not an SPZ file (no 'NGSP' magic)")
    if version == 4:
        raise fail(path, "is SPZ version 4 (Zstandard streams), which Blender's Python cannot decompress",
                   "convert it to version 3: splat-transform file.spz --spz-version 3 file-v3.spz")
    if version not in (2, 3):
        raise fail(path, f"is SPZ version {version}, which this add-on does not know (it reads versions 2 and 3)",
                   "convert it with a current splat-transform to version 3")
    if degree > 3:
        raise fail(path, f"has spherical harmonics of degree {degree}; splats here go up to degree 3")
    check_memory(path, count, degree)
    rest = sh_count(degree) - 1
    rot_bytes = 3 if version == 2 else 4
    sizes = [9 * count, count, 3 * count, 3 * count, rot_bytes * count, 3 * rest * count]
    if len(raw) < 16 + sum(sizes):
        raise fail(path, f"holds {len(raw) - 16:,} bytes of Gaussians where its header's {count:,} need "
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
    field = SplatField(position, unit_quaternions(path, wxyz.astype(np.float32)), scale, opacity, sh)
    return SplatFile(path, "spz", half_turn_x(field))
