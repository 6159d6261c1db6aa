"""A batch on a Ray cluster (``reconstruct_many(..., ray=ADDRESS)``, ``batch --ray ADDRESS``).

The same batch as :mod:`.batch` — names, resume, records, outputs, one broken scene kept apart, the
summary — with the computing done on a Ray cluster: :func:`~.batch.run_batch` hands over the scene
specs still to do, and they go to the Ray driver (:class:`~.client.farm.FarmClient`, a process of
the worker runtime; Blender never imports ray), each as the ``reconstruct`` request the local
worker would get for that spec. Scenes land as the cluster finishes them,
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
from typing import Optional

import bpy

from . import preferences
from .batch_records import SceneOutcome, scene_stamp, write_record
from .client.farm import FarmClient
from .core.farm import FarmError, FarmEvent, FarmJob, FarmScene
from .core.options import check_precision
from .core.protocol.requests import ReconstructRequest
from .core.protocol.wire import encode
from .importers.scene import import_bundle
from .reconstruction import fresh_file, save_blend
from .session import WORKER_PYTHON_ENV, PathLike, RunSpec, SetupError, WorkerSettings, worker_python


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


def farm_worker(python: Optional[PathLike], checkpoint: Optional[PathLike], device: Optional[str],
                precision: Optional[str]) -> WorkerSettings:
    """The worker settings of a batch on a Ray cluster: the Ray driver's Python (this machine's
    worker runtime) and the checkpoint as the nodes see it (a path there or a released file's name;
    default: the preferences' Ray checkpoint), not checked here; device and precision as given, else
    the preferences'."""
    prefs = preferences.get()
    chosen = os.fspath(checkpoint) if checkpoint is not None else prefs.ray_checkpoint
    if not chosen:
        raise SetupError("no checkpoint is set for the Ray cluster",
                         "pass checkpoint= (a path on the nodes, a released file name such as MVDp_s2.pth, or "
                         "'builtin')")
    return WorkerSettings(python=driver_python(python), checkpoint=chosen,
                          device=device if device is not None else str(prefs.device),
                          precision=check_precision(precision if precision is not None else str(prefs.precision)))


def run_on_ray(scenes: Sequence[tuple[SceneOutcome, RunSpec, float]], folder: Path, say: Callable[[str], None], *,
               address: str, blend: bool, timeout: Optional[float]) -> None:
    """Compute each (outcome, scene spec, start time) on the Ray cluster at `address` and land it
    here: import into a fresh file, save, write the record (last). Fills the outcomes; raises
    :class:`FarmError` when the cluster cannot be used at all (nothing ran)."""
    work = Path(tempfile.mkdtemp(prefix="mvdust3r-farm-results-"))
    try:
        entries: dict[str, tuple[SceneOutcome, RunSpec, float]] = {}
        jobs: list[FarmScene] = []
        for outcome, spec, started in scenes:
            output = work / f"{outcome.name}.npz"
            export_dir = spec.exports.folder_for(output)
            request = ReconstructRequest(
                id=outcome.name, photos=list(spec.photos), output=str(output), options=spec.options,
                device=spec.worker.device, exports=list(spec.exports.formats),
                export_dir=str(export_dir) if export_dir is not None else None, export_cut=spec.exports.cut)
            jobs.append(FarmScene(name=outcome.name, request=encode(request)))
            entries[outcome.name] = (outcome, spec, started)
        worker = scenes[0][1].worker
        job = FarmJob(address=address, scenes=jobs, checkpoint=worker.checkpoint, device=worker.device,
                      precision=worker.precision, timeout=timeout)
        _follow(FarmClient(worker.python, job), entries, folder, blend, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _follow(client: FarmClient, entries: dict[str, tuple[SceneOutcome, RunSpec, float]], folder: Path, blend: bool,
            say: Callable[[str], None]) -> None:
    landed = 0
    try:
        for event in client.events():
            entry = entries.get(event.scene)
            if event.kind == "cluster" and "actors" in event.detail:
                say(f"Ray cluster: {event.detail['actors']} actor(s), {event.detail.get('resources')} each")
            elif event.kind == "retry" and entry is not None:
                entry[0].retries.append(event.message)
                say(f"{event.scene}: attempt {event.attempt} failed on the cluster, trying again: {event.message}")
            elif event.kind == "started" and entry is not None:
                say(f"{event.scene}: sent to {event.actor} on {event.node} (attempt {event.attempt})")
            elif event.kind == "done" and entry is not None:
                outcome, spec, started = entry
                landed += 1
                try:
                    _land(outcome, event, spec, folder, blend, started)
                    say(f"{landed}/{len(entries)} {event.scene}: done in {outcome.seconds:.1f} s "
                        f"({outcome.views} views, {outcome.points} points)")
                except Exception as exc:  # noqa: BLE001 -- this scene's import or save failed: go on
                    _failed(outcome, exc, started)
                    say(f"{event.scene}: FAILED: {outcome.error}")
            elif event.kind == "failed" and entry is not None:
                landed += 1
                _failed(entry[0], FarmError(event.message, event.hint), entry[2])
                say(f"{landed}/{len(entries)} {event.scene}: FAILED: {entry[0].error}")
            elif event.kind == "error":
                unfinished = [(o, t) for o, _, t in entries.values() if o.status == "pending"]
                if len(unfinished) == len(entries):  # nothing ran: the cluster itself is the problem
                    raise FarmError(event.message, event.hint)
                for outcome, started in unfinished:
                    _failed(outcome, FarmError(event.message, event.hint), started)
                say(f"FAILED: {event.message}")
    finally:
        client.stop()


def _land(outcome: SceneOutcome, event: FarmEvent, spec: RunSpec, folder: Path, blend: bool, started: float) -> None:
    """A scene the cluster finished: import it into a fresh file, save, write the record (last)."""
    bundle = Path(event.bundle)
    try:
        outcome.views, outcome.points = event.views, event.points
        outcome.outputs.update({k: Path(v) for k, v in event.exports.items()})
        if blend:
            fresh_file()
            if spec.importing:
                scene = bpy.context.scene
                assert scene is not None
                imported = import_bundle(bundle, spec.imports, scene)
                if imported.cameras:
                    from .importers.cameras import set_render_camera

                    set_render_camera(scene, imported.cameras[0])
            outcome.outputs["blend"] = save_blend(folder / f"{outcome.name}.blend")
        outcome.status = "done"
        outcome.seconds = time.perf_counter() - started
        write_record(folder / f"{outcome.name}.json", outcome, scene_stamp(spec), dict(event.timings))
    finally:
        bundle.unlink(missing_ok=True)


def _failed(outcome: SceneOutcome, exc: BaseException, started: float) -> None:
    outcome.status = "failed"
    outcome.seconds = time.perf_counter() - started
    ours = type(exc).__module__.startswith(__package__ or "")
    outcome.error = (str(exc) if ours else f"{type(exc).__name__}: {exc}").replace("\n", " | ")


__all__ = ["farm_worker", "preferred_address", "run_on_ray"]
