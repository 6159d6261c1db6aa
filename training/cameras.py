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
from .world import ROOMS_V1, World

EYE_HEIGHT = (1.2, 1.8)        # metres: where a pan's camera is held
PAN_CLEARANCE = 0.4            # metres a pan's spot keeps from every prop's footprint
ORBIT_DISTANCE = (0.8, 2.5)    # metres an orbit's cameras keep from the turntable's props
ORBIT_HEIGHT = (0.3, 2.2)      # metres: an orbit's camera height (low, level, looking down)


def pixel_grid(height: int, width: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Image coordinates (u, v), each float32 [H,W], of every pixel: pixel (i, j) is at (j, i)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                          torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    return u, v


def centre_convention(intrinsics: Tensor) -> Tensor:
    """The same camera for code that puts pixel (i, j) at (j + 0.5, i + 0.5) (gsplat, OpenGL)."""
    out = intrinsics.clone()
    out[..., :2, 2] += 0.5
    return out


def sample_photo(gen: torch.Generator, world: World = ROOMS_V1) -> tuple[float, float]:
    """(horizontal field of view in radians, aspect ratio W/H) of one capture's photos (one phone)."""
    low, high = (math.radians(v) for v in world.fov_deg)
    fov = low + (high - low) * float(torch.rand((), generator=gen))
    if len(world.aspects) == 1:
        return fov, world.aspects[0]
    return fov, world.aspects[int(torch.randint(len(world.aspects), (1,), generator=gen))]


def crop_focal(fov: float, aspect: float, height: int, width: int) -> float:
    """Focal length in pixels of the h×w network input cut from a photo of aspect ``aspect`` whose
    horizontal field of view is ``fov`` (radians): the add-on's cover-then-centre-crop keeps the
    photo's full width only when the photo is no wider than the input (engine/images.py)."""
    kept = min(1.0, (width / height) / aspect)      # fraction of the photo's width inside the crop
    return width / (2 * math.tan(fov / 2) * kept)


def sample_intrinsics(gen: torch.Generator, n_views: int, height: int, width: int,
                      world: World = ROOMS_V1) -> Tensor:
    """[V,3,3] float32: one shared field of view and photo shape per capture (one phone, see
    :func:`sample_photo` and :func:`crop_focal`), square pixels, principal point within 2 % of the
    image centre."""
    fov, aspect = sample_photo(gen, world)
    focal = crop_focal(fov, aspect, height, width)
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


def _span(low_deg: float, high_deg: float, n_views: int, gen: torch.Generator) -> Tensor:
    """Angles [V] (radians, from 0) of ``n_views`` evenly spaced along an arc drawn uniformly from
    [low, high] degrees; an arc near 360° closes into a ring without a repeated view."""
    span = math.radians(low_deg + (high_deg - low_deg) * float(torch.rand((), generator=gen)))
    if n_views == 1:
        return torch.zeros(1)
    span = min(span, 2 * math.pi * (n_views - 1) / n_views)
    return span * torch.linspace(0, 1, n_views)


def sample_trajectory(gen: torch.Generator, scene: Scene, n_views: int, world: World = ROOMS_V1) -> Tensor:
    """cam2world [V,4,4] of one capture of ``scene``: an orbit of a turntable; in a room, a pan
    (a ``world.pan_share`` of the captures) or a walk."""
    if scene.layout == "turntable":
        return orbit(gen, scene, n_views)
    if world.pan_share > 0 and bool(torch.rand((), generator=gen) < world.pan_share):
        return pan(gen, scene, n_views, world.pan_deg)
    return walk(gen, scene, n_views, world.walk_deg)


def walk(gen: torch.Generator, scene: Scene, n_views: int, arc_deg: tuple[float, float]) -> Tensor:
    """cam2world [V,4,4]: an arc of cameras around the room centre, looking at the props.

    The arc spans ``arc_deg`` (a walk around part of the room, or all of it), each camera at 60–85 % of
    the way to the walls (outside every prop), 0.8–2.0 m high, aiming at the centre with ±0.25 m of
    jitter, so every pair of views shares the central props while baselines vary widely.
    """
    half = (scene.room_max - scene.room_min)[:2] / 2
    mid = (scene.room_min + scene.room_max)[:2] / 2
    start = 2 * math.pi * float(torch.rand((), generator=gen))
    theta = start + _span(*arc_deg, n_views, gen) + 0.15 * (torch.rand(n_views, generator=gen) - 0.5)
    ring = CAMERA_RING[0] + (CAMERA_RING[1] - CAMERA_RING[0]) * torch.rand(n_views, generator=gen)
    xy = mid + torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1) * ring[:, None] * half
    top = min(2.0, float(scene.room_max[2]) - 0.3)
    z = 0.8 + (top - 0.8) * torch.rand(n_views, 1, generator=gen)
    position = torch.cat([xy, z], dim=-1)
    target = scene.centre + 0.5 * (torch.rand(n_views, 3, generator=gen) - 0.5)
    return look_at(position, target)


