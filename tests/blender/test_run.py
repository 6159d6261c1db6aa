"""End to end through the installed extension: preferences point at the test worker Python and the
golden checkpoint, photos made here go through the Reconstruct operator, and the run controller is
driven by hand (timers never fire in module mode) until the result is a new collection. Cancel, a
killed worker and bad photos leave the scene exactly as it was."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest
from installed import PACKAGE, module, worker_python

from tests.helpers.photos import smooth_photos


def make_photos(folder: Path, count: int = 3) -> list[Path]:
    """The Blender runs' photos, named as their messages are checked: photo_00.png, photo_01.png, …"""
    return smooth_photos(folder, count, size=(96, 64), name="photo_{:02d}.png")


def add(paths: list[Path]) -> None:
    result = bpy.ops.mvdust3r_blender.add_photos(
        directory=str(paths[0].parent) + os.sep, files=[{"name": p.name} for p in paths])
    assert result == {"FINISHED"}


def drive(timeout: float = 120.0) -> Any:
    """What the timer does in Blender: call run.tick until it says the run is over."""
    run = module("run")
    controller = run.active()
    assert controller is not None, "no run is active"
    deadline = time.monotonic() + timeout
    interval = run.tick()
    while interval is not None:
        assert time.monotonic() < deadline, f"the run did not finish within {timeout} s (stage {controller.stage})"
        time.sleep(interval)
        interval = run.tick()
    return controller


def scene_state() -> tuple[set[str], set[str], set[str], set[str]]:
    return ({o.name for o in bpy.data.objects}, {c.name for c in bpy.data.collections},
            {m.name for m in bpy.data.meshes}, {n.name for n in bpy.data.node_groups})


def test_reconstruct_imports_a_new_collection(configured: Any, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 3))
    before = scene_state()
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}  # returns at once; the run goes on
    controller = module("run").active()
    assert controller is not None and not controller.finished
    assert before == scene_state()  # nothing is applied before the result arrives
    controller = drive()
    state = bpy.context.window_manager.mvdust3r_run
    assert controller.phase.value == "DONE", f"{controller.message} ({controller.hint})"
    assert state.state == "DONE" and state.progress == 1.0
    collection = bpy.data.collections[state.collection]
    assert bpy.context.scene.collection.children.get(collection.name) is not None
    objects = list(collection.all_objects)
    cameras = [o for o in objects if o.type == "CAMERA"]
    assert len(cameras) == 3
    meshes = [o for o in objects if o.type == "MESH"]
    assert len(meshes) >= 2  # the point cloud and the Gaussians
    assert max(len(o.data.vertices) for o in meshes) > 0
    assert "total" in state.timings and "import" in state.timings
    assert controller.timings["total"] > 0
    assert module("run").active() is None
    # a second run reuses the worker and its loaded model, and adds a second collection
    client = module("session").SESSION.client
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
    second = drive()
    assert second.phase.value == "DONE", second.message
    assert module("session").SESSION.client is client and client.alive
    assert second.collection_name != controller.collection_name
    assert set(collection.all_objects) == set(objects)  # the first import is untouched
    assert bpy.ops.mvdust3r_blender.release() == {"FINISHED"}


def test_cancel_leaves_the_scene_unchanged_and_the_worker_usable(configured: Any, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 3))
    before = scene_state()
    bpy.ops.mvdust3r_blender.reconstruct()
    assert bpy.ops.mvdust3r_blender.cancel() == {"FINISHED"}
    controller = drive()
    assert controller.phase.value == "CANCELLED"
    assert bpy.context.window_manager.mvdust3r_run.state == "CANCELLED"
    assert scene_state() == before
    client = module("session").SESSION.client
    assert client is not None and client.alive
    bpy.ops.mvdust3r_blender.reconstruct()
    again = drive()
    assert again.phase.value == "DONE", again.message
    assert module("session").SESSION.client is client  # the same worker served the next run


def test_a_killed_worker_is_reported_and_the_next_run_starts_a_new_one(configured: Any, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 3))
    before = scene_state()
    bpy.ops.mvdust3r_blender.reconstruct()
    client = module("session").SESSION.client
    assert client is not None and client.pid is not None
    os.kill(client.pid, signal.SIGKILL)
    controller = drive()
    assert controller.phase.value == "FAILED"
    assert "exited with code -9" in controller.message and "scene was not changed" in controller.message
    state = bpy.context.window_manager.mvdust3r_run
    assert state.state == "FAILED" and state.message == controller.message
    assert scene_state() == before
    bpy.ops.mvdust3r_blender.reconstruct()
    again = drive()
    assert again.phase.value == "DONE", again.message
    assert module("session").SESSION.client is not client


def test_an_unreadable_photo_is_named_and_nothing_is_imported(configured: Any, tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "shoot", 2)
    broken = tmp_path / "shoot" / "broken.png"
    broken.write_bytes(b"this is not a PNG file")
    add([*photos, broken])
    before = scene_state()
    bpy.ops.mvdust3r_blender.reconstruct()
    controller = drive()
    assert controller.phase.value == "FAILED"
    assert "broken.png" in controller.message
    assert scene_state() == before


def test_a_missing_photo_is_refused_before_anything_starts(configured: Any, tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "shoot", 3)
    add(photos)
    photos[1].unlink()
    with pytest.raises(RuntimeError, match=f"1 of 3 photos cannot be read: {photos[1]}: no such file"):
        bpy.ops.mvdust3r_blender.reconstruct()
    assert module("run").active() is None
    state = bpy.context.window_manager.mvdust3r_run
    assert state.state == "FAILED" and "photo_01.png" in state.message and "remove or replace" in state.hint


