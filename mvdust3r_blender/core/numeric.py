"""The one check of every numeric option: a finite number within its bounds, or an :class:`OptionError`
naming the option. Its own module (the standard library only) so that both places that declare
options use it — :mod:`.options` (which re-exports it) and :mod:`.confidence`, which ``options``
imports."""
from __future__ import annotations

import math
import numbers
from typing import Optional

from .errors import OptionError


def check_number(name: str, value: object, *, above: Optional[float] = None, at_least: Optional[float] = None,
                 below: Optional[float] = None, at_most: Optional[float] = None, hint: str = "") -> float:
    """`value` as a finite float within the bounds given (`above`/`below` exclusive, `at_least`/`at_most`
    inclusive); :class:`OptionError` naming `name` otherwise. The one check of every numeric option, at
    every entry point (API keywords, operator properties, both command lines, the worker's request):
    NaN, infinity, a bool or a non-number never get past it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name}={value!r} is not a number", hint or "give a finite number")
    number = float(value)
    checks = [(bound, sign, ok) for bound, sign, ok in (
        (above, ">", above is None or number > above), (at_least, ">=", at_least is None or number >= at_least),
        (below, "<", below is None or number < below), (at_most, "<=", at_most is None or number <= at_most))
        if bound is not None]
    limits = " and ".join(f"{sign} {bound:g}" for bound, sign, _ in checks)
    if not math.isfinite(number):
        raise OptionError(f"{name}={value!r} is not a finite number", hint or f"give a number {limits}".rstrip())
    if not all(ok for _, _, ok in checks):
        raise OptionError(f"{name}={value!r} is out of range: it must be {limits}", hint)
    return number
