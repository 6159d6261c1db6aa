"""Camera import: one camera per photo with exact intrinsics and pose (Blender's own camera model
reproduces K[R|t]; every point lands on its photo pixel), photos as backgrounds and image planes,
missing photos reported, set_render_camera applying a photo's size and aspect."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import bpy
import numpy as np
import pytest

from tests.helpers.blender_queries import project, render_rgba


@pytest.fixture
def api(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.api")


def grid_pixel_centres(bundle: Any, k: int) -> np.ndarray:
    """[h·w,2] photo-pixel centres of view k's grid (the bundle's crop_box convention)."""
    h, w = bundle.grid_size
    x0, y0, x1, y1 = bundle.crop_box[k].astype(np.float64)
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack([x0 + (jj + 0.5) * (x1 - x0) / w, y0 + (ii + 0.5) * (y1 - y0) / h], -1).reshape(-1, 2)


SIZES = [((96, 64), (64, 96), (80, 80)),            # landscape, portrait, square
         ((1920, 1080), (1080, 1920), (4000, 3000), (333, 517))]


@pytest.mark.parametrize("axes", ["Z_UP", "NETWORK"])
@pytest.mark.parametrize("sizes", SIZES, ids=["small", "large"])
def test_cameras_reproduce_k_rt_and_points_land_on_their_pixels(api: ModuleType, make_bundle: Callable[..., Any],
                                                                 axes: str, sizes: Any) -> None:
    bundle = make_bundle(photo_sizes=sizes, grid=(6, 8), gaussians=False, write_photos=False,
                         fy_over_fx=[1.0, 1.2, 0.8, 1.05][:len(sizes)],
                         principal_offset=[(0.1, -0.08), (-0.15, 0.1), (0.0, 0.2), (0.2, 0.2)][:len(sizes)])
    result = api.import_bundle(bundle, axes=axes, background_images=False)
    conventions = importlib.import_module(api.__name__.rsplit(".", 1)[0] + ".core.conventions")
    scene = bpy.context.scene
    vertices = np.zeros(len(result.points.data.vertices) * 3, dtype=np.float32)
    result.points.data.vertices.foreach_get("co", vertices)
    vertices = vertices.reshape(bundle.num_views, -1, 3)
    rng = np.random.default_rng(0)
    for k, camera in enumerate(result.cameras):
        bpy.ops.mvdust3r_blender.set_render_camera(camera=camera.name)
        assert scene.camera == camera
        width, height = (int(v) for v in bundle.photo_size[k])
        assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
        # 1) random world points: Blender's projection = K·[R|t] of the bundle's camera
        world_cv = rng.normal(0, 1, (40, 3)) + [0, 0, 3]
        w2c = np.linalg.inv(bundle.cam2world[k].astype(np.float64))
        cam = world_cv @ w2c[:3, :3].T + w2c[:3, 3]
        cam = cam[cam[:, 2] > 0.3]
        world_cv = (cam - w2c[:3, 3]) @ np.linalg.inv(w2c[:3, :3]).T
        pix = cam @ bundle.intrinsics[k].astype(np.float64).T
        expected = pix[:, :2] / pix[:, 2:]
        got = project(scene, camera, conventions.transform_points(world_cv, axes))
        assert np.abs(got[:, :2] - expected).max() < 0.5
        assert np.allclose(got[:, 2], cam[:, 2], rtol=1e-4)
        # 2) the imported points of view k land on their own photo pixels
        uv = project(scene, camera, vertices[k])
        assert np.abs(uv[:, :2] - grid_pixel_centres(bundle, k)).max() < 0.5, f"view {k}"


def test_camera_objects_names_and_properties(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle()
    result = api.import_bundle(bundle, points=False, gaussians=False)
    assert [c.name for c in result.cameras] == ["view_00", "view_01", "view_02"]
    for k, camera in enumerate(result.cameras):
        assert camera.type == "CAMERA" and camera.users_collection[0] == result.collection
        k_mat = bundle.intrinsics[k]
        assert (camera["W"], camera["H"]) == tuple(int(v) for v in bundle.photo_size[k])
        assert np.allclose([camera["fx"], camera["fy"], camera["cx"], camera["cy"]],
                           [k_mat[0, 0], k_mat[1, 1], k_mat[0, 2], k_mat[1, 2]], rtol=1e-6)
        assert camera["photo"] == bundle.photo_paths[k]
        assert camera.data.sensor_fit == "HORIZONTAL"
        # the background image is the photo itself
        assert camera.data.show_background_images
        background = camera.data.background_images[0]
        assert bpy.path.abspath(background.image.filepath) == bundle.photo_paths[k]
        assert tuple(background.image.size) == tuple(int(v) for v in bundle.photo_size[k])
    assert not any(line.startswith("photo not found") for line in result.report)


def test_image_planes_cover_the_photo(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle(photo_sizes=((120, 80), (70, 100)))
    result = api.import_bundle(bundle, points=False, gaussians=False, image_planes=True)
    scene = bpy.context.scene
    for k, camera in enumerate(result.cameras):
        planes = [o for o in camera.children if o.type == "MESH"]
        assert len(planes) == 1
        plane = planes[0]
        assert plane.users_collection[0] == result.collection
        image_node = next(n for n in plane.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
        assert bpy.path.abspath(image_node.image.filepath) == bundle.photo_paths[k]
        bpy.ops.mvdust3r_blender.set_render_camera(camera=camera.name)
        corners = np.array([plane.matrix_world @ v.co for v in plane.data.vertices])
        uv = project(scene, camera, corners)[:, :2]
        width, height = (int(v) for v in bundle.photo_size[k])
        assert np.abs(uv - [(0, height), (width, height), (width, 0), (0, 0)]).max() < 1e-2
        uvs = np.zeros(8, dtype=np.float32)
        plane.data.uv_layers[0].data.foreach_get("uv", uvs)
        assert np.allclose(uvs.reshape(4, 2), [(0, 0), (1, 0), (1, 1), (0, 1)])


def test_missing_photos_still_import_and_are_reported(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle(write_photos=False)
    images_before = len(bpy.data.images)
    result = api.import_bundle(bundle, image_planes=True)
    assert len(result.cameras) == bundle.num_views
    assert all(not c.data.background_images and not c.children for c in result.cameras)
    assert len(bpy.data.images) == images_before
    missing = [line for line in result.report if line.startswith("photo not found")]
    assert len(missing) == bundle.num_views and bundle.photo_paths[0] in missing[0]
    assert set(missing) <= set(result.warnings)


def test_set_render_camera_sets_size_and_pixel_aspect(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle(photo_sizes=((90, 60), (50, 100)), fy_over_fx=(1.25, 0.8), write_photos=False)
    result = api.import_bundle(bundle, points=False, gaussians=False)
    scene = bpy.context.scene
    bpy.context.view_layer.objects.active = result.cameras[1]
    assert bpy.ops.mvdust3r_blender.set_render_camera() == {"FINISHED"}  # the active camera
    assert scene.camera == result.cameras[1]
    assert (scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage) == (50, 100, 100)
    assert np.isclose(scene.render.pixel_aspect_x / scene.render.pixel_aspect_y, 0.8)
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (90, 60)
    assert np.isclose(scene.render.pixel_aspect_x / scene.render.pixel_aspect_y, 1.25)
    # a camera that did not come from a reconstruction is refused with a message
    other = bpy.data.objects.new("Other", bpy.data.cameras.new("Other"))
    scene.collection.objects.link(other)
    with pytest.raises(RuntimeError, match="not a camera imported from a reconstruction"):
        bpy.ops.mvdust3r_blender.set_render_camera(camera="Other")
    assert scene.camera == result.cameras[0]


def test_image_plane_renders_as_the_photo(api: ModuleType, make_bundle: Callable[..., Any], tmp_path: Path) -> None:
    """Cycles through the camera: the plane fills the frame and shows the photo pixel for pixel."""
    from PIL import Image

    bundle = make_bundle(photo_sizes=((96, 64),), principal_offset=[(0.12, -0.1)], fy_over_fx=[1.1])
    yy, xx = np.mgrid[0:64, 0:96]
    photo = np.stack([xx / 95, yy / 63, 0.5 + 0.4 * np.sin(xx / 9) * np.cos(yy / 7)], -1)
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(bundle.photo_paths[0])
    result = api.import_bundle(bundle, points=False, gaussians=False, background_images=False, image_planes=True)
    plane = result.cameras[0].children[0]
    plane.hide_render = False
    scene = bpy.context.scene
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    image = render_rgba(scene, tmp_path / "plane.png", samples=16)
    assert image[..., 3].min() > 0.45  # covered up to the frame's edge (edge pixels: half by the filter)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(image[inner][..., :3] - photo[inner]).mean() < 0.004  # a 1 px shift gives 0.011-0.015
