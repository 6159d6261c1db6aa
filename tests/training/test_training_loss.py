"""The paper's loss: exact zero for a perfect unit-confidence prediction, scale invariance, the
official per-slot reduction, reference-path ground truth, gradients through the real network."""
from __future__ import annotations

import math

import pytest
import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import build_model
from training.dataset import SampleKey, SyntheticScenes, network_views
from training.loss import ALPHA, confidence_loss, multiview_loss, normalise_avg_dis, path_ground_truth

torch.set_num_threads(1)
TINY = ModelConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=1, dec_embed_dim=32, dec_depth=1,
                   dec_num_heads=1, skip_dim=8, gs_mlp_dim=8, img_size=(32, 32))


def _batch(views: int = 4, size: int = 32, scenes: int = 2) -> dict[str, torch.Tensor]:
    ds = SyntheticScenes((size, size), seed=3)
    samples = [ds[SampleKey(i, views, 0)] for i in range(scenes)]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def test_perfect_prediction_with_unit_confidence_is_zero() -> None:
    gt = torch.randn(2, 3, 8, 8, 3)
    valid = torch.rand(2, 3, 8, 8) > 0.2
    terms = confidence_loss(gt.clone(), torch.ones(2, 3, 8, 8), gt, valid)
    assert terms.total.item() == pytest.approx(0.0, abs=1e-6) and terms.distance == pytest.approx(0, abs=1e-6)
    # high confidence on a perfect prediction is rewarded: −α·log(conf) per slot
    high = confidence_loss(gt.clone(), torch.full((2, 3, 8, 8), 50.0), gt, valid)
    assert high.total.item() == pytest.approx(-3 * ALPHA * math.log(50.0), rel=1e-5)


def test_invariant_to_the_global_scale_of_prediction_and_truth() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.randn(2, 3, 8, 8, 3, generator=gen)
    pred = gt + 0.1 * torch.randn(2, 3, 8, 8, 3, generator=gen)
    conf = 1 + torch.rand(2, 3, 8, 8, generator=gen)
    valid = torch.rand(2, 3, 8, 8, generator=gen) > 0.2
    base = confidence_loss(pred, conf, gt, valid).total
    # each scene (row) normalised on its own: per-row scales do not matter either
    scale = torch.tensor([3.7, 0.02])[:, None, None, None, None]
    assert confidence_loss(pred * scale, conf, gt, valid).total.item() == pytest.approx(base.item(), rel=1e-5)
    assert confidence_loss(pred, conf, gt * 11.0, valid).total.item() == pytest.approx(base.item(), rel=1e-5)
    assert confidence_loss(pred * 1.3 + 0.05, conf, gt, valid).total.item() != pytest.approx(base.item(), rel=1e-3)


def _official_reduction(pred: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> float:
    """The official ConfLoss/Regr3D(mv=True) arithmetic, written the official way: per-row avg_dis
    factors over all views, then per view boolean-mask selection pooled over the batch, mean, and
    view 0's mean plus the sum of the other views' means."""
    rows = []
    for b in range(pred.shape[0]):
        f_p = pred[b][valid[b]].norm(dim=-1).mean()
        f_g = gt[b][valid[b]].norm(dim=-1).mean()
        rows.append((pred[b] / f_p, gt[b] / f_g))
    p = torch.stack([r[0] for r in rows])
    g = torch.stack([r[1] for r in rows])
    total = 0.0
    for v in range(pred.shape[1]):
        m = valid[:, v]
        d = (p[:, v][m] - g[:, v][m]).norm(dim=-1)
        c = conf[:, v][m]
        total += float((d * c - ALPHA * torch.log(c)).mean()) if m.any() else 0.0
    return total


def test_matches_the_official_per_view_reduction() -> None:
    gen = torch.Generator().manual_seed(1)
    gt = torch.randn(3, 4, 6, 6, 3, generator=gen) * 2
    pred = torch.randn(3, 4, 6, 6, 3, generator=gen)
    conf = 1 + 3 * torch.rand(3, 4, 6, 6, generator=gen)
    valid = torch.rand(3, 4, 6, 6, generator=gen) > 0.3
    valid[:, 2] = False                     # a view with no valid pixel contributes 0
    valid[0, 3] = False
    valid[1, 3, :1] = True                  # one view with very few valid pixels weighs as much
    terms = confidence_loss(pred, conf, gt, valid)
    assert terms.total.item() == pytest.approx(_official_reduction(pred, conf, gt, valid), rel=1e-5)


def test_reference_paths_see_the_truth_in_their_own_frame() -> None:
    batch = _batch(views=5, scenes=2)
    gt, valid = path_ground_truth(batch["pts3d"], batch["cam2world"], batch["valid"], n_ref=3)
    assert gt.shape == (6, 5, 32, 32, 3) and valid.shape == (6, 5, 32, 32)
    for b in range(2):
        for r in range(3):
            row = b * 3 + r
            # slot 0 of path r is view r in its own camera frame: z equals that view's depth
            m = batch["valid"][b, r]
            assert torch.allclose(gt[row, 0][..., 2][m], batch["depth"][b, r][m], rtol=1e-4, atol=1e-4)
            assert torch.equal(valid[row, 0], batch["valid"][b, r])
            if r:   # slot r holds view 0, the other slots keep their views
                assert torch.equal(valid[row, r], batch["valid"][b, 0])
                w2c = torch.linalg.inv(batch["cam2world"][b, r])
                p0 = batch["pts3d"][b, 0] @ w2c[:3, :3].T + w2c[:3, 3]
                assert torch.allclose(gt[row, r], p0, atol=1e-4)
            assert torch.equal(valid[row, 4], batch["valid"][b, 4])
    assert torch.allclose(gt[::3], batch["pts3d"], atol=1e-5)  # path 0 is the data as given


def test_normalisation_uses_valid_pixels_only() -> None:
    pts = torch.ones(1, 2, 2, 2, 3)
    valid = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    valid[0, 0, 0, 0] = True
    pts[0, 1] = 100.0                          # invalid outliers do not change the factor
    out = normalise_avg_dis(pts, valid)
    assert out[0, 0, 0, 0].norm().item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("multi_ref", [False, True])
def test_gradients_reach_the_network(multi_ref: bool) -> None:
    torch.manual_seed(0)
    cfg = TINY if not multi_ref else ModelConfig(**{**TINY.__dict__, "multi_ref": True, "n_ref": 2})
    model = build_model(cfg).train()
    batch = _batch(views=3, scenes=2)
    view1, view2s = network_views(batch)
    res1, res2s = model(view1, view2s)
    assert res1["pts3d"].shape[0] == 2 * model.n_paths
    terms = multiview_loss(res1, res2s, batch)
    assert torch.isfinite(terms.total)
    terms.total.backward()
    for name in ("enc_blocks.0.attn.qkv.weight", "dec_blocks2.0.cross_attn.projq.weight",
                 "downstream_head1.proj.weight", "downstream_head2.proj.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
