"""The worker on another machine, reached over ``ssh``: the same protocol on ssh's stdin/stdout.

OpenSSH authenticates and encrypts; nothing listens on a port. :class:`RemoteWorkerClient` is a
:class:`~.worker_client.WorkerClient` whose process is ``ssh [options] DEST <python> -c <bootstrap>``:

1. **Engine.** The bootstrap (standard library only) looks for ``~/.cache/mvdust3r-blender/
   engine-<sha256>/`` on the remote; when it is missing it says ``need``, and the client sends the
   engine's files (``core/``, ``engine/``, the manifest: a reproducible ``.tar.gz`` whose SHA-256 is
   the version) over the same stream; the bootstrap checks the hash, unpacks into a temporary folder
   and renames it into place. Then it runs the worker in job mode (``--jobs``, see
   :mod:`..engine.jobs`) from that folder. Nothing is installed by hand beyond a Python with torch.
2. **Photos** go as ``put`` requests (1 MiB base64 parts, on a helper thread, each file's size
   checked before it is sent, ``upload`` progress), then the ``reconstruct`` request names them
   inside the job's folder. The remote worker reads nothing else.
3. **Results** come back as ``data`` events, written part by part beside their local destination,
   each file checked against its SHA-256; the bundle is then read (which validates it), its photo
   paths set back to the local photos, and written atomically where the caller asked. Only then
   does the caller see the ``result`` event, naming local files.

ssh always runs with ``BatchMode=yes`` (a password or host-key prompt fails at once with ssh's own
message, never hangs) and keep-alives, so a dead connection is noticed within seconds; the user's
own ssh options (``-i key``, ``-F config``, ``-J jump``) come first and win. No bpy, no torch.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Optional, Sequence

from ..core.confidence import ConfidenceCut
from ..core.engine_files import engine_archive
from ..core.errors import UserError
from ..core.options import ReconstructOptions
from ..core.protocol.events import DataEvent, ErrorEvent, Event, ProgressEvent, ResultEvent
from ..core.protocol.requests import CancelRequest, FetchRequest, PutRequest, ReconstructRequest
from ..core.protocol.wire import read_line
from .remote_target import RemoteError, RemoteTarget
from .remote_transfer import BUNDLE_NAME, CHUNK_BYTES, EXPORTS_NAME, _Transfer, result_budget
from .runtime import plan_environment
from .setup_steps import Step
from .torch_build import AUTO, TORCH_BACKENDS, TorchBuild
from .worker_client import EXIT_TAIL_LINES, PACKAGE_DIR, WorkerClient, end_process

MAX_PHOTO_BYTES = 512 * 1024 ** 2  # a photo larger than this is refused before sending (as the worker does)
HANDSHAKE_TIMEOUT_S = 60.0
"""From starting ssh to the remote bootstrap's first word (connecting, logging in, starting Python)."""
REMOTE_CACHE = ".cache/mvdust3r-blender"  # relative to the remote home (ssh starts commands there)
REMOTE_MODELS = f"{REMOTE_CACHE}/models"   # where fetch puts released checkpoints
_MARK = "mvdust3r-engine:"
_JOB_UNSAFE = re.compile(r"[^\w.-]")

ENGINES_KEPT = 3
"""Engine versions kept in the remote cache (the newest used); older ones are removed."""

