"""The demo: the shipped sample photos → ``out/demo/demo.blend`` and a small Cycles preview, through
the INSTALLED extension's public API in headless Blender (the bpy module).

    python build.py demo          # sets up, builds the zip, then runs this file with Blender 5.0's Python
    .venv-blender-5.0/bin/python demo/run_demo.py --zip dist/mvdust3r_blender-<ver>.zip \\
        --worker-python .venv/bin/python [--out out/demo] [--checkpoint FILE]

The model: the built-in ``models/default.safetensors`` (a small MV-DUSt3R+ trained on synthetic
rooms, docs/default-model.md), or ``--checkpoint``. Given a golden test checkpoint (RANDOM weights:
the pipeline runs end to end but the output is not a reconstruction of the photos), the demo says
so at the start and the end.

:func:`run_demo` is the core (given the installed ``api`` module); the test calls it directly.
:func:`main` first points Blender at a temporary user folder and installs the zip there.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Optional, TextIO

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "room"
DEFAULT_MODEL = ROOT / "models" / "default.safetensors"
PACKAGE = "bl_ext.user_default.mvdust3r_blender"
PREVIEW_SIZE = 256      # longest side of the preview, pixels
PREVIEW_SAMPLES = 16
NOT_REAL = ("NOTE: this demo runs the tiny TEST model {checkpoint} whose weights are RANDOM. Its output is NOT a "
            "real reconstruction of the photos; it only shows that every stage runs. Leave out --checkpoint to run "
            f"the built-in trained model {DEFAULT_MODEL.relative_to(ROOT)}.")
TRAINED = ("model: {checkpoint}. The shipped default is a small MV-DUSt3R+ trained on synthetic rooms only "
           "(docs/default-model.md): a rough reconstruction of these synthetic photos; real photos need the "
           "released checkpoints.")


@dataclass(frozen=True)
class Model:
    """The checkpoint the demo runs and whether it is a trained model (False: random test weights)."""

    checkpoint: Path
    trained: bool


def pick_model(root: Path = ROOT, override: Optional[Path] = None) -> Model:
    """`override`, else the shipped ``<root>/models/default.safetensors``. A checkpoint from the
    golden test folder counts as untrained (random weights)."""
    golden = Path(os.environ.get("MVDUST3R_GOLDEN", root.parent / "shared" / "golden")).resolve()
    if override is not None:
        return Model(override, trained=override.resolve().parent != golden)
    shipped = root / DEFAULT_MODEL.relative_to(ROOT)
    if not shipped.is_file():
        raise FileNotFoundError(f"the shipped model {shipped} is missing (it is committed to the repository)")
    return Model(shipped, trained=True)


@dataclass
class DemoResult:
    blend: Path
    preview: Path
    views: int
    points: int
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage, in the order run


def run_demo(api: ModuleType, model: Model, python: Path, out_dir: Path, photos: Path = SAMPLES,
             log: TextIO = sys.stdout) -> DemoResult:
    """Reconstruct `photos` with `model` through the installed extension's `api` into a new file,
    save ``<out_dir>/demo.blend``, render ``<out_dir>/preview.png``. Prints each stage's time."""
    import bpy

    reconstruction = importlib.import_module(api.__name__.rsplit(".", 1)[0] + ".reconstruction")
    warning = NOT_REAL.format(checkpoint=model.checkpoint)
    print(warning if not model.trained else TRAINED.format(checkpoint=model.checkpoint), file=log, flush=True)
    stages: dict[str, float] = {}

    def stage(name: str, started: float) -> None:
        stages[name] = time.perf_counter() - started
        print(f"  {name:<28} {stages[name]:6.1f} s", file=log, flush=True)

    started = time.perf_counter()
    reconstruction.fresh_file()
    result = api.reconstruct(photos, model.checkpoint, python=python, device="auto", name="Demo room")
    worker_total = result.timings.get("total", 0.0)
    stages["worker start + model load"] = time.perf_counter() - started - worker_total - result.timings["import"]
    print(f"  {'worker start + model load':<28} {stages['worker start + model load']:6.1f} s", file=log)
    for name in ("load", "network", "cameras", "gaussians"):
        if name in result.timings:
            stages[f"worker: {name}"] = result.timings[name]
            print(f"  {'worker: ' + name:<28} {result.timings[name]:6.1f} s", file=log)
    stages["import into Blender"] = result.timings["import"]
    print(f"  {'import into Blender':<28} {result.timings['import']:6.1f} s", file=log, flush=True)

    started = time.perf_counter()
    reconstruction.show_through_first_camera(result)
    with blender_quiet():
        blend = reconstruction.save_blend(out_dir / "demo.blend")
    stage("save demo.blend", started)

    started = time.perf_counter()
    with blender_quiet():
        preview = render_preview(bpy.context.scene, result, out_dir / "preview.png")
    stage(f"Cycles preview ({PREVIEW_SAMPLES} spp)", started)

    print(f"\n{result.views} photos → {len(result.objects)} objects ({result.points} points, "
          f"{len(result.imported.cameras)} cameras, Gaussians)\n  {blend}\n  {preview}", file=log)
    if not model.trained:
        print(warning, file=log, flush=True)
    return DemoResult(blend=blend, preview=preview, views=result.views, points=result.points, stages=stages)


