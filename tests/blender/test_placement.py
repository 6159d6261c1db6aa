"""Level & Ground and the scale operators on an existing import, through the Placement panel.

The bundle is a scene whose truth is exact: a ring of cameras looking down 20–40° at a floor
(every grid point is its ray's hit on z = 0), the target at the truth's origin, camera 0 looking
along +Y, everything in the frame of camera 0 and in arbitrary units (`UNITS` per metre) as the
network gives it. Imported with the first camera's rule it stands tilted; Level & Ground puts it
back on the truth's frame, and each scale operator must then reproduce the metric truth to 0.1 %,
with Gaussians, point size and cameras following and each photo still lining up.
"""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import bpy
import numpy as np
import pytest

from tests.helpers.blender_queries import project
from tests.helpers.cameras import Z_UP_WORLD, look_at
from tests.helpers.photos import smooth_photos
from recording_layout import RecordingLayout

UNITS = 0.37          # network units per metre
GRID = (12, 16)
METRIC = 1e-3         # the scale operators' bound: 0.1 %


@pytest.fixture
def mods(ext: ModuleType) -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{ext.__name__}.{name}")
            for name in ("api", "panel", "core.bundle", "core.conventions", "core.exports.ply", "importers.placement",
                         "importers.points",
                         "importers.gaussians", "importers.nodes")}


def floor_scene(mods: dict[str, ModuleType], folder: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """(bundle in camera 0's frame and network units, truth cameras [N,4,4] OpenCV, truth points [N,h,w,3]) in metres."""
    h, w = GRID
    n = 6
    rng = np.random.default_rng(3)
    cams, pts = [], []
    focal, size = 60.0, (64, 48)
    for k in range(n):
        azimuth = -math.pi / 2 + 2 * math.pi * k / n          # camera 0 south of the target: looks along +Y
        elevation = math.radians(20 + 4 * k)
        eye = 3.0 * np.array([math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation),
                              math.sin(elevation)])
        c2w = look_at(eye, np.zeros(3), Z_UP_WORLD)
        u, v = np.meshgrid(8 + (np.arange(w) + 0.5) * 3.0, (np.arange(h) + 0.5) * 4.0)
        rays = np.stack([(u - size[0] / 2) / focal, (v - size[1] / 2) / focal, np.ones_like(u)], -1) @ c2w[:3, :3].T
        depth = -eye[2] / rays[..., 2]                           # every ray hits the floor z = 0
        cams.append(c2w)
        pts.append(eye + rays * depth[..., None])
    truth_cams, truth_pts = np.stack(cams), np.stack(pts)
    to_first = np.linalg.inv(truth_cams[0])
    net_cams = to_first @ truth_cams
    net_cams[:, :3, 3] *= UNITS
    net_pts = (truth_pts @ to_first[:3, :3].T + to_first[:3, 3]) * UNITS
    photos = smooth_photos(folder, n, size, name="v{}.png")
    quat = rng.normal(size=(n, h, w, 4))
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    bundle = mods["core.bundle"].Bundle(
        images=rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8), pts3d=net_pts.astype(np.float32),
        conf=(1.0 + rng.exponential(2.0, size=(n, h, w))).astype(np.float32),
        intrinsics=np.tile(np.array([[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]], np.float32), (n, 1, 1)),
        cam2world=net_cams.astype(np.float32), photo_size=np.tile(np.array(size, np.int32), (n, 1)),
        crop_box=np.tile(np.array([8, 0, 56, 48], np.float32), (n, 1)), photo_paths=[str(p) for p in photos],
        meta={"reference_view": 0}, gaussian_rotation=quat.astype(np.float32),
        gaussian_scale=np.full((n, h, w, 3), 0.01 * UNITS, np.float32),
        gaussian_opacity=np.full((n, h, w), 0.5, np.float32))
    return bundle, truth_cams, truth_pts


