"""The splat model without Blender: ordering a Gaussian's axes keeps the Gaussian, and the fallback
pixel footprint is depth / fx in each Gaussian's own view."""
from __future__ import annotations

import numpy as np

from mvdust3r_blender.core.splats import pixel_footprints, sort_axes


def rotation_matrices(wxyz: np.ndarray) -> np.ndarray:
    """[M,3,3] from unit (w,x,y,z), written out independently of the package."""
    w, x, y, z = wxyz.astype(np.float64).T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def test_sort_axes_keeps_each_covariance_and_orders_sigma() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5000, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scales = rng.uniform(0.01, 1.0, (5000, 3)).astype(np.float32)
    scales[:10] = scales[:10, :1]            # ties: any order is the same Gaussian
    got_q, got_s = sort_axes(q, scales)
    assert got_q.dtype == np.float32 and got_s.dtype == np.float32
    assert np.all(np.diff(got_s, axis=1) <= 0) and np.all(got_q[:, 0] >= 0)
    assert np.allclose(np.linalg.norm(got_q, axis=1), 1.0, atol=1e-6)
    before, after = rotation_matrices(q), rotation_matrices(got_q)
    cov_before = before @ (scales[:, :, None].astype(np.float64) ** 2 * before.transpose(0, 2, 1))
    cov_after = after @ (got_s[:, :, None].astype(np.float64) ** 2 * after.transpose(0, 2, 1))
    assert np.allclose(cov_after, cov_before, atol=1e-5)
    # the local z axis is now the thinnest: R·e_z is the eigenvector of the smallest eigenvalue
    assert np.allclose(np.abs(np.einsum("mij,mj->mi", cov_before, after[:, :, 2])),
                       got_s[:, 2:3].astype(np.float64) ** 2 * np.abs(after[:, :, 2]), atol=1e-5)


def test_pixel_footprint_is_depth_over_focal_in_the_own_view() -> None:
    rng = np.random.default_rng(1)
    cam2world = np.tile(np.eye(4), (2, 1, 1))
    cam2world[1, :3, :3] = rotation_matrices(np.array([[np.cos(0.3), 0.0, np.sin(0.3), 0.0]]))[0]
    cam2world[1, :3, 3] = [1.0, -0.5, 0.2]
    intrinsics = np.tile(np.diag([200.0, 220.0, 1.0]), (2, 1, 1))
    intrinsics[1, 0, 0] = 150.0
    pts3d = rng.normal(size=(2, 3, 4, 3)) + [0.0, 0.0, 5.0]
    got = pixel_footprints(pts3d.astype(np.float32), cam2world.astype(np.float32), intrinsics.astype(np.float32))
    expected = [abs((np.linalg.inv(cam2world[v]) @ [*p, 1.0])[2]) / intrinsics[v, 0, 0]
                for v in range(2) for p in pts3d[v].reshape(-1, 3)]
    assert got.shape == (24,) and np.allclose(got, expected, rtol=1e-5)
