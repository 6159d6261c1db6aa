"""The worker protocol: typed requests and events, one JSON object per line.

Blender (the client) writes requests to the worker's stdin; the worker writes events to its stdout.
Both processes import this module, so it uses the standard library and the core's option types alone. ``docs/worker.md`` is
the reference for every message.

Every request carries an ``id`` (a string the client picks); every event answering it echoes that
``id``. A request ends with exactly one *final* event (see :data:`FINAL_EVENTS`): ``hello`` →
``hello``, ``load`` → ``loaded``, ``reconstruct`` → ``result``, ``cancel``/``release``/``shutdown``
→ ``ack``, and any of them → ``error`` instead. ``progress`` events may come before the final one.
Events that answer no request (``ready`` at start-up, ``error`` for a line without a usable id)
have ``id`` null.

Decoding is strict for requests (the worker answers a bad one with an ``error`` event naming the
problem) and lenient for events (unknown fields are ignored, so an older client reads a newer
worker's events).
"""
from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import IO, Any, AnyStr, ClassVar, Optional, Union

from .confidence import ConfidenceCut
from .options import DEFAULT_PRECISION, ReconstructOptions

PROTOCOL_VERSION = 3
"""Bumped on any change an older peer would misread. Both sides must speak the same version."""
MAX_LINE_CHARS = 2 * 1024 ** 2
"""The longest line either side sends or reads (a ``put`` or ``data`` line: 1 MiB of base64 and a
few fields); a longer one is refused after this many characters, never held whole."""
MAX_DEPTH = 16
"""How deep a message's JSON may nest (the deepest message, a reconstruct request, needs 4)."""
MAX_INT_DIGITS = 20
"""The most digits an integer in a message may have (sizes and offsets fit in 19)."""


