"""What the scripting tests share: scene folders made from the shipped sample photos, a broken
scene, and the worker settings (the test runtime, the tiny golden checkpoint with random weights)."""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bl_ext.user_default.mvdust3r_blender"
SAMPLES = ROOT / "samples" / "room"


def module(name: str) -> ModuleType:
    """A module of the INSTALLED extension."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def worker_python() -> str:
    python = os.environ.get("MVDUST3R_WORKER_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
    assert Path(python).is_file(), f"the worker Python {python} is missing: run `python build.py setup`"
    return python


def scene_folder(folder: Path, views: int = 3, first: int = 0) -> Path:
    """`folder` holding `views` of the shipped sample photos (starting at view `first`)."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted(SAMPLES.glob("view_*.png"))
    assert len(photos) >= first + views, f"the sample photos in {SAMPLES} are missing (samples/make_samples.py)"
    for photo in photos[first:first + views]:
        shutil.copy2(photo, folder / photo.name)
    return folder


def broken_scene(folder: Path) -> Path:
    """A scene whose third photo is not an image (the worker refuses it, naming the file)."""
    scene_folder(folder, views=2)
    (folder / "view_9.png").write_bytes(b"this is not a PNG file")
    return folder
