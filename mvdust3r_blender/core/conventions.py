"""Bundle conventions → Blender conventions, in one place (numpy only, never bpy).

The bundle speaks OpenCV: world = the camera frame of the first reference view (x right, y down,
z forward), cameras as OpenCV camera-to-world matrices, intrinsics K in original-photo pixels (the
photo spans [0,W]×[0,H]), colours as sRGB bytes. Blender is Z-up, its cameras look down −Z with +Y
up, its cameras are lens/sensor/shift plus a scene-level resolution and pixel aspect, and its colour
attributes are linear. Every such change is a function here, so the importers only move arrays into
Blender and a test can check each change by projecting through Blender's own camera model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from .rotations import quaternion_from_matrix, quaternion_multiply

Axes = Literal["Z_UP", "NETWORK"]
World = Union[Axes, np.ndarray]
"""Bundle world → Blender world: a fixed rule (:data:`Axes`) or a similarity [4,4] (rotation, translation,
uniform scale; ``core.alignment``)."""

# OpenCV camera axes → Blender camera axes (flip camera-local y and z), right-multiplied onto c2w.
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])

# "Z_UP": the first reference camera's frame (x right, y down, z forward) becomes Blender's
# (x right, y forward, z up): x_b = x, y_b = z, z_b = −y — a +90° rotation about x. A photo taken
# roughly level therefore gives an upright scene, seen from −Y like Blender's front view.
_Z_UP = np.array([
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, -1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
])


def world_axes(axes: Axes) -> np.ndarray:
    """float64 [4,4]: bundle (network) world → Blender world. ``"NETWORK"`` keeps the frame as is."""
    if axes == "Z_UP":
        return _Z_UP.copy()
    if axes == "NETWORK":
        return np.eye(4)
    raise ValueError(f"unknown axes {axes!r}: use 'Z_UP' or 'NETWORK'")


def world_matrix(world: World) -> np.ndarray:
    """float64 [4,4]: the similarity `world` stands for."""
    return np.array(world, dtype=np.float64) if isinstance(world, np.ndarray) else world_axes(world)


def _rotation_and_scale(world: World) -> tuple[np.ndarray, float]:
    m = world_matrix(world)
    scale = float(np.cbrt(np.linalg.det(m[:3, :3])))
    return m[:3, :3] / scale, scale


def transform_points(points: np.ndarray, world: World) -> np.ndarray:
    """float32 [...,3]: world points (OpenCV world) in Blender world coordinates.

    For the fixed axes float32 is exact (they only permute and negate coordinates); a similarity is
    applied in float64.
    """
    if not isinstance(world, np.ndarray):
        m = world_axes(world).astype(np.float32)
        return np.asarray(points, dtype=np.float32) @ m[:3, :3].T + m[:3, 3]
    m = world_matrix(world)
    return (np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)


def camera_matrix_world(cam2world: np.ndarray, world: World) -> np.ndarray:
    """float64 [...,4,4]: Blender camera object ``matrix_world`` from OpenCV camera-to-world matrices.

    Rigid: a similarity's scale moves the camera's position but never scales the camera object."""
    m = world_matrix(world) @ cam2world.astype(np.float64) @ OPENCV_TO_BLENDER_CAMERA
    m[..., :3, :3] /= _rotation_and_scale(world)[1]
    return m


def transform_rotations(wxyz: np.ndarray, world: World) -> np.ndarray:
    """float32 [...,4]: world-frame rotations (w,x,y,z) re-expressed in Blender world, q(R_world·R).

    Left-multiplying by the fixed q_world is linear in q: row i of `left` is q_world ⊗ e_i, so the
    product for all Gaussians is one [M,4]×[4,4] matrix product (orthogonal: norms are kept).
    """
    q_world = quaternion_from_matrix(_rotation_and_scale(world)[0])
    left = quaternion_multiply(q_world[None, :], np.eye(4)).astype(np.float32)
    return np.asarray(wxyz, dtype=np.float32) @ left


def world_scale(world: World) -> float:
    """The uniform scale of `world` (1 for the fixed axes): lengths in the bundle × this = Blender lengths."""
    return _rotation_and_scale(world)[1]


@dataclass(frozen=True)
class BlenderCamera:
    """A pinhole camera in Blender's terms: camera data fields plus the scene's render settings.

    ``sensor_fit`` is always HORIZONTAL (AUTO switches to the larger side and breaks portrait photos);
    both shifts are in units of the image width under that fit.
    """

    lens: float                 # mm
    sensor_width: float         # mm
    shift_x: float
    shift_y: float
    resolution_x: int           # the photo's W
    resolution_y: int           # the photo's H
    pixel_aspect_x: float
    pixel_aspect_y: float
    sensor_fit: Literal["HORIZONTAL"] = "HORIZONTAL"


MIN_LENS_MM = 1.0
"""Blender's smallest focal length (``Camera.lens`` hard minimum)."""


