"""Photos → the network's input crops, with the geometry needed to map results back to the photo.

Preprocessing is the official ``dust3r.utils.image.load_images(files, size=224)``,
generalised to the model's own square resolution s: EXIF orientation, RGB, resize so the short
side becomes s (target long edge ``round(s·max(W/H, H/W))``, each side ``round(side·L/S)``,
LANCZOS when shrinking, BICUBIC when enlarging), then a centre crop of s×s around
``(W'//2, H'//2)``. For an even s this is exactly the official crop. A non-square model resolution
(h, w) — no released model has one — uses "cover then centre crop": scale by
``max(w/W, h/H)``, round each side, crop h×w around ``(W'//2, H'//2)``.

Besides the crop, each photo records its size after EXIF transpose and the ``crop_box``: the exact
region of the original photo the crop covers. PIL's resize maps the whole source rectangle
[0,W]×[0,H] onto [0,W']×[0,H'], so a crop ``(a,b,a+w,b+h)`` of the resized image covers
``(a·W/W', b·H/H', (a+w)·W/W', (b+h)·H/H')`` of the photo — including the rounding of W', H'.

Huge JPEGs (more than ``max_exact_pixels``, default 24 MP) are decoded with PIL's ``draft`` at a
reduced DCT scale that still leaves ≥ 4× the crop's resolution, so a 50 MP photo decodes to about
3 MP. That is an approximation of the official result (JPEG DCT scaling instead of a full decode
before LANCZOS; the crop box is exact up to the ≤ 1 draft pixel that DCT scaling rounds off);
``PreparedPhoto.approximate`` says when it happened. Photos at or below the limit, and other formats,
are decoded in full and match the official pipeline exactly.

Formats: whatever Pillow reads (JPEG, PNG 8/16-bit/palette/alpha, WebP, TIFF, BMP, ...). Alpha is
dropped as the official ``convert('RGB')`` does; 16-bit grey is scaled to 8 bits (the official code
would clip it to white); palette, grey, CMYK convert to RGB.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..core.photos import (DUPLICATE_HINT, UNREADABLE_HINT, duplicate_message, duplicate_photos, exif_orientation,
                           folder_photos, photo_problem, unreadable_message)
from .errors import Cancelled, InputError

MAX_EXACT_PIXELS = 24_000_000
DECODE_THREADS = min(4, os.cpu_count() or 1)
"""Photos decoded at once (each thread holds one decoded photo at a time)."""
_POOL: Optional[ThreadPoolExecutor] = None
_DRAFT_OVERSAMPLE = 4
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that transpose width and height


@dataclass(frozen=True)
class PhotoCamera:
    """What a photo's EXIF says about the camera that took it (None where it says nothing)."""

    make: Optional[str]
    model: Optional[str]
    focal_mm: Optional[float]           # FocalLength, mm
    focal_35mm: Optional[float]         # FocalLengthIn35mmFilm, mm (35 mm equivalent)
    stored_size: tuple[int, int]        # (W, H) as stored in the file, before EXIF orientation
    pixels_per_mm: Optional[float] = None  # FocalPlaneXResolution in its unit: the sensor's pixel pitch

    @property
    def has_exif(self) -> bool:
        return any(v is not None for v in (self.make, self.model, self.focal_mm, self.focal_35mm))


def camera_key(camera: PhotoCamera, photo_size: tuple[int, int]) -> tuple[object, ...]:
    """Photos with equal keys come from one camera and share one focal in photo pixels: the same EXIF make,
    model, focal length and full-resolution size; without EXIF, the same size as displayed."""
    if camera.has_exif:
        return ("exif", camera.make, camera.model, camera.focal_mm, camera.focal_35mm, camera.stored_size)
    return ("size", photo_size)


_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}   # FocalPlaneResolutionUnit: inch, cm, mm, µm


