"""A batch on a Ray cluster (``reconstruct_many(..., ray=ADDRESS)``, ``batch --ray ADDRESS``).

The same batch as :mod:`.batch` — names, resume, records, outputs, one broken scene kept apart, the
summary — with the computing done on a Ray cluster: the scenes still to do go to the Ray driver
(:class:`~.core.farm.FarmClient`, a process of the worker runtime; Blender never imports ray), each
as the ``reconstruct`` request the local batch would send. Scenes land as the cluster finishes them,
in any order: each is imported here, saved, and its record written last, exactly as a local scene.
Retries (a lost actor or node) show in the scene's outcome and the summary.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import bpy

from . import preferences
from .batch_records import BatchReport, SceneOutcome, finished_record, write_record
from .client.farm import FarmClient
from .core.farm import FarmError, FarmEvent, FarmJob, FarmScene
from .core.options import check_precision
from .core.protocol import ReconstructRequest, encode
from .import_options import ImportOptions
from .importers.scene import import_bundle
from .reconstruction import fresh_file, save_blend
from .session import WORKER_PYTHON_ENV, PathLike, PhotoSource, SetupError, WorkerSettings, photo_list, plan_run, worker_python

RUN_OPTIONS = ("reference_view", "pose_drop_percent", "focal")
IMPORT_FLAGS = ("import_points", "import_cameras", "import_gaussians")


def preferred_address() -> Optional[str]:
    """The preferences' Ray cluster when the Worker choice is Ray Cluster and no script or environment
    (``$MVDUST3R_WORKER_PYTHON``) says otherwise; else None (the batch runs here or over ssh)."""
    if os.environ.get(WORKER_PYTHON_ENV):
        return None
    prefs = preferences.get()
    return str(prefs.ray_address or "auto") if prefs.worker_location == "RAY" else None


def driver_python(python: Optional[PathLike]) -> str:
    """The worker runtime that runs the Ray driver: `python`, ``$MVDUST3R_WORKER_PYTHON``, the preferences'."""
    chosen = os.fspath(python) if python is not None else os.environ.get(WORKER_PYTHON_ENV) or None
    if chosen is None:
        return worker_python(preferences.get())
    if not Path(chosen).is_file():
        raise SetupError(f"the worker Python '{chosen}' does not exist",
                         "pass the python of an environment with torch and ray")
    return str(Path(chosen).absolute())


