"""Per-pixel 3D Gaussians in the world frame, from the network's Gaussian head.

The network frame is the world frame (input view 0's camera), so no rotation or translation change
is needed: means are the points, rotations the head's quaternions (w,x,y,z) re-normalised.

Scales. The head emits ``0.1·raw`` with no positivity activation, so values can be zero or
negative. Official training never used them raw: ``GSRenderLoss`` divided the cloud by its
normalisation factor ``nf`` (mean distance of the valid points to the origin) and rendered
``clamp(scale / nf, 1e-4, 4e-3)``. We store that same Gaussian back in world units:
``gaussian_scale = clamp(scale, 1e-4·nf, 4e-3·nf)`` — a positive standard deviation per axis that
renders exactly as in training, once the cloud is scaled back. ``nf`` is taken over the pixels of
the confidence mask (our stand-in for training's ground-truth validity) and kept in the bundle's
meta as ``gaussian_norm_factor``.

Opacity is the head's sigmoid, kept inside (0,1) (float32 saturates to exactly 0 or 1 otherwise,
which logit-based exports cannot store). Colour for rendering is the input photo (training rendered
``use_img_rgb=True``); the head's own ``rgb`` is passed through untouched for anyone who wants it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

SCALE_MIN = 1e-4   # × norm factor, official training clamp
SCALE_MAX = 4e-3
OPACITY_EPS = 1e-6


@dataclass
class GaussianFields:
    """Gaussian parameters per pixel for N views on an h×w grid, world frame, float32."""

    rotation: torch.Tensor            # [N,h,w,4] unit quaternion (w,x,y,z)
    scale: torch.Tensor               # [N,h,w,3] std-devs in world units, > 0
    opacity: torch.Tensor             # [N,h,w] in (0,1)
    rgb: Optional[torch.Tensor]       # [N,h,w,3] the head's raw colour, or None
    norm_factor: float                # mean ‖point‖ over the mask, world units


def normalisation_factor(pts3d: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean distance to the origin of the points [..., 3] where `valid` — training's ``avg_dis``."""
    norms = pts3d.float().norm(dim=-1)[valid]
    if norms.numel() == 0:
        norms = pts3d.float().norm(dim=-1).flatten()
    return float(norms.mean())


def gaussian_fields(pts3d: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor, rotation: torch.Tensor,
                    opacity: torch.Tensor, rgb: Optional[torch.Tensor] = None) -> GaussianFields:
    """Turn the head's raw outputs into renderable world-frame Gaussians (see the module doc)."""
    nf = normalisation_factor(pts3d, valid)
    std = scale.float().clamp(SCALE_MIN * nf, SCALE_MAX * nf)
    quat = rotation.float()
    length = quat.norm(dim=-1, keepdim=True)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=quat.device).expand_as(quat)
    quat = torch.where(length > 1e-12, quat / length.clamp(min=1e-12), identity)
    alpha = opacity.float()
    if alpha.ndim == pts3d.ndim:  # [N,h,w,1] as the official head returns it
        alpha = alpha.squeeze(-1)
    alpha = alpha.clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
    return GaussianFields(quat, std, alpha, None if rgb is None else rgb.float(), nf)
