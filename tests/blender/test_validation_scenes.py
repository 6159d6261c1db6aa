"""The validation scenes (training/validation_scenes.py) rendered by Cycles in real bpy: their truth is
the surface each pixel's centre sees (points on the ground lie on it, every point projects back
onto its pixel centre through the stored K and cameras, the sky is invalid), the cameras are the
ring they claim to be, and ``training.validation`` (with the worker's Python) scores the scene
against the trivial baseline."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from installed import ROOT, worker_python

SIZE = 32


@pytest.fixture(scope="module")
def scenes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validation_scenes", ROOT / "training" / "validation_scenes.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def test_the_prop_scene_has_exact_truth_and_is_scored(scenes: ModuleType, tmp_path: Path) -> None:
    folder = scenes.make_scene("prop", tmp_path, size=SIZE, samples=4)
    truth = np.load(folder / "truth.npz")
    photos = sorted(folder.glob("view_*.png"))
    assert len(photos) == scenes.VIEWS
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in photos])
    assert rgb.shape == (scenes.VIEWS, SIZE, SIZE, 3) and rgb.std() > 10

    valid, world, c2w, K = truth["valid"], truth["world_points"], truth["world_cam2world"], truth["intrinsics"]
    assert 0.4 < valid.mean() < 0.95 and not valid[:, 0].any()        # the top row sees only sky
    ground = valid & (np.linalg.norm(world[..., :2], axis=-1) > 1.5)    # no prop reaches that far out
    assert ground.mean() > 0.2 and np.abs(world[..., 2][ground]).max() < 1e-4
    assert (world[..., 2][valid] > -1e-4).all()                      # nothing below the ground
    w2c = np.linalg.inv(c2w.astype(np.float64))
    cam = np.einsum("vij,vhwj->vhwi", w2c[:, :3, :3], world) + w2c[:, None, None, :3, 3]
    pix = np.einsum("vij,vhwj->vhwi", K.astype(np.float64), cam)
    pix = pix[..., :2] / pix[..., 2:]
    centres = np.stack(np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing="xy"), -1)
    assert np.abs(pix - centres)[valid].max() < 1e-3
    # view 0's frame: the stored pointmaps are the world points seen from camera 0
    to0 = np.linalg.inv(c2w[0].astype(np.float64))
    assert np.allclose((world @ to0[:3, :3].T + to0[:3, 3])[valid], truth["pts3d"][valid], atol=1e-4)
    # a ring of 8 cameras 3.2 m from the prop's axis, 45° apart
    radius = np.linalg.norm(c2w[:, :2, 3], axis=1)
    azimuth = np.sort(np.degrees(np.arctan2(c2w[:, 1, 3], c2w[:, 0, 3])) % 360)
    assert np.allclose(radius, 3.2, atol=1e-5) and np.allclose(np.diff(azimuth), 45, atol=1e-3)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([worker_python(), "-m", "training.validation", "--scenes", str(tmp_path), "--threads", "1"],
                            cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    row = next(line for line in result.stdout.splitlines() if line.startswith("| trivial baseline · prop |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "8" and float(cells[7]) == pytest.approx(90.0)      # the baseline's cameras coincide: RTE 90°
    # its relative rotations are the true ones: on a ring of 8 those average to (4·45+4·90+4·135+4·180... )/28
    pairs = [min(abs(i - j), 8 - abs(i - j)) * 45 for i in range(8) for j in range(i + 1, 8)]
    assert float(cells[6]) == pytest.approx(np.mean(pairs), abs=3.0)
