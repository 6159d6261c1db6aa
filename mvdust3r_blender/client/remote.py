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
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional, Sequence

from ..core.confidence import ConfidenceCut
from ..core.errors import UserError
from ..core.options import ReconstructOptions
from .runtime import Step, plan_environment
from .torch_build import AUTO, TORCH_BACKENDS, TorchBuild
from ..core.protocol import (DataEvent, ErrorEvent, Event, FetchRequest, ProgressEvent, PutRequest, ReconstructRequest,
                       ResultEvent)
from ..core.engine_files import engine_archive
from .worker_client import EXIT_TAIL_LINES, PACKAGE_DIR, WorkerClient

CHUNK_BYTES = 1024 ** 2          # bytes per put request (the worker's data events use the same)
MAX_PHOTO_BYTES = 512 * 1024 ** 2  # a photo larger than this is refused before sending (as the worker does)
SSH_OPTIONS: tuple[str, ...] = ("-o", "BatchMode=yes", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
                                "-o", "ConnectTimeout=15", "-T")
"""Added after the user's ssh command line (ssh takes the first value of an option: the user's win)."""
REMOTE_CACHE = ".cache/mvdust3r-blender"  # relative to the remote home (ssh starts commands there)
REMOTE_MODELS = f"{REMOTE_CACHE}/models"   # where fetch puts released checkpoints
_MARK = "mvdust3r-engine:"

# Runs on the remote under its Python (3.10+, as the engine), standard library only; argv: engine hash, package name.
BOOTSTRAP = r"""
import hashlib, io, os, runpy, shutil, sys, tarfile, tempfile
digest, package = sys.argv[1], sys.argv[2]
base = os.path.expanduser("~/CACHE")
engine = os.path.join(base, "engine-" + digest)
def say(text):
    os.write(1, (text + "\n").encode())
def take(n):
    parts = []
    while n > 0:
        part = os.read(0, min(n, 1 << 20))
        if not part:
            sys.exit("mvdust3r: the connection closed while the engine was being sent")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)
if not os.path.isfile(os.path.join(engine, "complete")):
    say("MARK need " + digest)
    line = b""
    while not line.endswith(b"\n"):
        line += take(1)
    blob = take(int(line))
    if hashlib.sha256(blob).hexdigest() != digest:
        sys.exit("mvdust3r: the engine arrived damaged (SHA-256 mismatch)")
    os.makedirs(base, mode=0o700, exist_ok=True)
    unpacked = tempfile.mkdtemp(prefix=".engine-", dir=base)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    open(os.path.join(unpacked, "complete"), "w").close()
    try:
        os.rename(unpacked, engine)
    except OSError:
        shutil.rmtree(unpacked, ignore_errors=True)
else:
    say("MARK have " + digest)
sys.path.insert(0, engine)
sys.argv = [package + ".engine.worker", "--jobs", os.path.join(base, "jobs")]
runpy.run_module(package + ".engine.worker", run_name="__main__", alter_sys=True)
""".replace("MARK", _MARK).replace("CACHE", REMOTE_CACHE)


class RemoteError(UserError):
    """The remote worker cannot be reached or set up, or a result arrived damaged."""

    code = "remote"


@dataclass(frozen=True)
class RemoteTarget:
    """Where a remote worker runs: ssh's destination (``user@host`` or ``ssh://user@host:port``), the
    ssh command line to use (``ssh -i ~/.ssh/gpu -J bastion``), and the remote Python: a command
    for the remote (POSIX) shell, e.g. ``python3`` or ``~/envs/torch/bin/python``."""

    destination: str
    ssh_command: str = "ssh"
    python: str = "python3"

    def __post_init__(self) -> None:
        if not self.destination or self.destination.startswith("-") or any(c.isspace() for c in self.destination):
            raise RemoteError(f"'{self.destination}' is not an ssh destination",
                              "write user@host or ssh://user@host:port")
        if not self.ssh_argv_prefix():
            raise RemoteError("the ssh command is empty", "leave it at 'ssh', or add options such as -i KEY")
        if not self.python.strip():
            raise RemoteError("the remote Python is empty", "give the remote command that runs Python with torch")

    def ssh_argv_prefix(self) -> list[str]:
        try:
            return shlex.split(self.ssh_command, posix=os.name != "nt")  # keep Windows paths' backslashes
        except ValueError as exc:
            raise RemoteError(f"cannot read the ssh command '{self.ssh_command}': {exc}") from None

    def ssh_argv(self, remote_command: str) -> list[str]:
        """``ssh`` with the user's options, then ours, the destination and `remote_command` (one string
        for the remote shell, as ssh always sends it)."""
        return [*self.ssh_argv_prefix(), *SSH_OPTIONS, self.destination, remote_command]

    def __str__(self) -> str:
        return self.destination


# ---------------------------------------------------------------------------------------------
# The engine's files, as sent to a remote


_ARCHIVE: dict[Path, tuple[bytes, str]] = {}


def _cached_archive(package_dir: Path) -> tuple[bytes, str]:
    if package_dir not in _ARCHIVE:
        _ARCHIVE[package_dir] = engine_archive(package_dir)
    return _ARCHIVE[package_dir]


# ---------------------------------------------------------------------------------------------
# One reconstruct request's files