def test_too_few_photos_and_missing_setup_are_explained(ext: ModuleType, golden: Path, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 1))
    with pytest.raises(RuntimeError, match="1 photo in the list"):
        bpy.ops.mvdust3r_blender.reconstruct()
    add(make_photos(tmp_path / "more", 2))
    with pytest.raises(RuntimeError, match="PyTorch runtime is not set up"):  # factory preferences
        bpy.ops.mvdust3r_blender.reconstruct()
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = worker_python()
    with pytest.raises(RuntimeError, match="model MVDp_s2.pth is not downloaded"):
        bpy.ops.mvdust3r_blender.reconstruct()


def test_runtime_check_reports_torch_and_devices(configured: Any) -> None:
    setup_ops = module("operators_setup")
    assert bpy.ops.mvdust3r_blender.check_runtime() == {"FINISHED"}
    deadline = time.monotonic() + 60
    interval = setup_ops.poll_tasks()
    while interval is not None and time.monotonic() < deadline:
        time.sleep(interval)
        interval = setup_ops.poll_tasks()
    setup = bpy.context.window_manager.mvdust3r_setup
    assert setup.check_state == "DONE", setup.check_message
    assert configured.runtime_summary.startswith("torch 2.") and "cpu" in configured.runtime_summary


def test_invoke_without_a_modal_loop_falls_back_to_the_timer(configured: Any, tmp_path: Path) -> None:
    """The panel's button invokes the operator. Where no modal handler can be added (here, module
    mode; in Blender, a call without a window) the run is driven by the timer instead."""
    add(make_photos(tmp_path / "shoot", 2))
    assert bpy.ops.mvdust3r_blender.reconstruct("INVOKE_DEFAULT") == {"FINISHED"}
    assert bpy.app.timers.is_registered(module("run").tick)
    assert not bpy.ops.mvdust3r_blender.reconstruct.poll()  # one run at a time
    controller = drive()
    assert controller.phase.value == "DONE", controller.message
    bpy.app.timers.unregister(module("run").tick)


def test_reference_photo_and_options_reach_the_request(configured: Any, tmp_path: Path) -> None:
    add(make_photos(tmp_path / "shoot", 3))
    settings = bpy.context.scene.mvdust3r
    settings.reference_photo = 4
    with pytest.raises(RuntimeError, match="reference photo 4 does not exist: there are 3 photos"):
        bpy.ops.mvdust3r_blender.reconstruct()
    settings.reference_photo, settings.import_gaussians, settings.point_size = 2, False, 2.5
    spec = module("run").panel_spec(bpy.context)
    options = spec.options
    assert (options.reference_view, options.gaussians) == (1, False)  # 0-based below the panel; nothing to import
    assert spec.imports.gaussians is False and spec.imports.point_size == 2.5
    assert list(spec.photos) == [str(tmp_path / "shoot" / f"photo_{k:02d}.png") for k in range(3)]
    assert (spec.worker.device, spec.worker.python) == ("cpu", worker_python())
    assert options.precision == "auto"
    bpy.context.preferences.addons[PACKAGE].preferences.precision = "exact"
    try:
        assert module("run").panel_spec(bpy.context).options.precision == "exact"
    finally:
        bpy.context.preferences.addons[PACKAGE].preferences.precision = "auto"
    settings.reference_photo = 0
    assert module("run").panel_spec(bpy.context).options.reference_view is None
    assert options.focal == "auto"   # the panel's Focal Length: Auto, Estimate, or a given 35 mm equivalent
    settings.focal_mode, settings.focal_mm = "GIVEN", 35.0
    assert module("run").panel_spec(bpy.context).options.focal_mm == 35.0
    settings.focal_mode = "ESTIMATE"
    assert module("run").panel_spec(bpy.context).options.focal == "estimate"


def test_opening_another_file_cancels_the_run(configured: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(other), copy=True)
    add(make_photos(tmp_path / "shoot", 2))
    bpy.ops.mvdust3r_blender.reconstruct()
    controller = module("run").active()
    assert controller is not None
    bpy.ops.wm.open_mainfile(filepath=str(other))
    assert controller.phase.value in ("CANCELLING", "CANCELLED")
    before = scene_state()
    while controller.step() is not None:
        time.sleep(0.1)
    assert controller.phase.value == "CANCELLED"
    assert scene_state() == before  # nothing landed in the file that was opened


def test_a_banner_before_the_worker_is_ready_is_tolerated(configured: Any, tmp_path: Path) -> None:
    """A worker Python that prints a line on stdout at start-up (a conda activation script, a
    sitecustomize) once broke the panel's run and Check ("unreadable line from the worker"); lines
    before the worker's ready event are its Python's chatter. Check pressed during the run gets its
    own request id (it once reused the run's 'r1' and hung)."""
    from installed import poll_until_idle

    wrapper = tmp_path / "python-with-banner"
    wrapper.write_text(f"#!/bin/sh\necho 'Welcome! conda environment activated.'\nexec {worker_python()} \"$@\"\n")
    wrapper.chmod(0o755)
    configured.python_path = str(wrapper)
    add(make_photos(tmp_path / "shoot", 3))
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
    assert bpy.ops.mvdust3r_blender.check_runtime() == {"FINISHED"}
    controller = drive()
    assert controller.phase.value == "DONE", f"{controller.message} ({controller.hint})"
    poll_until_idle(60)
    setup = bpy.context.window_manager.mvdust3r_setup
    assert setup.check_state == "DONE", setup.check_message
    tail = module("session").SESSION.client.stderr_tail(50)
    assert any("Welcome! conda environment activated." in line for line in tail), tail
