"""The level alignment's maths on synthetic cameras and points whose up, floor and centre are known.

The Blender-rendered scenes through the whole pipeline are in test_alignment_truth.py; here each
part of core/alignment.py is pushed where it can fail: a ring, a room scan, a strip whose x-axes
are all parallel, outlier cameras, the fallbacks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from plyfile import PlyData

from mvdust3r_blender.core.alignment import Alignment, aligned_bundle, alignment_of, estimate_alignment, fixed_alignment
from mvdust3r_blender.core.bundle import Bundle
from mvdust3r_blender.core.confidence import ConfidenceCut
from mvdust3r_blender.core.exports import export
from mvdust3r_blender.core.conventions import world_axes
from tests.helpers.cameras import Z_UP_WORLD, look_at


def in_first_camera(c2w: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cameras, points, truth world → bundle world [4,4]): the scene as the network gives it."""
    to_first = np.linalg.inv(c2w[0])
    return to_first @ c2w, points @ to_first[:3, :3].T + to_first[:3, 3], to_first


def truth_errors(alignment: Alignment, to_bundle: np.ndarray, floor_z: float, centre_xy: np.ndarray,
                 size: float) -> tuple[float, float, float]:
    """(up error in degrees, floor height error / size, centre error / size) of `alignment`."""
    truth_to_blender = alignment.matrix @ to_bundle
    up = truth_to_blender[:3, :3] @ [0.0, 0.0, 1.0]
    angle = math.degrees(math.acos(np.clip(up[2] / np.linalg.norm(up), -1, 1)))
    floor = truth_to_blender @ [centre_xy[0], centre_xy[1], floor_z, 1.0]
    return angle, abs(floor[2]) / size, float(np.linalg.norm(floor[:2])) / size


def plane(x: tuple[float, float], y: tuple[float, float], z: float, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.uniform(*x, n), rng.uniform(*y, n), np.full(n, z)], 1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)


