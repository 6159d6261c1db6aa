"""A batch on a real two-node Ray cluster (token auth, 127.0.0.1; tests/helpers/ray_cluster.py) from Blender:
``blender -c mvdust3r batch ... --ray ADDRESS`` and ``api.reconstruct_many(..., ray=)`` through the
INSTALLED extension. The Ray driver runs in the worker runtime, never in Blender: Blender only
imports, saves and records what lands. The outputs equal the local batch's; a broken scene is kept
apart and named; a re-run resumes; the preferences' Check describes the cluster."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import bpy
import pytest

from installed import PACKAGE, module, worker_python
from recording_layout import draw_preferences
from scripting_setup import broken_scene, scene_folder


@pytest.fixture
def farm_env(ext: ModuleType, ray_farm: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The token where Ray looks for it (the environment), the worker runtime from the env var."""
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, ray_farm.env()[key])
    yield ray_farm
    module("session").SESSION.shutdown()


def test_a_batch_on_the_cluster_equals_the_local_batch_and_resumes(farm_env: Any, golden: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    shoots = tmp_path / "shoots"
    folders = [scene_folder(shoots / "kitchen", 3, first=0), scene_folder(shoots / "attic", 3, first=3),
               broken_scene(shoots / "garage"), scene_folder(shoots / "hall", 3, first=1),
               scene_folder(shoots / "porch", 3, first=2)]
    checkpoint = str(golden / "mvd_reduced_ckpt.pth")
    common = ["--checkpoint", checkpoint, "--device", "cpu", "--export", "ply"]
    main = module("cli").main
    # one place to compute: a cluster or an ssh remote, not both
    assert main(["batch", str(folders[0]), "--out", str(tmp_path / "x"), "--ray", farm_env.address,
                 "--remote", "user@gpu-box"]) == 2
    assert "--ray and --remote" in capsys.readouterr().err
    with pytest.raises(module("session").SetupError, match="two places"):
        module("api").reconstruct_many(folders, tmp_path / "x", ray=farm_env.address, remote="user@gpu-box")

    code = main(["batch", *map(str, folders), "--out", str(tmp_path / "ray"), "--ray", farm_env.address, *common])
    log = capsys.readouterr().err
    assert code == 1, log  # one scene failed, the others are done
    assert "on the Ray cluster" in log and "Ray cluster: 2 actor(s)" in log
    assert "garage: FAILED" in log and "view_9.png" in log  # named, kept apart
    assert "4 done, 0 skipped, 1 failed" in log
    assert main(["batch", *map(str, folders), "--out", str(tmp_path / "local"), *common]) == 1
    capsys.readouterr()

    names = ["kitchen", "attic", "hall", "porch"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        [f"{n}{s}" for n in names for s in (".blend", ".json", "")])
    for name in names:
        ray_record = json.loads((tmp_path / "ray" / f"{name}.json").read_text())
        local_record = json.loads((tmp_path / "local" / f"{name}.json").read_text())
        assert (ray_record["views"], ray_record["points"], ray_record["photos"]) == \
            (local_record["views"], local_record["points"], local_record["photos"])
        ply, local_ply = (tmp_path / d / name / "points.ply" for d in ("ray", "local"))
        assert ply.stat().st_size == local_ply.stat().st_size
        bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "ray" / f"{name}.blend"))
        assert [c.name for c in bpy.data.collections] == [name]
        cameras = [o for o in bpy.data.objects if o.type == "CAMERA"]
        assert len(cameras) == 3 and bpy.context.scene.camera in cameras
        assert len(bpy.data.objects[f"{name} Points"].data.vertices) == ray_record["points"]

    # resume, through the API: finished scenes are skipped, a scene whose .blend went missing is redone
    (tmp_path / "ray" / "hall.blend").unlink()
    stamp = (tmp_path / "ray" / "kitchen.blend").stat().st_mtime_ns
    report = module("api").reconstruct_many(folders, tmp_path / "ray", ray=farm_env.address, checkpoint=checkpoint,
                                            device="cpu", formats=["ply"], log=sys.stderr)
    assert [s.status for s in report.scenes] == ["skipped", "skipped", "failed", "done", "skipped"]
    assert (tmp_path / "ray" / "hall.blend").is_file()
    assert (tmp_path / "ray" / "kitchen.blend").stat().st_mtime_ns == stamp


def test_the_preferences_check_describes_the_cluster(farm_env: Any) -> None:
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.worker_location = "RAY"
    prefs.runtime_mode = "EXISTING"
    prefs.python_path = worker_python()
    prefs.ray_address = farm_env.address
    try:
        layout = draw_preferences(prefs, bpy.context)  # what the artist sees: address, checkpoint, Check
        assert {"worker_location", "ray_address", "ray_checkpoint", "python_path"} <= set(layout.props())
        assert ("mvdust3r_blender.check_ray_cluster", "Check") in layout.buttons()
        assert bpy.ops.mvdust3r_blender.check_ray_cluster() == {"FINISHED"}
        farm = module("operators_farm")
        assert farm._CHECK and farm._CHECK[0].wait(180)
        farm.poll_check()  # the timer's work (timers never fire in module-mode bpy)
        assert prefs.ray_summary.startswith("2 nodes, 0 GPUs, 2 CPUs · Ray 2.60.0 · torch 2.13"), prefs.ray_summary
        assert prefs.ray_summary in draw_preferences(prefs, bpy.context).labels()
        prefs.ray_address = "127.0.0.1:1"
        bpy.ops.mvdust3r_blender.check_ray_cluster()
        assert farm._CHECK[0].wait(180)
        farm.poll_check()
        assert prefs.ray_summary.startswith("Failed: cannot connect to the Ray cluster at 127.0.0.1:1"), \
            prefs.ray_summary
    finally:
        prefs.worker_location = "LOCAL"
