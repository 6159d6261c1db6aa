"""Render validation scenes with Blender's Cycles (the ``bpy`` wheel), unlike anything the training generator makes.

    .venv-blender-5.0/bin/python training/validation_scenes.py --out runs/validation [--size 64] [--samples 32]

Two scenes of 8 views each, with exact truth, in the folder format :mod:`training.validation` reads:

- ``room``: a furnished room seen from inside by a 200° pan from one spot (a table, a monkey head,
  a cone, a torus, an icosphere; brick, wave, noise and voronoi shader textures; a ceiling lamp and
  a window's area light; field of view 49°);
- ``prop``: a monkey head on a plinth with a torus and a cone beside it on open ground, seen by a
  full 360° ring of cameras (sun and sky light; field of view 49°).

Meshes, shader-node materials and lights are Blender's own, rendered by Cycles with path tracing
(soft shadows, inter-reflections): other shapes, materials and lighting than the ray caster of
:mod:`training.render`. The truth is Blender's own: for every pixel the ray through its centre is
cast into the evaluated scene (``Scene.ray_cast``), so ``pts3d`` is exactly the surface the pixel's
centre sees (rays that leave the scene are invalid). Photos are rendered at the network's input size.
Besides the arrays of :mod:`training.validation`, ``truth.npz`` keeps ``world_points`` and
``world_cam2world`` in Blender's world frame (Z up, metres) for checks against the scene itself.

This file imports bpy and numpy only (it runs with a Blender Python, not the worker's).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import bpy
import bmesh
import numpy as np
from mathutils import Matrix, Vector

FOV_DEG = 49.0
VIEWS = 8
OPENCV_TO_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])   # camera-local axes: OpenCV (y down, z forward) → Blender


def _material(name: str, texture: str, colour_a: tuple[float, float, float], colour_b: tuple[float, float, float],
              scale: float = 5.0, roughness: float = 0.6) -> Any:
    """A Principled BSDF whose base colour mixes two colours by a procedural texture node."""
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    tree: Any = mat.node_tree                    # node trees and their nodes: bpy's dynamic types
    nodes, links = tree.nodes, tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = roughness
    tex = nodes.new({"brick": "ShaderNodeTexBrick", "wave": "ShaderNodeTexWave", "noise": "ShaderNodeTexNoise",
                     "voronoi": "ShaderNodeTexVoronoi", "checker": "ShaderNodeTexChecker"}[texture])
    tex.inputs["Scale"].default_value = scale
    coords = nodes.new("ShaderNodeTexCoord")
    links.new(coords.outputs["Object"], tex.inputs["Vector"])
    ramp = nodes.new("ShaderNodeMix")
    ramp.data_type = "RGBA"
    ramp.inputs["A"].default_value = (*colour_a, 1.0)
    ramp.inputs["B"].default_value = (*colour_b, 1.0)
    factor = tex.outputs["Fac"] if "Fac" in tex.outputs else tex.outputs["Distance"]
    links.new(factor, ramp.inputs["Factor"])
    links.new(ramp.outputs["Result"], bsdf.inputs["Base Color"])
    return mat


def _object(name: str, build: Any, material: Any, location: tuple[float, float, float],
            rotation: tuple[float, float, float] = (0, 0, 0), scale: tuple[float, float, float] = (1, 1, 1)) -> Any:
    """A mesh object made by ``build(bm)`` (bmesh operators), placed and given ``material``."""
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    build(bm)
    bm.to_mesh(mesh)
    bm.free()
    for poly in mesh.polygons:
        poly.use_smooth = True
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    obj.location, obj.rotation_euler, obj.scale = location, rotation, scale
    _scene().collection.objects.link(obj)
    return obj


def _cube(bm: Any) -> None:
    bmesh.ops.create_cube(bm, size=1.0)


def _ico(bm: Any) -> None:
    bmesh.ops.create_icosphere(bm, subdivisions=3, radius=0.5)


def _cone(bm: Any) -> None:
    bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.0, depth=1.0)


def _cylinder(bm: Any) -> None:
    bmesh.ops.create_cone(bm, cap_ends=True, segments=32, radius1=0.5, radius2=0.5, depth=1.0)


def _monkey(bm: Any) -> None:
    bmesh.ops.create_monkey(bm)
    bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=1, use_grid_fill=True)


def _torus(bm: Any, major: float = 0.5, minor: float = 0.15, segments: int = 48, rings: int = 16) -> None:
    verts = []
    for i in range(segments):
        u = 2 * math.pi * i / segments
        for j in range(rings):
            v = 2 * math.pi * j / rings
            r = major + minor * math.cos(v)
            verts.append(bm.verts.new((r * math.cos(u), r * math.sin(u), minor * math.sin(v))))
    for i in range(segments):
        for j in range(rings):
            a, b = i * rings + j, ((i + 1) % segments) * rings + j
            c, d = ((i + 1) % segments) * rings + (j + 1) % rings, i * rings + (j + 1) % rings
            bm.faces.new((verts[a], verts[b], verts[c], verts[d]))


def _plane(bm: Any) -> None:
    bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=0.5)


def _scene() -> Any:
    """The current scene (typed loosely: its Cycles settings are an add-on's dynamic properties)."""
    return bpy.context.scene


def _fresh_scene(size: int, samples: int) -> Any:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = _scene()
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    world = bpy.data.worlds.new("World")
    scene.world = world
    return scene


def _world_colour(scene: Any, colour: tuple[float, float, float], strength: float) -> None:
    if bpy.app.version < (5, 0, 0):
        scene.world.use_nodes = True
    background = scene.world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (*colour, 1.0)
    background.inputs["Strength"].default_value = strength


def _light(kind: str, energy: float, location: tuple[float, float, float],
           rotation: tuple[float, float, float] = (0, 0, 0), size: float = 1.0) -> None:
    lights: Any = bpy.data.lights
    data = lights.new(kind, kind)
    data.energy = energy
    if kind == "AREA":
        data.size = size
    obj = bpy.data.objects.new(kind, data)
    obj.location, obj.rotation_euler = location, rotation
    _scene().collection.objects.link(obj)


def build_room() -> np.ndarray:
    """The furnished room; returns the cameras (OpenCV cam2world [8,4,4]) of a 200° pan."""
    walls = _material("walls", "brick", (0.75, 0.62, 0.5), (0.45, 0.2, 0.15), scale=3.0)
    floor = _material("floor", "wave", (0.55, 0.35, 0.2), (0.3, 0.18, 0.1), scale=2.0)
    ceiling = _material("ceiling", "noise", (0.9, 0.9, 0.85), (0.7, 0.7, 0.75), scale=4.0)
    wood = _material("wood", "wave", (0.6, 0.45, 0.25), (0.35, 0.22, 0.1), scale=6.0)
    blue = _material("blue", "voronoi", (0.1, 0.25, 0.7), (0.6, 0.75, 0.95), scale=8.0, roughness=0.3)
    green = _material("green", "checker", (0.15, 0.5, 0.2), (0.8, 0.85, 0.3), scale=6.0)
    red = _material("red", "noise", (0.8, 0.15, 0.1), (0.95, 0.6, 0.2), scale=10.0, roughness=0.4)
    w, d, h = 6.0, 5.0, 2.7
    _object("floor", _plane, floor, (0, 0, 0), scale=(w, d, 1))
    _object("ceiling", _plane, ceiling, (0, 0, h), rotation=(math.pi, 0, 0), scale=(w, d, 1))
    _object("wall_n", _plane, walls, (0, d / 2, h / 2), rotation=(math.pi / 2, 0, 0), scale=(w, h, 1))
    _object("wall_s", _plane, walls, (0, -d / 2, h / 2), rotation=(-math.pi / 2, 0, 0), scale=(w, h, 1))
    _object("wall_e", _plane, walls, (w / 2, 0, h / 2), rotation=(0, -math.pi / 2, 0), scale=(h, d, 1))
    _object("wall_w", _plane, walls, (-w / 2, 0, h / 2), rotation=(0, math.pi / 2, 0), scale=(h, d, 1))
    _object("table_top", _cube, wood, (1.2, 1.0, 0.75), scale=(1.4, 0.8, 0.06))
    for dx in (-0.6, 0.6):
        for dy in (-0.32, 0.32):
            _object("table_leg", _cube, wood, (1.2 + dx, 1.0 + dy, 0.36), scale=(0.06, 0.06, 0.72))
    _object("monkey", _monkey, red, (1.2, 1.0, 1.05), rotation=(0, 0, math.radians(200)), scale=(0.3, 0.3, 0.3))
    _object("cone", _cone, green, (-1.8, 1.4, 0.5), scale=(0.7, 0.7, 1.0))
    _object("torus", _torus, blue, (-1.5, -1.3, 0.3), rotation=(math.radians(60), 0, 0.4), scale=(0.9, 0.9, 0.9))
    _object("ball", _ico, blue, (2.0, -1.5, 0.4), scale=(0.8, 0.8, 0.8))
    _object("cabinet", _cube, wood, (-2.6, 0.0, 0.6), scale=(0.6, 1.2, 1.2))
    _light("POINT", 40.0, (0.0, 0.0, 2.4))
    _light("AREA", 40.0, (2.9, -0.5, 1.6), rotation=(0, math.radians(-90), 0), size=1.2)
    _world_colour(_scene(), (0.05, 0.05, 0.05), 1.0)
    spot = np.array([0.3, -0.6, 1.5])
    yaw = np.radians(10 + 200 * np.arange(VIEWS) / (VIEWS - 1))
    pitch = np.radians(-12)
    forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.full(VIEWS, np.sin(pitch))], -1)
    return _look_at(np.repeat(spot[None], VIEWS, 0), forward)


