"""The blocking Python API of the installed extension: reconstruct, export, settings resolution.
Real bpy, a real worker process, the golden checkpoint (random weights: shapes, not quality)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import pytest

from installed import PACKAGE, module, worker_python
from scripting_setup import scene_folder


@pytest.fixture
def api(configured: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The installed API; the preferences as ``configured``, the worker Python also from the env var."""
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    return module("api")


def objects() -> set[str]:
    return {o.name for o in bpy.data.objects}


def test_reconstruct_a_folder_into_a_new_collection(api: Any, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "room", 4)
    stages: list[str] = []
    result = api.reconstruct(folder, on_progress=lambda stage, fraction: stages.append(stage))
    assert result.views == 4 and result.points > 0
    assert [Path(p).name for p in result.photos] == [f"view_{k}.png" for k in range(4)]
    assert result.collection.name == "room"  # named after the photos' folder
    assert bpy.context.scene.collection.children.get("room") is not None
    kinds = sorted(o.type for o in result.objects)
    assert kinds == ["CAMERA"] * 4 + ["MESH", "MESH"]
    assert set(result.objects) == set(result.collection.all_objects)
    assert len(result.imported.points.data.vertices) == result.points
    assert result.bundle_path.is_file()
    assert result.timings["total"] > 0 and result.timings["import"] > 0
    assert stages, "no progress was reported"
    # the same worker, with the model still loaded, serves the next call
    again = api.reconstruct(sorted(folder.iterdir())[:2], import_cameras=False, import_gaussians=False,
                            name="pair")
    assert again.worker_pid == result.worker_pid and again.model_reused and again.loads == 1
    assert [o.type for o in again.objects] == ["MESH"] and again.collection.name == "pair"


def test_nothing_imported_and_export(api: Any, tmp_path: Path) -> None:
    before = objects()
    result = api.reconstruct(scene_folder(tmp_path / "room", 3), output=tmp_path / "keep" / "room.npz",
                             import_points=False, import_cameras=False, import_gaussians=False)
    assert objects() == before and result.collection is None and result.objects == []
    assert result.bundle_path == tmp_path / "keep" / "room.npz" and result.bundle_path.is_file()
    written = api.export(result, ["ply", "gaussians", "glb"], tmp_path / "exports")
    assert {k: p.name for k, p in written.items()} == {"ply": "points.ply", "gaussians": "gaussians.ply",
                                                       "glb": "scene.glb"}
    assert written["ply"].read_bytes().startswith(b"ply\n")
    assert written["glb"].read_bytes()[:4] == b"glTF"
    # a bundle path and a Bundle give the same files
    bundle = module("core.bundle").read_bundle(result.bundle_path)
    by_path = api.export(result.bundle_path, ["ply"], tmp_path / "by_path")
    by_bundle = api.export(bundle, ["ply"], tmp_path / "by_bundle")
    assert by_path["ply"].read_bytes() == by_bundle["ply"].read_bytes() == written["ply"].read_bytes()


