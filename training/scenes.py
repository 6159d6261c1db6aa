"""Procedural scenes: a room box with textured walls and props on the floor, or a turntable (a cluster
of props on open ground, walls far away), lit by one or two sun-like lights.

A scene is plain tensors (world frame: metres, Z up, floor at z = 0) so the renderer can intersect
every ray with every primitive in one batched pass. Everything is drawn from a single integer seed
on the CPU (the same scene on any machine), then moved to the rendering device with
:meth:`Scene.to`. Textures are *solid* (evaluated at the 3-D hit point), which keeps a surface's
look identical from every viewpoint — the multi-view consistency the network has to learn from.
Which layouts, textures and lights are drawn is the :class:`~training.world.World`'s choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any, TypeVar

import torch
from torch import Tensor

from .world import ROOMS_V1, World


class Texture(IntEnum):
    """Kinds of procedural surface pattern (``Materials.kind``)."""

    SOLID = 0
    CHECKER = 1
    STRIPES = 2
    NOISE = 3
    GRADIENT = 4
    DOTS = 5       # round spots on a cubic lattice
    RINGS = 6      # concentric shells around a line (wood grain, turned objects)


_D = TypeVar("_D")


def to_device(data: _D, device: torch.device | str) -> _D:
    """A frozen dataclass with every tensor field (nested dataclasses too) moved to ``device``."""
    changes: dict[str, Any] = {}
    for f in fields(data):  # type: ignore[arg-type]
        value = getattr(data, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = value.to(device)
        elif hasattr(value, "__dataclass_fields__"):
            changes[f.name] = to_device(value, device)
    return replace(data, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class Materials:
    """Surface looks, indexed by each primitive's ``material``; colours are linear RGB in [0, 1]."""

    kind: Tensor        # int64 [M], a Texture
    colour_a: Tensor    # float32 [M,3]
    colour_b: Tensor    # float32 [M,3]
    frequency: Tensor   # float32 [M], pattern cycles per metre
    direction: Tensor   # float32 [M,3], unit; stripes and gradients vary along it
    offset: Tensor      # float32 [M,3], texture-space shift (keeps pattern edges off the room planes)


@dataclass(frozen=True)
class Planes:
    """Rectangles on planes ``normal·x = offset``: the room's floor, walls and (optional) ceiling.
    A plane exists only inside its axis-aligned box [lo, hi] (±inf: unbounded along that axis):
    walls and ceiling end at the room's edges, the ground of an open room reaches further out."""

    normal: Tensor      # float32 [P,3], unit, pointing into the room
    offset: Tensor      # float32 [P]
    material: Tensor    # int64 [P]
    lo: Tensor          # float32 [P,3]
    hi: Tensor          # float32 [P,3]


@dataclass(frozen=True)
class Boxes:
    """Oriented boxes: ``world = centre + rotation @ local`` with ``|local| <= half_size`` per axis."""

    centre: Tensor      # float32 [N,3]
    half_size: Tensor   # float32 [N,3]
    rotation: Tensor    # float32 [N,3,3], local → world
    material: Tensor    # int64 [N]


@dataclass(frozen=True)
class Spheres:
    centre: Tensor      # float32 [N,3]
    radius: Tensor      # float32 [N]
    material: Tensor    # int64 [N]


@dataclass(frozen=True)
class Cylinders:
    """Capped cylinders with a vertical (world Z) axis through ``centre``."""

    centre: Tensor      # float32 [N,3]
    radius: Tensor      # float32 [N]
    half_height: Tensor  # float32 [N]
    material: Tensor    # int64 [N]


@dataclass(frozen=True)
class Light:
    """Lambert lighting by L directional lights: ``albedo · ((ambient + (1 − ambient)·max(0, n·d₀))·c₀
    + (1 − ambient)·Σₗ₌₁ max(0, n·dₗ)·cₗ)`` (light 0 also sets the ambient colour)."""

    direction: Tensor   # float32 [L,3] (or [3]: one light), unit, from the surface towards the light
    ambient: float
    colour: Tensor      # float32 [L,3] (or [3])


