"""Imported Gaussians rendered like 3D Gaussian splatting: a Cycles render (CPU) of the
plane-and-sphere scene, imported with the add-on's defaults, against the reference rasteriser
(``splat_reference.py``); the render settings the import raises and reports; the low-pass following
the scene camera."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from tests.helpers.blender_queries import instance_matrices, render_linear
from tests.helpers.splat_reference import SplatImage, alpha_iou, psnr, quaternion_matrices, rasterize
from tests.helpers.splat_scenes import dense_stack, plane_and_sphere


@pytest.fixture
def mods(ext: ModuleType) -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{ext.__name__}.{name}")
            for name in ("api", "core.bundle", "core.rotations", "importers.cameras", "importers.gaussians", "importers.nodes",
                         "importers.render")}


def scene_bundle(mods: dict[str, ModuleType], count: int, width: int, height: int) -> object:
    return plane_and_sphere(mods["core.bundle"].Bundle, mods["core.rotations"].quaternion_from_matrix, count, width, height)


def test_cycles_render_matches_the_reference_rasterizer(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    """4 k Gaussians at 96×72 (about the Gaussians per pixel of 100 k at 320×240), Cycles 8 samples:
    PSNR ≥ 32 dB and alpha IoU ≥ 0.95 against the reference, with the add-on's defaults."""
    bundle = scene_bundle(mods, 4000, 96, 72)
    b = bundle
    reference = rasterize(b.pts3d.reshape(-1, 3), b.gaussian_rotation.reshape(-1, 4), b.gaussian_scale.reshape(-1, 3),
                          b.gaussian_opacity.reshape(-1), mods["core.bundle"].srgb8_to_linear(b.images.reshape(-1, 3)),
                          np.linalg.inv(b.cam2world[0].astype(np.float64)), b.intrinsics[0], 96, 72)
    result = mods["api"].import_bundle(bundle, points=False, background_images=False)
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    colour, alpha = render_linear(bpy.context.scene, tmp_path / "splats.exr", samples=8)
    image = SplatImage(colour=colour, alpha=alpha)
    assert reference.alpha.mean() > 0.5, "the scene should fill most of the view"
    assert psnr(image, reference) >= 32.0
    assert alpha_iou(image, reference) >= 0.95


def test_deep_stacks_composite_in_3dgs_order(mods: dict[str, ModuleType], tmp_path: Path) -> None:
    """Random anisotropic Gaussians about 100 deep on every pixel, opacities 0.1–0.95 (6 k at 80×60:
    the layers a pixel of 100 k at 320×240): where the order of overlapping splats decides the
    colour, Cycles at 8 samples stays within the splat bar of the reference, because each ray meets a
    round Gaussian's splat at the centre's depth, the order 3DGS composites in."""
    bundle = dense_stack(mods["core.bundle"].Bundle, 6000, 80, 60, layers=100.0, opacity=(0.1, 0.95))
    b = bundle
    reference = rasterize(b.pts3d.reshape(-1, 3), b.gaussian_rotation.reshape(-1, 4), b.gaussian_scale.reshape(-1, 3),
                          b.gaussian_opacity.reshape(-1), mods["core.bundle"].srgb8_to_linear(b.images.reshape(-1, 3)),
                          np.eye(4), b.intrinsics[0], 80, 60)
    result = mods["api"].import_bundle(bundle, points=False, background_images=False)
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    colour, alpha = render_linear(bpy.context.scene, tmp_path / "dense.exr", samples=8)
    image = SplatImage(colour=colour, alpha=alpha)
    assert psnr(image, reference) >= 32.0
    assert alpha_iou(image, reference) >= 0.95


def test_import_raises_cycles_limits_says_so_and_never_lowers(mods: dict[str, ModuleType]) -> None:
    render = mods["importers.render"]
    scene = bpy.context.scene
    user = bpy.data.objects.new("User Empty", None)
    scene.collection.objects.link(user)
    user.location = (1.0, 2.0, 3.0)
    assert scene.cycles.transparent_max_bounces < render.TRANSPARENT_BOUNCES
    result = mods["api"].import_bundle(scene_bundle(mods, 200, 32, 24), points=False, cameras=False)
    assert scene.cycles.transparent_max_bounces == render.TRANSPARENT_BOUNCES
    assert scene.cycles.min_transparent_bounces == render.MIN_TRANSPARENT_BOUNCES
    changed = [line for line in result.report if line.startswith("Cycles")]
    assert len(changed) == 2 and all("Undo" in line for line in changed)
    assert tuple(user.location) == (1.0, 2.0, 3.0) and user.users_collection[0] == scene.collection
    # a scene that already allows more keeps its own settings, and the report says nothing
    scene.cycles.transparent_max_bounces = 500
    scene.cycles.min_transparent_bounces = 64
    result = mods["api"].import_bundle(scene_bundle(mods, 200, 32, 24), points=False, cameras=False)
    assert (scene.cycles.transparent_max_bounces, scene.cycles.min_transparent_bounces) == (500, 64)
    assert not [line for line in result.report if line.startswith("Cycles")]


def test_a_failed_import_leaves_the_render_settings(mods: dict[str, ModuleType]) -> None:
    scene = bpy.context.scene
    before = scene.cycles.transparent_max_bounces
    with pytest.raises(ValueError):
        mods["api"].import_bundle(scene_bundle(mods, 200, 32, 24), points=False, scale_multiplier=-1.0)
    assert scene.cycles.transparent_max_bounces == before


