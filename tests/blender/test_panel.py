"""The sidebar panels drawn with a recording layout in each state (no runtime, ready, running,
failed, done), the photo-list operators, and the drop-on-viewport file handler."""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import bpy
import pytest
from installed import PACKAGE, ROOT, module
from recording_layout import RecordingLayout

from tests.helpers.photos import smooth_photos


def draw(panel_name: str) -> RecordingLayout:
    layout = RecordingLayout()
    getattr(module("panel"), panel_name).draw(SimpleNamespace(layout=layout), bpy.context)
    return layout


def configure_ready(golden: Path) -> None:
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = os.environ.get("MVDUST3R_WORKER_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    prefs.checkpoint = "LOCAL"
    prefs.checkpoint_path = str(golden / "mvd_reduced_ckpt.pth")


def test_panels_are_registered_in_the_sidebar_tab(ext: ModuleType) -> None:
    for name in ("VIEW3D_PT_mvdust3r_photos", "VIEW3D_PT_mvdust3r_options", "VIEW3D_PT_mvdust3r_run"):
        cls = getattr(bpy.types, name)
        assert (cls.bl_space_type, cls.bl_region_type, cls.bl_category) == ("VIEW_3D", "UI", "MV-DUSt3R")
    assert hasattr(bpy.types, "MVDUST3R_UL_photos")


def test_no_runtime_state_says_what_to_set_up(ext: ModuleType) -> None:
    layout = draw("VIEW3D_PT_mvdust3r_run")
    assert any("the PyTorch runtime is not set up" in t for t in layout.labels())
    assert "preferences.addon_show" in layout.operators()
    assert ("set enabled", (False,), {}) in layout.log  # Reconstruct is greyed out
    assert "mvdust3r_blender.reconstruct" in layout.operators()


def test_ready_state_offers_reconstruct_and_release(ext: ModuleType, golden: Path) -> None:
    configure_ready(golden)
    layout = draw("VIEW3D_PT_mvdust3r_run")
    assert layout.operators() == ["mvdust3r_blender.reconstruct"]  # Unload Model: only while a worker runs
    assert ("set enabled", (True,), {}) in layout.log
    assert not any("Set-up needed" in t for t in layout.labels())


def test_running_state_shows_progress_and_cancel(ext: ModuleType, golden: Path) -> None:
    configure_ready(golden)
    run = module("run")
    session = module("session")
    spec = session.RunSpec(photos=("/a.png", "/b.png"), worker=session.WorkerSettings("/p", "/c", "cpu"))
    controller = run.RunController(spec, scene_name="Scene")  # not started: a run in progress as far as the UI knows
    controller.stage, controller.fraction = "network", 0.4
    controller.publish()
    run._active = controller
    try:
        layout = draw("VIEW3D_PT_mvdust3r_run")
    finally:
        run._active = None
    progress = [kw for name, _, kw in layout.log if name == "progress"]
    assert progress and progress[0]["factor"] == pytest.approx(0.4) and "network 40 %" in progress[0]["text"]
    assert layout.operators() == ["mvdust3r_blender.cancel"]


def test_failed_state_shows_the_error_and_its_fix(ext: ModuleType, golden: Path) -> None:
    configure_ready(golden)
    state = bpy.context.window_manager.mvdust3r_run
    state.state, state.message, state.hint = "FAILED", "cannot read photo 'x.png'", "remove it from the list"
    layout = draw("VIEW3D_PT_mvdust3r_run")
    labels = layout.labels()
    assert "Last run: cannot read photo 'x.png'" in labels and "remove it from the list" in labels
    assert "mvdust3r_blender.reconstruct" in layout.operators()  # a new run can start


def test_done_state_shows_result_and_timings(ext: ModuleType, golden: Path) -> None:
    configure_ready(golden)
    state = bpy.context.window_manager.mvdust3r_run
    state.state, state.message, state.timings = "DONE", "3 photos → shoot", "total 2.0 s · network 1.2 s"
    labels = draw("VIEW3D_PT_mvdust3r_run").labels()
    assert "Last run: 3 photos → shoot" in labels and "total 2.0 s · network 1.2 s" in labels


def test_photo_panel_lists_photos_and_options_panel_draws_the_import_options(ext: ModuleType, tmp_path: Path) -> None:
    paths = smooth_photos(tmp_path, 2, name=["a.png", "b.jpg"])
    bpy.ops.mvdust3r_blender.add_photos(directory=str(tmp_path) + os.sep, files=[{"name": p.name} for p in paths])
    layout = draw("VIEW3D_PT_mvdust3r_photos")
    assert [args[0] for name, args, _ in layout.log if name == "template_list"] == ["MVDUST3R_UL_photos"]
    assert layout.labels()[0].startswith("2 photos: add 4–100 photos")  # fewer than MV-DUSt3R+ needs
    assert {"mvdust3r_blender.add_photos", "mvdust3r_blender.remove_photo",
            "mvdust3r_blender.clear_photos"} <= set(layout.operators())
    assert "reference_photo" in layout.props() and "focal_mode" in layout.props()
    assert "focal_mm" not in layout.props()                 # shown only when the focal length is given
    bpy.context.scene.mvdust3r.focal_mode = "GIVEN"
    assert "focal_mm" in draw("VIEW3D_PT_mvdust3r_photos").props()
    options = draw("VIEW3D_PT_mvdust3r_options").props()
    assert {"import_points", "import_cameras", "import_gaussians", "image_planes", "confidence_drop_percent",
            "point_size"} <= set(options)
    item = RecordingLayout()
    settings = bpy.context.scene.mvdust3r
    settings.reference_photo = 2
    bpy.types.MVDUST3R_UL_photos.draw_item(None, bpy.context, item, settings, settings.photos[1], 0, settings,
                                           "photo_index", 1)
    assert item.log[0][2] == {"text": "2. b.jpg", "icon": "OUTLINER_OB_CAMERA"}


def test_add_photos_from_files_and_folders_skips_duplicates_and_non_images(ext: ModuleType, tmp_path: Path) -> None:
    paths = smooth_photos(tmp_path / "shoot", 3, name=["c.png", "a.jpg", "b.png"])
    (tmp_path / "shoot" / "notes.txt").write_text("not a photo")
    settings = bpy.context.scene.mvdust3r
    folder = str(tmp_path / "shoot") + os.sep
    assert bpy.ops.mvdust3r_blender.add_photos(directory=folder, files=[{"name": "b.png"}]) == {"FINISHED"}
    assert [p.name for p in settings.photos] == ["b.png"]
    assert bpy.ops.mvdust3r_blender.add_photos(directory=folder) == {"FINISHED"}  # the whole folder, sorted
    assert [p.name for p in settings.photos] == ["b.png", "a.jpg", "c.png"]
    assert [p.filepath for p in settings.photos] == [str(paths[2]), str(paths[1]), str(paths[0])]
    assert bpy.ops.mvdust3r_blender.add_photos(directory=folder, files=[{"name": "notes.txt"}]) == {"CANCELLED"}
    assert len(settings.photos) == 3
    assert bpy.ops.mvdust3r_blender.add_photos(directory=folder) == {"CANCELLED"}  # nothing new
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.mvdust3r_blender.add_photos(directory=str(tmp_path / "nowhere") + os.sep)


def test_remove_and_clear_photos(ext: ModuleType, tmp_path: Path) -> None:
    paths = smooth_photos(tmp_path, 3, name=["a.png", "b.png", "c.png"])
    bpy.ops.mvdust3r_blender.add_photos(directory=str(tmp_path) + os.sep, files=[{"name": p.name} for p in paths])
    settings = bpy.context.scene.mvdust3r
    settings.photo_index = 1
    assert bpy.ops.mvdust3r_blender.remove_photo() == {"FINISHED"}
    assert [p.name for p in settings.photos] == ["a.png", "c.png"] and settings.photo_index == 1
    assert bpy.ops.mvdust3r_blender.remove_photo(index=0) == {"FINISHED"}
    assert [p.name for p in settings.photos] == ["c.png"]
    with pytest.raises(RuntimeError, match="There is no photo 6"):
        bpy.ops.mvdust3r_blender.remove_photo(index=5)
    assert bpy.ops.mvdust3r_blender.clear_photos() == {"FINISHED"}
    assert len(settings.photos) == 0
    assert not bpy.ops.mvdust3r_blender.clear_photos.poll()  # nothing left to clear
    assert all(p.is_file() for p in paths)  # the files stay on disk


def test_file_handler_adds_dropped_photos(ext: ModuleType, tmp_path: Path) -> None:
    handler = bpy.types.MVDUST3R_FH_photos
    assert handler.bl_import_operator == "mvdust3r_blender.add_photos"
    assert {".jpg", ".png"} <= set(handler.bl_file_extensions.split(";"))
    assert not handler.poll_drop(bpy.context)  # no 3D viewport under the cursor here
    paths = smooth_photos(tmp_path, 2, name=["x.png", "y.png"])
    # what Blender does on a drop: invoke the import operator with directory + files filled in
    assert bpy.ops.mvdust3r_blender.add_photos("INVOKE_DEFAULT", directory=str(tmp_path) + os.sep,
                                               files=[{"name": p.name} for p in paths]) == {"FINISHED"}
    assert [p.name for p in bpy.context.scene.mvdust3r.photos] == ["x.png", "y.png"]


def test_photo_list_edits_are_undoable_operators(ext: ModuleType) -> None:
    for name in ("add_photos", "remove_photo", "clear_photos"):
        assert "UNDO" in getattr(bpy.types, f"MVDUST3R_BLENDER_OT_{name}").bl_options


def test_a_failed_runs_message_goes_when_the_photo_list_changes(ext: ModuleType, tmp_path: Path) -> None:
    state = bpy.context.window_manager.mvdust3r_run
    state.state, state.message, state.hint = "FAILED", "1 photo in the list", "add at least 2 photos"
    paths = smooth_photos(tmp_path, 2, name=["a.png", "b.png"])
    bpy.ops.mvdust3r_blender.add_photos(directory=str(tmp_path) + os.sep, files=[{"name": p.name} for p in paths])
    assert (state.state, state.message, state.hint) == ("IDLE", "", "")
    assert not any("1 photo in the list" in t for t in draw("VIEW3D_PT_mvdust3r_run").labels())


def test_unload_model_shows_only_while_a_worker_holds_one(configured: Any) -> None:
    session = module("session")
    assert session.SESSION.client is None
    assert "mvdust3r_blender.release" not in draw("VIEW3D_PT_mvdust3r_run").operators()
