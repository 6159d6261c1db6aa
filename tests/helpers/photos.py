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
