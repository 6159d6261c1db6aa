"""What the network gives the rest of the engine for one scene: path 0, views in input order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Prediction:
    """Per-pixel outputs of one forward pass over N views of one scene (H×W network grid).

    Every point is in the camera frame of input view 0 (the first reference view; OpenCV axes:
    x right, y down, z forward), at the network's arbitrary scale. For MV-DUSt3R+ this is
    reference path 0, which the official demo and evaluation use. Gaussian fields are ``None``
    when they were not asked for.
    """

    pts3d: torch.Tensor                        # float32 [N,H,W,3]
    conf: torch.Tensor                         # float32 [N,H,W], >= 1
    rgb: Optional[torch.Tensor] = None         # float32 [N,H,W,3], the GS head's raw colour
    opacity: Optional[torch.Tensor] = None     # float32 [N,H,W], in (0,1)
    scale: Optional[torch.Tensor] = None       # float32 [N,H,W,3], 0.1·raw — may be negative
    rotation: Optional[torch.Tensor] = None    # float32 [N,H,W,4], unit quaternion (w,x,y,z)

    @property
    def num_views(self) -> int:
        return int(self.pts3d.shape[0])
