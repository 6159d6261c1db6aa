"""Which points are exported: the confidence threshold shared by every format."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...bundle import confidence_threshold

DEFAULT_CONF_QUANTILE = 0.03
"""Fraction of the lowest-confidence points dropped by default: the official demo's slider default
(3 %), applied globally over all views as the demo does."""


def confidence_mask(conf: np.ndarray, min_conf: Optional[float] = None,
                    quantile: float = DEFAULT_CONF_QUANTILE) -> np.ndarray:
    """bool mask shaped like `conf` ([N,h,w]): True where a point is kept.

    With `min_conf` (an absolute confidence; the network's confidence is >= 1) keep conf >= min_conf.
    Without it, follow the official demo (the rule the importer uses too,
    :func:`~mvdust3r_blender.bundle.confidence_threshold`): keep conf >= the value at index
    int(total * quantile) of every view's confidences sorted together.
    """
    if min_conf is None:
        min_conf = confidence_threshold(conf, quantile)
    return conf >= min_conf
