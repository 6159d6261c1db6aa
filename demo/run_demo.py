"""The demo: the shipped sample photos → ``out/demo/demo.blend`` and a Cycles preview, through
the INSTALLED extension's public API in headless Blender (the bpy module).

The preview (``preview.png``, 1280×480 for the 4:3 samples) shows at a glance how close the
reconstruction came: on the left, two photos each beside the reconstructed Gaussians rendered
through the camera the reconstruction found for that photo (the first photo, and the one whose
camera turned furthest from it); on the right, the Gaussians and points seen from outside, above
and behind the cameras, with an orange marker at each reconstructed camera.

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
PANEL_SIZE = 320        # longest side of one preview panel (a photo or a render), pixels
PREVIEW_SAMPLES = 8
PREVIEW_LAYERS = 12     # Gaussians a ray passes through before it stops (Cycles' transparent bounces)
MARKER_COLOUR = (1.0, 0.45, 0.05, 1.0)  # the reconstructed cameras in the preview's outside view
MARKER_PIXELS = 5                       # their radius there, seen at the framed centre's distance
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
    """Render the preview (module docstring) with Cycles and write it to `path` as one PNG.

    Objects hidden for a render are restored afterwards; the temporary camera, markers and images
    are removed, so the open file is as the reconstruction left it."""
    import bpy
    import numpy as np

    imported = result.imported
    cameras = imported.cameras
    first = cameras[0]
    photo_w, photo_h = int(first["W"]), int(first["H"])
    scale = PANEL_SIZE / max(photo_w, photo_h)
    panel = (max(1, round(photo_h * scale)), max(1, round(photo_w * scale)))      # (height, width)
    rotations = [np.asarray(c.matrix_world, dtype=np.float64)[:3, :3] for c in cameras]
    turned = [float(np.degrees(np.arccos(np.clip((np.trace(rotations[0].T @ r) - 1) / 2, -1, 1)))) for r in rotations]
    second = cameras[int(np.argmax(turned))] if len(cameras) > 1 else first
    percent = max(1, min(100, round(100 * scale)))     # the photos' cameras render at the panel's size

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = PREVIEW_SAMPLES
    scene.cycles.transparent_max_bounces = PREVIEW_LAYERS
    scene.render.use_persistent_data = True            # one scene sync for the three renders
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"   # the photos' colours, not a film curve's
    saved_camera = scene.camera
    hidden = {obj: obj.hide_render for obj in scene.objects}
    made: list[Any] = []
    try:
        if imported.points is not None:
            imported.points.hide_render = True             # the cameras' views: the Gaussians alone
        tiles = []
        for camera in (first, second):
            tiles.append(_fit(_read_image(Path(camera["photo"])), panel))
            tiles.append(_fit(_render(scene, camera, path.with_name("preview-render.png"), percent=percent), panel))
        if imported.points is not None:
            imported.points.hide_render = hidden[imported.points]
        outside, made = _outside_camera(scene, result, panel)
        view = _render(scene, outside, path.with_name("preview-render.png"), size=(2 * panel[0], 2 * panel[1]))
        left = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
        _write_image(np.concatenate([left, _fit(view, (2 * panel[0], 2 * panel[1]))], axis=1), path)
    finally:
        path.with_name("preview-render.png").unlink(missing_ok=True)
        for obj, flag in hidden.items():
            obj.hide_render = flag
        scene.camera = saved_camera
        for obj in made:
            data = obj.data
            bpy.data.objects.remove(obj)
            if isinstance(data, bpy.types.Camera):
                bpy.data.cameras.remove(data)
            elif isinstance(data, bpy.types.Mesh):
                bpy.data.meshes.remove(data)
        marker = bpy.data.materials.get("Demo Preview Marker")
        if marker is not None:
            bpy.data.materials.remove(marker)
    if not path.is_file():
        raise RuntimeError(f"no preview was written at {path}")
    return path


def _render(scene: Any, camera: Any, path: Path, size: Optional[tuple[int, int]] = None, percent: int = 100) -> Any:
    """Render through `camera` (an imported one: its photo's resolution and pixel aspect at `percent`;
    else `size` = (h, w)) → float RGB [h,w,3]."""
    import bpy

    if size is None:
        importlib.import_module(PACKAGE + ".importers.cameras").set_render_camera(scene, camera)
        scene.render.resolution_percentage = percent
    else:
        scene.camera = camera
        scene.render.resolution_percentage = 100
        scene.render.resolution_y, scene.render.resolution_x = size
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not path.is_file():
        raise RuntimeError(f"Cycles wrote no image at {path}")
    return _read_image(path)


def _read_image(path: Path) -> Any:
    """An image file as float RGB [h,w,3] in [0,1], top row first (Blender's pixels start at the bottom)."""
    import bpy
    import numpy as np

    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1, :, :3]


