"""Exports of a reconstruction bundle to files other tools read.

numpy and the standard library only, so Blender's own Python (no torch) can call them too.

=============  ===========================  ===================================================
format name    written to (in `out_dir`)    what
=============  ===========================  ===================================================
``ply``        ``points.ply``               binary PLY point cloud: x y z, red green blue,
                                            confidence, view
``gaussians``  ``gaussians.ply``            3DGS PLY in the INRIA layout (see :mod:`.splat_ply`)
``splat``      ``scene.splat``              the same Gaussians as a compact web-viewer ``.splat``
``colmap``     ``colmap/``                  COLMAP text model in ``sparse/0`` + ``images/``
``glb``        ``scene.glb``                glTF 2.0 binary: points + one camera per view
=============  ===========================  ===================================================

Every format exports the same points: those passing :func:`confidence_mask` (by default the
official demo's rule, dropping the lowest 3 % of confidences over all views; or conf >= `min_conf`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional

import numpy as np

from ...bundle import Bundle
from .atomic import writable_folder
from .colmap import require_photos, write_colmap
from .confidence import DEFAULT_CONF_QUANTILE, confidence_mask
from .errors import ExportError
from .glb import write_glb
from .ply import write_points_ply
from .splat_ply import require_gaussians, write_gaussians_ply, write_splat

__all__ = ["FORMATS", "GAUSSIAN_FORMATS", "DEFAULT_CONF_QUANTILE", "needing_gaussians", "ExportError", "confidence_mask", "export"]

_WRITERS: dict[str, tuple[str, Callable[[Bundle, np.ndarray, Path], Path]]] = {
    "ply": ("points.ply", write_points_ply),
    "gaussians": ("gaussians.ply", write_gaussians_ply),
    "splat": ("scene.splat", write_splat),
    "colmap": ("colmap", write_colmap),
    "glb": ("scene.glb", write_glb),
}

FORMATS: tuple[str, ...] = tuple(_WRITERS)
"""The format names :func:`export` accepts, in the order it writes them."""

GAUSSIAN_FORMATS: tuple[str, ...] = ("gaussians", "splat")
"""The formats that need the bundle's Gaussian parameters."""


def needing_gaussians(formats: Iterable[str]) -> list[str]:
    """Which of `formats` need Gaussian parameters (in :data:`GAUSSIAN_FORMATS` order): what every
    entry point checks before a run that will not make Gaussians."""
    wanted = set(formats)
    return [f for f in GAUSSIAN_FORMATS if f in wanted]


def export(bundle: Bundle, formats: Iterable[str], out_dir: str | Path, *,
           min_conf: Optional[float] = None) -> dict[str, Path]:
    """Write `bundle` in each of `formats` (names from :data:`FORMATS`) into `out_dir`.

    Returns {format name: path written} (a folder for ``colmap``). Points with confidence below
    the threshold (see :func:`confidence_mask`; `min_conf` is an absolute confidence, >= 1) are
    left out of every format. Everything that can be checked is checked before the first file is
    written; each file or folder then appears atomically, replacing an older one of that name.
    Raises :class:`ExportError` naming the format, file or folder at fault.
    """
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in _WRITERS]
    if unknown or not wanted:
        what = f"unknown export format {', '.join(map(repr, unknown))}" if unknown else "no export format given"
        raise ExportError(what, f"choose from {', '.join(FORMATS)}")
    if needing_gaussians(wanted):
        require_gaussians(bundle)
    if "colmap" in wanted:
        require_photos(bundle)
    folder = writable_folder(Path(out_dir))
    keep = confidence_mask(bundle.conf, min_conf)
    written: dict[str, Path] = {}
    for name in FORMATS:
        if name in wanted:
            filename, writer = _WRITERS[name]
            written[name] = writer(bundle, keep, folder / filename)
    return written
