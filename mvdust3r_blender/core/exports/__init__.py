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

Every format exports the same points: those passing the :class:`~..confidence.ConfidenceCut` given
(by default the official demo's rule, leaving out the least-confident 3 % over all views).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
import numpy as np

from ..atomic import write_failure
from ..bundle import Bundle
from ..confidence import ConfidenceCut
from .atomic import writable_folder
from .colmap import require_photos, write_colmap
from .errors import ExportError, UnknownFormatError
from .glb import write_glb
from .ply import write_points_ply
from .splat_ply import require_gaussians, write_gaussians_ply, write_splat

__all__ = ["FORMATS", "GAUSSIAN_FORMATS", "ExportError", "UnknownFormatError", "export", "needing_gaussians", "parse_formats"]

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


def parse_formats(words: Iterable[str]) -> list[str]:
    """Format names from command-line words, each a name or a comma-separated list (``ply,glb`` and
    ``ply glb`` both work), in order, without repeats; :class:`UnknownFormatError` (an ``ExportError``
    and an ``OptionError``) names an unknown one: the one check of format names."""
    names = [name.strip() for word in words for name in word.split(",") if name.strip()]
    unknown = [name for name in names if name not in _WRITERS]
    if unknown:
        raise UnknownFormatError(f"unknown export format {', '.join(map(repr, unknown))}", f"choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def export(bundle: Bundle, formats: Iterable[str], out_dir: str | Path, *,
           cut: ConfidenceCut = ConfidenceCut()) -> dict[str, Path]:
    """Write `bundle` in each of `formats` (names from :data:`FORMATS`) into `out_dir`.

    Returns {format name: path written} (a folder for ``colmap``). Points that do not pass `cut`
    are left out of every format. Everything that can be checked is checked before the first file is
    written; each file or folder then appears atomically, replacing an older one of that name.
    Raises :class:`ExportError` naming the format, file or folder at fault.
    """
    wanted = parse_formats(formats)
    if not wanted:
        raise ExportError("no export format given", f"choose from {', '.join(FORMATS)}")
    if needing_gaussians(wanted):
        require_gaussians(bundle)
    if "colmap" in wanted:
        require_photos(bundle)
    folder = writable_folder(Path(out_dir))
    keep = cut.keep(bundle.conf)
    written: dict[str, Path] = {}
    for name in FORMATS:
        if name in wanted:
            filename, writer = _WRITERS[name]
            try:
                written[name] = writer(bundle, keep, folder / filename)
            except OSError as exc:  # a full disk, a folder gone meanwhile: name the file, never a bug
                raise ExportError(*write_failure(folder / filename, exc)) from exc
    return written
