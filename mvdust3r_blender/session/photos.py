"""Photos: one check, one message, whoever starts the run."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

from ..core import photos as photo_files
from .errors import RunError
from .settings import PathLike

PhotoSource = Union[PathLike, Sequence[PathLike]]
"""A folder (its image files, sorted by name) or a list of photo paths."""


def folder_photos(folder: Path) -> list[str]:
    """Absolute paths of the image files in `folder` (by extension), sorted by name."""
    return [str(p.absolute()) for p in photo_files.folder_photos(folder)]


def check_photos(paths: list[str]) -> None:
    """Raise :class:`RunError` naming every photo that is missing, a folder or empty, or listed twice,
    in the worker's own words (``core.photos``: one check, one message); the worker checks the contents."""
    if len(paths) < photo_files.MIN_PHOTOS:
        raise RunError(f"{len(paths)} photo{'s' if len(paths) != 1 else ''} in the list",
                       f"add {photo_files.PHOTO_COUNT}")
    failures = [f"{path}: {problem}" for path in paths if (problem := photo_files.photo_problem(Path(path)))]
    if failures:
        raise RunError(photo_files.unreadable_message(failures, len(paths)), photo_files.UNREADABLE_HINT)
    duplicates = photo_files.duplicate_photos([Path(path) for path in paths])
    if duplicates:
        raise RunError(photo_files.duplicate_message(duplicates), photo_files.DUPLICATE_HINT)


def photo_list(photos: PhotoSource) -> list[str]:
    """Absolute paths of `photos`: a folder's image files sorted by name, or the list as given.
    Raises :class:`RunError` naming a missing or unlistable folder, a missing photo, a duplicate, or
    too few photos (and, with too few, the photos in the folder this add-on cannot read, e.g. HEIC)."""
    if isinstance(photos, (str, os.PathLike)):
        folder = Path(photos)
        if not folder.is_dir():
            raise RunError(f"'{folder}' is not a folder", "pass a folder of photos or a list of photo files")
        try:
            paths = folder_photos(folder)
        except OSError as exc:
            raise RunError(f"cannot list the folder '{folder}': {exc.strerror or exc}",
                           "check that you may read it, or pass a list of photo files") from None
        if len(paths) < 2:
            skipped = photo_files.unsupported_photos(folder)
            note = f" ({photo_files.skipped_message(skipped)})" if skipped else ""
            raise RunError(f"the folder '{folder}' holds {len(paths)} photo{'s' if len(paths) != 1 else ''}{note}",
                           f"put {photo_files.PHOTO_COUNT} in it ({', '.join(photo_files.IMAGE_EXTENSIONS)})")
    elif isinstance(photos, Iterable):
        items = list(photos)
        bad = [p for p in items if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise RunError(f"photos holds {bad[0]!r}, which is not a path", "pass a folder or a list of photo paths")
        paths = [str(Path(p).absolute()) for p in items]
    else:
        raise RunError(f"photos={photos!r} is neither a folder nor a list of photos",
                       "pass a folder of photos or a list of photo files")
    check_photos(paths)
    return paths
