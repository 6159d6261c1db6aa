"""Batched ray casting of a :class:`~training.scenes.Scene`: RGB, depth, validity and world points.

One pass over every pixel of every view: rays [R] (R = V·H·W) meet every primitive at once
(closed-form ray–plane, ray–box, ray–sphere, ray–cylinder; tensors [R, n]), the nearest hit wins,
its normal and solid texture are evaluated only for the rays it won, and Lambert shading gives the
colour (averaged over 2×2 rays a pixel by default: anti-aliasing). Ray directions are
``R_c2w · K⁻¹ · (u, v, 1)`` *without* normalisation, so the ray parameter ``t`` of a hit is
directly the z-depth in that camera.

Everything runs on the device of the scene and cameras given (a CUDA GPU renders training data
inside the training process; the CPU renders for tests and loader processes): no tensor is made
anywhere else, so a render on the GPU is the same arithmetic as on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import pixel_grid
from .scenes import Materials, Scene, Texture

EPS = 1e-4  # smallest accepted ray parameter (metres of depth): hits behind or at the eye are ignored
NO_HIT = math.inf


@dataclass(frozen=True)
class Rendering:
    """What V cameras see. Invalid pixels (no surface: sky) have depth 0 and world point 0."""

    rgb: Tensor           # uint8 [V,H,W,3]
    depth: Tensor         # float32 [V,H,W], z in the camera frame (metres)
    valid: Tensor         # bool [V,H,W]
    world_points: Tensor  # float32 [V,H,W,3], hit points in the scene's world frame


def pixel_rays(intrinsics: Tensor, cam2world: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Origins and directions [V,H,W,3] through the pixels (pixel (i, j) at image coordinate (j, i),
    :func:`training.cameras.pixel_grid`); direction·z_cam = 1."""
    u, v = pixel_grid(height, width, intrinsics.device)
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)                        # [H,W,3]
    cam_dirs = torch.einsum("vij,hwj->vhwi", torch.linalg.inv(intrinsics.float()), pix)
    dirs = torch.einsum("vij,vhwj->vhwi", cam2world[:, :3, :3].float(), cam_dirs)
    origins = cam2world[:, None, None, :3, 3].float().expand_as(dirs)
    return origins, dirs


def _first_positive(*ts: Tensor) -> Tensor:
    """Element-wise smallest candidate ``t > EPS`` (``NO_HIT`` where none is)."""
    stacked = torch.stack([torch.where(t > EPS, t, torch.full_like(t, NO_HIT)) for t in ts])
    return stacked.amin(dim=0)


def ray_plane(o: Tensor, d: Tensor, normal: Tensor, offset: Tensor,
              lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
    """t [R,P] where rays o + t·d [R,3] meet planes ``normal·x = offset`` [P,3], [P].

    With ``lo``/``hi`` [P,3], a hit outside its plane's box [lo, hi] (1 mm tolerance) is a miss.
    """
    denom = d @ normal.T
    t = (offset[None] - o @ normal.T) / torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, 1e-12))
    if lo is not None and hi is not None:
        p = o[:, None, :] + t[..., None] * d[:, None, :]                         # [R,P,3]
        inside = ((p >= lo - 1e-3) & (p <= hi + 1e-3)).all(-1)
        t = torch.where(inside, t, torch.full_like(t, NO_HIT))
    return _first_positive(t)


def ray_sphere(o: Tensor, d: Tensor, centre: Tensor, radius: Tensor) -> Tensor:
    """t [R,N] of the near intersection with spheres (rays starting inside one do not hit it)."""
    oc = o[:, None, :] - centre[None]                                            # [R,N,3]
    a = (d * d).sum(-1, keepdim=True)                                            # [R,1]
    half_b = (oc * d[:, None, :]).sum(-1)
    c = (oc * oc).sum(-1) - radius[None] ** 2
    disc = half_b ** 2 - a * c
    t = (-half_b - disc.clamp(min=0).sqrt()) / a
    t = torch.where((disc >= 0) & (c > 0), t, torch.full_like(t, NO_HIT))
    return _first_positive(t)


def ray_box(o: Tensor, d: Tensor, centre: Tensor, half_size: Tensor, rotation: Tensor) -> Tensor:
    """t [R,N] of the entry point into oriented boxes (slab test in each box's local frame)."""
    o_l = torch.einsum("rk,nkj->rnj", o, rotation) - torch.einsum("nk,nkj->nj", centre, rotation)[None]
    d_l = torch.einsum("rk,nkj->rnj", d, rotation)
    d_l = torch.where(d_l.abs() > 1e-12, d_l, torch.full_like(d_l, 1e-12))
    t1 = (-half_size[None] - o_l) / d_l
    t2 = (half_size[None] - o_l) / d_l
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    t = torch.where((t_near <= t_far) & (t_near > EPS), t_near, torch.full_like(t_near, NO_HIT))
    return t