@dataclass(frozen=True)
class Scene:
    """One room or turntable. ``room_min``/``room_max`` bound the interior (cameras live inside);
    every prop lies within ``subject_radius`` metres (horizontally) of :attr:`centre`."""

    room_min: Tensor    # float32 [3]
    room_max: Tensor    # float32 [3]
    planes: Planes
    boxes: Boxes
    spheres: Spheres
    cylinders: Cylinders
    materials: Materials
    light: Light
    sky_colour: Tensor  # float32 [3], seen through an open ceiling (those pixels are invalid)
    layout: str = "room"          # "room" or "turntable"
    subject_radius: float = 0.0   # metres: the props' horizontal reach from the centre

    @property
    def centre(self) -> Tensor:
        """Where cameras aim: the middle of the floor area at prop height."""
        mid = (self.room_min + self.room_max) / 2
        return torch.stack([mid[0], mid[1], mid.new_tensor(0.5)])

    def to(self, device: torch.device | str) -> "Scene":
        """The same scene with its tensors on ``device`` (scenes are drawn on the CPU)."""
        return to_device(self, device)


PROP_REGION = 0.35   # prop centres lie within this fraction of the room's half extents
PROP_RADIUS = 0.2    # prop footprint radius, as a fraction of the smaller half extent
CAMERA_RING = (0.6, 0.85)  # camera distance from the centre, fraction of the half extents
GROUND_MARGIN = 8.0  # metres the ground reaches beyond the walls (seen through an open room's missing wall)
TURNTABLE_REGION = 0.6  # metres: turntable prop centres lie within this square half-width of the centre


def _uniform(gen: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _random_materials(gen: torch.Generator, count: int, textures: int) -> Materials:
    kind = torch.randint(0, textures, (count,), generator=gen)
    colour_a = _uniform(gen, 0.05, 0.95, count, 3)
    # the second colour contrasts with the first so patterns are visible (texture = matching cues)
    colour_b = (colour_a + _uniform(gen, 0.3, 0.7, count, 3)) % 1.0
    frequency = torch.exp(_uniform(gen, math.log(0.8), math.log(6.0), count))
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=gen), dim=-1)
    offset = _uniform(gen, 0.0, 10.0, count, 3)
    return Materials(kind, colour_a, colour_b, frequency, direction, offset)


