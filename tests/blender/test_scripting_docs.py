"""docs/scripting.md's examples, run as written against the installed extension.

The Python blocks run in order in one namespace; the first one defines the paths (PHOTOS, SHOOTS,
OUT, CHECKPOINT), which are replaced by this test's before the rest runs. The shell examples'
``blender -b -c mvdust3r ...`` lines run through ``cli.main`` with ``$SHOOTS`` and ``$OUT``
replaced and globs expanded as a shell would. The golden checkpoint has random weights."""
from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path
from typing import Any

import bpy
import pytest

from installed import PACKAGE, ROOT, module
from scripting_setup import scene_folder

DOC = ROOT / "docs" / "scripting.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)


def test_python_examples(configured: Any, tmp_path: Path) -> None:
    blocks = code_blocks("python")
    assert len(blocks) >= 6, f"{DOC} lost its Python examples"
    namespace: dict[str, Any] = {"__name__": "scripting_docs"}
    exec(compile(blocks[0], f"{DOC}:paths", "exec", dont_inherit=True), namespace)
    assert {"PHOTOS", "SHOOTS", "OUT", "CHECKPOINT"} <= set(namespace), "the first block must define the paths"
    shoots = tmp_path / "shoots"
    namespace.update(PHOTOS=str(scene_folder(shoots / "kitchen", 4)),
                     SHOOTS=[str(shoots / "kitchen"), str(scene_folder(shoots / "garage", 3, first=3))],
                     OUT=str(tmp_path / "out"), CHECKPOINT=configured.checkpoint_path)
    try:
        for k, block in enumerate(blocks[1:], 1):
            exec(compile(block, f"{DOC}:python block {k + 1}", "exec", dont_inherit=True), namespace)
    finally:
        operator = namespace.get("MYPIPELINE_OT_reconstruct_folder")
        if operator is not None and operator.is_registered:
            bpy.utils.unregister_class(operator)
    out = tmp_path / "out"
    # what the examples did
    assert namespace["report"].ok and {s.name for s in namespace["report"].scenes} == {"kitchen", "garage"}
    assert (out / "kitchen.blend").is_file() and (out / "garage" / "points.ply").is_file()
    assert set(namespace["result"].exports) == {"colmap", "glb"} and set(namespace["written"]) == {"ply", "gaussians"}
    assert (out / "kitchen" / "points.ply").is_file()
    assert (out / "kitchen" / "scene.glb").is_file() and (out / "kitchen" / "colmap").is_dir()
    assert namespace["mvd"].__name__ == f"{PACKAGE}.api"
    # the operator example added its collection to the (batch's last) open file
    assert "kitchen" in bpy.data.collections


def test_shell_examples(configured: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = code_blocks("sh")
    assert len(blocks) == 2, f"{DOC}: expected a block of variables, then the commands"
    variables = dict(pair.split("=", 1) for pair in shlex.split(blocks[0]))
    assert set(variables) == {"SHOOTS", "OUT"}
    shoots = tmp_path / "shoots"
    scene_folder(shoots / "kitchen", 3)
    scene_folder(shoots / "garage", 3, first=3)
    values = {"SHOOTS": str(shoots), "OUT": str(tmp_path / "out")}
    main = module("cli").main
    commands = [line for line in blocks[1].splitlines() if line.strip()]
    assert all(line.startswith("blender -b -c mvdust3r ") for line in commands)
    for line in commands:
        for name, value in values.items():
            line = line.replace(f'"${name}"', shlex.quote(value))
        words = []
        for word in shlex.split(line)[4:]:
            words += sorted(glob.glob(word)) if "*" in word else [word]
        assert main(words) == 0, f"{line}\n{capsys.readouterr().err}"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.blend")) == ["garage.blend", "kitchen-points.blend", "kitchen.blend"]
    assert (out / "kitchen" / "points.ply").is_file() and (out / "garage" / "scene.glb").is_file()
    bpy.ops.wm.open_mainfile(filepath=str(out / "kitchen-points.blend"))
    assert not [o for o in bpy.data.objects if o.name.endswith("Gaussians")]
