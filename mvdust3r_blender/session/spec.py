"""The typed run spec: everything one reconstruction is asked to do, as one frozen value.

Each face turns its own surface into a :class:`RunSpec` once — the panel (:func:`~..run.panel_spec`),
the Python API (:func:`~..reconstruction.reconstruct`), batches (one template, its photos per scene)
and ``blender -c mvdust3r`` (through ``core.options``' arguments, as the engine's command line) —
and everything below takes that value: the session's worker sends it as one ``reconstruct``
request, the drivers import what it says. Each option has one name, one unit, one check and one
default, in the typed value it belongs to: :class:`~..core.options.ReconstructOptions` (what the
engine does), :class:`~..import_options.ImportOptions` (what the import creates), :class:`Exports`
and :class:`~.settings.WorkerSettings` (where the worker runs). A new run option is declared in one
of those, checked there, shown by the faces that offer it and read where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from ..core.confidence import ConfidenceCut
from ..core.exports import needing_gaussians, parse_formats
from ..core.options import ReconstructOptions
from ..import_options import ImportOptions
from .errors import RunError
from .settings import WorkerSettings


@dataclass(frozen=True)
class Exports:
    """What the worker writes beside the bundle: `formats` (``ply``, ``gaussians``, ``splat``,
    ``colmap``, ``glb``; checked) into `folder` (default: beside the bundle), leaving out the points
    `cut` drops (the import's cut, so the files hold what the scene shows)."""

    formats: tuple[str, ...] = ()
    folder: Optional[Path] = None
    cut: ConfidenceCut = ConfidenceCut()

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(parse_formats(self.formats)))
        if self.folder is not None:
            object.__setattr__(self, "folder", Path(self.folder))

    def folder_for(self, bundle: Path) -> Optional[Path]:
        """Where the files go for a run whose bundle is `bundle`; None when nothing is exported."""
        if not self.formats:
            return None
        return self.folder if self.folder is not None else bundle.parent


@dataclass(frozen=True)
class RunSpec:
    """One reconstruction: the `photos` (absolute paths, in order), what the engine does
    (`options`), what is imported (`imports`), what is exported (`exports`), where the worker runs
    (`worker`), and whether the bundle outlives the run (`keep_bundle`: a script may export it later).

    Built, it is consistent: the precision is the worker settings', and the Gaussians are computed
    exactly when they are imported, exported or kept in the bundle. A spec without photos is a
    template (a batch fills in each scene's). Raises :class:`RunError` for a reference view that is
    not one of the photos, and the core's ``OptionError`` / ``ExportError`` for a bad option."""

    photos: tuple[str, ...]
    worker: WorkerSettings
    options: ReconstructOptions = ReconstructOptions()
    imports: ImportOptions = field(default_factory=ImportOptions)
    exports: Exports = Exports()
    keep_bundle: bool = False

    def __post_init__(self) -> None:
        photos = tuple(str(p) for p in self.photos)
        object.__setattr__(self, "photos", photos)
        self.imports.check()
        gaussians = self.imports.gaussians or self.keep_bundle or bool(needing_gaussians(self.exports.formats))
        object.__setattr__(self, "options", replace(self.options, gaussians=gaussians,
                                                    precision=self.worker.precision))
        reference = self.options.reference_view
        if photos and reference is not None and reference >= len(photos):
            raise RunError(f"reference view {reference} does not exist: there are {len(photos)} photos "
                           f"(indices 0 to {len(photos) - 1})", "choose one of the photos, or leave it automatic")

    @property
    def importing(self) -> bool:
        """Whether anything is imported (points, cameras or Gaussians)."""
        return self.imports.points or self.imports.cameras or self.imports.gaussians
