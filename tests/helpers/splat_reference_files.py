"""Reference Gaussians with SH up to degree 3, written as the INRIA 3DGS PLY by numpy here, for
SplatTransform to convert into the other formats: the "third-party" files the import tests read.
numpy only (the Blender tests use it next to the installed extension, never the source tree)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814


@dataclass(frozen=True)
class ReferenceSplats:
    """Activated values in an OpenCV frame: position [M,3], rotation [M,4] (w,x,y,z), scale [M,3]
    std-devs, opacity [M], sh [M,K,3] (K = (d+1)², DC first)."""

    position: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    opacity: np.ndarray
    sh: np.ndarray


def random_sh(rng: np.random.Generator, rgb: np.ndarray, degree: int, spread: float) -> np.ndarray:
    """float32 [M,K,3]: DC for the colours `rgb` [M,3] in [0,1], higher bands uniform in ±`spread`."""
    sh = rng.uniform(-spread, spread, (len(rgb), (degree + 1) ** 2, 3))
    sh[:, 0] = (rgb - 0.5) / SH_C0
    return sh.astype(np.float32)


def reference_splats(count: int = 400, degree: int = 3, seed: int = 5) -> ReferenceSplats:
    """Gaussians in front of the origin (z forward), random shapes, colours and SH."""
    rng = np.random.default_rng(seed)
    position = np.stack([rng.uniform(-1, 1, count), rng.uniform(-0.75, 0.75, count), rng.uniform(3, 5, count)], 1)
    q = rng.normal(size=(count, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1, 1)
    return ReferenceSplats(position.astype(np.float32), q.astype(np.float32),
                           np.exp(rng.uniform(-4.0, -2.5, (count, 3))).astype(np.float32),
                           rng.uniform(0.3, 0.95, count).astype(np.float32),
                           random_sh(rng, rng.uniform(0.15, 0.85, (count, 3)), degree, 0.3))


def inria_records(splats: ReferenceSplats) -> np.ndarray:
    """`splats` as INRIA-layout records (logs, logits, f_rest channel-major): a float32 structured array."""
    rest = splats.sh.shape[1] - 1
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * rest)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    data = np.zeros(len(splats.position), dtype=[(n, "<f4") for n in names])
    for i, axis in enumerate("xyz"):
        data[axis] = splats.position[:, i]
        data[f"f_dc_{i}"] = splats.sh[:, 0, i]
        data[f"scale_{i}"] = np.log(splats.scale[:, i])
    for channel in range(3):
        for k in range(rest):
            data[f"f_rest_{channel * rest + k}"] = splats.sh[:, k + 1, channel]
    o = np.clip(splats.opacity.astype(np.float64), 1e-6, 1 - 1e-6)
    data["opacity"] = np.log(o / (1 - o))
    for i in range(4):
        data[f"rot_{i}"] = splats.rotation[:, i]
    return data


def inria_header(dtype: np.dtype, count: int) -> bytes:
    """The binary little-endian PLY header of `count` records of `dtype` (all float)."""
    return ("ply\nformat binary_little_endian 1.0\nelement vertex %d\n%send_header\n" % (
        count, "".join(f"property float {n}\n" for n in dtype.names or ()))).encode("ascii")


def write_inria_ply(splats: ReferenceSplats, path: Path) -> Path:
    """`splats` as an INRIA 3DGS PLY, binary little-endian."""
    data = inria_records(splats)
    path.write_bytes(inria_header(data.dtype, len(data)) + data.tobytes())
    return path
