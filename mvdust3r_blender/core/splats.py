"""How a 3D Gaussian becomes a rendered splat (numpy only, no bpy): the 3DGS screen-space low-pass,
the splat's axes, and the pixel footprint used when the scene has no camera.

The Blender side (``importers/gaussians.py``) builds the geometry nodes and the material from these
numbers; keeping them here lets them be checked without Blender (``tests/engine/test_splats.py``).

- **Low-pass.** A 3DGS rasteriser adds 0.3 px² to every projected covariance (Kerbl et al. 2023), so a
  sub-pixel Gaussian still covers about a pixel. The splats add it in 3D as the isotropic variance
  ``LOW_PASS · p²`` (p = the world size of one render pixel at the Gaussian's depth): isotropic
  variance commutes with the Gaussian's rotation, so each axis becomes √(σ² + 0.3·p²). Blender's
  pixel filter (Blackman-Harris, 1.5 px) blurs a little more; subtracting its variance (0.043 px²)
  measured slightly worse against the reference (36.08 vs 36.14 dB, and the mean alpha further
  off), so the splats use the 3DGS value as is. As in 3DGS (and gsplat's default mode) the peak
  opacity is kept: no Mip-Splatting-style opacity compensation.
- **Axes.** Each Gaussian's axes are ordered by decreasing σ, so its local xy-plane is its major
  plane and z its thinnest axis: a flat Gaussian is drawn as one disc in that plane (a ray crosses
  one surface per splat); a round one as a disc facing the camera (a closed shell without one).
"""
from __future__ import annotations

import itertools

import numpy as np

from .rotations import quaternion_from_matrix, quaternion_multiply

LOW_PASS = 0.3      # px², the 3DGS screen-space filter


def _permutation_quaternions() -> tuple[np.ndarray, np.ndarray]:
    """(key → row [9], quaternions [6,4]): for each ordering of three axes, the rotation P whose
    column j is axis order[j] (its third column negated if the ordering is odd, so det P = +1);
    an ordering's row is found by key = 3·order[0] + order[1]."""
    orders = list(itertools.permutations(range(3)))
    mats = np.zeros((len(orders), 3, 3))
    for k, order in enumerate(orders):
        mats[k][list(order), [0, 1, 2]] = 1.0
        if np.linalg.det(mats[k]) < 0:
            mats[k][:, 2] *= -1
    rows = np.zeros(9, dtype=np.int64)
    for k, order in enumerate(orders):
        rows[3 * order[0] + order[1]] = k
    return rows, quaternion_from_matrix(mats)


_PERMUTATION_ROWS, _PERMUTATION_QUATERNIONS = _permutation_quaternions()


def sort_axes(wxyz: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same Gaussians with their axes ordered by decreasing σ: float32 (wxyz [M,4], scales [M,3]).

    Reordering the axes is R' = R·P, P a permutation (made proper by negating its third column: a
    Gaussian is symmetric), so R·diag(σ²)·Rᵀ is unchanged; as quaternions q' = q ⊗ q_P, with q_P one
    of six constants — a gather and one product, no per-Gaussian matrices.
    """
    scales = np.asarray(scales, dtype=np.float32)
    order = np.argsort(-scales, axis=1, kind="stable")
    q_p = _PERMUTATION_QUATERNIONS[_PERMUTATION_ROWS[3 * order[:, 0] + order[:, 1]]].astype(np.float32)
    turned = quaternion_multiply(np.asarray(wxyz, dtype=np.float32), q_p)
    turned *= np.where(turned[:, :1] < 0, -1.0, 1.0).astype(np.float32)
    return turned, np.take_along_axis(scales, order, axis=1)


def pixel_footprints(pts3d: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """float32 [N·h·w]: world size of one photo pixel at each Gaussian, in the view it came from
    (depth / fx), for the low-pass when the scene has no camera. pts3d [N,h,w,3], cam2world [N,4,4]
    OpenCV, intrinsics [N,3,3] in photo pixels."""
    n = pts3d.shape[0]
    world_to_cam = np.linalg.inv(cam2world.astype(np.float64)).astype(np.float32)
    rows = world_to_cam[:, 2, :]                                            # [N,4]: the camera-z row
    depth = np.einsum("nmk,nk->nm", pts3d.reshape(n, -1, 3), rows[:, :3]) + rows[:, 3:4]
    return (np.abs(depth) / intrinsics[:, 0, 0, None]).astype(np.float32).reshape(-1)