def vertices(obj: bpy.types.Object) -> np.ndarray:
    co = np.zeros(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def attribute(obj: bpy.types.Object, name: str, field: str, width: int) -> np.ndarray:
    data = obj.data.attributes[name].data
    values = np.zeros(len(data) * width, dtype=np.float32)
    data.foreach_get(field, values)
    return values.reshape(-1, width)


def panel_operators(mods: dict[str, ModuleType]) -> list[str]:
    layout = RecordingLayout()
    mods["panel"].VIEW3D_PT_mvdust3r_placement.draw(SimpleNamespace(layout=layout), bpy.context)
    return layout.operators()


def imported(mods: dict[str, ModuleType], bundle: Any) -> Any:
    result = mods["api"].import_bundle(bundle, align="first_camera", background_images=False, image_planes=True,
                                       confidence_drop_percent=0.0)
    bpy.context.view_layer.objects.active = result.points
    return result


def radius(mods: dict[str, ModuleType], obj: bpy.types.Object) -> float:
    return float(mods["importers.nodes"].get_modifier_input(obj.modifiers[mods["importers.points"].MODIFIER],
                                                            mods["importers.points"].RADIUS))


def test_the_panel_offers_level_and_scale_for_the_selected_import(mods, tmp_path):
    assert panel_operators(mods) == []          # nothing selected: nothing to place
    imported(mods, floor_scene(mods, tmp_path)[0])
    assert panel_operators(mods) == ["mvdust3r_blender.level_ground", "mvdust3r_blender.scale_distance",
                                     "mvdust3r_blender.scale_camera_height", "mvdust3r_blender.scale_size"]


def test_level_and_ground_puts_a_tilted_import_on_the_truths_floor(mods, tmp_path):
    bundle, truth_cams, truth_pts = floor_scene(mods, tmp_path)
    result = imported(mods, bundle)
    tilted = vertices(result.points)
    assert np.ptp(tilted[:, 2]) > 0.3               # the first camera looked down: the floor is a slope
    assert bpy.ops.mvdust3r_blender.level_ground() == {"FINISHED"}
    levelled = vertices(result.points)
    np.testing.assert_allclose(levelled / UNITS, truth_pts.reshape(-1, 3), atol=1e-4)
    for camera, truth in zip(result.cameras, truth_cams):
        np.testing.assert_allclose(np.array(camera.matrix_world.translation) / UNITS, truth[:3, 3], atol=1e-4)
    recorded = json.loads(result.collection[mods["importers.placement"].ALIGNMENT_PROPERTY])
    assert recorded["method"] == "level" and recorded["centre_source"] == "ring" and recorded["floor_support"] > 0.9
    # the same as importing with align="level"
    again = mods["api"].import_bundle(bundle, align="level", background_images=False, confidence_drop_percent=0.0)
    np.testing.assert_allclose(vertices(again.points), levelled, atol=1e-5)
    assert any(line.startswith("levelled: up from 6 cameras") for line in again.report) and not again.warnings


def test_without_evidence_the_import_says_it_kept_the_first_cameras_frame(mods, make_bundle):
    result = mods["api"].import_bundle(make_bundle(photo_sizes=((96, 64),)), background_images=False)
    assert result.warnings == ["placed in the first camera's frame (fewer than two cameras to tell up from)"]
    recorded = json.loads(result.collection[mods["importers.placement"].ALIGNMENT_PROPERTY])
    assert recorded["method"] == "first_camera" and recorded["matrix"][2][1] == -1.0   # z = −y: the first camera's rule


@pytest.mark.parametrize("known", ["distance", "camera height", "size"])
def test_scaling_to_what_is_known_gives_the_metric_truth(mods, known, tmp_path):
    bundle, truth_cams, truth_pts = floor_scene(mods, tmp_path)
    result = imported(mods, bundle)
    bpy.ops.mvdust3r_blender.level_ground()
    scene = bpy.context.scene
    settings = scene.mvdust3r
    truth = truth_pts.reshape(-1, 3)
    radius_before, gaussians_before = radius(mods, result.points), attribute(result.gaussians, "scale", "vector", 3)
    display_before, clip_before = result.cameras[2].data.display_size, result.cameras[2].data.clip_end
    plane_before = vertices([c for c in result.cameras[2].children if c.type == "MESH"][0])
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[2].name)
    seen_before = project(scene, result.cameras[2], vertices(result.points)[::7])
    bpy.context.view_layer.objects.active = result.points
    if known == "distance":                         # two vertices picked in the cloud
        picked = [5, 900]
        chosen = np.zeros(len(result.points.data.vertices), dtype=bool)
        chosen[picked] = True
        result.points.data.vertices.foreach_set("select", chosen)
        settings.known_distance = float(np.linalg.norm(truth[picked[0]] - truth[picked[1]]))
        operator = bpy.ops.mvdust3r_blender.scale_distance
    elif known == "camera height":                  # the active camera's height above the floor
        bpy.context.view_layer.objects.active = result.cameras[4]
        settings.known_camera_height = float(truth_cams[4][2, 3])
        operator = bpy.ops.mvdust3r_blender.scale_camera_height
    else:                                           # the size of every shown point's bounding box
        settings.known_size = float(np.ptp(truth, axis=0).max())
        operator = bpy.ops.mvdust3r_blender.scale_size
    assert operator() == {"FINISHED"}
    size = float(np.linalg.norm(np.ptp(truth, axis=0)))
    assert np.abs(vertices(result.points) - truth).max() < METRIC * size
    for camera, c2w in zip(result.cameras, truth_cams):
        assert np.linalg.norm(np.array(camera.matrix_world.translation) - c2w[:3, 3]) < METRIC * size
        np.testing.assert_allclose(np.array(camera.matrix_world.to_3x3()) @ np.diag([1.0, -1.0, -1.0]), c2w[:3, :3],
                                   atol=1e-5)       # rigid: rotation only
    factor = 1 / UNITS
    assert radius(mods, result.points) == pytest.approx(radius_before * factor, rel=METRIC)
    np.testing.assert_allclose(attribute(result.gaussians, "scale", "vector", 3), gaussians_before * factor, rtol=METRIC)
    np.testing.assert_allclose(vertices(result.gaussians), vertices(result.points), atol=1e-5)
    assert result.cameras[2].data.display_size == pytest.approx(display_before * factor, rel=METRIC)
    assert result.cameras[2].data.clip_end == pytest.approx(clip_before * factor, rel=METRIC)
    planes = [child for child in result.cameras[2].children if child.type == "MESH"]
    np.testing.assert_allclose(vertices(planes[0]), plane_before * factor, rtol=METRIC)
    # each photo still lines up: the points land on the same pixels of the render camera
    seen_after = project(scene, result.cameras[2], vertices(result.points)[::7])
    np.testing.assert_allclose(seen_after[:, :2], seen_before[:, :2], rtol=1e-4, atol=1e-3)
    recorded = json.loads(result.collection[mods["importers.placement"].ALIGNMENT_PROPERTY])
    assert np.cbrt(np.linalg.det(np.array(recorded["matrix"])[:3, :3])) == pytest.approx(factor, rel=METRIC)


