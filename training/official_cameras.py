"""The official camera recovery as the research code runs it.

The add-on runs :func:`~mvdust3r_blender.engine.cameras.recover_cameras` (true cameras for any set
of photos); this one is not shipped. It stays as the regression reference for the
official golden camera cases, the baseline of ``bench/cameras.py`` and the recovery of the held-out
evaluation (``training/evaluate.py``):

1. :func:`~mvdust3r_blender.engine.cameras.pose_mask` — one threshold over all views: the value at index
   ``int(total·percent/100)`` of the sorted confidences; keep ``conf >= threshold``.
2. :func:`estimate_focal` — from view 0 only, over its own 3 %-threshold pixels: closed-form
   least squares then 10 Weiszfeld re-weightings of ``f = argmin Σ‖p − f·(x,y)/z‖`` where p are
   integer pixel indices minus the principal point (W/2, H/2). Where that gives no usable focal
   (≤ 0 or not finite) a 60° field of view is used instead and reported (``focal_fallback``).
3. :func:`solve_poses` — ``cv2.solvePnPRansac`` per view on the masked points with
   ``K = [[f,0,W/2],[0,f,H/2],[0,0,1]]``, zero distortion and OpenCV's defaults (100 iterations,
   8 px, 0.99, SOLVEPNP_ITERATIVE); c2w = inverse of [R|t]. On failure the official fallback
   w2c = [I | (1,1,1)] is kept and the view is reported.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from mvdust3r_blender.core.confidence import DEFAULT_DROP_PERCENT
from mvdust3r_blender.engine.cameras import POSE_FAILURE_W2C_T, pose_mask, weiszfeld_focal
from mvdust3r_blender.engine.errors import Cancelled


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
    return max(weiszfeld_focal(xy_over_z, pixels), 0.0)


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
