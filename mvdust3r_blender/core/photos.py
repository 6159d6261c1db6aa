"""Which files are photos, and the EXIF orientation a photo is displayed with. Standard library only:
the Blender side, the worker and the exports share it (``engine/images.py`` needs torch and Pillow,
which Blender's Python does not have)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
EXIF_ORIENTATION = 0x0112


def folder_photos(folder: Path) -> list[Path]:
    """The image files in `folder` (by extension, any case), sorted by name; not recursive."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def exif_orientation(img: Any) -> int:
    """The EXIF orientation (1–8) of an open Pillow image; 1 (as stored) when absent or unreadable."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1
