"""Values that reach another program's command line: checked where they are set.

A setting that becomes a word of an argv (the remote's ssh destination, the remote Python, the ssh
command line, a path handed to uv or pip) must never be read by that program as an option: a
leading ``-`` turns ``-oProxyCommand=sh -c …`` into code run on this machine. A control character
(NUL, newline, escape) has no place in a host name, a command or a path, and a newline would start
a second command in the remote shell. So every such value goes through :func:`argument` when it is
set, and is passed after ``--`` where the program allows. Standard library only.
"""
from __future__ import annotations

from .errors import UserError


class ArgumentError(UserError):
    """A setting that would be read as an option, or holds a control character."""

    code = "bad_argument"


def control_characters(value: str) -> list[str]:
    """The control characters in `value` (C0, DEL, C1), as ``repr`` text; empty when none."""
    return sorted({repr(c) for c in value if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0})


def argument(value: str, what: str, *, hint: str = "") -> str:
    """`value` unchanged when it can be one word of a command line; :class:`ArgumentError` naming
    `what` (``"the remote Python"``) when it is empty, starts with ``-`` or holds a control character."""
    bad = control_characters(value)
    if bad:
        raise ArgumentError(f"{what} {value!r} contains the control character{'s' if len(bad) > 1 else ''} "
                            f"{', '.join(bad)}", hint or f"type {what} again without them")
    if not value.strip():
        raise ArgumentError(f"{what} is empty", hint)
    if value.lstrip().startswith("-"):
        raise ArgumentError(f"{what} {value!r} starts with '-', so the program it is given to would read it as "
                            "an option; it is refused", hint or f"give {what} itself, not options")
    return value
