"""Issue 23, second round of odd input through the installed extension in real Blender: options
that are not finite numbers, bundles whose fields have the wrong type, photos that are missing,
sideways, text or unnamable, outputs that cannot be written, the splats' handlers next to a user's
look-alike, a renamed scene, a batch whose input changed, and a Blender that quits mid-run."""
from __future__ import annotations

import importlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import bpy
import numpy as np
import pytest
from PIL import Image, ImageOps

from installed import PACKAGE, module, worker_python
from scripting_setup import scene_folder
from test_run import add, drive, make_photos

HERE = Path(__file__).resolve().parent


@pytest.fixture
def api(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.api")


def objects() -> set[str]:
    return {o.name for o in bpy.data.objects}


# ---------------------------------------------------------------------------------------------
# options: one numeric check at every entry point

@pytest.mark.parametrize("option, value, says", [
    ("point_size", math.nan, "point_size=nan is not a finite number"),
    ("point_size", math.inf, "point_size=inf is not a finite number"),
    ("point_radius", math.inf, "point_radius=inf is not a finite number"),
    ("scale_multiplier", math.nan, "scale_multiplier=nan is not a finite number"),
    ("scale_multiplier", -math.inf, "scale_multiplier=-inf"),
    ("opacity_threshold", 2, "opacity_threshold=2 is out of range: it must be >= 0 and <= 1"),
    ("opacity_threshold", math.nan, "opacity_threshold=nan"),
])
def test_import_options_that_are_not_finite_or_in_range_are_refused(api: ModuleType, make_bundle: Callable[..., Any],
                                                                    option: str, value: float, says: str) -> None:
    bundle = make_bundle(write_photos=False)
    before = objects()
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        api.import_bundle(bundle, **{option: value})
    with pytest.raises(ValueError, match=option):
        api.reconstruct([], **{option: value})  # the same check, before anything else is looked at
    assert objects() == before


def test_a_cut_given_both_ways_is_refused_by_import_and_export(api: ModuleType, make_bundle: Callable[..., Any],
                                                               tmp_path: Path) -> None:
    bundle = make_bundle(write_photos=False)
    with pytest.raises(ValueError, match="both confidence_drop_percent=10 and min_confidence=2"):
        api.import_bundle(bundle, confidence_drop_percent=10, min_confidence=2)
    with pytest.raises(ValueError, match="not both"):
        api.export(bundle, ["ply"], tmp_path / "out", confidence_drop_percent=10, min_confidence=2)
    assert not (tmp_path / "out").exists()


def test_a_cut_above_every_confidence_is_a_warning_not_a_silent_empty_cloud(api: ModuleType,
                                                                           make_bundle: Callable[..., Any],
                                                                           tmp_path: Path) -> None:
    bundle = make_bundle(write_photos=False)
    result = api.import_bundle(bundle, min_confidence=1e6)
    (line,) = [w for w in result.warnings if "no point is shown" in w]
    assert f"the highest confidence is {float(bundle.conf.max()):.4g}" in line
    exports = module("core.exports")
    with pytest.warns(exports.EmptyExportWarning, match="the exports hold no points"):
        api.export(bundle, "ply", tmp_path, min_confidence=1e6)


def test_one_export_name_as_a_string(api: ModuleType, make_bundle: Callable[..., Any], tmp_path: Path) -> None:
    written = api.export(make_bundle(write_photos=False), "ply", tmp_path)
    assert list(written) == ["ply"] and written["ply"].is_file()


# ---------------------------------------------------------------------------------------------
# photos= and outputs, checked before any worker starts (`read_only`: tests/conftest.py)

@pytest.fixture
def no_worker(ext: ModuleType, golden: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    yield {"checkpoint": golden / "mvd_reduced_ckpt.pth", "device": "cpu"}
    assert module("session").SESSION.client is None, "a worker was started for a run that cannot succeed"


@pytest.mark.parametrize("photos, says", [(None, "photos=None is neither a folder nor a list of photos"),
                                          (42, "photos=42 is neither a folder nor a list"),
                                          ([1, 2], "photos holds 1, which is not a path")])
def test_photos_that_are_no_photos_are_a_clear_error(api: ModuleType, no_worker: dict[str, Any], photos: Any,
                                                     says: str) -> None:
    with pytest.raises(module("session").RunError, match=says):
        api.reconstruct(photos, **no_worker)


def test_an_unlistable_folder_is_a_clear_error(api: ModuleType, no_worker: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Root lists every folder, so the refusal a user meets is played by the folder's listing."""
    folder = scene_folder(tmp_path / "locked", 3)
    listing = Path.iterdir

    def refuse(self: Path) -> Any:
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(module("session").RunError, match=f"cannot list the folder '{folder}': Permission denied"):
        api.reconstruct(folder, **no_worker)


def test_a_photo_name_over_255_bytes_is_named_before_the_job(api: ModuleType, no_worker: dict[str, Any],
                                                             tmp_path: Path) -> None:
    photos = sorted(scene_folder(tmp_path / "shoot", 2).iterdir())
    long = tmp_path / ("é" * 130 + ".png")  # 264 bytes
    with pytest.raises(module("session").RunError, match=r"1 of 3 photos cannot be read: .*é\.png: cannot be opened "
                                                         r"\(File name too long\)"):
        api.reconstruct([*photos, long], **no_worker)


def test_a_read_only_output_is_refused_before_the_job(api: ModuleType, no_worker: dict[str, Any], tmp_path: Path,
                                                      read_only: Path) -> None:
    photos = scene_folder(tmp_path / "shoot", 3)
    with pytest.raises(module("session").RunError) as err:
        api.reconstruct(photos, output=read_only / "scene.npz", **no_worker)
    assert err.value.message == f"cannot write {read_only / 'scene.npz'}: Read-only file system"
    report_folder = read_only / "batch"
    with pytest.raises(module("session").RunError, match=f"cannot write {report_folder}"):
        api.reconstruct_many([photos], report_folder, **no_worker)


def test_cli_with_a_read_only_blend_path_says_so_before_the_job(ext: ModuleType, no_worker: dict[str, Any],
                                                                tmp_path: Path, read_only: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    photos = scene_folder(tmp_path / "shoot", 3)
    code = module("cli").main(["reconstruct", str(photos), "--out", str(read_only / "one.blend"),
                               "--checkpoint", str(no_worker["checkpoint"]), "--device", "cpu",
                               "--python", worker_python()])
    err = capsys.readouterr().err
    assert code == 1 and f"cannot write {read_only / 'one.blend'}: Read-only file system" in err
    assert ".part" not in err and ".probe" not in err


# ---------------------------------------------------------------------------------------------
# bundles: fields checked before use, photos that are not what they were

def _write(ext: ModuleType, bundle: Any, path: Path) -> Path:
    return importlib.import_module(f"{ext.__name__}.core.bundle").write_bundle(bundle, path)


@pytest.mark.parametrize("warnings, says", [("all fine", "'meta.camera_warnings' must be a list"),
                                            ([{"views": ["x"], "message": "m"}], "entry 0 has 'views'"),
                                            ([{"views": [0.5], "message": "m"}], "from 0 to 2")])
def test_wrong_camera_warnings_are_a_bundle_error_in_file_import_and_api(api: ModuleType, ext: ModuleType,
                                                                         make_bundle: Callable[..., Any],
                                                                         tmp_path: Path, warnings: Any,
                                                                         says: str) -> None:
    bundle = make_bundle()
    path = tmp_path / "odd.npz"
    arrays = dict(np.load(_write(ext, bundle, path)))
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), "camera_warnings": warnings}))
    np.savez(path, **arrays)
    before = objects()
    with pytest.raises(RuntimeError, match=f"odd.npz: .*{says}"):  # the operator's ERROR report
        bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path))
    with pytest.raises(module("core.bundle").BundleError, match=says):
        api.import_bundle(str(path))
    bundle.meta["camera_warnings"] = warnings
    with pytest.raises(module("core.bundle").BundleError, match=says):
        api.import_bundle(bundle)
    assert objects() == before