def turntable(rng: np.random.Generator, roll: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Cameras on a ring at 15–45° elevation around (0.3, -0.2, 0.8) above a table at z = 0.75."""
    target = np.array([0.3, -0.2, 0.9])
    cams = []
    for k, azimuth in enumerate(np.linspace(0, 330, 12)):
        elevation = math.radians(15 + 30 * (k % 4) / 3)
        a = math.radians(azimuth)
        eye = target + 3.5 * np.array([math.cos(a) * math.cos(elevation), math.sin(a) * math.cos(elevation),
                                       math.sin(elevation)])
        cams.append(look_at(eye, target, Z_UP_WORLD, math.radians(rng.uniform(-roll, roll))))
    table = plane((-0.5, 1.1), (-1.0, 0.6), 0.75, 4000, rng)
    floor = plane((-4, 4), (-4, 4), 0.0, 6000, rng)
    floor = floor[np.hypot(floor[:, 0] - 0.3, floor[:, 1] + 0.2) > 1.2]
    blob = target + rng.normal(0, 0.12, (3000, 3))
    return np.stack(cams), np.concatenate([table, floor, blob])


def test_a_ring_lands_upright_on_its_table_under_the_point_it_looks_at(rng):
    c2w, points = turntable(rng)
    cams, pts, to_bundle = in_first_camera(c2w, points)
    alignment = estimate_alignment(cams, pts)
    up, floor, centre = truth_errors(alignment, to_bundle, 0.75, np.array([0.3, -0.2]), 8.0)
    assert alignment.method == "level" and alignment.centre_source == "ring"
    assert alignment.up_source == "cameras+floor" and alignment.cameras_used == 12
    assert up < 0.05 and floor < 1e-3 and centre < 1e-3, (up, floor, centre)
    assert 0 < alignment.roll_spread_deg < 2.0 and alignment.scale == pytest.approx(1.0)
    # the reference camera still looks along +Y (no turn about the vertical; its roll tilts it a little)
    forward = (alignment.matrix @ cams[0])[:3, 2]
    assert abs(forward[0]) < 0.05 and forward[1] > 0.5


def test_a_room_scan_looking_down_finds_the_floor_and_ignores_a_camera_held_sideways(rng):
    cams = [look_at(np.array([rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), 1.6]),
                    np.array([4 * math.cos(a), 3 * math.sin(a), 1.6 - 4 * math.tan(math.radians(rng.uniform(10, 25)))]),
                    Z_UP_WORLD, math.radians(rng.uniform(-3, 3)))
            for a in np.linspace(0, 2 * math.pi, 10, endpoint=False)]
    cams[3] = look_at(cams[3][:3, 3], np.array([0.0, 0.0, 0.5]), Z_UP_WORLD, math.radians(90))     # an outlier
    walls = np.concatenate([np.stack([np.full(3000, s * 4.5), rng.uniform(-3.5, 3.5, 3000), rng.uniform(0, 3, 3000)], 1)
                            for s in (-1, 1)] + [np.stack([rng.uniform(-4.5, 4.5, 3000), np.full(3000, s * 3.5),
                                                           rng.uniform(0, 3, 3000)], 1) for s in (-1, 1)])
    points = np.concatenate([plane((-4.5, 4.5), (-3.5, 3.5), 0.0, 8000, rng), walls,
                             plane((1.0, 2.0), (0.0, 1.0), 0.8, 1500, rng)])
    bundle_cams, pts, to_bundle = in_first_camera(np.stack(cams), points)
    alignment = estimate_alignment(bundle_cams, pts)
    up, floor, _ = truth_errors(alignment, to_bundle, 0.0, np.zeros(2), 11.0)
    assert alignment.method == "level" and alignment.centre_source == "points" and alignment.cameras_used == 9
    assert up < 0.05 and floor < 1e-3, (up, floor)
    assert alignment.floor_support > 0.2


def test_a_strip_with_a_steep_pitch_is_levelled_by_the_floor(rng):
    """Every x-axis is the same: the cameras fix up only up to a turn about it, their −y is 55° off."""
    cams = np.stack([look_at(np.array([x, 0.0, 1.6]), np.array([x, 1.6 / math.tan(math.radians(55)), 0.0]),
                             Z_UP_WORLD, math.radians(rng.uniform(-1, 1))) for x in np.linspace(-2, 2, 6)])
    points = np.concatenate([plane((-3, 3), (0, 3), 0.0, 8000, rng),
                             np.stack([rng.uniform(-3, 3, 2000), np.full(2000, 3.0), rng.uniform(0, 2, 2000)], 1)])
    bundle_cams, pts, to_bundle = in_first_camera(cams, points)
    alignment = estimate_alignment(bundle_cams, pts)
    up, floor, _ = truth_errors(alignment, to_bundle, 0.0, np.zeros(2), 5.0)
    assert alignment.up_source == "cameras+floor" and up < 0.05 and floor < 1e-3, (up, floor)
    without_floor = estimate_alignment(bundle_cams, pts[:10])
    assert truth_errors(without_floor, to_bundle, 0.0, np.zeros(2), 5.0)[0] > 40   # the floor is what fixed it


@pytest.mark.parametrize("case", ["one camera", "all rolled 90°", "failed poses"])
def test_without_evidence_it_falls_back_to_the_first_camera_rule(rng, case):
    c2w, points = turntable(rng, roll=0.0)
    failed: list[int] = []
    if case == "one camera":
        c2w = c2w[:1]
    elif case == "all rolled 90°":
        c2w = np.stack([look_at(c[:3, 3], np.array([0.3, -0.2, 0.9]), Z_UP_WORLD, math.radians(90)) for c in c2w])
    else:
        failed = list(range(1, len(c2w)))
    cams, pts, _ = in_first_camera(c2w, points)
    alignment = estimate_alignment(cams, pts, failed_views=failed)
    assert alignment.method == "first_camera" and alignment.fallback_reason
    np.testing.assert_array_equal(alignment.matrix, world_axes("Z_UP"))
    assert "first camera" in alignment.summary()


def test_it_is_recorded_and_read_back_exactly(rng):
    c2w, points = turntable(rng)
    cams, pts, _ = in_first_camera(c2w, points)
    alignment = estimate_alignment(cams, pts).scaled(2.5)
    again = Alignment.from_meta(alignment.to_meta())
    np.testing.assert_array_equal(again.matrix, alignment.matrix)
    assert again.scale == pytest.approx(2.5) and again.centre_source == "ring"
    np.testing.assert_array_equal(estimate_alignment(cams, pts).matrix, estimate_alignment(cams, pts).matrix)
    assert fixed_alignment("none").matrix.tolist() == np.eye(4).tolist()
    with pytest.raises(ValueError, match="not a rotation"):
        Alignment.from_meta({"matrix": np.diag([1.0, 2.0, 1.0, 1.0]).tolist()})


def test_exports_in_the_level_frame_stand_on_the_floor_with_gravity_down(rng, tmp_path):
    """PLY, COLMAP and 3DGS keep the bundle's y-down world: the floor at y = 0; glTF (y up after its flip)
    puts it at y = 0 too, the cameras above it. A re-export of the aligned bundle changes nothing."""
    c2w, points = turntable(rng)
    cams, pts, to_bundle = in_first_camera(c2w, points)
    n, m = len(cams), len(pts) // len(cams)
    grid = pts[: n * m].reshape(n, 1, m, 3)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1, m, 1))
    bundle = Bundle(images=np.zeros((n, 1, m, 3), np.uint8), pts3d=grid.astype(np.float32),
                    conf=np.full((n, 1, m), 2.0, np.float32),
                    intrinsics=np.tile(np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]], np.float32), (n, 1, 1)),
                    cam2world=cams.astype(np.float32), photo_size=np.tile(np.array([128, 96], np.int32), (n, 1)),
                    crop_box=np.tile(np.array([16, 0, 112, 96], np.float32), (n, 1)),
                    photo_paths=[f"/p/{k}.png" for k in range(n)], gaussian_rotation=quat.astype(np.float32),
                    gaussian_scale=np.full((n, 1, m, 3), 0.01, np.float32),
                    gaussian_opacity=np.full((n, 1, m), 0.5, np.float32), meta={"reference_view": 0})
    alignment = alignment_of(bundle, "level")
    written = export(bundle, ["ply", "gaussians"], tmp_path / "level", align="level",
                     cut=ConfidenceCut(confidence_drop_percent=0.0))
    vertex = PlyData.read(str(written["ply"]))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64)
    truth = np.c_[grid.reshape(-1, 3), np.ones(n * m)] @ (alignment.matrix @ np.eye(4)).T   # Blender frame
    np.testing.assert_allclose(xyz, np.stack([truth[:, 0], -truth[:, 2], truth[:, 1]], 1), atol=1e-4)
    table = np.abs(xyz[:, 1]) < 1e-3                          # the table top: y = 0 (gravity along +y)
    assert table.sum() > 1000 and xyz[:, 1].max() == pytest.approx(0.75, abs=1e-3)   # the room's floor, 0.75 below
    again = aligned_bundle(bundle, alignment)
    np.testing.assert_allclose(aligned_bundle(again, alignment_of(again, "level")).pts3d, again.pts3d, atol=1e-5)
    assert again.cam2world[:, 1, 3].max() < 0                 # every camera above the floor (y up is negative)
    splats = PlyData.read(str(written["gaussians"]))["vertex"]
    np.testing.assert_allclose(np.stack([splats["x"], splats["y"], splats["z"]], 1), xyz, atol=1e-5)
