"""A farm batch's scenes over its pool of actors: placing, streaming, retrying, timing out.

- **Actors.** One :class:`~.farm_actor.SceneActor` per GPU (``num_gpus=1``), or per
  ``cpus_per_actor`` CPUs on a cluster without GPUs (by default the smallest node's CPUs: one model
  per node, computing with all its cores), spread over the nodes, at most one per scene.
  Each loads the checkpoint once (a path on the nodes, or a released file fetched there once).
- **Streaming.** At most :data:`DEPTH` scenes are in flight per actor (one computing, one whose
  photos travel meanwhile); a scene's photos are read and size-checked only when it is sent, and go
  as bytes through the object store, so 1 000 queued scenes cost their names, not their photos.
  What lands is checked and written by :mod:`.farm_results`.
- **Faults.** A lost actor or node, or memory running out, fails the attempt, not the scene: it is
  tried again (on another actor when there is one) up to ``max_attempts`` times, and a replacement
  actor is started. A scene whose input is at fault (an unreadable photo) fails at once, named.
"""
from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.farm import FarmError, FarmEvent, FarmJob, FarmScene
from ..core.protocol.events import ErrorEvent, ResultEvent, decode_event
from ..core.protocol.requests import ReconstructRequest, decode_request
from .farm_actor import SceneActor
from .farm_results import scene_timings, write_result
from .jobs import MAX_FILE_BYTES

DEPTH = 2
"""Scenes in flight per actor: one computing, the next one's photos already on their way."""
ACTOR_START_TIMEOUT_S = 600.0
"""How long an actor may take to be placed and load its checkpoint (a first fetch on a node is slow)."""
RETRIED_CODES = {"out_of_memory"}
"""Scene errors that are the node's, not the input's: tried again elsewhere."""


@dataclass
class _Actor:
    handle: Any
    label: str
    ready_ref: Any
    created: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    inflight: list[Any] = field(default_factory=list)  # its scene refs, in order
    head_since: float = 0.0  # when its first scene in flight became the one it computes


@dataclass
class _Attempt:
    index: int       # the scene's
    actor: _Actor
    sent: float      # time.monotonic()
    request: ReconstructRequest
    sent_at: float = field(default_factory=time.time)  # wall clock, to compare with the node's