def run_on_ray(named: Sequence[tuple[str, PhotoSource]], folder: Path, report: BatchReport,
               say: Callable[[str], None], *, address: str, checkpoint: Optional[PathLike], device: Optional[str],
               precision: Optional[str], python: Optional[PathLike], blend: bool, formats: Sequence[str], resume: bool,
               timeout: Optional[float], options: dict[str, Any]) -> None:
    """Fill `report` with every scene's outcome, computing on the Ray cluster at `address`.
    `checkpoint` is a path readable on the nodes or a released file's name (default: the
    preferences' Ray checkpoint). Raises :class:`FarmError` when the cluster cannot be used at all."""
    python = driver_python(python)
    prefs = preferences.get()
    device = device if device is not None else str(prefs.device)
    precision = check_precision(precision if precision is not None else str(prefs.precision))
    checkpoint = os.fspath(checkpoint) if checkpoint is not None else prefs.ray_checkpoint
    if not checkpoint:
        raise SetupError("no checkpoint is set for the Ray cluster",
                         "pass checkpoint= (a path on the nodes, or a released file name such as MVDp_s2.pth)")
    flags = {k: bool(options.get(k, True)) for k in IMPORT_FLAGS}
    run = {k: options[k] for k in RUN_OPTIONS if k in options}
    rest = {k: v for k, v in options.items() if k not in RUN_OPTIONS and k not in IMPORT_FLAGS}
    importing = blend and any(flags.values())
    wanted = (["blend"] if blend else []) + list(dict.fromkeys(formats))
    settings = WorkerSettings(python=python, checkpoint=checkpoint, device=device, precision=precision)
    work = Path(tempfile.mkdtemp(prefix="mvdust3r-farm-results-"))
    outcomes: dict[str, tuple[SceneOutcome, list[str], ImportOptions, float]] = {}
    scenes: list[FarmScene] = []
    total = len(named)
    try:
        for index, (name, source) in enumerate(named, 1):
            outcome = SceneOutcome(name=name)
            report.scenes.append(outcome)
            started = time.perf_counter()
            try:
                photos = photo_list(source)
                record = finished_record(folder / f"{name}.json", photos, wanted) if resume else None
                if record is not None:
                    outcome.status = "skipped"
                    outcome.views, outcome.points = int(record["views"]), int(record["points"])
                    outcome.seconds = float(record["seconds"])
                    outcome.outputs = {k: Path(v) for k, v in record["outputs"].items()}
                    say(f"{index}/{total} {name}: already done, skipped")
                    continue
                imports = ImportOptions.from_keywords(
                    points=flags["import_points"], cameras=flags["import_cameras"],
                    gaussians=flags["import_gaussians"], **{"name": name, **rest})
                plan = plan_run(photos, settings, work / f"{name}.npz", import_gaussians=flags["import_gaussians"],
                                exports=formats, export_dir=folder / name, cut=imports.cut, keep_bundle=True, **run)
                request = ReconstructRequest(
                    id=name, photos=plan.photos, output=str(plan.output), options=plan.options, device=device,
                    exports=plan.exports, export_dir=str(plan.export_dir) if plan.export_dir else None,
                    export_cut=plan.cut)
                scenes.append(FarmScene(name=name, request=encode(request)))
                outcomes[name] = (outcome, photos, imports, started)
            except Exception as exc:  # noqa: BLE001 -- as the local batch: report the scene, go on
                _failed(outcome, exc, started)
                say(f"{index}/{total} {name}: FAILED: {outcome.error}")
        if scenes:
            _follow(FarmClient(python, FarmJob(address=address, scenes=scenes, checkpoint=checkpoint, device=device,
                                               precision=precision, timeout=timeout)),
                    outcomes, folder, blend, importing, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _follow(client: FarmClient, outcomes: dict[str, tuple[SceneOutcome, list[str], ImportOptions, float]],
            folder: Path, blend: bool, importing: bool, say: Callable[[str], None]) -> None:
    landed = 0
    try:
        for event in client.events():
            entry = outcomes.get(event.scene)
            if event.kind == "cluster" and "actors" in event.detail:
                say(f"Ray cluster: {event.detail['actors']} actor(s), {event.detail.get('resources')} each")
            elif event.kind == "retry" and entry is not None:
                entry[0].retries.append(event.message)
                say(f"{event.scene}: attempt {event.attempt} failed on the cluster, trying again: {event.message}")
            elif event.kind == "started" and entry is not None:
                say(f"{event.scene}: sent to {event.actor} on {event.node} (attempt {event.attempt})")
            elif event.kind == "done" and entry is not None:
                outcome, photos, imports, started = entry
                landed += 1
                try:
                    _land(outcome, event, photos, imports, folder, blend, importing, started)
                    say(f"{landed}/{len(outcomes)} {event.scene}: done in {outcome.seconds:.1f} s "
                        f"({outcome.views} views, {outcome.points} points)")
                except Exception as exc:  # noqa: BLE001 -- this scene's import or save failed: go on
                    _failed(outcome, exc, started)
                    say(f"{event.scene}: FAILED: {outcome.error}")
            elif event.kind == "failed" and entry is not None:
                landed += 1
                _failed(entry[0], FarmError(event.message, event.hint), entry[3])
                say(f"{landed}/{len(outcomes)} {event.scene}: FAILED: {entry[0].error}")
            elif event.kind == "error":
                unfinished = [o for o, *_ in outcomes.values() if o.status == "pending"]
                if len(unfinished) == len(outcomes):  # nothing ran: the cluster itself is the problem
                    raise FarmError(event.message, event.hint)
                for outcome in unfinished:
                    _failed(outcome, FarmError(event.message, event.hint), outcomes[outcome.name][3])
                say(f"FAILED: {event.message}")
    finally:
        client.stop()


def _land(outcome: SceneOutcome, event: FarmEvent, photos: list[str], imports: ImportOptions, folder: Path,
          blend: bool, importing: bool, started: float) -> None:
    """A scene the cluster finished: import it into a fresh file, save, write the record (last)."""
    bundle = Path(event.bundle)
    try:
        outcome.views, outcome.points = event.views, event.points
        outcome.outputs.update({k: Path(v) for k, v in event.exports.items()})
        if blend:
            fresh_file()
            if importing:
                scene = bpy.context.scene
                assert scene is not None
                imported = import_bundle(bundle, imports, scene)
                if imported.cameras:
                    from .importers.cameras import set_render_camera

                    set_render_camera(scene, imported.cameras[0])
            outcome.outputs["blend"] = save_blend(folder / f"{outcome.name}.blend")
        outcome.status = "done"
        outcome.seconds = time.perf_counter() - started
        write_record(folder / f"{outcome.name}.json", outcome, photos, dict(event.timings))
    finally:
        bundle.unlink(missing_ok=True)


def _failed(outcome: SceneOutcome, exc: BaseException, started: float) -> None:
    outcome.status = "failed"
    outcome.seconds = time.perf_counter() - started
    ours = type(exc).__module__.startswith(__package__ or "")
    outcome.error = (str(exc) if ours else f"{type(exc).__name__}: {exc}").replace("\n", " | ")


__all__ = ["run_on_ray"]
