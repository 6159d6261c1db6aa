"""Render ground-truth camera scenes with the bpy wheel: ``python blender_truth_scenes.py OUT_DIR GRID [SCENE...]``.

Runs under a Blender venv's Python (``.venv-blender-5.0``); the engine tests spawn it
(tests/engine/truth_scenes.py). For each scene ("room": a furnished room seen from inside;
"turntable": an object on a pedestal, cameras around it; by default these two, else the SCENEs named,
among them the level alignment's: "scan", "ring", "walkaround", "strip", "rolled") it writes, under
OUT_DIR/<scene>/:

- the photos, rendered by ray-casting Blender's scene through every pixel centre (Lambert shading of
  each object's colour; a ray caster as samples/ uses, about 10x faster than Cycles here) at each
  camera's own resolution: PNGs without EXIF, and JPEGs whose EXIF names their camera (make, model,
  focal length; camera T2 also its 35 mm-equivalent focal length) — one of each camera's stored rotated
  with EXIF orientation 6, so it is displayed portrait;
- ``truth.npz``: per view (photo order) the photo size as displayed (W, H), the focal F (photo
  pixels, square pixels, principal point at the photo centre), the OpenCV cam2world, the crop box
  of the network's GRID×GRID input (the official short-side resize and centre crop, computed here
  independently of the engine), and ``depth`` [N,GRID,GRID]: the exact planar depth (camera z) of
  the surface seen through each grid pixel's CENTRE, ray-cast in Blender's scene (a BVH tree of all
  its evaluated meshes in world coordinates).

Every ray hits something: both scenes are closed boxes.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

USER = tempfile.mkdtemp(prefix="mvd-truth-user-")
os.environ["BLENDER_USER_RESOURCES"] = USER

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402
from PIL import Image  # noqa: E402
from PIL.TiffImagePlugin import IFDRational  # noqa: E402

TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # Blender camera axes (−Z forward, +Y up) → OpenCV


@dataclass(frozen=True)
class Shot:
    """One photo: size as displayed, field of view across its camera's long side, where it looks from."""

    size: tuple[int, int]                  # (W, H) as displayed
    fov_deg: float                         # across the long side of the camera's sensor
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    roll_deg: float = 0.0
    exif: Optional[str] = None             # camera model name written to EXIF (JPEG); None: PNG, no EXIF
    rotated: bool = False                  # stored rotated 90°, EXIF orientation 6 (displayed as `size`)


ROOM = [  # a 9 × 7 × 3 m room; the views see walls, floor, ceiling and furniture
    Shot((160, 120), 60.0, (-3.0, -2.0, 1.6), (2.0, 1.0, 1.0)),
    Shot((160, 120), 60.0, (-2.0, 2.0, 1.5), (3.0, -1.5, 0.8), roll_deg=4.0),
    Shot((120, 160), 45.0, (1.0, -2.5, 1.7), (-2.0, 2.5, 1.0)),
    Shot((128, 128), 90.0, (0.0, 0.0, 1.4), (4.0, 0.5, 0.6)),
    Shot((128, 128), 90.0, (2.5, 1.5, 2.0), (-3.0, -2.0, 0.5), roll_deg=-6.0),
    Shot((200, 150), 35.0, (3.5, -2.5, 1.2), (-1.0, 1.0, 1.0), exif="T1"),
    Shot((150, 200), 35.0, (-3.5, 0.5, 1.8), (1.5, -0.5, 0.7), exif="T1", rotated=True),
    Shot((120, 160), 45.0, (0.5, 2.8, 1.3), (0.0, -3.0, 1.0), roll_deg=3.0),
]
T2_35MM = 30   # camera T2's EXIF says FocalLengthIn35mmFilm = 30 (an integer tag): its field of view is that one's
T2_FOV = math.degrees(2 * math.atan(100 / (T2_35MM * math.hypot(200, 150) / math.hypot(36, 24))))
TURNTABLE = [  # an object at the origin, cameras on a circle of radius 4–5 m
    *(Shot(size, fov, (r * math.cos(math.radians(a)), r * math.sin(math.radians(a)), z), (0.0, 0.0, 0.9),
           roll_deg=roll, exif=exif, rotated=rot)
      for size, fov, r, a, z, roll, exif, rot in [
          ((160, 120), 40.0, 4.5, 0.0, 1.6, 0.0, None, False),
          ((160, 120), 40.0, 4.6, 40.0, 2.0, 2.0, None, False),
          ((120, 160), 55.0, 4.0, 85.0, 1.2, 0.0, None, False),
          ((112, 112), 75.0, 4.2, 130.0, 2.4, -3.0, None, False),
          ((200, 150), T2_FOV, 5.0, 180.0, 1.8, 0.0, "T2", False),
          ((150, 200), T2_FOV, 4.8, 230.0, 1.0, 0.0, "T2", True),
          ((112, 112), 75.0, 4.4, 280.0, 2.8, 5.0, None, False),
          ((120, 160), 55.0, 4.1, 320.0, 1.5, -2.0, None, False),
      ]),
]