class Batch:
    """One job's scenes over a pool of actors; :meth:`run` emits events until every scene ended."""

    def __init__(self, ray: Any, job: FarmJob, emit: Callable[[FarmEvent], None]) -> None:
        self.ray, self.job, self.emit = ray, job, emit
        self.queue: collections.deque[int] = collections.deque(range(len(job.scenes)))
        self.attempts = [0] * len(job.scenes)
        self.avoid: dict[int, str] = {}   # scene -> label of the actor it failed on (try elsewhere)
        self.actors: list[_Actor] = []
        self.inflight: dict[Any, _Attempt] = {}
        self.started = 0
        self.pool = 0
        self.options: dict[str, Any] = {}
        self.cpus = 1  # per actor, on a cluster without GPUs

    # -- actors ---------------------------------------------------------------------------------

    def _resources(self) -> dict[str, Any]:
        total = self.ray.cluster_resources()
        if self.job.device != "cpu" and total.get("GPU", 0) >= 1:
            self.pool = int(total["GPU"])
            return {"num_gpus": 1, "num_cpus": 1}
        nodes = [int(n["Resources"].get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")]
        cpus = self.job.cpus_per_actor or min((c for c in nodes if c > 0), default=1)
        self.cpus = cpus
        self.pool = max(int(total.get("CPU", 0)) // cpus, 1)
        return {"num_cpus": cpus}

    def _start_actor(self, options: dict[str, Any]) -> None:
        self.started += 1
        remote = self.ray.remote(SceneActor).options(max_restarts=0, max_concurrency=1,
                                                     scheduling_strategy="SPREAD", **options)
        handle = remote.remote(self.job.checkpoint, self.job.device, self.job.precision)
        self.actors.append(_Actor(handle, f"actor-{self.started}", handle.ready.remote()))

    def _lose(self, actor: _Actor, reason: str) -> None:
        """`actor` is gone: its scenes are tried again, a replacement is started (bounded)."""
        if actor in self.actors:
            self.actors.remove(actor)
        try:
            self.ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 -- already dead
            pass
        for ref in list(actor.inflight):
            self._retry(self.inflight.pop(ref), reason)
        actor.inflight.clear()
        if self.started < self.pool * self.job.max_attempts and (self.queue or self.inflight):
            self._start_actor(self.options)

    # -- scenes ---------------------------------------------------------------------------------

    def _scene(self, index: int) -> FarmScene:
        return self.job.scenes[index]

    def _fail(self, index: int, message: str, hint: str = "", code: str = "") -> None:
        self.emit(FarmEvent(kind="failed", scene=self._scene(index).name, message=message, hint=hint, code=code,
                            attempt=self.attempts[index]))

    def _retry(self, attempt: _Attempt, reason: str) -> None:
        index = attempt.index
        self.avoid[index] = attempt.actor.label
        if self.attempts[index] >= self.job.max_attempts:
            self._fail(index, f"the cluster failed it {self.attempts[index]} times; last: {reason}",
                       "check the cluster's nodes (ray status) and run the batch again: finished scenes are kept",
                       code="farm")
            return
        self.emit(FarmEvent(kind="retry", scene=self._scene(index).name, message=reason,
                            attempt=self.attempts[index], actor=attempt.actor.label,
                            node=_node(attempt.actor)))
        self.queue.appendleft(index)

    def _next_for(self, actor: _Actor) -> Optional[int]:
        others = sum(a.ready for a in self.actors) > 1
        for index in self.queue:
            if not (others and self.avoid.get(index) == actor.label):
                self.queue.remove(index)
                return index
        return None

    def _send(self, actor: _Actor, index: int) -> None:
        scene = self._scene(index)
        request = decode_request(scene.request)
        assert isinstance(request, ReconstructRequest)
        photos: list[bytes] = []
        for path in request.photos:
            try:
                size = os.stat(path).st_size
                if size > MAX_FILE_BYTES:
                    self._fail(index, f"{path}: {size} bytes, more than the {MAX_FILE_BYTES} bytes a worker accepts",
                               "use a smaller photo", code="input")
                    return
                photos.append(Path(path).read_bytes())
            except OSError as exc:
                self._fail(index, f"cannot read {path}: {exc.strerror or exc}", "check the photo", code="input")
                return
        self.attempts[index] += 1
        if not actor.inflight:
            actor.head_since = time.monotonic()
        ref = actor.handle.reconstruct.remote(scene.request, photos)
        del photos  # the object store holds them now
        actor.inflight.append(ref)
        self.inflight[ref] = _Attempt(index, actor, time.monotonic(), request)
        self.emit(FarmEvent(kind="started", scene=scene.name, attempt=self.attempts[index], actor=actor.label,
                            node=_node(actor),
                            detail={"pid": actor.info.get("pid"), "node_id": actor.info.get("node")}))

    def _fill(self) -> None:
        for actor in self.actors:
            while actor.ready and len(actor.inflight) < DEPTH and self.queue:
                index = self._next_for(actor)
                if index is None:
                    break
                self._send(actor, index)

    def _landed(self, ref: Any) -> None:
        attempt = self.inflight.pop(ref)
        actor = attempt.actor
        actor.inflight.remove(ref)
        actor.head_since = time.monotonic()
        ray = self.ray
        try:
            answer = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.ObjectFetchTimedOutError) as exc:
            self._retry(attempt, f"{actor.label} on {_node(actor)} was lost: "
                                 f"{type(exc).__name__}: {_first_line(exc)}")
            self._lose(actor, f"{actor.label} was lost along with the scene it was computing")
            return
        except Exception as exc:  # noqa: BLE001 -- our code failed in the actor: the scene fails, named
            self._fail(attempt.index, f"{type(exc).__name__}: {_first_line(exc)}",
                       "this is a bug; the Ray worker log on the node has the traceback", code="internal")
            return
        if "error" in answer:
            event = decode_event(answer["error"])
            assert isinstance(event, ErrorEvent)
            if event.code in RETRIED_CODES:
                self._retry(attempt, f"{event.message} (on {actor.label}, {_node(actor)})")
            else:
                self._fail(attempt.index, event.message, event.hint, code=event.code or "input")
            return
        try:
            self._write(attempt, answer)
        except (OSError, FarmError, ValueError) as exc:
            message = exc.message if isinstance(exc, FarmError) else str(exc)
            self._fail(attempt.index, f"cannot write the result: {message}",
                       "check the free space where the result goes", code="output")

    def _write(self, attempt: _Attempt, answer: dict[str, Any]) -> None:
        result = decode_event(answer["result"])
        assert isinstance(result, ResultEvent)
        output, exports = write_result(attempt.request, result, answer["files"])
        self.emit(FarmEvent(kind="done", scene=self._scene(attempt.index).name, attempt=self.attempts[attempt.index],
                            actor=attempt.actor.label, node=_node(attempt.actor),
                            bundle=str(output), exports=exports, views=result.views, points=result.points,
                            timings=scene_timings(result, answer, attempt.sent, attempt.sent_at)))

    def _actor_ready(self, actor: _Actor) -> None:
        try:
            actor.info = self.ray.get(actor.ready_ref)
        except Exception as exc:  # noqa: BLE001 -- could not be placed or started
            self._lose(actor, f"{actor.label} could not start: {_first_line(exc)}")
            return
        if "error" in actor.info:
            error = actor.info["error"]
            raise FarmError(f"{actor.label} on {_node(actor)} cannot load the checkpoint "
                            f"'{self.job.checkpoint}': {error['message']}", error.get("hint", ""))
        actor.ready = True

    def run(self) -> None:
        self.options = self._resources()
        for _ in range(min(self.pool, len(self.job.scenes))):
            self._start_actor(self.options)
        self.emit(FarmEvent(kind="cluster", detail={"actors": len(self.actors), "resources": self.options,
                                                    "cluster": self.ray.cluster_resources()}))
        while self.queue or self.inflight:
            self._fill()
            starting = {a.ready_ref: a for a in self.actors if not a.ready}
            waitable = list(self.inflight) + list(starting)
            if not waitable:
                raise FarmError("no actor is left to run the remaining scenes",
                                "the cluster lost its nodes or cannot place an actor; check ray status")
            done, _ = self.ray.wait(waitable, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in starting:
                    self._actor_ready(starting[ref])
                elif ref in self.inflight:
                    self._landed(ref)
            self._check_time(starting)

    def _check_time(self, starting: dict[Any, _Actor]) -> None:
        now = time.monotonic()
        if starting and not any(a.ready for a in self.actors) and \
                all(now - a.created > ACTOR_START_TIMEOUT_S for a in starting.values()):
            raise FarmError(f"no actor started on the cluster within {ACTOR_START_TIMEOUT_S:.0f} s",
                            f"the cluster needs a free GPU, or {self.cpus} free CPUs, per actor")
        if self.job.timeout is None:
            return
        for ref, attempt in list(self.inflight.items()):
            if ref in self.inflight and attempt.actor.inflight[0] == ref and \
                    now - max(attempt.sent, attempt.actor.head_since) > self.job.timeout:
                self.inflight.pop(ref)
                attempt.actor.inflight.remove(ref)
                self._fail(attempt.index, f"the scene took longer than {self.job.timeout:g} s", "raise the timeout",
                           code="timeout")
                self._lose(attempt.actor, f"{attempt.actor.label} was stopped after a scene's timeout")

    def release(self) -> None:
        """Kill every actor this batch started (removing their folders first when they answer)."""
        closing = [a.handle.close.remote() for a in self.actors if a.ready]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=10.0)
        for actor in self.actors:
            try:
                self.ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 -- already gone
                pass
        self.actors.clear()


def _node(actor: _Actor) -> str:
    """The actor's node for people: host and the start of Ray's node id (several nodes may share a host)."""
    return f"{actor.info.get('host', '?')}/{str(actor.info.get('node', ''))[:8]}"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."
