"""A batch's bookkeeping: each scene's outcome, the report and its summary table, and the record
``<out_dir>/<name>.json`` that marks a scene finished (written last, atomically), so a re-run
resumes. Shared by the local batch (:mod:`.batch`) and the batch on a Ray cluster
(:mod:`.farm_batch`). A record carries the scene's stamp — what its result was made from — so a
resumed batch redoes a scene whose photos, checkpoint or options changed.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .core.atomic import atomic_file
from .core.photos import file_digest

if TYPE_CHECKING:  # the engine's tests read the records without bpy, which session/ needs
    from .session import RunSpec

RECORD_VERSION = 2
"""2: the record carries the stamp (version 1 records lack it, so their scenes are done again)."""


@dataclass
class SceneOutcome:
    """What became of one scene; a row of the summary table."""

    name: str
    status: str = "pending"           # "done", "skipped" (finished by an earlier run) or "failed"
    views: int = 0
    seconds: float = 0.0
    points: int = 0
    outputs: dict[str, Path] = field(default_factory=dict)  # "blend" and each export format → path
    error: str = ""
    worker_pid: Optional[int] = None
    model_reused: bool = False
    retries: list[str] = field(default_factory=list)  # a Ray batch: why each failed attempt was tried again


@dataclass
class BatchReport:
    """Every scene's outcome, in the order given."""

    out_dir: Path
    scenes: list[SceneOutcome]
    seconds: float = 0.0

    @property
    def failed(self) -> list[SceneOutcome]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self) -> str:
        """The summary: one row per scene (scene, views, seconds, points, status), then the errors."""
        rows = [("scene", "views", "seconds", "points", "status")]
        rows += [(s.name, str(s.views), f"{s.seconds:.1f}", str(s.points), s.status) for s in self.scenes]
        width = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(width[i]) if i in (0, 4) else c.rjust(width[i]) for i, c in enumerate(r)).rstrip()
                 for r in rows]
        counts = {k: sum(s.status == k for s in self.scenes) for k in ("done", "skipped", "failed")}
        lines.append(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
                     f"in {self.seconds:.1f} s; output in {self.out_dir}")
        lines += [f"{s.name}: {s.error}" for s in self.failed]
        lines += [f"{s.name}: retried {len(s.retries)}x ({'; '.join(s.retries)})" for s in self.scenes if s.retries]
        return "\n".join(lines)


def finished_record(record_path: Path, stamp: dict[str, Any], wanted: Sequence[str]) -> Optional[dict[str, Any]]:
    """The record of an earlier run that made every `wanted` output with this `stamp`, else None."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    outputs = record.get("outputs", {})
    if record.get("version") != RECORD_VERSION or record.get("stamp") != stamp or not isinstance(outputs, dict):
        return None
    if not all(k in outputs and Path(outputs[k]).exists() for k in wanted):
        return None
    return dict(record)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: str) -> str:
    """SHA-256 of a file, remembered for this session by (path, size, modification time): a batch
    hashes its checkpoint once, not once per scene."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def scene_stamp(spec: "RunSpec") -> dict[str, Any]:
    """What a scene's result is made from: each photo (path and content), the checkpoint (its content;
    on a remote machine or only on a cluster's nodes, its path there), and the run's options — the
    engine's (precision included), the import's and the exports' cut. JSON, for the record. (Which
    outputs were asked for is not part of it: the record lists the outputs, and a scene whose record
    lacks one asked for now is done again.)"""
    worker = spec.worker
    checkpoint: dict[str, str] = {"path": str(worker.checkpoint)}
    if worker.remote is not None:
        checkpoint["remote"] = str(worker.remote)
    elif os.path.isfile(worker.checkpoint):
        checkpoint["sha256"] = _digest(str(worker.checkpoint))
    options = {"options": asdict(spec.options), "imports": asdict(spec.imports), "cut": asdict(spec.exports.cut)}
    return {"photos": [{"path": p, "sha256": file_digest(p)} for p in spec.photos], "checkpoint": checkpoint,
            **json.loads(json.dumps(options, default=str))}


def write_record(path: Path, outcome: SceneOutcome, stamp: dict[str, Any], timings: dict[str, float]) -> None:
    """Mark the scene finished: its outcome, the stamp it was made with, its outputs (written last)."""
    record = {"version": RECORD_VERSION, "scene": outcome.name, "photos": [p["path"] for p in stamp["photos"]],
              "stamp": stamp, "views": outcome.views,
              "points": outcome.points, "seconds": outcome.seconds, "timings": timings,
              "worker_pid": outcome.worker_pid, "model_reused": outcome.model_reused,
              "outputs": {k: str(v) for k, v in outcome.outputs.items()},
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
