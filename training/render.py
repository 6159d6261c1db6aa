"""Batched ray casting of :class:`~training.scenes.Scene` s: RGB, depth, validity and world points.

One pass over every pixel of every view of every scene of a batch: rays [B,R] (R = V·H·W, and the
n² sub-pixel rays of anti-aliasing) meet every primitive of their own scene at once (closed-form
ray–plane, ray–box, ray–sphere, ray–cylinder; tensors [B,R,n], scenes padded to the batch's
largest primitive counts), the nearest hit wins, its normal and solid texture are evaluated only for
the rays it won, and Lambert shading gives the colour (averaged over 2×2 rays a pixel by default:
anti-aliasing). Ray directions are ``R_c2w · K⁻¹ · (u, v, 1)`` *without* normalisation, so the ray
parameter ``t`` of a hit is directly the z-depth in that camera.

Everything runs on the device of the scenes and cameras given (a CUDA GPU renders training data
inside the training process; the CPU renders for tests and loader processes): no tensor is made
anywhere else, so a render on the GPU is the same arithmetic as on the CPU. A whole batch of
scenes costs the same number of tensor operations as one (:func:`render_batch`), which is what
keeps a GPU busy rather than waiting on kernel launches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .cameras import pixel_grid
from .scenes import Boxes, Cylinders, Materials, Planes, Scene, Spheres, Texture

EPS = 1e-4  # smallest accepted ray parameter (metres of depth): hits behind or at the eye are ignored
NO_HIT = math.inf


@dataclass(frozen=True)
class Rendering:
    """What V cameras see (of B scenes: a leading [B] on every field, :func:`render_batch`). Invalid
    pixels (no surface: sky) have depth 0 and world point 0."""

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


def ray_plane(o: Tensor, d: Tensor, normal: Tensor, offset: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """t [B,R,P] where rays o + t·d [B,R,3] meet planes ``normal·x = offset`` [B,P,3], [B,P]; a hit
    outside its plane's box [lo, hi] [B,P,3] (1 mm tolerance) is a miss."""
    denom = torch.einsum("brk,bpk->brp", d, normal)
    t = (offset[:, None] - torch.einsum("brk,bpk->brp", o, normal)) \
        / torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, 1e-12))
    p = o[:, :, None] + t[..., None] * d[:, :, None]                             # [B,R,P,3]
    inside = ((p >= lo[:, None] - 1e-3) & (p <= hi[:, None] + 1e-3)).all(-1)
    return _first_positive(torch.where(inside, t, torch.full_like(t, NO_HIT)))


def ray_sphere(o: Tensor, d: Tensor, centre: Tensor, radius: Tensor) -> Tensor:
    """t [B,R,N] of the near intersection with spheres [B,N] (rays starting inside one do not hit it)."""
    oc = o[:, :, None] - centre[:, None]                                         # [B,R,N,3]
    a = (d * d).sum(-1, keepdim=True)                                            # [B,R,1]
    half_b = (oc * d[:, :, None]).sum(-1)
    c = (oc * oc).sum(-1) - radius[:, None] ** 2
    disc = half_b ** 2 - a * c
    t = (-half_b - disc.clamp(min=0).sqrt()) / a
    t = torch.where((disc >= 0) & (c > 0), t, torch.full_like(t, NO_HIT))
    return _first_positive(t)


def ray_box(o: Tensor, d: Tensor, centre: Tensor, half_size: Tensor, rotation: Tensor) -> Tensor:
    """t [B,R,N] of the entry point into oriented boxes [B,N] (slab test in each box's local frame)."""
    o_l = torch.einsum("brk,bnkj->brnj", o, rotation) - torch.einsum("bnk,bnkj->bnj", centre, rotation)[:, None]
    d_l = torch.einsum("brk,bnkj->brnj", d, rotation)
    d_l = torch.where(d_l.abs() > 1e-12, d_l, torch.full_like(d_l, 1e-12))
    t1 = (-half_size[:, None] - o_l) / d_l
    t2 = (half_size[:, None] - o_l) / d_l
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    return torch.where((t_near <= t_far) & (t_near > EPS), t_near, torch.full_like(t_near, NO_HIT))


