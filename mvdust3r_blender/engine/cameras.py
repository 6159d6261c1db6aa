"""Cameras from pointmaps: confidence mask, shared focal, PnP-RANSAC poses, photo intrinsics.

This is the official demo's recovery (``demo.get_3D_model_from_scene`` with ``dust3r.losses``
functions, spec §7 and §10), vectorised:

1. :func:`pose_mask` — one threshold over all views: the value at index
   ``int(total·percent/100)`` of the sorted confidences; keep ``conf >= threshold``.
2. :func:`estimate_focal` — from view 0 only, over its own 3 %-threshold pixels: closed-form
   least squares then 10 Weiszfeld re-weightings of ``f = argmin Σ‖p − f·(x,y)/z‖`` where p are
   integer pixel indices minus the principal point (W/2, H/2). Where that gives no usable focal
   (≤ 0 or not finite — points behind the camera, e.g. an untrained network) a 60° field of view is
   used instead and reported (``focal_fallback``), so the cameras stay importable.
3. :func:`solve_poses` — ``cv2.solvePnPRansac`` per view on the masked points with
   ``K = [[f,0,W/2],[0,f,H/2],[0,0,1]]``, zero distortion and OpenCV's defaults (100 iterations,
   8 px, 0.99, SOLVEPNP_ITERATIVE); c2w = inverse of [R|t]. On failure the official fallback
   w2c = [I | (1,1,1)] is kept and the view is reported.
4. :func:`photo_intrinsics` — the same camera expressed in the ORIGINAL photo's continuous pixel
   frame (the photo spans [0,W]×[0,H], pixel centres at +0.5), see its docstring.

Image-point convention used throughout steps 2–3 (official): pixel (row i, column j) of the h×w grid
is the 2-D point (j, i) — integer indices, no +0.5.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from ..core.confidence import DEFAULT_DROP_PERCENT, drop_threshold
from .errors import Cancelled

FOCAL_ITERATIONS = 10
POSE_FAILURE_W2C_T = (1.0, 1.0, 1.0)


def pose_mask(conf: torch.Tensor, drop_percent: float = DEFAULT_DROP_PERCENT) -> torch.Tensor:
    """bool, same shape as `conf`: ``conf >= sorted(conf)[int(numel·percent/100)]`` (one threshold for
    all) — the demo's rule, as :func:`~mvdust3r_blender.core.confidence.drop_threshold` computes it
    for the importer and the exports."""
    return conf >= drop_threshold(conf.detach().float().cpu().numpy(), drop_percent)


def pixel_grid(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 [h,w,2]: (x, y) = (column, row) integer pixel indices, the official ``xy_grid``."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def estimate_focal(pts3d: torch.Tensor, valid: torch.Tensor) -> float:
    """Shared focal (grid pixels) from one view's points [h,w,3] in its own camera frame, over `valid` [h,w].

    The official ``estimate_focal_knowing_depth`` in Weiszfeld mode; its clip to
    [0, ∞)·max(h,w)/(2·tan 30°) is kept (it only rules out negative focals).
    """
    h, w = pts3d.shape[:2]
    pts = pts3d.float()[valid]
    pixels = pixel_grid(h, w, pts3d.device)[valid] - torch.tensor([w / 2, h / 2], device=pts3d.device)
    xy_over_z = (pts[:, :2] / pts[:, 2:3]).nan_to_num(posinf=0.0, neginf=0.0)
    dot_xy_px = (xy_over_z * pixels).sum(-1)
    dot_xy_xy = xy_over_z.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(FOCAL_ITERATIONS):
        weight = (pixels - focal * xy_over_z).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (weight * dot_xy_px).mean() / (weight * dot_xy_xy).mean()
    return float(focal.clip(min=0.0))


def fallback_focal(h: int, w: int) -> float:
    """The official reference focal ``max(h,w)/(2·tan 30°)`` (60° field of view), used when the estimate is unusable."""
    return float(max(h, w) / (2 * np.tan(np.radians(30.0))))


def grid_intrinsics(focal: float, h: int, w: int) -> np.ndarray:
    """float64 [3,3]: the official K on the h×w grid, integer-index convention, principal point (W/2, H/2)."""
    return np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])


@dataclass
class PoseResult:
    """cam2world float64 [N,4,4] (OpenCV) and which views PnP could not solve."""

    cam2world: np.ndarray
    failed: list[int] = field(default_factory=list)
    inliers: list[int] = field(default_factory=list)  # RANSAC inlier count per view (0 when failed)


def solve_poses(pts3d: torch.Tensor, mask: torch.Tensor, K: np.ndarray,
                cancel: Optional[threading.Event] = None,
                progress: Optional[Callable[[float], None]] = None) -> PoseResult:
    """PnP-RANSAC per view: world points `pts3d` [N,h,w,3] seen at their own pixels, masked by `mask` [N,h,w].

    `progress(fraction)` is called after each view; `cancel` is checked before each.
    """
    n, h, w = pts3d.shape[:3]
    pixels = pixel_grid(h, w).numpy().reshape(-1, 2)
    points = pts3d.detach().float().cpu().numpy().reshape(n, -1, 3)
    keep = mask.detach().cpu().numpy().reshape(n, -1)
    c2ws = np.zeros((n, 4, 4))
    failed, inliers = [], []
    for v in range(n):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while solving camera poses")
        w2c = np.eye(4)
        ok, count = False, 0
        if keep[v].sum() >= 6:
            ok, rvec, tvec, found = cv2.solvePnPRansac(points[v][keep[v]], pixels[keep[v]], K, np.zeros((5, 1)))
            if ok:
                w2c[:3, :3] = cv2.Rodrigues(rvec)[0]
                w2c[:3, 3] = tvec[:, 0]
                count = 0 if found is None else len(found)
        if not ok:
            w2c[:3, 3] = POSE_FAILURE_W2C_T
            failed.append(v)
        c2ws[v] = np.linalg.inv(w2c)
        inliers.append(int(count))
        if progress is not None:
            progress((v + 1) / n)
    return PoseResult(c2ws, failed, inliers)


def photo_intrinsics(focal: float, grid: tuple[int, int], crop_boxes: np.ndarray) -> np.ndarray:
    """float64 [N,3,3]: the grid camera expressed in each ORIGINAL photo's continuous pixels.

    The official model projects to integer indices: ``j = f·X/Z + w/2``. Index j's pixel centre sits
    at continuous grid coordinate ``u = j + 0.5``, so on the continuous grid the principal point is
    ``w/2 + 0.5`` (half a pixel right of the grid centre — that is what PnP solved with). The crop
    box maps grid coordinate u to photo coordinate ``x0 + u·(x1−x0)/w``. Hence, with
    ``sx = (x1−x0)/w``, ``sy = (y1−y0)/h``:
    ``fx = f·sx, fy = f·sy, cx = x0 + (w/2 + 0.5)·sx, cy = y0 + (h/2 + 0.5)·sy``.
    (fx ≠ fy by a fraction of a percent when the resize rounded the two sides differently.)
    """
    h, w = grid
    boxes = np.asarray(crop_boxes, dtype=np.float64).reshape(-1, 4)
    sx = (boxes[:, 2] - boxes[:, 0]) / w
    sy = (boxes[:, 3] - boxes[:, 1]) / h
    K = np.zeros((len(boxes), 3, 3))
    K[:, 0, 0] = focal * sx
    K[:, 1, 1] = focal * sy
    K[:, 0, 2] = boxes[:, 0] + (w / 2 + 0.5) * sx
    K[:, 1, 2] = boxes[:, 1] + (h / 2 + 0.5) * sy
    K[:, 2, 2] = 1.0
    return K


@dataclass
class CameraEstimate:
    """Everything camera recovery produces for N views on an h×w grid."""

    mask: torch.Tensor          # bool [N,h,w] global confidence mask (also used for PnP)
    valid_first: torch.Tensor   # bool [h,w] view 0's own threshold mask (used for the focal)
    focal: float                # grid pixels
    K: np.ndarray               # float64 [3,3] official grid intrinsics
    poses: PoseResult
    focal_fallback: bool = False  # the estimate was unusable (≤ 0 or not finite): 60° field of view used


def estimate_cameras(pts3d: torch.Tensor, conf: torch.Tensor, drop_percent: float = DEFAULT_DROP_PERCENT,
                     cancel: Optional[threading.Event] = None,
                     progress: Optional[Callable[[float], None]] = None) -> CameraEstimate:
    """Steps 1–3 of the module doc on network outputs (view 0 first, points in view 0's frame)."""
    h, w = pts3d.shape[1:3]
    mask = pose_mask(conf, drop_percent)
    valid_first = pose_mask(conf[0], drop_percent)
    focal = estimate_focal(pts3d[0], valid_first)
    fallback = not (np.isfinite(focal) and focal > 0)
    if fallback:  # e.g. points behind the camera: no camera can see them, keep a usable one
        focal = fallback_focal(h, w)
    K = grid_intrinsics(focal, h, w)
    return CameraEstimate(mask, valid_first, focal, K, solve_poses(pts3d, mask, K, cancel, progress), fallback)
