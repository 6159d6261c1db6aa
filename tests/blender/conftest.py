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
from typing import Any, Callable, Iterator

import pytest

_USER_RESOURCES = tempfile.mkdtemp(prefix="mvd-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES
atexit.register(shutil.rmtree, _USER_RESOURCES, True)

import bpy  # noqa: E402  (must come after BLENDER_USER_RESOURCES)
from installed import PACKAGE, build_script, worker_python
from tests.helpers import bundles


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


@pytest.fixture
def make_bundle(ext: ModuleType, tmp_path: Path) -> Callable[..., Any]:
    """Factory for small, self-consistent bundles (``Bundle`` of the INSTALLED extension):
    ``tests.helpers.bundles.make_bundle`` with its keywords (photo sizes, grid, fy/fx, principal
    point, Gaussians, seed), the photos in a fresh folder under the test's tmp_path, written as PNG
    files unless ``write_photos=False`` (then only named)."""
    Bundle = importlib.import_module(f"{ext.__name__}.core.bundle").Bundle

    def build(*args: Any, write_photos: bool = True, **options: Any) -> Any:
        photo_dir = Path(tempfile.mkdtemp(dir=tmp_path, prefix="photos-"))
        return bundles.make_bundle(Bundle, *args, photo_dir=photo_dir, write_photos=write_photos, **options)

    return build
