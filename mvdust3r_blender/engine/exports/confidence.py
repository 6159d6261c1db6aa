"""Which points are exported: the confidence threshold shared by every format."""
from __future__ import annotations

from typing import Optional

import numpy as np

DEFAULT_CONF_QUANTILE = 0.03
"""Fraction of the lowest-confidence points dropped by default: the official demo's slider default
(3 %), applied globally over all views as the demo does."""


def confidence_mask(conf: np.ndarray, min_conf: Optional[float] = None,
                    quantile: float = DEFAULT_CONF_QUANTILE) -> np.ndarray:
    """bool mask shaped like `conf` ([N,h,w]): True where a point is kept.

    With `min_conf` (an absolute confidence; the network's confidence is >= 1) keep conf >= min_conf.
    Without it, follow the official demo: sort every view's confidences together, take the value at
    index int(total * quantile) as the threshold and keep conf >= threshold.
    """
    if min_conf is None:
        flat = conf.reshape(-1)
        if flat.size == 0:
            return np.zeros(conf.shape, dtype=bool)
        k = min(int(flat.size * quantile), flat.size - 1)
        min_conf = float(np.partition(flat, k)[k])
    return conf >= min_conf