def test_photo_warnings_are_reported_with_the_photos_named(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle()
    bundle.meta["photo_warnings"] = [{"views": [1], "message": "view_01.png is blank (all black): ..."}]
    result = api.import_bundle(bundle)
    assert "photo: view_01.png is blank (all black): ..." in result.warnings


def test_missing_unnamable_and_text_photos_are_reported_and_the_rest_imports(api: ModuleType, ext: ModuleType,
                                                                              make_bundle: Callable[..., Any],
                                                                              tmp_path: Path) -> None:
    bundle = make_bundle()
    Path(bundle.photo_paths[0]).write_text("this photo became a text file")
    bundle.photo_paths[1] = os.fsdecode(os.fsencode(tmp_path) + b"/gone\xe9.png")   # missing, not UTF-8
    bundle.photo_paths[2] = str(tmp_path / ("x" * 300 + ".png"))                     # longer than a name can be
    path = _write(ext, bundle, tmp_path / "scene.npz")
    before = objects()
    assert bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path)) == {"FINISHED"}  # the operator's reports are lines
    made = objects() - before
    assert len(made) == 5
    result = api.import_bundle(str(path))
    lines = "\n".join(result.warnings)
    assert "photo unreadable: " + bundle.photo_paths[0] + " (not an image Blender can read)" in lines
    assert f"photo not found: {tmp_path}/gone\ufffd.png" in lines
    assert "photo cannot be opened: " in lines and "File name too long" in lines
    assert "3 of 3 photos could not be loaded" in lines
    assert not [i for i in bpy.data.images if i.size[0] == 0]  # no broken image left behind


