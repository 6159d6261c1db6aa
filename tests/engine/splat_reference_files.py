"""A reference field of Gaussians with SH up to degree 3, written as the INRIA 3DGS PLY by numpy here,
for SplatTransform to convert into the other formats (the "third-party" files the import tests read)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mvdust3r_blender.core.splat_field import SH_C0, SplatField, sh_count


def reference_field(count: int = 400, degree: int = 3, seed: int = 5) -> SplatField:
    """Gaussians in front of the origin (OpenCV frame: z forward), random shapes, colours and SH."""
    rng = np.random.default_rng(seed)
    position = np.stack([rng.uniform(-1, 1, count), rng.uniform(-0.75, 0.75, count), rng.uniform(3, 5, count)], 1)
    q = rng.normal(size=(count, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1, 1)
    sh = np.zeros((count, sh_count(degree), 3))
    sh[:, 0] = (rng.uniform(0.15, 0.85, (count, 3)) - 0.5) / SH_C0
    sh[:, 1:] = rng.uniform(-0.3, 0.3, (count, sh_count(degree) - 1, 3))
    return SplatField(position.astype(np.float32), q.astype(np.float32),
                      np.exp(rng.uniform(-4.0, -2.5, (count, 3))).astype(np.float32),
                      rng.uniform(0.3, 0.95, count).astype(np.float32), sh.astype(np.float32))


def write_inria_ply(field: SplatField, path: Path) -> Path:
    """`field` as the INRIA layout (logs, logits, f_rest channel-major), binary little-endian."""
    rest = sh_count(field.sh_degree) - 1
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * rest)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    data = np.zeros(len(field), dtype=[(n, "<f4") for n in names])
    for i, axis in enumerate("xyz"):
        data[axis] = field.position[:, i]
        data[f"f_dc_{i}"] = field.sh[:, 0, i]
        data[f"scale_{i}"] = np.log(field.scale[:, i])
    for channel in range(3):
        for k in range(rest):
            data[f"f_rest_{channel * rest + k}"] = field.sh[:, k + 1, channel]
    o = np.clip(field.opacity.astype(np.float64), 1e-6, 1 - 1e-6)
    data["opacity"] = np.log(o / (1 - o))
    for i in range(4):
        data[f"rot_{i}"] = field.rotation[:, i]
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n%send_header\n" % (
        len(field), "".join(f"property float {n}\n" for n in names))
    path.write_bytes(header.encode("ascii") + data.tobytes())
    return path
