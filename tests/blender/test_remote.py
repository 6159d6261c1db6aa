"""A GPU borrowed over ssh, from Blender: the Python API, a batch from the command line, the
preferences' Check and Set Up Remote Runtime, and a connection lost mid-run — against a real sshd on
127.0.0.1 run by a user who cannot read the photos (tests/helpers/remote_host.py), with the golden checkpoint
placed on that "remote" machine."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from installed import PACKAGE, module, poll_until_idle
from recording_layout import draw_preferences
from scripting_setup import scene_folder


@pytest.fixture(scope="module")
def remote_checkpoint(remote_host: Any, golden: Path) -> str:
    return str(remote_host.place(golden / "mvd_reduced_ckpt.pth"))


@pytest.fixture
def over_ssh(ext: ModuleType, remote_host: Any, remote_checkpoint: str) -> Any:
    """The keywords that send a run to the remote; the session's worker is stopped afterwards."""
    yield {"remote": remote_host.destination, "ssh_command": remote_host.ssh_command(), "python": remote_host.python,
           "checkpoint": remote_checkpoint, "device": "cpu"}
    module("session").SESSION.shutdown()


def test_api_reconstruct_on_the_remote(over_ssh: Any, remote_host: Any, tmp_path: Path) -> None:
    folder = scene_folder(tmp_path / "kitchen", 3)
    assert remote_host.run_as_user("ls", str(folder)).returncode != 0  # the remote cannot read them by path
    stages: list[str] = []
    result = module("api").reconstruct(folder, on_progress=lambda stage, _: stages.append(stage), **over_ssh)
    assert {"upload", "network", "download"} <= set(stages)
    assert sorted(o.type for o in result.objects) == ["CAMERA"] * 3 + ["MESH", "MESH"]
    assert result.collection is not None and result.collection.name.startswith("kitchen")
    bundle = module("core.bundle").read_bundle(result.bundle_path)
    assert bundle.photo_paths == [str(p) for p in sorted(folder.iterdir())]
    camera = result.imported.cameras[0]  # its photo is the local file, loaded as its background
    assert bpy.path.abspath(camera.data.background_images[0].image.filepath) == str(sorted(folder.iterdir())[0])
    assert module("session").SESSION.client.target.destination == remote_host.destination


def test_batch_from_the_command_line_on_the_remote(over_ssh: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folders = [scene_folder(tmp_path / "shoots" / "attic", 3), scene_folder(tmp_path / "shoots" / "porch", 3, first=3)]
    out = tmp_path / "out"
    argv = ["batch", *map(str, folders), "--out", str(out), "--export", "ply", "--remote", over_ssh["remote"],
            "--ssh-command", over_ssh["ssh_command"], "--python", over_ssh["python"],
            "--checkpoint", over_ssh["checkpoint"], "--device", "cpu"]
    assert module("cli").main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"on {over_ssh['remote']}" in err and "2 done, 0 skipped, 0 failed" in err
    records = {name: json.loads((out / f"{name}.json").read_text()) for name in ("attic", "porch")}
    assert records["attic"]["worker_pid"] == records["porch"]["worker_pid"]  # one connection for the batch
    assert not records["attic"]["model_reused"] and records["porch"]["model_reused"]  # the model stays loaded
    for name in records:
        assert (out / f"{name}.blend").is_file() and (out / name / "points.ply").stat().st_size > 0


def test_a_lost_connection_leaves_the_scene_as_it_was(over_ssh: Any, tmp_path: Path) -> None:
    bpy.ops.mesh.primitive_cube_add()
    before = sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.collections)
    session = module("session").SESSION

    def cut(stage: str, fraction: float) -> None:
        if stage == "load" and session.client is not None and session.client.alive:
            os.kill(session.client.pid, signal.SIGKILL)  # ssh dies: the network went away

    started = time.monotonic()
    with pytest.raises(module("client.worker_client").WorkerError, match="ssh connection .* was lost"):
        module("api").reconstruct(scene_folder(tmp_path / "room", 4), on_progress=cut, **over_ssh)
    assert time.monotonic() - started < 30
    assert (sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.collections)) == before


def test_preferences_check_and_remote_runtime_set_up(ext: ModuleType, remote_host: Any,
                                                     remote_checkpoint: str) -> None:
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.worker_location = "REMOTE"
    prefs.remote_destination = remote_host.destination
    prefs.remote_ssh_command = remote_host.ssh_command()
    prefs.remote_python = remote_host.python
    layout = draw_preferences(prefs, bpy.context)
    assert ("mvdust3r_blender.create_remote_runtime", "Set Up Remote Runtime") in layout.buttons()
    assert ("mvdust3r_blender.fetch_remote_model", "Download on Remote") in layout.buttons()
    assert {"remote_destination", "remote_ssh_command", "remote_python", "remote_checkpoint"} <= set(layout.props())
    try:
        assert bpy.ops.mvdust3r_blender.check_runtime() == {"FINISHED"}
        poll_until_idle(60)
    finally:
        module("session").SESSION.shutdown()
    assert bpy.context.window_manager.mvdust3r_setup.check_state == "DONE"
    assert prefs.runtime_summary.startswith(f"on {remote_host.destination} · torch ")
    with pytest.raises(module("session").SetupError, match="Remote Checkpoint"):
        module("session").WorkerSettings.from_preferences(prefs)
    prefs.remote_checkpoint = remote_checkpoint
    settings = module("session").WorkerSettings.from_preferences(prefs)
    assert settings.remote.destination == remote_host.destination and settings.checkpoint == remote_checkpoint

    # Set Up Remote Runtime: the local set-up's commands (uv, --torch-backend), each through ssh
    steps = module("client.remote").plan_remote_environment(settings.remote, backend="auto")
    lines = [" ".join(step.argv) for step in steps]
    assert all(step.argv[0] == "ssh" and "BatchMode=yes" in step.argv for step in steps)
    assert "-m venv .cache/mvdust3r-blender/uv-tools" in lines[0] and "pip install" in lines[0]
    assert "--torch-backend=auto" in lines[-1] and ".cache/mvdust3r-blender/runtime/bin/python" in lines[-1]


def test_the_panel_runs_cancels_and_releases_on_the_remote(ext: ModuleType, remote_host: Any, remote_checkpoint: str,
                                                            tmp_path: Path) -> None:
    from test_run import add, drive, make_photos, scene_state

    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.worker_location, prefs.device = "REMOTE", "cpu"
    prefs.remote_destination, prefs.remote_ssh_command = remote_host.destination, remote_host.ssh_command()
    prefs.remote_python, prefs.remote_checkpoint = remote_host.python, remote_checkpoint
    add(make_photos(tmp_path / "shoot", 3))
    try:
        assert bpy.ops.mvdust3r_blender.reconstruct() == {"FINISHED"}
        done = drive()
        assert done.phase.value == "DONE", f"{done.message} ({done.hint})"
        assert len([o for o in bpy.data.collections[done.collection_name].all_objects if o.type == "CAMERA"]) == 3
        before = scene_state()
        bpy.ops.mvdust3r_blender.reconstruct()
        assert bpy.ops.mvdust3r_blender.cancel() == {"FINISHED"}
        assert drive().phase.value == "CANCELLED" and scene_state() == before
        assert bpy.ops.mvdust3r_blender.release() == {"FINISHED"}
        assert module("session").SESSION.client.alive
    finally:
        module("session").SESSION.shutdown()
