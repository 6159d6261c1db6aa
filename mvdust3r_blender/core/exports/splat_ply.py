"""3D Gaussian splat files: the INRIA PLY (full precision, what trainers and most tools read) and
the compact ``.splat`` of the web viewers.

**PLY, INRIA layout** (the file ``train.py`` of the original 3DGS saves).

Property order, all float32: x y z, nx ny nz (zero), f_dc_0..2, f_rest_0..44, opacity,
scale_0..2, rot_0..3. Values are stored before activation, as the INRIA code keeps them:
``f_dc = (rgb - 0.5) / C0`` (the SH band-0 coefficient that renders as `rgb`), ``opacity = logit(o)``,
``scale = log(std-dev)``, ``rot = (w, x, y, z)``.

The 45 ``f_rest`` are written (as zeros: the network predicts band 0 only) because the readers that
assume the full degree-3 layout need them: the INRIA SIBR viewer reads fixed 62-float records, the
INRIA ``GaussianModel.load_ply`` asserts 45 of them at its default ``sh_degree=3``, and the ReshotAI
Blender add-on reshapes them to (N, 3, 15). Readers that accept any band count (SuperSplat, gsplat,
KIRI's Blender add-on) read the zeros as "no view dependence", which is exactly what they are.
That is 248 bytes a Gaussian, 180 of them zeros.

**.splat** (antimatter15's WebGL viewer format; also read by SuperSplat, Spark and most web
viewers): no header, 32 bytes a Gaussian — position float32 ×3, scale float32 ×3 (standard
deviations, activated), colour and opacity uint8 ×4 (RGBA), rotation uint8 ×4 (unit quaternion
w x y z mapped by ``q·128 + 128``). Gaussians are sorted by ``volume × opacity``, largest first, as
the format's reference converter does (viewers that stream the file show the big ones first).
7.75× smaller than the PLY; colours and opacity are 8-bit and rotations about 0.5° coarse.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from .errors import ExportError
from .ply import write_records, write_vertex_ply

SH_C0 = 0.28209479177387814
"""Band-0 real spherical harmonic, 1 / (2 sqrt(pi)): colour = 0.5 + SH_C0 * f_dc."""

SH_REST = 45
"""Higher-band coefficients in the INRIA degree-3 layout (15 per colour channel)."""

OPACITY_EPS = 1e-6
"""Opacities are clipped to [eps, 1 - eps] before the logit so that it stays finite."""

GAUSSIANS_DTYPE = np.dtype(
    [(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")]
    + [(f"f_rest_{i}", "<f4") for i in range(SH_REST)]
    + [(n, "<f4") for n in ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")]
)


SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
"""One ``.splat`` record (32 bytes)."""


def require_gaussians(bundle: Bundle) -> None:
    """Raise :class:`ExportError` unless `bundle` holds Gaussian parameters."""
    if not bundle.has_gaussians:
        raise ExportError("the Gaussian exports (gaussians, splat, gltf-splats, spz) need a bundle with Gaussian "
                          "parameters, and this one has none", "reconstruct with Gaussians enabled, or leave out those formats")


@dataclass(frozen=True)
class FlatGaussians:
    """A bundle's Gaussians, one row per grid pixel (views × rows × columns), as both writers read them."""

    position: np.ndarray   # float32 [P,3]
    rgb: np.ndarray        # uint8 [P,3], the photos' colours
    rotation: np.ndarray   # float32 [P,4] (w, x, y, z)
    scale: np.ndarray      # float32 [P,3] standard deviations
    opacity: np.ndarray    # float32 [P]

    @classmethod
    def of(cls, bundle: Bundle) -> "FlatGaussians":
        require_gaussians(bundle)
        assert bundle.gaussian_rotation is not None and bundle.gaussian_scale is not None
        assert bundle.gaussian_opacity is not None
        return cls(bundle.pts3d.reshape(-1, 3), bundle.images.reshape(-1, 3),
                   bundle.gaussian_rotation.reshape(-1, 4), bundle.gaussian_scale.reshape(-1, 3),
                   bundle.gaussian_opacity.reshape(-1))


def write_gaussians_ply(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """The kept Gaussians (`keep`: bool [N,h,w]) as an INRIA-layout 3DGS PLY, coloured from the photos."""
    g = FlatGaussians.of(bundle)
    dc_of_byte = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / SH_C0).astype(np.float32)

    def fill(buf: np.ndarray, idx: np.ndarray) -> None:
        p, c, q, s = g.position[idx], g.rgb[idx], g.rotation[idx], np.log(g.scale[idx])
        o = np.clip(g.opacity[idx], OPACITY_EPS, 1.0 - OPACITY_EPS)
        buf["x"], buf["y"], buf["z"] = p[:, 0], p[:, 1], p[:, 2]
        buf["f_dc_0"], buf["f_dc_1"], buf["f_dc_2"] = dc_of_byte[c[:, 0]], dc_of_byte[c[:, 1]], dc_of_byte[c[:, 2]]
        buf["opacity"] = np.log(o) - np.log1p(-o)
        buf["scale_0"], buf["scale_1"], buf["scale_2"] = s[:, 0], s[:, 1], s[:, 2]
        buf["rot_0"], buf["rot_1"], buf["rot_2"], buf["rot_3"] = q[:, 0], q[:, 1], q[:, 2], q[:, 3]

    return write_vertex_ply(path, GAUSSIANS_DTYPE, np.flatnonzero(keep), fill)


def write_splat(bundle: Bundle, keep: np.ndarray, path: Path) -> Path:
    """The kept Gaussians (`keep`: bool [N,h,w]) as a ``.splat`` file, largest ``volume × opacity`` first."""
    g = FlatGaussians.of(bundle)
    rows = np.flatnonzero(keep)
    weight = g.scale[rows].astype(np.float64).prod(axis=1) * g.opacity[rows]
    rows = rows[np.argsort(-weight, kind="stable")]
    # the byte fields once, in storage order (cheap to gather, unlike the float maths per sorted row)
    quaternion = np.clip(np.rint(g.rotation * 128 + 128), 0, 255).astype(np.uint8)  # unit quaternions (bundle)
    alpha = np.rint(np.clip(g.opacity, 0.0, 1.0) * 255).astype(np.uint8)

    def fill(buf: np.ndarray, idx: np.ndarray) -> None:
        buf["position"], buf["scale"] = g.position[idx], g.scale[idx]
        buf["rgba"][:, :3] = g.rgb[idx]
        buf["rgba"][:, 3] = alpha[idx]
        buf["rotation"] = quaternion[idx]

    return write_records(path, SPLAT_DTYPE, rows, fill)
