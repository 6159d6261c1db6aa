"""COLMAP text model, laid out as the input folder COLMAP-based 3DGS trainers expect::

    <folder>/sparse/0/cameras.txt   one PINHOLE camera per view: original photo W H, fx fy cx cy
    <folder>/sparse/0/images.txt    world-to-camera qw qx qy qz tx ty tz, camera id, image name,
                                    then the view's 2D observations (x y point3D_id)
    <folder>/sparse/0/points3D.txt  id, xyz, rgb, reprojection error, track (image id, 2D index)
    <folder>/images/                copies of the photos under the names images.txt uses (upright)

Pixel convention: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), i.e. the photo spans
[0,W]x[0,H] continuously, which is the bundle's convention, so intrinsics and observations are
written unchanged. Every 3D point is one network pixel, so its track is that single observation:
its pixel centre on the photo (from ``crop_box``) in the view it was predicted from.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder
from ..bundle import Bundle
from ..photos import exif_orientation
from ..rotations import quaternion_from_matrix
from .errors import ExportError

MAX_POINTS = 200_000
"""Cap on points3D taken from the kept points (a uniform subsample; see :func:`_select`): plenty to
initialise a 3DGS trainer, and it keeps the text model small and quick to write and parse."""


def image_names(photo_paths: Sequence[str]) -> list[str]:
    """One file name per view for images.txt and images/: the photo's file name with whitespace
    replaced by '_' (COLMAP splits lines on spaces), made unique ignoring case (so the copies
    cannot collide on case-insensitive disks) by appending _2, _3, ... to the stem."""
    names: list[str] = []
    taken: set[str] = set()
    for path in photo_paths:
        name = re.sub(r"\s", "_", Path(path).name) or "image"
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, k = name, 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{stem}_{k}{suffix}"
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def require_photos(bundle: Bundle) -> None:
    """Raise :class:`ExportError` unless every photo is a file (the export copies them to images/)."""
    missing = [p for p in bundle.photo_paths if not Path(p).is_file()]
    if missing:
        raise ExportError(f"the 'colmap' export copies the photos, but {len(missing)} cannot be found "
                          f"(first: {missing[0]})", "put the photos back where they were reconstructed from")


def copy_photo(source: str, target: Path) -> None:
    """Copy a photo to `target`, upright: one carrying an EXIF orientation other than 1 is written
    with its pixels turned and the tag dropped, because the bundle's photo size and intrinsics
    describe the photo as displayed, while trainers read pixels as stored. Anything else, and every
    photo when Pillow is missing (Blender's own Python), is copied byte for byte."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        shutil.copyfile(source, target)
        return
    try:
        with Image.open(source) as img:
            if exif_orientation(img) != 1:
                fmt = "JPEG" if img.format == "MPO" else img.format
                upright = ImageOps.exif_transpose(img)
                upright.save(target, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
                return
    except (UnidentifiedImageError, ValueError, TypeError, SyntaxError):
        pass  # not an image Pillow reads: keep its bytes
    shutil.copyfile(source, target)


def _rows(fmt: str, *columns: np.ndarray) -> str:
    """Format equal-length columns row by row with the %-format `fmt` (one line per row)."""
    return "".join(fmt % row for row in zip(*(c.tolist() for c in columns)))


def _select(conf: np.ndarray, keep: np.ndarray, max_points: int) -> np.ndarray:
    """Flat indices (ascending) of the points3D: the kept points, uniformly thinned to at most
    `max_points`, plus, for a view left with none, its most confident point (kept if it has any).
    So no image has an empty 2D-points line: some readers of the text format (the pycolmap
    ``SceneManager`` family) stop at the first blank line."""
    idx = np.flatnonzero(keep)
    if len(idx) > max_points:
        idx = idx[np.unique(np.linspace(0, len(idx) - 1, max_points).round().astype(np.int64))]
    n = conf.shape[0]
    per_view = conf.reshape(n, -1).astype(np.float64)
    empty = np.setdiff1d(np.arange(n), idx // per_view.shape[1])
    if len(empty):
        score = per_view[empty] + keep.reshape(n, -1)[empty] * (per_view.max() + 1.0)
        idx = np.union1d(idx, empty * per_view.shape[1] + np.argmax(score, axis=1))
    return idx


def write_colmap(bundle: Bundle, keep: np.ndarray, folder: Path, *, max_points: int = MAX_POINTS) -> Path:
    """Write the COLMAP text model of the kept points (`keep`: bool [N,h,w]) and copies of the photos
    into `folder`, atomically."""
    require_photos(bundle)
    n = bundle.num_views
    h, w = bundle.grid_size
    names = image_names(bundle.photo_paths)
    cam2world = bundle.cam2world.astype(np.float64)
    rot_w2c = np.transpose(cam2world[:, :3, :3], (0, 2, 1))
    t_w2c = -np.einsum("nij,nj->ni", rot_w2c, cam2world[:, :3, 3])
    qvec = quaternion_from_matrix(rot_w2c)
    K = bundle.intrinsics.astype(np.float64)

    # Observations: one per selected point, grouped by view (indices ascend, views are outermost).
    idx = _select(bundle.conf, keep, max_points)
    view, pix = idx // (h * w), idx % (h * w)
    row, col = pix // w, pix % w
    box = bundle.crop_box.astype(np.float64)[view]
    xy = np.stack([box[:, 0] + (col + 0.5) * (box[:, 2] - box[:, 0]) / w,
                   box[:, 1] + (row + 0.5) * (box[:, 3] - box[:, 1]) / h], -1)
    xyz = bundle.pts3d.reshape(-1, 3)[idx].astype(np.float64)
    cam = np.einsum("mij,mj->mi", rot_w2c[view], xyz) + t_w2c[view]
    proj = np.einsum("mij,mj->mi", K[view], cam)
    in_front = cam[:, 2] > 0
    error = np.full(len(idx), -1.0)  # COLMAP's "not computed", for points behind their own camera
    error[in_front] = np.linalg.norm(proj[in_front, :2] / proj[in_front, 2:] - xy[in_front], axis=-1)
    point_ids = np.arange(1, len(idx) + 1)
    first_of_view = np.searchsorted(view, np.arange(n + 1))
    point2d_idx = np.arange(len(idx)) - first_of_view[view]
    rgb = bundle.images.reshape(-1, 3)[idx]

    cameras = ["# Camera list with one line of data per camera:\n",
               "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n",
               f"# Number of cameras: {n}\n"]
    images = ["# Image list with two lines of data per image:\n",
              "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n",
              "#   POINTS2D[] as (X, Y, POINT3D_ID)\n",
              f"# Number of images: {n}, mean observations per image: {len(idx) / max(n, 1):.17g}\n"]
    for v in range(n):
        width, height = (int(s) for s in bundle.photo_size[v])
        fx, fy, cx, cy = K[v, 0, 0], K[v, 1, 1], K[v, 0, 2], K[v, 1, 2]
        cameras.append(f"{v + 1} PINHOLE {width} {height} {fx:.17g} {fy:.17g} {cx:.17g} {cy:.17g}\n")
        qw, qx, qy, qz = qvec[v]
        tx, ty, tz = t_w2c[v]
        images.append(f"{v + 1} {qw:.17g} {qx:.17g} {qy:.17g} {qz:.17g} {tx:.17g} {ty:.17g} {tz:.17g} "
                      f"{v + 1} {names[v]}\n")
        s = slice(first_of_view[v], first_of_view[v + 1])
        images.append(_rows("%.17g %.17g %d ", xy[s, 0], xy[s, 1], point_ids[s]).rstrip(" ") + "\n")
    points = ["# 3D point list with one line of data per point:\n",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n",
              f"# Number of points: {len(idx)}, mean track length: 1\n",
              _rows("%d %.9g %.9g %.9g %d %d %d %.9g %d %d\n", point_ids, xyz[:, 0], xyz[:, 1], xyz[:, 2],
                    rgb[:, 0], rgb[:, 1], rgb[:, 2], error, view + 1, point2d_idx)]

    with atomic_folder(folder) as tmp:
        sparse = tmp / "sparse" / "0"
        sparse.mkdir(parents=True)
        for filename, lines in (("cameras.txt", cameras), ("images.txt", images), ("points3D.txt", points)):
            # surrogateescape: a photo name that is not UTF-8 is written as its own bytes, the name
            # its copy in images/ has on disk (COLMAP compares names as bytes)
            (sparse / filename).write_text("".join(lines), encoding="utf-8", errors="surrogateescape", newline="\n")
        (tmp / "images").mkdir()
        for path, name in zip(bundle.photo_paths, names):
            copy_photo(path, tmp / "images" / name)
    return folder
