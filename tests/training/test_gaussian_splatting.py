"""The torch Gaussian rasteriser: closed-form α compositing, occlusion order, blob position,
gradients; the rendering loss through the real network."""
from __future__ import annotations

import math

import pytest
import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import build_model
from training.dataset import SampleKey, SyntheticScenes, network_views
from training.loss import gaussian_render_loss
from training.splatting import quaternion_matrix, render_gaussians

torch.set_num_threads(1)
K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
WHITE = torch.ones(3)


def _two(depth_red: float, depth_green: float) -> torch.Tensor:
    means = torch.tensor([[0.0, 0.0, depth_red], [0.0, 0.0, depth_green]])
    return render_gaussians(means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.05),
                            torch.tensor([0.9, 0.9]), torch.eye(3)[:2], torch.eye(4), K, 16, 16, WHITE, reach=2)


def _alpha(depth: float, d2: float) -> float:
    """α of an isotropic Gaussian (σ = 0.05 m) at `depth` for a pixel d2 px² from its centre."""
    var = (20.0 * 0.05 / depth) ** 2 + 0.1
    return 0.9 * math.exp(-0.5 * d2 / var)


def test_front_to_back_compositing_matches_the_closed_form() -> None:
    image = _two(2.0, 3.0)
    a1, a2 = _alpha(2.0, 0.5), _alpha(3.0, 0.5)          # pixel (7, 7): centre (7.5, 7.5), d² = 0.5
    expected = torch.tensor([a1, (1 - a1) * a2, 0.0]) + (1 - a1) * (1 - a2) * WHITE
    assert torch.allclose(image[7, 7], expected, atol=1e-5)
    assert torch.allclose(image[0, 0], WHITE)            # far from both: background


def test_the_nearer_gaussian_covers_the_farther_one() -> None:
    red_front, green_front = _two(2.0, 3.0)[7, 7], _two(3.0, 2.0)[7, 7]
    assert red_front[0] > red_front[1] and green_front[1] > green_front[0]


def test_blob_is_centred_on_the_projection() -> None:
    # a Gaussian projecting to (10.5, 5.5), a pixel centre: its footprint is symmetric around (10, 5)
    means = torch.tensor([[2.5 * 2 / 20, -2.5 * 2 / 20, 2.0]])
    image = render_gaussians(means, torch.tensor([[0.7, 0.1, -0.5, 0.2]]), torch.tensor([[0.08, 0.03, 0.05]]),
                             torch.tensor([0.8]), torch.zeros(1, 3), torch.eye(4), K, 16, 16, WHITE, reach=2)
    ink = 1 - image[..., 0]
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    assert float((ink * xs).sum() / ink.sum()) == pytest.approx(10.0, abs=1e-4)
    assert float((ink * ys).sum() / ink.sum()) == pytest.approx(5.0, abs=1e-4)
    assert float(ink[5, 10]) == pytest.approx(0.8, rel=1e-5)   # the centre pixel gets the full opacity


def test_quaternions_give_rotations() -> None:
    q = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    r = quaternion_matrix(q)
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    half = math.pi / 4                                           # 90° about z: x → y
    rz = quaternion_matrix(torch.tensor([[math.cos(half), 0, 0, math.sin(half)]]))[0]
    assert torch.allclose(rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_gradients_reach_every_gaussian_parameter() -> None:
    params = [torch.tensor([[0.02, -0.01, 2.0], [0.0, 0.03, 3.0]]), torch.tensor([[1.0, 0.1, 0, 0]] * 2),
              torch.full((2, 3), 0.05), torch.tensor([0.6, 0.7]), torch.tensor([[0.2, 0.5, 0.1], [0.9, 0.3, 0.4]])]
    for p in params:
        p.requires_grad_(True)
    image = render_gaussians(*params, torch.eye(4), K, 16, 16, WHITE, reach=2)
    (image ** 2).sum().backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_rendering_loss_trains_the_gaussian_heads() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=1, dec_embed_dim=32, dec_depth=1,
                      dec_num_heads=1, skip_dim=8, gs_mlp_dim=8, img_size=(32, 32))
    model = build_model(cfg).train()
    ds = SyntheticScenes((32, 32), seed=5)
    samples = [ds[SampleKey(i, 3, 2)] for i in range(2)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    res1, res2s = model(*network_views(batch))
    assert len(res2s) == 2                                       # render views are not network inputs
    loss = gaussian_render_loss(res1, res2s, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = dict(model.named_parameters())
    for name in ("downstream_GS_head.0.mlp_opacity.2.weight", "downstream_GS_head.1.mlp_rotation.2.weight",
                 "downstream_head1.proj.weight"):
        assert grads[name].grad is not None and grads[name].grad.abs().sum() > 0, name
    no_render = {**batch, "img": batch["img"][:, :3], "num_render_views": torch.zeros(2, dtype=torch.long)}
    assert float(gaussian_render_loss(res1, res2s, no_render)) == 0.0


def test_compositing_stays_exact_with_many_gaussians() -> None:
    """Some 10⁵ contributions sorted before the tested pixel must not blur its transmittance
    (a float32 running sum of log-transmittance would: ≈ 1e-4 error here)."""
    gen = torch.Generator().manual_seed(0)
    n = 20000
    # a crowd drawn into columns 2..8, sorted before the lone Gaussian projecting to u = 11
    crowd = torch.cat([torch.rand(n, 2, generator=gen) * 0.6 - 0.3, torch.full((n, 1), 2.0)], -1)
    crowd[:, 0] = -0.39 + 0.08 * torch.rand(n, generator=gen)
    means = torch.cat([crowd, torch.tensor([[0.3, 0.0, 2.0], [0.45, 0.0, 3.0]])])   # both project to u = 11
    opacity = torch.full((n + 2,), 0.9)
    colour = torch.zeros(n + 2, 3)
    colour[-2:, 0] = 1.0                                   # red pair on black: the second one's
    image = render_gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).expand(n + 2, 4),  # weight is T·α
                             torch.full((n + 2, 3), 0.05), opacity, colour, torch.eye(4), K, 16, 16,
                             torch.zeros(3), reach=2)

    def alpha(x: float, z: float, s: float = 0.05) -> float:
        # EWA off the axis: var_u = s²((f/z)² + (f·x/z²)²), var_v = s²(f/z)², plus eps2d = 0.1
        var_u = s ** 2 * ((20 / z) ** 2 + (20 * x / z ** 2) ** 2) + 0.1
        var_v = s ** 2 * (20 / z) ** 2 + 0.1
        return 0.9 * math.exp(-0.5 * ((11.5 - 11.0) ** 2 / var_u + 0.25 / var_v))  # pixel (7, 11)

    expected = alpha(0.3, 2.0) + (1 - alpha(0.3, 2.0)) * alpha(0.45, 3.0)
    assert float(image[7, 11, 0]) == pytest.approx(expected, abs=1e-6)
