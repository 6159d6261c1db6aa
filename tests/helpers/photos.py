"""Made-up photos for tests and benchmarks (Pillow and numpy only)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

Names = Union[str, Sequence[str]]
"""A photo maker's file names: a format for each index (``"photo_{:03d}.png"``) or the names themselves."""


def smooth_photos(folder: Path, count: int, size: tuple[int, int] = (96, 72), seed: int = 0,
                  coarse: tuple[int, int] = (6, 8), name: Names = "photo_{:03d}.png",
                  quality: Optional[int] = None) -> list[Path]:
    """`count` photos of `size` (W, H) in `folder` (made if missing): random `coarse` (rows, columns)
    colour fields blown up bicubically, so they look and compress like smooth photos. `quality` is a
    JPEG's."""
    rng = np.random.default_rng(seed)
    return _write(folder, (Image.fromarray(rng.integers(0, 256, size=(*coarse, 3), dtype=np.uint8), "RGB")
                           .resize(size, Image.Resampling.BICUBIC) for _ in range(count)), name, quality)


def noise_photos(folder: Path, sizes: Sequence[tuple[int, int]], seed: int = 0, name: Names = "photo_{:03d}.png",
                 quality: Optional[int] = None) -> list[Path]:
    """A photo of uniform colour noise for each (W, H) of `sizes` in `folder` (made if missing): no two
    pixels alike, and nothing for a compressor to save. `quality` is a JPEG's."""
    rng = np.random.default_rng(seed)
    return _write(folder, (Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                           for width, height in sizes), name, quality)


def flat_photos(folder: Path, sizes: Sequence[tuple[int, int]], colours: Sequence[tuple[int, int, int]],
                name: Names = "photo_{:03d}.png") -> list[Path]:
    """A photo of one flat colour for each (W, H) of `sizes` and RGB of `colours` in `folder` (made if
    missing): a test reads which photo a pixel came from by its colour."""
    return _write(folder, (Image.new("RGB", size, colour) for size, colour in zip(sizes, colours)), name, None)


def noise_jpegs(folder: Path, count: int, megabytes: float, seed: int = 0) -> list[Path]:
    """`count` distinct noise JPEGs of about `megabytes` each in `folder` (quality 95: noise barely
    compresses, so a photo's size is what it costs to send)."""
    pixels = int(megabytes * 1e6 / 1.18)  # a q95 noise JPEG takes about 1.18 bytes per pixel (measured)
    height = int((pixels * 3 / 4) ** 0.5)
    return noise_photos(folder, [(height * 4 // 3, height)] * count, seed, "photo_{:03d}.jpg", quality=95)


def _write(folder: Path, images: Iterable[Image.Image], name: Names, quality: Optional[int]) -> list[Path]:
    """Saves each image as it comes (a benchmark's photos need not all fit in memory at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        paths.append(folder / (name.format(k) if isinstance(name, str) else name[k]))
        image.save(paths[-1]) if quality is None else image.save(paths[-1], quality=quality)
    return paths