def ray_cylinder(o: Tensor, d: Tensor, centre: Tensor, radius: Tensor, half_height: Tensor) -> Tensor:
    """t [R,N] of the first hit with capped cylinders whose axis is world Z."""
    oc = o[:, None, :] - centre[None]                                            # [R,N,3]
    dx, dy, dz = d[:, None, 0], d[:, None, 1], d[:, None, 2]
    a = dx ** 2 + dy ** 2
    half_b = oc[..., 0] * dx + oc[..., 1] * dy
    c = oc[..., 0] ** 2 + oc[..., 1] ** 2 - radius[None] ** 2
    disc = half_b ** 2 - a * c
    t_side = (-half_b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-12)
    z_side = oc[..., 2] + t_side * dz
    side_ok = (disc >= 0) & (a > 1e-12) & (z_side.abs() <= half_height[None])
    t_side = torch.where(side_ok, t_side, torch.full_like(t_side, NO_HIT))
    dz_safe = torch.where(dz.abs() > 1e-12, dz, torch.full_like(dz, 1e-12))
    caps = []
    for sign in (1.0, -1.0):
        t_cap = (sign * half_height[None] - oc[..., 2]) / dz_safe
        px = oc[..., 0] + t_cap * dx
        py = oc[..., 1] + t_cap * dy
        caps.append(torch.where(px ** 2 + py ** 2 <= radius[None] ** 2, t_cap, torch.full_like(t_cap, NO_HIT)))
    return _first_positive(t_side, *caps)


def _box_normals(p: Tensor, centre: Tensor, half_size: Tensor, rotation: Tensor) -> Tensor:
    local = torch.einsum("rk,rkj->rj", p - centre, rotation)
    axis = (local.abs() / half_size).argmax(-1)
    n_local = torch.nn.functional.one_hot(axis, 3).float() * torch.sign(local)
    return torch.einsum("rij,rj->ri", rotation, n_local)


def _cylinder_normals(p: Tensor, centre: Tensor, radius: Tensor, half_height: Tensor) -> Tensor:
    local = p - centre
    radial = local[:, :2].norm(dim=-1)
    on_cap = (local[:, 2].abs() - half_height).abs() < (radial - radius).abs()
    side = torch.cat([local[:, :2] / radial.clamp(min=1e-12)[:, None], torch.zeros_like(radial)[:, None]], dim=-1)
    cap = torch.zeros_like(local)
    cap[:, 2] = torch.sign(local[:, 2])
    return torch.where(on_cap[:, None], cap, side)


def _value_noise(x: Tensor) -> Tensor:
    """Smooth 3-D value noise in [0, 1] at points x [R,3] (hashed integer lattice, trilinear)."""
    cell = torch.floor(x)
    f = x - cell
    f = f * f * (3 - 2 * f)                                                      # smoothstep
    ci = cell.long()
    out = torch.zeros_like(x[:, 0])
    for corner in range(8):
        offs = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=x.device)
        c = ci + offs
        h = (c[:, 0] * 73856093) ^ (c[:, 1] * 19349663) ^ (c[:, 2] * 83492791)
        value = ((h * 2654435761) % 65521).float() / 65520.0
        w = torch.where(offs.bool(), f, 1 - f).prod(-1)
        out = out + w * value
    return out


def _albedo(materials: Materials, material: Tensor, p: Tensor) -> Tensor:
    """Surface colour [R,3] of solid textures at hit points p [R,3] with material ids [R]."""
    kind = materials.kind[material]
    x = p * materials.frequency[material, None] + materials.offset[material]
    along = (x * materials.direction[material]).sum(-1)
    mix = torch.zeros_like(along)
    for texture in Texture:
        sel = kind == texture
        if not bool(sel.any()) or texture == Texture.SOLID:
            continue
        if texture == Texture.CHECKER:
            value = (torch.floor(x[sel]).sum(-1) % 2)
        elif texture == Texture.STRIPES:
            value = (0.5 + 2.0 * torch.sin(2 * math.pi * along[sel])).clamp(0, 1)
        elif texture == Texture.NOISE:
            value = 0.65 * _value_noise(x[sel]) + 0.35 * _value_noise(2.7 * x[sel] + 17.0)
        elif texture == Texture.GRADIENT:  # a triangle wave along the direction, slow compared with the others
            value = (torch.remainder(along[sel] / 4, 1.0) * 2 - 1).abs()
        elif texture == Texture.DOTS:
            value = ((x[sel] - torch.floor(x[sel]) - 0.5).norm(dim=-1) < 0.3).float()
        else:  # RINGS: distance from the line through the texture origin along the direction
            radial = (x[sel] - along[sel, None] * materials.direction[material[sel]]).norm(dim=-1)
            value = (0.5 + 1.5 * torch.sin(2 * math.pi * radial)).clamp(0, 1)
        mix[sel] = value
    a, b = materials.colour_a[material], materials.colour_b[material]
    return a + (b - a) * mix[:, None]


@dataclass(frozen=True)
class _Hits:
    """Nearest hit of each ray [R]: parameter ``t`` (0 where none), primitive index into the
    concatenation planes | boxes | spheres | cylinders, and whether there is a hit at all."""

    t: Tensor
    index: Tensor
    valid: Tensor
    bounds: Tensor      # [5] start of each primitive kind in ``index``


