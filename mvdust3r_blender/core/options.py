"""What a user can choose for one reconstruction, typed once for every entry point.

:class:`ReconstructOptions` travels in the worker's ``reconstruct`` request, is what the engine's
pipeline reads, and is what the Python API, the panel and both command lines build. It validates
itself once, on construction, so a bad value is refused where it enters (an :class:`OptionError`
naming the option), never deep inside the run. Indices are 0-based everywhere below the panel
(whose "Reference Photo" counts from 1 for people, 0 meaning automatic).

:func:`add_arguments` gives both command lines (the engine's and ``blender -c mvdust3r``) the same
option names. Standard library only.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Optional

from .confidence import DEFAULT_DROP_PERCENT, ConfidenceCut, check_drop_percent
from .errors import OptionError

DEVICES = {
    "auto": ("Automatic", "The best available: CUDA/ROCm GPU, Apple GPU, else CPU"),
    "cuda": ("GPU (CUDA / ROCm)", "An NVIDIA or AMD GPU"),
    "mps": ("Apple GPU (MPS)", "The GPU of an Apple Silicon Mac"),
    "cpu": ("CPU", "Slow, but works everywhere"),
}
"""The compute devices a run can ask for, each with its label and explanation (``cuda:N`` names one
GPU of several); ``auto`` picks CUDA, then MPS, then the CPU (the engine's ``devices`` module)."""
FOCAL_CHOICES = ("auto", "estimate")
"""What ``focal`` accepts besides a focal length in mm (35 mm equivalent), e.g. ``"26"``."""
FOCAL_MM_RANGE = (4.0, 2000.0)
"""Plausible 35 mm-equivalent focal lengths (a 158° to 1.2° diagonal field of view)."""


def check_focal(value: object) -> str:
    """`value` as the ``focal`` option's canonical string: ``auto``, ``estimate`` or a number of mm (35 mm
    equivalent); :class:`OptionError` otherwise."""
    if isinstance(value, str) and value.strip().lower() in FOCAL_CHOICES:
        return value.strip().lower()
    try:
        mm = float(value) if not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError):
        mm = math.nan
    if not FOCAL_MM_RANGE[0] <= mm <= FOCAL_MM_RANGE[1]:
        raise OptionError(f"focal={value!r} is neither auto, estimate nor a focal length in mm",
                          f"give auto (EXIF, else estimated), estimate, or a 35 mm-equivalent focal length from "
                          f"{FOCAL_MM_RANGE[0]:g} to {FOCAL_MM_RANGE[1]:g} mm, e.g. 26")
    return f"{mm:g}"

PRECISIONS = {
    "auto": "The fastest that keeps the results: TF32 on NVIDIA GPUs, bfloat16 only where it changes nothing",
    "exact": "Float32 everywhere: the same numbers as the official code, and the slowest",
    "fast": "bfloat16 everywhere (weights too on NVIDIA GPUs): fastest, but cameras can move by degrees",
}
"""The numeric precision of a run, each with its one-line explanation (``docs/benchmarks.md`` has
the measured accuracy of each; the engine's ``precision`` module decides what each means on a device)."""
DEFAULT_PRECISION = "auto"


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions:
    """The choices of one reconstruction (the photos and the model are given beside them)."""

    reference_view: Optional[int] = None      # 0-based photo index that becomes the world frame; None: automatic
    gaussians: bool = True                    # compute the 3D Gaussians' parameters
    pose_drop_percent: float = DEFAULT_DROP_PERCENT  # least-confident share left out of focal/pose estimation
    precision: str = DEFAULT_PRECISION        # one of PRECISIONS: auto, exact, fast
    focal: str = "auto"   # "auto": EXIF when plausible, else estimated; "estimate"; or mm, 35 mm equivalent ("26")

    def __post_init__(self) -> None:
        if self.reference_view is not None and (isinstance(self.reference_view, bool)
                                                or not isinstance(self.reference_view, int)
                                                or self.reference_view < 0):
            raise OptionError(f"reference_view={self.reference_view!r} is not a photo index",
                              "give the 0-based index of a photo, or leave it unset for automatic")
        if not isinstance(self.gaussians, bool):
            raise OptionError(f"gaussians={self.gaussians!r} is not true or false")
        check_drop_percent("pose_drop_percent", self.pose_drop_percent)
        check_precision(self.precision)
        object.__setattr__(self, "focal", check_focal(self.focal))

    @property
    def focal_mm(self) -> Optional[float]:
        """The given 35 mm-equivalent focal length, or None for ``auto`` / ``estimate``."""
        return None if self.focal in FOCAL_CHOICES else float(self.focal)


def check_precision(value: str) -> str:
    """`value` if it is one of :data:`PRECISIONS`; :class:`OptionError` naming it otherwise."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise OptionError(f"precision={value!r} is not a precision", f"use one of {', '.join(PRECISIONS)}")
    return value


def add_arguments(parser: argparse.ArgumentParser, *, export_help: str, checkpoint_required: bool = False) -> None:
    """The options both command lines share, with one name each."""
    from .exports import FORMATS

    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help="MV-DUSt3R(+) checkpoint (.pth or .safetensors)")
    parser.add_argument("--device", help=f"compute device: {', '.join(DEVICES)} or cuda:N")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=None,
                        help="numeric precision: " + "; ".join(f"{k}: {v}" for k, v in PRECISIONS.items())
                        + f" (default: {DEFAULT_PRECISION}, or the add-on's preference)")
    parser.add_argument("--export", nargs="+", default=[], metavar="FORMAT",
                        help=f"{export_help}: {', '.join(FORMATS)} (space- or comma-separated)")
    parser.add_argument("--reference-view", type=int, default=None, metavar="I",
                        help="0-based index (in the order given) of the photo that becomes the world frame")
    parser.add_argument("--pose-drop-percent", type=float, default=DEFAULT_DROP_PERCENT, metavar="P",
                        help=f"share of least-confident pixels left out of pose estimation (default {DEFAULT_DROP_PERCENT:g})")
    parser.add_argument("--focal", default="auto", metavar="auto|estimate|MM",
                        help="the cameras' focal length: auto (from EXIF when plausible, else estimated), estimate "
                             "(always from the points), or MM, a 35 mm-equivalent focal length for every photo "
                             "(only the poses are solved)")
    parser.add_argument("--confidence-drop-percent", type=float, default=DEFAULT_DROP_PERCENT, metavar="P",
                        help=f"share of least-confident points left out of the import and exports (default {DEFAULT_DROP_PERCENT:g})")
    parser.add_argument("--min-confidence", type=float, default=None, metavar="C",
                        help="leave out points below this absolute confidence instead (the network's are >= 1)")


def options_from_arguments(args: argparse.Namespace, *, gaussians: bool) -> ReconstructOptions:
    """The :class:`ReconstructOptions` that :func:`add_arguments`' options chose."""
    return ReconstructOptions(reference_view=args.reference_view, gaussians=gaussians,
                              pose_drop_percent=args.pose_drop_percent, focal=args.focal,
                              precision=args.precision or DEFAULT_PRECISION)


def cut_from_arguments(args: argparse.Namespace) -> ConfidenceCut:
    """The :class:`ConfidenceCut` that :func:`add_arguments`' options chose."""
    return ConfidenceCut(confidence_drop_percent=args.confidence_drop_percent, min_confidence=args.min_confidence)
