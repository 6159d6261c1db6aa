"""Camera recovery: the official post-processing (golden regression), the recovery the pipeline runs on
synthetic ground truth, and its degenerate inputs. The Blender-rendered truth is test_cameras_truth.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mvdust3r_blender.engine.cameras import (ViewGeometry, grid_intrinsics_of, grid_offsets, photo_intrinsics,
                                             pose_mask, recover_cameras)
from training.metrics import camera_metrics, rotation_angle_deg
from training.official_cameras import estimate_cameras, estimate_focal, grid_intrinsics, solve_poses
from tests.helpers.synthetic_scenes import make_scene


def test_matches_the_official_postprocessing_golden(golden):
    g = np.load(golden / "postprocess_synthetic.npz")
    est = estimate_cameras(torch.from_numpy(g["pts3d"]), torch.from_numpy(g["conf"]), 3.0)
    np.testing.assert_array_equal(est.mask.numpy(), g["mask"])
    np.testing.assert_array_equal(est.valid_first.numpy(), g["valid_first"])
    assert est.focal == pytest.approx(float(g["focal"]), rel=1e-6)
    np.testing.assert_allclose(est.K, g["K"], rtol=1e-6)
    np.testing.assert_allclose(est.poses.cam2world, g["c2ws"], atol=1e-5)
    assert est.poses.failed == []


def test_pose_mask_uses_one_global_threshold():
    conf = torch.arange(1, 201, dtype=torch.float32).reshape(2, 10, 10)  # 1..200
    mask = pose_mask(conf, 3.0)  # index int(200*0.03)=6 → threshold 7
    assert int(mask.sum()) == 194 and bool(mask[0, 0, 6]) and not bool(mask[0, 0, 5])
    assert bool(pose_mask(conf, 0.0).all())


@pytest.mark.parametrize("noise, outliers, rot_deg, trans_deg, focal_rel", [
    (0.0, 0.0, 0.01, 0.05, 1e-4),
    (0.003, 0.0, 0.5, 2.0, 0.01),
    (0.003, 0.2, 0.5, 2.0, 0.01),   # 20 % outliers, half of them confident: RANSAC must reject them
])
def test_recovers_known_cameras(noise, outliers, rot_deg, trans_deg, focal_rel):
    scene = make_scene(5, 48, 64, focal=50.0, seed=3, noise=noise, outliers=outliers)
    if outliers:  # the focal uses view 0 above its own 3 % threshold: there, only 2 % unconfident outliers
        bad = ~scene.inlier[0] & (np.random.default_rng(0).random(scene.inlier[0].shape) < 0.1)
        scene.pts3d[0] = np.where(bad[..., None], scene.pts3d[0], scene.clean[0])
        scene.conf[0][bad] = 1.0
    est = estimate_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf), 3.0)
    m = camera_metrics(est.poses.cam2world, scene.c2w, est.focal, scene.focal)
    assert m.rre < rot_deg and m.rte < trans_deg and m.mae < focal_rel, m
    # absolute: every camera (not only pairs) in the world frame of view 0
    err_R = rotation_angle_deg(np.swapaxes(est.poses.cam2world[:, :3, :3], 1, 2) @ scene.c2w[:, :3, :3])
    assert err_R.max() < rot_deg
    assert np.abs(est.poses.cam2world[:, :3, 3] - scene.c2w[:, :3, 3]).max() < 0.1 + 20 * noise


def test_focal_ignores_invalid_pixels():
    scene = make_scene(2, 32, 32, focal=30.0, seed=1)
    pts = torch.from_numpy(scene.pts3d[0]).clone()
    valid = torch.ones(32, 32, dtype=torch.bool)
    pts[:4] = torch.tensor([5.0, -5.0, 1.0])   # garbage rows, masked out
    valid[:4] = False
    assert estimate_focal(pts, valid) == pytest.approx(30.0, rel=1e-5)


def test_failed_pnp_keeps_the_official_fallback_and_is_reported():
    scene = make_scene(3, 16, 16, seed=2)
    mask = torch.ones(3, 16, 16, dtype=torch.bool)
    mask[2] = False
    mask[2, 0, :3] = True  # 3 points: too few for PnP
    poses = solve_poses(torch.from_numpy(scene.pts3d), mask, grid_intrinsics(40.0, 16, 16))
    assert poses.failed == [2]
    np.testing.assert_allclose(poses.cam2world[2], np.linalg.inv(np.array(
        [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1.0]])))
    assert poses.inliers[0] > 200 and poses.inliers[2] == 0


def test_grid_and_photo_intrinsics_are_one_camera_in_the_networks_pixel_convention():
    """Grid index (i, j) is photo point (x0 + j·sx, y0 + i·sy): the grid K (per axis, principal point at the
    photo centre) and the photo K project every camera-frame point to the same photo point."""
    h, w = 24, 32
    boxes = np.array([[37.5, 0.0, 279.25, 240.0], [0.0, 24.7, 150.0, 174.6]])
    geometry = ViewGeometry(boxes, np.array([[320.0, 240.0], [150.0, 200.0]]), np.array([0, 1]))
    focal = np.array([250.0, 180.0])
    grid_K = grid_intrinsics_of(focal, geometry, h, w)
    photo_K = photo_intrinsics(focal, geometry.photo_size)
    np.testing.assert_allclose(photo_K[1], [[180, 0, 75], [0, 180, 100], [0, 0, 1]])
    assert grid_K[0, 0, 0] != pytest.approx(grid_K[0, 1, 1], rel=1e-4)   # the two axes scale differently
    offsets = grid_offsets(geometry, h, w, torch.device("cpu")).double().numpy()   # float32: 1e-4 px
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for v in range(2):
        rays = np.stack([j, i, np.ones_like(i)], -1).reshape(-1, 3) @ np.linalg.inv(grid_K[v]).T
        on_photo = rays @ photo_K[v].T
        np.testing.assert_allclose(on_photo[:, :2] / on_photo[:, 2:], offsets[v] + geometry.photo_size[v] / 2,
                                   atol=1e-4)
        x0, y0, x1, y1 = boxes[v]
        np.testing.assert_allclose(offsets[v, w + 1] + geometry.photo_size[v] / 2,
                                   [x0 + (x1 - x0) / w, y0 + (y1 - y0) / h])


def test_unusable_focal_falls_back_to_sixty_degrees_and_is_reported():
    scene = make_scene(2, 16, 16, seed=4)
    behind = torch.from_numpy(scene.pts3d) * torch.tensor([1.0, 1.0, -1.0])  # every point behind its camera
    est = estimate_cameras(behind, torch.from_numpy(scene.conf))
    assert est.focal_fallback and est.focal == pytest.approx(16 / (2 * np.tan(np.radians(30))))
    assert not estimate_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf)).focal_fallback


def test_pose_loop_reports_progress_and_checks_for_cancel():
    import threading

    from mvdust3r_blender.engine.errors import Cancelled

    scene = make_scene(3, 16, 16, seed=2)
    seen: list[float] = []
    solve_poses(torch.from_numpy(scene.pts3d), torch.ones(3, 16, 16, dtype=torch.bool),
                grid_intrinsics(40.0, 16, 16), progress=seen.append)
    assert seen == [1 / 3, 2 / 3, 1.0]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="camera poses"):
        solve_poses(torch.from_numpy(scene.pts3d), torch.ones(3, 16, 16, dtype=torch.bool),
                    grid_intrinsics(40.0, 16, 16), cancel=stop)


# ------------------------------------------------------------------ recover_cameras (what the pipeline runs)

def _square_geometry(n: int, size: int, camera: list[int] | None = None) -> ViewGeometry:
    """n photos of size×size pixels whose grid is the whole photo (grid pixel = photo pixel)."""
    return ViewGeometry(np.tile([0.0, 0.0, size, size], (n, 1)), np.tile([float(size), float(size)], (n, 1)),
                        np.array(camera if camera is not None else [0] * n, dtype=np.int64))


def _warned(cams) -> set[int]:
    return {v for w in cams.warnings for v in w.views}


@pytest.mark.parametrize("noise, outliers, rot_deg, centre, focal_rel", [
    (0.0, 0.0, 1e-4, 1e-5, 1e-6),
    (0.003, 0.0, 0.3, 0.05, 0.01),
    (0.003, 0.2, 0.3, 0.05, 0.01),   # 20 % outliers, half of them confident: the robust solve must reject them
])
def test_batched_recovery_finds_known_cameras(noise, outliers, rot_deg, centre, focal_rel):
    scene = make_scene(6, 48, 48, focal=50.0, seed=3, noise=noise, outliers=outliers)
    cams = recover_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf), _square_geometry(6, 48))
    err_R = rotation_angle_deg(np.swapaxes(cams.cam2world[:, :3, :3], 1, 2) @ scene.c2w[:, :3, :3])
    assert err_R.max() < rot_deg and np.abs(cams.cam2world[:, :3, 3] - scene.c2w[:, :3, 3]).max() < centre
    assert np.abs(cams.focal / 50.0 - 1).max() < focal_rel and cams.failed == [] and cams.warnings == []
    np.testing.assert_array_equal(cams.cam2world[0], np.eye(4))
    assert cams.focal_source == ["estimated"] * 6


def test_views_of_other_cameras_get_their_own_focal():
    """Cameras 0 (views 0, 2, 4) and 1 (views 1, 3, 5) have different focals; camera 1 has no reference view."""
    K = np.array([[[f, 0, 24], [0, f, 24], [0, 0, 1]] for f in (40.0, 70.0) * 3])
    scene = make_scene(6, 48, 48, seed=5, grid_K=K)
    cams = recover_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf),
                           _square_geometry(6, 48, [0, 1, 0, 1, 0, 1]))
    np.testing.assert_allclose(cams.focal, K[:, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(cams.cam2world, scene.c2w, atol=1e-5)


def _plane_scene(n: int, focals: list[float], size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Views of one flat wall (z = 4 in view 0's frame), each with its own focal: points [n,s,s,3], c2w [n,4,4]."""
    from tests.helpers.cameras import look_at

    c2w = np.stack([look_at(np.array([0.6 * k - 0.2 * k * k, 0.15 * k, 0.0]), np.array([0.1 * k, 0.0, 4.0]))
                    for k in range(n)])
    c2w = np.linalg.inv(c2w[0]) @ c2w
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    points = np.zeros((n, size, size, 3))
    for v in range(n):
        rays = np.stack([(j - size / 2) / focals[v], (i - size / 2) / focals[v], np.ones((size, size))], -1)
        world_rays = rays @ c2w[v, :3, :3].T
        depth = (4.0 - c2w[v, 2, 3]) / world_rays[..., 2]
        points[v] = c2w[v, :3, 3] + world_rays * depth[..., None]
    return points.astype(np.float32), c2w


