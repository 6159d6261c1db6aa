"""A synthetic Gaussian scene for comparing Blender's splats with the reference rasteriser (no bpy):
a tilted, coloured plane and a sphere in front of it, seen by one camera (the bundle's view 0).

Half of the Gaussians lie flat on their surface (as trained 3DGS Gaussians do: two axes in the
tangent plane, the third 20× thinner), half are anisotropic with random rotations; scales are a
fraction of a pixel to a few pixels at their depth; opacities 0.1–0.95. The Gaussians fill a single
view's network grid, so the scene is an ordinary bundle the importer takes as is.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

FOCAL_RATIO = 0.9   # fx = fy = 0.9 × width


def _tangent_frames(normals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N,3,3] rotations whose third column is `normals` [N,3] and whose first is random in the plane."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(normals, t1)
    angle = rng.uniform(0, 2 * np.pi, (len(normals), 1))
    a = np.cos(angle) * t1 + np.sin(angle) * t2
    b = np.cross(normals, a)
    return np.stack([a, b, normals], axis=2)


def plane_and_sphere(bundle_cls: Any, quaternion_from_matrix: Callable[[np.ndarray], np.ndarray], count: int,
                     width: int = 320, height: int = 240, seed: int = 0) -> Any:
    """A `bundle_cls` (the installed extension's ``Bundle``; `quaternion_from_matrix` its ``rotations``'
    function) holding `count` Gaussians (rounded to the grid) seen by one width×height camera
    at the origin looking along +z (OpenCV). Sizes scale with the image, so the splats cover about
    the same pixels at any resolution for the same count per pixel."""
    rng = np.random.default_rng(seed)
    grid_w = int(round(np.sqrt(count * width / height)))
    grid_h = int(round(count / grid_w))
    n = grid_h * grid_w
    focal = FOCAL_RATIO * width
    n_sphere = n // 3
    n_plane = n - n_sphere
    # the plane: z = 4 + 0.35·x + 0.25·y, spanning a bit more than the view at that depth
    extent_x, extent_y = 4.0 * width / (2 * focal) * 1.1, 4.0 * height / (2 * focal) * 1.1
    xy = rng.uniform(-1, 1, (n_plane, 2)) * [extent_x, extent_y]
    plane = np.column_stack([xy, 4.0 + 0.35 * xy[:, 0] + 0.25 * xy[:, 1]])
    plane_normal = np.tile(np.array([-0.35, -0.25, 1.0]) / np.linalg.norm([-0.35, -0.25, 1.0]), (n_plane, 1))
    plane_rgb = np.column_stack([0.5 + 0.5 * np.sin(6 * xy[:, 0]), 0.5 + 0.5 * np.cos(5 * xy[:, 1]),
                                 np.full(n_plane, 0.3)])
    # the sphere: radius 0.6 around (0.25, 0.1, 3.0), its whole surface (the back shows through)
    normal = rng.normal(size=(n_sphere, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    sphere = np.array([0.25, 0.1, 3.0]) + 0.6 * normal
    sphere_rgb = 0.5 + 0.45 * normal[:, [1, 2, 0]]
    positions = np.concatenate([plane, sphere])
    normals = np.concatenate([plane_normal, normal])
    rgb = np.clip(np.concatenate([plane_rgb, sphere_rgb]), 0, 1)
    # one pixel at the Gaussian's depth, so that the count per pixel sets the splat size in pixels
    pixel = positions[:, 2] / focal * np.sqrt(width * height / (0.8 * n))
    flat = rng.random(n) < 0.5
    random_quat = rng.normal(size=(n, 4))
    random_quat /= np.linalg.norm(random_quat, axis=1, keepdims=True)
    quat = np.where(flat[:, None], quaternion_from_matrix(_tangent_frames(normals, rng)), random_quat)
    scale = pixel[:, None] * np.exp(rng.uniform(np.log(0.25), np.log(1.2), (n, 3)))
    scale[flat, 2] = 0.05 * scale[flat, :2].min(axis=1)
    order = rng.permutation(n)   # plane and sphere Gaussians interleaved in the grid
    opacity = rng.uniform(0.1, 0.95, n)[order]
    return one_view(bundle_cls, width, height, (grid_h, grid_w), positions[order], quat[order], scale[order], opacity,
                    rgb[order], {"model": "splat-scene", "seed": seed})


def dense_stack(bundle_cls: Any, count: int, width: int = 320, height: int = 240, layers: float = 100.0,
                opacity: tuple[float, float] = (0.05, 0.6), seed: int = 0) -> Any:
    """A `bundle_cls` holding `count` Gaussians of random anisotropy and rotation filling one
    width×height view at depths 3–5 (OpenCV, camera at the origin looking along +z), sized so that
    about `layers` Gaussians cover each pixel (each within its 2σ ellipse): the deep stacks a 12-view
    per-pixel reconstruction piles up. Opacities uniform in `opacity` (by default 0.05–0.6, so that
    dozens of layers show through)."""
    rng = np.random.default_rng(seed)
    grid_w = int(round(np.sqrt(count * width / height)))
    grid_h = int(round(count / grid_w))
    n = grid_h * grid_w
    focal = FOCAL_RATIO * width
    depth = rng.uniform(3.0, 5.0, n)
    u, v = rng.uniform(-0.05, 1.05, n) * width, rng.uniform(-0.05, 1.05, n) * height
    positions = np.column_stack([(u - width / 2) / focal * depth, (v - height / 2) / focal * depth, depth])
    # n · π (2σ)² ≈ layers · W · H with σ the geometric mean of the two larger axes, in pixels
    sigma_px = np.sqrt(layers * width * height / (n * 4 * np.pi))
    axes = np.exp(rng.uniform(np.log(0.35), np.log(1.6), (n, 3)))
    axes /= np.sqrt(np.sort(axes, axis=1)[:, 1:].prod(axis=1))[:, None]
    scale = sigma_px * depth[:, None] / focal * axes
    quat = rng.normal(size=(n, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    rgb = rng.uniform(0.05, 0.95, (n, 3))
    return one_view(bundle_cls, width, height, (grid_h, grid_w), positions, quat, scale, rng.uniform(*opacity, n), rgb,
                    {"model": "dense-stack", "seed": seed})


def one_view(bundle_cls: Any, width: int, height: int, grid: tuple[int, int], positions: np.ndarray,
             quat: np.ndarray, scale: np.ndarray, opacity: np.ndarray, rgb: np.ndarray, meta: dict[str, Any]) -> Any:
    """A `bundle_cls` of one width×height camera at the origin looking along +z (OpenCV) whose `grid`
    (rows, columns) holds the given Gaussians row by row, its pixels their colours, confidence 2
    everywhere; its photo is named after ``meta["model"]`` and does not exist."""
    focal = FOCAL_RATIO * width
    shape = (1, *grid)
    return bundle_cls(
        images=np.round(rgb * 255).astype(np.uint8).reshape(*shape, 3),
        pts3d=positions.astype(np.float32).reshape(*shape, 3),
        conf=np.full(shape, 2.0, np.float32),
        intrinsics=np.array([[[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]], np.float32),
        cam2world=np.eye(4, dtype=np.float32)[None],
        photo_size=np.array([[width, height]], np.int32),
        crop_box=np.array([[0, 0, width, height]], np.float32),
        photo_paths=[f"/nonexistent/{meta['model']}.png"],
        gaussian_rotation=quat.astype(np.float32).reshape(*shape, 4),
        gaussian_scale=scale.astype(np.float32).reshape(*shape, 3),
        gaussian_opacity=opacity.astype(np.float32).reshape(shape),
        gaussian_rgb=rgb.astype(np.float32).reshape(*shape, 3),
        meta=meta,
    )
