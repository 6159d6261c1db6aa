"""What a splat file reader returns (:class:`SplatFile`) and how it fails (:class:`SplatFileError`,
made by :func:`fail` with the file's name in front)."""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..splat_field import SplatField


class SplatFileError(UserError):
    """A splat file cannot be imported; the message names the file and what is wrong with it."""

    code = "splat_file"


@dataclass(frozen=True)
class SplatFile:
    """What a splat file holds, ready to become splats."""

    path: Path
    format: str                     # "ply", "spz" or "gltf"
    field: SplatField               # OpenCV-like frame (see the package's docstring)
    sh_frame: np.ndarray = dataclass_field(default_factory=lambda: np.eye(3, dtype=np.float32))
    """float32 [3,3]: field-frame directions → the SH coefficients' frame."""


def fail(path: Path, problem: str, hint: str = "") -> SplatFileError:
    """The error saying `problem` of the file at `path` (named first), with `hint` on what to do."""
    return SplatFileError(f"{path}: {problem}", hint)
