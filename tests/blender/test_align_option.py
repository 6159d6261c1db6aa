"""The ``align`` option from every face: the panel, the API (and so batches), ``blender -c mvdust3r``
and the preferences' default for scripts. Each face's run spec imports in the frame it names and has
the worker write the exports in the same frame (ReconstructOptions.align)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import bpy
import pytest
from installed import PACKAGE, module

from tests.helpers.photos import smooth_photos


def prefs() -> Any:
    return bpy.context.preferences.addons[PACKAGE].preferences


def test_the_preferences_offer_every_alignment_with_level_first(configured: Any) -> None:
    items = type(prefs()).bl_rna.properties["align"].enum_items
    assert [item.identifier for item in items] == ["level", "first_camera", "none"] and prefs().align == "level"
    assert all(len(item.description) > 20 for item in items)


def test_the_panels_align_reaches_the_import_and_the_exports(configured: Any, tmp_path: Path) -> None:
    shots = smooth_photos(tmp_path / "shoot", 3, size=(32, 24))
    assert bpy.ops.mvdust3r_blender.add_photos(directory=str(shots[0].parent) + os.sep,
                                               files=[{"name": p.name} for p in shots]) == {"FINISHED"}
    settings = bpy.context.scene.mvdust3r
    spec = module("run").panel_spec(bpy.context)
    assert spec.imports.align == spec.options.align == "level"      # the new default
    settings.align = "first_camera"
    spec = module("run").panel_spec(bpy.context)
    assert spec.imports.align == spec.options.align == "first_camera"


def test_the_api_takes_align_else_the_preference(configured: Any, tmp_path: Path) -> None:
    api_spec = module("reconstruction").api_spec
    shots = [str(p) for p in smooth_photos(tmp_path / "shoot", 3, size=(32, 24))]
    assert api_spec(shots).options.align == "level"
    prefs().align = "none"
    try:
        spec = api_spec(shots, exports=["ply"])
        assert spec.imports.align == spec.options.align == "none"
        assert api_spec(shots, align="first_camera").options.align == "first_camera"   # given beats preferred
    finally:
        prefs().align = "level"
    with pytest.raises(ValueError, match="align='sideways' is not an alignment"):
        api_spec(shots, align="sideways")


@pytest.mark.parametrize("given, expected", [([], "level"), (["--align", "none"], "none"),
                                             (["--align", "first_camera"], "first_camera")])
def test_the_command_line_takes_align_else_the_preference(configured: Any, tmp_path: Path, given: list[str],
                                                           expected: str) -> None:
    cli = module("cli")
    shots = [str(p) for p in smooth_photos(tmp_path / "shoot", 3, size=(32, 24))]
    args = cli.parser().parse_args(["reconstruct", *shots, "--out", str(tmp_path / "x.blend"), *given])
    spec = cli.arguments_spec(args, shots)
    assert spec.imports.align == spec.options.align == expected
    engine_options = module("core.options")
    parser = argparse.ArgumentParser()
    engine_options.add_arguments(parser, export_help="x")
    assert engine_options.options_from_arguments(parser.parse_args(given), gaussians=False).align == expected