# Runs on the remote under its Python (3.10+, as the engine), standard library only; argv: engine
# hash, package name, tree hash (of the unpacked files: checked on every start, see tree_digest).
BOOTSTRAP = r"""
import errno, glob, hashlib, io, os, runpy, shutil, sys, tarfile, tempfile, time
digest, package, tree = sys.argv[1], sys.argv[2], sys.argv[3]
base = os.path.expanduser("~/CACHE")
engine = os.path.join(base, "engine-" + digest)
def say(text):
    os.write(1, (text + "\n").encode())
def fail(text):
    sys.exit("mvdust3r: " + text)
def take(n):
    parts = []
    while n > 0:
        part = os.read(0, min(n, 1 << 20))
        if not part:
            fail("the connection closed while the engine was being sent")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
def tree_digest(root):
    names = sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                   for d, _, files in os.walk(root) for f in files)
    h = hashlib.sha256()
    for name in names:
        if name != "complete":
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()
if os.path.isfile(os.path.join(engine, "complete")) and tree_digest(engine) == tree:
    say("MARK have " + digest)
else:
    if os.path.isdir(engine):  # damaged or altered: never run; moved aside whole, removed, unpacked again
        aside = tempfile.mkdtemp(prefix=".engine-", dir=base)
        os.rename(engine, os.path.join(aside, "damaged"))
        shutil.rmtree(aside, ignore_errors=True)
    say("MARK need " + digest)
    line = b""
    while not line.endswith(b"\n"):
        line += take(1)
        if len(line) > 20:
            fail("the engine's size did not arrive")
    blob = take(int(line))
    if hashlib.sha256(blob).hexdigest() != digest:
        fail("the engine arrived damaged (SHA-256 mismatch)")
    unpacked = None
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        unpacked = tempfile.mkdtemp(prefix=".engine-", dir=base)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        if tree_digest(unpacked) != tree:
            fail("the engine unpacked into other files than were sent")
        open(os.path.join(unpacked, "complete"), "w").close()
        try:
            os.rename(unpacked, engine)
        except OSError:  # another connection unpacked it first: run that, once it checks out
            if not (os.path.isdir(engine) and tree_digest(engine) == tree):
                raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            fail(f"the remote disk is full: the engine ({len(blob) // 1000} kB packed) cannot be unpacked "
                 f"into {base}; free some space there and run again (nothing half-unpacked was left)")
        fail(f"cannot unpack the engine into {base}: {exc}")
    finally:
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
    now = time.time()
    engines = sorted(glob.glob(os.path.join(base, "engine-*")), key=os.path.getmtime, reverse=True)
    for old in [e for e in engines if e != engine][KEPT - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in glob.glob(os.path.join(base, ".engine-*")):  # left by a connection that died unpacking
        if now - os.path.getmtime(stale) > 3600:
            shutil.rmtree(stale, ignore_errors=True)
os.utime(engine)  # the newest used: kept by the pruning above
sys.dont_write_bytecode = True  # no __pycache__ beside the checked files (it would be read instead of them)
sys.path.insert(0, engine)
sys.argv = [package + ".engine.worker", "--jobs", os.path.join(base, "jobs")]
runpy.run_module(package + ".engine.worker", run_name="__main__", alter_sys=True)
""".replace("MARK", _MARK).replace("CACHE", REMOTE_CACHE).replace("KEPT", str(ENGINES_KEPT))


# ---------------------------------------------------------------------------------------------
# The engine's files, as sent to a remote


_ARCHIVE: dict[Path, tuple[bytes, str, str]] = {}


def _cached_archive(package_dir: Path) -> tuple[bytes, str, str]:
    if package_dir not in _ARCHIVE:
        _ARCHIVE[package_dir] = engine_archive(package_dir)
    return _ARCHIVE[package_dir]




def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name}, signal {number}"
    except ValueError:
        return f"signal {number}"


