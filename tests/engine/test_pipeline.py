"""reconstruct(): photos → bundle, in the user's order, with cameras that reproject onto the photos.

Geometry is checked with a network stand-in that returns known ground truth (tests/engine/
synthetic_scenes.py); the real networks run from the golden checkpoints.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from mvdust3r_blender.core.bundle import read_bundle, write_bundle
from mvdust3r_blender.engine.checkpoint import load_model
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.errors import Cancelled, InputError
from mvdust3r_blender.engine.images import load_photo, network_input
from training.metrics import camera_metrics, point_metrics
from mvdust3r_blender.core.errors import OptionError
from mvdust3r_blender.core.options import ReconstructOptions
from mvdust3r_blender.engine.pipeline import reconstruct
from tests.helpers.photos import noise_photos
from tests.helpers.synthetic_scenes import SceneNetwork, make_scene, write_index_photos

SIZES = [(96, 72), (64, 64), (50, 90), (120, 80), (70, 70)]
MVD = ModelConfig(img_size=(32, 32))
MVDP = ModelConfig(multi_ref=True, n_ref=4, img_size=(32, 32))


FOCALS = [0.9 * max(s) for s in SIZES]   # photo pixels: every size is its own camera (no EXIF)


@pytest.fixture
def scene_photos(tmp_path):
    photos = write_index_photos(tmp_path / "photos", SIZES)
    scene = make_scene(len(SIZES), 32, 32, seed=11, noise=0.001, grid_K=_grid_K(photos, SIZES, FOCALS))
    return scene, photos


def _grid_K(photos, sizes, focals):
    """Each photo's camera (of its (W, H) in `sizes` with focal `focals[k]` in photo pixels, principal point
    at the photo centre) on its 32×32 grid: grid index j is photo x = x0 + j·sx (the network's
    integer-coordinate convention)."""
    K = np.zeros((len(photos), 3, 3))
    for k, path in enumerate(photos):
        x0, y0, x1, y1 = load_photo(path, (32, 32)).crop_box
        sx, sy = (x1 - x0) / 32, (y1 - y0) / 32
        K[k] = [[focals[k] / sx, 0, (sizes[k][0] / 2 - x0) / sx], [0, focals[k] / sy, (sizes[k][1] / 2 - y0) / sy],
                [0, 0, 1]]
    return K


def _reproject(bundle, v):
    """Photo pixel coordinates of view v's points through the bundle's own camera."""
    w2c = np.linalg.inv(bundle.cam2world[v].astype(np.float64))
    cam = bundle.pts3d[v].reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
    proj = cam @ bundle.intrinsics[v].astype(np.float64).T
    return proj[:, :2] / proj[:, 2:]


@pytest.mark.parametrize("reference_view", [None, 3, 4])
def test_results_come_back_in_user_order_in_the_reference_frame(scene_photos, reference_view):
    scene, photos = scene_photos
    net = SceneNetwork(scene, MVD)
    bundle = reconstruct(photos, net, ReconstructOptions(reference_view=reference_view))
    bundle.validate()
    order = bundle.meta["reference_order"]
    ref = order[0]
    assert bundle.meta["reference_view"] == ref == (0 if reference_view is None else reference_view)
    assert net.calls == [order] and sorted(order) == list(range(len(SIZES)))
    assert bundle.meta["pose_failed_views"] == [] and min(bundle.meta["pose_inliers"]) > 0.9 * 32 * 32
    assert bundle.photo_paths == [str(p) for p in photos]
    # images in the user's order (photo k is coloured 20k+10)
    np.testing.assert_array_equal(bundle.images[:, 0, 0, 0], [20 * k + 10 for k in range(len(SIZES))])
    assert bundle.photo_size.tolist() == [list(s) for s in SIZES]
    # cameras: the truth re-expressed in the reference view's frame
    truth = np.linalg.inv(scene.c2w[ref]) @ scene.c2w
    m = camera_metrics(bundle.cam2world, truth, bundle.meta["focal_px"], FOCALS)
    assert m.rre < 0.2 and m.rte < 0.5 and m.mae < 0.005
    assert bundle.meta["focal_source"] == ["estimated"] * len(SIZES) and bundle.meta["camera_warnings"] == []
    np.testing.assert_array_equal(bundle.cam2world[ref], np.eye(4))
    np.testing.assert_allclose(bundle.cam2world[:, :3, 3], truth[:, :3, 3], atol=0.02)
    # points: the noise-free truth in the same frame, compared with the paper's point metrics
    to_ref = np.linalg.inv(scene.c2w[ref])
    clean = scene.clean @ to_ref[:3, :3].T + to_ref[:3, 3]
    pm = point_metrics(bundle.pts3d, clean, np.ones(bundle.conf.shape, dtype=bool))
    assert pm.nd < 0.005 and pm.dac == 1.0 and pm.cd < 0.005
    # intrinsics are in original-photo pixels, principal point at the photo centre: every point
    # reprojects onto its integer grid coordinate x0 + j·sx, y0 + i·sy (the network's convention)
    j, i = np.meshgrid(np.arange(32), np.arange(32))
    for v in range(len(SIZES)):
        x0, y0, x1, y1 = bundle.crop_box[v]
        corners = np.stack([x0 + j * (x1 - x0) / 32, y0 + i * (y1 - y0) / 32], -1).reshape(-1, 2)
        err = np.linalg.norm(_reproject(bundle, v) - corners, axis=-1)
        assert np.median(err) < 0.1 * max(SIZES[v]) / 32 and err.max() < max(SIZES[v]) / 32 * 0.6
        np.testing.assert_allclose(bundle.intrinsics[v], [[FOCALS[v], 0, SIZES[v][0] / 2],
                                                          [0, FOCALS[v], SIZES[v][1] / 2], [0, 0, 1]], rtol=5e-3)


def test_gaussians_only_when_asked(scene_photos):
    scene, photos = scene_photos
    without = reconstruct(photos, SceneNetwork(scene, MVD), ReconstructOptions(gaussians=False))
    assert not without.has_gaussians and without.gaussian_rgb is None and "gaussians" not in without.meta["timings"]
    net = SceneNetwork(scene, MVD)
    b = reconstruct(photos, net, ReconstructOptions(reference_view=2))
    assert b.has_gaussians and b.gaussian_rgb is not None
    nf = b.meta["gaussian_norm_factor"]
    assert np.all(b.gaussian_scale >= 1e-4 * nf * (1 - 1e-6)) and np.all(b.gaussian_scale <= 4e-3 * nf * (1 + 1e-6))
    np.testing.assert_allclose(np.linalg.norm(b.gaussian_rotation, axis=-1), 1.0, atol=1e-5)
    assert np.all((b.gaussian_opacity > 0) & (b.gaussian_opacity < 1))
    # user order: re-running the stand-in gives the raw head output in network order
    raw = net.predict(network_input(b.images[b.meta["reference_order"]]))
    back = np.argsort(b.meta["reference_order"])
    np.testing.assert_array_equal(b.gaussian_rgb, raw.rgb[back].numpy())


def test_progress_meta_and_round_trip(scene_photos, tmp_path):
    scene, photos = scene_photos
    seen = []
    b = reconstruct(photos, SceneNetwork(scene, MVD), progress=lambda s, f: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert [s for k, s in enumerate(stages) if k == 0 or stages[k - 1] != s] == ["load", "network", "cameras", "gaussians"]
    for stage in ("load", "network", "cameras", "gaussians"):
        fractions = [f for s, f in seen if s == stage]
        assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert set(b.meta["timings"]) == {"load", "network", "cameras", "gaussians", "align"}
    assert b.meta["model"]["variant"] == "MVD" and b.meta["torch"] == torch.__version__ and b.meta["device"] == "cpu"
    again = read_bundle(write_bundle(b, tmp_path / "out" / "r.npz"))
    np.testing.assert_array_equal(again.cam2world, b.cam2world)
    assert again.meta["reference_order"] == b.meta["reference_order"]


def test_cancel_between_stages_and_during_loading(scene_photos):
    scene, photos = scene_photos
    net = SceneNetwork(scene, MVD)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        reconstruct(photos, net, cancel=stop)
    assert net.calls == []
    stop = threading.Event()
    with pytest.raises(Cancelled, match="before camera recovery"):
        reconstruct(photos, net, cancel=stop, progress=lambda s, f: stop.set() if (s, f) == ("network", 1.0) else None)
    assert len(net.calls) == 1


def test_bad_input_is_reported_before_any_work(tmp_path, scene_photos):
    scene, photos = scene_photos
    net = SceneNetwork(scene, MVD)
    with pytest.raises(InputError, match="no photos"):
        reconstruct([], net)
    with pytest.raises(InputError, match="1 photo given, but MV-DUSt3R needs at least 2"):
        reconstruct(photos[:1], net)
    with pytest.raises(InputError, match=r"3 photos given, but MV-DUSt3R\+ needs at least 4 \(it uses 4 reference"):
        reconstruct(photos[:3], SceneNetwork(scene, MVDP))
    with pytest.raises(InputError, match="reference view 5 does not exist among 5"):
        reconstruct(photos, net, ReconstructOptions(reference_view=5))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(InputError) as info:
        reconstruct([photos[0], broken, tmp_path / "nope.png"], net)
    assert str(broken) in str(info.value) and str(tmp_path / "nope.png") in str(info.value)
    with pytest.raises(InputError, match="more than once"):
        reconstruct([photos[0], photos[1], photos[0]], net)
    with pytest.raises(OptionError, match="pose_drop_percent=100"):
        ReconstructOptions(pose_drop_percent=100)
    assert net.calls == []


def test_non_ascii_paths_reconstruct(tmp_path):
    scene = make_scene(3, 32, 32, focal=30.0, seed=2)
    photos = write_index_photos(tmp_path / "dossier été 写真", [(40, 30)] * 3, ["a b.png", "ü.png", "写真.png"])
    b = reconstruct(photos, SceneNetwork(scene, MVD))
    assert b.photo_paths == [str(p) for p in photos]


@pytest.mark.parametrize("name", ["mvd", "mvdp"])
def test_real_golden_networks_end_to_end(golden, tmp_path, name):
    """The real network from a golden checkpoint: bundle is valid, in user order, equal to the
    network's own output for the reordered input."""
    torch.set_num_threads(2)
    model = load_model(golden / f"{name}_reduced_ckpt.pth", cache_dir=tmp_path / "cache")
    photos = noise_photos(tmp_path, [(96, 72), (64, 64), (50, 90), (120, 80), (70, 70)], name="photo {}.png")
    b = reconstruct(photos, model, ReconstructOptions(reference_view=2, precision="exact"))
    b.validate()
    assert b.meta["precision"] == {"precision": "exact", "weights": "float32", "compute": "fp32", "tf32": False,
                                   "channels_last": False, "note": ""}
    assert b.meta["model"]["variant"] == ("MVDp" if name == "mvdp" else "MVD")
    assert b.meta["model"]["n_ref"] == (4 if name == "mvdp" else 1)
    assert b.grid_size == tuple(model.config.img_size) and b.has_gaussians
    order = b.meta["reference_order"]
    assert order[0] == 2
    direct = model.predict(network_input(b.images[order]))
    back = np.argsort(order)
    np.testing.assert_allclose(b.pts3d, direct.pts3d[back].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.conf, direct.conf[back].numpy(), rtol=1e-5)
    assert np.all(b.intrinsics[:, 0, 0] > 0) and np.all(np.isfinite(b.cam2world))