class ProtocolError(ValueError):
    """A line that is not a valid message. ``request_id`` is the line's id when it had a usable one."""

    def __init__(self, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.request_id = request_id


# ---------------------------------------------------------------------------------------------
# Requests (client → worker)


@dataclass(kw_only=True)
class Request:
    """Base of every request. ``id`` is filled in by the client when left empty."""

    type: ClassVar[str] = ""
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


# ---------------------------------------------------------------------------------------------
# Events (worker → client)


@dataclass(kw_only=True)
class Event:
    """Base of every event. ``id`` echoes the request it answers (null for none)."""

    type: ClassVar[str] = ""
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

REQUESTS: dict[str, type[Request]] = {c.type: c for c in (
    HelloRequest, LoadRequest, ReconstructRequest, PutRequest, FetchRequest, CancelRequest, ReleaseRequest,
    ShutdownRequest)}
EVENTS: dict[str, type[Event]] = {c.type: c for c in (
    ReadyEvent, HelloEvent, ProgressEvent, LoadedEvent, ResultEvent, DataEvent, FetchedEvent, AckEvent, ErrorEvent)}


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(message: Request | Event) -> str:
    """One JSON line (without the newline): ``{"type": ..., "id": ..., fields...}``.

    The line is ASCII: every other character is a ``\\uXXXX`` escape. Paths are carried as Python's
    file-system strings, where bytes that are not UTF-8 (a Linux file ``bad\\xff.png``) are lone
    surrogates (PEP 383, ``os.fsdecode``); escaped, they survive any stream encoding and decode back
    to the same string, which ``open()`` turns back into the same bytes on the other side."""
    return json.dumps({"type": message.type, **asdict(message)}, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False)


def decode_request(line: str | bytes) -> Request:
    """Parse one request line strictly: bad JSON, unknown type, missing or mistyped fields and
    unknown fields all raise :class:`ProtocolError` (with the line's id when it had one)."""
    data = _parse(line)
    raw_id = data.get("id")
    request_id = raw_id if isinstance(raw_id, str) and raw_id else None
    kind = data.get("type")
    cls = REQUESTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown request type {kind!r}; expected one of {', '.join(REQUESTS)}", request_id)
    if request_id is None:
        raise ProtocolError(f"{kind} request has no 'id' (a non-empty string)")
    return _build(cls, data, strict=True, where=f"{kind} request {request_id!r}", request_id=request_id)


def decode_event(line: str | bytes) -> Optional[Event]:
    """Parse one event line leniently: unknown fields are ignored; an unknown event type gives
    ``None`` (a newer worker's extra event). Malformed lines raise :class:`ProtocolError`."""
    data = _parse(line)
    kind = data.get("type")
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    event = _build(cls, data, strict=False, where=f"{kind} event", request_id=None)
    assert isinstance(event, Event)
    return event


def _parse(line: str | bytes) -> dict[str, Any]:
    """One JSON object, read without unbounded work: at most :data:`MAX_LINE_CHARS` characters,
    :data:`MAX_DEPTH` levels of nesting (checked before parsing, so the parser cannot recurse deeper)
    and :data:`MAX_INT_DIGITS` digits in an integer (Python's int() of a long one is quadratic)."""
    if len(line) > MAX_LINE_CHARS + 2:
        raise ProtocolError(f"a line of {len(line)} characters, more than the {MAX_LINE_CHARS} a message may have")
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"not a JSON line (not UTF-8: {exc}): {_preview(line)}") from None
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise ProtocolError(f"a message nested {depth} levels deep (at most {MAX_DEPTH}): {_preview(line)}")
    try:
        data = json.loads(text, parse_int=_bounded_int)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"not a JSON line ({exc}): {_preview(line)}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}: {_preview(line)}")
    return data


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string (its brackets are no nesting)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text: str) -> int:
    """How deep the brackets of JSON `text` nest, strings left out (a linear scan, no recursion)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits (at most {MAX_INT_DIGITS})")
    return int(digits)


class LineTooLong(ProtocolError):
    """A line longer than :data:`MAX_LINE_CHARS`: the peer does not speak this protocol (or is hostile)."""


def read_line(stream: IO[AnyStr], limit: int = MAX_LINE_CHARS) -> AnyStr:
    """The next line of `stream` (empty at its end), never holding more than `limit` characters
    (+ the newline) in memory: a longer line, or an endless one, raises :class:`LineTooLong` after
    `limit` characters were read."""
    line = stream.readline(limit + 1)
    if len(line) > limit and line[-1:] not in ("\n", b"\n"):
        raise LineTooLong(f"a line longer than {limit} characters (a message is at most that)")
    return line


def skip_line(stream: IO[AnyStr], chunk: int = MAX_LINE_CHARS) -> None:
    """Read and drop the rest of the current line, `chunk` characters at a time."""
    while True:
        part = stream.readline(chunk)
        if not part or part[-1:] in ("\n", b"\n"):
            return


def _preview(line: str | bytes, limit: int = 80) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _build(cls: type, data: dict[str, Any], *, strict: bool, where: str, request_id: Optional[str]) -> Any:
    """Make dataclass `cls` from `data`, checking each field against its annotation."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    if strict:
        unknown = sorted(set(data) - names - {"type"})
        if unknown:
            raise ProtocolError(f"{where}: unknown field(s) {', '.join(unknown)}", request_id)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProtocolError(f"{where}: missing field '{f.name}'", request_id)
            continue
        try:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], strict)
        except (TypeError, ProtocolError) as exc:  # a nested message's error gets this one's id
            raise ProtocolError(f"{where}: field '{f.name}' {exc}", request_id) from None
    try:
        return cls(**kwargs)
    except ProtocolError:
        raise
    except ValueError as exc:  # a value the type refuses (e.g. an option out of range)
        raise ProtocolError(f"{where}: {exc}", request_id) from None


def _convert(value: Any, hint: Any, strict: bool) -> Any:
    """Check `value` against type `hint` (the few shapes the messages use); build nested dataclasses."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], strict)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"must be a list, got {_kind(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(v, item, strict) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"must be an object, got {_kind(value)}")
        _, item = typing.get_args(hint)
        return {str(k): _convert(v, item, strict) for k, v in value.items()}
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        if not isinstance(value, dict):
            raise TypeError(f"must be an object, got {_kind(value)}")
        return _build(hint, value, strict=strict, where=hint.__name__, request_id=None)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"must be a number, got {_kind(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be an integer, got {_kind(value)}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise TypeError(f"must be a {'string' if hint is str else 'boolean'}, got {_kind(value)}")
        return value
    raise TypeError(f"has an unsupported annotation {hint!r}")  # a bug in this module, not in the input


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