def _prop_footprints(scene: Scene) -> tuple[Tensor, Tensor]:
    """Centres [N,2] and radii [N] of circles that hold every prop's footprint."""
    centres = torch.cat([scene.boxes.centre[:, :2], scene.spheres.centre[:, :2], scene.cylinders.centre[:, :2]])
    radii = torch.cat([scene.boxes.half_size[:, :2].norm(dim=-1), scene.spheres.radius, scene.cylinders.radius])
    return centres, radii


def pan(gen: torch.Generator, scene: Scene, n_views: int, yaw_deg: tuple[float, float]) -> Tensor:
    """cam2world [V,4,4]: a person on one spot of the room turns round through ``yaw_deg``, holding
    the camera at eye height (±10 cm of hand shake), pitched between 20° down and 5° up.

    The spot is the one nearest the room's middle, out of 16 drawn between the middle and the
    camera ring, that keeps ``PAN_CLEARANCE`` from every prop (the walls stay metres away, as in a
    real pan); the camera ring, which is clear of the props, when none does."""
    half = (scene.room_max - scene.room_min)[:2] / 2
    mid = (scene.room_min + scene.room_max)[:2] / 2
    where = 2 * math.pi * torch.rand(16, generator=gen)
    ring = CAMERA_RING[1] * torch.rand(16, generator=gen)
    ring[-1] = CAMERA_RING[0]
    spots = mid + torch.stack([torch.cos(where), torch.sin(where)], dim=-1) * ring[:, None] * half
    centres, radii = _prop_footprints(scene)
    clear = (torch.cdist(spots, centres) - radii > PAN_CLEARANCE).all(dim=-1)
    clear[-1] = True
    spot = spots[int(torch.where(clear, ring, torch.full_like(ring, math.inf)).argmin())]
    height = EYE_HEIGHT[0] + (EYE_HEIGHT[1] - EYE_HEIGHT[0]) * float(torch.rand((), generator=gen))
    height = min(height, float(scene.room_max[2]) - 0.3)
    shake = 0.2 * (torch.rand(n_views, 3, generator=gen) - 0.5)
    position = torch.cat([spot, torch.tensor([height])]) + shake
    yaw = 2 * math.pi * float(torch.rand((), generator=gen)) + _span(*yaw_deg, n_views, gen) \
        + 0.1 * (torch.rand(n_views, generator=gen) - 0.5)
    pitch = torch.deg2rad(-20 + 25 * torch.rand(n_views, generator=gen))
    forward = torch.stack([torch.cos(pitch) * torch.cos(yaw), torch.cos(pitch) * torch.sin(yaw), torch.sin(pitch)], -1)
    return look_at(position, position + forward)


def orbit(gen: torch.Generator, scene: Scene, n_views: int) -> Tensor:
    """cam2world [V,4,4]: a full ring of cameras round a turntable's props, evenly spaced (±3°),
    ``ORBIT_DISTANCE`` clear of them, one height per capture (±15 cm), aiming at the centre (±15 cm)."""
    mid = scene.centre
    start = 2 * math.pi * float(torch.rand((), generator=gen))
    jitter = math.radians(6) * (torch.rand(n_views, generator=gen) - 0.5)
    theta = start + 2 * math.pi * torch.arange(n_views) / n_views + jitter
    clear = ORBIT_DISTANCE[0] + (ORBIT_DISTANCE[1] - ORBIT_DISTANCE[0]) * float(torch.rand((), generator=gen))
    distance = scene.subject_radius + clear
    height = ORBIT_HEIGHT[0] + (ORBIT_HEIGHT[1] - ORBIT_HEIGHT[0]) * float(torch.rand((), generator=gen))
    z = height + 0.3 * (torch.rand(n_views, generator=gen) - 0.5)
    position = torch.stack([mid[0] + distance * torch.cos(theta), mid[1] + distance * torch.sin(theta), z], -1)
    target = mid + 0.3 * (torch.rand(n_views, 3, generator=gen) - 0.5)
    return look_at(position, target)