def _fit(image: Any, size: tuple[int, int]) -> Any:
    """`image` [h,w,3] resampled (nearest pixel) to `size` = (h, w)."""
    import numpy as np

    rows = (np.arange(size[0]) * image.shape[0] / size[0]).astype(int)
    cols = (np.arange(size[1]) * image.shape[1] / size[1]).astype(int)
    return image[rows][:, cols]


def _write_image(rgb: Any, path: Path) -> None:
    """Float RGB [h,w,3] in [0,1], top row first → an 8-bit PNG (through a Blender image: no PIL needed)."""
    import bpy
    import numpy as np

    height, width = rgb.shape[:2]
    image = bpy.data.images.new("Demo Preview", width, height, alpha=False)
    try:
        rgba = np.concatenate([rgb[::-1], np.ones((height, width, 1), dtype=np.float32)], axis=2)
        image.pixels.foreach_set(rgba.astype(np.float32).ravel())
        image.filepath_raw = str(path)
        image.file_format = "PNG"
        image.save()
    finally:
        bpy.data.images.remove(image)


def _outside_camera(scene: Any, result: Any, panel: tuple[int, int]) -> tuple[Any, list[Any]]:
    """A camera above and behind the reconstructed cameras that frames them and the points' central
    90 %, and an orange ball at each reconstructed camera; returns (camera, everything made)."""
    import bpy
    import bmesh
    import numpy as np
    from mathutils import Matrix

    points = result.imported.points
    coords = np.empty(len(points.data.vertices) * 3, dtype=np.float32)
    points.data.vertices.foreach_get("co", coords)
    world = np.asarray(points.matrix_world, dtype=np.float64)
    xyz = coords.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    poses = np.array([np.asarray(c.matrix_world, dtype=np.float64) for c in result.imported.cameras])
    low = np.minimum(np.percentile(xyz, 5, axis=0), poses[:, :3, 3].min(axis=0))
    high = np.maximum(np.percentile(xyz, 95, axis=0), poses[:, :3, 3].max(axis=0))
    centre, radius = (low + high) / 2, max(float(np.linalg.norm(high - low)) / 2, 1e-6)
    axes = poses[:, :3, :3] / np.linalg.norm(poses[:, :3, :3], axis=1, keepdims=True)
    up = axes[0][:, 1]                                     # the first camera's image-up (Blender camera +Y)
    look = -axes[:, :, 2].mean(axis=0)                     # the cameras' mean viewing direction (−Z)
    look -= up * float(look @ up)
    look /= max(float(np.linalg.norm(look)), 1e-9)
    data = bpy.data.cameras.new("Demo Preview")
    data.sensor_fit, data.lens, data.sensor_width = "HORIZONTAL", 30.0, 36.0
    half_fov = math.atan(min(1.0, panel[0] / panel[1]) * data.sensor_width / (2 * data.lens))
    distance = radius / math.sin(half_fov) * 1.05
    direction = -look * math.cos(math.radians(35)) + up * math.sin(math.radians(35))   # behind, 35° up
    eye = centre + direction * distance
    forward = (centre - eye) / np.linalg.norm(centre - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(right, forward), -forward], axis=1)
    pose[:3, 3] = eye
    camera = bpy.data.objects.new("Demo Preview", data)
    camera.matrix_world = Matrix(pose.tolist())
    data.clip_end = distance + 4 * radius
    scene.collection.objects.link(camera)
    made = [camera]
    marker_radius = MARKER_PIXELS * distance * math.tan(half_fov) / panel[0]   # the view is 2·panel[0] high
    marker = bpy.data.materials.new("Demo Preview Marker")
    if bpy.app.version < (5, 0, 0):
        marker.use_nodes = True
    shader = marker.node_tree.nodes["Principled BSDF"]
    shader.inputs["Base Color"].default_value = shader.inputs["Emission Color"].default_value = MARKER_COLOUR
    shader.inputs["Emission Strength"].default_value = 1.0
    for k, pos in enumerate(poses[:, :3, 3]):
        mesh = bpy.data.meshes.new(f"Demo Preview Marker {k}")
        bm = bmesh.new()
        bmesh.ops.create_icosphere(bm, subdivisions=2, radius=marker_radius)
        bm.to_mesh(mesh)
        bm.free()
        mesh.materials.append(marker)
        obj = bpy.data.objects.new(mesh.name, mesh)
        obj.location = pos.tolist()
        scene.collection.objects.link(obj)
        made.append(obj)
    return camera, made


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
        importlib.import_module(f"{PACKAGE}.session").SESSION.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
