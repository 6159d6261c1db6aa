"""Render an imported bundle with EEVEE in a child process (a missing EGL aborts the process, which
pytest could not survive): ``python eevee_render.py ZIP BUNDLE OUTDIR``.

Writes OUTDIR/points.png (Gaussians hidden) and OUTDIR/gaussians.png (points hidden), seen from the
first photo's camera, and prints the projected pixel (u, v) of every point as JSON on the last line.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Blender's user folder inside OUTDIR (the test's tmp_path): nothing is left in the temporary
# directory even when a missing EGL aborts this process before any clean-up could run.
USER = tempfile.mkdtemp(prefix="blender-user-", dir=sys.argv[3])
os.environ["BLENDER_USER_RESOURCES"] = USER

import bpy  # noqa: E402
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402


def main(zip_path: str, bundle_path: str, out_dir: str) -> None:
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)  # no default cube around the camera
    api = importlib.import_module("bl_ext.user_default.mvdust3r_blender.api")
    result = api.import_bundle(bundle_path, background_images=False, point_size=0.6)
    scene = bpy.context.scene
    camera = result.cameras[0]
    bpy.ops.mvdust3r_blender.set_render_camera(camera=camera.name)
    scene.render.engine = "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"
    scene.eevee.taa_render_samples = 4
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    for shown, hidden in ((result.points, result.gaussians), (result.gaussians, result.points)):
        shown.hide_render, hidden.hide_render = False, True
        scene.render.filepath = str(Path(out_dir) / ("points.png" if shown == result.points else "gaussians.png"))
        bpy.ops.render.render(write_still=True)
    width, height = scene.render.resolution_x, scene.render.resolution_y
    pixels = []
    for v in result.points.data.vertices:
        ndc = world_to_camera_view(scene, camera, v.co)
        pixels.append([ndc.x * width, (1 - ndc.y) * height])
    print(json.dumps(pixels))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:4])
    finally:  # the test leaves /tmp as it found it
        shutil.rmtree(USER, ignore_errors=True)