def ray_cylinder(o: Tensor, d: Tensor, centre: Tensor, radius: Tensor, half_height: Tensor) -> Tensor:
    """t [B,R,N] of the first hit with capped cylinders [B,N] whose axis is world Z."""
    oc = o[:, :, None] - centre[:, None]                                         # [B,R,N,3]
    dx, dy, dz = d[:, :, None, 0], d[:, :, None, 1], d[:, :, None, 2]
    a = dx ** 2 + dy ** 2
    half_b = oc[..., 0] * dx + oc[..., 1] * dy
    c = oc[..., 0] ** 2 + oc[..., 1] ** 2 - radius[:, None] ** 2
    disc = half_b ** 2 - a * c
    t_side = (-half_b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-12)
    z_side = oc[..., 2] + t_side * dz
    side_ok = (disc >= 0) & (a > 1e-12) & (z_side.abs() <= half_height[:, None])
    t_side = torch.where(side_ok, t_side, torch.full_like(t_side, NO_HIT))
    dz_safe = torch.where(dz.abs() > 1e-12, dz, torch.full_like(dz, 1e-12))
    caps = []
    for sign in (1.0, -1.0):
        t_cap = (sign * half_height[:, None] - oc[..., 2]) / dz_safe
        px = oc[..., 0] + t_cap * dx
        py = oc[..., 1] + t_cap * dy
        caps.append(torch.where(px ** 2 + py ** 2 <= radius[:, None] ** 2, t_cap, torch.full_like(t_cap, NO_HIT)))
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