def _cast(s: Scene, o: Tensor, d: Tensor) -> _Hits:
    hits = [
        ray_plane(o, d, s.planes.normal, s.planes.offset, s.planes.lo, s.planes.hi),
        ray_box(o, d, s.boxes.centre, s.boxes.half_size, s.boxes.rotation),
        ray_sphere(o, d, s.spheres.centre, s.spheres.radius),
        ray_cylinder(o, d, s.cylinders.centre, s.cylinders.radius, s.cylinders.half_height),
    ]
    t, index = torch.cat(hits, dim=1).min(dim=1)
    valid = torch.isfinite(t)
    bounds = torch.tensor([0] + [h.shape[1] for h in hits], device=t.device).cumsum(0)
    return _Hits(torch.where(valid, t, torch.zeros_like(t)), index, valid, bounds)


def _shade(s: Scene, o: Tensor, d: Tensor, hits: _Hits) -> Tensor:
    """Linear RGB [R,3]: Lambert-lit solid texture at each hit, sky colour for misses."""
    p = o + hits.t[:, None] * d
    idx, valid, bounds = hits.index, hits.valid, hits.bounds
    material = torch.cat([s.planes.material, s.boxes.material, s.spheres.material, s.cylinders.material])[idx]
    normal = torch.zeros_like(p)
    for kind in range(4):
        sel = valid & (idx >= bounds[kind]) & (idx < bounds[kind + 1])
        if not bool(sel.any()):
            continue
        k = idx[sel] - bounds[kind]
        if kind == 0:
            normal[sel] = s.planes.normal[k]
        elif kind == 1:
            normal[sel] = _box_normals(p[sel], s.boxes.centre[k], s.boxes.half_size[k], s.boxes.rotation[k])
        elif kind == 2:
            normal[sel] = (p[sel] - s.spheres.centre[k]) / s.spheres.radius[k, None]
        else:
            normal[sel] = _cylinder_normals(p[sel], s.cylinders.centre[k], s.cylinders.radius[k],
                                            s.cylinders.half_height[k])
    # shade the side facing the camera
    normal = torch.where(((normal * d).sum(-1) > 0)[:, None], -normal, normal)
    light_dirs, light_colours = s.light.direction.reshape(-1, 3), s.light.colour.reshape(-1, 3)
    lambert = (normal @ light_dirs.T).clamp(min=0)                              # [R,L]
    ambient = s.light.ambient
    albedo = _albedo(s.materials, material, p)
    colour = albedo * (ambient + (1 - ambient) * lambert[:, :1]) * light_colours[0]
    if len(light_colours) > 1:
        colour = colour + albedo * ((1 - ambient) * lambert[:, 1:] @ light_colours[1:])
    return torch.where(valid[:, None], colour, s.sky_colour.expand_as(colour))


def render(scene: Scene, intrinsics: Tensor, cam2world: Tensor, height: int, width: int,
           supersample: int = 2) -> Rendering:
    """Ray-cast V views of ``scene``: intrinsics [V,3,3] (pixels), cam2world [V,4,4] (OpenCV).

    Geometry (depth, validity, points) is that of the ray through each pixel's centre; colour is
    the mean of ``supersample``² rays spread evenly over the pixel (a camera integrates light over
    its pixel area, so textures are anti-aliased as in real photos).
    """
    v = intrinsics.shape[0]
    origins, dirs = pixel_rays(intrinsics, cam2world, height, width)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    hits = _cast(scene, o, d)
    if supersample <= 1:
        colour = _shade(scene, o, d, hits)
    else:
        # sub-pixel sample (a, b) sits at offset ((b + ½)/n − ½, (a + ½)/n − ½) from the centre; all
        # n² sub-rays of all pixels are cast in one pass (few, large tensor operations: fast on a GPU)
        step = (torch.arange(supersample, dtype=torch.float32, device=o.device) + 0.5) / supersample - 0.5
        dy, dx = torch.meshgrid(step, step, indexing="ij")
        offsets = torch.stack([dx.flatten(), dy.flatten(), torch.zeros_like(dx.flatten())], dim=-1)   # [S,3]
        pixel_to_world = cam2world[:, :3, :3].float() @ torch.linalg.inv(intrinsics.float())   # [V,3,3]
        sub = torch.einsum("vij,sj->svi", pixel_to_world, offsets)                           # [S,V,3]
        d_sub = (dirs[None] + sub[:, :, None, None, :]).reshape(-1, 3)
        o_sub = o.repeat(len(offsets), 1)
        shaded = _shade(scene, o_sub, d_sub, _cast(scene, o_sub, d_sub)).reshape(len(offsets), -1, 3)
        colour = torch.zeros_like(o)
        for sample in shaded:        # summed in the same order as one sub-ray at a time
            colour += sample
        colour /= supersample ** 2
    rgb = (colour.clamp(0, 1) * 255).round().to(torch.uint8)
    p = o + hits.t[:, None] * d
    p = torch.where(hits.valid[:, None], p, torch.zeros_like(p))
    return Rendering(rgb.reshape(v, height, width, 3), hits.t.reshape(v, height, width),
                     hits.valid.reshape(v, height, width), p.reshape(v, height, width, 3))
