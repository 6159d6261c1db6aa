"""The demo's core (demo/run_demo.py) through the installed extension, on the shipped default model
and on the golden checkpoint: it writes a reloadable demo.blend and a preview PNG (two photos beside
renders through their reconstructed cameras, and a view from outside with the cameras marked; small
panels here to keep the test quick), names the model it ran, and with random test weights says
plainly, first and last, that the output is not a reconstruction. The preview leaves the scene as
the reconstruction made it."""
from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import bpy
import numpy as np
import pytest
from PIL import Image

from installed import ROOT, module, worker_python

W, H = 64, 48   # the preview's panels here (the photos are 4:3); the demo's own are PANEL_SIZE wide


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mvdust3r_run_demo", ROOT / "demo" / "run_demo.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up while the file executes
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture
def worker(ext: ModuleType) -> Iterator[None]:
    yield
    module("session").SESSION.shutdown()


@pytest.mark.parametrize("trained", [False, True], ids=["golden", "shipped"])
def test_demo_writes_a_blend_and_a_preview(demo: ModuleType, worker: None, golden: Path, tmp_path: Path,
                                           trained: bool, monkeypatch: pytest.MonkeyPatch,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo, "PANEL_SIZE", W)
    model = demo.Model(ROOT / "models" / "default.safetensors", trained=True) if trained else \
        demo.Model(golden / "mvd_reduced_ckpt.pth", trained=False)
    log = io.StringIO()
    capfd.readouterr()
    result = demo.run_demo(module("api"), model, Path(worker_python()), tmp_path / "demo", log=log)
    blender_said = capfd.readouterr().out
    assert ".part.blend" not in blender_said and "Saved" not in blender_said, blender_said  # Blender's noise
    text = log.getvalue().strip().splitlines()
    if trained:
        assert text[0].startswith(f"model: {model.checkpoint}") and "synthetic rooms" in text[0]
        assert "NOT a real reconstruction" not in log.getvalue()
    else:
        assert "NOT a real reconstruction" in text[0] and "NOT a real reconstruction" in text[-1]
    assert {"import into Blender", "save demo.blend", "worker: network"} <= set(result.stages)
    assert result.views == 6 and result.blend == tmp_path / "demo" / "demo.blend"

    image = np.asarray(Image.open(result.preview).convert("RGB"), dtype=np.float32)
    assert image.shape[:2] == (2 * H, 4 * W)            # 2×2 panels of the photos' 4:3, the outside view as big
    photo = np.asarray(Image.open(ROOT / "samples" / "room" / "view_0.png").convert("RGB"), dtype=np.float32)
    rows, cols = np.arange(H) * photo.shape[0] // H, np.arange(W) * photo.shape[1] // W
    assert np.abs(image[:H, :W] - photo[rows][:, cols]).max() <= 1      # top left: the first photo itself
    renders = np.concatenate([image[:H, W:2 * W], image[H:, W:2 * W]])
    outside = image[:, 2 * W:]
    lit = (renders.max(axis=2) > 20).mean()
    if trained:  # a room: the Gaussians fill much of each camera's view, in the photos' colours
        assert 0.3 < lit, f"the renders through the cameras are blank ({lit:.1%} of pixels lit)"
        assert len(np.unique(renders.reshape(-1, 3) // 32, axis=0)) > 8
    else:        # random weights: a diffuse cloud, but something is drawn
        assert (image[:, W:].max(axis=2) > 20).mean() > 0.005, "the renders are blank"
    marker = (outside[..., 0] > 180) & (outside[..., 1] > 60) & (outside[..., 1] < 170) & (outside[..., 2] < 80)
    assert marker.sum() >= 4, "the outside view shows no camera markers"
    camera = bpy.context.scene.camera                    # the preview's own camera and markers are gone
    assert camera is not None and camera.type == "CAMERA" and "W" in camera
    assert not [o.name for o in bpy.data.objects if o.name.startswith("Demo Preview")]

    bpy.ops.wm.open_mainfile(filepath=str(result.blend))
    kinds = sorted(o.type for o in bpy.data.objects)
    assert kinds == ["CAMERA"] * 6 + ["MESH", "MESH"]  # points, 6 cameras, Gaussians; no preview camera
    assert "Demo room Gaussians" in bpy.data.objects and bpy.context.scene.camera is not None


def test_the_demo_picks_the_shipped_model(demo: ModuleType, tmp_path: Path, golden: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVDUST3R_GOLDEN", str(golden))
    assert demo.pick_model() == demo.Model(ROOT / "models" / "default.safetensors", trained=True)
    plus = golden / "mvdp_reduced_ckpt.pth"
    assert demo.pick_model(override=plus) == demo.Model(plus, trained=False)     # random weights: said so
    mine = tmp_path / "mine.safetensors"
    assert demo.pick_model(override=mine) == demo.Model(mine, trained=True)
    with pytest.raises(FileNotFoundError, match="default.safetensors is missing"):
        demo.pick_model(root=tmp_path)                                            # a checkout without it


def test_the_samples_are_small_and_complete() -> None:
    photos = sorted((ROOT / "samples" / "room").glob("view_*.png"))
    assert len(photos) == 6
    assert sum(p.stat().st_size for p in photos) < 1_000_000
    assert all(Image.open(p).size == (320, 240) for p in photos)


def test_the_demo_command_leaves_no_folders_and_prints_no_blender_noise(extension_zip: Path, tmp_path: Path) -> None:
    """The demo as ``build.py demo`` runs it, with its own empty temporary folder: it
    leaves neither its Blender user folder nor a bundle folder there, and prints only its own lines."""
    import os
    import subprocess

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BLENDER_USER_RESOURCES"} | {"TMPDIR": str(temporary)}
    run = subprocess.run([sys.executable, str(ROOT / "demo" / "run_demo.py"), "--zip", str(extension_zip),
                          "--worker-python", worker_python(), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in temporary.iterdir()) == []
    for noise in ("STATUS", "Info:", ".part.blend", "Saved", "TOML"):
        assert noise not in run.stdout, run.stdout
    assert "install the extension" in run.stdout and str(tmp_path / "out" / "demo.blend") in run.stdout
