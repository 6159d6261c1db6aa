"""A small differentiable 3D-Gaussian rasteriser in plain torch, for the rendering loss.

The official training renders the predicted Gaussians with gsplat (``dust3r/gs.py``); this is the
same image formation (EWA projection of each Gaussian's covariance, a 2-D low-pass ``eps2d`` added
to it, α = opacity·exp(−½·dᵀΣ⁻¹d) capped at 0.99, front-to-back compositing over a background)
with one simplification that fits the official *clamped* scales (≤ 4e-3 of the scene's mean
distance, so footprints of a pixel or two): every Gaussian touches only the pixels within
``reach`` of its centre. No per-pixel loops: contributions [N·(2·reach+1)²] are sorted by
(pixel, depth) once and composited with a segmented cumulative sum of log-transmittance.
Pixel (i, j) has its centre at (j + 0.5, i + 0.5), as in gsplat (the training data's intrinsics
put it at (j, i): :func:`training.cameras.centre_convention` converts).
"""
from __future__ import annotations

import torch
from torch import Tensor

ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
NEAR = 0.01


def quaternion_matrix(q: Tensor) -> Tensor:
    """Rotation matrices [N,3,3] of unit quaternions [N,4] in (w, x, y, z) order (gsplat's)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def render_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacity: Tensor, colour: Tensor,
                     world2cam: Tensor, intrinsics: Tensor, height: int, width: int,
                     background: Tensor, eps2d: float = 0.1, reach: int = 1) -> Tensor:
    """Image [H,W,C] of Gaussians (means [N,3], quats [N,4] wxyz, scales [N,3], opacity [N],
    colour [N,C]) seen by a pinhole camera (world2cam [3,4] or [4,4] OpenCV, intrinsics [3,3] pixels)."""
    cam = means @ world2cam[:3, :3].T + world2cam[:3, 3]
    keep = cam[:, 2] > NEAR
    cam, quats, scales, opacity, colour = cam[keep], quats[keep], scales[keep], opacity[keep], colour[keep]
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    x, y, z = cam.unbind(-1)
    u, v = fx * x / z + cx, fy * y / z + cy
    # EWA: Σ2 = J·W·Σ·Wᵀ·Jᵀ + eps2d·I, Σ = R·diag(s²)·Rᵀ in world, W the camera rotation
    rot = world2cam[:3, :3] @ quaternion_matrix(quats)
    cov = rot @ torch.diag_embed(scales ** 2) @ rot.transpose(-1, -2)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * x / z ** 2, zero, fy / z, -fy * y / z ** 2], -1).reshape(-1, 2, 3)
    cov2 = jac @ cov @ jac.transpose(-1, -2) + eps2d * torch.eye(2, dtype=cov.dtype, device=cov.device)
    a, b, c = cov2[:, 0, 0], cov2[:, 0, 1], cov2[:, 1, 1]
    det = a * c - b * b
    inv_a, inv_b, inv_c = c / det, -b / det, a / det                       # Σ2⁻¹ = [[ia, ib], [ib, ic]]

    # contributions: Gaussian n × pixel offset k in the (2·reach+1)² window around its centre
    dev = means.device
    offsets = torch.arange(-reach, reach + 1, device=dev)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    px = torch.floor(u).long()[:, None] + ox.reshape(1, -1)                  # [N,K]
    py = torch.floor(v).long()[:, None] + oy.reshape(1, -1)
    dx = px + 0.5 - u[:, None]
    dy = py + 0.5 - v[:, None]
    power = -0.5 * (inv_a[:, None] * dx ** 2 + 2 * inv_b[:, None] * dx * dy + inv_c[:, None] * dy ** 2)
    alpha = (opacity[:, None] * torch.exp(power)).clamp(max=ALPHA_MAX)
    inside = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (alpha >= ALPHA_MIN)
    gauss = torch.arange(len(z), device=dev)[:, None].expand_as(px)[inside]
    pixel = (py * width + px)[inside]
    alpha = alpha[inside]

    # sort by pixel, then depth (near first): one key from the pixel index and the depth rank
    rank = torch.empty(len(z), dtype=torch.long, device=dev)
    rank[torch.argsort(z.detach())] = torch.arange(len(z), device=dev)
    order = torch.argsort(pixel * max(1, len(z)) + rank[gauss])
    pixel, gauss, alpha = pixel[order], gauss[order], alpha[order]
    log_keep = torch.log1p(-alpha)                                          # log(1 − α)
    # float64: the running sum over all contributions reaches −1e5 and more, where float32 would
    # lose the few-percent differences between neighbouring pixels' segments
    total = torch.cumsum(log_keep.double(), 0)
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    index = torch.arange(len(pixel), device=dev)
    start = torch.cummax(torch.where(first, index, torch.zeros_like(pixel)), 0).values
    before = torch.where(start > 0, total[(start - 1).clamp(min=0)], torch.zeros_like(total))
    transmittance = torch.exp(total - log_keep.double() - before).to(alpha.dtype)  # exclusive, in the pixel
    weight = (transmittance * alpha)[:, None] * colour[gauss]
    image = torch.zeros(height * width, colour.shape[1], dtype=colour.dtype, device=dev)
    image = image.index_add(0, pixel, weight)
    seen = torch.zeros(height * width, dtype=log_keep.dtype, device=dev).index_add(0, pixel, log_keep)
    image = image + torch.exp(seen)[:, None] * background
    return image.reshape(height, width, -1)
