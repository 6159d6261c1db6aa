"""Where the panel keeps the bundles of its runs, so that File › Import, Export… and Save Bundle…
work on them later (a run used to delete its bundle once imported).

The folder the preferences name (Keep Results In), else ``<blend name> MV-DUSt3R`` beside the saved
.blend, else Blender's temporary folder, which Blender empties when it quits: the Result panel then
says to save the bundle.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import bpy

from . import preferences
from .core.photos import display_name


def folder() -> Path:
    """Where the next run's bundle goes (see the module doc)."""
    chosen = str(getattr(preferences.get(), "bundle_folder", "") or "")
    if chosen:
        return Path(bpy.path.abspath(chosen))
    if bpy.data.filepath:
        blend = Path(bpy.data.filepath)
        return blend.parent / f"{blend.stem} MV-DUSt3R"
    return Path(bpy.app.tempdir) / "mvdust3r-results"


def is_temporary(path: str) -> bool:
    """True for a bundle in Blender's temporary folder (gone when Blender quits)."""
    return bool(path) and Path(path).resolve().is_relative_to(Path(bpy.app.tempdir).resolve())


def keep(bundle: Path, photos: Sequence[str]) -> Path:
    """Move a finished run's `bundle` to :func:`folder`, named after the photos' folder and the time."""
    target_dir = folder()
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = (display_name(Path(photos[0]).parent.name) if photos else "") or "reconstruction"
    target = target_dir / f"{stem} {time.strftime('%Y-%m-%d %H%M%S')}.npz"
    counter = 1
    while target.exists():
        counter += 1
        target = target.with_name(f"{target.stem.rsplit(' #', 1)[0]} #{counter}.npz")
    shutil.move(str(bundle), target)
    return target
