"""Photos: one check, one message, whoever starts the run."""
from __future__ import annotations

import os
from collections.abc import Sequence
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
    if len(paths) < 2:
        raise RunError(f"{len(paths)} photo{'s' if len(paths) != 1 else ''} in the list",
                       "add at least 2 photos of the same scene (4 or more for MV-DUSt3R+)")
    failures = [f"{path}: {problem}" for path in paths if (problem := photo_files.photo_problem(Path(path)))]
    if failures:
        raise RunError(photo_files.unreadable_message(failures, len(paths)), photo_files.UNREADABLE_HINT)
    duplicates = photo_files.duplicate_photos([Path(path) for path in paths])
    if duplicates:
        raise RunError(photo_files.duplicate_message(duplicates), photo_files.DUPLICATE_HINT)


def photo_list(photos: PhotoSource) -> list[str]:
    """Absolute paths of `photos`: a folder's image files sorted by name, or the list as given.
    Raises :class:`RunError` naming a missing folder or photo, a duplicate, or too few photos."""
    if isinstance(photos, (str, os.PathLike)):
        folder = Path(photos)
        if not folder.is_dir():
            raise RunError(f"'{folder}' is not a folder", "pass a folder of photos or a list of photo files")
        paths = folder_photos(folder)
        if len(paths) < 2:
            raise RunError(f"the folder '{folder}' holds {len(paths)} photo{'s' if len(paths) != 1 else ''}",
                           f"put at least 2 photos of one scene in it ({', '.join(photo_files.IMAGE_EXTENSIONS)})")
    else:
        paths = [str(Path(p).absolute()) for p in photos]
    check_photos(paths)
    return paths
