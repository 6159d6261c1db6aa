"""Following a request to the worker: its handle, and the mailboxes that sort the worker's events.

Every request is followed one way, whoever sent it — the panel's timer, a script that blocks, a
batch, the preferences' runtime check, a remote worker: :meth:`~.worker_client.WorkerClient.follow`
(or the session's ``submit``) gives a :class:`RequestHandle`, whose :meth:`~RequestHandle.events`
never blocks (a timer's step) and whose :meth:`~RequestHandle.wait` blocks until the final event
(scripts); :meth:`~RequestHandle.cancel` asks the worker to stop it and :meth:`~RequestHandle.close`
forgets it. The client's one event queue is sorted into a mailbox per followed request; an error
that answers no request (the worker died, a broken line) goes into every open mailbox, because each
followed request is affected. No bpy, no torch.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Callable, Optional, Protocol

from ..core.errors import UserError
from ..core.protocol.events import FINAL_EVENTS, ErrorEvent, Event, ProgressEvent

UNCLAIMED_KEPT = 1000  # events no handle follows (acks, ``ready``), kept for WorkerClient.poll, newest


class WorkerError(UserError):
    """A request failed in the worker, or the worker is gone. Carries the error event's fields."""

    def __init__(self, event: ErrorEvent) -> None:
        super().__init__(event.message, event.hint)
        self.event = event
        self.code = event.code


class Mailboxes:
    """The worker's events as they arrive (:attr:`queue`, filled by the client's threads), sorted on
    demand into one mailbox per followed request; the rest wait, the newest few, for ``poll``."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        self._boxes: dict[str, list[Event]] = {}
        self._closed: set[str] = set()
        self._unclaimed: collections.deque[Event] = collections.deque(maxlen=UNCLAIMED_KEPT)

    def collect(self, wait: float = 0.0) -> None:
        """Sort what has arrived; with `wait`, first wait up to that many seconds for an event."""
        first: Optional[Event] = None
        if wait > 0:
            try:
                first = self.queue.get(timeout=wait)
            except queue.Empty:
                return
        with self._lock:
            if first is not None:
                self._sort(first)
            while True:
                try:
                    self._sort(self.queue.get_nowait())
                except queue.Empty:
                    return

    def _sort(self, event: Event) -> None:
        if event.id is None:
            if isinstance(event, ErrorEvent):
                for box in self._boxes.values():
                    box.append(event)
            self._unclaimed.append(event)
        elif event.id in self._boxes:
            box = self._boxes[event.id]
            if (isinstance(event, ProgressEvent) and box and isinstance(box[-1], ProgressEvent)
                    and box[-1].stage == event.stage):
                box[-1] = event  # a flood of progress never takes more than one event per stage
            else:
                box.append(event)
        elif event.id not in self._closed:
            self._unclaimed.append(event)

    def open(self, request_id: str) -> None:
        """Start sorting `request_id`'s events into its mailbox, those that came before first."""
        self.collect()
        with self._lock:
            box = self._boxes.setdefault(request_id, [])
            box.extend(e for e in self._unclaimed if e.id == request_id)
            kept = [e for e in self._unclaimed if e.id != request_id]
            self._unclaimed.clear()
            self._unclaimed.extend(kept)
            self._closed.discard(request_id)

    def take(self, request_id: str) -> list[Event]:
        """The events for `request_id` since the last call (empty once it is closed); never blocks."""
        self.collect()
        with self._lock:
            events = self._boxes.get(request_id)
            if events is None:
                return []
            self._boxes[request_id] = []
            return events

    def close(self, request_id: str) -> None:
        """Stop following `request_id`: its mailbox and later events are dropped."""
        with self._lock:
            self._boxes.pop(request_id, None)
            self._closed.add(request_id)

    def unclaimed(self) -> list[Event]:
        """The events no handle follows, oldest first, since the last call."""
        self.collect()
        with self._lock:
            events = list(self._unclaimed)
            self._unclaimed.clear()
            return events


class Client(Protocol):
    """What a handle needs of its worker's client (:class:`~.worker_client.WorkerClient` is one)."""

    mailboxes: Mailboxes

    def cancel(self, target: Optional[str] = None) -> str: ...

    def gone(self) -> Optional[ErrorEvent]: ...

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> Optional[int]: ...


class RequestHandle:
    """One request sent to a worker, followed until its final event (see the module doc)."""

    def __init__(self, client: Client, request_id: str) -> None:
        self.client = client
        self.id = request_id

    def events(self) -> list[Event]:
        """Its events that arrived since the last call, oldest first; never blocks."""
        return self.client.mailboxes.take(self.id)

    def wait(self, timeout: Optional[float] = None, on_event: Optional[Callable[[Event], None]] = None) -> Event:
        """Block until its final event and return it. `on_event` sees each of its events (progress
        included) as it comes. Raises :class:`WorkerError` for its error event or when the worker
        dies, :class:`TimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None and time.monotonic() > deadline:  # checked on every turn: progress never moves it
                raise TimeoutError(f"the worker did not answer request {self.id} within {timeout} s")
            events = self.events()
            for event in events:
                if on_event is not None:
                    on_event(event)
                if isinstance(event, ErrorEvent):
                    raise WorkerError(event)
                if isinstance(event, FINAL_EVENTS):
                    return event
            if events:
                continue
            gone = self.client.gone()
            if gone is not None:
                raise WorkerError(gone)
            self.client.mailboxes.collect(wait=0.1)

    def cancel(self) -> None:
        """Ask the worker to stop this request; its end (``cancelled`` or its result) still comes as
        an event. Raises :class:`WorkerError` when the worker is gone."""
        self.client.cancel(self.id)

    def close(self) -> None:
        """Forget this request: events that still come for it are dropped."""
        self.client.mailboxes.close(self.id)
