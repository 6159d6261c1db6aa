"""Many scenes in one go: a hundred photo folders into a hundred .blend files overnight.

One worker serves every scene (the model loads once). Each scene starts from an empty file,
is reconstructed and imported, and gets ``<out_dir>/<name>.blend`` (saved atomically) and/or its
exports in ``<out_dir>/<name>/``. A scene is finished when its record ``<out_dir>/<name>.json``
exists, lists every output asked for, those outputs exist, and its stamp — what made the result:
each photo's path and SHA-256, the checkpoint's SHA-256, the options and the precision — equals
this run's: the record is written last, so a crash mid-scene leaves none and a re-run does the
scene again, while finished scenes are skipped (resume). A photo edited in place, another
checkpoint at the same path or a changed option makes the scene run again. A failed scene is reported and the batch goes on. Progress goes to
`log` (stderr), a summary table at the end.

Note for interactive use: with ``blend=True`` the open file is replaced by each scene's.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, TextIO, Union

from .batch_records import BatchReport, SceneOutcome, finished_record, scene_stamp, write_record
from .client.remote import RemoteTarget
from .core.atomic import unwritable
from .core.errors import OptionError
from .core.exports import parse_formats
from .core.photos import skipped_message, unsupported_photos
from .farm_batch import farm_worker, preferred_address, run_on_ray
from .reconstruction import api_spec, fresh_file, run_spec, save_blend, show_through_first_camera
from .session import PathLike, PhotoSource, RunError, RunSpec, SetupError, photo_list

Scenes = Union[Sequence[PhotoSource], Mapping[str, PhotoSource]]
"""Folders or photo lists (named after their folder), or {name: folder or photo list}."""


def scene_names(scenes: Scenes) -> list[tuple[str, PhotoSource]]:
    """(file-safe name, photos) per scene: the mapping's keys, else the folder's (or the photos'
    folder's) name; repeated names get ``-2``, ``-3``, ..."""
    if isinstance(scenes, Mapping):
        named = [(str(k), v) for k, v in scenes.items()]
    else:
        named = []
        for source in scenes:
            if isinstance(source, (str, os.PathLike)):
                name = Path(source).absolute().name
            else:
                parents = {Path(p).absolute().parent.name for p in source}
                name = parents.pop() if len(parents) == 1 else "scene"
            named.append((name, source))
    result, seen = [], set()
    for name, source in named:
        base = re.sub(r"[^\w.-]+", "_", name).strip("._") or "scene"
        unique, k = base, 1
        while unique in seen:
            k += 1
            unique = f"{base}-{k}"
        seen.add(unique)
        result.append((unique, source))
    return result


def reconstruct_many(scenes: Scenes, out_dir: PathLike, *, checkpoint: Optional[PathLike] = None,
                     device: Optional[str] = None, precision: Optional[str] = None, python: Optional[PathLike] = None, blend: bool = True,
                     formats: Sequence[str] = (), resume: bool = True,
                     timeout: Optional[float] = None, log: Optional[TextIO] = None,
                     remote: Union[str, RemoteTarget, None] = None, ssh_command: Optional[str] = None,
                     ray: Optional[str] = None, **options: Any) -> BatchReport:
    """Reconstruct each scene (a folder or a list of photos) into `out_dir`.

    Per scene: ``<name>.blend`` when `blend`, the `formats` (``ply``, ``gaussians``, ``splat``,
    ``colmap``, ``glb``) in ``<name>/``, and the record ``<name>.json``. `checkpoint`, `device`, `precision`,
    `python`, `remote`, `ssh_command` as
    for :func:`~.reconstruction.reconstruct` (settings are resolved once, before the first scene:
    a missing runtime or checkpoint raises :class:`SetupError` at once). With `resume`, scenes
    finished by an earlier run are skipped. `options`: ``import_points`` / ``import_cameras`` /
    ``import_gaussians``, ``reference_view``, ``pose_drop_percent``, ``focal`` and import options
    (``confidence_drop_percent`` / ``min_confidence`` also cut the exports), passed to ``reconstruct``.
    `log`: where progress and the summary go (default stderr). Returns the :class:`BatchReport`;
    a failed scene does not stop the batch (check ``report.ok``). `ray`: compute on the Ray
    cluster at this address (``auto``, ``head:6379``, ``ray://head:10001``; docs/farm.md), with
    `checkpoint` a path on its nodes or a released file's name (default: the preferences'); without
    `ray`, `remote` and `python`, the preferences' Worker choice Ray Cluster counts. Scenes the
    cluster lost and tried again say why in ``SceneOutcome.retries`` and the summary.
    """
    if not (blend or parse_formats(formats)):
        raise OptionError("nothing to write", "ask for a .blend (blend=True) or export formats")
    if ray is not None and (remote is not None or ssh_command is not None):
        raise SetupError("ray= and remote= are two places to compute", "give one of them")
    if ray is None and remote is None and python is None and ssh_command is None:
        ray = preferred_address()
    worker = farm_worker(python, checkpoint, device, precision) if ray is not None else None
    template = api_spec((), checkpoint=checkpoint, device=device, precision=precision, python=python,
                        remote=remote, ssh_command=ssh_command, exports=formats, worker=worker, **options)
    return run_batch(scenes, out_dir, template, blend=blend, resume=resume, timeout=timeout, log=log, ray=ray)


def run_batch(scenes: Scenes, out_dir: PathLike, template: RunSpec, *, blend: bool = True, resume: bool = True,
              timeout: Optional[float] = None, log: Optional[TextIO] = None, ray: Optional[str] = None) -> BatchReport:
    """Run `template` (a :class:`~.session.RunSpec` without photos) on each scene; see :func:`reconstruct_many`.
    With `ray` (an address), the scenes still to do are computed on that Ray cluster (:mod:`.farm_batch`)."""
    stream = log if log is not None else sys.stderr
    started = time.perf_counter()
    formats = template.exports.formats
    if not (blend or formats):
        raise OptionError("nothing to write", "ask for a .blend (blend=True) or export formats")
    settings = template.worker
    folder = Path(out_dir).absolute()
    problem = unwritable(folder / "scene.json")  # every scene writes its record there
    if problem is not None:
        raise RunError(problem[0].replace(f"{folder / 'scene.json'}", str(folder)), problem[1])
    wanted = (["blend"] if blend else []) + list(formats)
    named = scene_names(scenes)
    report = BatchReport(out_dir=folder, scenes=[])

    def say(text: str) -> None:
        print(f"[mvdust3r] {text}", file=stream, flush=True)

    where = f" on {settings.remote}" if settings.remote is not None else \
        f" on the Ray cluster {ray}" if ray is not None else ""
    on_ray: list[tuple[SceneOutcome, RunSpec, float]] = []
    say(f"{len(named)} scene{'s' if len(named) != 1 else ''} → {folder} (checkpoint {settings.checkpoint}{where}, "
        f"device {settings.device}, precision {settings.precision})")
    for index, (name, source) in enumerate(named, 1):
        outcome = SceneOutcome(name=name)
        report.scenes.append(outcome)
        label = f"{index}/{len(named)} {name}"
        scene_started = time.perf_counter()
        try:
            photos = photo_list(source)
            if isinstance(source, (str, os.PathLike)) and (skipped := unsupported_photos(Path(source))):
                say(f"{label}: {skipped_message(skipped)}")
            spec = _scene_spec(template, photos, outcome.name, folder, blend)
            stamp = scene_stamp(spec)
            record = finished_record(folder / f"{name}.json", stamp, wanted) if resume else None
            if record is not None:
                outcome.status = "skipped"
                outcome.views, outcome.points = int(record["views"]), int(record["points"])
                outcome.seconds = float(record["seconds"])
                outcome.outputs = {k: Path(v) for k, v in record["outputs"].items()}
                say(f"{label}: already done, skipped")
                continue
            if ray is not None:  # computed on the cluster below, all at once
                on_ray.append((outcome, spec, scene_started))
                continue
            _run_scene(outcome, spec, stamp, folder, blend, timeout, stage_printer(say, label), scene_started)
            say(f"{label}: done in {outcome.seconds:.1f} s ({outcome.views} views, {outcome.points} points)")
        except Exception as exc:  # noqa: BLE001 -- the batch's boundary: report the scene, go on with
            # the next (a worker that died is restarted by the next scene's request).
            outcome.status = "failed"
            outcome.seconds = time.perf_counter() - scene_started
            ours = type(exc).__module__.startswith(__package__ or "")  # our errors' messages say it all
            outcome.error = (str(exc) if ours else f"{type(exc).__name__}: {exc}").replace("\n", " | ")
            say(f"{label}: FAILED: {outcome.error}")
    if on_ray:
        assert ray is not None
        run_on_ray(on_ray, folder, say, address=ray, blend=blend, timeout=timeout)
    report.seconds = time.perf_counter() - started
    for line in report.table().splitlines():
        print(line, file=stream, flush=True)
    return report


def stage_printer(say: Callable[[str], None], label: str) -> Callable[[str, float], None]:
    """A progress callback that prints a line when the worker enters a new stage (not per fraction)."""
    last = [""]

    def on_progress(stage: str, fraction: float) -> None:
        if stage != last[0]:
            last[0] = stage
            say(f"{label}: {stage}" if label else stage)

    return on_progress


def _scene_spec(template: RunSpec, photos: list[str], name: str, folder: Path, blend: bool) -> RunSpec:
    """The template filled in for one scene: its photos, its collection's name (unless the template
    names one), its exports' folder; nothing is imported when no .blend is written."""
    imports = replace(template.imports, name=template.imports.name if template.imports.name is not None else name)
    if not (blend and template.importing):
        imports = replace(imports, points=False, cameras=False, gaussians=False)
    return replace(template, photos=tuple(photos), imports=imports,
                   exports=replace(template.exports, folder=folder / name),
                   keep_bundle=False)  # a scene's bundle goes with it: Gaussians only if imported or exported


def _run_scene(outcome: SceneOutcome, spec: RunSpec, stamp: dict[str, Any], folder: Path, blend: bool,
               timeout: Optional[float],
               on_progress: Callable[[str, float], None], started: float) -> None:
    """Reconstruct one scene, write its outputs, then its record (last, so it marks completion)."""
    work = Path(tempfile.mkdtemp(prefix=f"mvdust3r-{outcome.name}-"))
    try:
        if blend:
            fresh_file()
        result = run_spec(spec, output=work / "bundle.npz", timeout=timeout, on_progress=on_progress)
        outcome.views, outcome.points = result.views, result.points
        outcome.worker_pid, outcome.model_reused = result.worker_pid, result.model_reused
        outcome.outputs.update(result.exports)
        if blend:
            show_through_first_camera(result)
            outcome.outputs["blend"] = save_blend(folder / f"{outcome.name}.blend")
        outcome.status = "done"
        outcome.seconds = time.perf_counter() - started
        write_record(folder / f"{outcome.name}.json", outcome, stamp, result.timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["BatchReport", "SceneOutcome", "reconstruct_many", "run_batch", "scene_names", "stage_printer"]
