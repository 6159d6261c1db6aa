"""A reference 3D Gaussian splatting rasteriser in numpy (no bpy): the truth the Blender renders of
imported Gaussians are compared with.

Image formation as in Kerbl et al. 2023 (the official ``diff-gaussian-rasterization`` forward pass):
- EWA: each Gaussian's world covariance Σ = R·diag(s²)·Rᵀ becomes the pixel covariance
  Σ₂ = J·W·Σ·Wᵀ·Jᵀ + 0.3·I (W the camera rotation, J the Jacobian of the perspective projection at the
  Gaussian's centre, x/z and y/z clamped to 1.3× the field of view as the official code does; the
  0.3 px² is the screen-space low-pass);
- a Gaussian reaches the pixels within 3·√λ_max of its projected centre (rounded up), and is skipped
  where α = min(0.99, opacity·exp(−½·dᵀΣ₂⁻¹d)) < 1/255;
- per pixel, Gaussians are composited front to back by depth (camera z) and compositing stops before
  the contribution that would bring the transmittance below 1e-4.

Pixel (i, j) has its centre at (j + 0.5, i + 0.5): the image spans [0,W]×[0,H] (the bundle's photo
convention). Colours are composited as given; the result is premultiplied (colour over black) with
its alpha = 1 − transmittance. No per-pixel Python: contributions are grouped by footprint size,
sorted by (pixel, depth) once, and composited with a segmented cumulative sum of log-transmittance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_PASS = 0.3          # px², added to every projected covariance
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4            # compositing stops before the transmittance drops below this
NEAR = 0.2              # Gaussians closer than this (camera z) are culled, as in the official code
FRUSTUM_SLACK = 1.3     # the Jacobian's x/z, y/z are clamped to 1.3× the half field of view


@dataclass
class SplatImage:
    """A rendered image: `colour` [H,W,C] premultiplied (over black), `alpha` [H,W] in [0,1]."""

    colour: np.ndarray
    alpha: np.ndarray


def quaternion_matrices(wxyz: np.ndarray) -> np.ndarray:
    """[N,3,3] rotation matrices of quaternions [N,4] (w,x,y,z; normalised here)."""
    q = wxyz / np.linalg.norm(wxyz, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def projected_covariances(means: np.ndarray, wxyz: np.ndarray, scales: np.ndarray, world2cam: np.ndarray,
                          intrinsics: np.ndarray, width: int, height: int,
                          low_pass: float = LOW_PASS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uv [N,2] pixel centres, depth [N] camera z, cov [N,2,2] pixel covariances incl. the low-pass)."""
    rot_cam = world2cam[:3, :3].astype(np.float64)
    cam = means.astype(np.float64) @ rot_cam.T + world2cam[:3, 3]
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
    uv = np.stack([fx * x / z + cx, fy * y / z + cy], axis=-1)
    lim_x, lim_y = FRUSTUM_SLACK * 0.5 * width / fx, FRUSTUM_SLACK * 0.5 * height / fy
    tx, ty = np.clip(x / z, -lim_x, lim_x) * z, np.clip(y / z, -lim_y, lim_y) * z
    jac = np.zeros((len(z), 2, 3))
    jac[:, 0, 0], jac[:, 0, 2] = fx / z, -fx * tx / z ** 2
    jac[:, 1, 1], jac[:, 1, 2] = fy / z, -fy * ty / z ** 2
    rot = quaternion_matrices(wxyz.astype(np.float64))
    sigma = rot @ (scales.astype(np.float64)[:, :, None] ** 2 * rot.transpose(0, 2, 1))
    t = jac @ rot_cam
    cov = t @ sigma @ t.transpose(0, 2, 1) + low_pass * np.eye(2)
    return uv, z, cov


