"""The one request builder (:func:`plan_run`).

Stop-gap: issue-20's branch (merged here) lists this module in ``session/__init__`` but its commit
lacks the file; this is the old ``session.py``'s request builder, unchanged, until issue-20 commits
its own (then this file goes).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core.confidence import DEFAULT_DROP_PERCENT, ConfidenceCut
from ..core.exports import needing_gaussians, parse_formats
from ..core.options import ReconstructOptions
from .errors import RunError
from .settings import WorkerSettings


@dataclass(frozen=True)
class RunPlan:
    """One ``reconstruct`` request as both drivers build it (see :func:`plan_run`)."""

    photos: list[str]
    settings: WorkerSettings
    options: ReconstructOptions
    output: Path
    exports: list[str] = field(default_factory=list)
    export_dir: Optional[Path] = None
    cut: ConfidenceCut = ConfidenceCut()


def plan_run(photos: list[str], settings: WorkerSettings, output: Path, *, reference_view: Optional[int] = None,
             pose_drop_percent: float = DEFAULT_DROP_PERCENT, focal: str | float = "auto",
             import_gaussians: bool = True,
             exports: Sequence[str] = (), export_dir: Optional[Path] = None,
             cut: ConfidenceCut = ConfidenceCut(), keep_bundle: bool = False) -> RunPlan:
    """The request for `photos`. One rule for the Gaussians: they are computed when they are
    imported, when an export needs them, or when the bundle outlives the run (`keep_bundle`: a
    script may export them later), and not otherwise. `reference_view` is a 0-based photo index;
    `focal`: ``auto``, ``estimate`` or a 35 mm-equivalent focal length in mm (ReconstructOptions).
    The precision is the settings' (:class:`WorkerSettings`).
    Exports go to `export_dir` (default: beside `output`). Bad options raise the core's
    ``OptionError`` / ``ExportError``, naming the option, before any worker starts."""
    formats = parse_formats(exports)
    gaussians = import_gaussians or keep_bundle or bool(needing_gaussians(formats))
    options = ReconstructOptions(reference_view=reference_view, pose_drop_percent=pose_drop_percent,
                                 gaussians=gaussians, focal=str(focal), precision=settings.precision)
    if reference_view is not None and reference_view >= len(photos):
        raise RunError(f"reference view {reference_view} does not exist: there are {len(photos)} photos "
                       f"(indices 0 to {len(photos) - 1})", "choose one of the photos, or leave it automatic")
    return RunPlan(photos=list(photos), settings=settings, options=options, output=output, exports=formats,
                   export_dir=(export_dir if export_dir is not None else output.parent) if formats else None,
                   cut=cut)