@dataclass
class _Transfer:
    """The local side of one remote reconstruct: photos to send, result files to receive."""

    photos: list[Path]
    names: list[str]                   # their names in the job folder
    output: Path                       # the local bundle
    export_dir: Optional[Path]
    cancelled: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    partial: dict[str, tuple[Path, Any]] = field(default_factory=dict)  # name -> part file, its running SHA-256
    received: dict[str, Path] = field(default_factory=dict)  # name -> verified local file

    def destination(self, name: str) -> Path:
        if name == BUNDLE_NAME:
            return self.output.with_name(f".{self.output.name}.{os.getpid()}.download")
        if self.export_dir is not None and name.startswith(EXPORTS_NAME + "/"):
            target = (self.export_dir / name[len(EXPORTS_NAME) + 1:]).resolve()
            if target.is_relative_to(self.export_dir.resolve()):
                return target
        raise RemoteError(f"the remote worker sent a file this request did not ask for: '{name}'")

    def receive(self, event: DataEvent) -> None:
        """Write one part; check the whole file's hash at its last part."""
        if event.offset == 0:
            target = self.destination(event.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            part.write_bytes(b"")
            self.partial[event.name] = (part, hashlib.sha256())
        if event.name not in self.partial:
            raise RemoteError(f"part of '{event.name}' arrived out of order")
        part, digest = self.partial[event.name]
        data = base64.b64decode(event.data)
        digest.update(data)
        with open(part, "ab") as f:
            f.write(data)
        if event.sha256:
            del self.partial[event.name]
            size = part.stat().st_size
            if size != event.size or digest.hexdigest() != event.sha256:
                part.unlink(missing_ok=True)
                raise RemoteError(f"'{event.name}' arrived damaged ({size} of {event.size} bytes, SHA-256 "
                                  f"{'matches' if digest.hexdigest() == event.sha256 else 'differs'})",
                                  "run it again; if it keeps failing, check the connection")
            target = self.destination(event.name)
            os.replace(part, target)
            self.received[event.name] = target

    def finish(self, result: ResultEvent) -> ResultEvent:
        """The result with local paths, after the bundle was verified and given the local photo paths."""
        from ..core.bundle import read_bundle, write_bundle  # numpy: imported when a result arrives

        downloaded = self.received.get(result.bundle)
        if downloaded is None:
            raise RemoteError(f"the remote worker did not send the bundle '{result.bundle}'")
        try:
            bundle = read_bundle(downloaded)  # checks every array: nothing unverified reaches the scene
            bundle.photo_paths = [str(p) for p in self.photos]
            write_bundle(bundle, self.output)
        finally:
            downloaded.unlink(missing_ok=True)
        exports = {k: str(self.received.get(v) or self.destination(v)) for k, v in result.exports.items()}
        return dataclasses.replace(result, bundle=str(self.output), exports=exports)

    def discard(self) -> None:
        for part, _ in self.partial.values():
            part.unlink(missing_ok=True)
        self.partial.clear()
        downloaded = self.received.pop(BUNDLE_NAME, None)
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)


BUNDLE_NAME = "bundle.npz"
EXPORTS_NAME = "exports"


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name}, signal {number}"
    except ValueError:
        return f"signal {number}"


class RemoteWorkerClient(WorkerClient):
    """A worker on `target` over ssh; used exactly like a local :class:`WorkerClient`."""

    def __init__(self, target: RemoteTarget, *, env: Optional[dict[str, str]] = None,
                 log_path: Optional[Path] = None, stderr_lines: int = 200, package_dir: Path = PACKAGE_DIR) -> None:
        super().__init__(target.python, env=env, package_parent=package_dir.parent, log_path=log_path,
                         stderr_lines=stderr_lines)
        self.target = target
        self.package_dir = package_dir
        self.engine_sent = False  # this connection had to send the engine (the remote had another version)
        self._transfers: dict[str, _Transfer] = {}
        self._dropped: set[str] = set()  # requests failed on this side: the worker's later events for them are dropped
        self._transfers_lock = threading.Lock()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        _, digest = _cached_archive(self.package_dir)
        remote = f"{self.target.python} -c {shlex.quote(BOOTSTRAP)} {digest} {shlex.quote(self.package_dir.name)}"
        return self.target.ssh_argv(remote), dict(self._env)

    def _handshake(self, proc: subprocess.Popen[str], stdout: IO[str]) -> None:
        """Read the bootstrap's answer; send the engine when it needs it; then open the request stream."""
        blob, digest = _cached_archive(self.package_dir)
        for line in stdout:
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
            self._stderr.append(f"[remote stdout before the worker] {text}")  # a login script's chatter
        else:
            return  # ssh ended before the bootstrap answered: its message is in stderr
        self._open_requests(proc)

    def _exit_event(self, code: Optional[int]) -> ErrorEvent:
        event = super()._exit_event(code)
        if self._proc is None:
            return event
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
        request_id = f"r{next(self._ids)}"
        local = [Path(p).absolute() for p in photos]
        names = [f"photos/{k:04d}/{p.name}" for k, p in enumerate(local)]
        transfer = _Transfer(photos=local, names=names, output=Path(output).absolute(),
                             export_dir=Path(export_dir).absolute() if export_dir is not None else None)
        request = ReconstructRequest(
            id=request_id, photos=names, output=BUNDLE_NAME, options=options,
            checkpoint=str(checkpoint) if checkpoint is not None else None, device=device, dtype=dtype,
            exports=list(exports), export_dir=EXPORTS_NAME if export_dir is not None else None,
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
        with self._transfers_lock:
            transfer = self._transfers.pop(request_id, None)
            self._dropped.add(request_id)
        if transfer is not None:
            transfer.failed = True
            transfer.discard()
            self._events.put(event)

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