def _pad(tensors: Sequence[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """[n_b, ...] tensors stacked into [B, max n_b, ...] (``fill`` beyond each), and the mask
    [B, max n_b] of real entries."""
    n = max(t.shape[0] for t in tensors)
    out = tensors[0].new_full((len(tensors), n, *tensors[0].shape[1:]), fill)
    present = torch.zeros(len(tensors), n, dtype=torch.bool, device=tensors[0].device)
    for b, t in enumerate(tensors):
        out[b, :len(t)] = t
        present[b, :len(t)] = True
    return out, present


def _first(counts: Sequence[int], device: torch.device) -> Tensor:
    """[B] index of each scene's first entry in the concatenation of all scenes' entries."""
    return torch.tensor([0, *counts[:-1]], device=device).cumsum(0)


@dataclass(frozen=True)
class _Batch:
    """B scenes in two layouts: padded [B, n, ...] for the ray intersections (``present`` masks the
    padding), and concatenated (one scene of all primitives and materials, material ids shifted)
    for shading, with ``first[kind][b]`` the index of scene b's first primitive of that kind."""

    padded: tuple[tuple[Tensor, ...], ...]   # planes, boxes, spheres, cylinders: the ray_* arguments
    present: Tensor                          # bool [B, n_planes + n_boxes + n_spheres + n_cylinders]
    kinds: Tensor                            # [5] start of each kind along ``present``'s last axis
    flat: Scene                              # all scenes' primitives and materials concatenated
    first: tuple[Tensor, ...]                # per kind: [B]
    light_direction: Tensor                  # [B,L,3]
    light_colour: Tensor                     # [B,L,3] (zero for lights a scene does not have)
    ambient: Tensor                          # [B]
    sky: Tensor                              # [B,3]


def _batch(scenes: Sequence[Scene]) -> _Batch:
    device = scenes[0].room_min.device
    planes = [s.planes for s in scenes]
    boxes = [s.boxes for s in scenes]
    spheres = [s.spheres for s in scenes]
    cylinders = [s.cylinders for s in scenes]
    shift = _first([len(s.materials.kind) for s in scenes], device)
    normal, p_ok = _pad([p.normal for p in planes])
    padded = (
        (normal, _pad([p.offset for p in planes])[0], _pad([p.lo for p in planes])[0],
         _pad([p.hi for p in planes])[0]),
        (_pad([b.centre for b in boxes])[0], _pad([b.half_size for b in boxes])[0],
         _pad([b.rotation for b in boxes])[0]),
        (_pad([x.centre for x in spheres])[0], _pad([x.radius for x in spheres])[0]),
        (_pad([c.centre for c in cylinders])[0], _pad([c.radius for c in cylinders])[0],
         _pad([c.half_height for c in cylinders])[0]),
    )
    masks = [p_ok, _pad([b.material for b in boxes])[1], _pad([x.material for x in spheres])[1],
             _pad([c.material for c in cylinders])[1]]
    kinds = torch.tensor([0] + [m.shape[1] for m in masks], device=device).cumsum(0)

    def cat(items: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(items))

    def shifted(ids: Sequence[Tensor]) -> Tensor:
        return torch.cat([i + shift[b] for b, i in enumerate(ids)])

    m = [s.materials for s in scenes]
    flat = Scene(
        scenes[0].room_min, scenes[0].room_max,
        Planes(cat([p.normal for p in planes]), cat([p.offset for p in planes]), shifted([p.material for p in planes]),
               cat([p.lo for p in planes]), cat([p.hi for p in planes])),
        Boxes(cat([b.centre for b in boxes]), cat([b.half_size for b in boxes]), cat([b.rotation for b in boxes]),
              shifted([b.material for b in boxes])),
        Spheres(cat([x.centre for x in spheres]), cat([x.radius for x in spheres]), shifted([x.material for x in spheres])),
        Cylinders(cat([c.centre for c in cylinders]), cat([c.radius for c in cylinders]),
                  cat([c.half_height for c in cylinders]), shifted([c.material for c in cylinders])),
        Materials(cat([x.kind for x in m]), cat([x.colour_a for x in m]), cat([x.colour_b for x in m]),
                  cat([x.frequency for x in m]), cat([x.direction for x in m]), cat([x.offset for x in m])),
        scenes[0].light, scenes[0].sky_colour)
    first = tuple(_first([len(k) for k in group], device) for group in
                  ([p.offset for p in planes], [b.material for b in boxes], [x.radius for x in spheres],
                   [c.radius for c in cylinders]))
    direction, _ = _pad([s.light.direction.reshape(-1, 3) for s in scenes])
    colour, _ = _pad([s.light.colour.reshape(-1, 3) for s in scenes])
    ambient = torch.tensor([s.light.ambient for s in scenes], device=device)
    return _Batch(padded, torch.cat(masks, dim=1), kinds, flat, first, direction, colour, ambient,
                  torch.stack([s.sky_colour for s in scenes]))


@dataclass(frozen=True)
class _Hits:
    """Nearest hit of each ray [N] (all rays of all scenes, flattened): parameter ``t`` (0 where
    none), the primitive kind hit (0 planes, 1 boxes, 2 spheres, 3 cylinders), its index in
    ``_Batch.flat``'s arrays of that kind, whether there is a hit at all, and the ray's scene."""

    t: Tensor
    kind: Tensor
    index: Tensor
    valid: Tensor
    scene: Tensor


def _cast(batch: _Batch, o: Tensor, d: Tensor) -> _Hits:
    """Rays o, d [B,R,3] against their own scene's primitives."""
    planes, boxes, spheres, cylinders = batch.padded
    t_all = torch.cat([ray_plane(o, d, *planes), ray_box(o, d, *boxes), ray_sphere(o, d, *spheres),
                       ray_cylinder(o, d, *cylinders)], dim=2)
    t_all = torch.where(batch.present[:, None], t_all, torch.full_like(t_all, NO_HIT))
    t, index = t_all.min(dim=2)                                                  # [B,R]
    kind = torch.bucketize(index, batch.kinds[1:-1], right=True)
    scene = torch.arange(o.shape[0], device=o.device)[:, None].expand_as(index)
    flat = torch.stack(batch.first)[kind, scene] + index - batch.kinds[kind]
    valid = torch.isfinite(t)
    return _Hits(torch.where(valid, t, torch.zeros_like(t)).flatten(), kind.flatten(), flat.flatten(),
                 valid.flatten(), scene.flatten())


def _shade(batch: _Batch, o: Tensor, d: Tensor, hits: _Hits) -> Tensor:
    """Linear RGB [N,3] of rays o, d [N,3]: Lambert-lit solid texture at each hit, sky colour for misses."""
    s = batch.flat
    p = o + hits.t[:, None] * d
    normal = torch.zeros_like(p)
    material = torch.zeros_like(hits.index)
    for kind in range(4):
        sel = hits.valid & (hits.kind == kind)
        if not bool(sel.any()):
            continue
        k = hits.index[sel]
        if kind == 0:
            normal[sel] = s.planes.normal[k]
            material[sel] = s.planes.material[k]
        elif kind == 1:
            normal[sel] = _box_normals(p[sel], s.boxes.centre[k], s.boxes.half_size[k], s.boxes.rotation[k])
            material[sel] = s.boxes.material[k]
        elif kind == 2:
            normal[sel] = (p[sel] - s.spheres.centre[k]) / s.spheres.radius[k, None]
            material[sel] = s.spheres.material[k]
        else:
            normal[sel] = _cylinder_normals(p[sel], s.cylinders.centre[k], s.cylinders.radius[k],
                                            s.cylinders.half_height[k])
            material[sel] = s.cylinders.material[k]
    # shade the side facing the camera
    normal = torch.where(((normal * d).sum(-1) > 0)[:, None], -normal, normal)
    light_dirs, light_colours = batch.light_direction[hits.scene], batch.light_colour[hits.scene]   # [N,L,3]
    lambert = torch.einsum("nk,nlk->nl", normal, light_dirs).clamp(min=0)                      # [N,L]
    ambient = batch.ambient[hits.scene][:, None]
    albedo = _albedo(s.materials, material, p)
    colour = albedo * (ambient + (1 - ambient) * lambert[:, :1]) * light_colours[:, 0]
    if light_colours.shape[1] > 1:
        colour = colour + albedo * ((1 - ambient) * (lambert[:, 1:, None] * light_colours[:, 1:]).sum(1))
    return torch.where(hits.valid[:, None], colour, batch.sky[hits.scene])


def render_batch(scenes: Sequence[Scene], intrinsics: Tensor, cam2world: Tensor, height: int, width: int,
                 supersample: int = 2) -> Rendering:
    """Ray-cast V views of each of B ``scenes`` in one pass: intrinsics [B,V,3,3] (pixels), cam2world
    [B,V,4,4] (OpenCV); a :class:`Rendering` with a leading [B] on every field.

    Geometry (depth, validity, points) is that of the ray through each pixel's centre; colour is
    the mean of ``supersample``² rays spread evenly over the pixel (a camera integrates light over
    its pixel area, so textures are anti-aliased as in real photos).
    """
    b, v = intrinsics.shape[:2]
    batch = _batch(scenes)
    origins, dirs = pixel_rays(intrinsics.reshape(b * v, 3, 3), cam2world.reshape(b * v, 4, 4), height, width)
    o, d = origins.reshape(b, -1, 3), dirs.reshape(b, -1, 3)                     # [B,R,3]
    hits = _cast(batch, o, d)
    if supersample <= 1:
        colour = _shade(batch, o.reshape(-1, 3), d.reshape(-1, 3), hits).reshape(b, -1, 3)
    else:
        # sub-pixel sample (a, b) sits at offset ((b + ½)/n − ½, (a + ½)/n − ½) from the centre; all
        # n² sub-rays of all pixels are cast in one pass
        step = (torch.arange(supersample, dtype=torch.float32, device=o.device) + 0.5) / supersample - 0.5
        dy, dx = torch.meshgrid(step, step, indexing="ij")
        offsets = torch.stack([dx.flatten(), dy.flatten(), torch.zeros_like(dx.flatten())], dim=-1)   # [S,3]
        n_sub = len(offsets)
        pixel_to_world = cam2world.reshape(b * v, 4, 4)[:, :3, :3].float() \
            @ torch.linalg.inv(intrinsics.reshape(b * v, 3, 3).float())                          # [BV,3,3]
        sub = torch.einsum("vij,sj->svi", pixel_to_world, offsets).reshape(n_sub, b, v, 1, 1, 3)
        d_sub = (dirs.reshape(1, b, v, height, width, 3) + sub).transpose(0, 1).reshape(b, -1, 3)  # [B,S·R,3]
        o_sub = o.repeat(1, n_sub, 1)
        shaded = _shade(batch, o_sub.reshape(-1, 3), d_sub.reshape(-1, 3), _cast(batch, o_sub, d_sub))
        shaded = shaded.reshape(b, n_sub, -1, 3)
        colour = torch.zeros_like(o)
        for sample in range(n_sub):  # summed in the same order as one sub-ray at a time
            colour += shaded[:, sample]
        colour /= supersample ** 2
    rgb = (colour.clamp(0, 1) * 255).round().to(torch.uint8)
    t, valid = hits.t.reshape(b, -1), hits.valid.reshape(b, -1)
    p = o + t[..., None] * d
    p = torch.where(valid[..., None], p, torch.zeros_like(p))
    return Rendering(rgb.reshape(b, v, height, width, 3), t.reshape(b, v, height, width),
                     valid.reshape(b, v, height, width), p.reshape(b, v, height, width, 3))


def render(scene: Scene, intrinsics: Tensor, cam2world: Tensor, height: int, width: int,
           supersample: int = 2) -> Rendering:
    """Ray-cast V views of ``scene``: intrinsics [V,3,3] (pixels), cam2world [V,4,4] (OpenCV)
    (:func:`render_batch` of one scene)."""
    out = render_batch([scene], intrinsics[None], cam2world[None], height, width, supersample)
    return Rendering(out.rgb[0], out.depth[0], out.valid[0], out.world_points[0])