def build_prop() -> np.ndarray:
    """The monkey on a plinth on open ground; returns the cameras (OpenCV cam2world [8,4,4]) of a 360° ring."""
    ground = _material("ground", "checker", (0.3, 0.3, 0.32), (0.6, 0.58, 0.5), scale=40.0)
    stone = _material("stone", "noise", (0.55, 0.55, 0.5), (0.35, 0.33, 0.3), scale=12.0)
    gold = _material("gold", "voronoi", (0.85, 0.6, 0.15), (0.5, 0.3, 0.05), scale=14.0, roughness=0.3)
    teal = _material("teal", "wave", (0.1, 0.55, 0.55), (0.05, 0.2, 0.3), scale=8.0)
    purple = _material("purple", "brick", (0.5, 0.2, 0.6), (0.9, 0.8, 0.95), scale=6.0)
    _object("ground", _plane, ground, (0, 0, 0), scale=(30, 30, 1))
    _object("plinth", _cylinder, stone, (0, 0, 0.3), scale=(0.7, 0.7, 0.6))
    _object("monkey", _monkey, gold, (0, 0, 0.9), rotation=(0, 0, math.radians(-70)), scale=(0.4, 0.4, 0.4))
    _object("torus", _torus, teal, (0.75, 0.55, 0.15), scale=(0.5, 0.5, 1.0))
    _object("cone", _cone, purple, (-0.7, -0.6, 0.35), scale=(0.45, 0.45, 0.7))
    _object("crate", _cube, stone, (0.2, -0.9, 0.2), rotation=(0, 0, 0.5), scale=(0.4, 0.4, 0.4))
    _light("SUN", 3.0, (0, 0, 5), rotation=(math.radians(40), math.radians(15), math.radians(30)))
    _world_colour(_scene(), (0.55, 0.7, 0.95), 0.8)
    theta = np.radians(25 + 360 * np.arange(VIEWS) / VIEWS)
    position = np.stack([3.2 * np.cos(theta), 3.2 * np.sin(theta), np.full(VIEWS, 1.7)], -1)
    target = np.array([0.0, 0.0, 0.6])
    return _look_at(position, target - position)


