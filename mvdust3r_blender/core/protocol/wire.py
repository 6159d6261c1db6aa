"""The protocol's lines: a message as one JSON line and back, read with bounds.

:func:`encode` writes any message; :func:`parse_line` reads one line without unbounded work (its
length, nesting and integers are limited) and :func:`build` makes the typed message from it,
checking each field against its annotation, strictly (requests) or leniently (events).
:func:`read_line` and :func:`skip_line` take lines off a stream without ever holding more than a
message's worth. Standard library only.
"""
from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from typing import IO, Any, AnyStr, ClassVar, Optional, Union

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


@dataclass(kw_only=True)
class Message:
    """Base of every request and event: a dataclass whose class names its ``type`` on the wire."""

    type: ClassVar[str] = ""


def encode(message: Message) -> str:
    """One JSON line (without the newline): ``{"type": ..., "id": ..., fields...}``.

    The line is ASCII: every other character is a ``\\uXXXX`` escape. Paths are carried as Python's
    file-system strings, where bytes that are not UTF-8 (a Linux file ``bad\\xff.png``) are lone
    surrogates (PEP 383, ``os.fsdecode``); escaped, they survive any stream encoding and decode back
    to the same string, which ``open()`` turns back into the same bytes on the other side."""
    return json.dumps({"type": message.type, **asdict(message)}, ensure_ascii=True, separators=(",", ":"),
                      allow_nan=False)


def parse_line(line: str | bytes) -> dict[str, Any]:
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


def build(cls: type, data: dict[str, Any], *, strict: bool, where: str, request_id: Optional[str]) -> Any:
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
        return build(hint, value, strict=strict, where=hint.__name__, request_id=None)
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
