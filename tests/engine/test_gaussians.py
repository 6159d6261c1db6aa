"""World-frame Gaussians from the head's raw outputs."""
from __future__ import annotations

import torch

from mvdust3r_blender.engine.gaussians import OPACITY_EPS, gaussian_fields, normalisation_factor


def _raw(n=2, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    return pts, 0.1 * torch.randn(n, h, w, 3, generator=g), torch.randn(n, h, w, 4, generator=g) * 3


def test_norm_factor_is_the_mean_distance_over_valid_pixels():
    pts = torch.zeros(1, 1, 3, 3)
    pts[0, 0, :, 2] = torch.tensor([1.0, 3.0, 100.0])
    valid = torch.tensor([[[True, True, False]]])
    assert normalisation_factor(pts, valid) == 2.0


def test_scales_are_the_training_clamp_in_world_units_even_for_negative_raw_values():
    pts, scale, rot = _raw()
    scale[0, 0, 0] = torch.tensor([-0.5, 0.0, 1e-9])   # negative and zero: the head has no activation
    valid = torch.ones(pts.shape[:3], dtype=torch.bool)
    nf = float(pts.norm(dim=-1).mean())
    out = gaussian_fields(pts, valid, scale, rot, torch.sigmoid(torch.randn(pts.shape[:3])))
    assout = out.scale
    assert abs(out.norm_factor - nf) < 1e-5
    assert bool((assout > 0).all())
    assert torch.allclose(assout[0, 0, 0], torch.full((3,), 1e-4 * out.norm_factor))
    # what the official renderer saw: clamp(scale / nf, 1e-4, 4e-3); ours × nf must equal it
    torch.testing.assert_close(assout / out.norm_factor, (scale / out.norm_factor).clamp(1e-4, 4e-3))
    # in-range values pass through untouched
    inside = (scale > 1e-4 * nf) & (scale < 4e-3 * nf)
    assert bool(inside.any()) and torch.equal(assout[inside], scale[inside])


def test_rotations_are_unit_quaternions_and_zero_becomes_identity():
    pts, scale, rot = _raw()
    rot[1, 2, 3] = 0.0
    out = gaussian_fields(pts, torch.ones(pts.shape[:3], dtype=torch.bool), scale, rot, torch.rand(pts.shape[:3]))
    torch.testing.assert_close(out.rotation.norm(dim=-1), torch.ones(pts.shape[:3]))
    assert out.rotation[1, 2, 3].tolist() == [1.0, 0.0, 0.0, 0.0]
    # same direction as the raw quaternion (w,x,y,z order untouched)
    torch.testing.assert_close(out.rotation[0, 0, 0], rot[0, 0, 0] / rot[0, 0, 0].norm())


def test_opacity_stays_strictly_inside_zero_one_and_accepts_a_trailing_channel():
    pts, scale, rot = _raw(n=1, h=1, w=3)
    opacity = torch.tensor([[[0.0, 0.5, 1.0]]]).unsqueeze(-1)  # [N,h,w,1] as the official head returns
    out = gaussian_fields(pts, torch.ones(1, 1, 3, dtype=torch.bool), scale, rot, opacity, rgb=torch.zeros(1, 1, 3, 3))
    assert out.opacity.shape == (1, 1, 3)
    assert torch.equal(out.opacity[0, 0], torch.tensor([OPACITY_EPS, 0.5, 1 - OPACITY_EPS]))
    assert bool((out.opacity < 1).all()) and out.rgb is not None
