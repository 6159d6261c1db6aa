"""Which focal length a photo's camera has before any point is seen: the user's ``focal`` option and EXIF.

``focal`` (:class:`~mvdust3r_blender.core.options.ReconstructOptions`):

- ``estimate``: none is known; camera recovery measures every camera's focal from the points;
- a number: a 35 mm-equivalent focal length in mm for every photo; only the poses are solved;
- ``auto`` (default): per camera, EXIF ``FocalLengthIn35mmFilm``; else ``FocalLength`` with the
  sensor's pixel pitch (``FocalPlaneXResolution`` / ``FocalPlaneResolutionUnit``) — when the result
  is plausible (a 10° to 150° field of view across the photo's long side); else estimated.

35 mm equivalence is by the diagonal (the CIPA / EXIF definition): a photo of diagonal d pixels
taken at f mm 35 mm-equivalent has ``F = f · d / 43.27`` pixels (43.27 mm: the 36×24 mm frame's
diagonal). Sources, as ``meta.focal_source`` names them: ``"option"``, ``"exif-35mm"``,
``"exif-sensor"`` (or, from the recovery, ``"estimated"`` and ``"fallback"``).
"""
from __future__ import annotations

import math
from typing import Optional

from .images import PhotoCamera

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
PLAUSIBLE_FOV_DEG = (10.0, 150.0)   # across the photo's long side


def equivalent_focal_px(focal_35mm: float, photo_size: tuple[float, float]) -> float:
    """Photo pixels of a 35 mm-equivalent focal length `focal_35mm` (mm) on a photo of `photo_size` (W, H)."""
    return focal_35mm * math.hypot(*photo_size) / FULL_FRAME_DIAGONAL_MM


def plausible(focal_px: float, photo_size: tuple[float, float]) -> bool:
    """A field of view across the long side within PLAUSIBLE_FOV_DEG."""
    if not math.isfinite(focal_px) or focal_px <= 0:
        return False
    fov = math.degrees(2 * math.atan(max(photo_size) / 2 / focal_px))
    return PLAUSIBLE_FOV_DEG[0] <= fov <= PLAUSIBLE_FOV_DEG[1]


def known_focal(choice: str, camera: Optional[PhotoCamera], photo_size: tuple[float, float]) -> tuple[float, str]:
    """The focal (photo pixels) and its source for a photo of `photo_size` (W, H, as displayed) whose EXIF says
    `camera`, under the ``focal`` option `choice`; ``(nan, "estimated")`` when it is to be estimated."""
    if choice == "estimate":
        return math.nan, "estimated"
    if choice != "auto":
        return equivalent_focal_px(float(choice), photo_size), "option"
    if camera is not None and camera.focal_35mm is not None:
        focal = equivalent_focal_px(camera.focal_35mm, photo_size)
        if plausible(focal, photo_size):
            return focal, "exif-35mm"
    if camera is not None and camera.focal_mm is not None and camera.pixels_per_mm is not None:
        focal = camera.focal_mm * camera.pixels_per_mm   # pixels of the stored (full-resolution) image
        if plausible(focal, photo_size):
            return focal, "exif-sensor"
    return math.nan, "estimated"
