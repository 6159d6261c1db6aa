"""Made-up photos for tests and benchmarks (Pillow and numpy only)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def smooth_photos(folder: Path, count: int, size: tuple[int, int] = (96, 72), seed: int = 0,
                  coarse: tuple[int, int] = (6, 8), name: str = "photo_{:03d}.png",
                  quality: Optional[int] = None) -> list[Path]:
    """`count` photos of `size` (W, H) in `folder` (made if missing): random `coarse` (rows, columns)
    colour fields blown up bicubically, so they look and compress like smooth photos. `name` is
    formatted with each index; `quality` is a JPEG's."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        small = rng.integers(0, 256, size=(*coarse, 3), dtype=np.uint8)
        path = folder / name.format(k)
        image = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
        if quality is not None:
            image.save(path, quality=quality)
        else:
            image.save(path)
        paths.append(path)
    return paths


def noise_jpegs(folder: Path, count: int, megabytes: float, seed: int = 0) -> list[Path]:
    """`count` distinct noise JPEGs of about `megabytes` each in `folder` (quality 95: noise barely
    compresses, so a photo's size is what it costs to send)."""
    pixels = int(megabytes * 1e6 / 1.18)  # a q95 noise JPEG takes about 1.18 bytes per pixel (measured)
    height = int((pixels * 3 / 4) ** 0.5)
    width = height * 4 // 3
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"photo_{k:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths
