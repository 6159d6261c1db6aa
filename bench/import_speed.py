"""Benchmark: importing a large bundle into Blender (points + Gaussians + cameras).

    .venv-blender-4.2/bin/python bench/import_speed.py [--views 12] [--size 224] [--repeat 3]

Builds and installs the extension zip into a temporary Blender user folder (as the tests do), makes
a synthetic bundle of views × size × size points (12 × 224² = 602,112 by default, each with a
Gaussian), and times ``api.import_bundle`` from an in-memory bundle and from a .npz file, with the
time split into the parts it is made of. Target: < 1 s for 600 k points + 600 k Gaussians.
Results go to docs/benchmarks.md ("Import") by hand, with the machine and date.
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
from typing import Any, Callable

USER = tempfile.mkdtemp(prefix="mvd-bench-user-")
os.environ["BLENDER_USER_RESOURCES"] = USER

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.helpers

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from blender_extension import PACKAGE, install_extension  # noqa: E402  (bench/ is this script's folder)
from bundles import synthetic_bundle  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvd-bench-"))
    try:
        install_extension(work)
        api = importlib.import_module(f"{PACKAGE}.api")
        bundle_module = importlib.import_module(f"{PACKAGE}.core.bundle")
        scene_module = importlib.import_module(f"{PACKAGE}.importers.scene")
        bundle = synthetic_bundle(bundle_module.Bundle, args.views, args.size)
        count = bundle.conf.size
        path = bundle_module.write_bundle(bundle, work / "bench.npz")
        print(f"bpy {bpy.app.version_string}, Python {platform.python_version()}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; {args.views} views × {args.size}² = {count:,} points + {count:,} Gaussians, "
              f"{args.views} cameras; bundle file {path.stat().st_size / 1e6:.0f} MB")
        # time the parts by wrapping the importer's steps (same calls, same order)
        parts: dict[str, float] = {}
        originals = {name: getattr(scene_module, name) for name in
                     ("create_points", "create_gaussians", "create_cameras", "transform_points", "srgb8_to_linear",
                      "grid_point_spacing", "transform_rotations", "pixel_footprints")}

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*a: Any, **kw: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    parts[name] = parts.get(name, 0.0) + time.perf_counter() - t
            return wrapper

        for name, fn in originals.items():
            setattr(scene_module, name, timed(name, fn))
        totals: dict[str, list[float]] = {"in memory": [], "from file": []}
        for _ in range(args.repeat):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            preferences = bpy.context.preferences
            assert preferences is not None       # None only while Blender starts or quits
            if PACKAGE not in preferences.addons:
                bpy.ops.preferences.addon_enable(module=PACKAGE)
            t = time.perf_counter()
            api.import_bundle(bundle)
            totals["in memory"].append(time.perf_counter() - t)
            t = time.perf_counter()
            result = api.import_bundle(path)
            totals["from file"].append(time.perf_counter() - t)
        t = time.perf_counter()
        dg = bpy.context.evaluated_depsgraph_get()
        instances = sum(1 for i in dg.object_instances if i.is_instance and i.parent and i.parent.original == result.gaussians)
        evaluate = time.perf_counter() - t
        for name, values in totals.items():
            print(f"import_bundle ({name}): best {min(values):.3f} s, median {np.median(values):.3f} s over {len(values)}")
        print("parts (mean per import): " + ", ".join(
            f"{name} {value / (2 * args.repeat) * 1e3:.0f} ms" for name, value in sorted(parts.items(), key=lambda kv: -kv[1])))
        print(f"first depsgraph evaluation (geometry nodes, {instances:,} splat instances): {evaluate:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main()