def add_box(name: str, centre: tuple[float, float, float], size: tuple[float, float, float],
            colour: tuple[float, float, float]) -> None:
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=centre)
    obj = bpy.context.object
    obj.name = name
    obj.scale = size
    material = bpy.data.materials.new(name)
    material.diffuse_color = (*colour, 1.0)
    obj.data.materials.append(material)


def build_room() -> None:
    add_box("room", (0.0, 0.0, 1.5), (9.0, 7.0, 3.0), (0.8, 0.75, 0.7))
    add_box("table", (1.5, 0.5, 0.4), (1.6, 0.9, 0.8), (0.5, 0.3, 0.1))
    add_box("cupboard", (-3.9, 2.9, 1.0), (1.0, 1.0, 2.0), (0.2, 0.4, 0.6))
    add_box("sofa", (-1.0, -2.8, 0.4), (2.4, 1.0, 0.8), (0.6, 0.1, 0.1))
    add_box("shelf", (4.2, -1.5, 1.2), (0.4, 2.0, 2.4), (0.3, 0.6, 0.3))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.35, location=(1.5, 0.5, 1.15))


def build_turntable() -> None:
    add_box("studio", (0.0, 0.0, 3.0), (14.0, 14.0, 6.0), (0.7, 0.7, 0.75))
    add_box("pedestal", (0.0, 0.0, 0.3), (1.2, 1.2, 0.6), (0.4, 0.4, 0.4))
    bpy.ops.mesh.primitive_monkey_add(size=1.0, location=(0.0, 0.0, 1.1), rotation=(0.3, 0.0, 0.6))
    bpy.ops.mesh.primitive_cone_add(radius1=0.3, depth=0.8, location=(0.4, -0.35, 1.0))


def build_ring() -> None:
    """A prop on a round table (top at 0.75 m) in a studio: what a turntable ring photographs."""
    add_box("studio", (0.0, 0.0, 3.0), (14.0, 14.0, 6.0), (0.7, 0.7, 0.75))
    bpy.ops.mesh.primitive_cylinder_add(radius=0.8, depth=0.75, location=(0.4, -0.3, 0.375))
    bpy.ops.mesh.primitive_monkey_add(size=0.6, location=(0.4, -0.3, 1.0), rotation=(0.3, 0.0, 0.6))
    bpy.ops.mesh.primitive_cone_add(radius1=0.15, depth=0.4, location=(0.75, -0.55, 0.95))


