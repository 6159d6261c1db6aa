"""Issue 23: photos that load but cannot help are said (``meta.photo_warnings``), byte-identical
copies are left out, HEIC files in a folder are named, and each photo's EXIF orientation reaches
the bundle (``meta.photo_orientation``) with a pixel rule that matches Pillow's. Real files, the
real pipeline with the synthetic network stand-in."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from mvdust3r_blender.core.options import ReconstructOptions
from mvdust3r_blender.core.photos import unsupported_photos, upright
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.errors import InputError
from mvdust3r_blender.engine.images import load_photo
from mvdust3r_blender.engine.photo_checks import photo_warnings
from mvdust3r_blender.engine.pipeline import reconstruct
from tests.helpers.synthetic_scenes import SceneNetwork, make_scene, write_index_photos

ROOT = Path(__file__).resolve().parents[2]
MVD = ModelConfig(img_size=(32, 32))
SIZE = (32, 32)


def _warnings_of(path: Path, focal: str = "auto") -> list[str]:
    return [w.message for w in photo_warnings([load_photo(path, SIZE)], SIZE, focal)]


def _noise(path: Path, size: tuple[int, int], exif: Image.Exif | None = None) -> Path:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    image.save(path, exif=exif) if exif is not None else image.save(path)
    return path


def test_a_good_photo_has_no_warning(tmp_path: Path) -> None:
    assert _warnings_of(_noise(tmp_path / "ok.png", (64, 48))) == []


def test_a_tiny_photo_is_said(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (120, 60, 30)).save(tmp_path / "dot.png")
    assert _warnings_of(tmp_path / "dot.png") == [
        "dot.png is only 1×1 pixels: the network sees it enlarged to 32×32, so its points and camera are unreliable"]


def test_an_extreme_strip_is_said(tmp_path: Path) -> None:
    (message,) = _warnings_of(_noise(tmp_path / "strip.png", (20000, 100)))
    assert message == "strip.png is 20000×100 pixels (a 200:1 strip): the network sees only its centre square, 0.5 % of it"


@pytest.mark.parametrize("level, what", [(0, "black"), (255, "white"), (3, "black")])
def test_black_and_white_photos_are_said(tmp_path: Path, level: int, what: str) -> None:
    Image.new("RGB", (64, 48), (level, level, level)).save(tmp_path / "blank.png")
    assert _warnings_of(tmp_path / "blank.png") == [
        f"blank.png is blank (all {what}): nothing in it can place its camera, whatever pose it gets"]


def test_a_dark_photo_with_content_is_not_blank(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 30, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "night.png")
    assert _warnings_of(tmp_path / "night.png") == []


def _exif(**tags: float) -> Image.Exif:
    exif = Image.Exif()
    details = exif.get_ifd(0x8769)
    for tag, value in tags.items():
        details[{"focal_mm": 0x920A, "focal_35mm": 0xA405, "per_unit": 0xA20E, "unit": 0xA210}[tag]] = value
    return exif


@pytest.mark.parametrize("tags, said", [
    ({"focal_35mm": 1}, "its EXIF focal length 1 mm (35 mm equivalent, a 175° diagonal field of view) is implausible"),
    ({"focal_35mm": 5000}, "its EXIF focal length 5000 mm (35 mm equivalent, a 0.496° diagonal field of view)"),
    ({"focal_mm": 0.1}, "its EXIF focal length 0.1 mm is implausible"),
    ({"focal_mm": 5000}, "its EXIF focal length 5000 mm is implausible"),
    ({"focal_mm": 0.1, "per_unit": 40, "unit": 3}, "its EXIF focal length 0.1 mm is implausible"),
])
def test_an_absurd_exif_focal_is_ignored_with_a_word(tmp_path: Path, tags: dict[str, float], said: str) -> None:
    path = _noise(tmp_path / "exif.jpg", (64, 48), _exif(**tags))
    (message,) = _warnings_of(path)
    assert said in message and message.endswith("and was ignored; the focal is estimated from the points")
    assert _warnings_of(path, focal="estimate") == []  # nothing was ignored: EXIF was not asked


def test_a_plausible_exif_focal_has_no_warning(tmp_path: Path) -> None:
    assert _warnings_of(_noise(tmp_path / "exif.jpg", (64, 48), _exif(focal_35mm=26))) == []
    assert _warnings_of(_noise(tmp_path / "lens.jpg", (64, 48), _exif(focal_mm=4.2))) == []  # no sensor size: unknown


SIZES = [(96, 72), (64, 64), (50, 90), (120, 80), (70, 70)]


@pytest.mark.parametrize("reference_view", [None, 5, 1])
def test_byte_identical_photos_are_left_out_with_a_warning(tmp_path: Path, reference_view: int | None) -> None:
    photos = write_index_photos(tmp_path / "photos", SIZES)
    copy = tmp_path / "photos" / "zz_copy_of_1.png"
    shutil.copyfile(photos[1], copy)
    scene = make_scene(len(SIZES), 32, 32, seed=11, noise=0.001)
    bundle = reconstruct([*photos, copy], SceneNetwork(scene, MVD), ReconstructOptions(reference_view=reference_view))
    assert bundle.num_views == 5 and bundle.photo_paths == [str(p) for p in photos]
    assert bundle.meta["photo_warnings"] == [{"views": [], "message": "zz_copy_of_1.png is byte-for-byte the same "
                                              "file as photo_01.png; it was left out (one view per photo)"}]
    assert bundle.meta["reference_view"] == {None: 0, 5: 1, 1: 1}[reference_view]  # the copy stands for its twin


def test_too_few_different_photos_is_an_input_error(tmp_path: Path) -> None:
    photos = write_index_photos(tmp_path / "photos", SIZES[:1])
    copy = tmp_path / "photos" / "again.png"
    shutil.copyfile(photos[0], copy)
    with pytest.raises(InputError, match="only 1 different photos remain once the byte-identical copies are left out"):
        reconstruct([photos[0], copy], SceneNetwork(make_scene(2, 32, 32, seed=1), MVD))


# ---------------------------------------------------------------------------------------------
# orientation

@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_matches_pillows_exif_transpose(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened))
    np.testing.assert_array_equal(upright(stored, orientation), expected)
    assert load_photo(tmp_path / "o.png", SIZE).orientation == orientation


def test_the_bundle_records_each_photos_orientation(tmp_path: Path) -> None:
    photos = write_index_photos(tmp_path / "photos", SIZES)
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(photos[2]) as image:
        turned = image.transpose(Image.Transpose.TRANSPOSE)  # stored sideways, EXIF turns it back
    turned.save(photos[2], exif=exif)
    bundle = reconstruct(photos, SceneNetwork(make_scene(len(SIZES), 32, 32, seed=11), MVD))
    assert bundle.meta["photo_orientation"] == [1, 1, 6, 1, 1]
    assert bundle.photo_size[2].tolist() == [50, 90]


# ---------------------------------------------------------------------------------------------
# HEIC in a folder

def test_heic_files_in_a_folder_are_named_by_the_engine_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "shoot"
    write_index_photos(folder, SIZES[:2])
    (folder / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (folder / "notes.txt").write_text("not a photo")
    assert unsupported_photos(folder) == [folder / "IMG_0001.HEIC"]
    run = subprocess.run([sys.executable, "-m", "mvdust3r_blender.engine", "reconstruct", str(folder),
                          "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (f"warning: {folder}: skipped 1 photo in a format this add-on cannot read (HEIC): IMG_0001.HEIC; "
            "convert them to JPEG or PNG to use them") in run.stderr


def test_a_photo_name_longer_than_the_file_system_allows_is_named(tmp_path: Path) -> None:
    from mvdust3r_blender.engine.images import load_photos

    long = tmp_path / ("x" * 300 + ".png")
    photos = write_index_photos(tmp_path / "photos", SIZES[:2])
    with pytest.raises(InputError, match=r"1 of 3 photos cannot be read: .*xxx\.png: cannot be opened \(File name too long\)"):
        load_photos([*photos, long], SIZE)
