"""The bundle → Blender conventions (conventions.py), checked against Blender's own maths:
mathutils for rotations, bpy_extras.object_utils.world_to_camera_view for the camera model."""
from __future__ import annotations

import importlib
from types import ModuleType

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Quaternion, Vector


@pytest.fixture
def conv(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.core.conventions")


@pytest.fixture
def bundle_module(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.core.bundle")


@pytest.fixture
def cams(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.importers.cameras")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return np.array(Quaternion(q / np.linalg.norm(q)).to_matrix())


def photo_camera(conv: ModuleType, cams: ModuleType, scene: bpy.types.Scene, k: np.ndarray, width: int,
                 height: int) -> bpy.types.Object:
    """A camera object for intrinsics `k` of a `width`×`height` photo, made as the importer makes it
    (camera data and the scene's render settings), linked to `scene`."""
    params = conv.blender_camera(k, width, height)
    data = bpy.data.cameras.new("cam")
    cams.apply_camera(data, params)
    cams.apply_render_settings(scene, params)
    obj = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(obj)
    return obj


def test_z_up_takes_the_first_camera_to_an_upright_blender_view(conv: ModuleType) -> None:
    a = conv.world_axes("Z_UP")[:3, :3]
    assert np.allclose(a @ a.T, np.eye(3)) and np.isclose(np.linalg.det(a), 1.0)
    assert np.allclose(a @ [1, 0, 0], [1, 0, 0])    # OpenCV right   → Blender +X
    assert np.allclose(a @ [0, 0, 1], [0, 1, 0])    # OpenCV forward → Blender +Y
    assert np.allclose(a @ [0, 1, 0], [0, 0, -1])   # OpenCV down    → Blender −Z
    assert np.allclose(conv.world_axes("NETWORK"), np.eye(4))
    with pytest.raises(ValueError, match="unknown axes"):
        conv.world_axes("Y_UP")
    # The first camera (identity in OpenCV) becomes a Blender camera looking along +Y with +Z up.
    m = conv.camera_matrix_world(np.eye(4), "Z_UP")
    assert np.allclose(m[:3, :3] @ [0, 0, -1], [0, 1, 0]) and np.allclose(m[:3, :3] @ [0, 1, 0], [0, 0, 1])


@pytest.mark.parametrize("axes", ["Z_UP", "NETWORK"])
def test_rotations_follow_the_points(conv: ModuleType, axes: str) -> None:
    """q' = q(R_axes·R): rotating a local vector then changing axes = changing axes of the result."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q2 = conv.transform_rotations(q.astype(np.float32), axes)
    a = conv.world_axes(axes)[:3, :3]
    for before, after in zip(q, q2):
        expected = a @ np.array(Quaternion(before).to_matrix())
        assert np.allclose(np.array(Quaternion(after).to_matrix()), expected, atol=1e-5)


def test_quaternion_from_matrix_matches_mathutils_on_hard_cases(ext: ModuleType) -> None:
    rng = np.random.default_rng(2)
    cases = [random_rotation(rng) for _ in range(30)]
    cases += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3)]  # trace −1 and 3
    quats = importlib.import_module(f"{ext.__name__}.core.rotations").quaternion_from_matrix(np.array(cases))     # all at once (vectorised)
    for q, r in zip(quats, cases):
        assert q[0] >= 0 and np.allclose(np.array(Quaternion(q).to_matrix()), r, atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_blender_camera_reproduces_k_rt(conv: ModuleType, cams: ModuleType, seed: int) -> None:
    """Landscape, portrait, square; fy/fx ≠ 1; off-centre principal point: Blender's projection = K[R|t]."""
    rng = np.random.default_rng(seed)
    width, height = [(640, 480), (480, 640), (97, 213), (4000, 3000), (512, 512), (35, 20), (720, 1280), (300, 301)][seed]
    fx = rng.uniform(0.5, 2.0) * max(width, height)
    fy = fx * rng.uniform(0.7, 1.4)
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, :3] = random_rotation(rng)
    c2w[:3, 3] = rng.normal(size=3)
    axes = "Z_UP" if seed % 2 else "NETWORK"
    scene = bpy.context.scene
    obj = photo_camera(conv, cams, scene, k, width, height)
    obj.matrix_world = Matrix(conv.camera_matrix_world(c2w, axes).tolist())
    bpy.context.view_layer.update()
    # points in front of the camera, across (and beyond) the photo
    u, v = rng.uniform(-0.2, 1.2, 100) * width, rng.uniform(-0.2, 1.2, 100) * height
    depth = rng.uniform(0.5, 20, 100)
    cam_pts = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], 1)
    world = conv.transform_points(cam_pts @ c2w[:3, :3].T + c2w[:3, 3], axes)
    for p, u0, v0, d0 in zip(world, u, v, depth):
        ndc = world_to_camera_view(scene, obj, Vector(p.tolist()))
        assert abs(ndc.x * width - u0) < 1e-2 and abs((1 - ndc.y) * height - v0) < 1e-2
        assert abs(ndc.z - d0) < 1e-3 * d0