def _yaw(angle: Tensor) -> Tensor:
    """Rotations about world Z, [N] radians → [N,3,3]."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def random_scene(seed: int, world: World = ROOMS_V1) -> Scene:
    """A room 3–8 m wide, 2.4–3.5 m high, with 3–9 props (boxes, spheres, cylinders) near its centre;
    or (a ``world.turntable_share`` of the scenes) a turntable: 3–9 props within
    ``TURNTABLE_REGION`` of the centre of a 10–16 m room, mostly open to the sky.

    Room props keep clear of the camera ring (see ``PROP_REGION``, ``PROP_RADIUS``, ``CAMERA_RING``), so
    a camera placed by :mod:`training.cameras` is never inside an object. A third of the rooms
    (two thirds of the turntables) are open (no ceiling, one wall missing): rays into the sky give
    invalid pixels, as real captures have.
    """
    gen = torch.Generator().manual_seed(int(seed))
    turntable = world.turntable_share > 0 and bool(torch.rand((), generator=gen) < world.turntable_share)
    lo_xy, hi_xy, lo_z, hi_z = (10.0, 16.0, 3.0, 5.0) if turntable else (3.0, 8.0, 2.4, 3.5)
    size = torch.stack([_uniform(gen, lo_xy, hi_xy), _uniform(gen, lo_xy, hi_xy), _uniform(gen, lo_z, hi_z)]).reshape(3)
    room_min = torch.stack([-size[0] / 2, -size[1] / 2, size.new_tensor(0.0)])
    room_max = room_min + size
    half = size[:2] / 2
    open_ceiling = bool(torch.rand((), generator=gen) < (2 / 3 if turntable else 1 / 3))

    n_box, n_sphere, n_cyl = (int(v) for v in torch.randint(1, 4, (3,), generator=gen))
    n_props = n_box + n_sphere + n_cyl
    if turntable:   # a cluster of objects, each 0.1-0.45 m across its footprint
        centres_xy = (torch.rand(n_props, 2, generator=gen) * 2 - 1) * TURNTABLE_REGION
        radius = _uniform(gen, 0.1, 0.45, n_props)
    else:
        footprint = PROP_RADIUS * float(half.min())
        centres_xy = (torch.rand(n_props, 2, generator=gen) * 2 - 1) * PROP_REGION * half
        radius = _uniform(gen, 0.35, 1.0, n_props) * footprint
    subject_radius = float((centres_xy.norm(dim=-1) + radius).max())
    # planes: floor, 4 walls, ceiling — normals point inwards. An open room (a terrace) has no
    # ceiling and one wall fewer, so views across the open side see sky above the horizon.
    missing_wall = 1 + int(torch.randint(0, 4, (1,), generator=gen))
    keep = [i for i in range(6) if not open_ceiling or i not in (missing_wall, 5)]
    n_planes = len(keep)
    materials = _random_materials(gen, n_planes + n_props, world.textures)
    mat_ids = torch.arange(n_planes + n_props)
    normal = torch.tensor([[0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1]],
                          dtype=torch.float32)[keep]
    offset = torch.stack([room_min[2], room_min[0], -room_max[0], room_min[1], -room_max[1], -room_max[2]])
    lo, hi = room_min.repeat(n_planes, 1), room_max.repeat(n_planes, 1)
    lo[0, :2] -= GROUND_MARGIN                     # the ground (plane 0) extends beyond the walls
    hi[0, :2] += GROUND_MARGIN
    planes = Planes(normal, offset[keep], mat_ids[:n_planes], lo, hi)

    sl_box = slice(0, n_box)
    sl_sph = slice(n_box, n_box + n_sphere)
    sl_cyl = slice(n_box + n_sphere, n_props)
    # boxes: footprint inside the circle of `radius` (half diagonal <= radius), resting on the floor
    aspect = _uniform(gen, 0.4, 1.0, n_box)
    hx = radius[sl_box] / torch.sqrt(1 + aspect ** 2)
    box_half = torch.stack([hx, hx * aspect, _uniform(gen, 0.1, 0.7, n_box)], dim=-1)
    lift = torch.where(torch.rand(n_box, generator=gen) < 0.2, _uniform(gen, 0.2, 0.8, n_box), torch.zeros(n_box))
    boxes = Boxes(torch.cat([centres_xy[sl_box], (box_half[:, 2] + lift)[:, None]], dim=-1), box_half,
                  _yaw(_uniform(gen, 0.0, math.pi, n_box)), mat_ids[n_planes:][sl_box])
    # spheres: on the floor or floating (the network must not assume everything rests on z = 0)
    sph_r = radius[sl_sph]
    sph_z = sph_r + torch.where(torch.rand(n_sphere, generator=gen) < 0.3, _uniform(gen, 0.2, 1.0, n_sphere),
                                torch.zeros(n_sphere))
    spheres = Spheres(torch.cat([centres_xy[sl_sph], sph_z[:, None]], dim=-1), sph_r, mat_ids[n_planes:][sl_sph])
    cyl_h = _uniform(gen, 0.15, 0.9, n_cyl)
    cylinders = Cylinders(torch.cat([centres_xy[sl_cyl], cyl_h[:, None]], dim=-1), radius[sl_cyl], cyl_h,
                          mat_ids[n_planes:][sl_cyl])

    elevation = _uniform(gen, 0.3, 1.3, 1)
    azimuth = _uniform(gen, 0.0, 2 * math.pi, 1)
    direction = torch.cat([torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth),
                           torch.sin(elevation)])[None]
    ambient = float(_uniform(gen, 0.25, 0.6))
    colour = (1.0 - 0.25 * torch.rand(3, generator=gen))[None]
    sky = torch.tensor([0.55, 0.7, 0.95]) * _uniform(gen, 0.8, 1.0)
    if world.max_lights > 1 and bool(torch.rand((), generator=gen) < 0.5):
        # a second, dimmer light from anywhere above the horizon, warm or cool (a window, a lamp)
        elevation, azimuth = _uniform(gen, 0.1, 1.4, 1), _uniform(gen, 0.0, 2 * math.pi, 1)
        second = torch.cat([torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth),
                            torch.sin(elevation)])
        tint = torch.tensor([1.0, 0.85, 0.6]) if bool(torch.rand((), generator=gen) < 0.5) \
            else torch.tensor([0.65, 0.8, 1.0])
        direction = torch.stack([direction[0], second])
        colour = torch.cat([colour, (tint * _uniform(gen, 0.3, 0.7))[None]])
    light = Light(direction, ambient, colour)
    layout = "turntable" if turntable else "room"
    return Scene(room_min, room_max, planes, boxes, spheres, cylinders, materials, light, sky, layout, subject_radius)
