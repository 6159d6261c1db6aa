"""The worker of this Blender session, how a run reaches it, and the requests the preferences
follow without blocking (the runtime check, a remote download)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..client.remote import RemoteTarget, RemoteWorkerClient
from ..client.requests import RequestHandle
from ..client.setup_steps import subprocess_env
from ..client.worker_client import WorkerClient, WorkerError
from ..core.protocol.events import DeviceInfo, ErrorEvent, Event, FetchedEvent, HelloEvent, ProgressEvent
from .errors import SetupError
from .spec import RunSpec

POLL_INTERVAL = 0.1  # seconds between looks at the worker's events from Blender's main thread


class WorkerSession:
    """The one worker of this Blender session, (re)started on demand, and the way runs reach it."""

    def __init__(self) -> None:
        self.client: Optional[WorkerClient] = None
        self._remote: Optional[RemoteTarget] = None

    def ensure(self, python: str, log_path: Optional[Path] = None,
               remote: Optional[RemoteTarget] = None) -> WorkerClient:
        """The running worker for `python` (on `remote` when given), (re)started when it is missing,
        dead or for another Python or machine."""
        client = self.client
        if client is not None and client.alive and str(client.python) == python and self._remote == remote:
            return client
        self.shutdown()
        client = WorkerClient(python, env=subprocess_env(), log_path=log_path) if remote is None else \
            RemoteWorkerClient(remote, env=subprocess_env(), log_path=log_path)
        try:
            client.start()
        except (OSError, RuntimeError) as exc:
            where = f"'{python}'" if remote is None else f"ssh ({remote.ssh_command}) to {remote}"
            raise SetupError(f"cannot start the worker with {where}: {exc}",
                             "check the runtime in the add-on's preferences") from None
        self.client, self._remote = client, remote
        return client

    def submit(self, spec: RunSpec, output: Path, log_path: Optional[Path] = None) -> RequestHandle:
        """Send `spec` to the (started if needed) worker, its bundle to be written to `output`;
        returns the request's handle. Raises SetupError when the worker cannot start."""
        worker = spec.worker
        client = self.ensure(worker.python, log_path, worker.remote)
        return client.follow(client.reconstruct(
            list(spec.photos), output, spec.options, checkpoint=worker.checkpoint, device=worker.device,
            exports=spec.exports.formats, export_dir=spec.exports.folder_for(output), export_cut=spec.exports.cut))

    def release(self) -> bool:
        """Ask the worker to free the model's memory; False when no worker runs."""
        if self.client is None or not self.client.alive:
            return False
        self.client.release()
        return True

    def shutdown(self) -> None:
        if self.client is not None:
            self.client.shutdown(timeout=5.0)
        self.client = None


SESSION = WorkerSession()


@dataclass(kw_only=True)
class FollowedRequest:
    """One request to the session's worker, followed without blocking: :meth:`step` (a timer's
    callback) takes what arrived; ``error`` or the subclass's result ends it."""

    session: WorkerSession = field(default_factory=lambda: SESSION)
    handle: Optional[RequestHandle] = None
    error: str = ""

    def _send(self, python: str, remote: Optional[RemoteTarget], log_path: Optional[Path],
              send: Callable[[WorkerClient], str]) -> None:
        """Send the request `send` makes to the session's worker for `python` / `remote` (started
        if needed) and follow it; a failure becomes ``error``."""
        try:
            client = self.session.ensure(python, log_path, remote)
            self.handle = client.follow(send(client))
        except (SetupError, WorkerError) as exc:
            self.error = str(exc)

    @property
    def answered(self) -> bool:
        """Whether the final answer arrived (the subclass's result is set)."""
        raise NotImplementedError

    def _receive(self, event: Event) -> None:
        """Take one event other than an error."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        return self.answered or bool(self.error)

    def step(self) -> Optional[float]:
        if self.finished or self.handle is None:
            return None
        for event in self.handle.events():
            if isinstance(event, ErrorEvent):
                self.error = f"{event.message}: {event.hint}" if event.hint else event.message
            else:
                self._receive(event)
        if self.finished:
            self.handle.close()
            return None
        return POLL_INTERVAL


@dataclass
class RuntimeCheck(FollowedRequest):
    """A ``hello`` to the worker: what it runs on."""

    python: str
    remote: Optional[RemoteTarget] = None
    result: Optional[HelloEvent] = None

    def start(self, log_path: Optional[Path] = None) -> None:
        self._send(self.python, self.remote, log_path, lambda client: client.hello())

    @property
    def answered(self) -> bool:
        return self.result is not None

    def _receive(self, event: Event) -> None:
        if isinstance(event, HelloEvent):
            self.result = event

    @property
    def summary(self) -> str:
        """``torch 2.13.0 · cuda:0 (NVIDIA …, 79.1 of 80.0 GB free), cpu · Python 3.11.7`` (and
        ``on user@gpu-box`` first for a remote worker)."""
        if self.result is None:
            return ""
        devices = ", ".join(_device_text(d) for d in self.result.devices)
        where = f"on {self.remote} · " if self.remote is not None else ""
        return f"{where}torch {self.result.torch} · {devices} · Python {self.result.python}"


def _device_text(device: DeviceInfo) -> str:
    free = f", {device.free / 1e9:.1f} of {device.memory / 1e9:.1f} GB free" if device.free else ""
    return f"{device.name} ({device.label}{free})" if device.label else device.name


@dataclass
class RemoteFetch(FollowedRequest):
    """A released checkpoint downloaded on the remote worker's machine (a ``fetch`` request);
    ``result.path`` is the file there."""

    remote: RemoteTarget
    url: str
    filename: str
    size: Optional[int] = None
    fraction: float = 0.0
    result: Optional[FetchedEvent] = None

    def start(self, log_path: Optional[Path] = None) -> None:
        def fetch(client: WorkerClient) -> str:
            assert isinstance(client, RemoteWorkerClient)  # the session's worker for a remote target is one
            return client.fetch(self.url, self.filename, self.size)

        self._send(self.remote.python, self.remote, log_path, fetch)

    @property
    def answered(self) -> bool:
        return self.result is not None

    def _receive(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.fraction = event.fraction
        elif isinstance(event, FetchedEvent):
            self.result = event
