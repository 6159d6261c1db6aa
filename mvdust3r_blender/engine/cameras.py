"""Cameras from pointmaps: which pixels to trust, each camera's focal in photo pixels, every view's pose.

:func:`recover_cameras` is what the pipeline runs: the views' cameras as they took the
photos, checked against Blender-rendered ground truth (tests/engine/test_cameras_truth.py).

- The focal belongs to the CAMERA, in photo pixels: photos from one camera (same EXIF make, model,
  focal length and full-resolution size, or the same size when EXIF says nothing —
  :func:`~.images.camera_key`) share one focal; photos of other cameras get their own. A view's grid
  intrinsics follow per axis from it and the view's crop box (:func:`grid_intrinsics_of`), so
  photos of any size and aspect ratio mix.
- Pixel convention (the network's training data, docs/bundle.md): the point of grid pixel (i, j) lies
  on the ray through the INTEGER grid coordinate (j, i), i.e. photo point ``(x0 + j·sx, y0 + i·sy)``;
  the principal point is the photo's centre (W/2, H/2) in the photo's continuous pixels.
- The reference view (network position 0) is the world frame: its pose is the identity by
  construction, and its focal is measured directly from its own points (Weiszfeld, as the official
  ``estimate_focal_knowing_depth``). Other views' poses (and the focal of cameras that the reference
  view does not belong to) come from a batched sampled DLT, refined together by robust Gauss–Newton
  (:mod:`.pnp`), on a random sample of each view's confident points, on the points' device; a view
  that still fits badly gets ``cv2.solvePnPRansac`` with its camera's focal as a second opinion.
  A focal known beforehand (the ``focal`` option, EXIF: :mod:`.focal`) is held fixed.
- Degenerate input never crashes and never passes silently: each case has a fallback and a warning
  (:class:`CameraWarning`) that goes into the bundle's meta (``camera_warnings``).

The official recovery (one grid focal from view 0, ``cv2.solvePnPRansac`` per view) is not
shipped: ``training/official_cameras.py`` keeps it as the regression reference for the official
golden cases, the benchmark's baseline and the held-out evaluation.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import cv2
import numpy as np
import torch

from ..core.confidence import DEFAULT_DROP_PERCENT, drop_threshold
from . import pnp
from .errors import Cancelled

FOCAL_ITERATIONS = 10
POSE_FAILURE_W2C_T = (1.0, 1.0, 1.0)


def pose_mask(conf: torch.Tensor, drop_percent: float = DEFAULT_DROP_PERCENT) -> torch.Tensor:
    """bool, same shape as `conf`: ``conf >= sorted(conf)[int(numel·percent/100)]`` (one threshold for
    all) — the demo's rule, as :func:`~mvdust3r_blender.core.confidence.drop_threshold` computes it
    for the importer and the exports."""
    return conf >= drop_threshold(conf.detach().float().cpu().numpy(), drop_percent)


def weiszfeld_focal(rays: torch.Tensor, offsets: torch.Tensor) -> float:
    """``f = argmin Σ‖p − f·r‖`` over rays r = (x/z, y/z) [P,2] seen at offsets p [P,2] from the principal point:
    closed-form least squares, then Weiszfeld re-weightings (the official ``estimate_focal_knowing_depth``)."""
    dot_xy_px = (rays * offsets).sum(-1)
    dot_xy_xy = rays.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(FOCAL_ITERATIONS):
        weight = (offsets - focal * rays).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (weight * dot_xy_px).mean() / (weight * dot_xy_xy).mean()
    return float(focal)


# ---------------------------------------------------------------- the recovery the pipeline runs

FALLBACK_FOV_DEG = 60.0       # the official fallback field of view, across the photo's long side
INLIER_GRID_PX = 8.0          # reprojection error counted as an inlier, grid pixels of the view (OpenCV's RANSAC default)
HYPOTHESIS_GRID_PX = 4.0      # the truncation of the sampled DLT's hypothesis cost, grid pixels of the view
ROBUST_GRID_PX = 2.0          # scale of the robust refinement, in grid pixels of the view
SAMPLE_POINTS = 2048          # confident points per view the pose is solved on (a random sample)
HYPOTHESIS_POINTS = 256       # of those, the ones each DLT hypothesis is scored on
PLANE_THICKNESS = 0.01        # a view whose points are thinner than this share of their extent is "one plane"
MIN_POINTS = 6                # fewer confident points than this: no pose


@dataclass(frozen=True)
class ViewGeometry:
    """Where each view's grid lies in its photo, and which camera took it (arrays in network order)."""

    crop_box: np.ndarray     # float64 [N,4] (x0, y0, x1, y1) photo pixels
    photo_size: np.ndarray   # float64 [N,2] (W, H) after EXIF orientation
    camera: np.ndarray       # int64 [N] camera index 0..C−1 (photos of one camera share its focal)
    known_focal: Optional[np.ndarray] = None  # float64 [C] photo pixels, NaN where it is to be estimated
    known_source: Optional[list[str]] = None  # [C] where each known focal came from (.focal); "given" if unset