class RemoteWorkerClient(WorkerClient):
    """A worker on `target` over ssh; used exactly like a local :class:`WorkerClient`."""

    def __init__(self, target: RemoteTarget, *, env: Optional[dict[str, str]] = None,
                 log_path: Optional[Path] = None, stderr_lines: int = 200, package_dir: Path = PACKAGE_DIR,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
        super().__init__(target.python, env=env, package_parent=package_dir.parent, log_path=log_path,
                         stderr_lines=stderr_lines)
        self.target = target
        self.handshake_timeout = handshake_timeout
        self.package_dir = package_dir
        self.engine_sent = False  # this connection had to send the engine (the remote had another version)
        self._transfers: dict[str, _Transfer] = {}
        self._dropped: set[str] = set()  # requests failed on this side: the worker's later events for them are dropped
        self._transfers_lock = threading.Lock()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        _, digest, tree = _cached_archive(self.package_dir)
        remote = (f"{self.target.python} -c {shlex.quote(BOOTSTRAP)} {digest} {shlex.quote(self.package_dir.name)} "
                  f"{tree}")
        return self.target.ssh_argv(remote), dict(self._env)

    def _handshake(self, proc: subprocess.Popen[str], stdout: IO[str]) -> None:
        """Read the bootstrap's answer (within :attr:`handshake_timeout` s of starting ssh); send the
        engine when it needs it; then open the request stream. Lines are bounded as events are."""
        blob, digest, _ = _cached_archive(self.package_dir)
        timer = threading.Timer(self.handshake_timeout, self._handshake_expired, args=(proc,))
        timer.daemon = True
        timer.start()
        try:
            while line := read_line(stdout):
                text = line.strip()
                if text == f"{_MARK} have {digest}":
                    break
                if text == f"{_MARK} need {digest}":
                    self.engine_sent = True
                    try:
                        assert proc.stdin is not None
                        raw = getattr(proc.stdin, "buffer")  # the text pipe's byte stream
                        with self._send_lock:
                            proc.stdin.flush()
                            raw.write(f"{len(blob)}\n".encode() + blob)
                            raw.flush()
                    except (BrokenPipeError, OSError, ValueError):
                        return  # the connection died: the event thread reports it
                    break
                self._stderr.append(f"[remote stdout before the worker] {text[:200]}")  # a login script's chatter
            else:
                return  # ssh ended before the bootstrap answered: its message is in stderr
        finally:
            timer.cancel()
        self._open_requests(proc)

    def _handshake_expired(self, proc: subprocess.Popen[str]) -> None:
        self._violation = (f"did not start within {self.handshake_timeout:g} s (a login script that waits for "
                           "input, or prints without ending its line?)")
        end_process(proc)

    def _exit_event(self, code: Optional[int]) -> ErrorEvent:
        event = super()._exit_event(code)
        if self._proc is None:
            return event
        if self._violation:
            return dataclasses.replace(event, message=f"the remote worker on {self.target} {self._violation}; the "
                                                      "connection was closed")
        if code is not None and (code == 255 or code < 0):  # ssh's own failure, or ssh killed
            what = f"the ssh connection to {self.target} failed or was lost (ssh exited with code {code})"
        elif code is None:
            what = f"the remote worker on {self.target} is not responding"
        elif code > 128:  # the remote shell's way of saying "killed by signal code - 128"
            oom = ", as the out-of-memory killer does: too little memory there?" if code - 128 == signal.SIGKILL else ""
            what = f"the remote worker on {self.target} was killed ({_signal_name(code - 128)}{oom})"
        else:
            what = f"the remote worker on {self.target} exited with code {code}"
        tail = self.stderr_tail(EXIT_TAIL_LINES)  # ssh's and the remote worker's last words
        return ErrorEvent(code=event.code, message=what, hint="\n".join(tail) if tail else "nothing was written to stderr")

    # -- requests -------------------------------------------------------------------------------

    def reconstruct(self, photos: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                    options: ReconstructOptions = ReconstructOptions(), *,
                    checkpoint: Optional[str | os.PathLike[str]] = None, device: str = "auto",
                    dtype: Optional[str] = None, exports: Sequence[str] = (),
                    export_dir: Optional[str | os.PathLike[str]] = None,
                    export_cut: ConfidenceCut = ConfidenceCut()) -> str:
        """As :meth:`WorkerClient.reconstruct`, with `photos` sent over the stream first (on a helper
        thread: this returns at once) and the results received into `output` and `export_dir`.
        `checkpoint` is a path on the remote."""
        from ..core.exports import parse_formats  # numpy: imported on use

        try:
            formats = parse_formats(exports)  # before anything is sent or written (the worker's own check)
        except UserError as exc:
            raise RemoteError(exc.message, exc.hint) from None
        request_id = self._new_id()
        local = [Path(p).absolute() for p in photos]
        # the job folder's names: the photo's name with what a remote path must not hold made '_'
        names = [f"photos/{k:04d}/{_JOB_UNSAFE.sub('_', p.name).lstrip('.') or 'photo'}" for k, p in enumerate(local)]
        transfer = _Transfer(photos=local, names=names, output=Path(output).absolute(),
                             export_dir=Path(export_dir).absolute() if export_dir is not None else None,
                             exports=formats if export_dir is not None else [])
        request = ReconstructRequest(
            id=request_id, photos=names, output=BUNDLE_NAME, options=options,
            checkpoint=str(checkpoint) if checkpoint is not None else None, device=device, dtype=dtype,
            exports=formats, export_dir=EXPORTS_NAME if export_dir is not None else None,
            export_cut=export_cut, job=request_id)
        with self._transfers_lock:
            self._transfers[request_id] = transfer
        threading.Thread(target=self._upload, args=(transfer, request), name=f"mvdust3r-upload-{request_id}",
                         daemon=True).start()
        return request_id

    def fetch(self, url: str, filename: str, size: Optional[int] = None) -> str:
        """Download a released checkpoint on the remote into :data:`REMOTE_MODELS` (the ``fetched``
        event names its path there and its SHA-256); returns the request id."""
        return self.send(FetchRequest(url=url, filename=filename, size=size))

    def cancel(self, target: Optional[str] = None) -> str:
        with self._transfers_lock:
            for request_id, transfer in self._transfers.items():
                if target in (None, request_id):
                    transfer.cancelled.set()
        return super().cancel(target)

    def _upload(self, transfer: _Transfer, request: ReconstructRequest) -> None:
        """Send the photos part by part (one part in memory), then the request that names them."""
        rid = request.id
        try:
            sizes = []
            for photo in transfer.photos:
                size = photo.stat().st_size
                if size > MAX_PHOTO_BYTES:
                    raise RemoteError(f"the photo '{photo}' is {size / 1e6:.0f} MB, more than the "
                                      f"{MAX_PHOTO_BYTES / 1e6:.0f} MB a remote worker accepts",
                                      "use a smaller copy of it")
                sizes.append(size)
            transfer.budget = result_budget(sizes)
            total, sent = max(sum(sizes), 1), 0
            for k, (photo, name, size) in enumerate(zip(transfer.photos, transfer.names, sizes)):
                offset = 0
                with open(photo, "rb") as f:
                    while True:
                        if transfer.cancelled.is_set() or transfer.failed:
                            if transfer.cancelled.is_set():
                                self._fail(rid, ErrorEvent(id=rid, code="cancelled", message=f"reconstruct "
                                           f"request {rid!r} was cancelled while its photos were being sent"))
                            return
                        chunk = f.read(CHUNK_BYTES)
                        if offset + len(chunk) > size:
                            raise RemoteError(f"the photo '{photo}' changed while it was being sent")
                        self.send(PutRequest(id=f"{rid}.put{k}.{offset}", job=rid, name=name, size=size,
                                             offset=offset, data=base64.b64encode(chunk).decode("ascii")))
                        offset += len(chunk)
                        sent += len(chunk)
                        self._events.put(ProgressEvent(id=rid, stage="upload", fraction=min(sent / total, 1.0)))
                        if offset >= size:
                            break
            self.send(request)
        except RemoteError as exc:
            self._fail(rid, ErrorEvent(id=rid, code="input", message=exc.message, hint=exc.hint))
        except OSError as exc:
            self._fail(rid, ErrorEvent(id=rid, code="input", message=f"cannot read a photo to send: {exc}",
                                       hint="check that the photos exist and are readable"))
        except UserError:
            pass  # the worker is gone: the event thread reports it (worker_exited)

    def _fail(self, request_id: str, event: ErrorEvent) -> None:
        """End request `request_id` on this side with `event`: its staged files go, and the remote is
        asked to cancel it, which also removes the photos already sent into its job folder."""
        with self._transfers_lock:
            transfer = self._transfers.pop(request_id, None)
            self._dropped.add(request_id)
        if transfer is not None:
            transfer.failed = True
            transfer.discard()
            self._events.put(event)
            try:
                self.send(CancelRequest(target=request_id))
            except UserError:
                pass  # the connection is gone: the remote worker removes its jobs when it exits

    def _ended(self) -> None:
        """The connection ended: every request's staged files go (nothing partial stays behind)."""
        with self._transfers_lock:
            transfers = list(self._transfers.values())
        for transfer in transfers:
            transfer.failed = True
            transfer.discard()

    # -- events (on the event thread) -----------------------------------------------------------

    def _received(self, event: Event) -> list[Event]:
        rid = (event.id or "").split(".put", 1)[0]
        with self._transfers_lock:
            transfer = self._transfers.get(rid)
        if event.id != rid:  # a put's answer: acks are internal; an error fails its request
            if isinstance(event, ErrorEvent) and transfer is not None:
                self._fail(rid, dataclasses.replace(event, id=rid))
            return []
        if transfer is None:
            return [] if rid in self._dropped else [event]
        try:
            if isinstance(event, DataEvent):
                transfer.receive(event)
                fraction = (event.offset + len(event.data) * 3 // 4) / max(event.size, 1)
                return [ProgressEvent(id=rid, stage="download", fraction=min(fraction, 1.0))]
            if isinstance(event, ResultEvent):
                finished = transfer.finish(event)
                with self._transfers_lock:
                    self._transfers.pop(rid, None)
                return [finished]
        except (UserError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, UserError) else f"cannot write the result: {exc}"
            hint = exc.hint if isinstance(exc, UserError) else "check the free space where the result goes"
            self._fail(rid, ErrorEvent(id=rid, code="remote", message=message, hint=hint))
            return []
        if isinstance(event, ErrorEvent):
            with self._transfers_lock:
                self._transfers.pop(rid, None)
            transfer.discard()
        return [event]


# ---------------------------------------------------------------------------------------------
# Set Up Remote Runtime: the local set-up's commands, run on the remote over ssh

REMOTE_RUNTIME = f"{REMOTE_CACHE}/runtime"
"""The remote environment Set Up Remote Runtime makes (relative to the remote home)."""
REMOTE_RUNTIME_PYTHON = f"{REMOTE_RUNTIME}/bin/python"


def plan_remote_environment(target: RemoteTarget, backend: str = AUTO) -> list[Step]:
    """The same set-up as on this machine (uv, ``--torch-backend``; :func:`.runtime.plan_environment`
    with the remote's paths), each command run on `target` over ssh, after one step that puts uv
    into a small tools environment there (``<python> -m venv`` + pip), so uv's ``auto`` detects the
    remote's GPU driver. The result is :data:`REMOTE_RUNTIME_PYTHON` (a Linux or macOS remote)."""
    if backend not in TORCH_BACKENDS:
        raise RemoteError(f"unknown PyTorch build '{backend}'", f"choose one of {', '.join(TORCH_BACKENDS)}")
    tools = f"{REMOTE_CACHE}/uv-tools"
    install_uv = (f"{target.python} -m venv {tools} && {tools}/bin/python -m pip install --disable-pip-version-check "
                  "--no-input uv")
    build = TorchBuild(backend, "uv on the remote detects its GPU driver" if backend == AUTO else "chosen in the preferences")
    steps = [Step(f"Install uv on {target}", tuple(target.ssh_argv(install_uv)))]
    for step in plan_environment(Path(REMOTE_RUNTIME), base_python=shlex.split(target.python)[-1],
                                 uv=f"{tools}/bin/uv", build=build):
        steps.append(Step(f"{step.title} on {target}", tuple(target.ssh_argv(shlex.join(step.argv)))))
    return steps
