"""Job mode: a worker on another machine reads only what it was sent, and sends its results back.

A remote worker (started over ``ssh`` by :mod:`..client.remote`) runs as
``python -m mvdust3r_blender.engine.worker --jobs DIR``. It cannot read the client's files, and it
must not read anything else of its own machine on a request's say-so, so in this mode:

- photos arrive as ``put`` requests (base64 parts, in order, each file's size checked against
  :data:`MAX_FILE_BYTES` before its first byte is written) into ``<root>/<job>/``, where ``<root>``
  is a fresh 0700 folder of this process under DIR;
- a ``reconstruct`` request must name a ``job``, and its ``photos``, ``output`` and ``export_dir``
  are relative names inside that job's folder: an absolute path, ``..`` or a symlink out of the
  folder is refused (``bad_request``) before any work. The checkpoint alone is a path on the remote
  (the user's model file there), read as everywhere without unpickling code;
- after the run, the bundle and every export file go back as ``data`` events (1 MiB parts, the
  last with the file's SHA-256), then the ``result`` event names them relative to the job folder;
- the job's folder is removed when its request ends, whatever the outcome, and the whole root when
  the worker exits.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..core.protocol.events import AckEvent, DataEvent, Event, FetchedEvent, ResultEvent
from ..core.protocol.requests import FetchRequest, PutRequest, ReconstructRequest
from .errors import Cancelled, EngineError, InputError

MAX_FILE_BYTES = 512 * 1024 ** 2
"""The largest file a client may send (a photo; 512 MiB is far beyond any camera's)."""
CHUNK_BYTES = 1024 ** 2
"""Bytes per ``data`` event (and per ``put`` from the client): one part in memory at a time."""
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PathRefused(EngineError):
    """A request named a path outside its job folder (or no job at all) in job mode."""

    code = "bad_request"


class JobFolders:
    """The job folders of one worker process: ``<parent>/<pid>-xxxx/<job>/``."""

    def __init__(self, parent: Path) -> None:
        parent = Path(parent).expanduser()
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_orphans(parent)
        self.models = parent.parent / "models"  # ~/.cache/mvdust3r-blender/models: checkpoints fetched here
        self.root = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)).resolve()
        (self.root / OWNER).write_text(_owner())  # whose it is: never removed while that worker lives
        self._lock = threading.Lock()  # puts (main thread) and a job's end (job thread) touch folders

    def folder(self, job: str) -> Path:
        if not _JOB_NAME.fullmatch(job):
            raise PathRefused(f"job name {job!r} is not allowed",
                              "use letters, digits, '.', '_' or '-' (at most 64, not starting with '.')")
        return self.root / job

    def path(self, job: str, name: str) -> Path:
        """`name` inside job `job`'s folder; :class:`PathRefused` for anything that leads out of it."""
        folder = self.folder(job)
        parts = name.split("/")
        if (not name or "\\" in name or name.startswith("/") or any(part in ("", ".", "..") for part in parts)
                or any(ord(c) < 0x20 or c == "\x7f" for c in name)):
            raise PathRefused(f"'{name}' is not a name inside the job folder: this worker reads only what it "
                              "was sent", "send the file with a put request and name it relative to the job")
        target = (folder / name).resolve()
        if not target.is_relative_to(folder.resolve()):  # a symlink placed in the folder cannot lead out
            raise PathRefused(f"'{name}' leads out of the job folder", "name a file that was sent to this job")
        return target

    # -- receiving ------------------------------------------------------------------------------

    def put(self, request: PutRequest) -> AckEvent:
        """Write one part of a sent file; parts must come in order and stay within the declared size."""
        if not 0 <= request.size <= MAX_FILE_BYTES:
            raise InputError(f"'{request.name}' is {request.size} bytes: larger than the {MAX_FILE_BYTES} "
                             "bytes a worker accepts", "use a smaller photo")
        try:
            data = base64.b64decode(request.data, validate=True)
        except (binascii.Error, ValueError):
            raise PathRefused(f"put of '{request.name}': data is not base64") from None
        with self._lock:
            target = self.path(request.job, request.name)
            have = target.stat().st_size if request.offset and target.is_file() else 0
            if request.offset != have:
                raise PathRefused(f"put of '{request.name}' at byte {request.offset}, but {have} bytes arrived",
                                  "send a file's parts in order, starting at 0")
            if request.offset + len(data) > request.size:
                raise PathRefused(f"put of '{request.name}' goes beyond its declared size of {request.size} bytes")
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(target, "ab" if request.offset else "wb") as f:
                f.write(data)
        return AckEvent(id=request.id, request=request.type,
                        detail=f"{request.name}: {request.offset + len(data)} of {request.size} bytes")

    # -- a reconstruct request ------------------------------------------------------------------

    def localise(self, request: ReconstructRequest) -> ReconstructRequest:
        """The request with its names made paths inside its job folder (refused when they lead out)."""
        if request.job is None:
            raise PathRefused("this worker reads only its job folder, and the reconstruct request names no job",
                              "send the photos with put requests and give the job's name")
        job = request.job
        export_dir = str(self.path(job, request.export_dir)) if request.export_dir is not None else None
        return dataclasses.replace(request, photos=[str(self.path(job, p)) for p in request.photos],
                                   output=str(self.path(job, request.output)), export_dir=export_dir)

    def run(self, request: ReconstructRequest, reconstruct: Callable[[ReconstructRequest], Event],
            emit: Callable[[Event], None], cancel: threading.Event) -> Event:
        """Run `reconstruct` on the localised request, send its files back, then remove the job's folder."""
        try:
            event = reconstruct(self.localise(request))
            if isinstance(event, ResultEvent) and request.job is not None:
                event = self._send_back(request.job, event, emit, cancel)
            return event
        finally:
            if request.job is not None and _JOB_NAME.fullmatch(request.job):
                with self._lock:
                    shutil.rmtree(self.root / request.job, ignore_errors=True)

    def _send_back(self, job: str, result: ResultEvent, emit: Callable[[Event], None],
                   cancel: threading.Event) -> ResultEvent:
        folder = self.folder(job).resolve()

        def name(path: str | Path) -> str:
            return Path(path).resolve().relative_to(folder).as_posix()

        files = [Path(result.bundle)]
        for written in result.exports.values():
            files += sorted(p for p in Path(written).rglob("*") if p.is_file()) if Path(written).is_dir() \
                else [Path(written)]
        for path in files:
            for part in _parts(path, name(path)):
                if cancel.is_set():
                    raise Cancelled(f"reconstruct request {result.id!r} was cancelled while sending its results")
                part.id = result.id
                emit(part)
        return dataclasses.replace(result, bundle=name(result.bundle),
                                   exports={k: name(v) for k, v in result.exports.items()})

    # -- a released checkpoint, fetched on this machine -----------------------------------------

    def fetch(self, request: FetchRequest, progress: Callable[[str, float], None],
              cancel: threading.Event) -> FetchedEvent:
        """Download `request`'s checkpoint into :attr:`models` (resumable, size-checked by
        ``core.download``); its SHA-256 is reported for the client to compare or record."""
        from ..core.download import DownloadError, check_checkpoint_file, download_file

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(pth|safetensors)", request.filename):
            raise PathRefused(f"'{request.filename}' is not a checkpoint file name",
                              "give the released file's name, e.g. MVDp_s2.pth")
        if not request.url.startswith(("https://", "http://")):
            raise PathRefused(f"'{request.url}' is not an http(s) URL")
        self.models.mkdir(mode=0o700, parents=True, exist_ok=True)
        dest = self.models / request.filename

        def report(done: int, total: Optional[int]) -> None:
            progress("fetch", done / total if total else 0.0)

        try:
            download_file(request.url, dest, request.size, on_progress=report, cancel=cancel,
                          check=check_checkpoint_file)
        except DownloadError as exc:
            if cancel.is_set():
                raise Cancelled(f"fetching {request.filename} was cancelled (the partial file is kept)") from None
            raise InputError(exc.message, exc.hint) from None
        digest = hashlib.sha256()
        with open(dest, "rb") as f:
            while chunk := f.read(CHUNK_BYTES * 8):
                digest.update(chunk)
        return FetchedEvent(id=request.id, path=str(dest), size=dest.stat().st_size, sha256=digest.hexdigest())

    def discard(self, job: str) -> None:
        """Remove job `job`'s folder (its photos) now: its request failed or was cancelled on the
        client before it ran. A name that is not a job's is ignored."""
        if _JOB_NAME.fullmatch(job):
            with self._lock:
                shutil.rmtree(self.root / job, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


OWNER = ".owner"  # a job's name never starts with '.', so no job can be called this
"""The file in each worker's job root naming its host and process id (``host pid``)."""
UNOWNED_AGE_S = 24 * 3600
"""A job root without an owner file (a worker killed while making it, or an older version) is
removed only once it has been left this long."""


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}\n"