def _sideways_bundle(make_bundle: Callable[..., Any], orientation: int) -> tuple[Any, np.ndarray]:
    """View 0 (96×64 as seen) stored as 64×96 with EXIF `orientation`; the pixels it must show."""
    bundle = make_bundle()
    path = Path(bundle.photo_paths[0])
    seen = np.asarray(Image.open(path).convert("RGB"))
    undo = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]  # inverse of exif_transpose
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(seen).transpose(undo).save(path.with_suffix(".jpg"), exif=exif, quality=100, subsampling=0)
    with Image.open(path.with_suffix(".jpg")) as opened:
        upright = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert upright.shape[:2] == (64, 96)
    bundle.photo_paths[0] = str(path.with_suffix(".jpg"))
    bundle.meta["photo_orientation"] = [orientation, 1, 1]
    return bundle, upright


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_portrait_photo_shows_upright_on_background_and_plane(api: ModuleType, make_bundle: Callable[..., Any],
                                                                orientation: int) -> None:
    bundle, upright = _sideways_bundle(make_bundle, orientation)
    result = api.import_bundle(bundle, image_planes=True)
    camera = result.cameras[0]
    image = camera.data.background_images[0].image
    assert tuple(image.size) == (96, 64) == (camera["W"], camera["H"])
    pixels = np.empty(96 * 64 * 4, np.float32)
    image.pixels.foreach_get(pixels)
    shown = np.round(pixels.reshape(64, 96, 4)[::-1, :, :3] * 255)
    assert np.abs(shown - upright).max() <= 1
    plane = next(o for o in result.collection.objects if o.parent == camera)
    assert plane.data.materials[0].node_tree.nodes["Image Texture"].image == image
    assert image.packed_file is not None  # kept in the .blend, the photo on disk untouched
    assert camera.data.lens == pytest.approx(bundle.intrinsics[0, 0, 0] * camera.data.sensor_width / 96, rel=1e-5)


def test_a_bundle_without_orientation_says_a_sideways_photo_shows_turned(api: ModuleType,
                                                                         make_bundle: Callable[..., Any]) -> None:
    bundle, _ = _sideways_bundle(make_bundle, 6)
    del bundle.meta["photo_orientation"]
    result = api.import_bundle(bundle)
    assert any("is stored sideways and this bundle does not record its EXIF orientation" in w for w in result.warnings)


