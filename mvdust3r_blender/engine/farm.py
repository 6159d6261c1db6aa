"""The Ray driver of a farm batch: scenes spread over one loaded model per GPU of a Ray cluster.

Started by the Blender side (:class:`~..core.farm.FarmClient`) in the worker runtime, never inside
Blender: ``python -m mvdust3r_blender.engine.farm`` reads one :class:`~..core.farm.FarmJob` line and
writes :class:`~..core.farm.FarmEvent` lines; ``--check ADDRESS`` describes a cluster instead.

- **Engine.** The engine's files (``__init__``, ``core/``, ``engine/``, the manifest: the same set
  as the ssh path sends) are staged as ``engine-<sha256>/<package>`` and travel as the job's runtime
  environment (``py_modules``); Ray stores them content-addressed, so nodes fetch a version once.
  Nodes need Python, torch and ray, nothing installed by hand.
- **Actors.** One :class:`~.farm_actor.SceneActor` per GPU (``num_gpus=1``), or per
  ``cpus_per_actor`` CPUs on a cluster without GPUs (by default the smallest node's CPUs: one model
  per node, computing with all its cores), spread over the nodes, at most one per scene.
  Each loads the checkpoint once (a path on the nodes, or a released file fetched there once).
- **Streaming.** At most :data:`DEPTH` scenes are in flight per actor (one computing, one whose
  photos travel meanwhile); a scene's photos are read and size-checked only when it is sent, and go
  as bytes through the object store, so 1 000 queued scenes cost their names, not their photos.
- **Results** come back as bytes with SHA-256s; each file is checked, the bundle read with the
  bundle reader's full check and given the local photo paths, and everything is written atomically
  where the request said. A scene is ``done`` only then.
- **Faults.** A lost actor or node, or memory running out, fails the attempt, not the scene: it is
  tried again (on another actor when there is one) up to ``max_attempts`` times, and a replacement
  actor is started. A scene whose input is at fault (an unreadable photo) fails at once, named.
  SIGINT, SIGTERM or the end of stdin stop the driver: every actor it started is killed before it
  exits (Ray would also end them with their owner), so nothing of the batch keeps running.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

from ..core.atomic import atomic_file, sibling
from ..core.farm import FarmError, FarmEvent, FarmJob, FarmScene
from ..core.protocol import ErrorEvent, ReconstructRequest, ResultEvent, decode_event, decode_request
from ..core.engine_files import engine_archive
from .farm_actor import BUNDLE_NAME, EXPORTS_NAME, SceneActor, gpu_memory, remove_orphans
from .jobs import MAX_FILE_BYTES

DEPTH = 2
"""Scenes in flight per actor: one computing, the next one's photos already on their way."""
ACTOR_START_TIMEOUT_S = 600.0
"""How long an actor may take to be placed and load its checkpoint (a first fetch on a node is slow)."""
CONNECT_TIMEOUT_S = 60.0
RETRIED_CODES = {"out_of_memory"}
"""Scene errors that are the node's, not the input's: tried again elsewhere."""
PACKAGE_DIR = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Connecting


def stage_engine(parent: Path) -> Path:
    """The engine's files unpacked under `parent`/engine-<sha256>/<package>: the ``py_modules`` entry."""
    import io
    import tarfile

    blob, digest, _ = engine_archive(PACKAGE_DIR)
    folder = parent / f"engine-{digest[:16]}"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    return folder / PACKAGE_DIR.name


def connect(address: str, staging: Path) -> Any:
    """``ray.init`` to an existing cluster (never a new one) with the engine as runtime environment;
    a refused token or an unreachable head becomes a :class:`FarmError` that says which."""
    try:
        import ray
    except ImportError:
        raise FarmError(f"the worker runtime ({sys.executable}) has no 'ray' package",
                        "install ray (the same version as the cluster's) into the worker runtime") from None
    if not address:
        raise FarmError("no Ray cluster address is given", "pass auto, head:6379 or ray://head:10001")
    _reachable(address)
    env = {"py_modules": [str(stage_engine(staging))]}
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(int(CONNECT_TIMEOUT_S)))
    try:
        ray.init(address=address, runtime_env=env, logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False, configure_logging=True)
    except Exception as exc:  # noqa: BLE001 -- every way ray.init fails, told in words
        raise _connect_error(address, exc) from None
    return ray


