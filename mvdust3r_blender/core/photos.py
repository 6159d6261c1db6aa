"""Which files are photos, and the EXIF orientation a photo is displayed with. Standard library only:
the Blender side, the worker and the exports share it (``engine/images.py`` needs torch and Pillow,
which Blender's Python does not have)."""
from __future__ import annotations

import hashlib
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
UNSUPPORTED_EXTENSIONS = (".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf")
"""Photo formats cameras and phones write that the worker cannot decode (HEIC/AVIF, raw files): a
folder's are skipped and named (:func:`skipped_message`), never silently."""
EXIF_ORIENTATION = 0x0112


def folder_photos(folder: Path) -> list[Path]:
    """The image files in `folder` (by extension, any case), sorted by name; not recursive."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def unsupported_photos(folder: Path) -> list[Path]:
    """The photos in `folder` that :func:`folder_photos` leaves out because they cannot be read
    (:data:`UNSUPPORTED_EXTENSIONS`), sorted by name; [] when the folder cannot be listed."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in UNSUPPORTED_EXTENSIONS)
    except OSError:
        return []


def skipped_message(skipped: Sequence[Path]) -> str:
    """``skipped 2 photos this add-on cannot read (HEIC, raw): a.heic, b.heic; convert them to JPEG or PNG``."""
    kinds = sorted({p.suffix.lower().lstrip(".").upper() for p in skipped})
    names = ", ".join(display_name(p.name) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    return (f"skipped {len(skipped)} photo{'s' if len(skipped) != 1 else ''} in a format this add-on cannot read "
            f"({', '.join(kinds)}): {names}; convert them to JPEG or PNG to use them")


UNREADABLE_HINT = "remove or replace those files (JPEG, PNG, WebP, TIFF or BMP)"
DUPLICATE_HINT = "give each photo only once"


def photo_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be a photo without even opening it (missing, a folder, empty), or None.
    The Blender side checks a run's list with this before starting, the worker before decoding."""
    try:
        if not path.exists():
            return "no such file"
        if path.is_dir():
            return "is a folder, not a photo"
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as exc:  # a name longer than the file system allows, a folder that cannot be entered
        return f"cannot be opened ({exc.strerror or exc})"
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


def upright(pixels: Any, orientation: int) -> Any:
    """`pixels` (an array [rows, columns, ...], the first row the top of the stored image) as the photo
    is meant to be seen under EXIF `orientation` (what Pillow's ``exif_transpose`` does): the Blender
    side shows a phone's portrait photo upright with this, since Blender itself ignores EXIF
    orientation. Only array views (flips, transposes), so numpy is not imported here."""
    turned = pixels.swapaxes(0, 1)
    return {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1], 5: turned, 6: turned[:, ::-1],
            7: turned[::-1, ::-1], 8: turned[::-1]}.get(orientation, pixels)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB pieces: what makes two photos the same photo
    (the worker leaves byte-identical copies out) and a batch scene's input the same input."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            sha.update(piece)
    return sha.hexdigest()
