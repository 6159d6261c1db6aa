"""Multi-view samples: shapes, normalisation, frames, validity, recipes and replayable batches."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from training.cameras import pixel_grid, sample_intrinsics
from training.dataset import RECIPES, RecipeBatchSampler, SampleKey, SyntheticScenes, _mix, network_views

torch.set_num_threads(1)


def test_sample_shapes_and_image_normalisation() -> None:
    ds = SyntheticScenes((32, 48), seed=1)
    s = ds[SampleKey(0, 4, 2)]
    assert s["img"].shape == (6, 3, 32, 48) and s["img"].dtype == torch.float32
    assert s["img"].min() >= -1 and s["img"].max() <= 1 and s["img"].std() > 0.1
    # (x/255 - 0.5)/0.5 of uint8 values: every value is on that grid
    assert torch.allclose((s["img"] * 0.5 + 0.5) * 255, ((s["img"] * 0.5 + 0.5) * 255).round(), atol=1e-3)
    assert s["pts3d"].shape == (6, 32, 48, 3) and s["valid"].shape == (6, 32, 48)
    assert s["valid"].dtype == torch.bool and s["depth"].shape == (6, 32, 48)
    assert s["intrinsics"].shape == (6, 3, 3) and s["cam2world"].shape == (6, 4, 4)
    assert int(s["num_render_views"]) == 2


def test_points_are_in_view0_frame_and_consistent_with_depth() -> None:
    s = SyntheticScenes((24, 24), seed=2)[SampleKey(5, 3, 0)]
    assert torch.allclose(s["cam2world"][0], torch.eye(4), atol=1e-5)
    valid = s["valid"]
    assert torch.allclose(s["pts3d"][0][..., 2][valid[0]], s["depth"][0][valid[0]], rtol=1e-4)
    # unproject each view's depth with its K, move to view 0 with cam2world: the GT points
    u, v = pixel_grid(24, 24)
    pix = torch.stack([u, v, torch.ones_like(u)], -1)
    rays = torch.einsum("vij,hwj->vhwi", torch.linalg.inv(s["intrinsics"]), pix)
    cam = rays * s["depth"][..., None]
    pts = torch.einsum("vij,vhwj->vhwi", s["cam2world"][:, :3, :3], cam) + s["cam2world"][:, None, None, :3, 3]
    assert torch.allclose(pts[valid], s["pts3d"][valid], atol=1e-3)
    assert (s["pts3d"][~valid] == 0).all()


def test_render_views_come_from_anywhere_along_the_walk() -> None:
    """Held-out render views are taken from random places of the camera walk, not always its end,
    so the rendering loss mostly scores views that the input views surround."""
    ds = SyntheticScenes((16, 16), seed=3)
    render_places = set()
    for index in range(16):
        s = ds[SampleKey(index, 4, 2)]
        # each walk position has its own principal point: it tells where a sample's view was on the walk
        gen = torch.Generator().manual_seed(_mix(_mix(3, index), 4, 2))
        walk_pp = sample_intrinsics(gen, 6, 16, 16)[:, :2, 2]
        places = [int(torch.cdist(pp[None], walk_pp).argmin()) for pp in s["intrinsics"][:, :2, 2]]
        assert sorted(places) == list(range(6))
        render_places.update(places[4:])
    assert render_places & {1, 2, 3, 4}          # between input views
    assert render_places & {0, 5}                # and sometimes at an end


def test_open_ceilings_give_invalid_sky_pixels() -> None:
    ds = SyntheticScenes((32, 32), seed=0)
    fractions = [float(ds[SampleKey(i, 4, 0)]["valid"].float().mean()) for i in range(12)]
    assert max(fractions) == 1.0           # closed rooms: every pixel sees a surface
    assert min(fractions) < 1.0            # some open rooms: sky pixels are invalid


def test_samples_are_deterministic() -> None:
    a = SyntheticScenes((16, 16), seed=7)[SampleKey(3, 2, 1)]
    b = SyntheticScenes((16, 16), seed=7)[SampleKey(3, 2, 1)]
    c = SyntheticScenes((16, 16), seed=8)[SampleKey(3, 2, 1)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["img"], c["img"])


def test_recipes_view_counts_and_replayable_batches() -> None:
    assert RECIPES["mvd"].input_views == (8,) and RECIPES["mvd"].render_views == 2
    sampler = RecipeBatchSampler(RECIPES["mvdp-stage2"], batch_size=3, num_steps=40, seed=1)
    batches = list(sampler)
    counts = {b[0].n_input for b in batches}
    assert counts <= set(range(4, 13)) and len(counts) >= 5
    assert all(len({k.n_input for k in b}) == 1 for b in batches)        # one count per batch
    indices = [k.index for b in batches for k in b]
    assert len(set(indices)) == len(indices)                            # no scene repeated
    resumed = list(RecipeBatchSampler(RECIPES["mvdp-stage2"], 3, 40, seed=1, start_step=25))
    assert resumed == batches[25:]
    fixed = list(RecipeBatchSampler(RECIPES["mvdp-stage2"], 2, 3, fixed=True))
    assert fixed[0] == fixed[1] == fixed[2]


def test_render_views_are_only_made_for_the_rendering_loss() -> None:
    with_render = RecipeBatchSampler(RECIPES["mvd"], 2, 3, seed=4).keys(1)
    without = RecipeBatchSampler(RECIPES["mvd"], 2, 3, seed=4, render_views=False).keys(1)
    assert [k.n_render for k in with_render] == [2, 2] and [k.n_render for k in without] == [0, 0]
    assert [(k.index, k.n_input) for k in with_render] == [(k.index, k.n_input) for k in without]


def test_loader_batches_feed_the_network_without_render_views() -> None:
    ds = SyntheticScenes((32, 32), seed=0)
    loader = DataLoader(ds, batch_sampler=RecipeBatchSampler(RECIPES["mvd"], 2, 1))
    batch = next(iter(loader))
    assert batch["img"].shape == (2, 10, 3, 32, 32)
    view1, view2s = network_views(batch)
    assert len(view2s) == 7 and view1["img"].shape == (2, 3, 32, 32)
    assert torch.equal(view2s[-1]["img"], batch["img"][:, 7])
    assert view1["true_shape"].tolist() == [[32, 32], [32, 32]]


def test_colour_jitter_changes_each_view_not_the_geometry() -> None:
    plain = SyntheticScenes((24, 24), seed=4, colour_jitter=0.0)[SampleKey(1, 3, 0)]
    jittered = SyntheticScenes((24, 24), seed=4, colour_jitter=0.3)[SampleKey(1, 3, 0)]
    for key in ("pts3d", "valid", "depth", "intrinsics", "cam2world"):
        assert torch.equal(plain[key], jittered[key]), key
    change = (plain["img"] - jittered["img"]).abs().mean(dim=(1, 2, 3))
    assert (change > 0.01).all() and (change < 0.5).all()
    assert len({round(float(c), 4) for c in change}) == 3          # an independent draw per view
