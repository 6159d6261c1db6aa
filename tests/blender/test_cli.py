"""The ``mvdust3r`` command line, called as Blender would (``main(argv) -> int``; the bpy module
cannot run ``blender -c``): help, usage errors, a batch with a broken scene (exit code 1, one worker,
resume), one reconstruction into a .blend; and the command's registration with Blender."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import bpy
import pytest

from installed import PACKAGE, module, worker_python
from scripting_setup import broken_scene, scene_folder


@pytest.fixture
def cli(ext: ModuleType, golden: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """main() with the golden checkpoint given on the command line (random weights), on the CPU."""
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    main = module("cli").main
    settings = ["--checkpoint", str(golden / "mvd_reduced_ckpt.pth"), "--device", "cpu"]
    yield lambda *argv: main([*argv, *settings])
    module("session").SESSION.shutdown()


def test_help_and_usage_errors(ext: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    main = module("cli").main
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "blender -b -c mvdust3r" in text and "batch" in text and "reconstruct" in text
    assert main(["batch", "--help"]) == 0
    assert "--out DIR" in capsys.readouterr().out
    assert main(["batch", "somewhere"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert main(["reconstruct", "a.png", "b.png", "--out", "x.blend", "--export", "obj"]) == 2
    assert "unknown export format 'obj'" in capsys.readouterr().err
    assert main(["reconstruct", "a.png", "b.png", "--out", "x.blend", "--pose-drop-percent", "abc"]) == 2
    assert main(["reconstruct", "a.png", "b.png", "--out", "x.blend", "--precision", "half"]) == 2
    assert "invalid choice: 'half'" in capsys.readouterr().err
    assert main(["reconstruct", "--help"]) == 0
    assert "--precision {auto,exact,fast}" in capsys.readouterr().out
    assert main([]) == 2


def test_batch_with_a_broken_scene(cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shoots = tmp_path / "shoots"
    folders = [scene_folder(shoots / "kitchen", 3), broken_scene(shoots / "garage"),
               scene_folder(shoots / "attic", 3, first=3)]
    out = tmp_path / "out"
    assert cli("batch", *map(str, folders), "--out", str(out), "--export", "ply") == 1
    err = capsys.readouterr().err
    assert "garage" in err and "view_9.png" in err and "2 done, 0 skipped, 1 failed" in err
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in ("kitchen", "attic")}
    assert records["kitchen"]["worker_pid"] == records["attic"]["worker_pid"]  # one worker for the batch
    assert not records["kitchen"]["model_reused"] and records["attic"]["model_reused"]
    for name in records:
        assert (out / f"{name}.blend").is_file() and (out / name / "points.ply").is_file()
    assert not (out / "garage.blend").exists() and not (out / "garage.json").exists()
    assert module("session").SESSION.client is None  # the command stops its worker when it ends

    assert cli("batch", *map(str, folders), "--out", str(out), "--export", "ply") == 1
    err = capsys.readouterr().err
    assert "kitchen: already done, skipped" in err and "attic: already done, skipped" in err
    assert "0 done, 2 skipped, 1 failed" in err
    assert cli("batch", str(folders[0]), str(folders[2]), "--out", str(out), "--export", "ply") == 0


def test_reconstruct_into_a_blend(cli: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = sorted(scene_folder(tmp_path / "room", 3).iterdir())
    target = tmp_path / "results" / "room.blend"
    assert cli("reconstruct", *map(str, photos), "--out", str(target), "--export", "glb", "--no-gaussians") == 0
    assert (tmp_path / "results" / "room" / "scene.glb").is_file()
    bpy.ops.wm.open_mainfile(filepath=str(target))
    assert sorted(o.type for o in bpy.data.objects) == ["CAMERA"] * 3 + ["MESH"]
    assert "room" in bpy.data.collections and bpy.context.scene.camera is not None
    # a folder works as well; a bad target or input is an error with exit code 1 or 2
    assert cli("reconstruct", str(tmp_path / "room"), "--out", str(tmp_path / "again.blend")) == 0
    assert cli("reconstruct", str(tmp_path / "room"), "--out", str(tmp_path / "x.obj")) == 2
    assert cli("reconstruct", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.blend")) == 1
    assert "mvdust3r: error: 'nowhere" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    assert not (tmp_path / "y.blend").exists()


def test_the_command_is_registered_with_blender(ext: ModuleType) -> None:
    cli = module("cli")
    assert cli._handle is not None  # register() ran register_cli_command("mvdust3r", main)
    bpy.ops.preferences.addon_disable(module=PACKAGE)
    assert cli._handle is None
    bpy.ops.preferences.addon_enable(module=PACKAGE)
    assert cli._handle is not None


def test_export_takes_commas_and_spaces_alike(ext: ModuleType) -> None:
    """``--export ply,glb`` and ``--export ply glb`` mean the same in this command
    line, as in the engine's (both use core.options.add_arguments and core.exports.parse_formats)."""
    parser = module("cli").parser()
    parse_formats = module("core.exports").parse_formats
    spellings = (["--export", "ply,glb"], ["--export", "ply", "glb"], ["--export", "ply,", "glb", "ply"])
    for command in ("reconstruct", "batch"):
        first = "a.png" if command == "reconstruct" else "folder"
        for spelling in spellings:
            args = parser.parse_args([command, first, "--out", "x.blend", *spelling])
            assert parse_formats(args.export) == ["ply", "glb"], (command, spelling)
