"""The persistent worker: ``python -m mvdust3r_blender.engine.worker``, JSON lines on stdin/stdout.

Blender starts one worker and keeps it: the model stays loaded between requests (:mod:`.loaded_model`
says when it reloads). Protocol: :mod:`..core.protocol`, reference:
``docs/worker.md``.

Threads: the main thread reads requests and answers ``hello`` and ``cancel`` at once; ``load``,
``reconstruct`` and ``release`` run one after another on a job thread, so a ``cancel`` is read
while a reconstruction runs and sets the ``threading.Event`` the pipeline polls.

The stream is kept clean: at start-up the real stdout is duplicated for the protocol, and file
descriptor 1 and ``sys.stdout`` are pointed at stderr, so a stray print — even from C code — can
never corrupt it. Logs go to stderr. The worker exits when stdin closes (Blender quit) or on
``shutdown``; a bad request or an out-of-memory error is answered with an ``error`` event and the
worker keeps serving.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import platform
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Optional

from ..core.protocol.events import (AckEvent, ErrorEvent, Event, HelloEvent, LoadedEvent, ProgressEvent,
                                    ReadyEvent, ResultEvent)
from ..core.protocol.requests import (CancelRequest, FetchRequest, HelloRequest, LoadRequest, PutRequest,
                                      ReconstructRequest, ReleaseRequest, Request, ShutdownRequest, decode_request)
from ..core.protocol.wire import PROTOCOL_VERSION, LineTooLong, ProtocolError, encode, read_line, skip_line
from ..core.atomic import write_failure
from ..core.errors import OptionError, UserError
from .errors import BadRequest, Cancelled, NotLoaded, out_of_memory
from .jobs import JobFolders, PathRefused
from .loaded_model import LoadedModel, free_cached_memory, plan_precision, weights_dtype
from .runtime_info import extension_version, first_line, require_libraries

if TYPE_CHECKING:                  # torch loads lazily: the worker answers hello without it
    from .config import ModelConfig
    from .images import PendingPhotos

log = logging.getLogger("mvdust3r.worker")

STOP_TIMEOUT_S = 10.0  # how long shutdown / stdin close waits for a cancelled job to wind down


@dataclass
class _Job:
    """A queued or running request and the event that cancels it."""

    request: Request
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Serves requests read from a binary stream, writing events to the text stream `out`."""

    def __init__(self, out: IO[str], jobs: Optional[JobFolders] = None) -> None:
        self._out = out
        self._folders = jobs  # job mode (a remote worker): requests name only files sent into a job folder
        self._write_lock = threading.Lock()
        self._jobs: queue.Queue[Optional[_Job]] = queue.Queue()
        self._pending: dict[str, _Job] = {}  # queued or running jobs by request id
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run_jobs, name="mvdust3r-jobs", daemon=True)
        self.models = LoadedModel()

    # -- stream ---------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Write one event line; called from both threads."""
        line = encode(event) + "\n"
        with self._write_lock:
            self._out.write(line)
            self._out.flush()

    def serve(self, stdin: IO[bytes]) -> int:
        """Read requests until stdin closes or a shutdown request; returns the exit code."""
        self._thread.start()
        self.emit(ReadyEvent(protocol=PROTOCOL_VERSION, pid=os.getpid()))
        log.info("ready: pid %d, protocol %d, Python %s at %s", os.getpid(), PROTOCOL_VERSION,
                 platform.python_version(), sys.executable)
        while True:
            try:
                line = read_line(stdin)  # never more than one message's worth in memory
                if not line:
                    log.info("stdin closed: stopping")
                    self._stop()
                    return 0
                if not line.strip():
                    continue
                request = decode_request(line)
            except ProtocolError as exc:
                if isinstance(exc, LineTooLong):
                    skip_line(stdin)
                self.emit(ErrorEvent(id=exc.request_id, code="bad_request", message=str(exc),
                                     hint="send one JSON request object per line (see docs/worker.md)"))
                continue
            if isinstance(request, ShutdownRequest):
                cancelled = self._stop()
                self.emit(AckEvent(id=request.id, request=request.type,
                                   detail=f"shutting down; cancelled {cancelled} pending request(s)"))
                return 0
            self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        with self._pending_lock:
            duplicate = request.id in self._pending
        if duplicate:
            self.emit(ErrorEvent(id=request.id, code="bad_request",
                                 message=f"request id {request.id!r} is already in use by a pending request",
                                 hint="give every request a new id"))
        elif isinstance(request, HelloRequest):
            self.emit(self._answer(request, self._hello))
        elif isinstance(request, CancelRequest):
            self.emit(self._cancel(request))
        elif isinstance(request, PutRequest):  # at once, in order: the reconstruct request comes after its photos
            self.emit(self._answer(request, self._put))
        else:  # load, reconstruct, release: in order, on the job thread
            job = _Job(request)
            with self._pending_lock:
                self._pending[request.id] = job
            self._jobs.put(job)

    def _stop(self) -> int:
        """Cancel everything pending, end the job thread; returns how many requests were cancelled."""
        with self._pending_lock:
            jobs = list(self._pending.values())
        for job in jobs:
            job.cancel.set()
        self._jobs.put(None)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("a job did not stop within %.0f s of being cancelled", STOP_TIMEOUT_S)
        return len(jobs)

    @property
    def stopped_cleanly(self) -> bool:
        return not self._thread.is_alive()

    # -- immediate requests ---------------------------------------------------------------------

    def _hello(self, request: HelloRequest) -> Event:
        if request.protocol != PROTOCOL_VERSION:
            return ErrorEvent(id=request.id, code="protocol",
                              message=f"the worker speaks protocol {PROTOCOL_VERSION}, the client {request.protocol}",
                              hint="run the worker from the same extension version as Blender's add-on")
        import numpy
        import torch

        require_libraries()
        from .devices import device_infos

        return HelloEvent(id=request.id, protocol=PROTOCOL_VERSION, extension=extension_version(),
                          python=platform.python_version(), torch=torch.__version__, numpy=numpy.__version__,
                          pid=os.getpid(), devices=device_infos(), model=self.models.info, loads=self.models.loads)

    def _cancel(self, request: CancelRequest) -> Event:
        with self._pending_lock:
            jobs = [j for i, j in self._pending.items() if request.target in (None, i)]
        for job in jobs:
            job.cancel.set()
        if self._folders is not None and request.target is not None and not jobs:
            self._folders.discard(request.target)  # photos sent for a request that will never run
        names = ", ".join(j.request.id for j in jobs)
        log.info("cancel %s: %s", request.target or "everything", names or "nothing pending")
        if jobs:
            detail = f"cancelling {names}"
        elif request.target is None:
            detail = "nothing to cancel"
        else:
            detail = f"no pending request {request.target!r} (it may have finished already)"
        return AckEvent(id=request.id, request=request.type, detail=detail)

    def _put(self, request: PutRequest) -> Event:
        if self._folders is None:
            raise BadRequest("this worker reads photos by path and has no job folder to put files in",
                             "send put requests only to a worker started with --jobs (a remote worker)")
        return self._folders.put(request)

    # -- jobs -----------------------------------------------------------------------------------

    def _run_jobs(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                event = self._answer(job.request, lambda r: self._run(r, job))
                self.emit(event)
                if isinstance(event, ErrorEvent):
                    # The exception and the frames holding its tensors are gone: give the memory back
                    # (after answering: a collection can take a while with torch loaded).
                    free_cached_memory()
            finally:
                with self._pending_lock:
                    self._pending.pop(job.request.id, None)

    def _run(self, request: Request, job: _Job) -> Event:
        if job.cancel.is_set():
            if self._folders is not None and isinstance(request, ReconstructRequest) and request.job is not None:
                self._folders.discard(request.job)  # its photos go now, not when the connection ends
            raise Cancelled(f"{request.type} request {request.id!r} was cancelled before it started")
        if isinstance(request, LoadRequest):
            started = time.perf_counter()
            dtype = weights_dtype(request.dtype, plan_precision(request.precision, request.device))
            reused = self.models.ensure(request.checkpoint, request.device, dtype, self._progress(job))
            return LoadedEvent(id=request.id, model=self.models.info, reused=reused, loads=self.models.loads,
                               seconds=round(time.perf_counter() - started, 4))
        if isinstance(request, ReconstructRequest):
            if self._folders is not None:
                return self._folders.run(request, lambda r: self._reconstruct(r, job), self.emit, job.cancel)
            if request.job is not None:
                raise PathRefused(f"job {request.job!r}: this worker reads photos by path and has no job folders",
                                  "leave 'job' out, or start the worker with --jobs (a remote worker)")
            return self._reconstruct(request, job)
        if isinstance(request, FetchRequest):
            if self._folders is None:
                raise BadRequest("this worker has no model folder to fetch into",
                                 "download checkpoints with the add-on's preferences; fetch is for a remote worker")
            return self._folders.fetch(request, self._progress(job), job.cancel)
        if isinstance(request, ReleaseRequest):
            held = self.models.info
            self.models.drop()
            detail = f"released the {held.variant or 'model'} on {held.device}" if held else "no model was loaded"
            return AckEvent(id=request.id, request=request.type, detail=detail)
        raise AssertionError(f"no job handler for {request.type}")

    def handle(self, request: Request) -> Event:
        """Run one load, reconstruct or release request on this thread, without a stream: its
        final event (failures as ``error`` events, as the stream would carry them). The worker
        inside a Ray actor (:mod:`.farm_actor`) serves scenes this way."""
        job = _Job(request)
        return self._answer(request, lambda r: self._run(r, job))

    def _answer(self, request: Request, handle: Callable[[Any], Event]) -> Event:
        """Run `handle(request)`; every exception becomes the request's error event."""
        try:
            return handle(request)
        except UserError as exc:
            event = ErrorEvent(id=request.id, code=exc.code, message=exc.message, hint=exc.hint)
            log.info("%s %s failed: %s", request.type, request.id, exc)
        except ModuleNotFoundError as exc:
            event = ErrorEvent(id=request.id, code="runtime",
                               message=f"the worker's Python ({sys.executable}) cannot import {exc.name!r}",
                               hint="install the runtime's packages (torch, numpy, pillow, opencv, safetensors) "
                                    "into that Python, or choose another runtime in the add-on's preferences")
            log.error("%s %s: %s", request.type, request.id, exc)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 — the boundary: nothing may kill the worker
            where = self.models.info.device if self.models.info else "this device"
            memory = out_of_memory(exc, request.type, where)
            if isinstance(exc, KeyboardInterrupt) and memory is None:
                raise  # a real Ctrl-C; one raised at the address-space limit is that limit's doing
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                message, hint = write_failure(Path(exc.filename or "a file"), exc)  # the user's to fix: never "a bug"
                event = ErrorEvent(id=request.id, code="disk_full", message=f"{request.type}: {message}",
                                   hint=hint + "; the worker is still running")
                log.warning("%s %s: %s", request.type, request.id, message)
            elif memory is not None:
                event = ErrorEvent(id=request.id, code=memory.code, message=memory.message,
                                   hint=memory.hint + "; the worker is still running")
                log.warning("%s %s ran out of memory: %s", request.type, request.id, first_line(exc))
            else:
                traceback.print_exc(file=sys.stderr)
                event = ErrorEvent(id=request.id, code="internal",
                                   message=f"{request.type} failed unexpectedly: {type(exc).__name__}: "
                                           f"{first_line(exc)}",
                                   hint="this is a bug; the worker log (stderr) has the traceback")
        return event

    def _progress(self, job: _Job) -> Callable[[str, float], None]:
        """The pipeline's progress callback: emits progress events and, once cancelled, stops the run."""
        def report(stage: str, fraction: float) -> None:
            if job.cancel.is_set():
                raise Cancelled(f"{job.request.type} request {job.request.id!r} was cancelled")
            share = float(fraction) if math.isfinite(fraction) else 0.0
            self.emit(ProgressEvent(id=job.request.id, stage=str(stage), fraction=min(max(share, 0.0), 1.0)))
        return report

    # -- reconstruct ----------------------------------------------------------------------------

    def _reconstruct(self, request: ReconstructRequest, job: _Job) -> Event:
        from ..core.bundle import write_bundle
        from ..core.exports import export
        from .images import start_loading
        from .pipeline import reconstruct

        started = time.perf_counter()
        options = request.options  # typed and checked when the request was decoded
        output = Path(request.output).expanduser()
        if not output.is_absolute():
            raise BadRequest(f"output path {request.output!r} is not absolute",
                             "give the bundle's full path (the worker's working directory is arbitrary)")
        export_dir = _export_dir(request, options.gaussians)
        progress = self._progress(job)
        pending: list[PendingPhotos] = []  # the photos decode while a model loads

        def decode_photos(config: ModelConfig) -> None:
            pending.append(start_loading(request.photos, config.img_size))

        reused = True
        loaded = self.models.info
        device = request.device if request.checkpoint is not None else loaded.device if loaded is not None else None
        plan = plan_precision(options.precision, device) if device is not None else None  # once per request
        try:
            if plan is not None and loaded is not None and self.models.key is not None and request.checkpoint is None \
                    and weights_dtype(request.dtype, plan) != self.models.dtype:
                # the loaded model, in the weights' dtype this run's precision needs
                reused = self.models.ensure(loaded.checkpoint, loaded.device, weights_dtype(request.dtype, plan),
                                            progress, decode_photos)
            elif plan is not None and request.checkpoint is not None:
                reused = self.models.ensure(request.checkpoint, request.device, weights_dtype(request.dtype, plan),
                                            progress, decode_photos)
            if self.models.network is None:
                raise NotLoaded("no model is loaded",
                                "send a load request first, or give the checkpoint in this request")
            bundle = reconstruct(list(request.photos), self.models.network, options, progress=progress, cancel=job.cancel,
                                 pending=pending[0] if pending else None, plan=plan)
        finally:
            for decoding in pending:
                decoding.cancel()
        if job.cancel.is_set():
            raise Cancelled(f"reconstruct request {request.id!r} was cancelled")
        written = time.perf_counter()
        write_bundle(bundle, output)
        timings = {str(k): float(v) for k, v in dict(bundle.meta.get("timings", {})).items()
                   if isinstance(v, (int, float))}
        timings["write"] = round(time.perf_counter() - written, 4)
        exported: dict[str, str] = {}
        if export_dir is not None:
            progress("export", 0.0)
            exporting = time.perf_counter()
            exported = {name: str(path) for name, path in
                        export(bundle, request.exports, export_dir, cut=request.export_cut, align=options.align).items()}
            timings["export"] = round(time.perf_counter() - exporting, 4)
            progress("export", 1.0)
        timings["total"] = round(time.perf_counter() - started, 4)
        return ResultEvent(id=request.id, bundle=str(output), views=bundle.num_views,
                           points=int(bundle.pts3d.shape[0] * bundle.pts3d.shape[1] * bundle.pts3d.shape[2]),
                           gaussians=bundle.has_gaussians, timings=timings, model_reused=reused,
                           loads=self.models.loads, exports=exported)


def _export_dir(request: ReconstructRequest, gaussians: bool) -> Optional[Path]:
    """Check the requested exports before any work is done; the folder to write them to, or None."""
    if not request.exports:
        return None
    from ..core.exports import needing_gaussians, parse_formats  # numpy: imported on use, like torch (hello works without them)

    try:
        parse_formats(request.exports)  # the command lines' check and message
    except OptionError as exc:
        raise BadRequest(exc.message, exc.hint) from None
    needing = needing_gaussians(request.exports)
    if needing and not gaussians:
        raise BadRequest(f"the {', '.join(map(repr, needing))} export needs Gaussians",
                         "drop the gaussians=false option or that format")
    if request.export_dir is None or not Path(request.export_dir).expanduser().is_absolute():
        raise BadRequest(f"export_dir {request.export_dir!r} is not an absolute path",
                         "give the full path of the folder the exports go to")
    return Path(request.export_dir).expanduser()


def take_stdout() -> IO[str]:
    """Keep the real stdout for the protocol; send fd 1 and ``sys.stdout`` to stderr from now on."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")


def main(argv: Optional[list[str]] = None) -> int:
    """``--jobs DIR``: job mode (see :mod:`.jobs`), with this process's job folders under DIR."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mvdust3r_blender.engine.worker")
    parser.add_argument("--jobs", metavar="DIR", help="job mode: read only files sent into job folders under DIR")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = take_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="[worker %(asctime)s] %(levelname)s %(message)s")
    jobs = JobFolders(Path(args.jobs)) if args.jobs else None
    worker = Worker(out, jobs)
    try:
        code = worker.serve(sys.stdin.buffer)
    finally:
        if jobs is not None:
            jobs.close()
    out.flush()
    if not worker.stopped_cleanly:  # a job ignored its cancel: don't wait for it at interpreter exit
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
