"""The extension as the Blender benchmarks use it: built by build.py and installed, as the tests do.

Import this only after ``BLENDER_USER_RESOURCES`` is set (it imports bpy).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "bl_ext.user_default.mvdust3r_blender"


def install_extension(work: Path) -> None:
    """Build this machine's zip into `work` with build.py and install + enable it in the user repository."""
    spec = importlib.util.spec_from_file_location("mvdust3r_build_script", ROOT / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build
    spec.loader.exec_module(build)
    zip_path = build.build_extension(stage=work / "stage", out_dir=work / "dist")[build.host_platform()]
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
