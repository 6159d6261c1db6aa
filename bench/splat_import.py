"""Benchmark: importing a 3D Gaussian splat file made elsewhere (3 M Gaussians, SH degree 3).

    .venv-blender-4.2/bin/python bench/splat_import.py [--count 3000000] [--degree 3]

Writes a synthetic INRIA 3DGS PLY of `count` Gaussians with SH of `degree` (numpy, in chunks),
converts it to SPZ with the add-on's own writer, installs the extension into a temporary Blender
user folder (as the tests do) and times, for each file: reading it (``core.splat_files``, no
Blender) and the whole ``api.import_splats`` (reading + the splats object), the peak memory of the
process (``ru_maxrss``) and what the decoded Gaussians take, and the F12 colour update (SH evaluated
for a camera, ``sync_view_colours``). Target: seconds, not minutes. Results go to
docs/benchmarks.md ("Splat files") by hand, with the machine and date.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

USER = tempfile.mkdtemp(prefix="mvd-bench-user-")
os.environ["BLENDER_USER_RESOURCES"] = USER

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from blender_extension import PACKAGE, install_extension  # noqa: E402  (bench/ is this script's folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.helpers
from tests.helpers.splat_reference_files import ReferenceSplats, inria_header, inria_records, random_sh  # noqa: E402

CHUNK = 500_000


def synthetic_ply(path: Path, count: int, degree: int) -> Path:
    """`count` Gaussians in a 20-unit box in front of the origin, written chunk by chunk."""
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            q = rng.normal(size=(n, 4)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            records = inria_records(ReferenceSplats(
                rng.uniform([-10, -10, 2], [10, 10, 22], (n, 3)).astype(np.float32), q,
                np.exp(rng.uniform(-5, -2, (n, 3))).astype(np.float32), rng.uniform(0.05, 1.0, n).astype(np.float32),
                random_sh(rng, rng.uniform(0, 1, (n, 3)), degree, 0.2)))
            if start == 0:
                f.write(inria_header(records.dtype, count))
            f.write(records.tobytes())
    return path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3_000_000)
    parser.add_argument("--degree", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvd-bench-", dir=os.environ.get("TMPDIR")))
    try:
        install_extension(work)
        api = importlib.import_module(f"{PACKAGE}.api")
        files = importlib.import_module(f"{PACKAGE}.core.splat_files")
        spz = importlib.import_module(f"{PACKAGE}.core.exports.spz")
        field_module = importlib.import_module(f"{PACKAGE}.core.splat_field")
        splat_file = importlib.import_module(f"{PACKAGE}.importers.splat_file")
        t = time.perf_counter()
        ply = synthetic_ply(work / "bench.ply", args.count, args.degree)
        print(f"bpy {bpy.app.version_string}, Python {platform.python_version()}, "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.count:,} Gaussians, SH "
              f"degree {args.degree}; PLY {ply.stat().st_size / 1e6:.0f} MB (written in {time.perf_counter() - t:.1f} s)")
        base = peak_mib()
        t = time.perf_counter()
        field = files.read_splat_file(ply).field
        print(f"read PLY (core, no Blender): {time.perf_counter() - t:.2f} s; decoded {field.nbytes / 2**20:.0f} MiB")
        t = time.perf_counter()
        path = spz.encode_spz(field_module.half_turn_x(field), work / "bench.spz")
        print(f"write SPZ: {time.perf_counter() - t:.2f} s, {path.stat().st_size / 1e6:.0f} MB")
        del field
        t = time.perf_counter()
        files.read_splat_file(path)
        print(f"read SPZ (core): {time.perf_counter() - t:.2f} s")
        print(f"peak memory so far {peak_mib():.0f} MiB (at start {base:.0f} MiB)")
        for source in (ply, path):
            bpy.ops.wm.read_factory_settings(use_empty=True)
            preferences = bpy.context.preferences
            assert preferences is not None
            if PACKAGE not in preferences.addons:
                bpy.ops.preferences.addon_enable(module=PACKAGE)
            t = time.perf_counter()
            result = api.import_splats(source)
            print(f"api.import_splats({source.suffix}): {time.perf_counter() - t:.2f} s, {result.count:,} Gaussians; "
                  f"peak memory {peak_mib():.0f} MiB")
        scene = bpy.context.scene
        assert scene is not None
        camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        t = time.perf_counter()
        splat_file.sync_view_colours(scene)
        print(f"F12 colour update (SH degree {args.degree} for the camera): {time.perf_counter() - t:.2f} s; "
              f"peak memory {peak_mib():.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(USER, ignore_errors=True)


if __name__ == "__main__":
    main()
