"""A bundle's kept Gaussians as a :class:`~..splat_field.SplatField` (OpenCV world), for the writers
that encode activated values (SPZ, glTF): colour from the photos, as in the 3DGS PLY."""
from __future__ import annotations

import numpy as np

from ..bundle import Bundle
from ..splat_field import SH_C0, SplatField
from .splat_ply import FlatGaussians

_DC_OF_BYTE = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / SH_C0).astype(np.float32)
"""The SH DC coefficient that renders as each 8-bit photo colour."""


def kept_field(bundle: Bundle, keep: np.ndarray) -> SplatField:
    """The Gaussians of the grid pixels `keep` (bool [N,h,w]) in the bundle's world, SH degree 0."""
    g = FlatGaussians.of(bundle)
    rows = np.flatnonzero(keep)
    return SplatField(g.position[rows].astype(np.float32), g.rotation[rows].astype(np.float32),
                      g.scale[rows].astype(np.float32), g.opacity[rows].astype(np.float32),
                      _DC_OF_BYTE[g.rgb[rows]][:, None, :])
