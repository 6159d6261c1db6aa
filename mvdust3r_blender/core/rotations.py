"""Unit quaternions (w, x, y, z) from rotation matrices, and their product: numpy only, shared by the
exports (COLMAP and glTF camera poses) and the Blender side (Gaussian rotations in Blender's axes,
the splats' axis order)."""
from __future__ import annotations

import numpy as np


def quaternion_from_matrix(rot: np.ndarray) -> np.ndarray:
    """float64 [...,4] unit quaternions (w, x, y, z), w >= 0, of rotation matrices `rot` [...,3,3].

    Shepperd's method, vectorised: of the four algebraically equal expressions, each matrix uses the
    one built around its largest quaternion component, so precision holds for every angle.
    """
    m = np.asarray(rot, dtype=np.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Row k is proportional to q, scaled by 4 * (component k of q).
    candidates = np.stack([
        np.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        np.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        np.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)
    largest = np.argmax(np.diagonal(candidates, axis1=-2, axis2=-1), axis=-1)
    q = np.take_along_axis(candidates, largest[..., None, None], axis=-2)[..., 0, :]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a⊗b of (w,x,y,z) quaternions, broadcast over leading axes (rotation a after b)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)

