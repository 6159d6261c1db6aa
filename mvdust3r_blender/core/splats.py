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

import numpy as np

from .rotations import quaternion_from_matrix, quaternion_multiply

LOW_PASS = 0.3      # px², the 3DGS screen-space filter


def _axis_turns() -> np.ndarray:
    """turn [8,4,4] by comparison key k = 4·(σ₀<σ₁) + 2·(σ₁<σ₂) + (σ₀<σ₂): the matrix T with
    q ⊗ q_P = q·T for the rotation P whose column j is the axis with the j-th largest σ (ties keep
    their order; third column negated if the ordering is odd, so det P = +1). The two cyclic keys
    cannot happen; they keep the identity."""
    turns = np.tile(np.eye(4), (8, 1, 1))
    for key in range(8):
        less = {(0, 1): bool(key & 4), (1, 2): bool(key & 2), (0, 2): bool(key & 1)}
        before = {(i, j): not less[(i, j)] for i, j in less}            # i (< j) comes first unless σᵢ < σⱼ
        before.update({(j, i): less[(i, j)] for i, j in less})
        position = [sum(before[(other, axis)] for other in range(3) if other != axis) for axis in range(3)]
        if sorted(position) != [0, 1, 2]:
            continue                                                      # cyclic: impossible
        order = np.argsort(position)
        mat = np.zeros((3, 3))
        mat[order, [0, 1, 2]] = 1.0
        if np.linalg.det(mat) < 0:
            mat[:, 2] *= -1
        turns[key] = quaternion_multiply(np.eye(4), quaternion_from_matrix(mat)[None, :])
    return turns.astype(np.float32)


_TURNS = _axis_turns()


def sort_axes(wxyz: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same Gaussians with their axes ordered by decreasing σ: float32 (wxyz [M,4], scales [M,3]).

    Reordering the axes is R' = R·P, P a permutation (made proper by negating its third column: a
    Gaussian is symmetric), so R·diag(σ²)·Rᵀ is unchanged; as quaternions q' = q ⊗ q_P = q·T_P. Three
    comparisons pick one of six P per Gaussian, and each group is one [m,4]×[4,4] product: no
    per-Gaussian matrices, no general sort.
    """
    scales = np.asarray(scales, dtype=np.float32)
    wxyz = np.asarray(wxyz, dtype=np.float32)
    s0, s1, s2 = scales[:, 0], scales[:, 1], scales[:, 2]
    key = 4 * (s0 < s1).astype(np.int8) + 2 * (s1 < s2).astype(np.int8) + (s0 < s2).astype(np.int8)
    turned = np.empty_like(wxyz)
    for k in np.unique(key):
        group = key == k
        q = wxyz[group]
        # q·T written out: a [m,4]×[4,4] BLAS call is slower than four scaled adds at this shape
        turned[group] = (q[:, 0:1] * _TURNS[k, 0] + q[:, 1:2] * _TURNS[k, 1]
                         + q[:, 2:3] * _TURNS[k, 2] + q[:, 3:4] * _TURNS[k, 3])
    turned *= np.where(turned[:, :1] < 0, np.float32(-1.0), np.float32(1.0))
    return turned, np.sort(scales, axis=1)[:, ::-1].copy()


def pixel_footprints(pts3d: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """float32 [N·h·w]: world size of one photo pixel at each Gaussian, in the view it came from
    (depth / fx), for the low-pass when the scene has no camera. pts3d [N,h,w,3], cam2world [N,4,4]
    OpenCV, intrinsics [N,3,3] in photo pixels."""
    n = pts3d.shape[0]
    world_to_cam = np.linalg.inv(cam2world.astype(np.float64)).astype(np.float32)
    rows = world_to_cam[:, 2, :]                                            # [N,4]: the camera-z row
    depth = np.einsum("nmk,nk->nm", pts3d.reshape(n, -1, 3), rows[:, :3]) + rows[:, 3:4]
    return (np.abs(depth) / intrinsics[:, 0, 0, None]).astype(np.float32).reshape(-1)
