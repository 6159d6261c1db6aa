"""The protocol's requests (client → worker): what each asks for, and their strict decoding.

A request line the worker cannot use — bad JSON, an unknown type, a missing, mistyped or unknown
field — raises :class:`~.wire.ProtocolError` with the line's id when it had one, and the worker
answers it with an ``error`` event naming the problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from ..confidence import ConfidenceCut
from ..options import DEFAULT_PRECISION, ReconstructOptions
from .wire import PROTOCOL_VERSION, Message, ProtocolError, build, parse_line


@dataclass(kw_only=True)
class Request(Message):
    """Base of every request. ``id`` is filled in by the client when left empty."""

    id: str = ""


@dataclass(kw_only=True)
class HelloRequest(Request):
    """Ask for versions, devices and the loaded model; ``protocol`` is the client's version."""

    type: ClassVar[str] = "hello"
    protocol: int = PROTOCOL_VERSION


@dataclass(kw_only=True)
class LoadRequest(Request):
    """Load a checkpoint (no-op when the same file, device and dtype are already loaded).

    ``device``: ``auto``, ``cuda``, ``cuda:N``, ``mps`` or ``cpu``. ``dtype``: ``float32``,
    ``float16``, ``bfloat16``, or null for what ``precision`` (auto, exact, fast: the runs to come)
    keeps the weights in on that device (bfloat16 for ``fast`` on CUDA, else float32).
    """

    type: ClassVar[str] = "load"
    checkpoint: str
    device: str = "auto"
    dtype: Optional[str] = None
    precision: str = DEFAULT_PRECISION


@dataclass(kw_only=True)
class ReconstructRequest(Request):
    """Reconstruct ``photos`` (absolute paths, in order) and write the bundle to ``output``.

    ``options`` are the typed :class:`~.options.ReconstructOptions` (checked on decoding). When ``checkpoint`` is
    given the model is loaded first as by :class:`LoadRequest` (reused when unchanged); otherwise
    a model must already be loaded. ``exports`` (format names: :data:`.exports.FORMATS`) are
    written into ``export_dir`` by the worker itself, which has the libraries some formats need
    (the COLMAP export re-saves EXIF-rotated photos upright), leaving out the points that do not
    pass ``export_cut``. Format names are checked before the reconstruction starts.
    """

    type: ClassVar[str] = "reconstruct"
    photos: list[str]
    output: str
    options: ReconstructOptions = field(default_factory=ReconstructOptions)
    checkpoint: Optional[str] = None
    device: str = "auto"
    dtype: Optional[str] = None
    exports: list[str] = field(default_factory=list)
    export_dir: Optional[str] = None
    export_cut: ConfidenceCut = field(default_factory=ConfidenceCut)
    job: Optional[str] = None  # job mode (a remote worker): photos, output, export_dir are names in this job's folder


@dataclass(kw_only=True)
class PutRequest(Request):
    """Part of a file sent to a worker in job mode (a remote worker reads only what it was sent):
    ``data`` (base64) goes at ``offset`` of ``name`` (a relative path) in job ``job``'s folder.
    ``size`` is the whole file's, checked against the worker's limit before the first byte lands;
    parts come in order. Answered by ``ack`` (or ``error``)."""

    type: ClassVar[str] = "put"
    job: str
    name: str
    size: int
    offset: int = 0
    data: str = ""


@dataclass(kw_only=True)
class FetchRequest(Request):
    """Job mode: download a released checkpoint (``filename``, from ``url``, exactly ``size`` bytes
    when known) into the worker machine's model folder, resuming a partial file. Answered by
    ``fetched`` after ``progress`` events of stage ``fetch``."""

    type: ClassVar[str] = "fetch"
    url: str
    filename: str
    size: Optional[int] = None


@dataclass(kw_only=True)
class CancelRequest(Request):
    """Cancel request ``target`` (queued or running), or every pending request when null."""

    type: ClassVar[str] = "cancel"
    target: Optional[str] = None


@dataclass(kw_only=True)
class ReleaseRequest(Request):
    """Drop the loaded model and free its (GPU) memory; the worker keeps running."""

    type: ClassVar[str] = "release"


@dataclass(kw_only=True)
class ShutdownRequest(Request):
    """Cancel what is running, answer ``ack`` and exit with code 0."""

    type: ClassVar[str] = "shutdown"


REQUESTS: dict[str, type[Request]] = {c.type: c for c in (
    HelloRequest, LoadRequest, ReconstructRequest, PutRequest, FetchRequest, CancelRequest, ReleaseRequest,
    ShutdownRequest)}


def decode_request(line: str | bytes) -> Request:
    """Parse one request line strictly: bad JSON, unknown type, missing or mistyped fields and
    unknown fields all raise :class:`~.wire.ProtocolError` (with the line's id when it had one)."""
    data = parse_line(line)
    raw_id = data.get("id")
    request_id = raw_id if isinstance(raw_id, str) and raw_id else None
    kind = data.get("type")
    cls = REQUESTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown request type {kind!r}; expected one of {', '.join(REQUESTS)}", request_id)
    if request_id is None:
        raise ProtocolError(f"{kind} request has no 'id' (a non-empty string)")
    return build(cls, data, strict=True, where=f"{kind} request {request_id!r}", request_id=request_id)