def test_one_flat_wall_keeps_poses_and_says_which_focal_it_could_not_measure():
    points, c2w = _plane_scene(4, [45.0, 45.0, 60.0, 60.0])
    cams = recover_cameras(torch.from_numpy(points), torch.full(points.shape[:3], 5.0),
                           _square_geometry(4, 40, [0, 0, 1, 1]))
    # camera 0 holds the reference view: its focal comes from the view's own frame, its poses are exact
    assert cams.focal[:2] == pytest.approx([45.0, 45.0], rel=1e-5)
    np.testing.assert_allclose(cams.cam2world[:2], c2w[:2], atol=1e-4)
    # camera 1 sees only the plane and no reference view: documented fallback (60°) and a warning naming its views
    assert cams.focal_source == ["estimated", "estimated", "fallback", "fallback"]
    assert cams.focal[2] == pytest.approx(40 / (2 * np.tan(np.radians(30))))
    assert any(w.views == [2, 3] and "one flat surface" in w.message for w in cams.warnings)
    assert cams.failed == []


def test_points_behind_every_camera_fall_back_with_warnings_for_every_view():
    scene = make_scene(3, 16, 16, seed=4)
    behind = torch.from_numpy(scene.pts3d) * torch.tensor([1.0, 1.0, -1.0])
    cams = recover_cameras(behind, torch.from_numpy(scene.conf), _square_geometry(3, 16))
    assert cams.focal_source == ["fallback"] * 3
    assert cams.focal[0] == pytest.approx(16 / (2 * np.tan(np.radians(30))))
    assert _warned(cams) == {0, 1, 2} and any("behind" in w.message for w in cams.warnings)
    assert np.isfinite(cams.cam2world).all()


