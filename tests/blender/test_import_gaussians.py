"""Gaussian import: the attributes, instanced splats whose depsgraph transforms equal the bundle's
Gaussians after the axis change, a live opacity threshold, and a Cycles render that puts them where
they belong."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import bpy
import numpy as np
import pytest
from mathutils import Quaternion

from tests.helpers.blender_queries import instance_matrices, project, render_rgba


@pytest.fixture
def mods(ext: ModuleType) -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{ext.__name__}.{name}")
            for name in ("api", "core.conventions", "importers.gaussians", "importers.nodes")}


def read(mesh: bpy.types.Mesh, name: str, field: str, width: int) -> np.ndarray:
    attribute = mesh.attributes[name]
    values = np.zeros(len(attribute.data) * width, dtype=np.float32)
    attribute.data.foreach_get(field, values)
    return values.reshape(-1, width) if width > 1 else values


def covariances(wxyz: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[M,3,3] R·diag(σ²)·Rᵀ (mathutils' own quaternion → matrix, one at a time: a test, not a hot path)."""
    rot = np.array([np.array(Quaternion(q.tolist()).to_matrix()) for q in wxyz])
    return rot @ (np.asarray(scales, dtype=np.float64)[:, :, None] ** 2 * rot.transpose(0, 2, 1))


def low_pass_variance(obj: bpy.types.Object) -> np.ndarray:
    """[M] the variance (world units²) the low-pass adds to each Gaussian without a scene camera: 0.3·pixel_size²."""
    return 0.3 * read(obj.data, "pixel_size", "value", 1).astype(np.float64) ** 2


# Variance of a 2D Gaussian cut off at Mahalanobis radius 3 (the splat's extent), relative to the full one.
TRUNCATED_3SIGMA_VARIANCE = 1 - 4.5 * np.exp(-4.5) / (1 - np.exp(-4.5))


def projected_covariance(bundle: Any, view: int, index: int) -> np.ndarray:
    """[2,2] pixel covariance of Gaussian `index` (flat) seen by `view`: J·R·Σ·Rᵀ·Jᵀ as in 3DGS."""
    q = bundle.gaussian_rotation.reshape(-1, 4)[index]
    s = bundle.gaussian_scale.reshape(-1, 3)[index].astype(np.float64)
    rot = np.array(Quaternion(q.tolist()).to_matrix())
    sigma_world = rot @ np.diag(s ** 2) @ rot.T
    w2c = np.linalg.inv(bundle.cam2world[view].astype(np.float64))
    x, y, z = w2c[:3, :3] @ bundle.pts3d.reshape(-1, 3)[index] + w2c[:3, 3]
    fx, fy = float(bundle.intrinsics[view, 0, 0]), float(bundle.intrinsics[view, 1, 1])
    jac = np.array([[fx / z, 0, -fx * x / z ** 2], [0, fy / z, -fy * y / z ** 2]])
    return jac @ w2c[:3, :3] @ sigma_world @ w2c[:3, :3].T @ jac.T


