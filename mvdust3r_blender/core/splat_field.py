"""A field of 3D Gaussians as the splat file formats hold it (numpy only, no bpy): what the splat
writers encode and the splat readers decode, in one set of units.

- ``position`` float32 [M,3], in the file's frame;
- ``rotation`` float32 [M,4], unit quaternions (w, x, y, z), local → world;
- ``scale`` float32 [M,3], standard deviations (activated, not logs);
- ``opacity`` float32 [M], in [0, 1] (activated, not logits);
- ``sh`` float32 [M,K,3], the real spherical-harmonic coefficients per colour channel, K = (d+1)²
  for degree d ≤ 3, in the 3DGS basis order (band by band, m = −l … l); ``sh[:,0]`` is the DC term,
  colour = 0.5 + SH_C0 · sh[:,0] + … (the 3DGS convention, display sRGB).

Frames differ between formats (the INRIA PLY keeps its trainer's world, SPZ is right-up-back, glTF
is +Y up); a half turn about x (:func:`half_turn_x`) takes the OpenCV world to both of the latter. It
is a rotation, so the Gaussians keep their shape and the SH coefficients only change sign.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SH_C0 = 0.28209479177387814
"""Band-0 real spherical harmonic, 1 / (2 sqrt(pi)): colour = 0.5 + SH_C0 * DC coefficient."""

MAX_SH_DEGREE = 3

# The sign each real SH basis function (3DGS order, band by band) takes under (x, y, z) → (x, −y, −z):
# (−1) to the power of its degree in y plus its degree in z.
_HALF_TURN_X_SIGNS = np.array([
    1,                                  # l = 0
    -1, -1, 1,                          # y, z, x
    -1, 1, 1, -1, 1,                    # xy, yz, 3z²−1, xz, x²−y²
    -1, 1, -1, -1, 1, -1, 1,            # y(3x²−y²), xyz, y(5z²−1), z(5z²−3), x(5z²−1), z(x²−y²), x(x²−3y²)
], dtype=np.float32)


def sh_count(degree: int) -> int:
    """Coefficients per colour channel for SH `degree`: (d+1)²."""
    return (degree + 1) ** 2


def sh_degree_of(count: int) -> int | None:
    """The SH degree with `count` coefficients per channel, or None when no degree ≤ 3 has that many."""
    for degree in range(MAX_SH_DEGREE + 1):
        if sh_count(degree) == count:
            return degree
    return None


@dataclass(frozen=True)
class SplatField:
    """M Gaussians in activated units (see the module docstring)."""

    position: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    opacity: np.ndarray
    sh: np.ndarray

    def __len__(self) -> int:
        return int(self.position.shape[0])

    @property
    def sh_degree(self) -> int:
        degree = sh_degree_of(int(self.sh.shape[1]))
        assert degree is not None, self.sh.shape
        return degree

    @property
    def nbytes(self) -> int:
        """Memory the arrays take."""
        return sum(int(a.nbytes) for a in (self.position, self.rotation, self.scale, self.opacity, self.sh))

    def rgb(self) -> np.ndarray:
        """float32 [M,3]: the view-independent colour 0.5 + SH_C0 · DC (display sRGB, unclipped)."""
        return (0.5 + SH_C0 * self.sh[:, 0]).astype(np.float32)


def half_turn_x(field: SplatField) -> SplatField:
    """The same Gaussians after a half turn about x, (x, y, z) → (x, −y, −z): OpenCV's world to
    glTF's +Y-up frame and SPZ's right-up-back frame (and back: the turn is its own inverse)."""
    flip = np.array([1.0, -1.0, -1.0], dtype=np.float32)
    # a Gaussian's local → world rotation R becomes T·R: q' = q_x ⊗ q with q_x = (0, 1, 0, 0)
    w, x, y, z = field.rotation.T
    rotation = np.stack([-x, w, -z, y], axis=1)
    sh = field.sh * _HALF_TURN_X_SIGNS[:field.sh.shape[1], None]
    return SplatField(field.position * flip, rotation, field.scale, field.opacity, sh.astype(np.float32))


def sh_basis(directions: np.ndarray, degree: int) -> np.ndarray:
    """float32 [M,K]: the real SH basis (3DGS constants and signs) of unit `directions` [M,3], K = (d+1)²."""
    d = np.asarray(directions, dtype=np.float32)
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    out = [np.full_like(x, SH_C0)]
    if degree >= 1:
        c1 = 0.4886025119029199
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.31539156525252005 * (2 * zz - xx - yy),
                -1.0925484305920792 * xz, 0.5462742152960396 * (xx - yy)]
    if degree >= 3:
        out += [-0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * xy * z,
                -0.4570457994644658 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
                -0.4570457994644658 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
                -0.5900435899266435 * x * (xx - 3 * yy)]
    return np.stack(out, axis=1).astype(np.float32)


def view_colours(field: SplatField, eye: np.ndarray) -> np.ndarray:
    """float32 [M,3]: each Gaussian's colour seen from the point `eye` (same frame), 3DGS's SH
    evaluation (direction from the eye to the Gaussian, + 0.5, clipped at 0 below)."""
    direction: np.ndarray = field.position - np.asarray(eye, dtype=np.float32)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), np.float32(1e-12))
    basis = sh_basis(direction, field.sh_degree)
    return np.maximum(np.einsum("mk,mkc->mc", basis, field.sh) + 0.5, 0.0).astype(np.float32)
