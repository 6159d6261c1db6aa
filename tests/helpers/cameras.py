"""Cameras for made-up scenes (numpy only, so Blender's Python can use it too)."""
from __future__ import annotations

import numpy as np

Z_UP_WORLD = np.array([0.0, 0.0, -1.0])
"""`look_at`'s `up` for an upright picture in a Z-up world (Blender's): image y runs down the picture."""


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, -1.0, 0.0]),
            roll: float = 0.0) -> np.ndarray:
    """OpenCV cam2world [4,4] for a camera at `eye` looking at `target`, its image's x axis along
    ``up × forward``, so image y (OpenCV's down the picture) leans toward `up`: the default toward
    world −y, :data:`Z_UP_WORLD` toward −Z (upright in a Z-up world); then turned by `roll` radians
    about its axis."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        x, y = c * x + s * y, -s * x + c * y
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w
