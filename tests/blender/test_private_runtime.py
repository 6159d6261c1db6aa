"""The private runtime end to end, as a user gets it: the installed linux-x64 zip's own uv makes
the environment with torch from a local wheels folder (no network), Check shows what was
installed and why, the worker starts from it and reconstructs the sample room with the built-in
model. Without uv the same operator falls back to venv + pip with PyTorch's index for the driver
that a fake ``nvidia-smi`` reports.

The wheels folder is made once per test run by :func:`runtime_wheels`: ``pip download`` of the
worker's requirements, with torch pinned to build.py's ``TORCH`` (``torch==2.13.0``: the CPU wheel
this machine's pip config finds on local disk; the other wheels come from pip's configured indexes
and its cache). ``build.py test`` points both Blender suites at one folder
(``$MVDUST3R_TEST_RUNTIME_CACHE``, removed after the run) so the download and uv's cache serve both;
a suite run alone uses a folder of its own and removes it. After that nothing is downloaded: uv
runs with ``--offline --no-index --find-links``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import bpy
import pytest
from installed import PACKAGE, ROOT, build_script, module, poll_until_idle
from recording_layout import draw_preferences

CACHE_ENV = "MVDUST3R_TEST_RUNTIME_CACHE"


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory: pytest.TempPathFactory, ext: ModuleType) -> Iterator[Path]:
    """A folder holding ``wheels/`` (the worker's requirements, downloaded once) and ``uv-cache/``."""
    shared = os.environ.get(CACHE_ENV)
    root = Path(shared) if shared else tmp_path_factory.mktemp("runtime-cache")
    wheels = root / "wheels"
    complete = root / "wheels-complete"
    if not complete.is_file():
        torch_pin = build_script("mvdust3r_build_script_runtime").TORCH
        runtime = module("client.runtime")
        requirements = [torch_pin if runtime._name(r) == "torch" else r for r in runtime.WORKER_REQUIREMENTS]
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                               "-d", str(wheels), *requirements], capture_output=True, text=True)
        assert done.returncode == 0, f"pip could not fill the wheels folder:\n{done.stderr[-3000:]}"
        complete.write_text("\n".join(sorted(p.name for p in wheels.iterdir())) + "\n")
    yield root
    if not shared:
        shutil.rmtree(root, ignore_errors=True)


def prefs() -> Any:
    return bpy.context.preferences.addons[PACKAGE].preferences


def drawn_labels() -> list[str]:
    return draw_preferences(prefs(), bpy.context).labels()


@pytest.fixture
def private_runtime_settings(runtime_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Preferences for the private runtime from the wheels folder; the worker must come from it, so
    ``$MVDUST3R_WORKER_PYTHON`` (the test runtime) is unset. Afterwards: the worker stopped, the
    environment removed."""
    monkeypatch.delenv("MVDUST3R_WORKER_PYTHON", raising=False)
    monkeypatch.setenv("UV_CACHE_DIR", str(runtime_cache / "uv-cache"))
    p = prefs()
    p.runtime_mode, p.torch_backend, p.wheels_folder = "PRIVATE", "auto", str(runtime_cache / "wheels")
    yield p
    module("session").SESSION.shutdown()
    shutil.rmtree(module("preferences").runtime_dir(), ignore_errors=True)


def test_bundled_uv_makes_the_runtime_offline_and_the_worker_reconstructs(private_runtime_settings: Any,
                                                                          tmp_path: Path) -> None:
    preferences, runtime = module("preferences"), module("client.runtime")
    assert not bpy.app.online_access  # the wheels folder is what allows the install
    assert bpy.ops.mvdust3r_blender.create_runtime() == {"FINISHED"}
    poll_until_idle(600)
    setup = bpy.context.window_manager.mvdust3r_setup
    log = Path(setup.runtime_log).read_text()
    assert setup.runtime_state == "DONE", f"{setup.runtime_message}\n{log[-3000:]}"

    record = runtime.InstallRecord.read(preferences.runtime_ready_marker())
    local = Path(os.environ["BLENDER_USER_RESOURCES"]) / "extensions" / ".local"
    assert record is not None and record.installer.startswith(f"uv 0.13.9 at {local}")  # the zip's own uv
    assert record.backend == "auto" and "uv detects the GPU driver" in record.reason
    assert record.wheels == private_runtime_settings.wheels_folder
    for line in record.lines():
        assert f"# {line}" in log     # the log says which installer and build, and why
    assert "--offline" in log and "--no-index" in log and "--torch-backend=auto" in log

    assert bpy.ops.mvdust3r_blender.check_runtime() == {"FINISHED"}
    poll_until_idle(120)
    assert setup.check_state == "DONE", setup.check_message
    summary = private_runtime_settings.runtime_summary
    assert summary.startswith("torch 2.13.0+cpu · cpu"), summary
    labels = drawn_labels()
    assert summary in labels and set(record.lines()) <= set(labels)   # Check shows what made the runtime
    assert f"Packages: only from the wheels folder {record.wheels}" in labels

    private_runtime_settings.checkpoint = "BUILTIN"
    private_runtime_settings.device = "cpu"
    result = module("api").reconstruct(ROOT / "samples" / "room", output=tmp_path / "room.npz",
                                       name="Private runtime room")
    assert result.views == 6 and result.points > 1000
    client = module("session").SESSION.client
    assert client is not None and Path(client.python) == runtime.env_python(preferences.runtime_dir())
    assert {o.type for o in result.objects} == {"MESH", "CAMERA"}


def test_without_uv_the_operator_installs_with_pip_and_the_drivers_index(
        private_runtime_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A uv that cannot run (here: the bundled one replaced by a program that fails) and an NVIDIA
    driver 570: the plan is venv + pip, the log names cu128 and why, and the install from an empty
    wheels folder (``$MVDUST3R_WHEELS``) fails with the installer's words (no download is attempted)."""
    uv = Path(module("client.runtime").find_uv())
    saved = tmp_path / "uv.saved"
    shutil.copy2(uv, saved)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 570.86.10\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "empty").mkdir()
    private_runtime_settings.wheels_folder = ""   # the managed-install variable instead of the preference
    monkeypatch.setenv("MVDUST3R_WHEELS", str(tmp_path / "empty"))
    try:
        uv.write_text("#!/bin/sh\necho 'blocked by policy' >&2\nexit 1\n")
        assert bpy.ops.mvdust3r_blender.create_runtime() == {"FINISHED"}
        job = module("operators_setup").TASKS.install
        assert job is not None and job.steps[0].argv[1:3] == ("-m", "venv")
        poll_until_idle(300)
    finally:
        shutil.copy2(saved, uv)
    setup = bpy.context.window_manager.mvdust3r_setup
    log = Path(setup.runtime_log).read_text()
    assert f"# Installer: venv + pip: uv at {uv} cannot run (exit 1: blocked by policy)" in log
    assert "# PyTorch build: cu128 (NVIDIA driver 570.86.10 runs CUDA 12.8)" in log
    assert setup.runtime_state == "FAILED" and "Install PyTorch" in setup.runtime_message
    assert f"--no-index --find-links {tmp_path / 'empty'} torch" in setup.runtime_message
    assert f"# Packages: only from the wheels folder {tmp_path / 'empty'}" in log