def test_low_pass_follows_the_scene_camera(mods: dict[str, ModuleType]) -> None:
    """Focal Length (px) tracks the scene camera (lens, resolution); each splat's σ is √(σ² + 0.3·p²)
    with p = depth / focal, and a flat Gaussian keeps its thin axis thin enough to stay a disc."""
    gaussians, nodes = mods["importers.gaussians"], mods["importers.nodes"]
    bundle = scene_bundle(mods, 300, 64, 48)
    result = mods["api"].import_bundle(bundle, points=False, background_images=False, opacity_threshold=0.0,
                                       align="first_camera")
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    obj = result.gaussians
    modifier = obj.modifiers[gaussians.MODIFIER]
    fx = float(bundle.intrinsics[0, 0, 0])
    bpy.context.view_layer.update()
    assert np.isclose(nodes.get_modifier_input(modifier, gaussians.FOCAL_LENGTH), fx, rtol=1e-5)
    scene = bpy.context.scene
    scene.camera.data.lens *= 2
    scene.render.resolution_percentage = 50
    bpy.context.view_layer.update()
    assert np.isclose(nodes.get_modifier_input(modifier, gaussians.FOCAL_LENGTH), fx, rtol=1e-5)  # 2 × lens at ½ size
    scene.render.resolution_percentage = 100
    bpy.context.view_layer.update()
    focal = nodes.get_modifier_input(modifier, gaussians.FOCAL_LENGTH)
    assert np.isclose(focal, 2 * fx, rtol=1e-5)
    # the instances' covariances, against the bundle's Gaussians plus the low-pass for that camera
    mats = instance_matrices(obj)
    m = nodes.get_modifier_input(modifier, gaussians.SCALE_MULTIPLIER)
    positions = np.array([np.array(mats[k, :3, 3]) for k in range(len(mats))])
    camera = np.array(scene.camera.matrix_world)
    offset = positions - camera[:3, 3]
    depth = np.abs(offset @ -camera[:3, 2])
    pixel2 = (depth / focal) ** 2 * depth / np.linalg.norm(offset, axis=1)
    conv = importlib.import_module(f"{mods['api'].__package__}.core.conventions")
    rot = quaternion_matrices(conv.transform_rotations(bundle.gaussian_rotation.reshape(-1, 4), "Z_UP"))
    s2 = bundle.gaussian_scale.reshape(-1, 3).astype(np.float64) ** 2
    # instances come in two groups (discs, then shells): match them to Gaussians by position
    world = conv.transform_points(bundle.pts3d.reshape(-1, 3), "Z_UP")
    index = np.array([int(np.argmin(np.linalg.norm(world - p, axis=1))) for p in positions])
    expected = rot[index] @ (s2[index, :, None] * rot[index].transpose(0, 2, 1)) \
        + 0.3 * pixel2[:, None, None] * np.eye(3)
    # M = L·Q·diag(k·m, m, m) with L·Lᵀ the expected covariance, Q a rotation and k ≥ 1 the stretch of a
    # camera-parallel disc (1 for the others), so Mᵀ·Σ⁻¹·M / m² = diag(k², 1, 1)
    frame = mats[:, :3, :3]
    gram = frame.transpose(0, 2, 1) @ np.linalg.inv(expected) @ frame / m ** 2
    stretch2 = gram[:, 0, 0].copy()
    gram[:, 0, 0] = 1.0
    assert np.allclose(gram, np.eye(3), atol=2e-3)
    assert stretch2.min() > 1 - 2e-3 and stretch2.max() <= gaussians.MAX_STRETCH ** 2 * (1 + 2e-3)
    # the stretched ones (round Gaussians) lie in the plane parallel to the image: each ray meets them
    # at the centre's depth, the order 3DGS composites in
    stretched = stretch2 > 1 + 1e-2
    assert stretched.sum() > len(mats) // 5
    forward = -camera[:3, 2]
    across = frame[stretched][:, :, :2] / np.linalg.norm(frame[stretched][:, :, :2], axis=1, keepdims=True)
    assert np.abs(np.einsum("nik,i->nk", across, forward)).max() < 1e-3


@pytest.mark.parametrize("fit, size, aspect", [("HORIZONTAL", (64, 48), (1.0, 1.0)), ("VERTICAL", (64, 48), (1.0, 1.0)),
                                               ("AUTO", (48, 64), (1.0, 1.0)), ("AUTO", (64, 48), (1.0, 1.3)),
                                               ("VERTICAL", (50, 70), (1.2, 1.0))])
def test_camera_focal_px_is_blenders_own_projection(mods: dict[str, ModuleType], fit: str, size: tuple[int, int],
                                                    aspect: tuple[float, float]) -> None:
    """The focal length the low-pass uses equals the pixel shift Blender's camera model gives a point
    moved sideways (world_to_camera_view), for every sensor fit, portrait sizes and pixel aspects."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    scene = bpy.context.scene
    data = bpy.data.cameras.new("Probe")
    data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = 35.0, 36.0, 20.0, fit
    camera = bpy.data.objects.new("Probe", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = aspect
    scene.render.resolution_percentage = 50
    bpy.context.view_layer.update()
    depth, step = 5.0, 0.01
    u0 = world_to_camera_view(scene, camera, Vector((0.0, 0.0, -depth))).x
    u1 = world_to_camera_view(scene, camera, Vector((step, 0.0, -depth))).x
    expected = (u1 - u0) * size[0] * 0.5 * depth / step
    assert np.isclose(mods["importers.cameras"].camera_focal_px(scene), expected, rtol=1e-4)
