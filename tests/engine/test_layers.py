"""The rooms' import rules (docs/architecture.md), checked on the real modules in a fresh interpreter.

The interpreter is the worker's runtime, which HAS torch: an accidental ``import torch`` in the core
would succeed there, and so is caught here, not only where torch is missing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_IMPORT_ALL = """
import importlib, pkgutil, sys
import mvdust3r_blender.{package} as package
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names), " ".join(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def imported(package: str, forbidden: tuple[str, ...]) -> tuple[int, list[str]]:
    """(modules imported, forbidden modules that came with them) for every module under `package`."""
    code = _IMPORT_ALL.format(package=package, forbidden=forbidden)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, *found = done.stdout.split()
    return int(count), found


def test_the_core_imports_neither_bpy_nor_torch() -> None:
    count, found = imported("core", ("bpy", "torch", "cv2", "PIL", "safetensors"))
    assert count >= 12 and found == [], f"the core pulled in {found}"


def test_the_engine_never_imports_bpy() -> None:
    count, found = imported("engine", ("bpy",))
    assert count >= 15 and found == [], f"the engine pulled in {found}"