def rasterize(means: np.ndarray, wxyz: np.ndarray, scales: np.ndarray, opacity: np.ndarray, colour: np.ndarray,
              world2cam: np.ndarray, intrinsics: np.ndarray, width: int, height: int,
              low_pass: float = LOW_PASS) -> SplatImage:
    """Render Gaussians (means [N,3], wxyz [N,4], scales [N,3] std-devs, opacity [N], colour [N,C]; all
    world) seen by an OpenCV pinhole camera (world2cam [4,4], intrinsics [3,3] in pixels) at width×height."""
    uv, depth, cov = projected_covariances(means, wxyz, scales, world2cam, intrinsics, width, height, low_pass)
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = a * c - b * b
    mid = 0.5 * (a + c)
    lambda_max = mid + np.sqrt(np.maximum(0.1, mid * mid - det))   # the official code's bound
    radius = np.ceil(3.0 * np.sqrt(lambda_max)).astype(np.int64)
    keep = (depth > NEAR) & (det > 0) & (uv[:, 0] + radius > 0) & (uv[:, 0] - radius < width) \
        & (uv[:, 1] + radius > 0) & (uv[:, 1] - radius < height)
    index = np.flatnonzero(keep)
    inv = np.stack([c, -b, a], axis=-1) / det[:, None]               # Σ₂⁻¹ = [[i0, i1], [i1, i2]]

    pixels, gaussians, alphas = [], [], []
    for r in np.unique(radius[index]):   # one vectorised pass per footprint size
        group = index[radius[index] == r]
        offsets = np.arange(-r, r + 1)
        oy, ox = (o.ravel() for o in np.meshgrid(offsets, offsets, indexing="ij"))
        px = np.floor(uv[group, 0])[:, None].astype(np.int64) + ox[None]
        py = np.floor(uv[group, 1])[:, None].astype(np.int64) + oy[None]
        dx, dy = px + 0.5 - uv[group, 0:1], py + 0.5 - uv[group, 1:2]
        i0, i1, i2 = (inv[group, k:k + 1] for k in range(3))
        power = -0.5 * (i0 * dx * dx + 2 * i1 * dx * dy + i2 * dy * dy)
        alpha = np.minimum(ALPHA_MAX, opacity[group, None] * np.exp(power))
        inside = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (alpha >= ALPHA_MIN) & (power <= 0)
        pixels.append((py * width + px)[inside])
        gaussians.append(np.broadcast_to(group[:, None], px.shape)[inside])
        alphas.append(alpha[inside])
    colour_out = np.zeros((height * width, colour.shape[1]))
    transmittance = np.ones(height * width)
    if pixels:
        pixel, gauss, alpha = np.concatenate(pixels), np.concatenate(gaussians), np.concatenate(alphas)
        order = np.lexsort((depth[gauss], pixel))      # by pixel, then near to far
        pixel, gauss, alpha = pixel[order], gauss[order], alpha[order]
        log_keep = np.log1p(-alpha)
        total = np.cumsum(log_keep)
        first = np.ones(len(pixel), dtype=bool)
        first[1:] = pixel[1:] != pixel[:-1]
        start = np.maximum.accumulate(np.where(first, np.arange(len(pixel)), 0))
        before = np.where(start > 0, total[np.maximum(start - 1, 0)], 0.0)
        t_after = np.exp(total - before)               # transmittance after this Gaussian, in its pixel
        t_before = t_after / (1.0 - alpha)
        used = t_after >= T_MIN                         # monotone in a pixel: a prefix of its list
        pixel, weight, gauss = pixel[used], (t_before * alpha)[used], gauss[used]
        for channel in range(colour.shape[1]):
            colour_out[:, channel] = np.bincount(pixel, weight * colour[gauss, channel], minlength=height * width)
        transmittance = np.exp(np.bincount(pixel, log_keep[used], minlength=height * width))
    return SplatImage(colour=colour_out.reshape(height, width, -1), alpha=(1.0 - transmittance).reshape(height, width))


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """sRGB encoding of linear values in [0,1] (what a PNG of the render holds)."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def psnr(image: SplatImage, reference: SplatImage) -> float:
    """PSNR (dB) of the sRGB-encoded premultiplied colours (the images over black) in [0,1]."""
    mse = float(np.mean((linear_to_srgb(image.colour) - linear_to_srgb(reference.colour)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def alpha_iou(image: SplatImage, reference: SplatImage) -> float:
    """Soft intersection over union of the two alpha mattes: Σ min(a, b) / Σ max(a, b)."""
    return float(np.minimum(image.alpha, reference.alpha).sum() / max(np.maximum(image.alpha, reference.alpha).sum(), 1e-12))