def _reachable(address: str) -> None:
    """Fail fast, in words, when a ``host:port`` address does not answer (``ray.init`` would retry
    for minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S / 6):
            pass
    except (OSError, ValueError) as exc:
        raise FarmError(f"cannot connect to the Ray cluster at {address}: {exc}",
                        "check the address (head:6379 is the head's GCS port), that the head is running and that "
                        "this machine can reach it (docs/farm.md: an ssh tunnel to the head)") from None


def _connect_error(address: str, exc: BaseException) -> FarmError:
    chain: list[str] = []
    cause: Optional[BaseException] = exc
    while cause is not None and len(chain) < 8:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " | ".join(chain)
    if "AuthenticationError" in text or "InvalidAuthToken" in text or "UNAUTHENTICATED" in text:
        return FarmError(f"the Ray cluster at {address} refused this client: its token is missing or wrong",
                         "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, a file named by "
                         "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (ray get-auth-token on the head prints it)")
    if "ray[client]" in text:
        return FarmError(f"{address}: a ray:// address needs the Ray Client ('ray[client]') in the worker runtime",
                         "install ray[client], or give the head's GCS address (head:6379) instead")
    return FarmError(f"cannot connect to the Ray cluster at {address}: {chain[0][:400]}",
                     "check the address (auto, head:6379, ray://head:10001), that the head is running and "
                     "that this machine can reach it (docs/farm.md: an ssh tunnel to the head)")


# ---------------------------------------------------------------------------------------------
# The cluster check


def _node_probe() -> dict[str, Any]:
    import platform
    import socket

    import ray

    info: dict[str, Any] = {"host": socket.gethostname(), "ray": ray.__version__, "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu_free"] = gpu_memory()
    except ImportError:
        info["torch"] = ""
    return info


def describe(ray: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Nodes (alive), their CPUs, GPUs, free GPU memory, Ray / torch / Python versions, asked of
    each node by a zero-CPU task pinned to it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_node_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    described = []
    for node, ref in zip(nodes, refs):
        resources = node.get("Resources", {})
        entry: dict[str, Any] = {"address": node.get("NodeManagerAddress", ""), "id": node["NodeID"],
                                 "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0)}
        if ref in ready:
            try:
                entry.update(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 -- a node that cannot run the probe is reported, not fatal
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            entry["error"] = "did not answer"
        described.append(entry)
    for ref in refs:
        if ref not in ready:
            ray.cancel(ref, force=True)
    total = ray.cluster_resources()
    return {"ray": ray.__version__, "nodes": described, "cpus": total.get("CPU", 0), "gpus": total.get("GPU", 0)}


# ---------------------------------------------------------------------------------------------
# The batch


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
        from ..core.bundle import read_bundle, write_bundle

        result = decode_event(answer["result"])
        assert isinstance(result, ResultEvent)
        request = attempt.request
        files: dict[str, tuple[bytes, str]] = answer["files"]
        for name, (data, digest) in files.items():
            if hashlib.sha256(data).hexdigest() != digest:
                raise FarmError(f"'{name}' arrived damaged (SHA-256 differs)")
        output = Path(request.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        staged = sibling(output, ".npz")
        try:
            staged.write_bytes(files[BUNDLE_NAME][0])
            bundle = read_bundle(staged)  # every array checked: nothing unverified reaches the scene
        finally:
            staged.unlink(missing_ok=True)
        bundle.photo_paths = list(request.photos)
        write_bundle(bundle, output)  # atomic
        exports: dict[str, str] = {}
        if request.export_dir is not None:
            base = Path(request.export_dir).resolve()
            for name, (data, _) in files.items():
                if name == BUNDLE_NAME:
                    continue
                target = (base / name.removeprefix(EXPORTS_NAME + "/")).resolve()
                if not name.startswith(EXPORTS_NAME + "/") or not target.is_relative_to(base):
                    raise FarmError(f"the actor sent a file this scene did not ask for: '{name}'")
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(target) as partial:
                    partial.write_bytes(data)
            exports = {fmt: str(base / rel.removeprefix(EXPORTS_NAME + "/")) for fmt, rel in result.exports.items()}
        timings = dict(result.timings)
        # sent → landed, compute included; until the actor began (queue + photos' upload + scheduling);
        # the actor's own work around the worker's (photos written, results read); after it ended
        # (results' download, checks, writes). The last three use the nodes' clocks: on one machine exact.
        timings["farm"] = round(time.monotonic() - attempt.sent, 4)
        timings["before"] = round(float(answer["began"]) - attempt.sent_at, 4)
        timings["actor"] = round(float(answer["ended"]) - float(answer["began"]) - float(timings.get("total", 0.0)), 4)
        timings["after"] = round(time.time() - float(answer["ended"]), 4)
        self.emit(FarmEvent(kind="done", scene=self._scene(attempt.index).name, attempt=self.attempts[attempt.index],
                            actor=attempt.actor.label, node=_node(attempt.actor),
                            bundle=str(output), exports=exports, views=result.views, points=result.points,
                            timings=timings))

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


# ---------------------------------------------------------------------------------------------
# The process


def _stop_on_stdin_end(stream: IO[str]) -> None:
    """The Blender side went away (its end of stdin closed): stop as on Ctrl-C."""
    def watch() -> None:
        while stream.readline():
            pass
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    from .worker import take_stdout

    parser = argparse.ArgumentParser(prog="python -m mvdust3r_blender.engine.farm")
    parser.add_argument("--check", metavar="ADDRESS", help="describe the Ray cluster at ADDRESS and exit")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = take_stdout()

    def emit(event: FarmEvent) -> None:
        out.write(event.encode() + "\n")
        out.flush()

    signal.signal(signal.SIGTERM, _interrupt)
    remove_orphans(Path(tempfile.gettempdir()), "mvdust3r-farm-driver")
    staging = Path(tempfile.mkdtemp(prefix=f"mvdust3r-farm-driver-{os.getpid()}-"))
    batch: Optional[Batch] = None
    code = 0
    try:
        if args.check:
            ray = connect(args.check, staging)
            emit(FarmEvent(kind="cluster", detail=describe(ray)))
        else:
            line = sys.stdin.readline()
            job = FarmJob.decode(line)
            _stop_on_stdin_end(sys.stdin)
            ray = connect(job.address, staging)
            batch = Batch(ray, job, emit)
            batch.run()
    except FarmError as exc:
        emit(FarmEvent(kind="error", message=exc.message, hint=exc.hint, code=exc.code))
        code = 1
    except KeyboardInterrupt:
        emit(FarmEvent(kind="error", message="the batch was interrupted", code="cancelled",
                       hint="run it again: finished scenes are kept and skipped"))
        code = 130
    finally:
        try:
            if batch is not None:
                batch.release()
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            emit(FarmEvent(kind="end"))
    return code


if __name__ == "__main__":
    sys.exit(main())
