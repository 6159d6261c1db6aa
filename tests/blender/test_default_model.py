"""The shipped default model (models/default.safetensors) reconstructs held-out synthetic scenes
through the installed extension within stated bounds, and beats the trivial baseline on the same
scenes where the evaluation says it learned something (docs/default-model.md).

The scenes come from ``training.heldout`` (run with the worker's Python, which has torch): their
photos are the network's input size, so the bundle's grid is the photos' pixels and the truth's
pointmaps line up with the prediction pixel for pixel. Cameras are read back from the Blender
camera objects (pose and Blender's own lens model); points from the bundle each run wrote (the
numbers the point cloud is made of, see test_import_points). The scoring is itself checked: the
truth, imported the same way, scores perfect.

What the bounds say (means over the scenes): the model's points are much closer to the truth than
the baseline's (ND, DAc@0.2), its focal lengths are closer, its camera translation directions are
far better than the baseline's (which are all 90° off), and its relative rotations are better than
the baseline's (which are the true relative rotations themselves: all cameras equal) — by 3.8° on
these scenes, so the rotation bound claims 2°. See docs/default-model.md for what the numbers mean.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from installed import ROOT, module, worker_python

MODEL = ROOT / "models" / "default.safetensors"
SCENES = tuple(range(16))  # held-out scene indices (training.heldout / training.evaluate's seed)
VIEWS = 8
RESOLUTION = 64

# Stated bounds, means over SCENES. Measured with the shipped model on 2026-11-29 (and the same
# numbers from `python -m training.evaluate --world rooms-v1 --checkpoint models/default.safetensors --scenes 16
# --views 8`, which skips Blender): ND 0.390, DAc 0.313, RTE 67.0°, focal error 0.122, RRE 26.4°
# (baseline: ND 0.477, DAc 0.125, RTE 90°, focal error 0.172, RRE 30.2°). With the batched camera
# recovery the pipeline runs (training.evaluate keeps the official one), 2026-12-04: RRE 27.0°, RTE 68.2°,
# focal error 0.122, ND 0.390, DAc 0.313.
MAX_ND = 0.42
MIN_DAC = 0.27
MAX_RTE_DEG = 75.0
MAX_FOCAL_ERROR = 0.14
MAX_RRE_DEG = 28.5

@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("heldout")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([worker_python(), "-m", "training.heldout", "--out", str(out), "--views", str(VIEWS),
                    "--resolution", str(RESOLUTION), "--index", *map(str, SCENES)], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    return [out / f"scene_{index:02d}" for index in SCENES]


@pytest.fixture
def api(configured: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    return module("api")


def pair_errors(c2w_pred: np.ndarray, c2w_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RRE, RTE) in degrees, one per unordered view pair: the angle between predicted and true
    relative rotations, and between predicted and true relative translation directions."""
    i, j = np.triu_indices(len(c2w_pred), k=1)
    rel_p = np.linalg.inv(c2w_pred[i]) @ c2w_pred[j]
    rel_t = np.linalg.inv(c2w_true[i]) @ c2w_true[j]
    diff = np.einsum("nki,nkj->nij", rel_p[:, :3, :3], rel_t[:, :3, :3])
    rre = np.degrees(np.arccos(np.clip((np.trace(diff, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    tp = rel_p[:, :3, 3] / np.maximum(np.linalg.norm(rel_p[:, :3, 3], axis=1, keepdims=True), 1e-12)
    tt = rel_t[:, :3, 3] / np.maximum(np.linalg.norm(rel_t[:, :3, 3], axis=1, keepdims=True), 1e-12)
    rte = np.degrees(np.arccos(np.clip(np.sum(tp * tt, axis=1), -1, 1)))
    return rre, rte


def point_scores(pred: np.ndarray, true: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(ND, DAc@0.2) after dividing each pointmap by its own mean distance over the valid pixels."""
    p = pred[valid] / np.linalg.norm(pred[valid], axis=-1).mean()
    t = true[valid] / np.linalg.norm(true[valid], axis=-1).mean()
    dist = np.linalg.norm(p - t, axis=-1)
    return float(dist.mean()), float((dist < 0.2).mean())


@dataclass
class Scores:
    rre: float          # mean over view pairs, degrees
    rte: float
    focal_error: float  # mean relative
    nd: float
    dac: float

    def __str__(self) -> str:
        return (f"RRE {self.rre:.1f}°, RTE {self.rte:.1f}°, focal error {self.focal_error:.3f}, ND {self.nd:.3f}, "
                f"DAc@0.2 {self.dac:.3f}")


def score(imported: Any, bundle: Any, truth: Any) -> Scores:
    """Cameras as Blender holds them (imported with axes Z_UP) and the bundle's points, against the truth."""
    conventions = module("core.conventions")
    matrices = np.array([np.array(cam.matrix_world) for cam in imported.cameras])
    matrices[:, :3, :3] /= np.linalg.norm(matrices[:, :3, :3], axis=1, keepdims=True)
    # back from Blender's camera objects to OpenCV camera-to-world in the network's frame
    c2w = np.linalg.inv(conventions.world_axes("Z_UP")) @ matrices @ conventions.OPENCV_TO_BLENDER_CAMERA
    rre, rte = pair_errors(c2w, truth["cam2world"].astype(np.float64))
    # Blender's lens model: sensor fit HORIZONTAL, so focal (px) = lens / sensor width × photo width
    assert all(cam.data.sensor_fit == "HORIZONTAL" for cam in imported.cameras)
    focal = np.array([cam.data.lens / cam.data.sensor_width * RESOLUTION for cam in imported.cameras])
    true_focal = truth["intrinsics"][:, 0, 0]
    nd, dac = point_scores(bundle.pts3d, truth["pts3d"], truth["valid"])
    return Scores(float(rre.mean()), float(rte.mean()), float(np.mean(np.abs(focal - true_focal) / true_focal)),
                  nd, dac)


def baseline_score(truth: Any) -> Scores:
    """The trivial baseline of training.evaluate: every camera at the origin, every view a unit-depth
    plane through a 60° camera (focal = RESOLUTION / 2 / tan 30°)."""
    cams = np.repeat(np.eye(4)[None], VIEWS, 0)
    rre, rte = pair_errors(cams, truth["cam2world"].astype(np.float64))
    focal = RESOLUTION / 2 / np.tan(np.radians(30))
    plane = np.ones_like(truth["pts3d"])
    grid = (np.arange(RESOLUTION) - RESOLUTION / 2) / focal
    plane[..., 0], plane[..., 1] = grid[None, None, :], grid[None, :, None]
    nd, dac = point_scores(plane, truth["pts3d"], truth["valid"])
    true_focal = truth["intrinsics"][:, 0, 0]
    return Scores(float(rre.mean()), float(rte.mean()), float(np.mean(np.abs(focal - true_focal) / true_focal)),
                  nd, dac)


def mean(scores: list[Scores]) -> Scores:
    return Scores(*(float(np.mean([getattr(s, f) for s in scores])) for f in ("rre", "rte", "focal_error", "nd", "dac")))


def test_default_model_reconstructs_heldout_scenes(api: Any, heldout: list[Path]) -> None:
    assert MODEL.is_file(), f"{MODEL} is missing: it is committed to the repository (docs/default-model.md)"
    got, base = [], []
    for k, folder in enumerate(heldout):
        truth = np.load(folder / "truth.npz")
        result = api.reconstruct(folder, checkpoint=MODEL, python=worker_python(), name=f"heldout {k}",
                                 axes="Z_UP")
        assert result.views == VIEWS and len(result.imported.cameras) == VIEWS
        assert result.imported.points is not None and result.imported.gaussians is not None
        bundle = module("core.bundle").read_bundle(result.bundle_path)
        assert bundle.pts3d.shape[1:3] == (RESOLUTION, RESOLUTION)  # photos at the network's size
        got.append(score(result.imported, bundle, truth))
        base.append(baseline_score(truth))
        if k == 0:  # the scoring itself: the truth, imported the same way, scores perfect
            exact = replace(bundle, pts3d=truth["pts3d"], cam2world=truth["cam2world"],
                            intrinsics=truth["intrinsics"])
            perfect = score(api.import_bundle(exact, axes="Z_UP", gaussians=False), exact, truth)
            assert perfect.rre < 0.05 and perfect.rte < 0.05 and perfect.focal_error < 1e-5 \
                and perfect.nd < 1e-6, perfect
    model, baseline = mean(got), mean(base)
    report = f"model: {model}; baseline: {baseline}"
    print(report)
    assert model.nd < MAX_ND and model.nd < 0.88 * baseline.nd, report
    assert model.dac > MIN_DAC and model.dac > 2.0 * baseline.dac, report
    assert model.rte < MAX_RTE_DEG and model.rte < baseline.rte - 15, report
    assert model.focal_error < MAX_FOCAL_ERROR and model.focal_error < baseline.focal_error, report
    assert model.rre < MAX_RRE_DEG and model.rre < baseline.rre - 2, report
