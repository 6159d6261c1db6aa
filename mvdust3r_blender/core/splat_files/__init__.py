"""Reading 3D Gaussian splat files other tools make (numpy and the standard library, no bpy): the
INRIA 3DGS PLY with spherical harmonics up to degree 3 (:mod:`.ply`), Niantic's SPZ, versions 2 and 3
(:mod:`.spz`), and glTF (.glb / .gltf) with ``KHR_gaussian_splatting`` (:mod:`.gltf`).

Each reader checks what it can before it allocates (the header's count against the file's length
and against the memory this machine has free, :mod:`.checks`), decodes with whole-array numpy (no
per-Gaussian Python) and returns a :class:`SplatFile`: a :class:`~..splat_field.SplatField` in the
OpenCV-like frame the bundle uses (x right, y down, z forward: the INRIA PLY's own; SPZ's
right-up-back and glTF's +Y up are turned half about x), and the rotation that takes its directions
into the frame its SH coefficients were fitted in (identity but for glTF node rotations). Anything
wrong raises :class:`SplatFileError` naming the file and the problem.
"""
from __future__ import annotations

import os
from pathlib import Path

from .checks import check_values
from .file import SplatFile, SplatFileError, fail
from .gltf import read_gltf
from .ply import read_ply
from .spz import read_spz

__all__ = ["EXTENSIONS", "SplatFile", "SplatFileError", "read_splat_file"]

EXTENSIONS = (".ply", ".spz", ".glb", ".gltf")
"""The file name endings :func:`read_splat_file` reads."""


def read_splat_file(path: str | os.PathLike[str]) -> SplatFile:
    """Read the splat file at `path` (by its ending: .ply, .spz, .glb or .gltf)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise fail(path, f"is not a splat file this add-on reads (a '{suffix}' file)",
                   f"choose a {', '.join(EXTENSIONS)} file")
    if not path.is_file():
        raise fail(path, "does not exist" if not path.exists() else "is not a file", "choose an existing file")
    try:
        if suffix == ".ply":
            result = read_ply(path)
        elif suffix == ".spz":
            result = read_spz(path)
        else:
            result = read_gltf(path)
    except OSError as exc:
        raise fail(path, f"cannot be read ({exc.strerror or exc})") from exc
    check_values(path, result.field)
    return result
