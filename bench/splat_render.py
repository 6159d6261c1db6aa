"""Benchmark: imported Gaussians rendered by Blender against the reference 3DGS rasteriser.

    .venv-blender-5.0/bin/python bench/splat_render.py --count 100000 [--width 320 --height 240]
        [--samples 16 64] [--engine CYCLES|EEVEE] [--min-transparent-bounces N] [--keep DIR]

Builds and installs the extension (as the tests do), imports the plane-and-sphere scene of the
tests (``tests/helpers/splat_scenes.py``) with the add-on's defaults, makes the scene's own camera
the render camera, and renders it once per sample count (Cycles on the CPU without denoising, or
EEVEE). Prints the import time, what one re-evaluation of the geometry nodes costs after the scene
camera moves (the viewport's cost; drawing itself cannot be timed headless), and per render: the
render time, the PSNR of the colour and the soft alpha IoU against ``tests/helpers/splat_reference.py``
(EWA + 0.3 px² low-pass, α ≤ 0.99, front-to-back). Results go to docs/benchmarks.md ("Splat
rendering") by hand, with the machine and date.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

USER = tempfile.mkdtemp(prefix="mvd-bench-user-")
os.environ["BLENDER_USER_RESOURCES"] = USER
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository, for tests.helpers

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from blender_extension import PACKAGE, install_extension  # noqa: E402  (bench/ is this script's folder)

# the tests' own scene, reference rasteriser and render read-back (tests.helpers, not type-checked here)
queries, reference_module, scenes = (importlib.import_module(f"tests.helpers.{name}")
                                     for name in ("blender_queries", "splat_reference", "splat_scenes"))


def reference_image(b: Any, srgb8_to_linear: Any) -> Any:
    """The reference rasteriser's image (``SplatImage``) of bundle `b`'s Gaussians from its view 0, in linear colour."""
    width, height = (int(v) for v in b.photo_size[0])
    return reference_module.rasterize(
        b.pts3d.reshape(-1, 3), b.gaussian_rotation.reshape(-1, 4), b.gaussian_scale.reshape(-1, 3),
        b.gaussian_opacity.reshape(-1), srgb8_to_linear(b.images.reshape(-1, 3)),
        np.linalg.inv(b.cam2world[0].astype(np.float64)), b.intrinsics[0], width, height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 64],
                        help="render samples (Cycles: denoiser off); 0: Blender's own defaults (Cycles: adaptive "
                             "sampling up to 4096 samples, denoiser on)")
    parser.add_argument("--engine", choices=["CYCLES", "EEVEE"], default="CYCLES")
    parser.add_argument("--min-transparent-bounces", type=int,
                        help="override what the import set (Cycles' Russian roulette starts after this many)")
    parser.add_argument("--keep", type=Path, help="keep the renders (EXR) in this folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvd-bench-"))
    try:
        install_extension(work)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        preferences = bpy.context.preferences
        assert preferences is not None       # None only while Blender starts or quits
        if PACKAGE not in preferences.addons:
            bpy.ops.preferences.addon_enable(module=PACKAGE)
        api = importlib.import_module(f"{PACKAGE}.api")
        bundle_module = importlib.import_module(f"{PACKAGE}.core.bundle")
        rotations = importlib.import_module(f"{PACKAGE}.core.rotations")
        bundle = scenes.plane_and_sphere(bundle_module.Bundle, rotations.quaternion_from_matrix, args.count,
                                  args.width, args.height)
        t = time.perf_counter()
        reference = reference_image(bundle, bundle_module.srgb8_to_linear)
        reference_time = time.perf_counter() - t
        t = time.perf_counter()
        result = api.import_bundle(bundle, points=False, background_images=False)
        import_time = time.perf_counter() - t
        scene = bpy.context.scene
        assert scene is not None
        getattr(bpy.ops, "mvdust3r_blender").set_render_camera(camera=result.cameras[0].name)
        cycles: Any = getattr(scene, "cycles")
        # what moving the scene camera costs (the low-pass and the facing discs follow it): one
        # re-evaluation of the geometry nodes, as the viewport would do it
        bpy.context.evaluated_depsgraph_get()
        camera = scene.camera
        assert camera is not None
        t = time.perf_counter()
        camera.location.x += 1e-3
        bpy.context.evaluated_depsgraph_get().update()
        moved = time.perf_counter() - t
        print(f"bpy {bpy.app.version_string}, Python {platform.python_version()}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs; {bundle.conf.size:,} Gaussians at {args.width}×{args.height}; "
              f"import {import_time:.2f} s; reference rasteriser {reference_time:.2f} s; "
              f"geometry nodes after a camera move {moved:.3f} s; report: {result.report}")
        # (the 4.2 stubs know only BLENDER_EEVEE_NEXT; 5.0 calls it BLENDER_EEVEE)
        engine = "CYCLES" if args.engine == "CYCLES" else (
            "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) else "BLENDER_EEVEE_NEXT")
        setattr(scene.render, "engine", engine)
        if args.engine == "CYCLES":
            if args.min_transparent_bounces is not None:
                cycles.min_transparent_bounces = args.min_transparent_bounces
            cycles.device = "CPU"
        scene.render.film_transparent = True
        out = args.keep or work
        out.mkdir(parents=True, exist_ok=True)
        for samples in args.samples:
            if args.engine == "EEVEE":
                setattr(getattr(scene, "eevee"), "taa_render_samples", samples)
            elif samples > 0:
                cycles.samples = samples
                cycles.use_denoising = False
            t = time.perf_counter()
            colour, alpha = queries.render_exr(scene, out / f"{args.engine.lower()}-{bundle.conf.size}-{samples}.exr")
            seconds = time.perf_counter() - t
            image = reference_module.SplatImage(colour=colour, alpha=alpha)
            print(f"{args.engine} {samples:4d} samples: {seconds:7.2f} s  PSNR {reference_module.psnr(image, reference):5.2f} dB  "
                  f"alpha IoU {reference_module.alpha_iou(image, reference):.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main()
