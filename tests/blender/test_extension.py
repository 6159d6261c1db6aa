"""The extension package: Blender's builder accepts it, the zip holds the package and nothing else,
and the installed copy registers and unregisters cleanly."""
from __future__ import annotations

import hashlib
import importlib
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from installed import PACKAGE, ROOT, build_script


def test_zip_holds_the_package_at_top_level(extension_zip: Path) -> None:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert extension_zip.name == f"mvdust3r_blender-{manifest['version']}-linux_x64.zip"
    names = zipfile.ZipFile(extension_zip).namelist()
    assert zipfile.ZipFile(extension_zip).read("LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert b"GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_bytes()[:200]
    assert "blender_manifest.toml" in names and "__init__.py" in names and "core/bundle.py" in names
    assert "engine/__init__.py" in names  # the worker starts from the installed files
    # the built-in model, byte for byte the committed one
    assert zipfile.ZipFile(extension_zip).read("models/default.safetensors") == \
        (ROOT / "models" / "default.safetensors").read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(("tests/", "bench/"))]


def test_one_zip_per_platform_each_with_its_own_uv(extension_zips: dict[str, Path]) -> None:
    """Blender's --split-platforms: every platform's zip carries exactly its uv wheel, whose sha256
    is the one build.py pins, and its manifest names that platform alone."""
    build = build_script("mvdust3r_build_script_platforms")
    assert set(extension_zips) == {"linux-x64", "windows-x64", "macos-arm64", "macos-x64"}
    tags = {"linux-x64": "manylinux_2_17_x86_64", "windows-x64": "win_amd64", "macos-arm64": "macosx_11_0_arm64",
            "macos-x64": "macosx_10_12_x86_64"}
    for platform, path in extension_zips.items():
        with zipfile.ZipFile(path) as z:
            wheels = [n for n in z.namelist() if n.endswith(".whl")]
            assert len(wheels) == 1 and tags[platform] in wheels[0], (platform, wheels)
            assert hashlib.sha256(z.read(wheels[0])).hexdigest() == build.BUNDLED_WHEELS[Path(wheels[0]).name]
            generated = tomllib.loads(z.read("blender_manifest.toml").decode())["build"]["generated"]
            assert generated["platforms"] == [platform] and generated["wheels"] == [f"./{wheels[0]}"]
            assert "LICENSE" in z.namelist()


def test_manifest_declares_what_blender_needs() -> None:
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["id"] == "mvdust3r_blender" and manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) >= {"files", "network"}
    assert manifest["website"].endswith("/docs") and "facebookresearch" not in manifest["website"]


def test_installed_extension_is_enabled(ext: ModuleType) -> None:
    assert ext.__name__ == PACKAGE
    assert PACKAGE in bpy.context.preferences.addons
    assert Path(ext.__file__).parent != ROOT / "mvdust3r_blender"  # the installed copy, not the source tree
    bundle_module = importlib.import_module(f"{PACKAGE}.core.bundle")
    assert Path(bundle_module.__file__).parent.parent == Path(ext.__file__).parent


def test_make_bundle_points_project_onto_their_pixels(make_bundle) -> None:
    """The shared bundle factory is itself consistent: K·(world→camera) of each point = its grid pixel."""
    bundle = make_bundle(photo_sizes=((120, 80), (60, 90)), grid=(6, 9))
    h, w = bundle.grid_size
    for k in range(bundle.num_views):
        w2c = np.linalg.inv(bundle.cam2world[k].astype(np.float64))
        cam = bundle.pts3d[k].reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
        pix = cam @ bundle.intrinsics[k].astype(np.float64).T
        uv = pix[:, :2] / pix[:, 2:]
        x0, y0, x1, y1 = bundle.crop_box[k]
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        expected = np.stack([x0 + (jj + 0.5) * (x1 - x0) / w, y0 + (ii + 0.5) * (y1 - y0) / h], -1).reshape(-1, 2)
        assert np.abs(uv - expected).max() < 1e-3
        assert Path(bundle.photo_paths[k]).is_file()


def test_operators_menu_and_file_handler_registered(ext: ModuleType) -> None:
    assert hasattr(bpy.types, "IMPORT_SCENE_OT_mvdust3r_bundle")
    assert hasattr(bpy.types, "MVDUST3R_BLENDER_OT_set_render_camera")
    assert hasattr(bpy.types, "MVDUST3R_FH_bundle")
    handler = bpy.types.MVDUST3R_FH_bundle
    assert handler.bl_import_operator == "import_scene.mvdust3r_bundle" and handler.bl_file_extensions == ".npz"
    menu_functions = [f.__name__ for f in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()]
    assert "menu_import" in menu_functions


def test_disable_and_enable_again(ext: ModuleType) -> None:
    """Unregistering removes every class and menu entry; enabling again restores them (no leftovers)."""
    bpy.ops.preferences.addon_disable(module=PACKAGE)
    try:
        assert not hasattr(bpy.types, "IMPORT_SCENE_OT_mvdust3r_bundle")
        assert not hasattr(bpy.types, "MVDUST3R_FH_bundle")
        assert "menu_import" not in [f.__name__ for f in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()]
    finally:
        bpy.ops.preferences.addon_enable(module=PACKAGE)
    assert hasattr(bpy.types, "IMPORT_SCENE_OT_mvdust3r_bundle")


def test_operators_that_change_data_are_undoable(ext: ModuleType) -> None:
    """Undo cannot run headless (ed.undo's poll needs a window), so check the operators declare it."""
    assert {"REGISTER", "UNDO", "PRESET"} <= set(bpy.types.IMPORT_SCENE_OT_mvdust3r_bundle.bl_options)
    assert {"REGISTER", "UNDO"} <= set(bpy.types.MVDUST3R_BLENDER_OT_set_render_camera.bl_options)


def test_build_fails_on_an_invalid_manifest(tmp_path: Path) -> None:
    """build.py's extension build stops on Blender's validation errors (a tagline ending in '.')."""
    build = build_script("mvdust3r_build_script_check")
    lines = (ROOT / "blender_manifest.toml").read_text().splitlines()
    bad = tmp_path / "blender_manifest.toml"
    bad.write_text("\n".join('tagline = "Ends with a full stop."' if line.startswith("tagline") else line
                             for line in lines) + "\n")
    with pytest.raises(SystemExit, match="does not validate"):
        build.build_extension(stage=tmp_path / "stage", out_dir=tmp_path / "dist", manifest_path=bad)
    assert not (tmp_path / "dist").exists()
