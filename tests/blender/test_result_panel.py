"""The Result panel's controls and operators on an imported bundle (no worker): the live cut with
ties at the floor, what renders, the camera menus, Look Through, Export… of every format, Save
Bundle…, what hides the result and its fix, the splat render settings, and the messages when
something is missing."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import bpy
import numpy as np
import pytest
from installed import module
from recording_layout import RecordingLayout


def imported(make_bundle: Callable[..., Any], tmp_path: Path, **options: Any) -> Any:
    bundle = make_bundle(**{k: options.pop(k) for k in ("gaussians",) if k in options})
    path = module("core.bundle").write_bundle(bundle, tmp_path / "shoot.npz")
    assert bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path), **options) == {"FINISHED"}
    reconstruction = module("result_settings").active(bpy.context)
    assert reconstruction is not None
    return reconstruction


def test_the_cut_hides_exactly_the_share_even_with_ties_at_the_floor(ext: ModuleType, tmp_path: Path,
                                                                     make_bundle: Callable[..., Any]) -> None:
    reconstruction = imported(make_bundle, tmp_path)
    mesh = reconstruction.points.data
    total = len(mesh.vertices)
    confidence = np.ones(total, dtype=np.float32)  # a third of the points tie at the floor, 1.0
    confidence[total // 3:] = np.linspace(1.001, 9.0, total - total // 3)
    mesh.attributes["confidence"].data.foreach_set("value", confidence)
    controls = reconstruction.collection.mvdust3r
    for percent in (3.0, 20.0, 33.0, 50.0, 0.0):
        controls.hide_percent = percent
        again = module("result_settings").active(bpy.context)
        assert again.shown == total - int(total * percent / 100.0)
        assert controls.hide_percent == pytest.approx(percent)
    controls.hide_percent = 20.0
    assert module("result_settings").active(bpy.context).threshold == pytest.approx(1.0)  # the cut falls in the tie


def test_renders_and_viewport_toggles(ext: ModuleType, tmp_path: Path, make_bundle: Callable[..., Any]) -> None:
    reconstruction = imported(make_bundle, tmp_path)
    controls = reconstruction.collection.mvdust3r
    assert controls.renders == "SPLATS" and reconstruction.points.hide_render and not reconstruction.gaussians.hide_render
    controls.renders = "BOTH"
    assert not reconstruction.points.hide_render and not reconstruction.gaussians.hide_render
    controls.renders = "POINTS"
    assert not reconstruction.points.hide_render and reconstruction.gaussians.hide_render
    controls.show_cameras = False
    assert all(c.hide_viewport for c in reconstruction.cameras) and not controls.show_cameras
    controls.show_photos = False
    assert not any(c.data.show_background_images for c in reconstruction.cameras)
    controls.point_size = 2.0
    assert controls.point_size == pytest.approx(2.0)
    assert not module("result_settings").active(bpy.context).collection.mvdust3r.show_photos


def test_camera_menus_set_render_camera_and_look_through(ext: ModuleType, tmp_path: Path,
                                                        make_bundle: Callable[..., Any]) -> None:
    reconstruction = imported(make_bundle, tmp_path)
    operators_result = module("operators_result")
    for name in operators_result.CAMERA_MENUS:
        assert operators_result.draw_camera_menu in getattr(bpy.types, name)._dyn_ui_initialize(), name
    camera = reconstruction.cameras[1]
    bpy.context.view_layer.objects.active = camera
    layout = RecordingLayout()
    operators_result.draw_camera_menu(SimpleNamespace(layout=layout), bpy.context)
    assert layout.operators() == ["mvdust3r_blender.set_render_camera", "mvdust3r_blender.look_through"]
    assert ("set camera", (camera.name,), {}) in layout.log
    bpy.context.view_layer.objects.active = reconstruction.points  # not a camera: no entries
    layout = RecordingLayout()
    operators_result.draw_camera_menu(SimpleNamespace(layout=layout), bpy.context)
    assert layout.operators() == []
    assert bpy.ops.mvdust3r_blender.look_through(camera=camera.name) == {"FINISHED"}
    scene = bpy.context.scene
    assert scene.camera == camera and (scene.render.resolution_x, scene.render.resolution_y) == (64, 96)
    with pytest.raises(RuntimeError, match="No camera 'nothing'"):
        bpy.ops.mvdust3r_blender.look_through(camera="nothing")


def test_export_writes_every_format_with_the_current_cut(ext: ModuleType, tmp_path: Path,
                                                          make_bundle: Callable[..., Any]) -> None:
    reconstruction = imported(make_bundle, tmp_path)
    formats = set(module("core.exports").FORMATS)
    assert {item[0] for item in module("operators_result").FORMAT_ITEMS} == formats
    reconstruction.collection.mvdust3r.hide_percent = 25.0
    shown = module("result_settings").active(bpy.context).shown
    out = tmp_path / "export"
    assert bpy.ops.mvdust3r_blender.export_result(directory=str(out), formats=formats) == {"FINISHED"}
    assert {p.name for p in out.iterdir()} == {module("core.exports").output_name(f) for f in formats}
    assert f"element vertex {shown}\n".encode() in (out / "points.ply").read_bytes()[:300]


def test_export_and_save_say_what_is_missing(ext: ModuleType, tmp_path: Path, make_bundle: Callable[..., Any]) -> None:
    """An operator's error report reaches a script as RuntimeError (bpy.ops); the scene is unchanged."""
    with pytest.raises(RuntimeError, match="No reconstruction: reconstruct some photos or import a bundle first"):
        bpy.ops.mvdust3r_blender.export_result(directory=str(tmp_path))
    reconstruction = imported(make_bundle, tmp_path, gaussians=False)
    with pytest.raises(RuntimeError, match="[Gg]aussian"):
        bpy.ops.mvdust3r_blender.export_result(directory=str(tmp_path / "o"), formats={"splat"})
    assert not (tmp_path / "o" / "scene.splat").exists()
    saved = tmp_path / "kept" / "copy.npz"
    assert bpy.ops.mvdust3r_blender.save_bundle(filepath=str(saved)) == {"FINISHED"}
    assert saved.is_file() and reconstruction.collection["mvdust3r_bundle"] == str(saved)
    saved.unlink()
    with pytest.raises(RuntimeError, match="the bundle of .* is gone"):
        bpy.ops.mvdust3r_blender.save_bundle(filepath=str(tmp_path / "again.npz"))


