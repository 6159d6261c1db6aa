"""What the scripting tests share: scene folders made from the shipped sample photos, and a broken scene."""
from __future__ import annotations

import shutil
from pathlib import Path

from installed import ROOT

SAMPLES = ROOT / "samples" / "room"


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