def render_preview(scene: Any, result: Any, path: Path) -> Path:
    """Render a small Cycles image of the points and Gaussians from a camera that frames them:
    the first reconstructed camera's orientation, moved back until the points' central 90 % fit."""
    import bpy
    import numpy as np
    from mathutils import Matrix

    points = result.imported.points
    coords = np.empty(len(points.data.vertices) * 3, dtype=np.float32)
    points.data.vertices.foreach_get("co", coords)
    world = np.asarray(points.matrix_world, dtype=np.float64)
    xyz = coords.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    low, high = np.percentile(xyz, 5, axis=0), np.percentile(xyz, 95, axis=0)
    centre, radius = (low + high) / 2, max(float(np.linalg.norm(high - low)) / 2, 1e-6)

    first = result.imported.cameras[0]
    rotation = np.asarray(first.matrix_world, dtype=np.float64)[:3, :3]
    rotation = rotation / np.linalg.norm(rotation, axis=0)
    data = bpy.data.cameras.new("Demo Preview")
    data.sensor_fit = "HORIZONTAL"
    data.lens, data.sensor_width = 35.0, 36.0
    photo_w, photo_h = int(first["W"]), int(first["H"])
    scale = PREVIEW_SIZE / max(photo_w, photo_h)
    width, height = max(1, round(photo_w * scale)), max(1, round(photo_h * scale))
    half_fov = math.atan(min(1.0, height / width) * data.sensor_width / (2 * data.lens))
    distance = radius / math.sin(half_fov) * 1.1
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = centre + rotation[:, 2] * distance  # Blender cameras look down their local −Z
    camera = bpy.data.objects.new("Demo Preview", data)
    camera.matrix_world = Matrix(pose.tolist())
    data.clip_end = distance + 4 * radius
    scene.collection.objects.link(camera)

    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = PREVIEW_SAMPLES
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not path.is_file():
        raise RuntimeError(f"Cycles wrote no preview at {path}")
    return path


@contextlib.contextmanager
def blender_quiet() -> Iterator[None]:
    """Send Blender's own lines (``STATUS Installed ...``, ``Info: Saved copy as ".x.part.blend"``, the
    render's ``Saved: ...``) to the null device: Blender prints them from C to file descriptor 1 and
    through Python's ``sys.stdout``, so both are redirected while the block runs. Errors still raise."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # both levels: Python's too
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()   # Python's prints made inside go to the null device too,
                _flush_c_stdout()    # and so do C's, which stdio holds in its buffer when not on a terminal
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _flush_c_stdout() -> None:
    """``fflush(NULL)``: write out every C stdio buffer (Blender's printf lines) now."""
    import ctypes

    ctypes.CDLL(None).fflush(None)


def install(zip_path: Path) -> ModuleType:
    """Install and enable the extension zip in this Blender (user folder already set); its api module."""
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"} or PACKAGE not in bpy.context.preferences.addons:
        raise RuntimeError(f"installing {zip_path} did not enable {PACKAGE} ({result})")
    return importlib.import_module(f"{PACKAGE}.api")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, required=True, help="the built extension zip")
    parser.add_argument("--worker-python", type=Path, required=True, help="the worker's Python (with torch)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--checkpoint", type=Path, help="a model checkpoint (default: see the module docstring)")
    args = parser.parse_args(argv)
    model = pick_model(override=args.checkpoint)
    user = tempfile.mkdtemp(prefix="mvdust3r-demo-blender-")
    atexit.register(shutil.rmtree, user, True)   # the installed copy goes when the demo ends
    os.environ["BLENDER_USER_RESOURCES"] = user  # before bpy is imported: nothing goes to ~/.config
    started = time.perf_counter()
    import bpy  # noqa: F401

    with blender_quiet():
        api = install(args.zip)
    print(f"  {'install the extension':<28} {time.perf_counter() - started:6.1f} s", flush=True)
    try:
        run_demo(api, model, args.worker_python, args.out.absolute())
    finally:
        importlib.import_module(f"{PACKAGE}.run").SESSION.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
