"""Preferences of the installed extension: defaults, drawing in each set-up state, the runtime
creation operator failing for real (an installer with nothing to install), the check of a wrong
Python, and the model download through the operator against a local HTTP server."""
from __future__ import annotations

import http.server
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import bpy
import pytest
from installed import PACKAGE, module, poll_until_idle
from recording_layout import RecordingLayout, draw_preferences

CHECKPOINT_BYTES = os.urandom(300_000)


def prefs() -> Any:
    return bpy.context.preferences.addons[PACKAGE].preferences


def draw_prefs() -> RecordingLayout:
    return draw_preferences(prefs(), bpy.context)


@pytest.fixture
def checkpoint_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(CHECKPOINT_BYTES)))
            self.end_headers()
            self.wfile.write(CHECKPOINT_BYTES)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints/MVDp_s2.pth"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_defaults(ext: ModuleType) -> None:
    p = prefs()
    assert type(p).bl_idname == PACKAGE
    assert (p.runtime_mode, p.checkpoint, p.device, p.torch_backend) == ("PRIVATE", "MVDp_s2.pth", "auto", "auto")
    assert not p.licence_accepted
    assert {item.identifier for item in type(p).bl_rna.properties["checkpoint"].enum_items} >= {
        "MVDp_s2.pth", "MVD.pth", "BUILTIN", "LOCAL"}


def test_the_built_in_model_is_installed_with_the_extension(ext: ModuleType) -> None:
    p = prefs()
    p.checkpoint = "BUILTIN"
    path = module("session").checkpoint_file(p)
    assert path.is_file() and path.name == "default.safetensors"
    assert Path(ext.__file__).parent in path.parents       # inside the installed extension, offline
    assert any("synthetic rooms" in t for t in draw_prefs().labels())
    assert "mvdust3r_blender.download_model" not in {name for name, _ in draw_prefs().buttons()}


def test_draw_first_start_offline(ext: ModuleType) -> None:
    layout = draw_prefs()
    labels = layout.labels()
    assert any(t.startswith("Environment: ") and t.endswith("runtime") for t in labels)
    assert ("mvdust3r_blender.create_runtime", "Create Environment") in layout.buttons()
    assert ("mvdust3r_blender.check_runtime", "Check") in layout.buttons()
    assert any("Online access is off" in t for t in labels)
    assert "licence_accepted" in layout.props() and "torch_backend" in layout.props()
    download = [i for i, (name, _, _) in enumerate(layout.log) if name == "operator"
                and layout.log[i][1][0] == "mvdust3r_blender.download_model"]
    assert download and layout.log[download[0] - 1] == ("set enabled", (False,), {})  # greyed out


def test_draw_existing_python_and_local_checkpoint(ext: ModuleType) -> None:
    p = prefs()
    p.runtime_mode, p.checkpoint, p.runtime_summary = "EXISTING", "LOCAL", "torch 2.13.0 · cpu · Python 3.11.7"
    layout = draw_prefs()
    assert {"python_path", "checkpoint_path", "device"} <= set(layout.props())
    assert not any(op == "mvdust3r_blender.create_runtime" for op, _ in layout.buttons())
    assert "torch 2.13.0 · cpu · Python 3.11.7" in layout.labels()
    p.python_path = "/another/python"  # another runtime: the old check no longer applies
    assert p.runtime_summary == ""


