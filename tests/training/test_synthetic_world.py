"""The generator's world: where scenes are rendered (device), and what it covers (fields of view,
photo shapes, walks, pans, orbits), each capture checked against its own truth."""
from __future__ import annotations

import math

import pytest
import torch

from mvdust3r_blender.engine.images import plan_resize
from training.cameras import (ORBIT_DISTANCE, PAN_CLEARANCE, _prop_footprints, crop_focal, orbit, pan,
                              sample_intrinsics, sample_photo, sample_trajectory, walk)
from training.dataset import SampleKey, SyntheticScenes, _mix
from training.render import render, render_batch
from training.scenes import Texture, random_scene
from training.world import ROOMS_V1, WIDE, WORLDS

torch.set_num_threads(1)


def _turntable(first: int = 0) -> tuple[int, object]:
    """The first seed from `first` whose WIDE scene is a turntable."""
    seed = first
    while (scene := random_scene(seed, WIDE)).layout != "turntable":
        seed += 1
    return seed, scene


def test_the_renderer_makes_nothing_off_its_inputs_device() -> None:
    """With the default device set to `meta`, any tensor the renderer made without naming the
    device of its inputs would land on `meta` and fail to mix with them: a CUDA render would
    have met the same tensor on the CPU. The result is the plain CPU render, bit for bit."""
    scenes = [random_scene(3, WIDE), random_scene(4, WIDE)]
    gen = torch.Generator().manual_seed(3)
    K = torch.stack([sample_intrinsics(gen, 3, 24, 32, WIDE) for _ in scenes])
    c2w = torch.stack([sample_trajectory(gen, s, 3, WIDE) for s in scenes])
    plain = render_batch(scenes, K, c2w, 24, 32)
    torch.set_default_device("meta")
    try:
        guarded = render_batch([s.to("cpu") for s in scenes], K, c2w, 24, 32)
    finally:
        torch.set_default_device("cpu")
    for a, b in zip((plain.rgb, plain.depth, plain.valid, plain.world_points),
                    (guarded.rgb, guarded.depth, guarded.valid, guarded.world_points)):
        assert b.device.type == "cpu" and torch.equal(a, b)
    single = render(scenes[1], K[1], c2w[1], 24, 32)
    assert torch.equal(single.rgb, plain.rgb[1]) and torch.equal(single.world_points, plain.world_points[1])


def test_dataset_renders_on_its_device_and_the_seed_decides_the_sample() -> None:
    ds = SyntheticScenes((16, 16), seed=4, world=WIDE, device=torch.device("cpu"))
    a, b = ds[SampleKey(2, 3, 1)], SyntheticScenes((16, 16), seed=4, world=WIDE)[SampleKey(2, 3, 1)]
    dtypes = {"img": torch.float32, "pts3d": torch.float32, "valid": torch.bool, "depth": torch.float32,
              "intrinsics": torch.float32, "cam2world": torch.float32, "num_render_views": torch.int64,
              "scene_seed": torch.int64}
    assert set(a) == set(dtypes)
    for key, dtype in dtypes.items():
        assert a[key].device == ds.device and a[key].dtype == dtype, key
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["img"], SyntheticScenes((16, 16), seed=5, world=WIDE)[SampleKey(2, 3, 1)]["img"])


def test_fields_of_view_and_photo_shapes_cover_the_wide_world() -> None:
    gen = torch.Generator().manual_seed(0)
    draws = [sample_photo(gen, WIDE) for _ in range(400)]
    fovs = [math.degrees(f) for f, _ in draws]
    assert 35 <= min(fovs) < 38 and 92 < max(fovs) <= 95
    assert {a for _, a in draws} == set(WIDE.aspects)
    v1 = [math.degrees(sample_photo(gen, ROOMS_V1)[0]) for _ in range(100)]
    assert 50 <= min(v1) and max(v1) <= 80
    assert set(WORLDS) == {"rooms-v1", "wide"}


@pytest.mark.parametrize("photo", [(1600, 900), (900, 1600), (1200, 1200), (4032, 3024)])
def test_crop_focal_is_the_focal_of_the_pipelines_centre_crop(photo: tuple[int, int]) -> None:
    """A photo W×H with horizontal FOV F has focal W/(2·tan(F/2)) in its own pixels; the add-on's
    resize + centre crop to 64×64 scales that by the resize factor."""
    width, height = photo
    fov = math.radians(70)
    plan = plan_resize(width, height, (64, 64))
    expected = width / (2 * math.tan(fov / 2)) * plan.resized[0] / width
    assert crop_focal(fov, width / height, 64, 64) == pytest.approx(expected, rel=2e-2)


def test_sample_intrinsics_uses_the_photo_drawn() -> None:
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    K = sample_intrinsics(a, 4, 64, 64, WIDE)
    fov, aspect = sample_photo(b, WIDE)
    assert torch.allclose(K[:, 0, 0], torch.tensor(crop_focal(fov, aspect, 64, 64)))
    assert torch.allclose(K[:, 1, 1], K[:, 0, 0])


