"""Exports of a reconstruction bundle to files other tools read.

numpy and the standard library only, so Blender's own Python (no torch) can call them too.

===============  ===========================  =================================================
format name      written to (in `out_dir`)    what
===============  ===========================  =================================================
``ply``          ``points.ply``               binary PLY point cloud: x y z, red green blue,
                                              confidence, view
``gaussians``    ``gaussians.ply``            3DGS PLY in the INRIA layout (see :mod:`.splat_ply`)
``splat``        ``scene.splat``              the same Gaussians as a compact web-viewer ``.splat``
``colmap``       ``colmap/``                  COLMAP text model in ``sparse/0`` + ``images/``
``glb``          ``scene.glb``                glTF 2.0 binary: points + one camera per view
``gltf-splats``  ``splats.glb``               the Gaussians as glTF with ``KHR_gaussian_splatting``
``spz``          ``scene.spz``                the Gaussians as Niantic's compressed SPZ (version 3)
===============  ===========================  =================================================

Every format exports the same points: those passing the :class:`~..confidence.ConfidenceCut` given
(by default the official demo's rule, leaving out the least-confident 3 % over all views).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import write_failure
from ..alignment import Alignment, aligned_bundle, alignment_of
from ..bundle import Bundle
from ..confidence import ConfidenceCut, empty_cut_warning
from .atomic import writable_folder
from .colmap import require_photos, write_colmap
from .errors import ExportError, UnknownFormatError
from .glb import write_glb
from .gltf_splats import write_gltf_splats
from .ply import write_points_ply
from .splat_ply import require_gaussians, write_gaussians_ply, write_splat
from .spz import write_spz

__all__ = ["FORMATS", "GAUSSIAN_FORMATS", "EmptyExportWarning", "ExportError", "UnknownFormatError", "export",
           "needing_gaussians", "output_name", "parse_formats"]

_WRITERS: dict[str, tuple[str, Callable[[Bundle, np.ndarray, Path], Path]]] = {
    "ply": ("points.ply", write_points_ply),
    "gaussians": ("gaussians.ply", write_gaussians_ply),
    "splat": ("scene.splat", write_splat),
    "colmap": ("colmap", write_colmap),
    "glb": ("scene.glb", write_glb),
    "gltf-splats": ("splats.glb", write_gltf_splats),
    "spz": ("scene.spz", write_spz),
}

FORMATS: tuple[str, ...] = tuple(_WRITERS)
"""The format names :func:`export` accepts, in the order it writes them."""

GAUSSIAN_FORMATS: tuple[str, ...] = ("gaussians", "splat", "gltf-splats", "spz")
"""The formats that need the bundle's Gaussian parameters."""


def output_name(fmt: str) -> str:
    """The file (or, for ``colmap``, folder) name format `fmt` writes in the export folder."""
    return _WRITERS[fmt][0]


def needing_gaussians(formats: Iterable[str]) -> list[str]:
    """Which of `formats` need Gaussian parameters (in :data:`GAUSSIAN_FORMATS` order): what every
    entry point checks before a run that will not make Gaussians."""
    wanted = set(formats)
    return [f for f in GAUSSIAN_FORMATS if f in wanted]


def parse_formats(words: Iterable[str] | str) -> list[str]:
    """Format names from command-line words, each a name or a comma-separated list (``ply,glb`` and
    ``ply glb`` both work), in order, without repeats; :class:`UnknownFormatError` (an ``ExportError``
    and an ``OptionError``) names an unknown one: the one check of format names. One string is one
    word (``exports="ply"`` is the PLY format, not the letters p, l, y)."""
    if isinstance(words, str):
        words = [words]
    elif not isinstance(words, Iterable):
        raise UnknownFormatError(f"exports={words!r} is not a list of format names", f"choose from {', '.join(FORMATS)}")
    words = list(words)
    if not all(isinstance(word, str) for word in words):
        raise UnknownFormatError(f"exports={words!r} is not a list of format names", f"choose from {', '.join(FORMATS)}")
    names = [name.strip() for word in words for name in word.split(",") if name.strip()]
    unknown = [name for name in names if name not in _WRITERS]
    if unknown:
        raise UnknownFormatError(f"unknown export format {', '.join(map(repr, unknown))}", f"choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


class EmptyExportWarning(UserWarning):
    """The cut leaves out every point, so the exports hold cameras only."""


def _warn(message: str) -> None:
    warnings.warn(message, EmptyExportWarning, stacklevel=3)


def export(bundle: Bundle, formats: Iterable[str] | str, out_dir: str | Path, *,
           cut: ConfidenceCut = ConfidenceCut(), align: str = "none", alignment: Optional[Alignment] = None,
           on_warning: Optional[Callable[[str], None]] = None) -> dict[str, Path]:
    """Write `bundle` in each of `formats` (names from :data:`FORMATS`) into `out_dir`.

    Returns {format name: path written} (a folder for ``colmap``). Points that do not pass `cut`
    are left out of every format. With `align` ``level`` every format is written in the bundle's
    recorded level frame (:func:`~..alignment.aligned_bundle`: gravity along +y, the floor at y = 0,
    as COLMAP and glTF after its usual flip expect); ``first_camera`` and ``none`` keep the bundle's
    world, which Blender's first-camera rule already shows upright-as-shot. `alignment`, when given,
    is where an import stands in Blender (after Level & Ground or a scale, as its collection
    records it): every format is then written as that import stands, in place of `align`'s frame.
    Everything that can be checked is checked before the first file is
    written; each file or folder then appears atomically, replacing an older one of that name.
    Raises :class:`ExportError` naming the format, file or folder at fault. A cut that leaves out
    every point is said through `on_warning` (default: an :class:`EmptyExportWarning`).
    """
    wanted = parse_formats(formats)
    if not wanted:
        raise ExportError("no export format given", f"choose from {', '.join(FORMATS)}")
    if needing_gaussians(wanted):
        require_gaussians(bundle)
    if "colmap" in wanted:
        require_photos(bundle)
    empty = empty_cut_warning(cut, bundle.conf)
    if empty is not None:  # the cameras are still worth writing, but a 0-point file is never silent
        (on_warning or _warn)(f"{Path(out_dir)}: the exports hold no points: {empty}")
    folder = writable_folder(Path(out_dir))
    keep = cut.keep(bundle.conf)
    if alignment is None:
        alignment = alignment_of(bundle, align)   # an unknown `align` is an OptionError
        if alignment.method == "level":
            bundle = aligned_bundle(bundle, alignment)
    else:
        bundle = aligned_bundle(bundle, alignment)
    written: dict[str, Path] = {}
    for name in FORMATS:
        if name in wanted:
            filename, writer = _WRITERS[name]
            try:
                written[name] = writer(bundle, keep, folder / filename)
            except OSError as exc:  # a full disk, a folder gone meanwhile: name the file, never a bug
                raise ExportError(*write_failure(folder / filename, exc)) from exc
    return written
