"""Made-up reconstruction bundles whose points agree with their cameras (numpy and Pillow only, so the
engine tests and Blender's Python build them alike)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from tests.helpers.cameras import look_at

NOWHERE = Path("/nonexistent")


def grid_pixels(crop_box: Sequence[float], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Photo-pixel centres (u, v), each [h,w], of the network grid inside `crop_box` (bundle convention)."""
    h, w = grid
    x0, y0, x1, y1 = crop_box
    u = x0 + (np.arange(w) + 0.5) * (x1 - x0) / w
    v = y0 + (np.arange(h) + 0.5) * (y1 - y0) / h
    uu, vv = np.meshgrid(u, v)
    return uu, vv


def make_bundle(bundle_cls: Any, photo_sizes: Sequence[tuple[int, int]] = ((96, 64), (64, 96), (80, 80)),
                grid: tuple[int, int] = (12, 16), *,
                fy_over_fx: Optional[Sequence[float]] = None,
                principal_offset: Optional[Sequence[tuple[float, float]]] = None,
                gaussians: bool = True, photo_dir: Path = NOWHERE, photo_names: Optional[Sequence[str]] = None,
                write_photos: bool = False, highest_confidence: Optional[float] = None, seed: int = 0) -> Any:
    """A `bundle_cls` (the source tree's or an installed extension's ``Bundle``) of one view a photo size.

    View k has a photo of ``photo_sizes[k]`` = (W,H) pixels, intrinsics with fx ≈ 0.9·max(W,H), the
    given fy/fx ratio (by default 1.0, 1.15, 0.9, …) and principal point (W/2 + ox·W, H/2 + oy·H), and
    a crop box of the grid's aspect inside the photo. View 0's camera is the world frame (identity);
    the others look at the scene centre (0,0,3) from around it. Every grid pixel's point is the
    back-projection of its photo pixel centre at a random depth through K and cam2world, so it
    projects exactly onto that pixel. Confidences are 1 + an exponential of mean 2, scaled so
    that the highest is `highest_confidence` when it is given. The Gaussians (if any) have random
    rotations and the grid's colours.

    The photos are `photo_names` (by default ``view_00.png``, …; folders in a name are made) in
    `photo_dir`; with `write_photos` they are written as noise images of their sizes (the format
    by the name's suffix), else only named.
    """
    rng = np.random.default_rng(seed)
    n = len(photo_sizes)
    h, w = grid
    ratios = fy_over_fx if fy_over_fx is not None else [(1.0, 1.15, 0.9)[k % 3] for k in range(n)]
    offsets = principal_offset if principal_offset is not None else [
        ((0.1, -0.08), (-0.12, 0.05), (0.0, 0.15))[k % 3] for k in range(n)]
    centre = np.array([0.0, 0.0, 3.0])
    intrinsics = np.zeros((n, 3, 3))
    cam2world = np.zeros((n, 4, 4))
    crop_box = np.zeros((n, 4))
    pts3d = np.zeros((n, h, w, 3))
    for k, (W, H) in enumerate(photo_sizes):
        fx = 0.9 * max(W, H) * (1.0 + 0.05 * k)
        fy = fx * ratios[k]
        cx, cy = W / 2 + offsets[k][0] * W, H / 2 + offsets[k][1] * H
        intrinsics[k] = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
        if k == 0:
            cam2world[k] = np.eye(4)
        else:
            angle = 2 * np.pi * k / n
            position = centre + 3.0 * np.array([np.sin(angle), -0.3 * rng.random(), -np.cos(angle)])
            cam2world[k] = look_at(position, centre + rng.normal(0, 0.1, 3), up=np.array([0.0, 1.0, 0.0]),
                                   roll=rng.normal(0, 0.1))
        scale = 0.9 * min(W / w, H / h)  # crop of the grid's aspect, slightly off centre
        x0 = (W - scale * w) * rng.uniform(0.3, 0.7)
        y0 = (H - scale * h) * rng.uniform(0.3, 0.7)
        crop_box[k] = [x0, y0, x0 + scale * w, y0 + scale * h]
        u, v = grid_pixels(crop_box[k], grid)
        depth = rng.uniform(2.5, 3.5, size=(h, w))
        cam = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1)
        pts3d[k] = cam @ cam2world[k][:3, :3].T + cam2world[k][:3, 3]
    images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    names = photo_names if photo_names is not None else [f"view_{k:02d}.png" for k in range(n)]
    photo_paths = [photo_dir / name for name in names]
    if write_photos:
        for path, (W, H) in zip(photo_paths, photo_sizes):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)).save(path)
    kwargs: dict[str, Any] = {}
    if gaussians:
        quat = rng.normal(size=(n, h, w, 4))
        kwargs = dict(
            gaussian_rotation=(quat / np.linalg.norm(quat, axis=-1, keepdims=True)).astype(np.float32),
            gaussian_scale=rng.uniform(0.005, 0.03, size=(n, h, w, 3)).astype(np.float32),
            gaussian_opacity=rng.uniform(0.05, 0.99, size=(n, h, w)).astype(np.float32),
            gaussian_rgb=(images / 255.0).astype(np.float32),
        )
    spread = rng.exponential(2.0, size=(n, h, w))
    if highest_confidence is not None:
        spread *= (highest_confidence - 1.0) / spread.max()
    bundle = bundle_cls(
        images=images, pts3d=pts3d.astype(np.float32), conf=(1.0 + spread).astype(np.float32),
        intrinsics=intrinsics.astype(np.float32), cam2world=cam2world.astype(np.float32),
        photo_size=np.array(photo_sizes, dtype=np.int32), crop_box=crop_box.astype(np.float32),
        photo_paths=[str(path) for path in photo_paths], meta={"model": "test-made", "seed": seed}, **kwargs)
    bundle.validate("make_bundle")
    return bundle
