"""The ray caster against closed-form geometry, re-projection through K and cam2world, determinism."""
from __future__ import annotations

import math

import pytest
import torch

from training.official_cameras import estimate_cameras
from training.metrics import rotation_angle_deg
from training.cameras import look_at, sample_intrinsics, sample_trajectory
from training.render import render
from training.scenes import Boxes, Cylinders, Light, Materials, Planes, Scene, Spheres, random_scene

torch.set_num_threads(1)


def _materials(n: int) -> Materials:
    return Materials(torch.zeros(n, dtype=torch.long), torch.full((n, 3), 0.5), torch.full((n, 3), 0.2),
                     torch.ones(n), torch.tensor([[1.0, 0, 0]]).repeat(n, 1), torch.zeros(n, 3))


def _scene(planes: Planes | None = None, boxes: Boxes | None = None, spheres: Spheres | None = None,
           cylinders: Cylinders | None = None) -> Scene:
    """A hand-made scene; absent primitive kinds are empty."""
    empty_long = torch.zeros(0, dtype=torch.long)
    return Scene(
        room_min=torch.tensor([-10.0, -10.0, 0.0]), room_max=torch.tensor([10.0, 10.0, 10.0]),
        planes=planes or Planes(torch.zeros(0, 3), torch.zeros(0), empty_long, torch.zeros(0, 3), torch.zeros(0, 3)),
        boxes=boxes or Boxes(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3, 3), empty_long),
        spheres=spheres or Spheres(torch.zeros(0, 3), torch.zeros(0), empty_long),
        cylinders=cylinders or Cylinders(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0), empty_long),
        materials=_materials(4), light=Light(torch.tensor([0.0, 0.0, 1.0]), 0.3, torch.ones(3)),
        sky_colour=torch.tensor([0.5, 0.6, 0.9]))


