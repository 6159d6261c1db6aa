"""One reconstruction that blocks until it is in the scene: for scripts, other add-ons and the command line.

The panel's run (:mod:`.run`) never blocks Blender; a script wants the opposite, a call that
returns the finished collection. :func:`reconstruct` is the API's face: it turns its keywords into
a :class:`~.session.RunSpec` once; :func:`run_spec` runs a spec (batches and the command line call it
too), through :mod:`.session` as the panel does, so the model loaded by one call is reused by the
next, whoever makes it. Settings
not given come from the add-on's preferences, the worker's Python first from
``$MVDUST3R_WORKER_PYTHON`` (tests, farms).

Errors name the input and the fix, all under the core's ``UserError``: ``RunError`` (photos,
options) and ``SetupError`` (runtime, checkpoint) from :mod:`.session`, ``OptionError`` (an option
out of range), ``WorkerError`` (the worker failed or died), ``BundleError`` (an unreadable bundle),
``ExportError``. A failed import leaves the scene as it was.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import bpy

from . import run, session
from .client.remote import RemoteTarget
from .core.alignment import Alignment
from .core.atomic import check_output, unwritable, write_failure
from .core.bundle import Bundle, BundleError, read_bundle
from .core.confidence import DEFAULT_DROP_PERCENT, make_cut
from .core.exports import export as export_bundle
from .core.exports import parse_formats
from .core.options import DEFAULT_ALIGN, ReconstructOptions, check_align
from .core.photos import skipped_message, unsupported_photos
from .core.protocol.events import Event, ProgressEvent, ResultEvent
from .import_options import ImportOptions
from .importers.placement import standing
from .importers.result import Reconstruction
from .importers.scene import ImportResult, bundle_warning_lines, import_bundle
from .session import SESSION, Exports, PathLike, PhotoSource, RunError, RunSpec, WorkerSettings

ProgressCallback = Callable[[str, float], None]
"""Called with (stage, fraction of that stage done) as the worker reports progress."""


@dataclass
class Result:
    """One finished reconstruction: the bundle on disk and what was imported from it."""

    bundle_path: Path                 # the reconstruction bundle (.npz); see export()
    photos: list[str]                 # absolute paths, in the order the network saw them
    views: int
    points: int                       # per-pixel points in the bundle (views × grid pixels)
    timings: dict[str, float]         # seconds per worker stage, "total", and "import"
    imported: Optional[ImportResult]  # None when nothing was imported
    worker_pid: Optional[int] = None  # the worker process that computed it
    model_reused: bool = False        # the checkpoint was already loaded in the worker
    loads: int = 0                    # checkpoints the worker had loaded after this request
    exports: dict[str, Path] = field(default_factory=dict)  # format -> what the worker wrote
    warnings: list[str] = field(default_factory=list)       # photos skipped, degenerate input, ... (and the import's)

    @property
    def collection(self) -> Optional[bpy.types.Collection]:
        return self.imported.collection if self.imported is not None else None

    @property
    def objects(self) -> list[bpy.types.Object]:
        """The objects created: the point cloud, the cameras, the Gaussians (those imported)."""
        if self.imported is None:
            return []
        found = [self.imported.points, *self.imported.cameras, self.imported.gaussians]
        return [o for o in found if o is not None]


def reconstruct(photos: PhotoSource, checkpoint: Optional[PathLike] = None, *,
                scene: Optional[bpy.types.Scene] = None, output: Optional[PathLike] = None,
                timeout: Optional[float] = None, on_progress: Optional[ProgressCallback] = None,
                **options: Any) -> Result:
    """Reconstruct `photos` (a folder or a list) and import the result into a new collection; blocks.

    `options` are :func:`api_spec`'s keywords, where each has its default. `checkpoint`, `device`
    (``auto``, ``cuda``, ``mps``, ``cpu``), `precision` (``auto``, ``exact``, ``fast``: see
    ``core.options.PRECISIONS``) and `python` (the worker's interpreter) default to the add-on's preferences (`python` to ``$MVDUST3R_WORKER_PYTHON``
    first). `output`: where the bundle is written (default: a new temporary folder; it is kept, for
    :func:`export`). `reference_view`: 0-based index of the photo that becomes the world frame.
    `pose_drop_percent`: the share of least-confident pixels left out of the pose estimation.
    `focal`: the cameras' focal length — ``"auto"`` (EXIF when plausible, else estimated),
    ``"estimate"``, or a 35 mm-equivalent focal length in mm for every photo (then only the poses
    are solved); the bundle's ``meta["focal_source"]`` says per photo where its focal came from.
    `import_*` choose what is created (all False: nothing is imported); the other keywords are
    :class:`~.import_options.ImportOptions` fields (``align``: ``level`` — upright, the floor at
    z = 0, the origin under the centre; the default, or the preferences' — ``first_camera`` or
    ``none``; the exports are written in the same frame), ``confidence_drop_percent``,
    ``min_confidence``, ``name``, ...). `scene` defaults to the context's. `timeout` (seconds)
    cancels a request that takes longer. Ctrl-C cancels the request in the worker too. `exports`
    (``ply``, ``gaussians``, ``splat``, ``colmap``, ``glb``) are written by the worker into
    `export_dir` (default: beside the bundle), leaving out the points the import hides (by default
    the least-confident 3 %); ``Result.exports`` lists them. The bundle keeps the Gaussians, for a
    later :func:`export`.
    `remote`: run on another machine over ssh (``user@host`` or ``ssh://user@host:port``, with
    `ssh_command`, default ``ssh``; docs/remote.md): the photos are sent there and the results
    come back; `python` (default ``python3``) and `checkpoint` are then the remote's.
    """
    template = api_spec((), checkpoint=checkpoint, **options)  # the options first: no I/O
    spec = replace(template, photos=tuple(session.photo_list(photos)))
    result = run_spec(spec, scene=scene, output=output, timeout=timeout, on_progress=on_progress)
    if isinstance(photos, (str, os.PathLike)) and (skipped := unsupported_photos(Path(photos))):
        result.warnings.insert(0, skipped_message(skipped))  # the folder's HEIC/raw files, named
    return result


def api_spec(photos: Sequence[str], *, checkpoint: Optional[PathLike] = None, device: Optional[str] = None,
             precision: Optional[str] = None, python: Optional[PathLike] = None,
             remote: Union[str, RemoteTarget, None] = None, ssh_command: Optional[str] = None,
             reference_view: Optional[int] = None, pose_drop_percent: float = DEFAULT_DROP_PERCENT,
             focal: str | float = "auto", import_points: bool = True, import_cameras: bool = True,
             import_gaussians: bool = True, exports: Sequence[str] = (), export_dir: Optional[PathLike] = None,
             worker: Optional[WorkerSettings] = None, **import_options: Any) -> RunSpec:
    """The API's keywords (:func:`reconstruct`'s, :func:`~.batch.reconstruct_many`'s) as one
    :class:`~.session.RunSpec` for `photos` (none: a batch's template). The bundle is kept, for
    :func:`export`; the exports leave out the points the import hides. `worker`: settings already
    resolved (a batch on a Ray cluster), instead of resolving the keywords'."""
    imports = ImportOptions.from_keywords(points=import_points, cameras=import_cameras,
                                          gaussians=import_gaussians, **with_preferred_align(import_options))
    if worker is None:
        worker = WorkerSettings.resolve(python, checkpoint, device, remote, ssh_command, precision)
    return RunSpec(photos=tuple(photos), worker=worker,
                   options=ReconstructOptions(reference_view=reference_view, pose_drop_percent=pose_drop_percent,
                                              focal=str(focal)),
                   imports=imports,
                   exports=Exports(formats=tuple(parse_formats(exports)),  # one string is one format
                                   folder=Path(export_dir) if export_dir is not None else None, cut=imports.cut),
                   keep_bundle=True)


def with_preferred_align(options: dict[str, Any]) -> dict[str, Any]:
    """Import options with the preferences' ``align`` where a script gave none."""
    if "align" in options:
        return options
    return {**options, "align": session.preferred_align()}


def run_spec(spec: RunSpec, *, scene: Optional[bpy.types.Scene] = None, output: Optional[PathLike] = None,
             timeout: Optional[float] = None, on_progress: Optional[ProgressCallback] = None) -> Result:
    """Run `spec` and import what it asks for into `scene` (default: the context's); blocks. The
    bundle goes to `output` (default: a new temporary folder). See :func:`reconstruct`."""
    target = scene if scene is not None else bpy.context.scene
    if spec.importing and target is None:
        raise RunError("there is no scene to import into", "pass scene=")
    if run.active() is not None:
        raise RunError("a reconstruction started from the panel is running", "wait for it or cancel it first")
    if output is not None and (problem := unwritable(Path(output))) is not None:
        raise RunError(*problem)  # before the job: never minutes of work, then nowhere to put it
    bundle_path = Path(output) if output is not None else Path(tempfile.mkdtemp(dir=results_folder())) / "bundle.npz"
    bundle_path.parent.mkdir(parents=True, exist_ok=True)
    handle = SESSION.submit(spec, bundle_path, session.log_path())

    def follow(event: Event) -> None:
        if on_progress is not None and isinstance(event, ProgressEvent):
            on_progress(event.stage, event.fraction)

    try:
        final = handle.wait(timeout, on_event=follow)
    except (KeyboardInterrupt, TimeoutError):
        if handle.client.alive:
            handle.cancel()
        raise
    finally:
        handle.close()
    assert isinstance(final, ResultEvent)
    result = Result(bundle_path=Path(final.bundle), photos=list(spec.photos), views=final.views,
                    points=final.points, timings=dict(final.timings), imported=None, worker_pid=handle.client.pid,
                    model_reused=final.model_reused, loads=final.loads,
                    exports={name: Path(path) for name, path in final.exports.items()})
    if spec.importing:
        assert target is not None
        started = time.perf_counter()
        result.imported = import_bundle(result.bundle_path, spec.imports, target)
        result.timings["import"] = time.perf_counter() - started
        result.warnings += result.imported.warnings
    else:
        result.warnings += bundle_warning_lines(read_bundle(result.bundle_path))
    return result


def export(result_or_bundle: Union[Result, ImportResult, Bundle, PathLike], formats: Sequence[str], out_dir: PathLike,
           *, confidence_drop_percent: Optional[float] = None, min_confidence: Optional[float] = None,
           align: Optional[str] = None) -> dict[str, Path]:
    """Write a reconstruction (a :class:`Result`, what :func:`~.api.import_bundle` returned, a
    :class:`~.core.bundle.Bundle` or a bundle path) in `formats` (``ply``, ``gaussians``, ``splat``,
    ``colmap``, ``glb``) into `out_dir`; {format: path written}.
    Points below the cut are left out: `min_confidence` (absolute), else `confidence_drop_percent`
    (default for a bundle: the least-confident 3 %). `align`: ``level`` (the default for a bundle, as for a run's
    exports) writes them in the frame a level import lands in (the bundle's ``meta["alignment"]``);
    ``none`` and ``first_camera`` in the bundle's own world. Without `align`, an import is written as
    it stands in the scene (as imported, or levelled and scaled since by the Placement operators),
    and without a cut, with the points it shows now (the Result panel's cut).
    Raises the core's ``ExportError`` naming the format or file at fault."""
    cut = make_cut(confidence_drop_percent, min_confidence)
    standing_as: Optional[Alignment] = None
    if isinstance(result_or_bundle, (Result, ImportResult)):
        if result_or_bundle.bundle_path is None:
            raise BundleError(f"'{result_or_bundle.collection.name}' was imported from data, not a bundle file",
                              "export the Bundle object that was imported")
        bundle = read_bundle(result_or_bundle.bundle_path)
        shown = Reconstruction.of(result_or_bundle.collection) if result_or_bundle.collection is not None else None
        if shown is not None:
            standing_as = standing(shown.collection) if align is None else None
            if confidence_drop_percent is None and min_confidence is None:
                cut = shown.cut  # the points shown now, as the Result panel's Export… writes them
    elif isinstance(result_or_bundle, Bundle):
        bundle = result_or_bundle
    else:
        bundle = read_bundle(result_or_bundle)
    written: dict[str, Path] = export_bundle(bundle, formats, Path(out_dir), cut=cut, alignment=standing_as,
                                             align=check_align(align if align is not None else DEFAULT_ALIGN))
    return written


_RESULTS: list[Path] = []  # this process's folder of bundles written without `output` (made on first use)


def results_folder() -> Path:
    """The temporary folder that holds the bundles of runs given no `output`; it is removed when
    Blender (this Python) exits, so scripted runs leave nothing behind in the temporary directory."""
    if not _RESULTS:
        _RESULTS.append(Path(tempfile.mkdtemp(prefix="mvdust3r-results-")))
        atexit.register(shutil.rmtree, _RESULTS[0], True)
    return _RESULTS[0]


def fresh_file() -> None:
    """Replace the open file with an empty one (the extension stays enabled): each batch scene
    and command-line run starts from nothing, so its .blend holds only its own reconstruction."""
    bpy.ops.wm.read_homefile(use_empty=True)


def show_through_first_camera(result: Result) -> None:
    """Make the first imported camera the scene camera, with its photo's resolution (for a saved file)."""
    from .importers.cameras import set_render_camera

    if result.imported is not None and result.imported.cameras:
        scene = bpy.context.scene
        assert scene is not None
        set_render_camera(scene, result.imported.cameras[0])


def save_blend(path: PathLike) -> Path:
    """Save the open file as a copy at `path`, atomically (a crash never leaves half a file there
    for a resumed batch to mistake for a finished scene)."""
    final = Path(path).absolute()
    try:
        check_output(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Written under its own name in a hidden folder beside it, then moved: Blender's "Saved" line
        # names the file the user asked for, not a temporary one.
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".mvdust3r-saving-") as work:
            partial = Path(work) / final.name
            try:
                result = bpy.ops.wm.save_as_mainfile(filepath=str(partial), copy=True, check_existing=False)
            except RuntimeError as exc:  # Blender's message names the hidden folder, not the user's file
                raise OSError(f"Blender could not write it ({exc})".replace(str(partial), str(final))) from None
            if result != {"FINISHED"} or not partial.is_file():
                raise OSError("Blender could not write it")
            os.replace(partial, final)
    except OSError as exc:
        raise RunError(*write_failure(final, exc)) from None
    return final


__all__ = ["PhotoSource", "ProgressCallback", "Result", "api_spec", "export", "fresh_file", "reconstruct", "run_spec",
           "save_blend", "show_through_first_camera"]

