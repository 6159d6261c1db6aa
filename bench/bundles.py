"""The benchmarks' bundle: the tests' made-up scene (``tests.helpers.bundles``) at a benchmark's size,
every array filled (points in front of the cameras, confidences, cameras, Gaussians). What the
exporters and the importer cost does not depend on the values, only on the sizes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from tests.helpers.bundles import NOWHERE, make_bundle

PHOTO_SIZE = (1024, 768)


def synthetic_bundle(bundle_cls: Any, views: int, size: int, photo_dir: Optional[Path] = None) -> Any:
    """A `bundle_cls` (the source tree's or an installed extension's ``Bundle``) of `views` × `size`²
    points. With `photo_dir`, 200 kB stand-in photo files are written there (the COLMAP export
    copies them); without, the photo paths name files that do not exist (the importer's case)."""
    bundle = make_bundle(bundle_cls, [PHOTO_SIZE] * views, (size, size), photo_dir=photo_dir or NOWHERE,
                         photo_names=[f"IMG_{v:04d}.jpg" for v in range(views)])
    if photo_dir is not None:
        photo_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for path in bundle.photo_paths:
            Path(path).write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    return bundle