def _plane_unit_mm(value: object) -> Optional[float]:
    try:
        return _PLANE_UNIT_MM.get(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _exif_text(value: object) -> Optional[str]:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not isinstance(text, str):
        return None
    return text.strip("\x00 ").strip() or None


def _exif_number(value: object) -> Optional[float]:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def read_camera(img: Image.Image) -> PhotoCamera:
    """The EXIF camera description of an open Pillow image (every field None when absent or unreadable)."""
    try:
        exif = img.getexif()
        details = exif.get_ifd(ExifTags.IFD.Exif)
    except (ValueError, TypeError, OSError, SyntaxError):
        return PhotoCamera(None, None, None, None, img.size)

    unit_mm = _plane_unit_mm(details.get(ExifTags.Base.FocalPlaneResolutionUnit, 2))  # EXIF's default: inches
    per_unit = _exif_number(details.get(ExifTags.Base.FocalPlaneXResolution))
    return PhotoCamera(make=_exif_text(exif.get(ExifTags.Base.Make)), model=_exif_text(exif.get(ExifTags.Base.Model)),
                       focal_mm=_exif_number(details.get(ExifTags.Base.FocalLength)),
                       focal_35mm=_exif_number(details.get(ExifTags.Base.FocalLengthIn35mmFilm)),
                       stored_size=img.size,
                       pixels_per_mm=None if per_unit is None or unit_mm is None else per_unit / unit_mm)


@dataclass
class PreparedPhoto:
    """One photo ready for the network, and where its crop lies in the original."""

    path: str                                     # absolute path as given
    image: np.ndarray                             # uint8 [h,w,3] RGB, the network's input crop
    photo_size: tuple[int, int]                   # (W, H) after EXIF transpose
    crop_box: tuple[float, float, float, float]   # (x0,y0,x1,y1) in photo pixels, [0,W]×[0,H]
    approximate: bool = False                     # decoded at reduced scale (huge JPEG, see module doc)
    camera: Optional[PhotoCamera] = None          # what its EXIF says about its camera

    @property
    def camera_key(self) -> tuple[object, ...]:
        """Which camera took it (:func:`camera_key`)."""
        return camera_key(self.camera or PhotoCamera(None, None, None, None, self.photo_size), self.photo_size)


@dataclass(frozen=True)
class ResizePlan:
    """How one photo of size (W, H) becomes an h×w crop: resize target, filter and crop in resized pixels."""

    resized: tuple[int, int]          # (W', H')
    resample: int                     # PIL filter
    crop: tuple[int, int, int, int]   # (x0, y0, x1, y1) in resized pixels


def plan_resize(width: int, height: int, size: tuple[int, int]) -> ResizePlan:
    """The official short-side resize + centre crop for square `size` (h, w); cover + crop otherwise."""
    h, w = size
    if h == w:
        long_edge = round(h * max(width / height, height / width))
        longest = max(width, height)
        resized = (int(round(width * long_edge / longest)), int(round(height * long_edge / longest)))
        resample = Image.Resampling.LANCZOS if longest > long_edge else Image.Resampling.BICUBIC
    else:
        scale = max(w / width, h / height)
        resized = (max(w, int(round(width * scale))), max(h, int(round(height * scale))))
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    x0, y0 = resized[0] // 2 - w // 2, resized[1] // 2 - h // 2
    return ResizePlan(resized, int(resample), (x0, y0, x0 + w, y0 + h))


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB as the official ``convert('RGB')``, except that 16-bit grey keeps its range and palettes keep alpha handling quiet."""
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(img).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        grey = np.asarray(img).astype(np.float32)
        grey = grey * 255.0 if np.nanmax(grey) <= 1.0 else grey
        return Image.fromarray(np.clip(np.nan_to_num(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_photo(path: str | os.PathLike[str], size: tuple[int, int],
               max_exact_pixels: int = MAX_EXACT_PIXELS) -> PreparedPhoto:
    """Read one photo and return its h×w crop (`size` = (h, w)); PIL errors propagate to the caller."""
    h, w = size
    with Image.open(path) as opened:
        stored_w, stored_h = opened.size
        camera = read_camera(opened)
        swapped = exif_orientation(opened) in _SWAPPING_ORIENTATIONS
        photo_w, photo_h = (stored_h, stored_w) if swapped else (stored_w, stored_h)
        approximate = False
        if opened.format in ("JPEG", "MPO") and stored_w * stored_h > max_exact_pixels:
            scale = max(w / photo_w, h / photo_h) * _DRAFT_OVERSAMPLE
            want = (math.ceil(stored_w * scale), math.ceil(stored_h * scale))
            opened.draft("RGB", want)
            approximate = opened.size != (stored_w, stored_h)
        img = _to_rgb(ImageOps.exif_transpose(opened))
    decoded_w, decoded_h = img.size
    plan = plan_resize(decoded_w, decoded_h, size)
    resized = img.resize(plan.resized, plan.resample)
    crop = np.asarray(resized.crop(plan.crop), dtype=np.uint8).copy()
    sx, sy = photo_w / plan.resized[0], photo_h / plan.resized[1]
    x0, y0, x1, y1 = plan.crop
    return PreparedPhoto(path=str(path), image=crop, photo_size=(photo_w, photo_h),
                         crop_box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy), approximate=approximate,
                         camera=camera)


def _decoders() -> ThreadPoolExecutor:
    """The photo decoders: one pool for the process, started on first use and kept (Pillow releases
    the GIL while it decodes and resizes, so photos decode in parallel; a kept pool has its threads'
    memory set up once, not at every run)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="mvdust3r-photos")
    return _POOL