def test_export_writes_the_import_as_it_stands_levelled_and_to_scale(mods, tmp_path):
    """Export… after Level & Ground and a scale writes the metric truth: the files carry the placement
    the artist gave the import (in the exports' axes), not the bundle's network units."""
    bundle, truth_cams, truth_pts = floor_scene(mods, tmp_path)
    path = tmp_path / "scene.npz"
    mods["core.bundle"].write_bundle(bundle, path)
    result = imported(mods, path)
    assert bpy.ops.mvdust3r_blender.level_ground() == {"FINISHED"}
    truth = truth_pts.reshape(-1, 3)
    bpy.context.scene.mvdust3r.known_size = float(np.ptp(truth, axis=0).max())
    assert bpy.ops.mvdust3r_blender.scale_size() == {"FINISHED"}
    out = tmp_path / "exports"
    assert bpy.ops.mvdust3r_blender.export_result(directory=str(out), formats={"ply"}) == {"FINISHED"}
    header, body = (out / "points.ply").read_bytes().split(b"end_header\n", 1)
    assert f"element vertex {len(truth)}\n".encode() in header
    written = np.frombuffer(body, dtype=mods["core.exports.ply"].POINTS_DTYPE)
    exported = np.stack([written["x"], written["y"], written["z"]], -1).astype(np.float64)
    to_exports = np.linalg.inv(mods["core.conventions"].world_axes("Z_UP"))[:3, :3]  # Blender Z-up → the exports' axes
    size = float(np.linalg.norm(np.ptp(truth, axis=0)))
    assert np.abs(exported - truth @ to_exports.T).max() < METRIC * size
    # api.export of the same import agrees; asking for the bundle's own level frame leaves the scale out
    again = mods["api"].export(result, ["ply"], tmp_path / "api")
    assert (again["ply"]).read_bytes() == (out / "points.ply").read_bytes()
    level = mods["api"].export(result, ["ply"], tmp_path / "level", align="level")
    spread = np.frombuffer(level["ply"].read_bytes().split(b"end_header\n", 1)[1],
                           dtype=mods["core.exports.ply"].POINTS_DTYPE)
    assert np.ptp(spread["x"]) == pytest.approx(np.ptp(written["x"]) * UNITS, rel=1e-3)


def test_a_distance_needs_two_picked_points(mods, tmp_path):
    result = imported(mods, floor_scene(mods, tmp_path)[0])
    before = vertices(result.points)
    with pytest.raises(RuntimeError, match=f"{len(before)} points picked: select two vertices"):  # a new mesh: all selected
        bpy.ops.mvdust3r_blender.scale_distance(value=2.0)
    np.testing.assert_array_equal(vertices(result.points), before)
    # one picked vertex and the 3D cursor
    chosen = np.zeros(len(result.points.data.vertices), dtype=bool)
    chosen[0] = True
    result.points.data.vertices.foreach_set("select", chosen)
    bpy.context.scene.cursor.location = tuple(before[0] + [0.0, 0.0, 0.5])
    assert bpy.ops.mvdust3r_blender.scale_distance(value=2.0) == {"FINISHED"}
    np.testing.assert_allclose(vertices(result.points), before * 4.0, rtol=1e-5, atol=1e-6)
