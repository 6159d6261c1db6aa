"""Which files are photos, and the EXIF orientation a photo is displayed with. Standard library only:
the Blender side, the worker and the exports share it (``engine/images.py`` needs torch and Pillow,
which Blender's Python does not have)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

MIN_PHOTOS = 2
MIN_PHOTOS_PLUS = 4
PHOTO_COUNT = "4–100 photos of one scene (MV-DUSt3R+ needs at least 4; MV-DUSt3R at least 2)"
"""How many photos a reconstruction takes, said the same way by the panel, scripts and the worker:
MV-DUSt3R+ (the built-in and the default model) uses 4 reference views, MV-DUSt3R works from 2."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
EXIF_ORIENTATION = 0x0112


def folder_photos(folder: Path) -> list[Path]:
    """The image files in `folder` (by extension, any case), sorted by name; not recursive."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


UNREADABLE_HINT = "remove or replace those files (JPEG, PNG, WebP, TIFF or BMP)"
DUPLICATE_HINT = "give each photo only once"


def photo_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be a photo without even opening it (missing, a folder, empty), or None.
    The Blender side checks a run's list with this before starting, the worker before decoding."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a folder, not a photo"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def unreadable_message(failures: Sequence[str], total: int) -> str:
    """The one message for photos that cannot be used: ``2 of 4 photos cannot be read: PATH: why; ...``."""
    return f"{len(failures)} of {total} photos cannot be read: " + "; ".join(failures)


def duplicate_photos(paths: Sequence[Path]) -> list[str]:
    """Photos given more than once (the same file by its real path), each named once, in order."""
    seen: dict[str, int] = {}
    duplicates = []
    for path in paths:
        key = os.path.normcase(os.path.realpath(path))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            duplicates.append(str(path))
    return duplicates


def duplicate_message(duplicates: Sequence[str]) -> str:
    return f"the same photo is given more than once: {', '.join(duplicates)}"


def display_name(text: str) -> str:
    """`text` (a file name or path) as valid UTF-8: bytes of a file name that are not UTF-8, which
    Python carries as lone surrogates (PEP 383), become U+FFFD. Blender's data-block names must be
    UTF-8; the path itself is kept unchanged wherever a file is opened."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def exif_orientation(img: Any) -> int:
    """The EXIF orientation (1–8) of an open Pillow image; 1 (as stored) when absent or unreadable."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1