def _load_or_reason(path: Path, size: tuple[int, int], max_exact_pixels: int) -> PreparedPhoto | str:
    """One photo, or why it cannot be read (what the user needs to fix it)."""
    reason = photo_problem(path)
    if reason is not None:
        return reason
    try:
        return load_photo(path, size, max_exact_pixels)
    except UnidentifiedImageError:
        return "not an image Pillow can read (unknown or unsupported format)"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"corrupt or unreadable image ({exc})"


@dataclass
class PendingPhotos:
    """Photos being decoded on the decoder threads (:func:`start_loading`), for :func:`load_photos`
    to collect: the worker starts them as soon as it knows the model's input size, so they decode
    while the weights load."""

    paths: list[Path]
    size: tuple[int, int]
    max_exact_pixels: int
    jobs: list[Future[PreparedPhoto | str]]

    def cancel(self) -> None:
        """Drop the decodes not started yet (the run failed or did not use them)."""
        for job in self.jobs:
            job.cancel()


def start_loading(paths: Sequence[str | os.PathLike[str]], size: tuple[int, int],
                  max_exact_pixels: int = MAX_EXACT_PIXELS) -> PendingPhotos:
    """Start decoding `paths` for an h×w model (`size`) on the decoder threads; returns at once."""
    resolved = [Path(p).expanduser().absolute() for p in paths]
    pool = _decoders()
    return PendingPhotos(resolved, size, max_exact_pixels,
                         [pool.submit(_load_or_reason, path, size, max_exact_pixels) for path in resolved])


def load_photos(paths: Sequence[str | os.PathLike[str]], size: tuple[int, int],
                cancel: Optional[threading.Event] = None,
                progress: Optional[Callable[[float], None]] = None,
                max_exact_pixels: int = MAX_EXACT_PIXELS,
                pending: Optional[PendingPhotos] = None) -> list[PreparedPhoto]:
    """Load every photo (on :data:`DECODE_THREADS` threads; results in the given order), collecting
    `pending` when it decodes these photos at this size; if any cannot be read, raise one
    :class:`InputError` naming all of them."""
    resolved = [Path(p).expanduser().absolute() for p in paths]
    duplicates = duplicate_photos(resolved)
    if duplicates:
        raise InputError(duplicate_message(duplicates), DUPLICATE_HINT)
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled while loading photos")
    if pending is None or (pending.paths, pending.size, pending.max_exact_pixels) != (resolved, size, max_exact_pixels):
        if pending is not None:
            pending.cancel()
        pending = start_loading(resolved, size, max_exact_pixels)
    results: list[PreparedPhoto | str] = []
    try:
        for i, job in enumerate(pending.jobs):
            while True:  # wait in short steps, so a cancel takes effect during a slow decode
                try:
                    results.append(job.result(timeout=0.1))
                    break
                except FutureTimeout:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled while loading photos") from None
            if progress is not None:
                progress((i + 1) / len(resolved))
    finally:
        pending.cancel()  # those not started yet (after a cancel or an error)
    failures = [f"{path}: {r}" for path, r in zip(resolved, results) if isinstance(r, str)]
    if failures:
        raise InputError(unreadable_message(failures, len(resolved)), UNREADABLE_HINT)
    return [r for r in results if not isinstance(r, str)]


def network_input(images: np.ndarray, device: Optional[torch.device] = None) -> torch.Tensor:
    """uint8 [N,h,w,3] → float32 [N,3,h,w] in [-1,1] on `device`, exactly ``Normalize(0.5, 0.5)(ToTensor(img))``.

    The bytes travel to the device and are converted there, once: a quarter of the float32 copy.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(255)
    return (x - 0.5) / 0.5


def collect_photo_paths(arguments: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders to their image files (sorted by name, not recursive); files stay as given."""
    out: list[Path] = []
    for arg in arguments:
        path = Path(arg)
        if path.is_dir():
            out.extend(folder_photos(path))
        else:
            out.append(path)
    return out
