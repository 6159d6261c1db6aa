"""Photos that load but cannot help: said in the bundle's ``meta.photo_warnings``, never silently used.

A photo can decode perfectly and still say nothing about the scene: a 1×1 image, a 20000×100 strip
of which the network's square crop sees half a percent, a frame of all black or all white,
the same file twice under two names, or EXIF that gives an absurd focal length. The run goes on
(the other photos are good); each case gives one ``{"views": [user indices], "message": text}``
entry that the import shows with the camera warnings (``docs/bundle.md`` lists them). A byte-for-byte
duplicate is left out before the network runs (two identical views only pull two cameras apart: 12.6°
in the case that found it), keeping the first of its name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..core.photos import display_name
from .focal import FULL_FRAME_DIAGONAL_MM, PLAUSIBLE_FOV_DEG, known_focal
from .images import PreparedPhoto

MIN_SIDE_FRACTION = 0.25
"""A photo whose short side is below this share of the network's input side is 'tiny': the network
sees it enlarged more than 4×, blurred, with almost no detail to match."""
MAX_ASPECT = 4.0
"""Beyond this long:short ratio the network's square centre crop sees under a quarter of the photo."""
LENS_MM = (1.0, 1200.0)
"""Focal lengths real photo lenses have (a phone's 1.5 mm to a 1200 mm telephoto): an EXIF focal
length outside them is absurd whatever the sensor."""
BLANK_LEVELS = 2.0
BLANK_SHADES = (16.0, 239.0)
"""A crop darker than the first or brighter than the second mean level (0–255) whose levels vary by
less than BLANK_LEVELS (standard deviation) is blank: all black or all white (an unexposed or
blown-out frame, a lens cap)."""


@dataclass(frozen=True)
class PhotoWarning:
    views: list[int]
    message: str

    def as_meta(self) -> dict[str, object]:
        return {"views": list(self.views), "message": self.message}


def _name(photo: PreparedPhoto) -> str:
    return display_name(Path(photo.path).name)


def drop_duplicates(photos: Sequence[PreparedPhoto]) -> tuple[list[int], list[PhotoWarning]]:
    """(the indices kept, in order; one warning per photo left out): a photo whose file is
    byte-identical to an earlier one is left out, naming both."""
    first: dict[str, int] = {}
    kept: list[int] = []
    warnings: list[PhotoWarning] = []
    for i, photo in enumerate(photos):
        twin = first.get(photo.digest) if photo.digest else None
        if twin is None:
            first[photo.digest] = i
            kept.append(i)
        else:
            warnings.append(PhotoWarning([], f"{_name(photo)} is byte-for-byte the same file as "
                                             f"{_name(photos[twin])}; it was left out (one view per photo)"))
    return kept, warnings


def photo_warnings(photos: Sequence[PreparedPhoto], size: tuple[int, int], focal: str) -> list[PhotoWarning]:
    """The warnings for `photos` (user order, duplicates already left out) on a network of input `size`
    (h, w) under the ``focal`` option."""
    found: list[PhotoWarning] = []
    for v, photo in enumerate(photos):
        width, height = photo.photo_size
        short, long = min(width, height), max(width, height)
        if short < MIN_SIDE_FRACTION * min(size):
            found.append(PhotoWarning([v], f"{_name(photo)} is only {width}×{height} pixels: the network sees it "
                                           f"enlarged to {size[1]}×{size[0]}, so its points and camera are unreliable"))
        if long / short > MAX_ASPECT:
            seen = 100.0 * short / long
            found.append(PhotoWarning([v], f"{_name(photo)} is {width}×{height} pixels (a {long / short:.0f}:1 "
                                           f"strip): the network sees only its centre square, {seen:.2g} % of it"))
        shade = float(photo.image.mean())
        if (shade < BLANK_SHADES[0] or shade > BLANK_SHADES[1]) and float(photo.image.astype(np.float32).std()) < BLANK_LEVELS:
            what = "black" if shade < BLANK_SHADES[0] else "white"
            found.append(PhotoWarning([v], f"{_name(photo)} is blank (all {what}): nothing in it can place its "
                                           f"camera, whatever pose it gets"))
        absurd = _absurd_exif_focal(photo, focal)
        if absurd is not None:
            found.append(PhotoWarning([v], absurd))
    return found


def _absurd_exif_focal(photo: PreparedPhoto, focal: str) -> Optional[str]:
    """What EXIF said about the focal length when ``focal=auto`` ignored it as implausible, else None."""
    camera = photo.camera
    if focal != "auto" or camera is None or (camera.focal_mm is None and camera.focal_35mm is None):
        return None
    _, source = known_focal(focal, camera, photo.photo_size)
    if source != "estimated":
        return None  # EXIF was used
    if camera.focal_35mm is not None:  # known_focal refused it as implausible
        mm = camera.focal_35mm
        said = f"{mm:g} mm (35 mm equivalent, a {math.degrees(2 * math.atan(FULL_FRAME_DIAGONAL_MM / 2 / mm)):.3g}° " \
               f"diagonal field of view)"
    elif camera.focal_mm is not None and (camera.pixels_per_mm is not None
                                          or not LENS_MM[0] <= camera.focal_mm <= LENS_MM[1]):
        said = f"{camera.focal_mm:g} mm"
    else:
        return None  # a plausible focal without the sensor's size: unusable, not absurd
    return (f"{_name(photo)}: its EXIF focal length {said} is implausible (a field of view outside "
            f"{PLAUSIBLE_FOV_DEG[0]:g}°–{PLAUSIBLE_FOV_DEG[1]:g}° across the long side) and was ignored; "
            f"the focal is estimated from the points")