def build_tiled_room() -> None:
    """The room with coloured floor tiles (planes 2 mm above the floor) where the strip looks: a bare
    floor would give every strip photo the same pixels, and the stand-in network tells views apart by them."""
    build_room()
    for k in range(24):
        x, y = -3.6 + 0.7 * (k % 8), -1.7 + 0.8 * (k // 8)
        bpy.ops.mesh.primitive_plane_add(size=0.5, location=(x, y, 0.002))
        material = bpy.data.materials.new(f"tile {k}")
        material.diffuse_color = (0.2 + 0.1 * (k % 7), 0.9 - 0.1 * (k % 5), 0.3 + 0.2 * (k % 3), 1.0)
        bpy.context.object.data.materials.append(material)


def looking(eye: tuple[float, float, float], azimuth_deg: float, down_deg: float) -> tuple[float, float, float]:
    """A target one metre from `eye`, `azimuth_deg` around +Z from +X, `down_deg` below the horizon."""
    a, d = math.radians(azimuth_deg), math.radians(down_deg)
    return (eye[0] + math.cos(a) * math.cos(d), eye[1] + math.sin(a) * math.cos(d), eye[2] - math.sin(d))


def orbit(centre: tuple[float, float, float], radius: float, azimuth_deg: float,
          elevation_deg: float) -> tuple[float, float, float]:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (centre[0] + radius * math.cos(a) * math.cos(e), centre[1] + radius * math.sin(a) * math.cos(e),
            centre[2] + radius * math.sin(e))


# Scenes for the level alignment (issue 24): small photos, the up, floor and centre known.
RING_CENTRE = (0.4, -0.3, 1.0)
SCAN = [  # a hand-held scan of the room from its middle: looking down 10–25°, rolled up to ±3°
    Shot((128, 96), 65.0, (x, y, z), looking((x, y, z), az, down), roll_deg=roll)
    for x, y, z, az, down, roll in [(-1.0, -0.5, 1.6, 0.0, 12.0, 2.0), (-0.8, 0.2, 1.55, 45.0, 18.0, -1.5),
                                    (-0.2, 0.6, 1.65, 95.0, 22.0, 3.0), (0.4, 0.5, 1.5, 140.0, 10.0, -3.0),
                                    (0.8, 0.0, 1.6, 185.0, 25.0, 1.0), (0.6, -0.6, 1.7, 230.0, 15.0, -2.5),
                                    (0.0, -0.9, 1.6, 275.0, 20.0, 0.5), (-0.6, -0.7, 1.55, 320.0, 14.0, -0.8)]
]
RING = [  # a turntable ring at 15–45° elevation around the prop, rolled up to ±3°
    Shot((128, 96), 45.0, orbit(RING_CENTRE, r, az, el), RING_CENTRE, roll_deg=roll)
    for r, az, el, roll in [(3.0, 0.0, 15.0, 1.0), (3.2, 45.0, 25.0, -2.0), (2.8, 90.0, 35.0, 3.0),
                            (3.0, 135.0, 45.0, 0.0), (3.1, 180.0, 20.0, -3.0), (2.9, 225.0, 30.0, 2.0),
                            (3.0, 270.0, 40.0, -1.0), (3.3, 315.0, 15.0, 0.5)]
]
TABLE_TOP = (1.5, 0.5, 0.8)
WALKAROUND = [  # walking around the room's table at eye height, looking at what is on it
    Shot((128, 96), 55.0, (TABLE_TOP[0] + r * math.cos(math.radians(az)), TABLE_TOP[1] + r * math.sin(math.radians(az)), z),
         (TABLE_TOP[0] + dx, TABLE_TOP[1] + dy, 1.05), roll_deg=roll)
    for r, az, z, dx, dy, roll in [(2.2, -20.0, 1.6, 0.05, 0.0, 1.0), (2.0, 40.0, 1.7, -0.05, 0.05, -2.0),
                                   (2.1, 100.0, 1.5, 0.0, -0.05, 2.5), (1.9, 160.0, 1.65, 0.05, 0.05, 0.0),
                                   (2.3, 210.0, 1.55, -0.05, 0.0, -1.0), (2.0, 270.0, 1.7, 0.0, 0.05, 3.0)]
]
STRIP = [  # one strip along the room, every photo pitched 55° down at the floor
    Shot((128, 96), 60.0, (x, -2.0, 1.6), looking((x, -2.0, 1.6), 90.0, 55.0), roll_deg=roll)
    for x, roll in [(-3.0, 0.5), (-2.2, -1.0), (-1.4, 0.0), (-0.6, 1.5), (0.2, -0.5), (1.0, 1.0)]
]
ROLLED = [  # the ring, every camera held sideways: no evidence of up
    Shot((96, 128), 45.0, orbit(RING_CENTRE, 3.0, az, 30.0), RING_CENTRE, roll_deg=90.0)
    for az in (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
]
SCENES = {"room": (build_room, ROOM), "turntable": (build_turntable, TURNTABLE), "scan": (build_room, SCAN),
          "ring": (build_ring, RING), "walkaround": (build_room, WALKAROUND), "strip": (build_tiled_room, STRIP),
          "rolled": (build_ring, ROLLED)}


def long_side_focal(shot: Shot) -> float:
    """F in photo pixels: the field of view spans the camera's long side (the same F when the photo is rotated)."""
    return max(shot.size) / 2 / math.tan(math.radians(shot.fov_deg) / 2)


def place_camera(shot: Shot, focal: float) -> np.ndarray:
    """Point the scene's camera for `shot`; return its OpenCV cam2world [4,4]."""
    scene = bpy.context.scene
    camera = scene.camera
    width, height = shot.size
    camera.data.sensor_fit = "HORIZONTAL"
    camera.data.sensor_width = 36.0
    camera.data.lens = focal * 36.0 / width
    camera.data.shift_x = camera.data.shift_y = 0.0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    eye, target = Vector(shot.eye), Vector(shot.target)
    rotation = (target - eye).to_track_quat("-Z", "Y").to_matrix().to_4x4()
    roll = Matrix.Rotation(math.radians(shot.roll_deg), 4, "Z")
    camera.matrix_world = Matrix.Translation(eye) @ rotation @ roll
    bpy.context.view_layer.update()
    return np.array(camera.matrix_world) @ TO_OPENCV


def crop_box(width: int, height: int, grid: int) -> tuple[float, float, float, float]:
    """The official preprocessing's crop (short side → grid, rounded sides, centre crop) in photo pixels."""
    long_edge = round(grid * max(width / height, height / width))
    longest = max(width, height)
    resized = (int(round(width * long_edge / longest)), int(round(height * long_edge / longest)))
    a, b = resized[0] // 2 - grid // 2, resized[1] // 2 - grid // 2
    sx, sy = width / resized[0], height / resized[1]
    return (a * sx, b * sy, (a + grid) * sx, (b + grid) * sy)


class Tracer:
    """Rays against every mesh of the scene (world coordinates), with each polygon's object colour."""

    def __init__(self) -> None:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        vertices: list[np.ndarray] = []
        polygons: list[list[int]] = []
        colours: list[tuple[float, float, float]] = []
        for obj in bpy.context.scene.objects:
            if obj.type != "MESH":
                continue
            mesh = obj.evaluated_get(depsgraph).to_mesh()
            co = np.empty(len(mesh.vertices) * 3)
            mesh.vertices.foreach_get("co", co)
            world = co.reshape(-1, 3) @ np.array(obj.matrix_world)[:3, :3].T + np.array(obj.matrix_world)[:3, 3]
            offset = sum(len(v) for v in vertices)
            polygons += [[offset + i for i in p.vertices] for p in mesh.polygons]
            colour = obj.material_slots[0].material.diffuse_color[:3] if obj.material_slots else (0.9, 0.8, 0.3)
            colours += [tuple(colour)] * len(mesh.polygons)
            vertices.append(world)
            obj.evaluated_get(depsgraph).to_mesh_clear()
        self.tree = BVHTree.FromPolygons([tuple(v) for v in np.concatenate(vertices).tolist()], polygons)
        self.colours = np.array(colours)

    def trace(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hit points [R,3] and shaded colours [R,3] of rays from `origin` along `directions` [R,3]."""
        start = Vector(origin.tolist())
        hits = np.empty((len(directions), 3))
        shade = np.empty((len(directions), 3))
        light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
        for k, d in enumerate(directions.tolist()):
            location, normal, index, _ = self.tree.ray_cast(start, Vector(d))
            if location is None:
                raise RuntimeError(f"a ray of the truth scene hit nothing (direction {d})")
            hits[k] = location
            shade[k] = self.colours[index] * (0.35 + 0.65 * abs(float(np.dot(normal, light))))
        return hits, shade


def pixel_rays(c2w: np.ndarray, focal: float, size: tuple[int, int], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """World directions [len(ys)·len(xs),3] through photo points (xs × ys, continuous photo pixels)."""
    rays = np.stack(np.meshgrid((xs - size[0] / 2) / focal, (ys - size[1] / 2) / focal), -1).reshape(-1, 2)
    return np.concatenate([rays, np.ones((len(rays), 1))], 1) @ c2w[:3, :3].T


def grid_depth(tracer: Tracer, c2w: np.ndarray, focal: float, size: tuple[int, int],
               box: tuple[float, float, float, float], grid: int) -> np.ndarray:
    """Planar depth [grid,grid] of the first surface through each grid pixel's centre."""
    x0, y0, x1, y1 = box
    centres = np.arange(grid) + 0.5
    hits, _ = tracer.trace(c2w[:3, 3], pixel_rays(c2w, focal, size, x0 + centres * (x1 - x0) / grid,
                                                  y0 + centres * (y1 - y0) / grid))
    return ((hits - c2w[:3, 3]) @ c2w[:3, 2]).reshape(grid, grid)


def render_photo(tracer: Tracer, c2w: np.ndarray, focal: float, size: tuple[int, int], path: Path) -> None:
    """The photo as seen through every pixel centre (c + 0.5, r + 0.5)."""
    _, shade = tracer.trace(c2w[:3, 3], pixel_rays(c2w, focal, size, np.arange(size[0]) + 0.5,
                                                   np.arange(size[1]) + 0.5))
    pixels = np.clip(shade.reshape(size[1], size[0], 3) ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def save_photo(rendered: Path, shot: Shot, out: Path) -> Path:
    """PNG as rendered, or a JPEG with its camera in EXIF (stored rotated, orientation 6, when `shot.rotated`)."""
    if shot.exif is None:
        return rendered
    image = Image.open(rendered).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "Truth Cameras"                      # Make
    exif[0x0110] = shot.exif                            # Model
    exif.get_ifd(0x8769)[0x920A] = IFDRational(4.2)     # FocalLength, mm (the same lens for the whole model)
    if shot.exif == "T2":
        exif.get_ifd(0x8769)[0xA405] = T2_35MM           # FocalLengthIn35mmFilm
    if shot.rotated:
        image = image.transpose(Image.Transpose.ROTATE_90)   # stored; orientation 6 turns it back
        exif[0x0112] = 6
    path = out.with_suffix(".jpg")
    image.save(path, quality=95, exif=exif)
    rendered.unlink()
    return path


def render_scene(name: str, shots: list[Shot], out: Path, grid: int) -> None:
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    SCENES[name][0]()
    bpy.ops.object.camera_add()
    bpy.context.scene.camera = bpy.context.object
    tracer = Tracer()
    out.mkdir(parents=True, exist_ok=True)
    paths, c2ws, focals, boxes, depths = [], [], [], [], []
    for k, shot in enumerate(shots):
        focal = long_side_focal(shot)
        c2w = place_camera(shot, focal)
        render_photo(tracer, c2w, focal, shot.size, out / f"view_{k}.png")
        paths.append(save_photo(out / f"view_{k}.png", shot, out / f"view_{k}"))
        box = crop_box(*shot.size, grid)
        c2ws.append(c2w)
        focals.append(focal)
        boxes.append(box)
        depths.append(grid_depth(tracer, c2w, focal, shot.size, box, grid))
    np.savez(out / "truth.npz", photo_size=np.array([s.size for s in shots], dtype=np.float64),
             focal=np.array(focals), cam2world=np.stack(c2ws), crop_box=np.array(boxes),
             depth=np.stack(depths), camera=np.array([s.exif or f"{s.size[0]}x{s.size[1]}" for s in shots]))
    (out / "photos.json").write_text(json.dumps([p.name for p in paths]))


def main(out_dir: str, grid: str, *names: str) -> None:
    try:
        for name in names or ("room", "turntable"):
            render_scene(name, SCENES[name][1], Path(out_dir) / name, int(grid))
    finally:
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