def _remove_orphans(parent: Path) -> None:
    """Remove the job folders of workers that died without cleaning up (killed, out of memory):
    sent photos must not linger on the remote. A folder is removed only when its owner file names
    this host and a process that no longer exists: with one home on several hosts (NFS) another
    host's worker is never judged by this host's process table. POSIX only (on Windows, os.kill
    would end the process)."""
    if os.name != "posix":
        return
    host = socket.gethostname()
    for folder in parent.glob("*-*"):
        try:
            owner = (folder / OWNER).read_text().split()
        except OSError:
            owner = []
        if len(owner) != 2 or not owner[1].isdigit():
            try:
                unowned = time.time() - folder.stat().st_mtime > UNOWNED_AGE_S
            except OSError:
                continue
            if unowned:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        if owner[0] != host or int(owner[1]) == os.getpid():
            continue
        try:
            os.kill(int(owner[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, but another user's (or not ours to signal): keep it


def _parts(path: Path, name: str) -> Iterator[DataEvent]:
    """`path` as ``data`` events of :data:`CHUNK_BYTES`, the last carrying the file's SHA-256."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    offset = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK_BYTES)
            digest.update(chunk)
            last = offset + len(chunk) >= size
            yield DataEvent(name=name, size=size, offset=offset, data=base64.b64encode(chunk).decode("ascii"),
                            sha256=digest.hexdigest() if last else "")
            offset += len(chunk)
            if last:
                return
