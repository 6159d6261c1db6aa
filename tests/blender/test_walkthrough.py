"""The artist's whole path, through the operators and properties the panels' draw() shows: add the
photos of ``samples/room``, reconstruct them with the built-in model, slide the cut, pick a
camera, fix what hides the result, apply the splat render settings, F12, Export…, Save Bundle…
and File › Import the saved bundle. The scene starts with Blender's default cube at the origin,
which encloses this reconstruction: a first F12 without the fix renders the cube's inside.

The render through the first photo's camera must not be empty and must correlate with that photo.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np
import pytest
from PIL import Image
from installed import PACKAGE, ROOT, module, worker_python
from recording_layout import RecordingLayout
from test_run import drive

ROOM = ROOT / "samples" / "room"
RENDER_WIDTH = 80  # px: a quarter of the photos' 320×240


def draw_result() -> RecordingLayout:
    layout = RecordingLayout()
    module("panel").VIEW3D_PT_mvdust3r_result.draw(type("Panel", (), {"layout": layout})(), bpy.context)
    return layout


def shown_points(obj: bpy.types.Object) -> int:
    """How many points the evaluated point-cloud object draws (what the viewport and renders show)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return sum(len(i.object.data.points) for i in depsgraph.object_instances
               if i.is_instance and i.parent is not None and i.parent.original == obj and i.object.type == "POINTCLOUD")


def blurred(image: np.ndarray, k: int = 4) -> np.ndarray:
    """`image` [H,W,3] averaged over k×k blocks: compares shapes and colours, not splat noise."""
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    return image[:h, :w].reshape(h // k, k, w // k, k, -1).mean(axis=(1, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@pytest.fixture
def builtin(ext: Any, tmp_path: Path) -> Any:
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = worker_python()
    prefs.checkpoint = module("preferences").BUILTIN
    prefs.device = "cpu"
    prefs.bundle_folder = str(tmp_path / "kept")
    yield prefs
    module("session").SESSION.shutdown()


def test_from_photos_to_render_export_bundle_and_reimport(builtin: Any, tmp_path: Path) -> None:
    bpy.ops.mesh.primitive_cube_add(size=2.0)  # what a new file has: F12 would render its inside
    cube = bpy.context.active_object
    assert draw_result().labels()[0].startswith("No reconstruction yet")

    photos = sorted(ROOM.glob("view_*.png"))
    assert bpy.ops.mvdust3r_blender.add_photos(directory=str(ROOM) + os.sep,
                                               files=[{"name": p.name} for p in photos]) == {"FINISHED"}
    assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
    controller = drive(timeout=600.0)
    assert controller.phase.value == "DONE", f"{controller.message} ({controller.hint})"
    state = bpy.context.window_manager.mvdust3r_run
    collection = bpy.data.collections[state.collection]
    reconstruction = module("result_settings").active(bpy.context)
    assert reconstruction is not None and reconstruction.collection == collection
    assert cube.name in state.hint and any(w in state.hint for w in ("encloses", "surrounds", "stands inside")), state.hint
    kept = Path(reconstruction.bundle_path)
    assert kept.is_file() and kept.parent == tmp_path / "kept"  # the run kept its bundle

    # the Result panel: the cut, the cameras, the warning about the cube and its fix
    layout = draw_result()
    assert {"hide_percent", "point_size", "renders", "show_cameras", "show_photos"} <= set(layout.props())
    assert any(cube.name in t and "F12 would show it" in t for t in layout.labels())
    assert {"mvdust3r_blender.hide_blockers", "mvdust3r_blender.render_settings", "mvdust3r_blender.export_result",
            "mvdust3r_blender.save_bundle", "mvdust3r_blender.set_render_camera",
            "mvdust3r_blender.look_through"} <= set(layout.operators())

    # slide the cut: exactly the share is hidden, even with ties at the floor, and the panel says so
    controls = collection.mvdust3r
    total = reconstruction.total
    for percent in (3.0, 5.0, 50.0, 0.0):
        controls.hide_percent = percent
        reconstruction = module("result_settings").active(bpy.context)
        expected = total - int(total * percent / 100.0)
        assert reconstruction.shown == expected
        assert shown_points(reconstruction.points) == expected, percent
        assert f"{expected:,} of {total:,} points shown" in " ".join(draw_result().labels())
    controls.hide_percent = 10.0
    shown = total - int(total * 0.1)

    # pick the first photo's camera, fix the F12, render
    camera = reconstruction.cameras[0]
    assert bpy.ops.mvdust3r_blender.set_render_camera(camera=camera.name) == {"FINISHED"}
    assert bpy.context.scene.camera == camera
    assert bpy.ops.mvdust3r_blender.hide_blockers() == {"FINISHED"}
    assert cube.hide_render
    assert not any("F12 would show it" in t for t in draw_result().labels())
    assert bpy.ops.mvdust3r_blender.render_settings() == {"FINISHED"}
    scene = bpy.context.scene
    assert scene.render.engine == "CYCLES" and scene.cycles.samples == 8 and not scene.cycles.use_denoising
    assert controls.renders == "SPLATS"
    scene.render.resolution_percentage = 100 * RENDER_WIDTH // scene.render.resolution_x
    scene.render.filepath = str(tmp_path / "f12.png")
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    rendered = np.asarray(Image.open(tmp_path / "f12.png").convert("RGB"), dtype=np.float64) / 255.0
    photo = Image.open(photos[0]).convert("RGB").resize(rendered.shape[1::-1], Image.BILINEAR)
    photo_pixels = np.asarray(photo, dtype=np.float64) / 255.0
    assert rendered.std() > 0.02, "the render is empty"
    # The built-in model's reconstruction is rough (blurred correlation 0.25–0.36 with its photo): what
    # this checks is that the render lines up with the photo, far better than with the photo mirrored
    # or upside down (a camera or axis convention gone wrong), not the model's quality.
    score = correlation(blurred(rendered), blurred(photo_pixels))
    mirrored = max(correlation(blurred(rendered), blurred(photo_pixels[:, ::-1])),
                   correlation(blurred(rendered), blurred(photo_pixels[::-1, ::-1])))
    assert score > 0.15 and score > mirrored + 0.15, \
        f"the render through camera 1 does not line up with photo 1 (correlation {score:.2f}, mirrored {mirrored:.2f})"

    # Export… writes the shown points
    out = tmp_path / "export"
    assert bpy.ops.mvdust3r_blender.export_result(directory=str(out), formats={"ply", "glb", "splat"}) == {"FINISHED"}
    header = (out / "points.ply").read_bytes()[:400].split(b"end_header")[0].decode()
    assert f"element vertex {shown}" in header
    assert (out / "scene.glb").stat().st_size > 0 and (out / "scene.splat").stat().st_size > 0

    # Save Bundle… and File › Import it again
    saved = tmp_path / "saved" / "room.npz"
    assert bpy.ops.mvdust3r_blender.save_bundle(filepath=str(saved)) == {"FINISHED"}
    assert saved.is_file() and collection["mvdust3r_bundle"] == str(saved)
    before = set(bpy.data.collections)
    assert bpy.ops.import_scene.mvdust3r_bundle(filepath=str(saved)) == {"FINISHED"}
    (again,) = set(bpy.data.collections) - before
    reimported = module("result_settings").active(bpy.context)
    assert reimported is not None and reimported.collection == again
    assert reimported.total == total and len(reimported.cameras) == len(photos)
