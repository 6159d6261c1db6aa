"""The reconstruction bundle: one versioned ``.npz`` that the worker writes and Blender reads.

This is the only contract between the two processes, so it imports numpy and the standard
library alone (no torch, no bpy). ``docs/bundle.md`` documents every key; :class:`Bundle` holds
them with their shapes and conventions, :func:`write_bundle` / :func:`read_bundle` move them to
and from disk and check them on the way, so a bad file is reported by name, not half-imported.

Conventions (N views on an h×w network grid):
- world frame: the OpenCV camera frame of the first reference view (x right, y down, z forward),
  arbitrary scale (network units);
- intrinsics are in ORIGINAL-photo pixels, the photo spanning [0,W]×[0,H];
- ``crop_box`` (x0,y0,x1,y1) is the photo region the grid covers: grid pixel (i,j) has its centre
  at x0+(j+0.5)(x1−x0)/w, y0+(i+0.5)(y1−y0)/h.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from numpy.lib import format as npformat

from .atomic import atomic_file, write_failure
from .errors import UserError

FORMAT = "mvdust3r-bundle"
VERSION = 1


class BundleError(UserError):
    """A bundle file is missing, unreadable or inconsistent; the message names the file."""

    code = "bundle"


@dataclass
class Bundle:
    """One reconstructed scene. Arrays are numpy; shapes are checked by :meth:`validate`."""

    images: np.ndarray              # uint8 [N,h,w,3]   the network's input crops (RGB)
    pts3d: np.ndarray               # float32 [N,h,w,3] world points, OpenCV convention
    conf: np.ndarray                # float32 [N,h,w]   confidence, >= 1
    intrinsics: np.ndarray          # float32 [N,3,3]   original-photo pixels
    cam2world: np.ndarray           # float32 [N,4,4]   OpenCV camera -> world
    photo_size: np.ndarray          # int32 [N,2]       (W,H) of the original photo
    crop_box: np.ndarray            # float32 [N,4]     (x0,y0,x1,y1) in photo pixels
    photo_paths: list[str]          # N absolute paths, in the user's order
    gaussian_rotation: Optional[np.ndarray] = None  # float32 [N,h,w,4] unit quaternion (w,x,y,z), world frame
    gaussian_scale: Optional[np.ndarray] = None     # float32 [N,h,w,3] std-devs in world units, > 0
    gaussian_opacity: Optional[np.ndarray] = None   # float32 [N,h,w]   in (0,1)
    gaussian_rgb: Optional[np.ndarray] = None       # float32 [N,h,w,3] the head's own colour (untrained in released models)
    meta: dict[str, Any] = field(default_factory=dict)  # format version, model, timings per stage, ...

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the network grid."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def has_gaussians(self) -> bool:
        return self.gaussian_rotation is not None

    @property
    def colors(self) -> np.ndarray:
        """float32 [N,h,w,3] in [0,1]: the colour of each point/Gaussian, from the input photo."""
        return self.images.astype(np.float32) / 255.0

    def validate(self, source: str = "bundle") -> None:
        """Raise :class:`BundleError` naming `source` and the first array (field) that is malformed:
        wrong type, dtype or shape, NaN/infinite values, a value out of its range (confidence and
        Gaussian scales > 0, opacity in [0,1], unit quaternions, positive focal lengths and photo
        sizes, a non-empty crop box) or a camera matrix that cannot be inverted."""
        def fail(name: str, problem: str) -> None:
            raise BundleError(f"{source}: '{name}' {problem}")

        for name in _ARRAYS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, np.ndarray):
                fail(name, f"must be a numpy array, not {type(value).__name__}")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            fail("images", f"must be uint8 [N,h,w,3], got {self.images.dtype} {list(self.images.shape)}")
        n = self.num_views
        h, w = self.grid_size
        if n == 0 or h == 0 or w == 0:
            fail("images", f"holds no pixels ({n} views on a {h}x{w} grid): the bundle is empty")
        expected = {
            "pts3d": (n, h, w, 3), "conf": (n, h, w), "intrinsics": (n, 3, 3), "cam2world": (n, 4, 4),
            "photo_size": (n, 2), "crop_box": (n, 4),
            "gaussian_rotation": (n, h, w, 4), "gaussian_scale": (n, h, w, 3),
            "gaussian_opacity": (n, h, w), "gaussian_rgb": (n, h, w, 3),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            if value.dtype.kind not in ("iu" if name == "photo_size" else "iuf"):
                fail(name, f"has dtype {value.dtype}, expected {'integers' if name == 'photo_size' else 'numbers'}")
            if tuple(value.shape) != shape:
                fail(name, f"has shape {list(value.shape)}, expected {list(shape)} for {n} views on a {h}x{w} grid")
            if not np.all(np.isfinite(value)):
                fail(name, "holds NaN or infinite values")
        gs = [self.gaussian_rotation, self.gaussian_scale, self.gaussian_opacity]
        if any(a is None for a in gs) and any(a is not None for a in gs):
            raise BundleError(f"{source}: Gaussian arrays are partly missing (need rotation, scale and opacity together)")
        if not isinstance(self.photo_paths, list) or not all(isinstance(p, str) for p in self.photo_paths):
            fail("photo_paths", "must be a list of path strings")
        if len(self.photo_paths) != n:
            raise BundleError(f"{source}: {len(self.photo_paths)} photo paths for {n} views")
        if not isinstance(self.meta, dict):
            fail("meta", f"must be a JSON object, not {type(self.meta).__name__}")
        self._check_ranges(fail)
        check_meta(self.meta, n, fail)

    def _check_ranges(self, fail: Callable[[str, str], None]) -> None:
        """The values' ranges and the cameras' invertibility (shapes and finiteness already checked)."""
        def where(bad: np.ndarray) -> str:
            """'(view k)' of the first offending entry of a per-view array."""
            return f"(view {int(np.argwhere(bad)[0][0])})"

        positive = {"conf": "confidences", "gaussian_scale": "Gaussian scales (standard deviations)"}
        for name, what in positive.items():
            value = getattr(self, name)
            if value is not None and not np.all(value > 0):
                fail(name, f"holds {what} <= 0 {where(value <= 0)}, minimum {float(value.min()):.6g}; they must be > 0")
        if self.gaussian_opacity is not None:
            outside = (self.gaussian_opacity < 0) | (self.gaussian_opacity > 1)
            if outside.any():
                fail("gaussian_opacity", f"holds values outside [0,1] {where(outside)}")
        if self.gaussian_rotation is not None:
            off = np.abs(np.linalg.norm(self.gaussian_rotation.astype(np.float64), axis=-1) - 1.0) > 1e-3
            if off.any():
                fail("gaussian_rotation", f"holds quaternions that are not of unit length {where(off)}")
        if np.any(self.photo_size < 1):
            fail("photo_size", f"holds a photo size below 1 pixel {where(self.photo_size < 1)}")
        box = self.crop_box
        empty = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
        if empty.any():
            fail("crop_box", f"holds an empty box (x1 <= x0 or y1 <= y0) {where(empty)}")
        k = self.intrinsics.astype(np.float64)
        bad_k = (k[:, 0, 0] <= 0) | (k[:, 1, 1] <= 0) | np.any(np.abs(k[:, 2] - [0.0, 0.0, 1.0]) > 1e-6, axis=-1) \
            | np.any(np.abs(k[:, 1, :1]) > 1e-6, axis=-1)
        if bad_k.any():
            fail("intrinsics", f"is not a camera matrix [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0 {where(bad_k)}")
        pose = self.cam2world.astype(np.float64)
        singular = np.abs(np.linalg.det(pose[:, :3, :3])) < 1e-9
        bottom = np.any(np.abs(pose[:, 3] - [0.0, 0.0, 0.0, 1.0]) > 1e-5, axis=-1)
        if (singular | bottom).any():
            fail("cam2world", f"is not an invertible camera-to-world matrix (rotation part singular, or last row "
                              f"not [0,0,0,1]) {where(singular | bottom)}")


WARNING_LISTS = ("camera_warnings", "photo_warnings")
"""The ``meta`` lists of ``{"views": [user indices], "message": text}`` that an import shows."""
ORIENTATIONS = range(1, 9)


def check_meta(meta: dict[str, Any], n: int, fail: Callable[[str, str], None]) -> None:
    """The ``meta`` fields the Blender side reads, each checked for type and size before it is used
    (others are the writer's record and are never read): the warning lists (views must be whole
    numbers from 0 to N−1, the message text) and ``photo_orientation`` (N EXIF orientations, 1–8)."""
    for key in WARNING_LISTS:
        warnings = meta.get(key, [])
        if not isinstance(warnings, list):
            fail(f"meta.{key}", f"must be a list of {{views, message}} objects, not a JSON {type(warnings).__name__}")
        for k, warning in enumerate(warnings):
            if not isinstance(warning, dict) or not isinstance(warning.get("message", ""), str):
                fail(f"meta.{key}", f"entry {k} must be an object with a text 'message', found {warning!r:.80}")
            views = warning.get("views", [])
            if not isinstance(views, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n
                                                      for v in views):
                fail(f"meta.{key}", f"entry {k} has 'views' {views!r:.80}; they must be a list of view indices "
                                    f"from 0 to {n - 1}")
    orientation = meta.get("photo_orientation")
    if orientation is not None and (not isinstance(orientation, list) or len(orientation) != n or not all(
            isinstance(o, int) and not isinstance(o, bool) and o in ORIENTATIONS for o in orientation)):
        fail("meta.photo_orientation", f"must be {n} EXIF orientations (whole numbers 1 to 8), found {orientation!r:.80}")


# -- how the bundle's colours are read (both processes use these)

def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """float32: sRGB-encoded values in [0,1] → linear (Blender's colour attributes are linear)."""
    c = np.clip(np.asarray(srgb, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)


def srgb8_to_linear(srgb: np.ndarray) -> np.ndarray:
    """float32: sRGB bytes (uint8, e.g. the bundle's images) → linear, by table look-up."""
    return _SRGB8_TO_LINEAR[np.asarray(srgb, dtype=np.uint8)]


_ARRAYS = [f.name for f in fields(Bundle) if f.name not in ("photo_paths", "meta")]
_DTYPES = {"images": np.uint8, "photo_size": np.int32}
_REQUIRED = ("images", "pts3d", "conf", "intrinsics", "cam2world", "photo_size", "crop_box")


def write_bundle(bundle: Bundle, path: str | os.PathLike[str]) -> Path:
    """Validate `bundle` and write it to `path` atomically (a reader never sees half a file);
    :class:`BundleError` names the file when it cannot be written (a full disk is said so)."""
    path = Path(path)
    bundle.validate(str(path))
    meta = {**bundle.meta, "format": FORMAT, "version": VERSION}
    arrays: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        value = getattr(bundle, name)
        if value is not None:
            arrays[name] = np.ascontiguousarray(value, dtype=_DTYPES.get(name, np.float32))
    arrays["photo_paths"] = np.array([str(p) for p in bundle.photo_paths], dtype=np.str_)
    arrays["meta"] = np.array(json.dumps(meta))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as exc:  # a full disk, an unwritable folder: name the file (nothing half-written is left)
        raise BundleError(*write_failure(path, exc)) from exc
    return path


INFLATE_RATIO = 16
"""A bundle's arrays may take at most this many times its file's size (+ :data:`INFLATE_SLACK`) once
read: this add-on writes them uncompressed (ratio 1), and numpy's compressed files of point clouds
reach 2-3; a "zip bomb" (a few MB that inflate to GBs) is refused before anything is inflated."""
INFLATE_SLACK = 64 * 1024 ** 2
_ENTRIES = (*_ARRAYS, "photo_paths", "meta")
_MAX_DEFLATE_RATIO = 1032  # deflate never expands data more than this: a bound on a compressed entry's real size


def _read_entries(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """The bundle's known entries (entries it does not know are never read). Before anything is
    inflated, their sizes in the archive's directory must add up to at most `max_bytes` (a zip bomb),
    and each entry's .npy header must promise no more than the bytes it holds (9 TiB declared in a
    2 kB file): numpy would allocate the promise first."""
    data: dict[str, np.ndarray] = {}
    file_size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        known = [(name, members[name]) for name in _ENTRIES if name in members]
        total = sum(info.file_size for _, info in known)
        if total > max_bytes:
            raise BundleError(f"{path}: its arrays would take {total / 1e6:.0f} MB once unpacked, more than the "
                              f"{max_bytes / 1e6:.0f} MB a bundle of its size may",
                              "it is damaged or not a bundle this add-on wrote; nothing was unpacked")
        for name, info in known:
            if info.compress_size > file_size:
                raise BundleError(f"{path}: entry '{name}' claims {info.compress_size:,} bytes in a file of "
                                  f"{file_size:,}: the file is damaged")
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
            with archive.open(info) as f:
                version = npformat.read_magic(f)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise BundleError(f"{path}: entry '{name}' has an unknown .npy version {version}")
                shape, fortran, dtype = (npformat.read_array_header_1_0(f) if version == (1, 0)
                                         else npformat.read_array_header_2_0(f))
                if dtype.hasobject:
                    raise BundleError(f"{path}: not a reconstruction bundle (entry '{name}' holds Python objects, which "
                                      "a bundle never does and which are never loaded)")
                declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                available = min(info.file_size, info.compress_size * ratio)
                if declared > available:
                    raise BundleError(f"{path}: entry '{name}' declares a {dtype} array of shape {list(shape)} "
                                      f"({declared:,} bytes) but holds at most {available:,}: the file is damaged")
                data[name] = _read_body(f, shape, fortran, dtype)
    return data


def _read_body(f: Any, shape: tuple[int, ...], fortran: bool, dtype: np.dtype[Any]) -> np.ndarray:
    """The array data after a checked header."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise EOFError(f"the array data ends after {len(raw)} of {count * dtype.itemsize} bytes")
    array = np.frombuffer(bytearray(raw), dtype=dtype, count=count)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def read_bundle(path: str | os.PathLike[str], max_bytes: Optional[int] = None) -> Bundle:
    """Read and check a bundle; every problem becomes a :class:`BundleError` that names `path`.
    Its arrays may take at most `max_bytes` in memory (default: :data:`INFLATE_RATIO` × its size),
    checked against the archive's directory and each array's header before anything is inflated."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    hint = "import the .npz a reconstruction wrote (the panel's Save Bundle…, or a script's output=)"
    if not zipfile.is_zipfile(path):  # numpy would call it "pickled data"
        raise BundleError(f"{path}: not a reconstruction bundle (not an .npz archive: it may be damaged or "
                          "only partly copied)", hint)
    if max_bytes is None:
        max_bytes = INFLATE_RATIO * path.stat().st_size + INFLATE_SLACK
    try:
        data = _read_entries(path, max_bytes)
    except BundleError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a reconstruction bundle (the .npz archive is damaged: {exc})", hint) from exc
    if "meta" not in data:
        raise BundleError(f"{path}: not a reconstruction bundle (no 'meta' entry)")
    if data["meta"].dtype.kind != "U" or data["meta"].ndim != 0:
        raise BundleError(f"{path}: 'meta' must be one JSON text, found a {data['meta'].dtype} array")
    try:
        meta = json.loads(str(data["meta"]))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: the 'meta' entry is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: 'meta' must be a JSON object, found a JSON {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{path}: not a reconstruction bundle (format {meta.get('format')!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{path}: 'meta.version' must be a positive whole number, found {version!r}")
    if version > VERSION:
        raise BundleError(f"{path}: bundle version {version} is newer than this add-on reads "
                          f"({VERSION}); update the add-on")
    missing = [k for k in (*_REQUIRED, "photo_paths") if k not in data]
    if missing:
        raise BundleError(f"{path}: missing arrays {', '.join(missing)}")
    if data["photo_paths"].dtype.kind != "U" or data["photo_paths"].ndim != 1:
        raise BundleError(f"{path}: 'photo_paths' must be a list of path strings, found a "
                          f"{data['photo_paths'].dtype} array of shape {list(data['photo_paths'].shape)}")
    kwargs: dict[str, Any] = {}
    for name in _ARRAYS:
        if name not in data:
            continue
        value = data[name]
        wanted = _DTYPES.get(name, np.float32)
        kinds, what = {"images": ("u", "uint8"), "photo_size": ("iu", "integers")}.get(name, ("iuf", "numbers"))
        if value.dtype.kind not in kinds or (name == "images" and value.dtype != np.uint8):
            raise BundleError(f"{path}: '{name}' has dtype {value.dtype}, expected {what}")
        with np.errstate(over="ignore"):  # a float64 too large for float32 becomes inf: refused as such
            kwargs[name] = value.astype(wanted, copy=False)
    bundle = Bundle(photo_paths=[str(p) for p in data["photo_paths"].tolist()], meta=meta, **kwargs)
    bundle.validate(str(path))
    return bundle