def test_an_enclosing_object_is_reported_and_hidden_from_render(ext: ModuleType, tmp_path: Path,
                                                                make_bundle: Callable[..., Any]) -> None:
    bpy.ops.mesh.primitive_cube_add(size=100.0)
    cube = bpy.context.active_object
    path = module("core.bundle").write_bundle(make_bundle(), tmp_path / "shoot.npz")
    result = module("api").import_bundle(path)
    assert any("'Cube' encloses 3 of the 3 cameras" in line for line in result.warnings)
    bpy.context.view_layer.objects.active = result.cameras[0]
    assert bpy.ops.mvdust3r_blender.hide_blockers() == {"FINISHED"}
    assert cube.hide_render and not cube.visible_get()
    assert cube.name in bpy.data.objects  # nothing is deleted
    assert bpy.ops.mvdust3r_blender.hide_blockers() == {"CANCELLED"}  # nothing left to hide


def test_splat_render_settings_say_what_they_changed(ext: ModuleType) -> None:
    scene = bpy.context.scene
    lines = module("importers.render").apply_splat_settings(scene)
    assert scene.render.engine == "CYCLES" and scene.cycles.samples == 8
    assert not scene.cycles.use_adaptive_sampling and not scene.cycles.use_denoising
    assert scene.cycles.transparent_max_bounces >= 128 and scene.cycles.min_transparent_bounces >= 64
    assert any("Max Samples" in line for line in lines) and any("Transparent" in line for line in lines)
    assert module("importers.render").apply_splat_settings(scene) == []  # applied twice: nothing more to say


def test_a_run_kept_in_the_temporary_folder_asks_to_be_saved(ext: ModuleType, tmp_path: Path,
                                                            make_bundle: Callable[..., Any]) -> None:
    temporary = Path(bpy.app.tempdir) / "mvdust3r-results"
    temporary.mkdir(parents=True, exist_ok=True)
    path = module("core.bundle").write_bundle(make_bundle(), temporary / "shoot.npz")
    try:
        assert module("bundles").folder() == temporary  # no preference, an unsaved file
        module("api").import_bundle(path)
        layout = RecordingLayout()
        module("panel").VIEW3D_PT_mvdust3r_result.draw(SimpleNamespace(layout=layout), bpy.context)
        assert any("Save Bundle… keeps it" in t for t in layout.labels())
    finally:
        path.unlink()
