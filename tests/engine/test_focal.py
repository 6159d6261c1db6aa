"""The focal known before any point is seen: the `focal` option and EXIF (engine/focal.py)."""
from __future__ import annotations

import math

import pytest

from mvdust3r_blender.engine.focal import equivalent_focal_px, known_focal
from mvdust3r_blender.engine.images import PhotoCamera

PHONE = PhotoCamera("Maker", "Phone", focal_mm=4.25, focal_35mm=26.0, stored_size=(4032, 3024),
                    pixels_per_mm=1000 / 1.4)   # 1.4 µm pixels


def test_35mm_equivalence_is_by_the_diagonal():
    # a 36×24 mm frame of 3600×2400 pixels (100 px/mm) at 50 mm: F = 5000 px
    assert equivalent_focal_px(50.0, (3600, 2400)) == pytest.approx(5000.0)
    assert equivalent_focal_px(50.0, (2400, 3600)) == pytest.approx(5000.0)


def test_auto_prefers_exif_35mm_then_focal_length_with_the_sensor_then_estimates():
    size = (4032, 3024)
    focal, source = known_focal("auto", PHONE, size)
    assert source == "exif-35mm" and focal == pytest.approx(26.0 * 5040 / math.hypot(36, 24))
    no_35 = PhotoCamera("Maker", "Phone", 4.25, None, size, pixels_per_mm=1000 / 1.4)
    focal, source = known_focal("auto", no_35, size)
    assert source == "exif-sensor" and focal == pytest.approx(4.25 * 1000 / 1.4)
    assert known_focal("auto", PhotoCamera("Maker", "Phone", 4.25, None, size), size)[1] == "estimated"
    assert known_focal("auto", None, size)[1] == "estimated"
    # implausible EXIF (a 1 mm "35 mm equivalent": a 173° view) is not believed
    assert known_focal("auto", PhotoCamera(None, None, None, 1.0, size), size)[1] == "estimated"


def test_estimate_ignores_exif_and_a_number_overrides_it():
    focal, source = known_focal("estimate", PHONE, (4032, 3024))
    assert math.isnan(focal) and source == "estimated"
    focal, source = known_focal("35", PHONE, (4032, 3024))
    assert source == "option" and focal == pytest.approx(35.0 * 5040 / math.hypot(36, 24))
