"""``predict``'s options and guards on the golden models: chunking, memory layout, opt-in fast modes,
bad input, mode handling, and that ``forward`` trains (gradients reach every block kind).

Bounds for the opt-in approximations (measured on the golden models, whose random weights make
them far more sensitive than trained ones): bf16 only in the skip CNN stays within the float32
parity tolerance (measured median relative pts3d change 8e-7); bf16 everywhere keeps the median relative pts3d error under 5 %
(measured ~1.5 %); dropping the skip CNN changes pts3d by at most 0.05 absolute and 1e-3 median
relative (measured 0.014 / 1.4e-4; the golden README gives the skip branch's effect as 0.008–0.02).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mvdust3r_blender.engine.errors import InputError
from mvdust3r_blender.engine.prediction import Prediction

from network_golden import CASES, GoldenCase, load_case

torch.set_num_threads(2)


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest, golden: Path,
         tmp_path_factory: pytest.TempPathFactory) -> GoldenCase:
    return load_case(golden, request.param, tmp_path_factory.mktemp("checkpoint-cache"))


def scene(case: GoldenCase, b: int = 0) -> torch.Tensor:
    view1, view2s = case.views()
    return torch.cat([v["img"][b:b + 1] for v in [view1, *view2s]])


def median_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).median())


def assert_same(a: Prediction, b: Prediction) -> None:
    for name in ("pts3d", "conf", "rgb", "opacity", "scale", "rotation"):
        tol = 1e-4 if name == "pts3d" else 1e-5
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=tol, atol=tol,
                                   msg=name)


def test_chunked_inference_equals_unchunked(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case, 1)
    whole = model.predict(images, view_chunk=len(images))
    for chunk in (1, 3):
        assert_same(model.predict(images, view_chunk=chunk), whole)


def test_progress_advances_block_by_block_and_can_stop_the_pass(case: GoldenCase) -> None:
    """The network pass is the longest stage: ``progress`` is called after every block (so the UI
    moves and a cancel takes effect within one block), without changing the outputs."""
    model = case.model()
    images = scene(case)
    seen: list[float] = []
    assert_same(model.predict(images, progress=seen.append), model.predict(images))
    c = model.config
    blocks = c.enc_depth + c.dec_depth * (2 if c.multi_ref else 1) + len(images)  # one encoder chunk here
    assert len(seen) == blocks + 1 and seen[-1] == 1.0
    assert all(a < b for a, b in zip(seen, seen[1:]))

    class Stop(Exception):
        pass

    def stop_in_the_decoder(fraction: float) -> None:
        if fraction > (c.enc_depth + 1) / (blocks + 1):
            raise Stop

    calls: list[float] = []
    with pytest.raises(Stop):
        model.predict(images, progress=lambda f: (calls.append(f), stop_in_the_decoder(f)))
    assert len(calls) == c.enc_depth + 2  # stopped right after the second decoder step, heads never ran


def test_channels_last_is_the_same_maths(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    assert_same(model.predict(images, channels_last=True),
                model.predict(images, channels_last=False))


def test_bf16_runs_and_stays_close(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    ref = model.predict(images)
    fast = model.predict(images, precision="bf16")
    assert fast.pts3d.dtype == torch.float32 and torch.isfinite(fast.pts3d).all()
    err = median_rel(fast.pts3d, ref.pts3d)
    assert 0 < err < 0.05
    assert median_rel(fast.rotation, ref.rotation) < 0.05


def test_bf16_skip_cnn_stays_within_float32_parity(case: GoldenCase) -> None:
    """Only the skip CNN in bf16: its ×1e-4 output keeps pts3d within the golden tolerance."""
    model = case.model()
    images = scene(case)
    ref = model.predict(images)
    fast = model.predict(images, precision="bf16-skip-cnn")
    assert_same(fast, ref)
    assert not torch.equal(fast.pts3d, ref.pts3d)      # it did run in another precision


def test_skip_cnn_off_runs_and_stays_close(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    ref = model.predict(images)
    fast = model.predict(images, skip_cnn=False)
    diff = (fast.pts3d - ref.pts3d).abs().max()
    assert 0 < diff < 0.05
    assert median_rel(fast.pts3d, ref.pts3d) < 1e-3
    torch.testing.assert_close(fast.conf, ref.conf, rtol=1e-5, atol=1e-5)


def test_gaussians_only_when_asked(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    pred = model.predict(images, gaussians=False)
    assert pred.rgb is None and pred.opacity is None and pred.scale is None \
        and pred.rotation is None
    torch.testing.assert_close(pred.pts3d, model.predict(images).pts3d, rtol=0, atol=0)
    full = model.predict(images)
    assert full.opacity is not None and full.opacity.shape == full.conf.shape
    assert full.rotation is not None
    torch.testing.assert_close(full.rotation.norm(dim=-1), torch.ones_like(full.conf))


def test_predict_uses_eval_maths_and_keeps_the_mode(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    ref = model.predict(images)
    model.train()
    before = model.downstream_head1.skip_proj[0].norm.running_mean.clone()
    assert_same(model.predict(images), ref)
    assert model.training and model.downstream_head1.training
    assert torch.equal(model.downstream_head1.skip_proj[0].norm.running_mean, before)


def test_bad_input_is_refused_with_a_clear_message(case: GoldenCase) -> None:
    model = case.model()
    images = scene(case)
    n_min = model.config.min_views
    with pytest.raises(InputError, match=f"at least {n_min} views"):
        model.predict(images[: n_min - 1])
    with pytest.raises(InputError, match="multiple of the patch size"):
        model.predict(images[..., :40])
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        model.predict(images[0])
    with pytest.raises(InputError, match="float"):
        model.predict((images * 100).to(torch.uint8))
    with pytest.raises(InputError, match="portrait"):
        model.predict(torch.cat([images, images], dim=2))


def test_forward_is_differentiable_in_train_mode(case: GoldenCase) -> None:
    model = case.model().train()
    view1, view2s = case.views()
    res1, res2s = model(view1, view2s)
    loss = res1["pts3d"].mean() + res1["conf"].mean() + res1["opacity"].mean() \
        + sum(r["pts3d_in_other_view"].mean() + r["scale"].mean() for r in res2s)
    loss.backward()
    blocks = [model.patch_embed.proj, model.enc_blocks[0].attn.qkv, model.decoder_embed,
              model.dec_blocks[0].cross_attn.projk, model.dec_blocks2[-1].mlp.fc2,
              model.downstream_head1.skip_proj[1].conv, model.downstream_head2.proj,
              model.downstream_GS_head[1].mlp_scale2[2]]
    if model.dec_same_view_blocks is not None:
        blocks.append(model.dec_same_view_blocks[0].cross_attn.projv)
    for module in blocks:
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, module
    # Train mode updated the BatchNorm running statistics, as the official demo does.
    assert int(model.downstream_head1.skip_proj[0].norm.num_batches_tracked) == 8


def test_landscape_portrait_and_render_views_follow_the_official_rules(golden: Path,
                                                                       tmp_path: Path) -> None:
    """Non-square input: landscape maps keep their layout and ``predict`` equals ``forward``'s
    path 0; a portrait batch comes back transposed (official ``transpose_to_landscape``);
    ``num_render_views`` = k drops the last k views before encoding."""
    model = load_case(golden, "mvd_b2_v4_64x64", tmp_path).model()
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 32, 64, generator=gen) * 2 - 1
    views = [{"img": images[i:i + 1]} for i in range(3)]
    with torch.no_grad():
        res1, res2s = model(views[0], views[1:])
    assert res1["pts3d"].shape == (1, 32, 64, 3) and res2s[0]["conf"].shape == (1, 32, 64)
    pred = model.predict(images)
    torch.testing.assert_close(pred.pts3d, torch.cat(
        [res1["pts3d"]] + [r["pts3d_in_other_view"] for r in res2s]), rtol=1e-4, atol=1e-4)

    portrait = [{"img": v["img"].transpose(-1, -2)} for v in views]
    with torch.no_grad():
        p1, p2s = model(portrait[0], portrait[1:])
    assert p1["pts3d"].shape == (1, 32, 64, 3) and p2s[1]["rotation"].shape == (1, 32, 64, 4)

    with_render = [dict(v) for v in views] + [{"img": images[:1]}]
    with_render[1]["num_render_views"] = torch.tensor([1])
    with torch.no_grad():
        r1, r2s = model(with_render[0], with_render[1:])
    assert len(r2s) == 2
    torch.testing.assert_close(r1["pts3d"], res1["pts3d"], rtol=1e-5, atol=1e-5)