def test_arguments_override_the_preferences(api: Any, tmp_path: Path, golden: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint= wins over the preferences; the env var wins over the preferences' runtime."""
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.checkpoint_path = str(tmp_path / "missing.pth")
    settings = module("session").WorkerSettings
    setup_error = module("session").SetupError
    with pytest.raises(setup_error, match="missing.pth"):
        settings.resolve()
    plus = golden / "mvdp_reduced_ckpt.pth"
    resolved = settings.resolve(checkpoint=plus, device="auto")
    assert resolved.checkpoint == str(plus) and resolved.device == "auto" and resolved.python == worker_python()
    monkeypatch.delenv("MVDUST3R_WORKER_PYTHON")
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = ""
    with pytest.raises(setup_error, match="no Python is set"):
        settings.resolve(checkpoint=plus)
    assert settings.resolve(checkpoint=plus, python=worker_python()).python == worker_python()
    with pytest.raises(setup_error, match="nowhere/python"):
        settings.resolve(checkpoint=plus, python=tmp_path / "nowhere" / "python")
    # nothing says where the worker runs: the preferences' remote GPU counts for scripts too
    prefs.worker_location, prefs.remote_destination = "REMOTE", "render@gpu-box"
    prefs.remote_python, prefs.remote_checkpoint = "/opt/venv/bin/python", "/models/MVDp_s2.pth"
    remote = settings.resolve(device="cuda")
    assert (str(remote.remote), remote.python, remote.checkpoint, remote.device) == \
        ("render@gpu-box", "/opt/venv/bin/python", "/models/MVDp_s2.pth", "cuda")
    assert settings.resolve(checkpoint=plus, python=worker_python()).remote is None  # a given Python is local
    prefs.worker_location = "LOCAL"
    # and a real run with the MV-DUSt3R+ checkpoint given per call (4 reference views: 4 photos)
    result = api.reconstruct(scene_folder(tmp_path / "plus", 4), checkpoint=plus, python=worker_python(),
                             import_gaussians=False)
    assert result.views == 4 and len([o for o in result.objects if o.type == "CAMERA"]) == 4


def test_bad_input_is_named_and_leaves_the_scene_alone(api: Any, tmp_path: Path) -> None:
    run_error = module("session").RunError
    worker_error = module("client.worker_client").WorkerError
    before = objects()
    with pytest.raises(run_error, match="not a folder"):
        api.reconstruct(tmp_path / "nowhere")
    (tmp_path / "one").mkdir()
    with pytest.raises(run_error, match="holds 0 photos"):
        api.reconstruct(tmp_path / "one")
    with pytest.raises(ValueError, match="unknown import option"):
        api.reconstruct(scene_folder(tmp_path / "ok", 2), colour="red")
    broken = scene_folder(tmp_path / "broken", 2) / "view_9.png"
    broken.write_bytes(b"not a PNG")
    with pytest.raises(worker_error, match="view_9.png"):
        api.reconstruct(broken.parent)
    # a folder in the list is refused before the worker is asked, in the worker's words
    photos = sorted((tmp_path / "ok").iterdir())
    message = f"1 of 3 photos cannot be read: {tmp_path / 'one'}: is a folder, not a photo"
    with pytest.raises(run_error) as refused:
        api.reconstruct([*photos, tmp_path / "one"])
    assert refused.value.message == message
    assert refused.value.hint == "remove or replace those files (JPEG, PNG, WebP, TIFF or BMP)"
    client = module("session").SESSION.client
    assert client is not None and client.alive
    with pytest.raises(worker_error) as answered:
        client.wait(client.reconstruct([*photos, tmp_path / "one"], tmp_path / "never.npz"), timeout=60)
    assert (answered.value.message, answered.value.hint) == (message, refused.value.hint)
    assert objects() == before and not bpy.data.collections
    # the worker survived the bad photo and works for the next call
    assert api.reconstruct(tmp_path / "ok", import_gaussians=False).views == 2


def test_reference_view_is_passed_to_the_network(api: Any, tmp_path: Path) -> None:
    """reference_view=k puts photo k first for the network (its frame is the world frame); the
    results stay in the user's photo order."""
    folder = scene_folder(tmp_path / "room", 3)
    result = api.reconstruct(folder, reference_view=2, import_points=False, import_gaussians=False, focal=30)
    bundle = module("core.bundle").read_bundle(result.bundle_path)
    assert bundle.meta["reference_view"] == 2 and bundle.meta["reference_order"][0] == 2
    # focal=30 (mm, 35 mm equivalent) reaches the worker: every camera has it, only the poses were solved
    assert bundle.meta["focal_option"] == "30" and bundle.meta["focal_source"] == ["option"] * 3
    assert [Path(p).name for p in bundle.photo_paths] == ["view_0.png", "view_1.png", "view_2.png"]
    with pytest.raises(module("session").RunError, match="reference view 5 does not exist: there are 3 photos"):
        api.reconstruct(folder, reference_view=5)  # refused before the worker is asked


def test_exports_are_written_by_the_worker_with_exif_rotated_photos_upright(api: Any, tmp_path: Path) -> None:
    """Phone photos carry an EXIF rotation. Blender's Python has no Pillow to turn them, so the worker
    (which has) writes the exports: the COLMAP images must have the size its cameras.txt says."""
    from PIL import Image

    folder = tmp_path / "phone"
    folder.mkdir()
    for photo in sorted(scene_folder(tmp_path / "room", 3).iterdir()):
        image = Image.open(photo).convert("RGB")  # 320x240 stored; EXIF 6 = shown rotated to 240x320
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(folder / (photo.stem + ".jpg"), exif=exif.tobytes())
    result = api.reconstruct(folder, exports=["colmap", "ply"], import_gaussians=False)
    assert set(result.exports) == {"colmap", "ply"} and result.exports["ply"].parent == result.bundle_path.parent
    colmap = result.exports["colmap"]
    cameras = [line.split() for line in (colmap / "sparse" / "0" / "cameras.txt").read_text().splitlines()
               if line and not line.startswith("#")]
    assert [(c[2], c[3]) for c in cameras] == [("240", "320")] * 3  # width, height after the rotation
    for image in sorted((colmap / "images").iterdir()):
        with Image.open(image) as saved:
            assert saved.size == (240, 320), f"{image.name} was not turned upright"


def test_precision_comes_from_the_call_or_the_preferences_and_is_recorded(api: Any, tmp_path: Path) -> None:
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    folder = scene_folder(tmp_path / "room", 2)
    nothing = {"import_points": False, "import_cameras": False, "import_gaussians": False}

    def ran(result: Any) -> dict[str, Any]:
        meta: dict[str, Any] = module("core.bundle").read_bundle(result.bundle_path).meta["precision"]
        return meta

    prefs.precision = "exact"
    try:
        assert module("session").WorkerSettings.resolve().precision == "exact"
        exact = ran(api.reconstruct(folder, **nothing))
        assert (exact["precision"], exact["compute"], exact["weights"]) == ("exact", "fp32", "float32")
        assert ran(api.reconstruct(folder, precision="fast", **nothing))["precision"] == "fast"
        with pytest.raises(ValueError, match="precision='half'"):
            api.reconstruct(folder, precision="half")
    finally:
        prefs.precision = "auto"
