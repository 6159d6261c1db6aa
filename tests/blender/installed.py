"""What Blender tests share about the extension under test: its installed package name, the repo
root, its modules, and the worker Python (the test runtime with torch). No bpy import here, so the
conftest can use it before ``BLENDER_USER_RESOURCES`` is set."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bl_ext.user_default.mvdust3r_blender"


def module(name: str) -> ModuleType:
    """A module of the INSTALLED extension (not the source tree)."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def worker_python() -> str:
    """``$MVDUST3R_WORKER_PYTHON`` (set by build.py) or the repo's engine venv; fails loudly if missing."""
    python = os.environ.get("MVDUST3R_WORKER_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    assert Path(python).is_file(), f"the worker Python {python} is missing: run `python build.py setup`"
    return python


def build_script(module_name: str = "mvdust3r_build_script") -> ModuleType:
    """build.py as a module (by file path: a ``build/`` folder or a pip ``build`` must not shadow it)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # dataclasses look their module up while the file executes
    spec.loader.exec_module(build)
    return build


def poll_until_idle(timeout: float = 60.0) -> None:
    """What the timer does in Blender: call the set-up operators' poll_tasks until it stops asking
    to be called (timers never fire in module-mode bpy)."""
    poll_tasks = module("operators_setup").poll_tasks
    deadline = time.monotonic() + timeout
    interval = poll_tasks()
    while interval is not None:
        assert time.monotonic() < deadline, "the set-up task did not finish"
        time.sleep(interval)
        interval = poll_tasks()