def test_a_wide_strip_camera_keeps_its_field_of_view(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    """20000×100 at 179°: a 1 mm lens on a 36 mm sensor is only 173.6°; the sensor widens instead."""
    bundle = make_bundle(write_photos=False)
    bundle.photo_size[0] = [20000, 100]
    focal = 10000 / math.tan(math.radians(179.0) / 2)
    bundle.intrinsics[0] = [[focal, 0, 10000], [0, focal, 50], [0, 0, 1]]
    camera = api.import_bundle(bundle, background_images=False).cameras[0]
    assert camera.data.lens >= 1.0
    assert math.degrees(camera.data.angle_x) == pytest.approx(179.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Add Photos: names Blender cannot hold, formats it cannot read

def test_add_photos_keeps_a_non_utf8_name_and_skips_heic_files(ext: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "shoot"
    make_photos(folder, 3)
    odd = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png")
    shutil.copyfile(folder / "photo_00.png", odd)
    (folder / "IMG_0042.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    result = bpy.ops.mvdust3r_blender.add_photos(directory=str(folder) + os.sep, files=[])
    assert result == {"FINISHED"}
    photos = bpy.context.scene.mvdust3r.photos
    assert [p.name for p in photos] == ["caf\ufffd.png", "photo_00.png", "photo_01.png", "photo_02.png"]
    assert photos[0].filepath == odd  # the exact path, for the run
    unsupported = module("core.photos").unsupported_photos(folder)
    assert [p.name for p in unsupported] == ["IMG_0042.HEIC"]


def test_a_folder_run_names_the_heic_files_it_skipped(api: ModuleType, golden: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    folder = scene_folder(tmp_path / "shoot", 3)
    (folder / "IMG_0042.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    try:
        result = api.reconstruct(folder, golden / "mvd_reduced_ckpt.pth", device="cpu", import_points=False,
                                 import_cameras=False, import_gaussians=False, exports="ply",
                                 export_dir=tmp_path / "out")
    finally:
        module("session").SESSION.shutdown()
    assert result.views == 3 and list(result.exports) == ["ply"]  # exports="ply": one format
    assert any("skipped 1 photo in a format this add-on cannot read (HEIC): IMG_0042.HEIC" in w
               for w in result.warnings), result.warnings


# ---------------------------------------------------------------------------------------------
# the splats' handlers

def test_handlers_touch_only_the_addons_splats_and_survive_a_missing_input(api: ModuleType,
                                                                          make_bundle: Callable[..., Any]) -> None:
    gaussians = module("importers.gaussians")
    splat_camera = module("importers.splat_camera")
    nodes = module("importers.nodes")
    result = api.import_bundle(make_bundle(write_photos=False))
    scene = bpy.context.scene
    # a user's object whose modifier has the add-on's name and a node group with the same input
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    group = nodes.new_geometry_group("Mine", [nodes.ModifierInput(gaussians.FOCAL_LENGTH, "the user's own input")])
    modifier = cube.modifiers.new(gaussians.MODIFIER, "NODES")
    modifier.node_group = group
    nodes.set_modifier_input(cube, modifier, gaussians.FOCAL_LENGTH, 12.0)
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[1].name)
    focal = module("importers.cameras").camera_focal_px(scene)
    splat_camera.sync_focal_lengths(scene)
    ours = result.gaussians.modifiers[gaussians.MODIFIER]
    assert nodes.get_modifier_input(ours, gaussians.FOCAL_LENGTH) == pytest.approx(focal)
    assert nodes.get_modifier_input(modifier, gaussians.FOCAL_LENGTH) == 12.0  # the user's is untouched
    # the add-on's group loses the input (an edit by hand): no error, on every update and render
    interface = ours.node_group.interface
    interface.remove(next(i for i in interface.items_tree if getattr(i, "name", "") == gaussians.FOCAL_LENGTH))
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    for handler in (*bpy.app.handlers.depsgraph_update_post, *bpy.app.handlers.render_pre):
        if handler.__module__.startswith(PACKAGE):
            handler(scene, None)
    splat_camera.sync_focal_lengths(scene)


# ---------------------------------------------------------------------------------------------
# the panel's run: a renamed scene, a Blender that exits

def test_renaming_the_scene_during_a_run_keeps_the_result(configured: Any, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 3))
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
    bpy.context.scene.name = "Renamed meanwhile"
    controller = drive()
    assert controller.phase.value == "DONE", f"{controller.message} ({controller.hint})"
    scene = bpy.data.scenes["Renamed meanwhile"]
    assert scene.collection.children.get(controller.collection_name) is not None


def test_a_panel_run_shows_the_imports_warnings(configured: Any, tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "shoot", 3)
    Image.new("RGB", (96, 64), (0, 0, 0)).save(photos[1])  # a lens cap
    add(photos)
    bpy.ops.mvdust3r_blender.reconstruct()
    controller = drive()
    state = bpy.context.window_manager.mvdust3r_run
    assert controller.phase.value == "DONE" and "warning" in state.message, state.message
    assert "photo: photo_01.png is blank (all black)" in state.hint


def test_blender_exiting_during_a_panel_run_leaves_no_run_folder(extension_zip: Path, golden: Path,
                                                                 tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "BLENDER_USER_RESOURCES"}
    env["TMPDIR"] = str(temp)
    run = subprocess.run([sys.executable, str(HERE / "exit_during_run.py"), str(extension_zip),
                          str(golden / "mvd_reduced_ckpt.pth"), worker_python(), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "run started in" in run.stdout
    assert not list(temp.glob("mvdust3r-run-*")), run.stdout


# ---------------------------------------------------------------------------------------------
# batch resume: the stamp

_OTHER_WEIGHTS = """
import sys, torch
from argparse import Namespace
with torch.serialization.safe_globals([Namespace]):
    ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
ckpt["model"][key] = ckpt["model"][key] * 1.01
torch.save(ckpt, sys.argv[1])
"""
"""Another model at the same path: the checkpoint's weights scaled (run with the worker's torch)."""


def test_resume_redoes_a_scene_whose_photos_checkpoint_or_options_changed(ext: ModuleType, golden: Path,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    checkpoint = tmp_path / "model.pth"
    shutil.copyfile(golden / "mvd_reduced_ckpt.pth", checkpoint)
    photos = scene_folder(tmp_path / "kitchen", 3)
    api = module("api")

    logs: list[str] = []

    def batch(**options: Any) -> str:
        log = io.StringIO()
        report = api.reconstruct_many([photos], tmp_path / "out", checkpoint=checkpoint, device="cpu", blend=False,
                                      formats=["ply"], log=log, **options)
        assert report.ok, report.table()
        logs.append(log.getvalue())
        return str(report.scenes[0].status)

    (photos / "IMG_0042.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    try:
        assert batch() == "done"
        assert "1/1 kitchen: skipped 1 photo in a format this add-on cannot read (HEIC): IMG_0042.HEIC" in logs[0]
        assert batch() == "skipped"
        first = sorted(photos.glob("view_*.png"))[0]
        with Image.open(first) as image:  # the same name, other content
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first)
        assert batch() == "done"
        assert batch() == "skipped"
        assert batch(confidence_drop_percent=10.0) == "done"
        assert batch(confidence_drop_percent=10.0) == "skipped"
        subprocess.run([worker_python(), "-c", _OTHER_WEIGHTS, str(checkpoint)], check=True, timeout=120)
        assert batch(confidence_drop_percent=10.0) == "done"
        record = json.loads((tmp_path / "out" / "kitchen.json").read_text())
        assert record["stamp"]["imports"]["confidence_drop_percent"] == 10.0 == record["stamp"]["cut"]["confidence_drop_percent"]
        assert len(record["stamp"]["checkpoint"]["sha256"]) == 64 and len(record["stamp"]["photos"]) == 3
    finally:
        module("session").SESSION.shutdown()
