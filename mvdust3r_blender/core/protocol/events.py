"""The protocol's events (worker → client): what each answers or reports, and their lenient decoding.

Unknown fields are ignored and an unknown event type decodes to ``None``, so an older client reads
a newer worker's events; a line that is not a message at all raises :class:`~.wire.ProtocolError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from .wire import PROTOCOL_VERSION, Message, build, parse_line


@dataclass(kw_only=True)
class Event(Message):
    """Base of every event. ``id`` echoes the request it answers (null for none)."""

    id: Optional[str] = None


@dataclass(kw_only=True)
class ReadyEvent(Event):
    """Sent once, first, when the worker is reading requests."""

    type: ClassVar[str] = "ready"
    protocol: int = PROTOCOL_VERSION
    pid: int = 0


@dataclass(kw_only=True)
class DeviceInfo:
    """One compute device the worker's torch can use."""

    name: str                 # "cuda:0", "mps", "cpu": what a load request's ``device`` accepts
    label: str = ""           # e.g. "NVIDIA H100 80GB HBM3"
    memory: int = 0           # bytes of device memory (0 when unknown, e.g. CPU)
    free: int = 0             # bytes of it free now (GPUs; 0 when unknown)


@dataclass(kw_only=True)
class ModelInfo:
    """The model the worker holds."""

    checkpoint: str           # absolute path
    device: str               # the resolved torch device, e.g. "cuda:0"
    dtype: str                # e.g. "float32"
    variant: str = ""         # "MVD" (MV-DUSt3R) or "MVDp" (MV-DUSt3R+)


@dataclass(kw_only=True)
class HelloEvent(Event):
    """Answer to ``hello``: what the worker runs on."""

    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION
    extension: str = ""       # the extension's version (from blender_manifest.toml)
    python: str = ""
    torch: str = ""
    numpy: str = ""
    pid: int = 0
    devices: list[DeviceInfo] = field(default_factory=list)  # best first; always ends with cpu
    model: Optional[ModelInfo] = None
    loads: int = 0            # checkpoints loaded by this process so far


@dataclass(kw_only=True)
class ProgressEvent(Event):
    """A running ``load`` or ``reconstruct`` reached ``stage``; ``fraction`` of it is done (0..1)."""

    type: ClassVar[str] = "progress"
    stage: str = ""
    fraction: float = 0.0


@dataclass(kw_only=True)
class LoadedEvent(Event):
    """Answer to ``load``: the model is ready. ``reused`` when it was already loaded."""

    type: ClassVar[str] = "loaded"
    model: Optional[ModelInfo] = None
    reused: bool = False
    loads: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class ResultEvent(Event):
    """Answer to ``reconstruct``: the bundle is complete on disk at ``bundle``."""

    type: ClassVar[str] = "result"
    bundle: str = ""
    views: int = 0
    points: int = 0                                        # N·h·w per-pixel points in the bundle
    gaussians: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, plus "total"
    model_reused: bool = False                             # no checkpoint was loaded for this request
    loads: int = 0
    exports: dict[str, str] = field(default_factory=dict)  # format -> file or folder written


@dataclass(kw_only=True)
class DataEvent(Event):
    """Part of a result file sent back by a worker in job mode, before the request's final event:
    ``data`` (base64) at ``offset`` of ``name`` (relative to the job folder), ``size`` the whole
    file's; the last part carries the whole file's ``sha256`` for the client to verify."""

    type: ClassVar[str] = "data"
    name: str = ""
    size: int = 0
    offset: int = 0
    data: str = ""
    sha256: str = ""


@dataclass(kw_only=True)
class FetchedEvent(Event):
    """Answer to ``fetch``: the checkpoint is complete at ``path`` on the worker's machine."""

    type: ClassVar[str] = "fetched"
    path: str = ""
    size: int = 0
    sha256: str = ""


@dataclass(kw_only=True)
class AckEvent(Event):
    """Answer to ``cancel``, ``release`` and ``shutdown``; ``detail`` says what was done."""

    type: ClassVar[str] = "ack"
    request: str = ""
    detail: str = ""


@dataclass(kw_only=True)
class ErrorEvent(Event):
    """A request failed (or a line could not be read). ``code`` is stable; ``hint`` says what to do.

    Codes: the engine's (``checkpoint``, ``input``, ``device``, ``cancelled``), ``out_of_memory``,
    ``not_loaded``, ``bad_request``, ``protocol``, ``runtime``, ``internal``; and on the client side only,
    ``worker_exited``.
    """

    type: ClassVar[str] = "error"
    code: str = "internal"
    message: str = ""
    hint: str = ""


FINAL_EVENTS: tuple[type[Event], ...] = (HelloEvent, LoadedEvent, ResultEvent, FetchedEvent, AckEvent, ErrorEvent)
"""Event types that end a request; any other event with that request's id is intermediate."""

EVENTS: dict[str, type[Event]] = {c.type: c for c in (
    ReadyEvent, HelloEvent, ProgressEvent, LoadedEvent, ResultEvent, DataEvent, FetchedEvent, AckEvent, ErrorEvent)}


def decode_event(line: str | bytes) -> Optional[Event]:
    """Parse one event line leniently: unknown fields are ignored; an unknown event type gives
    ``None`` (a newer worker's extra event). Malformed lines raise :class:`~.wire.ProtocolError`."""
    data = parse_line(line)
    kind = data.get("type")
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    event = build(cls, data, strict=False, where=f"{kind} event", request_id=None)
    assert isinstance(event, Event)
    return event