def blender_camera(intrinsics: np.ndarray, width: int, height: int, sensor_width: float = 36.0) -> BlenderCamera:
    """Blender camera parameters that reproduce K (original-photo pixels, photo [0,W]×[0,H]) exactly.

    fy/fx = pixel_aspect_x / pixel_aspect_y, so non-square pixels become a scene pixel aspect (one of
    the two is 1); the principal point becomes lens shift. Only the ratio lens / sensor width
    matters, so a field of view wider than a 1 mm lens on a 36 mm sensor gives (173.6° across a
    20000-pixel strip) gets a wider sensor instead of a clamped lens.
    """
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    if fx <= 0 or fy <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"invalid camera: fx={fx}, fy={fy}, photo {width}x{height} (all must be > 0)")
    pax, pay = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
    ycor = pay / pax  # = fx/fy
    lens = fx * sensor_width / width
    if lens < MIN_LENS_MM:  # Blender clamps the lens at 1 mm: a wider sensor keeps a wider field of view exact
        sensor_width, lens = MIN_LENS_MM * width / fx, MIN_LENS_MM
    return BlenderCamera(
        lens=lens, sensor_width=sensor_width,
        shift_x=(width / 2 - cx) / width, shift_y=(cy - height / 2) * ycor / width,
        resolution_x=int(width), resolution_y=int(height), pixel_aspect_x=pax, pixel_aspect_y=pay,
    )


def image_plane_corners(intrinsics: np.ndarray, width: int, height: int, depth: float) -> np.ndarray:
    """float32 [4,3]: the photo's corners at `depth` in Blender camera-local coordinates.

    Order: bottom-left, bottom-right, top-right, top-left (UVs (0,0),(1,0),(1,1),(0,1)); they project
    exactly onto the photo's corners (0,H),(W,H),(W,0),(0,0).
    """
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    x_left, x_right = -cx * depth / fx, (width - cx) * depth / fx
    y_top, y_bottom = cy * depth / fy, -(height - cy) * depth / fy
    return np.array([
        [x_left, y_bottom, -depth], [x_right, y_bottom, -depth],
        [x_right, y_top, -depth], [x_left, y_top, -depth],
    ], dtype=np.float32)


def point_depths(pts3d: np.ndarray, cam2world: np.ndarray, max_samples: int = 100_000) -> np.ndarray:
    """float32 [N,m]: depth of (an even subsample of) each view's points in that view's own camera.

    Statistics over the scene (a median) need no more than ~`max_samples` points in all.
    """
    n = pts3d.shape[0]
    points = pts3d.reshape(n, -1, 3)
    stride = max(1, points.shape[1] * n // max_samples)
    world_to_cam = np.linalg.inv(cam2world.astype(np.float64)).astype(np.float32)
    rows = world_to_cam[:, 2, :]  # [N,4]: the camera-z row
    return np.einsum("nmk,nk->nm", points[:, ::stride], rows[:, :3]) + rows[:, 3:4]


def grid_point_spacing(pts3d: np.ndarray, intrinsics: np.ndarray, cam2world: np.ndarray,
                       crop_box: np.ndarray) -> float:
    """Median distance (world units) between neighbouring grid points on the surface they sample.

    A grid pixel covers (x1−x0)/w photo pixels, which at depth z spans z·(x1−x0)/(w·fx) world units.
    Half of this is a point radius at which neighbours just touch, so the cloud looks closed at any
    scene scale (network units are arbitrary) without blurring detail.
    """
    if pts3d.shape[0] == 0:
        return 1.0
    w = pts3d.shape[2]
    footprint = (crop_box[:, 2] - crop_box[:, 0]) / w / intrinsics[:, 0, 0]  # world units per unit depth
    return float(np.median(np.abs(point_depths(pts3d, cam2world)) * footprint[:, None]))
