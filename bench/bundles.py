"""A synthetic reconstruction bundle for the benchmarks: random but valid, with every array filled
(points in front of the cameras, confidences, cameras, Gaussians). What the exporters and the
importer cost does not depend on the values, only on the sizes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

PHOTO_SIZE = (1024, 768)


def synthetic_bundle(bundle_cls: Any, views: int, size: int, photo_dir: Optional[Path] = None) -> Any:
    """A `bundle_cls` (the source tree's or an installed extension's ``Bundle``) of `views` × `size`²
    points. With `photo_dir`, 200 kB stand-in photo files are written there (the COLMAP export
    copies them); without, the photo paths name files that do not exist (the importer's case)."""
    rng = np.random.default_rng(0)
    n, h, w = views, size, size
    width, height = PHOTO_SIZE
    paths = [f"/nonexistent/IMG_{v:04d}.jpg" for v in range(n)]
    if photo_dir is not None:
        photo_dir.mkdir(parents=True, exist_ok=True)
        paths = [str(photo_dir / Path(p).name) for p in paths]
        for path in paths:
            Path(path).write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    quat = rng.normal(size=(n, h, w, 4)).astype(np.float32)
    c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(-1, 1, n)
    focal = 0.9 * width
    return bundle_cls(
        images=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        pts3d=(rng.normal(size=(n, h, w, 3)) + [0, 0, 3]).astype(np.float32),
        conf=(1 + rng.exponential(2.0, (n, h, w))).astype(np.float32),
        intrinsics=np.tile(np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32), (n, 1, 1)),
        cam2world=c2w,
        photo_size=np.tile(np.array([width, height], np.int32), (n, 1)),
        crop_box=np.tile(np.array([(width - height) / 2, 0, (width + height) / 2, height], np.float32), (n, 1)),
        photo_paths=paths,
        gaussian_rotation=quat / np.linalg.norm(quat, axis=-1, keepdims=True),
        gaussian_scale=rng.uniform(1e-3, 1e-2, (n, h, w, 3)).astype(np.float32),
        gaussian_opacity=rng.uniform(0.01, 1, (n, h, w)).astype(np.float32),
        gaussian_rgb=rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32),
        meta={"model": "bench"},
    )