def test_image_plane_corners_project_onto_photo_corners(conv: ModuleType, cams: ModuleType) -> None:
    width, height = 300, 200
    k = np.array([[280.0, 0, 170], [0, 250, 90], [0, 0, 1]])
    scene = bpy.context.scene
    obj = photo_camera(conv, cams, scene, k, width, height)
    bpy.context.view_layer.update()
    corners = conv.image_plane_corners(k, width, height, 2.5)
    expected = [(0, height), (width, height), (width, 0), (0, 0)]  # BL, BR, TR, TL in photo pixels
    for corner, (u0, v0) in zip(corners, expected):
        ndc = world_to_camera_view(scene, obj, Vector(corner.tolist()))
        assert abs(ndc.x * width - u0) < 1e-3 and abs((1 - ndc.y) * height - v0) < 1e-3
        assert abs(ndc.z - 2.5) < 1e-5


def test_invalid_intrinsics_are_rejected(conv: ModuleType) -> None:
    with pytest.raises(ValueError, match="fx=0"):
        conv.blender_camera(np.array([[0.0, 0, 1], [0, 1, 1], [0, 0, 1]]), 10, 10)


def test_srgb_to_linear_matches_blender(bundle_module: ModuleType) -> None:
    """The bundle's colours are sRGB bytes; Blender's colour attributes are linear."""
    from mathutils import Color

    values = np.linspace(0, 1, 11, dtype=np.float32)
    linear = bundle_module.srgb_to_linear(values)
    for s, lin in zip(values, linear):
        c = Color((float(s), float(s), float(s)))
        if hasattr(c, "from_srgb_to_scene_linear"):
            assert abs(c.from_srgb_to_scene_linear().r - lin) < 1e-3
    assert abs(float(bundle_module.srgb_to_linear(np.float32(0.5))) - 0.21404) < 1e-4
    bytes_ = np.arange(256, dtype=np.uint8)
    assert np.array_equal(bundle_module.srgb8_to_linear(bytes_), bundle_module.srgb_to_linear(bytes_.astype(np.float32) / 255))


def test_confidence_threshold_is_the_official_sorted_index(ext: ModuleType) -> None:
    confidence = importlib.import_module(f"{ext.__name__}.core.confidence")
    rng = np.random.default_rng(3)
    conf = 1 + rng.exponential(3, size=(4, 30, 40)).astype(np.float32)
    thr = confidence.drop_threshold(conf, 3.0)
    assert thr == np.sort(conf.ravel())[int(conf.size * 0.03)]
    dropped = (conf < thr).sum() / conf.size
    assert 0.025 < dropped <= 0.03
    assert confidence.drop_threshold(conf, 0.0) == conf.min()
    assert confidence.ConfidenceCut().threshold(conf) == thr  # the default cut is the demo's 3 %
    assert confidence.ConfidenceCut(min_confidence=2.0).threshold(conf) == 2.0


def test_grid_point_spacing_is_the_neighbour_distance_on_a_plane(conv: ModuleType) -> None:
    """A fronto-parallel plane at depth 4 seen by a 20×30 grid: neighbours are z·pixel/fx apart."""
    h, w, fx, depth = 20, 30, 100.0, 4.0
    crop = np.array([[10.0, 5.0, 130.0, 85.0]])  # 4 photo pixels per grid pixel
    k = np.array([[[fx, 0, 70], [0, fx, 45], [0, 0, 1]]])
    c2w = np.eye(4)[None]
    u = crop[0, 0] + (np.arange(w) + 0.5) * 4
    v = crop[0, 1] + (np.arange(h) + 0.5) * 4
    uu, vv = np.meshgrid(u, v)
    pts = np.stack([(uu - 70) / fx * depth, (vv - 45) / fx * depth, np.full_like(uu, depth)], -1)[None]
    spacing = conv.grid_point_spacing(pts, k, c2w, crop)
    assert np.isclose(spacing, np.linalg.norm(pts[0, 0, 1] - pts[0, 0, 0]))
    assert np.isclose(spacing, depth * 4 / fx)