def test_create_runtime_failure_is_shown_with_command_output_and_retry(ext: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.mvdust3r_blender.create_runtime()
    empty = tmp_path / "wheels"
    empty.mkdir()
    os.environ["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")  # keep the installer's cache in the test's folder
    try:
        prefs().wheels_folder = str(empty)
        assert bpy.ops.mvdust3r_blender.create_runtime() == {"FINISHED"}
        setup = bpy.context.window_manager.mvdust3r_setup
        assert setup.runtime_state == "RUNNING"
        poll_until_idle(120)
    finally:
        del os.environ["UV_CACHE_DIR"]
    assert setup.runtime_state == "FAILED", setup.runtime_message
    assert "failed (exit" in setup.runtime_message and "--no-index" in setup.runtime_message
    assert "no PyTorch build matches" in setup.runtime_hint
    assert "torch" in setup.runtime_tail
    assert Path(setup.runtime_log).is_file() and "$ " in Path(setup.runtime_log).read_text()
    with pytest.raises(module("session").SetupError, match="runtime is not set up"):
        module("session").worker_python(prefs())  # a half-made environment is not used
    layout = draw_prefs()
    assert ("mvdust3r_blender.create_runtime", "Retry") in layout.buttons()
    labels = layout.labels()
    assert any(t.startswith("$ ") and "pip install" in t for t in labels)
    assert any("no PyTorch build matches" in t for t in labels)


def test_check_of_a_missing_python_names_it(ext: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PyTorch runtime is not set up"):
        bpy.ops.mvdust3r_blender.check_runtime()
    prefs().runtime_mode = "EXISTING"
    prefs().python_path = str(tmp_path / "bin" / "python")
    with pytest.raises(RuntimeError, match="bin/python' does not exist"):
        bpy.ops.mvdust3r_blender.check_runtime()


def test_check_of_a_python_without_torch_fails_with_the_workers_words(ext: ModuleType) -> None:
    prefs().runtime_mode = "EXISTING"
    prefs().python_path = sys.executable  # this bpy venv's Python: no torch here
    try:
        assert bpy.ops.mvdust3r_blender.check_runtime() == {"FINISHED"}
        poll_until_idle(60)
    finally:
        module("session").SESSION.shutdown()
    setup = bpy.context.window_manager.mvdust3r_setup
    assert setup.check_state == "FAILED"
    assert "import 'torch'" in setup.check_message or "No module named 'torch'" in setup.check_message


def test_download_needs_licence_and_online_access_then_downloads(ext: ModuleType, checkpoint_server: str) -> None:
    with pytest.raises(RuntimeError, match="Accept the model licence"):
        bpy.ops.mvdust3r_blender.download_model(url=checkpoint_server)
    prefs().licence_accepted = True
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.mvdust3r_blender.download_model(url=checkpoint_server)
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.mvdust3r_blender.download_model(url=checkpoint_server) == {"FINISHED"}
    poll_until_idle(30)
    setup = bpy.context.window_manager.mvdust3r_setup
    assert setup.download_state == "DONE", setup.download_message
    assert setup.download_progress == 1.0
    session = module("session")
    path = session.checkpoint_file(prefs())
    assert path.name == "MVDp_s2.pth" and path.read_bytes() == CHECKPOINT_BYTES
    assert any(t.startswith("Downloaded: ") for t in draw_prefs().labels())
    path.unlink()


def test_setup_errors_name_the_missing_piece(ext: ModuleType, tmp_path: Path) -> None:
    session = module("session")
    p = prefs()
    with pytest.raises(session.SetupError, match="model MVDp_s2.pth is not downloaded"):
        session.checkpoint_file(p)
    p.checkpoint = "LOCAL"
    with pytest.raises(session.SetupError, match="no checkpoint file is chosen"):
        session.checkpoint_file(p)
    p.checkpoint_path = str(tmp_path / "gone.pth")
    with pytest.raises(session.SetupError, match="gone.pth' does not exist"):
        session.checkpoint_file(p)
    p.runtime_mode = "EXISTING"
    with pytest.raises(session.SetupError, match="no Python is set"):
        session.worker_python(p)


def test_draw_while_installing_and_downloading(ext: ModuleType) -> None:
    setup = bpy.context.window_manager.mvdust3r_setup
    setup.runtime_state, setup.runtime_step = "RUNNING", "Install PyTorch and the worker's libraries"
    setup.runtime_command, setup.runtime_tail = "uv pip install torch", "Resolved 24 packages\nDownloading torch"
    setup.download_state, setup.download_progress, setup.download_message = "RUNNING", 0.25, "0.70 GB of 2.80 GB"
    prefs().licence_accepted = True
    layout = draw_prefs()
    labels = layout.labels()
    assert "Install PyTorch and the worker's libraries" in labels and "$ uv pip install torch" in labels
    assert "Downloading torch" in labels and "Download: 0.70 GB of 2.80 GB" in labels
    operators = layout.buttons()
    assert ("mvdust3r_blender.cancel_setup", "Stop") in operators
    assert ("mvdust3r_blender.cancel_setup", "Stop Download") in operators
    progress = [kw for name, _, kw in layout.log if name == "progress"]
    assert progress == [{"factor": 0.25, "type": "BAR", "text": "25 %"}]
    create = next(i for i, (name, args, _) in enumerate(layout.log)
                  if name == "operator" and args[0] == "mvdust3r_blender.create_runtime")
    assert layout.log[create - 1] == ("set enabled", (False,), {})  # no second install while one runs
