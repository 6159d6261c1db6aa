"""Batch reconstruction through the installed extension (real bpy, real worker, golden checkpoint):
three scenes, one broken → two reloadable .blend files, one clear error, one worker for all;
a re-run skips what is finished and redoes only what is not."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import bpy
import pytest

from installed import module, worker_python
from scripting_setup import broken_scene, scene_folder


@pytest.fixture
def batch(ext: ModuleType, golden: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """reconstruct_many bound to the golden checkpoint on the CPU; the worker Python from the env var."""
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    checkpoint = golden / "mvd_reduced_ckpt.pth"
    api = module("api")

    def call(scenes: Any, out: Path, **kw: Any) -> tuple[Any, str]:
        log = io.StringIO()
        report = api.reconstruct_many(scenes, out, checkpoint=checkpoint, device="cpu", log=log, **kw)
        return report, log.getvalue()

    yield call
    module("session").SESSION.shutdown()


def three_scenes(root: Path) -> list[Path]:
    return [scene_folder(root / "kitchen", 3, first=0), broken_scene(root / "garage"),
            scene_folder(root / "attic", 3, first=3)]


def test_three_scenes_one_broken(batch: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report, log = batch(three_scenes(tmp_path / "shoots"), out)

    assert [s.status for s in report.scenes] == ["done", "failed", "done"], log
    assert not report.ok
    kitchen, garage, attic = report.scenes
    # one clear error, naming the broken photo, in the summary table
    assert "view_9.png" in garage.error
    table = report.table()
    assert table.splitlines()[0].split() == ["scene", "views", "seconds", "points", "status"]
    assert "garage: " in table and "view_9.png" in table and "2 done, 0 skipped, 1 failed" in table
    assert table in log  # printed at the end, after the per-scene progress lines
    assert "1/3 kitchen:" in log and "3/3 attic: done" in log
    # one worker for the whole batch, the model loaded once
    assert kitchen.worker_pid == attic.worker_pid and kitchen.worker_pid is not None
    assert not kitchen.model_reused and attic.model_reused
    # no output at all for the broken scene; a .blend and a record for the others
    assert sorted(p.name for p in out.iterdir()) == ["attic.blend", "attic.json", "kitchen.blend", "kitchen.json"]
    record = json.loads((out / "kitchen.json").read_text())
    assert record["views"] == 3 and record["points"] == kitchen.points > 0
    assert [Path(p).name for p in record["photos"]] == ["view_0.png", "view_1.png", "view_2.png"]

    # each .blend holds only its own scene: a collection named after it with points, 3 cameras, Gaussians
    for scene in (kitchen, attic):
        bpy.ops.wm.open_mainfile(filepath=str(out / f"{scene.name}.blend"))
        assert [c.name for c in bpy.data.collections] == [scene.name]
        objects = bpy.data.collections[scene.name].all_objects
        cameras = [o for o in objects if o.type == "CAMERA"]
        assert len(cameras) == 3 and len(objects) == 5
        points = bpy.data.objects[f"{scene.name} Points"]
        assert len(points.data.vertices) == scene.points
        assert f"{scene.name} Gaussians" in bpy.data.objects
        assert bpy.context.scene.camera in cameras  # the file renders through a reconstructed camera
        assert len(bpy.data.objects) == 5  # nothing from the scene reconstructed before it


def test_rerun_skips_finished_scenes_and_redoes_the_rest(batch: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scenes = three_scenes(tmp_path / "shoots")
    first, _ = batch(scenes, out)
    assert [s.status for s in first.scenes] == ["done", "failed", "done"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    again, log = batch(scenes, out)
    assert [s.status for s in again.scenes] == ["skipped", "failed", "skipped"], log
    assert "1/3 kitchen: already done, skipped" in log and "1 failed" in log
    assert again.scenes[0].points == first.scenes[0].points and again.scenes[0].views == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # nothing was rewritten

    # a scene whose .blend went missing (or whose record is from other photos) is done again
    (out / "attic.blend").unlink()
    scene_folder(scenes[0], 4)  # a fourth photo: the record's photo list no longer matches
    third, log = batch([scenes[0], scenes[2]], out)
    assert [s.status for s in third.scenes] == ["done", "done"], log
    assert third.ok and (out / "attic.blend").is_file()
    assert json.loads((out / "kitchen.json").read_text())["views"] == 4


def test_a_half_written_blend_is_not_taken_for_a_finished_scene(batch: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "kitchen.blend").write_bytes(b"BLENDER-v0 a crash left this")  # no usable record: not finished
    (out / "kitchen.json").write_text("[1, 2]")
    report, log = batch([scene_folder(tmp_path / "kitchen", 2)], out)
    assert report.scenes[0].status == "done", log
    bpy.ops.wm.open_mainfile(filepath=str(out / "kitchen.blend"))
    assert "kitchen Points" in bpy.data.objects
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary sibling left


def test_exports_only_and_named_scenes(batch: Any, tmp_path: Path) -> None:
    """No .blend (no Blender data is made at all), exports per scene, {name: photos} naming."""
    photos = sorted(scene_folder(tmp_path / "p", 3).iterdir())
    before = {o.name for o in bpy.data.objects}
    report, log = batch({"first take": photos}, tmp_path / "out", blend=False, formats=["ply", "glb"])
    assert report.ok, log
    outputs = report.scenes[0].outputs
    assert report.scenes[0].name == "first_take"
    assert set(outputs) == {"ply", "glb"} and all(p.is_file() for p in outputs.values())
    assert outputs["ply"].parent == tmp_path / "out" / "first_take"
    assert {o.name for o in bpy.data.objects} == before
    # resume sees the exports too; asking for one more format redoes the scene
    again, _ = batch({"first take": photos}, tmp_path / "out", blend=False, formats=["ply"])
    assert again.scenes[0].status == "skipped"
    more, _ = batch({"first take": photos}, tmp_path / "out", blend=False, formats=["ply", "gaussians"])
    assert more.scenes[0].status == "done" and more.scenes[0].outputs["gaussians"].is_file()


def test_bad_batch_arguments_fail_before_any_scene(batch: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'obj'|obj"):
        batch([tmp_path], tmp_path / "out", formats=["obj"])
    with pytest.raises(ValueError, match="nothing to write"):
        batch([tmp_path], tmp_path / "out", blend=False)
    setup_error = module("session").SetupError
    with pytest.raises(setup_error, match="nope.pth"):
        module("api").reconstruct_many([tmp_path], tmp_path / "out", checkpoint=tmp_path / "nope.pth")
    assert module("session").SESSION.client is None  # no worker was started for a batch that cannot run