@dataclass
class CameraWarning:
    """Something about the cameras a user should know: which views (network indices) and what."""

    views: list[int]
    message: str


@dataclass
class RecoveredCameras:
    """The cameras of N views (network order) that took the photos."""

    mask: torch.Tensor           # bool [N,h,w] confident, finite points (the rule of pose_mask)
    cam2world: np.ndarray        # float64 [N,4,4] OpenCV; the reference view's is the identity
    focal: np.ndarray            # float64 [N] photo pixels (one value per camera, repeated per view)
    intrinsics: np.ndarray       # float64 [N,3,3] in photo pixels: [[F,0,W/2],[0,F,H/2],[0,0,1]]
    focal_source: list[str]      # per view: "estimated", "fallback", or the known focal's source (.focal)
    inliers: list[int]           # per view: confident points within INLIER_GRID_PX of their pixel (from the sample)
    failed: list[int] = field(default_factory=list)        # views whose pose fell back (see warnings)
    warnings: list[CameraWarning] = field(default_factory=list)


def fallback_photo_focal(photo_size: np.ndarray) -> float:
    """A 60° field of view across the photo's long side, in photo pixels (the official fallback, on the photo)."""
    return float(np.max(photo_size) / (2 * np.tan(np.radians(FALLBACK_FOV_DEG / 2))))


def grid_offsets(geometry: ViewGeometry, h: int, w: int, device: torch.device) -> torch.Tensor:
    """float32 [N,h·w,2]: where each grid pixel's ray meets the photo, relative to the photo's centre (photo pixels).

    Grid pixel (i, j) ↔ photo point ``(x0 + j·sx, y0 + i·sy)`` (integer grid coordinates, the
    network's training convention), ``sx = (x1−x0)/w``, ``sy = (y1−y0)/h``.
    """
    box = torch.as_tensor(geometry.crop_box, dtype=torch.float64, device=device)
    size = torch.as_tensor(geometry.photo_size, dtype=torch.float64, device=device)
    sx, sy = (box[:, 2] - box[:, 0]) / w, (box[:, 3] - box[:, 1]) / h
    j = torch.arange(w, dtype=torch.float64, device=device)
    i = torch.arange(h, dtype=torch.float64, device=device)
    x = (box[:, 0, None] + j[None] * sx[:, None] - size[:, 0, None] / 2)[:, None, :].expand(-1, h, -1)
    y = (box[:, 1, None] + i[None] * sy[:, None] - size[:, 1, None] / 2)[:, :, None].expand(-1, -1, w)
    return torch.stack([x, y], -1).reshape(len(box), h * w, 2).float()


def grid_intrinsics_of(focal: np.ndarray, geometry: ViewGeometry, h: int, w: int) -> np.ndarray:
    """float64 [N,3,3]: each view's camera on its h×w grid, integer-index convention (the network's):
    ``fx = F/sx``, ``fy = F/sy`` (they differ where the resize rounded the sides differently),
    principal point = the photo centre in grid indices ``((W/2 − x0)/sx, (H/2 − y0)/sy)``."""
    box = np.asarray(geometry.crop_box, dtype=np.float64)
    sx, sy = (box[:, 2] - box[:, 0]) / w, (box[:, 3] - box[:, 1]) / h
    K = np.zeros((len(box), 3, 3))
    K[:, 0, 0], K[:, 1, 1] = focal / sx, focal / sy
    K[:, 0, 2] = (geometry.photo_size[:, 0] / 2 - box[:, 0]) / sx
    K[:, 1, 2] = (geometry.photo_size[:, 1] / 2 - box[:, 1]) / sy
    K[:, 2, 2] = 1.0
    return K


