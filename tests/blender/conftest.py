"""Fixtures for the Blender tests: real bpy (headless), the extension built and installed from its zip.

Blender's user folders go to a temporary directory set BEFORE ``import bpy`` (else bpy writes into
~/.config/blender). The extension zip is built once per session by build.py's own
``build_extension`` (Blender's validator and builder), installed into the ``user_default`` repository
and enabled; tests exercise that INSTALLED copy (``bl_ext.user_default.mvdust3r_blender``), never the
source tree. Every test starts from an empty factory scene with the extension enabled.

Fixtures:
- ``extension_zips`` (session): ``{platform: zip}`` as build.py builds them, one per platform.
- ``extension_zip`` (session): the linux-x64 zip (with its bundled uv), the one the tests install.
- ``ext`` (session): the installed extension's top-level module.
- ``make_bundle``: a factory for small bundles whose points are consistent with their cameras
  (instances of the installed ``bl_ext.user_default.mvdust3r_blender.core.bundle.Bundle``).
"""
from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pytest

_USER_RESOURCES = tempfile.mkdtemp(prefix="mvd-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES
atexit.register(shutil.rmtree, _USER_RESOURCES, True)

import bpy  # noqa: E402  (must come after BLENDER_USER_RESOURCES)
from installed import PACKAGE, build_script, worker_python
from tests.helpers.cameras import look_at


@pytest.fixture(scope="session")
def extension_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the extension zips with build.py (in a private folder, so parallel sessions don't race)."""
    series = os.environ.get("MVDUST3R_BLENDER_SERIES")
    running = "{}.{}".format(*bpy.app.version[:2])
    if series and series != running:
        raise RuntimeError(f"MVDUST3R_BLENDER_SERIES={series} but this interpreter runs bpy {running}")
    work = tmp_path_factory.mktemp("extension")
    try:
        return dict(build_script().build_extension(stage=work / "stage", out_dir=work / "dist"))
    except SystemExit as exc:  # build.py reports failures by exiting; a fixture must raise instead
        raise RuntimeError(f"building the extension failed: {exc}") from None


@pytest.fixture(scope="session")
def extension_zip(extension_zips: dict[str, Path]) -> Path:
    """The linux-x64 zip: this machine's platform, so Blender installs it and unpacks its uv."""
    return extension_zips["linux-x64"]


@pytest.fixture(scope="session")
def ext(extension_zip: Path) -> ModuleType:
    """Install + enable the zip in the temporary user repository; the installed package module."""
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo="user_default", enable_on_install=True)
    if result != {"FINISHED"} or PACKAGE not in bpy.context.preferences.addons:
        raise RuntimeError(f"installing {extension_zip} did not enable {PACKAGE} (result {result})")
    return sys.modules[PACKAGE]


@pytest.fixture
def configured(ext: ModuleType, golden: Path) -> Iterator[Any]:
    """The add-on's preferences set for a real run: the test runtime (an existing Python with torch),
    the tiny golden MV-DUSt3R checkpoint (random weights: shapes, not quality), the CPU. Yields the
    preferences; the session's worker is shut down afterwards."""
    checkpoint = golden / "mvd_reduced_ckpt.pth"
    assert checkpoint.is_file(), f"golden checkpoint {checkpoint} is missing"
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = worker_python()
    prefs.checkpoint = "LOCAL"
    prefs.checkpoint_path = str(checkpoint)
    prefs.device = "cpu"
    yield prefs
    sys.modules[f"{PACKAGE}.session"].SESSION.shutdown()


@pytest.fixture(autouse=True)
def factory_scene(ext: ModuleType) -> None:
    """An empty factory scene and factory preferences before every test, the extension enabled.

    ``read_factory_settings`` also resets the preferences, which disables add-ons: re-enable ours
    (the already-imported module is reused, so class identities stay the same across tests).
    """
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if PACKAGE not in bpy.context.preferences.addons:
        bpy.ops.preferences.addon_enable(module=PACKAGE)
    if PACKAGE not in bpy.context.preferences.addons:
        raise RuntimeError(f"could not re-enable {PACKAGE} after the factory reset")


def grid_pixels(crop_box: Sequence[float], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Photo-pixel centres (u, v), each [h,w], of the network grid inside `crop_box` (bundle convention)."""
    h, w = grid
    x0, y0, x1, y1 = crop_box
    u = x0 + (np.arange(w) + 0.5) * (x1 - x0) / w
    v = y0 + (np.arange(h) + 0.5) * (y1 - y0) / h
    return np.meshgrid(u, v)


@pytest.fixture
def make_bundle(ext: ModuleType, tmp_path: Path) -> Callable[..., Any]:
    """Factory for small, self-consistent bundles (``Bundle`` of the INSTALLED extension).

    ``make_bundle(photo_sizes=((96, 64), (64, 96), (80, 80)), grid=(12, 16), fy_over_fx=(1.0, 1.15, 0.9),
    principal_offset=((0.1, -0.08), ...), gaussians=True, write_photos=True, seed=0)``

    View k has a photo of ``photo_sizes[k]`` = (W,H) pixels, intrinsics with fx ≈ 0.9·max(W,H), the
    given fy/fx ratio and principal point (W/2 + ox·W, H/2 + oy·H), and a crop box of the grid's
    aspect inside the photo. View 0's camera is the world frame (identity); the others look at the
    scene centre (0,0,3) from around it. Every grid pixel's point is the back-projection of its photo
    pixel centre at a random depth through K and cam2world, so it projects exactly onto that pixel.
    Photos are written as PNG files under the test's tmp_path (or only named, with ``write_photos=False``).
    """
    Bundle = importlib.import_module(f"{ext.__name__}.core.bundle").Bundle

    def build(photo_sizes: Sequence[tuple[int, int]] = ((96, 64), (64, 96), (80, 80)),
              grid: tuple[int, int] = (12, 16),
              fy_over_fx: Optional[Sequence[float]] = None,
              principal_offset: Optional[Sequence[tuple[float, float]]] = None,
              gaussians: bool = True, write_photos: bool = True, seed: int = 0) -> Any:
        rng = np.random.default_rng(seed)
        n = len(photo_sizes)
        h, w = grid
        ratios = fy_over_fx if fy_over_fx is not None else [(1.0, 1.15, 0.9)[k % 3] for k in range(n)]
        offsets = principal_offset if principal_offset is not None else [
            ((0.1, -0.08), (-0.12, 0.05), (0.0, 0.15))[k % 3] for k in range(n)]
        centre = np.array([0.0, 0.0, 3.0])
        intrinsics = np.zeros((n, 3, 3))
        cam2world = np.zeros((n, 4, 4))
        crop_box = np.zeros((n, 4))
        pts3d = np.zeros((n, h, w, 3))
        for k, (W, H) in enumerate(photo_sizes):
            fx = 0.9 * max(W, H) * (1.0 + 0.05 * k)
            fy = fx * ratios[k]
            cx, cy = W / 2 + offsets[k][0] * W, H / 2 + offsets[k][1] * H
            intrinsics[k] = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
            if k == 0:
                cam2world[k] = np.eye(4)
            else:
                angle = 2 * np.pi * k / n
                position = centre + 3.0 * np.array([np.sin(angle), -0.3 * rng.random(), -np.cos(angle)])
                cam2world[k] = look_at(position, centre + rng.normal(0, 0.1, 3), up=np.array([0.0, 1.0, 0.0]),
                                       roll=rng.normal(0, 0.1))
            scale = 0.9 * min(W / w, H / h)  # crop of the grid's aspect, slightly off centre
            x0 = (W - scale * w) * rng.uniform(0.3, 0.7)
            y0 = (H - scale * h) * rng.uniform(0.3, 0.7)
            crop_box[k] = [x0, y0, x0 + scale * w, y0 + scale * h]
            u, v = grid_pixels(crop_box[k], grid)
            depth = rng.uniform(2.5, 3.5, size=(h, w))
            cam = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1)
            pts3d[k] = cam @ cam2world[k][:3, :3].T + cam2world[k][:3, 3]
        images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
        photo_dir = Path(tempfile.mkdtemp(dir=tmp_path, prefix="photos-"))
        photo_paths = [str(photo_dir / f"view_{k:02d}.png") for k in range(n)]
        if write_photos:
            from PIL import Image

            for k, (W, H) in enumerate(photo_sizes):
                pixels = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(photo_paths[k])
        kwargs: dict[str, Any] = {}
        if gaussians:
            quat = rng.normal(size=(n, h, w, 4))
            quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
            quat *= np.where(quat[..., :1] < 0, -1.0, 1.0)
            kwargs = dict(
                gaussian_rotation=quat.astype(np.float32),
                gaussian_scale=rng.uniform(0.005, 0.03, size=(n, h, w, 3)).astype(np.float32),
                gaussian_opacity=rng.uniform(0.05, 0.99, size=(n, h, w)).astype(np.float32),
                gaussian_rgb=(images / 255.0).astype(np.float32),
            )
        bundle = Bundle(
            images=images, pts3d=pts3d.astype(np.float32),
            conf=(1.0 + rng.exponential(2.0, size=(n, h, w))).astype(np.float32),
            intrinsics=intrinsics.astype(np.float32), cam2world=cam2world.astype(np.float32),
            photo_size=np.array(photo_sizes, dtype=np.int32), crop_box=crop_box.astype(np.float32),
            photo_paths=photo_paths, meta={"model": "test-made", "seed": seed}, **kwargs)
        bundle.validate("make_bundle")
        return bundle

    return build
