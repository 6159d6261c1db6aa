"""The confidence cut: which points count, in one vocabulary for its three uses.

The network gives every pixel a confidence (>= 1). Three places cut on it, each with one name:

- **pose**: ``pose_drop_percent`` — the share of least-confident pixels left out of the focal and
  pose estimation (:class:`~.options.ReconstructOptions`);
- **import** and **export**: a :class:`ConfidenceCut` — the points an import shows and an export
  writes: ``confidence_drop_percent`` (the share of least-confident points left out) or, when given,
  ``min_confidence`` (an absolute confidence; everything below it is left out).

One unit each: a share is always a percent in [0, 100), an absolute cut a confidence value. The
default share is the official demo's, :data:`DEFAULT_DROP_PERCENT`, applied over all views together
as the demo does. The import and export cut leaves out exactly that share even when confidences tie
at the threshold (:meth:`ConfidenceCut.keep`); the pose cut is the official code's
``conf >= threshold`` (:func:`drop_threshold`), kept for parity with its cameras. The standard library only at import (the worker's protocol uses these types before
it can tell a user that numpy is missing); the cuts themselves take numpy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .errors import OptionError
from .numeric import check_number

if TYPE_CHECKING:
    import numpy as np

DEFAULT_DROP_PERCENT = 3.0
"""The official demo's default: leave out the least-confident 3 % of all views' points."""


def check_drop_percent(name: str, value: float) -> float:
    """`value` as a float share in [0, 100); :class:`OptionError` naming `name` otherwise."""
    return check_number(name, value, at_least=0.0, below=100.0,
                        hint="give a percentage from 0 (keep all) to below 100")


def make_cut(confidence_drop_percent: Optional[float] = None, min_confidence: Optional[float] = None) -> "ConfidenceCut":
    """The cut a caller asked for, each of its two forms given at most once: a share (percent) or an
    absolute confidence — both at once is refused (the absolute one would silently win); neither is
    the default share."""
    if confidence_drop_percent is not None and min_confidence is not None:
        raise OptionError(f"both confidence_drop_percent={confidence_drop_percent!r} and "
                          f"min_confidence={min_confidence!r} are given",
                          "give either a share of points to leave out (percent) or an absolute confidence, not both")
    if min_confidence is not None:
        return ConfidenceCut(min_confidence=min_confidence)
    return ConfidenceCut(confidence_drop_percent=DEFAULT_DROP_PERCENT if confidence_drop_percent is None
                         else confidence_drop_percent)


def empty_cut_warning(cut: "ConfidenceCut", conf: "np.ndarray") -> Optional[str]:
    """A warning when `cut` leaves out every point of `conf` (an absolute cut above the highest
    confidence): what was asked and what the confidences are, else None."""
    import numpy as np

    values = np.asarray(conf)
    if values.size == 0 or cut.min_confidence is None or bool(np.any(values >= cut.min_confidence)):
        return None
    return (f"min_confidence={cut.min_confidence:g} leaves out every point: the highest confidence is "
            f"{float(values.max()):.4g}")


def drop_threshold(conf: np.ndarray, drop_percent: float) -> float:
    """The demo's threshold: the value at index int(total·percent/100) of all of `conf` sorted.

    Keeping ``conf >= threshold`` leaves out about `drop_percent` % of the points.
    """
    import numpy as np

    flat = np.asarray(conf).ravel()
    if flat.size == 0:
        return 0.0
    index = min(max(int(flat.size * (drop_percent * 0.01)), 0), flat.size - 1)
    return float(np.partition(flat, index)[index])


@dataclass(frozen=True)
class ConfidenceCut:
    """Which points an import shows and an export writes (see the module doc)."""

    confidence_drop_percent: float = DEFAULT_DROP_PERCENT
    min_confidence: Optional[float] = None

    def __post_init__(self) -> None:
        check_drop_percent("confidence_drop_percent", self.confidence_drop_percent)
        if self.min_confidence is not None:
            check_number("min_confidence", self.min_confidence,
                         hint="give an absolute confidence (the network's are >= 1), or leave it unset")

    def threshold(self, conf: np.ndarray) -> float:
        """The confidence a point needs to pass: `min_confidence`, else the drop share's threshold."""
        if self.min_confidence is not None:
            return float(self.min_confidence)
        return drop_threshold(conf, self.confidence_drop_percent)

    def keep(self, conf: np.ndarray) -> np.ndarray:
        """bool, shaped like `conf`: True where a point passes.

        With `min_confidence`: ``conf >= min_confidence``. With a share: exactly the demo's count,
        ``int(total·percent/100)`` points, is left out — the least confident, and where several
        tie at the threshold, the tied ones in :func:`tie_order` until the count is reached (the
        demo's ``conf >= threshold`` would keep every tied point: 34 % of a real scene can sit at
        exactly 1.0, and its "3 %" then drops nothing). Without ties the two rules agree."""
        import numpy as np

        values = np.asarray(conf)
        threshold = self.threshold(values)
        keep = values >= threshold
        if self.min_confidence is not None or values.size == 0:
            return keep
        wanted = min(int(values.size * (self.confidence_drop_percent * 0.01)), values.size - 1)
        short = wanted - int(values.size - keep.sum())   # tied points still to leave out
        if short > 0:
            tied = np.flatnonzero(values.ravel() == threshold)
            flat = keep.reshape(-1)
            keys = tie_order(tied)  # distinct (a bijection of the index), so the `short` smallest are one set
            flat[tied[np.argpartition(keys, short - 1)[:short]]] = False  # O(n): the Result slider is live
        return keep


def tie_order(indices: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random key per flat point index (Knuth's multiplicative hash): tied points are
    left out in increasing key, which spreads them evenly over the views and the grid instead of
    taking the first view's first. Deterministic: the same bundle always gives the same points."""
    import numpy as np

    return (np.asarray(indices, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)
