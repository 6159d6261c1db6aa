"""The worker of this Blender session, the mailbox of each request sent to it, and the requests
the preferences follow without blocking (the runtime check, a remote download)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..client.remote import RemoteTarget, RemoteWorkerClient
from ..client.runtime import subprocess_env
from ..client.worker_client import WorkerClient, WorkerError
from ..core.protocol import DeviceInfo, ErrorEvent, Event, FetchedEvent, HelloEvent, ProgressEvent
from .errors import SetupError
from .plan import RunPlan

POLL_INTERVAL = 0.1  # seconds between looks at the worker's events from Blender's main thread


class WorkerSession:
    """The one worker of this Blender session and a mailbox per request id.

    Events are read once (``client.poll``) and sorted into mailboxes, so the runtime check and a
    run can wait on the same worker. An event that answers no request (the worker died, a broken
    line) goes into every open mailbox, because each waiting request is affected.
    """

    def __init__(self) -> None:
        self.client: Optional[WorkerClient] = None
        self._mail: dict[str, list[Event]] = {}
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

    def submit(self, plan: RunPlan, log_path: Optional[Path] = None) -> tuple[WorkerClient, str]:
        """Send `plan` to the (started if needed) worker; its client and the request's id, whose
        events :meth:`take` hands out. Raises SetupError when the worker cannot start."""
        client = self.ensure(plan.settings.python, log_path, plan.settings.remote)
        request_id = self.expect(client.reconstruct(
            list(plan.photos), plan.output, plan.options, checkpoint=plan.settings.checkpoint,
            device=plan.settings.device, exports=plan.exports, export_dir=plan.export_dir, export_cut=plan.cut))
        return client, request_id

    def expect(self, request_id: str) -> str:
        """Open the mailbox of a request just sent; returns its id."""
        self._mail.setdefault(request_id, [])
        return request_id

    def take(self, request_id: str) -> list[Event]:
        """The events for `request_id` that arrived since the last call (never blocks)."""
        if self.client is not None:
            for event in self.client.poll():
                if event.id is not None and event.id in self._mail:
                    self._mail[event.id].append(event)
                elif event.id is None and isinstance(event, ErrorEvent):
                    for box in self._mail.values():
                        box.append(event)
        events = self._mail.get(request_id)
        if events is None:  # closed: the request already ended
            return []
        self._mail[request_id] = []
        return events

    def close(self, request_id: str) -> None:
        self._mail.pop(request_id, None)

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
        self._mail.clear()


SESSION = WorkerSession()


@dataclass(kw_only=True)
class FollowedRequest:
    """One request to the session's worker, followed without blocking: :meth:`step` (a timer's
    callback) takes what arrived; ``error`` or the subclass's result ends it."""

    session: WorkerSession = field(default_factory=lambda: SESSION)
    request_id: str = ""
    error: str = ""

    def _send(self, send: Callable[[], str]) -> None:
        """Send the request `send` makes (it may start the worker); a failure becomes ``error``."""
        try:
            self.request_id = self.session.expect(send())
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
        if self.finished:
            return None
        for event in self.session.take(self.request_id):
            if isinstance(event, ErrorEvent):
                self.error = f"{event.message}: {event.hint}" if event.hint else event.message
            else:
                self._receive(event)
        if self.finished:
            self.session.close(self.request_id)
            return None
        return POLL_INTERVAL


@dataclass
class RuntimeCheck(FollowedRequest):
    """A ``hello`` to the worker: what it runs on."""

    python: str
    remote: Optional[RemoteTarget] = None
    result: Optional[HelloEvent] = None

    def start(self, log_path: Optional[Path] = None) -> None:
        self._send(lambda: self.session.ensure(self.python, log_path, self.remote).hello())

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
        def send() -> str:
            client = self.session.ensure(self.remote.python, log_path, self.remote)
            assert isinstance(client, RemoteWorkerClient)
            return client.fetch(self.url, self.filename, self.size)

        self._send(send)

    @property
    def answered(self) -> bool:
        return self.result is not None

    def _receive(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.fraction = event.fraction
        elif isinstance(event, FetchedEvent):
            self.result = event
