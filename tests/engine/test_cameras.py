"""Camera recovery: parity with the official post-processing and accuracy on ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mvdust3r_blender.engine.cameras import (pose_mask, estimate_cameras, estimate_focal, grid_intrinsics,
                                             photo_intrinsics, solve_poses)
from training.metrics import camera_metrics, rotation_angle_deg
from synthetic_scenes import make_scene


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


def test_photo_intrinsics_project_points_onto_the_grid_pixel_centres():
    """The grid camera (integer indices, pp w/2) re-expressed in photo pixels lands every point on
    its pixel centre x0+(j+0.5)(x1−x0)/w, y0+(i+0.5)(y1−y0)/h of the crop box."""
    h, w, f = 24, 32, 28.0
    scene = make_scene(1, h, w, focal=f, seed=5)
    boxes = np.array([[37.5, 0.0, 279.25, 240.0], [0.0, 24.7, 150.0, 174.6]])
    K = photo_intrinsics(f, (h, w), boxes)
    cam = scene.pts3d[0].reshape(-1, 3).astype(np.float64)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for box, k in zip(boxes, K):
        proj = cam @ k.T
        uv = proj[:, :2] / proj[:, 2:]
        expected = np.stack([box[0] + (j + 0.5) * (box[2] - box[0]) / w,
                             box[1] + (i + 0.5) * (box[3] - box[1]) / h], -1).reshape(-1, 2)
        np.testing.assert_allclose(uv, expected, atol=1e-4)
    # the identity crop of a w×h photo: principal point half a pixel right/below the centre
    K0 = photo_intrinsics(f, (h, w), np.array([[0.0, 0.0, w, h]]))[0]
    np.testing.assert_allclose(K0, [[f, 0, w / 2 + 0.5], [0, f, h / 2 + 0.5], [0, 0, 1]])


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
