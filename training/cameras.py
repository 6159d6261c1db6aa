"""Cameras for synthetic captures: pinhole intrinsics and cam2world poses inside a room.

Conventions (those of the engine, DESIGN.md): OpenCV camera axes (x right, y down, z forward);
``cam2world`` is a [V,4,4] rigid transform; intrinsics are in pixels, with pixel (i, j) at image
coordinate (j, i) — integer indices, the convention of the official camera recovery
(``mvdust3r_blender/engine/cameras.py``: PnP on integer indices with the principal point at
(W/2, H/2)). Rendering in any other convention would teach the network pointmaps that the
recovery reads as cameras off by half a pixel.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .scenes import CAMERA_RING, Scene

FOV_RANGE_DEG = (50.0, 80.0)  # horizontal field of view of phone / compact cameras, wide end
# How far around the room a capture walks. A scan of a corner or a prop, where neighbouring photos
# overlap. (Walks of 60-300 degrees were tried first: a 6 M-parameter network trained from scratch
# for an hour on 2 CPU cores stayed on the "same mean room for every view" plateau, no better than
# the trivial baseline on cameras.)
ARC_RANGE_DEG = (20.0, 100.0)


def pixel_grid(height: int, width: int) -> tuple[Tensor, Tensor]:
    """Image coordinates (u, v), each float32 [H,W], of every pixel: pixel (i, j) is at (j, i)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    return u, v


def centre_convention(intrinsics: Tensor) -> Tensor:
    """The same camera for code that puts pixel (i, j) at (j + 0.5, i + 0.5) (gsplat, OpenGL)."""
    out = intrinsics.clone()
    out[..., :2, 2] += 0.5
    return out


def sample_intrinsics(gen: torch.Generator, n_views: int, height: int, width: int,
                      fov_range_deg: tuple[float, float] = FOV_RANGE_DEG) -> Tensor:
    """[V,3,3] float32: one shared horizontal FOV per capture (one phone), square pixels,
    principal point within 2 % of the image centre."""
    fov = math.radians(fov_range_deg[0]) + (math.radians(fov_range_deg[1]) - math.radians(fov_range_deg[0])) \
        * float(torch.rand((), generator=gen))
    focal = width / (2 * math.tan(fov / 2))
    pp = torch.tensor([width / 2, height / 2]) * (1 + 0.04 * (torch.rand(n_views, 2, generator=gen) - 0.5))
    K = torch.zeros(n_views, 3, 3)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, :2, 2] = pp
    K[:, 2, 2] = 1
    return K


def look_at(position: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """cam2world [V,4,4] of cameras at ``position`` [V,3] whose optical axis (+z) points at ``target``
    [V,3], with image-down (+y) towards world −Z (no roll)."""
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4).repeat(position.shape[0], 1, 1)
    pose[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    pose[:, :3, 3] = position
    return pose


def sample_trajectory(gen: torch.Generator, scene: Scene, n_views: int,
                      arc_range_deg: tuple[float, float] = ARC_RANGE_DEG) -> Tensor:
    """cam2world [V,4,4]: an arc of cameras around the room centre, looking at the props.

    The arc spans `arc_range_deg` (a walk around part of the room), each camera at 60–85 % of
    the way to the walls (outside every prop), 0.8–2.0 m high, aiming at the centre with ±0.25 m of
    jitter, so every pair of views shares the central props while baselines vary widely.
    """
    half = (scene.room_max - scene.room_min)[:2] / 2
    mid = (scene.room_min + scene.room_max)[:2] / 2
    start = 2 * math.pi * float(torch.rand((), generator=gen))
    low, high = arc_range_deg
    span = math.radians(low + (high - low) * float(torch.rand((), generator=gen)))
    steps = torch.linspace(0, 1, n_views) if n_views > 1 else torch.zeros(1)
    theta = start + span * steps + 0.15 * (torch.rand(n_views, generator=gen) - 0.5)
    ring = CAMERA_RING[0] + (CAMERA_RING[1] - CAMERA_RING[0]) * torch.rand(n_views, generator=gen)
    xy = mid + torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1) * ring[:, None] * half
    top = min(2.0, float(scene.room_max[2]) - 0.3)
    z = 0.8 + (top - 0.8) * torch.rand(n_views, 1, generator=gen)
    position = torch.cat([xy, z], dim=-1)
    target = scene.centre + 0.5 * (torch.rand(n_views, 3, generator=gen) - 0.5)
    return look_at(position, target)