def _look_at(position: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """OpenCV cam2world [V,4,4] at ``position`` looking along ``forward``, no roll (image down = world −Z side)."""
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    pose = np.tile(np.eye(4), (len(position), 1, 1))
    pose[:, :3, :3] = np.stack([right, down, forward], -1)
    pose[:, :3, 3] = position
    return pose


def render_views(scene: Any, cam2world: np.ndarray, size: int, out: Path) -> dict[str, np.ndarray]:
    """Render each camera to ``out/view_NN.png`` and cast its pixel-centre rays: the truth arrays."""
    focal = size / (2 * math.tan(math.radians(FOV_DEG) / 2))
    data = bpy.data.cameras.new("camera")
    data.sensor_fit, data.sensor_width = "HORIZONTAL", 36.0
    data.lens = focal * data.sensor_width / size
    data.clip_start, data.clip_end = 0.01, 200.0
    camera = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    out.mkdir(parents=True, exist_ok=True)
    centre = (np.arange(size) + 0.5 - size / 2) / focal            # pixel centres, photo spans [0, size]
    rays = np.stack(np.meshgrid(centre, centre, indexing="xy") + [np.ones((size, size))], -1)  # [H,W,3] OpenCV
    points = np.zeros((len(cam2world), size, size, 3))
    valid = np.zeros((len(cam2world), size, size), dtype=bool)
    for k, pose in enumerate(cam2world):
        camera.matrix_world = Matrix((pose @ OPENCV_TO_BLENDER).tolist())
        scene.render.filepath = str(out / f"view_{k:02d}.png")
        bpy.ops.render.render(write_still=True)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        origin = Vector(pose[:3, 3].tolist())
        directions = rays.reshape(-1, 3) @ pose[:3, :3].T
        for index, direction in enumerate(directions):
            hit, location, *_ = scene.ray_cast(depsgraph, origin, Vector(direction.tolist()))
            if hit:
                points[k].reshape(-1, 3)[index] = tuple(location)
                valid[k].reshape(-1)[index] = True
    to_view0 = np.linalg.inv(cam2world[0])
    pts = points @ to_view0[:3, :3].T + to_view0[:3, 3]
    intrinsics = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    return {"pts3d": np.where(valid[..., None], pts, 0).astype(np.float32), "valid": valid,
            "cam2world": (to_view0 @ cam2world).astype(np.float32),
            "intrinsics": np.repeat(intrinsics[None], len(cam2world), 0).astype(np.float32),
            "world_points": np.where(valid[..., None], points, 0).astype(np.float32),
            "world_cam2world": cam2world.astype(np.float32)}


SCENES = {"room": build_room, "prop": build_prop}


def make_scene(name: str, out: Path, size: int = 64, samples: int = 64) -> Path:
    """Build scene ``name`` in a fresh Blender file, render it into ``out/name``; returns that folder."""
    scene = _fresh_scene(size, samples)
    cam2world = SCENES[name]()
    folder = out / name
    truth = render_views(scene, cam2world, size, folder)
    np.savez(folder / "truth.npz", **truth)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=64, help="square photo size: the model's input size")
    p.add_argument("--samples", type=int, default=64, help="Cycles samples a pixel")
    p.add_argument("--scene", choices=sorted(SCENES), nargs="+", default=sorted(SCENES))
    args = p.parse_args(argv)
    for name in args.scene:
        print(make_scene(name, args.out, args.size, args.samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
