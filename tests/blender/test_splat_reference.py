"""The reference 3DGS rasteriser against cases worked out by hand: one Gaussian on the optical axis
(a closed-form image), the EWA covariance against a finite-difference Jacobian of the projection,
two Gaussians composited front to back whatever their order, the 0.99 alpha cap and the
transmittance cut-off."""
from __future__ import annotations

import numpy as np

from tests.helpers.splat_reference import ALPHA_MAX, LOW_PASS, projected_covariances, quaternion_matrices, rasterize

W, H = 48, 40
K = np.array([[60.0, 0, 24.25], [0, 60.0, 19.75], [0, 0, 1]])
IDENTITY = np.eye(4)
NO_ROTATION = np.array([[1.0, 0, 0, 0]])


def pixel_centres() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    return xx, yy


def test_one_isotropic_gaussian_is_the_closed_form() -> None:
    """On the axis J = diag(f/z): the image is o·exp(−½ d²/(σ_px² + 0.3)) at every pixel centre."""
    depth, sigma, opacity = 4.0, 0.1, 0.8
    image = rasterize(np.array([[0, 0, depth]]), NO_ROTATION, np.full((1, 3), sigma), np.array([opacity]),
                      np.array([[0.2, 0.5, 1.0]]), IDENTITY, K, W, H)
    xx, yy = pixel_centres()
    variance = (K[0, 0] * sigma / depth) ** 2 + LOW_PASS
    expected = opacity * np.exp(-0.5 * ((xx - K[0, 2]) ** 2 + (yy - K[1, 2]) ** 2) / variance)
    radius = np.ceil(3 * np.sqrt(variance))
    reached = (np.abs(np.floor(xx) - np.floor(K[0, 2])) <= radius) & (np.abs(np.floor(yy) - np.floor(K[1, 2])) <= radius)
    expected = np.where(reached & (expected >= 1 / 255), expected, 0.0)
    assert expected.max() > 0.75 and (expected > 0).sum() > 50
    assert np.allclose(image.alpha, expected, atol=1e-12)
    assert np.allclose(image.colour, expected[..., None] * [0.2, 0.5, 1.0], atol=1e-12)


def test_ewa_covariance_is_the_linearised_projection() -> None:
    """An anisotropic, rotated, off-axis Gaussian: Σ₂ = J·Σ_cam·Jᵀ + 0.3 with J the projection's own
    derivative (central differences here), for a camera that is not the identity."""
    rng = np.random.default_rng(3)
    q = rng.normal(size=(1, 4))
    scales = np.array([[0.3, 0.05, 0.12]])
    mean = np.array([[0.4, -0.3, 3.0]])
    angle = 0.3
    world2cam = np.eye(4)
    world2cam[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    world2cam[:3, 3] = [0.1, 0.2, 0.5]
    uv, depth, cov = projected_covariances(mean, q, scales, world2cam, K, W, H)

    def project(p: np.ndarray) -> np.ndarray:
        c = world2cam[:3, :3] @ p + world2cam[:3, 3]
        return (K @ c)[:2] / c[2]

    eps = 1e-6
    jac = np.stack([(project(mean[0] + eps * e) - project(mean[0] - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
    rot = quaternion_matrices(q)[0]
    sigma = rot @ np.diag(scales[0] ** 2) @ rot.T
    assert np.allclose(uv[0], project(mean[0]))
    assert np.isclose(depth[0], (world2cam[:3, :3] @ mean[0] + world2cam[:3, 3])[2])
    assert np.allclose(cov[0], jac @ sigma @ jac.T + LOW_PASS * np.eye(2), rtol=1e-6)
    assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)


def test_two_gaussians_composite_front_to_back_in_any_order() -> None:
    """Red in front (α₁), blue behind (α₂), same pixel: C = red·α₁ + blue·α₂·(1 − α₁), A = 1 − (1−α₁)(1−α₂);
    the input order does not matter; a fully opaque Gaussian is capped at α = 0.99."""
    means = np.array([[0, 0, 2.0], [0, 0, 3.0]])
    scales = np.full((2, 3), 0.5)            # wide: a few pixels around the centre see almost the peak
    colours = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    for opacity in ([0.6, 0.7], [1.0, 0.7]):
        o = np.array(opacity)
        forward = rasterize(means, np.repeat(NO_ROTATION, 2, 0), scales, o, colours, IDENTITY, K, W, H)
        backward = rasterize(means[::-1], np.repeat(NO_ROTATION, 2, 0), scales, o[::-1], colours[::-1], IDENTITY, K, W, H)
        assert np.allclose(forward.colour, backward.colour) and np.allclose(forward.alpha, backward.alpha)
        xx, yy = pixel_centres()
        d2 = (xx - K[0, 2]) ** 2 + (yy - K[1, 2]) ** 2
        a1 = np.minimum(ALPHA_MAX, o[0] * np.exp(-0.5 * d2 / ((K[0, 0] * 0.5 / 2.0) ** 2 + LOW_PASS)))
        a2 = np.minimum(ALPHA_MAX, o[1] * np.exp(-0.5 * d2 / ((K[0, 0] * 0.5 / 3.0) ** 2 + LOW_PASS)))
        centre = (int(K[1, 2]), int(K[0, 2]))
        assert np.allclose(forward.colour[centre], [a1[centre], 0, a2[centre] * (1 - a1[centre])])
        assert np.isclose(forward.alpha[centre], 1 - (1 - a1[centre]) * (1 - a2[centre]))
        if opacity[0] == 1.0:
            assert np.isclose(forward.colour[centre][0], ALPHA_MAX, atol=1e-3)


def test_compositing_stops_at_transmittance_1e4() -> None:
    """Three stacked Gaussians, α = 0.99, 0.9, 0.99 at the centre: the transmittance after the third
    would be 1e-5 < 1e-4, so it is never added (the official early stop); the first two are."""
    means = np.array([[0, 0, 2.0], [0, 0, 2.5], [0, 0, 3.0]])
    image = rasterize(means, np.repeat(NO_ROTATION, 3, 0), np.full((3, 3), 2.0), np.array([1.0, 0.9, 1.0]),
                      np.eye(3), IDENTITY, K, W, H)
    centre = (int(K[1, 2]), int(K[0, 2]))
    assert np.allclose(image.colour[centre], [ALPHA_MAX, 0.9 * (1 - ALPHA_MAX), 0], atol=1e-6)
    assert np.isclose(image.alpha[centre], 1 - (1 - ALPHA_MAX) * 0.1, atol=1e-6)
