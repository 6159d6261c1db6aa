"""The demo's core (demo/run_demo.py) through the installed extension, on the shipped default model
and on the golden checkpoint: it writes a reloadable demo.blend and a preview PNG that is small and
not blank, names the model it ran, and with random test weights says plainly, first and last, that
the output is not a reconstruction."""
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
                                           trained: bool) -> None:
    model = demo.Model(ROOT / "models" / "default.safetensors", trained=True) if trained else \
        demo.Model(golden / "mvd_reduced_ckpt.pth", trained=False)
    log = io.StringIO()
    result = demo.run_demo(module("api"), model, Path(worker_python()), tmp_path / "demo", log=log)
    text = log.getvalue().strip().splitlines()
    if trained:
        assert text[0].startswith(f"model: {model.checkpoint}") and "synthetic rooms" in text[0]
        assert "NOT a real reconstruction" not in log.getvalue()
    else:
        assert "NOT a real reconstruction" in text[0] and "NOT a real reconstruction" in text[-1]
    assert {"import into Blender", "save demo.blend", "worker: network"} <= set(result.stages)
    assert result.views == 6 and result.blend == tmp_path / "demo" / "demo.blend"

    image = np.asarray(Image.open(result.preview).convert("RGB"), dtype=np.float32)
    assert max(image.shape[:2]) <= demo.PREVIEW_SIZE and image.shape[:2] == (192, 256)  # the photos' 4:3
    lit = (image.max(axis=2) > 20).mean()
    if trained:  # a room: surfaces fill much of the frame, in the photos' colours
        assert 0.05 < lit < 0.99, f"the preview is blank or flat ({lit:.1%} of pixels lit)"
        assert len(np.unique(image.reshape(-1, 3) // 32, axis=0)) > 8
    else:        # random weights: a diffuse cloud, but something is drawn
        assert lit > 0.005, f"the preview is blank ({lit:.1%} of pixels lit)"

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
