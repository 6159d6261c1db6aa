"""The before/after picture of docs/import.md: the ring scene imported with the first camera's rule and
with ``level``, rendered by Cycles from the same orthographic side camera (nearly along +X) over
Blender's floor grid.

    .venv/bin/python bench/alignment.py --out DIR          # writes DIR/ring.npz (exact pointmaps)
    .venv-blender-5.0/bin/python bench/alignment_picture.py DIR/ring.npz docs/images/alignment.png
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

USER = tempfile.mkdtemp(prefix="mvd-picture-user-")
os.environ["BLENDER_USER_RESOURCES"] = USER
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpy  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from blender_extension import PACKAGE, install_extension  # noqa: E402

SIZE = (480, 360)


def emission(name: str, colour: tuple[float, float, float]) -> bpy.types.Material:
    material, nodes, links = sys.modules[f"{PACKAGE}.importers.nodes"].new_node_material(name)
    light = nodes.new("ShaderNodeEmission")
    light.inputs["Color"].default_value = (*colour, 1.0)
    links.new(light.outputs["Emission"], nodes["Material Output"].inputs["Surface"])
    return material


def floor_grid() -> None:
    """Blender's floor grid as geometry: 1-unit lines on z = 0, the X axis red and the Y axis green."""
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=13, y_subdivisions=13, size=12.0)
    grid: Any = bpy.context.object
    grid.modifiers.new("lines", "WIREFRAME").thickness = 0.015
    grid.data.materials.append(emission("grid", (0.35, 0.35, 0.35)))
    for name, rotation, colour in (("X axis", (0.0, math.pi / 2, 0.0), (0.8, 0.1, 0.1)),
                                   ("Y axis", (math.pi / 2, 0.0, 0.0), (0.1, 0.7, 0.1))):
        bpy.ops.mesh.primitive_cylinder_add(radius=0.02, depth=12.0, rotation=rotation)
        axis: Any = bpy.context.object
        axis.data.materials.append(emission(name, colour))


def render(bundle: Path, align: str, out: Path) -> Image.Image:
    bpy.ops.wm.read_homefile(use_empty=True)
    api = sys.modules[f"{PACKAGE}.api"]
    api.import_bundle(str(bundle), align=align, cameras=False, gaussians=False)
    floor_grid()
    bpy.ops.object.camera_add(location=(-20.0, -3.0, 1.5), rotation=(math.radians(90), 0.0, math.radians(-80)))
    scene: Any = bpy.context.scene
    scene.camera = bpy.context.object
    scene.camera.data.type = "ORTHO"
    scene.camera.data.ortho_scale = 13.0
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.world = bpy.data.worlds.new("white")
    scene.world.color = (1.0, 1.0, 1.0)
    scene.render.filepath = str(out)
    bpy.ops.render.render(write_still=True)
    return Image.open(out).convert("RGB")


def main(bundle: str, picture: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="mvd-picture-"))
    try:
        install_extension(work)
        before = render(Path(bundle), "first_camera", work / "before.png")
        after = render(Path(bundle), "level", work / "after.png")
        sheet = Image.new("RGB", (2 * SIZE[0] + 10, SIZE[1] + 30), (255, 255, 255))
        sheet.paste(before, (0, 30))
        sheet.paste(after, (SIZE[0] + 10, 30))
        draw = ImageDraw.Draw(sheet)
        draw.text((10, 8), "align=first_camera (before): as the first photo was held", fill=(0, 0, 0))
        draw.text((SIZE[0] + 20, 8), "align=level (the default): upright, on the grid, at the origin", fill=(0, 0, 0))
        Path(picture).parent.mkdir(parents=True, exist_ok=True)
        sheet.save(picture)
        print(picture)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
