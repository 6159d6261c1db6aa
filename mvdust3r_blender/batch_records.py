"""A batch's bookkeeping: each scene's outcome, the report and its summary table, and the record
``<out_dir>/<name>.json`` that marks a scene finished (written last, atomically), so a re-run
resumes. Shared by the local batch (:mod:`.batch`) and the batch on a Ray cluster
(:mod:`.farm_batch`). Standard library only (and the core's atomic writes).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .core.atomic import atomic_file

RECORD_VERSION = 1


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


def finished_record(record_path: Path, photos: list[str], wanted: Sequence[str]) -> Optional[dict[str, Any]]:
    """The record of an earlier run that made every `wanted` output from these `photos`, else None."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    outputs = record.get("outputs", {})
    if record.get("version") != RECORD_VERSION or record.get("photos") != photos:
        return None
    if not all(k in outputs and Path(outputs[k]).exists() for k in wanted):
        return None
    return dict(record)


def write_record(path: Path, outcome: SceneOutcome, photos: list[str], timings: dict[str, float]) -> None:
    record = {"version": RECORD_VERSION, "scene": outcome.name, "photos": photos, "views": outcome.views,
              "points": outcome.points, "seconds": outcome.seconds, "timings": timings,
              "worker_pid": outcome.worker_pid, "model_reused": outcome.model_reused,
              "outputs": {k: str(v) for k, v in outcome.outputs.items()},
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