def test_orbits_are_full_rings_round_the_turntable() -> None:
    """Every camera at one distance from the centre (clear of the props), the ring closed (no gap
    larger than one step + jitter), each camera's axis through the centre (±0.15 m per axis) and
    the turntable's props seen in every view."""
    seed, scene = _turntable()
    n = 8
    c2w = orbit(torch.Generator().manual_seed(seed), scene, n)
    centre = scene.centre
    offset = c2w[:, :2, 3] - centre[:2]
    distance = offset.norm(dim=-1)
    assert torch.allclose(distance, distance[0]) and float(distance[0]) >= scene.subject_radius + ORBIT_DISTANCE[0]
    azimuth = torch.sort(torch.rad2deg(torch.atan2(offset[:, 1], offset[:, 0])) % 360).values
    gaps = torch.diff(torch.cat([azimuth, azimuth[:1] + 360]))
    assert float(gaps.max()) < 360 / n + 6.01 and float(gaps.sum()) == pytest.approx(360)
    to_centre = centre - c2w[:, :3, 3]
    along = (to_centre * c2w[:, :3, 2]).sum(-1, keepdim=True)
    miss = (to_centre - along * c2w[:, :3, 2]).norm(dim=-1)
    assert float(miss.max()) < 0.15 * math.sqrt(3) + 1e-4
    K = sample_intrinsics(torch.Generator().manual_seed(1), n, 32, 32, WIDE)
    out = render(scene, K, c2w, 32, 32)
    props_top = out.world_points[..., 2] > 1e-3
    near = (out.world_points[..., :2] - centre[:2]).norm(dim=-1) <= scene.subject_radius + 1e-3
    assert bool((props_top & near & out.valid).flatten(1).any(1).all())


def test_pans_turn_on_one_spot_clear_of_the_props() -> None:
    scene = random_scene(21, WIDE)
    assert scene.layout == "room"
    c2w = pan(torch.Generator().manual_seed(2), scene, 8, (200.0, 200.0))
    position = c2w[:, :3, 3]
    assert float((position - position.mean(0)).norm(dim=-1).max()) <= 0.1 * math.sqrt(3) + 1e-5
    assert bool(((position >= scene.room_min) & (position <= scene.room_max)).all())
    centres, radii = _prop_footprints(scene)
    assert bool((torch.cdist(position[:, :2], centres) - radii > PAN_CLEARANCE - 0.1 * math.sqrt(2)).all())
    yaw = torch.rad2deg(torch.atan2(c2w[:, 1, 2], c2w[:, 0, 2]))
    turned = torch.diff(yaw) % 360
    assert float(turned.sum()) == pytest.approx(200, abs=6)
    assert float(c2w[:, 2, 0].abs().max()) < 1e-5                 # no roll


def test_walks_reach_all_the_way_round() -> None:
    """Walk arcs run up to 360° (closed into a ring without repeating a view)."""
    scene = random_scene(1, ROOMS_V1)
    spans = []
    for seed in range(40):
        c2w = walk(torch.Generator().manual_seed(seed), scene, 8, WIDE.walk_deg)
        azimuth = torch.atan2(c2w[:, 1, 3], c2w[:, 0, 3])
        spans.append(float(torch.rad2deg(torch.diff(azimuth) % (2 * math.pi)).sum()))
    assert min(spans) < 60 and max(spans) > 280


def test_the_wide_world_mixes_layouts_textures_and_lights() -> None:
    scenes = [random_scene(seed, WIDE) for seed in range(60)]
    turntables = sum(s.layout == "turntable" for s in scenes)
    assert 10 <= turntables <= 35
    kinds = set(torch.cat([s.materials.kind for s in scenes]).tolist())
    assert kinds == set(range(len(Texture)))
    assert {s.light.direction.reshape(-1, 3).shape[0] for s in scenes} == {1, 2}
    v1 = [random_scene(seed) for seed in range(20)]
    assert all(s.layout == "room" and int(s.materials.kind.max()) < 5 for s in v1)


def test_a_batch_renders_in_one_pass_as_its_samples_do_alone() -> None:
    """``SyntheticScenes.batch`` (how a GPU makes its training batches: scenes padded to one shape,
    ray-cast together) gives each sample exactly as ``dataset[key]`` does, rooms and turntables mixed."""
    ds = SyntheticScenes((16, 24), seed=6, world=WIDE)
    keys = [SampleKey(i, 3, 1) for i in range(6)]
    assert {random_scene(_mix(ds.seed, k.index), WIDE).layout for k in keys} == {"room", "turntable"}
    batch = ds.batch(keys)
    assert batch["img"].shape == (6, 4, 3, 16, 24)
    for i, key in enumerate(keys):
        alone = ds[key]
        for name, value in alone.items():
            assert torch.equal(batch[name][i], value), (key, name)
