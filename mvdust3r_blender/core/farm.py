"""A batch on a Ray cluster: the job the Blender side sends the Ray driver and the events it reads.

The Ray driver (:mod:`..engine.farm`) runs as a process of the worker runtime, never inside
Blender (``client/farm.py`` starts it): it reads one :class:`FarmJob` line from its stdin and
writes :class:`FarmEvent` lines to its stdout, one per scene as it lands (so Blender imports scene
1 while the cluster computes scene 40).

Each scene carries the same ``reconstruct`` request a local worker would get (built by the session's
one request builder): local photo paths, the bundle's local path, the export folder. The driver
sends the photos' bytes, gets the result's bytes back, checks and writes them at those paths.
Standard library only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from .errors import UserError

MAX_ATTEMPTS = 3
"""How often a scene is tried when the cluster fails it (an actor or node lost, memory ran out)."""


class FarmError(UserError):
    """The Ray cluster cannot be reached, refuses us, or cannot run the batch."""

    code = "farm"


@dataclass(frozen=True)
class FarmScene:
    """One scene: its name and its ``reconstruct`` request (one protocol line, local paths)."""

    name: str
    request: str


@dataclass(frozen=True)
class FarmJob:
    """What the driver runs: `address` as Ray users write it (``auto``, ``head:6379``,
    ``ray://head:10001``); `checkpoint`, a path readable on every node or a released file name
    (``MVDp_s2.pth``, fetched on each node once); `cpus_per_actor` for clusters without GPUs (0: the
    smallest node's CPUs, so one model per node computes with all its cores)."""

    address: str
    scenes: list[FarmScene]
    checkpoint: str
    device: str = "auto"
    precision: str = "auto"
    cpus_per_actor: int = 0
    max_attempts: int = MAX_ATTEMPTS
    timeout: Optional[float] = None  # seconds per scene attempt

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def decode(cls, line: str) -> "FarmJob":
        data = json.loads(line)
        data["scenes"] = [FarmScene(**s) for s in data["scenes"]]
        return cls(**data)


@dataclass
class FarmEvent:
    """One line from the driver. `kind`:

    - ``cluster``: connected; `detail` describes the pool (actors, nodes, GPUs, versions).
    - ``started``: `scene` went to the actor `actor` on `node` (attempt `attempt`).
    - ``retry``: attempt `attempt` of `scene` failed because of the cluster (`message`); it is tried again.
    - ``done``: `scene` landed: `bundle` and `exports` (format → local path) are written and checked.
    - ``failed``: `scene` failed (`message`, `hint`; `code` ``input`` errors are never retried).
    - ``error``: the whole batch cannot go on (`message`, `hint`); ``end`` follows.
    - ``end``: the driver is done (every actor released).
    """

    kind: str
    scene: str = ""
    message: str = ""
    hint: str = ""
    code: str = ""
    attempt: int = 0
    actor: str = ""
    node: str = ""
    bundle: str = ""
    exports: dict[str, str] = field(default_factory=dict)
    views: int = 0
    points: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def decode(cls, line: str) -> "FarmEvent":
        data = json.loads(line)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