def test_cancel_takes_effect_inside_the_network_pass(golden, tmp_path):
    """With a real network the network pass is the longest stage (a minute for MV-DUSt3R+ on a CPU):
    a cancel must not wait for its end. It takes effect at the next block, before the heads run."""
    torch.set_num_threads(2)
    model = load_model(golden / "mvdp_reduced_ckpt.pth", cache_dir=tmp_path / "cache")
    photos = noise_photos(tmp_path, [(48, 48)] * 4, seed=1, name="p{}.png")
    stop = threading.Event()
    fractions: list[float] = []

    def on_progress(stage: str, fraction: float) -> None:
        if stage == "network" and 0 < fraction < 1:
            fractions.append(fraction)
            stop.set()  # as the worker does when a cancel request arrives

    with pytest.raises(Cancelled, match="before the end of the network pass"):
        reconstruct(photos, model, cancel=stop, progress=on_progress)
    assert len(fractions) == 1 and fractions[0] < 0.5


@pytest.mark.parametrize("given_mm", [28.0, 40.0])
def test_a_given_focal_is_kept_and_only_poses_are_solved(tmp_path, given_mm):
    """focal=MM (35 mm equivalent, by the diagonal) fixes every camera's focal, `F = MM · diag / 43.27`: with
    the true value the cameras are exact; with a wrong one the focal stays as given (nothing is estimated)."""
    sizes = [(96, 72), (72, 96), (64, 64), (80, 60)]
    true_mm = 28.0
    photos = write_index_photos(tmp_path / "photos", sizes)
    focals = [true_mm * np.hypot(*s) / np.hypot(36, 24) for s in sizes]
    scene = make_scene(len(sizes), 32, 32, seed=12, grid_K=_grid_K(photos, sizes, focals))
    bundle = reconstruct(photos, SceneNetwork(scene, MVD), ReconstructOptions(gaussians=False, focal=f"{given_mm}"))
    expected = [given_mm * np.hypot(*s) / np.hypot(36, 24) for s in sizes]
    np.testing.assert_allclose(bundle.meta["focal_px"], expected, rtol=1e-6)
    assert bundle.meta["focal_source"] == ["option"] * len(sizes) and bundle.meta["focal_option"] == f"{given_mm:g}"
    if given_mm == true_mm:
        np.testing.assert_allclose(bundle.cam2world, scene.c2w, atol=1e-4)
        assert bundle.meta["camera_warnings"] == []


def test_focal_option_is_checked_where_it_enters():
    with pytest.raises(OptionError, match="focal='wide'"):
        ReconstructOptions(focal="wide")
    with pytest.raises(OptionError, match="focal"):
        ReconstructOptions(focal="1")   # 1 mm: no lens
    assert ReconstructOptions(focal=" Estimate ").focal == "estimate" and ReconstructOptions(focal="26.0").focal_mm == 26