def _intrinsics(size: int, focal: float) -> torch.Tensor:
    """Odd ``size`` with the principal point on the middle pixel (index size // 2): its ray is the axis."""
    return torch.tensor([[[focal, 0, size // 2], [0, focal, size // 2], [0, 0, 1]]], dtype=torch.float32)


INF = float("inf")
FLOOR = Planes(torch.tensor([[0.0, 0, 1]]), torch.tensor([0.0]), torch.tensor([0]),
               torch.full((1, 3), -INF), torch.full((1, 3), INF))


def test_floor_depth_matches_the_pitched_camera_formula() -> None:
    """A camera h above the floor pitched down by φ: a pixel at normalised image y sees the floor
    at z-depth h / (y·cos φ + sin φ) (independent of x)."""
    h, pitch, size, focal = 1.7, math.radians(35), 41, 30.0
    pos = torch.tensor([[0.0, 0.0, h]])
    target = pos + torch.tensor([[math.cos(pitch), 0.0, -math.sin(pitch)]])
    out = render(_scene(planes=FLOOR), _intrinsics(size, focal), look_at(pos, target), size, size)
    y = ((torch.arange(size) - size // 2) / focal)[:, None].expand(size, size)
    down = y * math.cos(pitch) + math.sin(pitch)
    expected = torch.where(down > 0, h / down, torch.zeros_like(down))
    assert torch.equal(out.valid[0], down > 1e-3)       # above the horizon: sky, invalid
    assert torch.allclose(out.depth[0][out.valid[0]], expected[out.valid[0]], rtol=1e-5)
    assert torch.allclose(out.world_points[0][out.valid[0]][:, 2], torch.zeros(1), atol=1e-5)


def test_sphere_depth_on_the_axis_and_silhouette() -> None:
    distance, radius, size, focal = 5.0, 1.2, 31, 25.0
    spheres = Spheres(torch.tensor([[distance, 0.0, 2.0]]), torch.tensor([radius]), torch.tensor([0]))
    pos = torch.tensor([[0.0, 0.0, 2.0]])
    out = render(_scene(spheres=spheres), _intrinsics(size, focal), look_at(pos, spheres.centre), size, size)
    mid = size // 2
    assert out.depth[0, mid, mid].item() == pytest.approx(distance - radius, rel=1e-6)
    # a pixel sees the sphere iff its ray is within asin(r/D) of the centre direction
    ij = (torch.arange(size) - size // 2).float()
    rays = torch.stack([ij[None, :].expand(size, size) / focal, ij[:, None].expand(size, size) / focal,
                        torch.ones(size, size)], -1)
    angle = torch.acos(rays[..., 2] / rays.norm(dim=-1))
    limit = math.asin(radius / distance)
    clear = (angle - limit).abs() > 1e-3
    assert torch.equal(out.valid[0][clear], (angle < limit)[clear])
    on_surface = (out.world_points[0][out.valid[0]] - spheres.centre).norm(dim=-1)
    assert torch.allclose(on_surface, torch.tensor(radius), atol=1e-5)


def test_box_face_and_cylinder_cap_depths() -> None:
    size, focal = 21, 20.0
    yaw = torch.tensor(0.3)
    c, s = torch.cos(yaw), torch.sin(yaw)
    rotation = torch.tensor([[[c, -s, 0], [s, c, 0], [0, 0, 1]]])
    boxes = Boxes(torch.tensor([[4.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.8, 1.0]]), rotation, torch.tensor([0]))
    # camera facing the box's local -x face head-on, 4 m away from the box centre
    normal = rotation[0] @ torch.tensor([-1.0, 0, 0])
    pos = boxes.centre + 4.0 * normal
    out = render(_scene(boxes=boxes), _intrinsics(size, focal), look_at(pos, boxes.centre), size, size)
    assert out.depth[0, size // 2, size // 2].item() == pytest.approx(4.0 - 0.5, rel=1e-6)
    local = (out.world_points[0][out.valid[0]] - boxes.centre) @ rotation[0]
    assert torch.allclose((local.abs() / boxes.half_size).amax(-1), torch.tensor(1.0), atol=1e-5)

    cylinders = Cylinders(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0.6]), torch.tensor([0.5]),
                          torch.tensor([0]))
    above = torch.tensor([[0.0, 0.0, 4.0]])
    pose = look_at(above, torch.tensor([[0.0, 1e-4, 0.0]]))       # looking straight down
    out = render(_scene(cylinders=cylinders), _intrinsics(size, focal), pose, size, size)
    assert out.depth[0, size // 2, size // 2].item() == pytest.approx(4.0 - 1.5, rel=1e-5)
    pts = out.world_points[0][out.valid[0]] - cylinders.centre
    on_side = (pts[:, :2].norm(dim=-1) - 0.6).abs() < 1e-4
    on_cap = (pts[:, 2].abs() - 0.5).abs() < 1e-4
    assert bool((on_side | on_cap).all()) and bool(on_cap.any())


def test_world_points_reproject_to_their_pixels() -> None:
    scene = random_scene(11)
    gen = torch.Generator().manual_seed(5)
    h, w = 48, 64
    K = sample_intrinsics(gen, 3, h, w)
    c2w = sample_trajectory(gen, scene, 3)
    out = render(scene, K, c2w, h, w)
    assert out.valid.float().mean() > 0.5
    w2c = torch.linalg.inv(c2w.double())
    cam = torch.einsum("vij,vhwj->vhwi", w2c[:, :3, :3], out.world_points.double()) + w2c[:, None, None, :3, 3]
    assert torch.allclose(cam[..., 2][out.valid], out.depth.double()[out.valid], rtol=1e-5)
    pix = torch.einsum("vij,vhwj->vhwi", K.double(), cam)
    pix = pix[..., :2] / pix[..., 2:]
    # pixel (i, j) at image coordinate (j, i): the integer-index convention of the engine's camera recovery
    v, u = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    expected = torch.stack([u, v], -1).double().expand_as(pix)
    err = (pix - expected).norm(dim=-1)[out.valid]
    assert err.max().item() < 1e-3


def test_rendering_is_deterministic_from_the_seed() -> None:
    def views(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = random_scene(seed)
        gen = torch.Generator().manual_seed(seed)
        out = render(scene, sample_intrinsics(gen, 2, 32, 32), sample_trajectory(gen, scene, 2), 32, 32)
        return out.rgb, out.depth

    a, b, c = views(3), views(3), views(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_cameras_follow_the_opencv_convention() -> None:
    """look_at: +z towards the target, +y (image down) towards world −Z, rotation orthonormal."""
    pose = look_at(torch.tensor([[1.0, 2.0, 1.5]]), torch.tensor([[4.0, -1.0, 0.5]]))[0]
    rot = pose[:3, :3]
    assert torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-6) and torch.linalg.det(rot) > 0
    forward = torch.nn.functional.normalize(torch.tensor([3.0, -3.0, -1.0]), dim=0)
    assert torch.allclose(rot[:, 2], forward, atol=1e-6)
    assert rot[2, 1] < 0 and abs(rot[2, 0]) < 1e-6          # image down has a world-down component, no roll


def test_bounded_walls_end_at_the_room_box() -> None:
    """A wall plane x = 5 bounded by the box |y| ≤ 10, 0 ≤ z ≤ 10: rays meeting the plane outside
    the box miss it, the others hit it at z-depth 5 (camera facing the wall head-on)."""
    wall = Planes(torch.tensor([[-1.0, 0, 0]]), torch.tensor([-5.0]), torch.tensor([0]),
                  torch.tensor([[-10.0, -10.0, 0.0]]), torch.tensor([[10.0, 10.0, 10.0]]))
    size, focal = 21, 4.0                                   # wide view: rays reach z = 2 ± 13
    pos = torch.tensor([[0.0, 0.0, 2.0]])
    out = render(_scene(planes=wall), _intrinsics(size, focal), look_at(pos, pos + torch.tensor([[1.0, 0, 0]])),
                 size, size)
    z = out.world_points[0][..., 2]
    y = (torch.arange(size) - size // 2) / focal
    hit_z = 2.0 - 5.0 * y                                   # image down = world −Z
    hit_y = -5.0 * y                                        # image right = world −Y (facing +X, Z up)
    expected = ((hit_z >= -1e-3) & (hit_z <= 10 + 1e-3))[:, None] & (hit_y.abs() <= 10 + 1e-3)[None, :]
    assert torch.equal(out.valid[0], expected) and not bool(expected.all()) and bool(expected.any())
    assert torch.allclose(out.depth[0][out.valid[0]], torch.tensor(5.0), rtol=1e-6)
    assert torch.allclose(z[out.valid[0]], hit_z[:, None].expand(size, size)[out.valid[0]], atol=1e-5)


def test_supersampling_changes_colours_only() -> None:
    """Anti-aliasing averages sub-pixel rays: same geometry as one ray per pixel, colours close on
    average but blended at texture edges (more distinct values)."""
    scene = random_scene(2)
    gen = torch.Generator().manual_seed(2)
    K, c2w = sample_intrinsics(gen, 2, 40, 40), sample_trajectory(gen, scene, 2)
    one, four = render(scene, K, c2w, 40, 40, supersample=1), render(scene, K, c2w, 40, 40, supersample=2)
    assert torch.equal(one.depth, four.depth) and torch.equal(one.valid, four.valid)
    assert torch.equal(one.world_points, four.world_points)
    diff = (one.rgb.float() - four.rgb.float()).abs()
    assert 0 < diff.mean() < 12
    assert len(torch.unique(four.rgb.reshape(-1, 3), dim=0)) > len(torch.unique(one.rgb.reshape(-1, 3), dim=0))


def test_the_engines_camera_recovery_reads_true_pointmaps_as_the_true_cameras() -> None:
    """Rendered ground truth in the convention the add-on's camera recovery assumes: with the
    principal point at (W/2, H/2), PnP on the true pointmaps returns the true focal and poses."""
    scene = random_scene(4)
    gen = torch.Generator().manual_seed(9)
    h = w = 48
    K = sample_intrinsics(gen, 4, h, w)
    K[:, 0, 2], K[:, 1, 2] = w / 2, h / 2
    c2w = sample_trajectory(gen, scene, 4)
    out = render(scene, K, c2w, h, w)
    to_view0 = torch.linalg.inv(c2w[0])                         # the network predicts in view 0's frame
    pts = out.world_points @ to_view0[:3, :3].T + to_view0[:3, 3]
    pts = torch.where(out.valid[..., None], pts, torch.tensor([0.0, 0.0, 50.0]))
    cams = estimate_cameras(pts, out.valid.float() + 1)
    assert cams.focal == pytest.approx(float(K[0, 0, 0]), rel=1e-3)
    true = (to_view0 @ c2w).double().numpy()
    error = cams.poses.cam2world[:, :3, :3].transpose(0, 2, 1) @ true[:, :3, :3]
    assert rotation_angle_deg(error).max() < 0.05
