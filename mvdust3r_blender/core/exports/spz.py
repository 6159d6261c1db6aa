"""Niantic's SPZ (version 3): gzip-compressed, fixed-point Gaussians, about 10× smaller than the PLY.

Layout (all little-endian, the whole stream gzipped): a 16-byte header — magic ``NGSP``
(0x5053474E), version u32 = 3, count u32, SH degree u8, fractional bits u8, flags u8 (bit 0:
trained with anti-aliasing; 0 here), reserved u8 — then the attributes, each for all Gaussians in
turn:

=============  =========  ==========================================================================
positions      3 × int24  ``round(p · 2^fractional_bits)``, two's complement (12 bits: 1/4096 units)
alphas         u8         ``round(opacity · 255)`` (post-sigmoid)
colours        3 × u8     ``round((dc · 0.15 + 0.5) · 255)`` of the SH DC coefficient (SPZ's 0.15 scale)
scales         3 × u8     ``round((log σ + 10) · 16)``: log standard deviations in [−10, 5.9]
rotations      u32        "smallest three": bits 30–31 the index of the largest |component| of
                          (x, y, z, w), made positive; the other three in x, y, z, w order from the
                          high bits down, 10 bits each: sign bit, then ``round(|c| / √½ · 511)``
SH (d > 0)     u8 each    per Gaussian, coefficient by coefficient, r g b innermost:
                          ``round(c · 128 + 128)`` (8 bits; Niantic's own writer keeps 5 bits for
                          band 1 and 4 for the rest)
=============  =========  ==========================================================================

SPZ stores right-up-back axes (OpenGL's): the bundle's OpenCV world is turned half about x.
"""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..bundle import Bundle
from ..splat_field import SplatField, half_turn_x
from .errors import ExportError
from .kept_field import kept_field

MAGIC = 0x5053474E
VERSION = 3
HEADER = np.dtype([("magic", "<u4"), ("version", "<u4"), ("count", "<u4"), ("sh_degree", "u1"),
                   ("fractional_bits", "u1"), ("flags", "u1"), ("reserved", "u1")])
FRACTIONAL_BITS = 12
"""Niantic's default; fewer when the scene reaches beyond ±2048 units (24-bit signed range)."""
COLOR_SCALE = 0.15
CHUNK = 1 << 18


def fractional_bits_for(position: np.ndarray) -> int:
    """The most fractional bits (≤ 12) that keep every coordinate inside the signed 24-bit range."""
    extent = float(np.abs(position).max()) if position.size else 0.0
    if extent == 0.0:
        return FRACTIONAL_BITS
    return min(FRACTIONAL_BITS, math.floor(math.log2((2 ** 23 - 1) / extent)))


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def pack_rotations(wxyz: np.ndarray) -> np.ndarray:
    """uint32 [M]: unit quaternions (w, x, y, z) in SPZ's smallest-three code."""
    q = np.asarray(wxyz, dtype=np.float64)[:, [1, 2, 3, 0]]                      # SPZ order: x y z w
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    largest = np.argmax(np.abs(q), axis=1)
    q *= np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    packed = np.zeros(len(q), dtype=np.uint32)
    for j in range(4):                                                          # later components: lower bits
        used = largest != j
        value = q[:, j]
        code = (np.minimum(np.rint(np.abs(value) / math.sqrt(0.5) * 511), 511).astype(np.uint32)
                | ((value < 0).astype(np.uint32) << 9))
        packed = np.where(used, (packed << np.uint32(10)) | code, packed)
    return packed | (largest.astype(np.uint32) << np.uint32(30))


def encode_spz(field: SplatField, path: Path) -> Path:
    """Write `field` (already in SPZ's frame) to `path` as SPZ version 3, atomically."""
    n = len(field)
    bits = fractional_bits_for(field.position)
    if bits < 0:
        raise ExportError(f"{path}: the Gaussians reach {float(np.abs(field.position).max()):.3g} units from the "
                          "origin, beyond SPZ's 24-bit positions", "export 'gaussians' (PLY) instead")
    header = np.zeros(1, HEADER)
    header[0] = (MAGIC, VERSION, n, field.sh_degree, bits, 0, 0)
    log_scale = np.log(np.maximum(field.scale, np.float32(1e-30)))

    def attribute_chunks(start: int, stop: int, which: str) -> bytes:
        if which == "positions":
            fixed = np.clip(np.rint(field.position[start:stop].astype(np.float64) * (1 << bits)),
                            -(2 ** 23), 2 ** 23 - 1).astype("<i4")
            return fixed.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()          # low 3 bytes, little-endian
        if which == "alphas":
            return _u8(field.opacity[start:stop] * 255.0).tobytes()
        if which == "colours":
            return _u8((field.sh[start:stop, 0] * COLOR_SCALE + 0.5) * 255.0).tobytes()
        if which == "scales":
            return _u8((log_scale[start:stop] + 10.0) * 16.0).tobytes()
        if which == "rotations":
            return pack_rotations(field.rotation[start:stop]).astype("<u4").tobytes()
        return _u8(field.sh[start:stop, 1:] * 128.0 + 128.0).tobytes()            # [m, K-1, 3]: rgb innermost

    parts = ["positions", "alphas", "colours", "scales", "rotations"] + (["sh"] if field.sh_degree else [])
    with atomic_file(path) as tmp, gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(header.tobytes())
        for which in parts:
            for start in range(0, n, CHUNK):
                f.write(attribute_chunks(start, min(n, start + CHUNK), which))
    return path


def write_spz(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """The kept Gaussians (`keep`: bool [N,h,w]) as SPZ, turned into SPZ's right-up-back frame."""
    return encode_spz(half_turn_x(kept_field(bundle, keep)), path)