def test_nan_points_and_a_view_without_confident_pixels_fail_only_that_view():
    scene = make_scene(5, 32, 32, focal=30.0, seed=6)
    pts, conf = torch.from_numpy(scene.pts3d).clone(), torch.from_numpy(scene.conf).clone()
    pts[1, :5] = float("nan")                    # scattered NaN: those pixels are left out
    conf[3, 10:] = float("inf")
    pts[2] = float("nan")                        # a whole view of NaN
    conf[4] = 1.0                                # a view below the confidence threshold everywhere
    cams = recover_cameras(pts, conf, _square_geometry(5, 32), drop_percent=30.0)
    assert cams.failed == [2, 4] and _warned(cams) == {2, 4}
    assert not cams.mask[2].any() and not cams.mask[4].any() and not cams.mask[1, :5].any()
    good = [0, 1, 3]
    np.testing.assert_allclose(cams.cam2world[good], scene.c2w[good], atol=1e-4)
    assert cams.focal == pytest.approx([30.0] * 5, rel=1e-5)
    for v in (2, 4):
        np.testing.assert_allclose(np.linalg.inv(cams.cam2world[v])[:3, 3], [1.0, 1.0, 1.0])
        assert any(v in w.views and "only 0 confident points" in w.message for w in cams.warnings)


def test_recovery_reports_progress_and_checks_for_cancel():
    import threading

    from mvdust3r_blender.engine.errors import Cancelled

    scene = make_scene(3, 16, 16, seed=2)
    seen: list[float] = []
    recover_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf), _square_geometry(3, 16),
                    progress=seen.append)
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="camera poses"):
        recover_cameras(torch.from_numpy(scene.pts3d), torch.from_numpy(scene.conf), _square_geometry(3, 16),
                        cancel=stop)