@pytest.mark.parametrize("axes", ["Z_UP", "NETWORK", "level"])
def test_gaussian_attributes(mods: dict[str, ModuleType], make_bundle: Callable[..., Any], axes: Any) -> None:
    bundle = make_bundle()
    obj = mods["api"].import_bundle(bundle, align={"Z_UP": "first_camera", "NETWORK": "none", "level": "level"}[axes],
                                    points=False, cameras=False).gaussians
    mesh = obj.data
    conv = mods["core.conventions"]
    if axes == "level":   # the level frame: the bundle's own estimate (a rigid transform)
        axes = importlib.import_module(conv.__name__.rsplit(".", 1)[0] + ".alignment").alignment_of(bundle, "level").matrix
    types = {a.name: a.data_type for a in mesh.attributes}
    assert types["rot"] == "QUATERNION" and types["scale"] == "FLOAT_VECTOR"
    assert types["opacity"] == "FLOAT" and types["Col"] == "FLOAT_COLOR"
    # the same Gaussians (covariances), their axes ordered by decreasing σ (the major plane is local xy)
    scales = read(mesh, "scale", "vector", 3)
    assert np.all(np.diff(scales, axis=1) <= 0)
    assert np.allclose(covariances(read(mesh, "rot", "value", 4), scales),
                       covariances(conv.transform_rotations(bundle.gaussian_rotation.reshape(-1, 4), axes),
                                   bundle.gaussian_scale.reshape(-1, 3)), atol=1e-6 * float(scales.max()) ** 2 * 10)
    assert np.allclose(np.sort(scales, axis=1), np.sort(bundle.gaussian_scale.reshape(-1, 3), axis=1))
    assert np.allclose(read(mesh, "opacity", "value", 1), bundle.gaussian_opacity.ravel())
    co = np.zeros(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    assert np.allclose(co.reshape(-1, 3), conv.transform_points(bundle.pts3d.reshape(-1, 3), axes), atol=1e-5)


@pytest.mark.parametrize("axes", ["Z_UP", "NETWORK"])
def test_instances_are_the_bundles_gaussians(mods: dict[str, ModuleType], make_bundle: Callable[..., Any],
                                             axes: str) -> None:
    """Each splat instance sits on its Gaussian and has its covariance (× multiplier²) in Blender world,
    plus the 3DGS low-pass (0.3 px² of the photo's pixel at the Gaussian: there is no scene camera)."""
    bundle = make_bundle(grid=(5, 7))
    obj = mods["api"].import_bundle(bundle, align={"Z_UP": "first_camera", "NETWORK": "none"}[axes], points=False, cameras=False,
                                    opacity_threshold=0.0, scale_multiplier=2.5).gaussians
    conv = mods["core.conventions"]
    # the expected world covariance of every Gaussian (plus the low-pass), built from the OpenCV-frame bundle
    a = conv.world_axes(axes)[:3, :3]
    sigma = covariances(bundle.gaussian_rotation.reshape(-1, 4), bundle.gaussian_scale.reshape(-1, 3))
    expected = a @ sigma @ a.T + low_pass_variance(obj)[:, None, None] * np.eye(3)
    got = instance_matrices(obj)
    assert got.shape == (bundle.conf.size, 4, 4)
    # instances come as discs, then shells: match them to the Gaussians by position
    world = conv.transform_points(bundle.pts3d.reshape(-1, 3), axes)
    index = np.array([int(np.argmin(np.linalg.norm(world - p, axis=1))) for p in got[:, :3, 3]])
    assert len(set(index.tolist())) == bundle.conf.size
    assert np.allclose(got[:, :3, 3], world[index], atol=1e-5)
    cov = got[:, :3, :3] @ got[:, :3, :3].transpose(0, 2, 1) / 2.5 ** 2
    assert np.allclose(cov, expected[index], rtol=1e-4, atol=1e-6 * float(np.abs(expected).max()))


def test_opacity_threshold_and_multiplier_are_live(mods: dict[str, ModuleType], make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle()
    obj = mods["api"].import_bundle(bundle, points=False, cameras=False).gaussians
    nodes, gaussians = mods["importers.nodes"], mods["importers.gaussians"]
    modifier = obj.modifiers[gaussians.MODIFIER]
    opacity = bundle.gaussian_opacity.ravel()
    assert len(instance_matrices(obj)) == int((opacity >= np.float32(0.05)).sum())
    for threshold in (0.0, 0.3, 0.9, 1.0):
        nodes.set_modifier_input(obj, modifier, gaussians.OPACITY_THRESHOLD, threshold)
        assert len(instance_matrices(obj)) == int((opacity >= np.float32(threshold)).sum())
    nodes.set_modifier_input(obj, modifier, gaussians.OPACITY_THRESHOLD, 0.0)
    nodes.set_modifier_input(obj, modifier, gaussians.LOW_PASS_INPUT, 0.0)
    nodes.set_modifier_input(obj, modifier, gaussians.SCALE_MULTIPLIER, 1.0)
    scales = np.linalg.norm(instance_matrices(obj)[:, :3, :3], axis=1)  # column norms = the scale vector

    def rows(values: np.ndarray) -> np.ndarray:  # each Gaussian's σ sorted, the Gaussians sorted (discs come first)
        values = np.sort(values, axis=1)
        return values[np.lexsort(values.T[::-1])]

    assert np.allclose(rows(scales), rows(bundle.gaussian_scale.reshape(-1, 3)), rtol=1e-4)


def test_bundle_without_gaussians_is_reported(mods: dict[str, ModuleType], make_bundle: Callable[..., Any]) -> None:
    result = mods["api"].import_bundle(make_bundle(gaussians=False), cameras=False)
    assert result.gaussians is None and result.points is not None
    assert any("no Gaussians" in line for line in result.warnings)


def test_render_shows_splats_where_they_belong(mods: dict[str, ModuleType], make_bundle: Callable[..., Any],
                                               tmp_path: Path) -> None:
    """Cycles, 96×64, 16 spp, from the first photo's camera: each colour's centroid sits on its splat's
    centre, and its spread is the splat's projected 2D covariance (the 3DGS footprint J·Σ·Jᵀ)."""
    bundle = make_bundle(photo_sizes=((96, 64),), grid=(1, 3), write_photos=False)
    bundle.images[0, 0] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    bundle.gaussian_opacity[:] = 1.0
    depth = 3.0
    fx = float(bundle.intrinsics[0, 0, 0])
    bundle.gaussian_scale[0, 0] = [[3.0, 1.5, 2.5], [2.0, 2.0, 2.0], [1.2, 3.0, 2.0]]  # σ in pixels (3σ < half the spacing) ...
    bundle.gaussian_scale *= depth / fx  # ... at the depth of the points, in world units
    result = mods["api"].import_bundle(bundle, background_images=False, points=False)
    scene = bpy.context.scene
    bpy.ops.mvdust3r_blender.set_render_camera(camera=result.cameras[0].name)
    image = render_rgba(scene, tmp_path / "splats.png", samples=16)
    centres = project(scene, result.cameras[0], np.array([tuple(v.co) for v in result.gaussians.data.vertices]))
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]] + 0.5
    for channel, (u, v, _) in enumerate(centres):
        others = [c for c in range(3) if c != channel]
        weight = np.clip(image[..., channel] - image[..., others].max(axis=-1), 0, None) * image[..., 3]
        assert weight.sum() > 5.0, f"colour {channel} barely visible"
        cu, cv = (weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()
        assert np.hypot(cu - u, cv - v) < 0.5, (channel, (cu, cv), (u, v))
        # the footprint: alpha-weighted second moments vs the projected covariance
        alpha = image[..., 3] * (weight > 0)
        du, dv = xx - cu, yy - cv
        moments = np.array([[(alpha * du * du).sum(), (alpha * du * dv).sum()],
                            [(alpha * du * dv).sum(), (alpha * dv * dv).sum()]]) / alpha.sum()
        expected = projected_covariance(bundle, 0, channel) * TRUNCATED_3SIGMA_VARIANCE + np.eye(2) / 12
        assert np.linalg.norm(moments - expected) < 0.1 * np.linalg.norm(expected), (channel, moments, expected)