def photo_intrinsics(focal: np.ndarray, photo_size: np.ndarray) -> np.ndarray:
    """float64 [N,3,3]: ``[[F,0,W/2],[0,F,H/2],[0,0,1]]`` in the photo's continuous pixels ([0,W]×[0,H])."""
    size = np.asarray(photo_size, dtype=np.float64).reshape(-1, 2)
    K = np.zeros((len(size), 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = np.asarray(focal, dtype=np.float64)
    K[:, :2, 2] = size / 2
    K[:, 2, 2] = 1.0
    return K


def _sample(mask: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view, `count` random indices [N,count] of its `mask` [N,P] pixels, usable ones first, and which are usable."""
    keys = torch.rand(mask.shape, generator=generator).to(mask.device)
    keys = torch.where(mask, keys, torch.full_like(keys, -1.0))
    top = keys.topk(min(count, mask.shape[1]), dim=1)
    return top.indices, top.values >= 0


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _is_plane(world: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """bool [N]: the view's sampled points lie on one plane (thinner than PLANE_THICKNESS of their extent)."""
    w = valid.to(world.dtype)
    total = w.sum(-1).clamp(min=1.0)
    rel = world - ((world * w[..., None]).sum(1) / total[:, None])[:, None]
    cov = (rel * w[..., None]).transpose(1, 2) @ rel / total[:, None, None]
    spread = torch.linalg.eigvalsh(cov).clamp(min=0).sqrt()
    return spread[:, 0] < PLANE_THICKNESS * spread[:, 2]


def _fit(R: torch.Tensor, t: torch.Tensor, focal: torch.Tensor, world: torch.Tensor, image: torch.Tensor,
         valid: torch.Tensor, threshold: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per view: how many `valid` points [V,P] project within `threshold` [V] of their pixel, and how many are in front.

    Single precision and no division (``‖F·xy − p·z‖ < threshold·z`` for z > 0)."""
    cam = torch.baddbmm(t.float()[:, None, :], world.float(), R.float().transpose(1, 2))
    z = cam[..., 2]
    front = valid & (z > 0)
    f, p = focal.float()[:, None, None], image
    miss = (f * cam[..., :2] - p * z[..., None]).square().sum(-1)
    close = front & (miss < (threshold.float()[:, None] * z).square())
    return close.sum(1).cpu().numpy(), front.sum(1).cpu().numpy()


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Torch on one CPU thread while the recovery runs there: it is some 300 small tensor operations, and each
    multi-threaded one ends in a barrier that costs a scheduler slice when the cores are busy (2 threads
    were 2.7× slower than 1 at load 10 on the 2-core dev machine; docs/benchmarks.md). The GPU is untouched."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recover_cameras(pts3d: torch.Tensor, conf: torch.Tensor, geometry: ViewGeometry,
                    drop_percent: float = DEFAULT_DROP_PERCENT,
                    cancel: Optional[threading.Event] = None,
                    progress: Optional[Callable[[float], None]] = None, seed: int = 0) -> RecoveredCameras:
    """The cameras of network outputs `pts3d` [N,h,w,3] (view 0's frame) and `conf` [N,h,w]; see the module doc.

    Runs on `pts3d`'s device (on one thread on the CPU). Deterministic for a given `seed` (the random point samples).
    """
    with _one_cpu_thread(pts3d.device):
        return _recover(pts3d, conf, geometry, drop_percent, cancel, progress, seed)


@dataclass
class _Sample:
    """A random sample of each view's confident points: what every step of the recovery reads."""

    mask: torch.Tensor        # [N,h,w] bool: the finite pixels the confidence cut keeps
    offsets: torch.Tensor     # [N,h·w,2] each grid pixel's offset from the principal point, photo pixels
    world: torch.Tensor       # [N,P,3] float64 sampled points, view 0's frame (zeros where not usable)
    image: torch.Tensor       # [N,P,2] float64 where each was seen (offsets)
    usable: torch.Tensor      # [N,P] bool
    counts: torch.Tensor      # [N] usable samples per view
    grid_px: torch.Tensor     # [N] photo pixels per grid pixel
    generator: torch.Generator

    @property
    def flat_mask(self) -> torch.Tensor:
        return self.mask.reshape(self.mask.shape[0], -1)


def _recover(pts3d: torch.Tensor, conf: torch.Tensor, geometry: ViewGeometry, drop_percent: float,
             cancel: Optional[threading.Event], progress: Optional[Callable[[float], None]],
             seed: int) -> RecoveredCameras:
    """The recovery's steps in order; each names what it decides (see the module doc)."""
    def checkpoint(fraction: float) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while solving camera poses")
        if progress is not None:
            progress(fraction)

    n = pts3d.shape[0]
    checkpoint(0.0)
    sample = _sample_points(pts3d, conf, geometry, drop_percent, seed)
    checkpoint(0.2)
    warnings: list[CameraWarning] = []
    ref_focal = _reference_focal(sample, warnings)
    # the other views: a sampled DLT each (pose and, where it is unknown, focal)
    start, _ = pnp.sampled_dlt(sample.world[:, :HYPOTHESIS_POINTS], sample.image[:, :HYPOTHESIS_POINTS],
                               sample.usable[:, :HYPOTHESIS_POINTS], HYPOTHESIS_GRID_PX * sample.grid_px,
                               generator=sample.generator)
    plane = _is_plane(sample.world, sample.usable)
    enough = sample.counts >= MIN_POINTS
    checkpoint(0.4)
    focal_of, source = _camera_focals(geometry, start, plane, enough, ref_focal, warnings)
    _start_with_camera_focals(sample, geometry, start, plane & enough, focal_of)
    checkpoint(0.5)
    device = pts3d.device
    camera = torch.as_tensor(geometry.camera, dtype=torch.long, device=device)
    fixed_focal = torch.as_tensor([s != "estimated" for s in source], device=device)
    fixed_pose = torch.zeros(n, dtype=torch.bool, device=device)
    fixed_pose[0] = True
    weights = (sample.usable & enough[:, None] & start.ok[:, None]).to(sample.world.dtype)
    solved = pnp.refine(sample.world, sample.image, weights, start, camera, fixed_pose, fixed_focal,
                        ROBUST_GRID_PX * sample.grid_px)
    checkpoint(0.8)
    verdict = _verdict(pts3d, sample, solved)
    failed = _leave_unknown_poses(verdict, warnings)
    cam2world = np.linalg.inv(verdict.w2c)
    cam2world[0] = np.eye(4)
    checkpoint(1.0)
    return RecoveredCameras(mask=sample.mask.cpu(), cam2world=cam2world, focal=verdict.focal,
                            intrinsics=photo_intrinsics(verdict.focal, geometry.photo_size),
                            focal_source=[source[c] for c in geometry.camera],
                            inliers=[int(k) for k in verdict.inliers], failed=failed, warnings=warnings)


def _sample_points(pts3d: torch.Tensor, conf: torch.Tensor, geometry: ViewGeometry, drop_percent: float,
                   seed: int) -> _Sample:
    """The confident, finite pixels and a random sample of them per view (seeded: deterministic)."""
    n, h, w = pts3d.shape[:3]
    device = pts3d.device
    finite = torch.isfinite(pts3d.sum(-1)) & torch.isfinite(conf)   # a sum is finite iff its terms are
    mask = pose_mask(torch.where(finite, conf, torch.full_like(conf, float("nan"))), drop_percent) & finite
    flat_mask = mask.reshape(n, -1).to(device)
    offsets = grid_offsets(geometry, h, w, device)
    box = geometry.crop_box
    grid_px = torch.as_tensor(((box[:, 2] - box[:, 0]) / w + (box[:, 3] - box[:, 1]) / h) / 2, device=device)
    generator = torch.Generator().manual_seed(seed)
    index, usable = _sample(flat_mask, SAMPLE_POINTS, generator)
    world = _take(pts3d.reshape(n, -1, 3), index).to(torch.float64)
    image = _take(offsets, index).to(torch.float64)
    world = torch.where(usable[..., None], world, torch.zeros_like(world))
    return _Sample(mask=mask, offsets=offsets, world=world, image=image, usable=usable, counts=usable.sum(1),
                   grid_px=grid_px, generator=generator)


def _reference_focal(sample: _Sample, warnings: list[CameraWarning]) -> float:
    """The reference view's focal, measured in its own frame (NaN when its points do not allow it)."""
    world, image, usable = sample.world, sample.image, sample.usable
    front = usable[0] & (world[0, :, 2] > 0)
    if int(front.sum()) >= MIN_POINTS and int(front.sum()) * 2 > int(usable[0].sum()):
        rays, seen_at = world[0, front, :2] / world[0, front, 2:], image[0, front]
        guess = ((rays * seen_at).sum(-1) / rays.square().sum(-1).clamp(min=1e-300)).median()  # robust start
        fits = (seen_at - guess * rays).norm(dim=-1) < INLIER_GRID_PX * sample.grid_px[0]
        if int(fits.sum()) >= MIN_POINTS:
            return weiszfeld_focal(rays[fits], seen_at[fits])
    elif int(usable[0].sum()) >= MIN_POINTS:
        warnings.append(CameraWarning([0], "most of the reference view's points are behind its camera "
                                         "(the network's output is unusable for cameras)"))
    return float("nan")


def _camera_focals(geometry: ViewGeometry, start: pnp.Resection, plane: torch.Tensor, enough: torch.Tensor,
                   ref_focal: float, warnings: list[CameraWarning]) -> tuple[np.ndarray, list[str]]:
    """Each camera's focal and where it came from: given; the reference view's; the median over its
    views' DLTs; else the fallback field of view (with a warning)."""
    cameras = int(geometry.camera.max()) + 1
    known = (np.full(cameras, np.nan) if geometry.known_focal is None
             else np.asarray(geometry.known_focal, dtype=np.float64))
    focal_of = np.full(cameras, np.nan)
    source = ["estimated"] * cameras
    dlt_focal = start.focal.cpu().numpy()
    long_side = torch.as_tensor(geometry.photo_size.max(1), device=start.focal.device)
    plausible = (start.focal > 0.05 * long_side) & (start.focal < 20 * long_side)   # 3° to 170° fields of view
    measured = (start.ok & enough & ~plane & plausible).cpu().numpy()
    measured[0] = False
    for c in range(cameras):
        views = np.flatnonzero(geometry.camera == c)
        if np.isfinite(known[c]) and known[c] > 0:
            focal_of[c] = known[c]
            source[c] = geometry.known_source[c] if geometry.known_source is not None else "given"
        elif geometry.camera[0] == c and np.isfinite(ref_focal) and ref_focal > 0:
            focal_of[c] = ref_focal
        elif measured[views].any():
            focal_of[c] = float(np.median(dlt_focal[views[measured[views]]]))
        else:
            focal_of[c], source[c] = fallback_photo_focal(geometry.photo_size[views[0]]), "fallback"
            warnings.append(CameraWarning(
                views.tolist(), f"the focal length of their camera cannot be measured "
                      f"(its points are degenerate: {'one flat surface' if plane[views].all() else 'unusable'}); "
                      f"a {FALLBACK_FOV_DEG:.0f}° field of view is assumed"))
    return focal_of, source


def _start_with_camera_focals(sample: _Sample, geometry: ViewGeometry, start: pnp.Resection, planar: torch.Tensor,
                              focal_of: np.ndarray) -> None:
    """Make `start` (the DLTs, changed in place) the refinement's start with each view's camera
    focal: planar views from the plane's homography, view 0 the identity, and each other view moved
    along its axis so that its camera's focal keeps the image's scale its own DLT focal gave."""
    world, usable, device = sample.world, sample.usable, sample.world.device
    view_focal = torch.as_tensor(focal_of, device=device)[torch.as_tensor(geometry.camera, dtype=torch.long,
                                                                          device=device)]
    planar = planar.clone()
    planar[0] = False
    if bool(planar.any()):
        flat = pnp.plane_pose(world[planar], sample.image[planar], usable[planar].to(world.dtype), view_focal[planar])
        start.R[planar], start.t[planar], start.ok[planar] = flat.R, flat.t, flat.ok
    start.R[0] = torch.eye(3, dtype=world.dtype, device=device)
    start.t[0] = 0.0
    start.ok[0] = True
    depth = ((world @ start.R[:, 2, :, None]).squeeze(-1) + start.t[:, 2:3]) * usable
    mean_depth = depth.sum(1) / sample.counts.clamp(min=1)
    ratio = torch.where(start.ok & (start.focal > 0), view_focal / start.focal, torch.ones_like(view_focal))
    ratio[0] = 1.0
    start.t[:, 2] += torch.where(planar, torch.zeros_like(mean_depth), mean_depth * (ratio - 1))
    start.focal = view_focal.clone()


@dataclass
class _Verdict:
    """How well each view's camera fits its points, counted over all its confident points."""

    w2c: np.ndarray          # [N,4,4] world → camera, OpenCV
    focal: np.ndarray        # [N] photo pixels
    confident: np.ndarray    # [N] confident points
    inliers: np.ndarray      # [N] of those within INLIER_GRID_PX of where they were seen
    in_front: np.ndarray     # [N] of those in front of the camera
    ok: np.ndarray           # [N] bool: a pose was solved


def _verdict(pts3d: torch.Tensor, sample: _Sample, solved: pnp.Resection) -> _Verdict:
    """The share of each view's sample that fits its camera, scaled to all its confident points; a
    view the batched solve fits badly gets a second opinion, OpenCV's PnP-RANSAC with its camera's focal."""
    n, device = pts3d.shape[0], pts3d.device
    world, image, usable = sample.world, sample.image, sample.usable
    threshold = INLIER_GRID_PX * sample.grid_px
    confident = sample.mask.reshape(n, -1).sum(1).numpy()
    scale_up = confident / np.maximum(sample.counts.cpu().numpy(), 1)
    fits, ahead = _fit(solved.R, solved.t, solved.focal, world, image, usable, threshold)
    inliers, in_front = np.rint(fits * scale_up).astype(int), np.rint(ahead * scale_up).astype(int)
    ok = solved.ok.cpu().numpy() & (sample.counts >= MIN_POINTS).cpu().numpy()
    w2c = np.zeros((n, 4, 4))
    w2c[:, :3, :3], w2c[:, :3, 3], w2c[:, 3, 3] = solved.R.cpu().numpy(), solved.t.cpu().numpy(), 1.0
    focal = solved.focal.cpu().numpy()
    doubtful = [v for v in range(1, n) if confident[v] >= MIN_POINTS
                and (not ok[v] or inliers[v] * 2 < confident[v] or in_front[v] * 2 < confident[v])]
    flat_mask, offsets = sample.flat_mask, sample.offsets
    for v in doubtful:
        keep = flat_mask[v].cpu().numpy()
        points = pts3d[v].reshape(-1, 3).cpu().double().numpy()[keep]
        seen_at = offsets[v].cpu().double().numpy()[keep]
        K = np.array([[focal[v], 0.0, 0.0], [0.0, focal[v], 0.0], [0.0, 0.0, 1.0]])
        found, rvec, tvec, _ = cv2.solvePnPRansac(points, seen_at, K, np.zeros((5, 1)),
                                                  reprojectionError=float(threshold[v]))
        if not found:
            continue
        R = torch.as_tensor(cv2.Rodrigues(rvec)[0], device=device)[None]
        t = torch.as_tensor(tvec[:, 0], device=device)[None]
        count, seen = _fit(R, t, solved.focal[v:v + 1], world[v:v + 1], image[v:v + 1], usable[v:v + 1],
                           threshold[v:v + 1])
        if count[0] * scale_up[v] > inliers[v] or not ok[v]:
            w2c[v, :3, :3], w2c[v, :3, 3] = R[0].cpu().numpy(), t[0].cpu().numpy()
            inliers[v], in_front[v], ok[v] = round(count[0] * scale_up[v]), round(seen[0] * scale_up[v]), True
    return _Verdict(w2c=w2c, focal=focal, confident=confident, inliers=inliers, in_front=in_front, ok=ok)


def _leave_unknown_poses(verdict: _Verdict, warnings: list[CameraWarning]) -> list[int]:
    """The views whose pose is unknown, left at a placeholder pose (`verdict.w2c` changed), each
    with a warning, as are uncertain poses and a reference view without confident points."""
    confident, inliers, in_front, ok, w2c = verdict.confident, verdict.inliers, verdict.in_front, verdict.ok, verdict.w2c
    failed: list[int] = []
    for v in range(1, len(confident)):
        problem = None
        if confident[v] < MIN_POINTS:
            problem = f"only {confident[v]} confident point{'s' if confident[v] != 1 else ''}"
        elif not ok[v] or inliers[v] < MIN_POINTS:
            problem = "no camera fits its points"
        elif in_front[v] * 2 < confident[v]:
            problem = "most of its points would be behind its camera"
        if problem is not None:
            failed.append(v)
            w2c[v] = np.eye(4)
            w2c[v, :3, 3] = POSE_FAILURE_W2C_T
            warnings.append(CameraWarning([v], f"{problem}: its pose is unknown, the camera is left at a "
                                             f"placeholder pose (w2c = [I | (1, 1, 1)])"))
        elif inliers[v] * 2 < confident[v]:
            warnings.append(CameraWarning([v], f"only {inliers[v]} of its {confident[v]} confident points fit its "
                                             f"camera within {INLIER_GRID_PX:g} pixels: its pose is uncertain"))
    if confident[0] < MIN_POINTS:
        warnings.append(CameraWarning([0], "the reference view has no confident points; its camera is the world "
                                         "frame by definition, its focal cannot be measured"))
    return failed
