"""The worker runtime set-up, for real: environments are created with uv and with venv + pip from
a wheel folder made here (no network); failures report the command, the installer's last lines and
a hint. (Whether a Python has torch is checked through the worker itself: test_preferences, test_run.)"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import importlib
from types import ModuleType

import pytest


@pytest.fixture
def runtime(ext: ModuleType) -> ModuleType:
    """The installed extension's runtime module (what Blender runs)."""
    return importlib.import_module(f"{ext.__name__}.core.runtime")


def make_wheel(folder: Path, name: str = "mvd_probe_pkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, written by hand so the test needs no index."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.fixture
def uv_env(tmp_path: Path) -> dict[str, str]:
    """Keep uv's cache inside the test's folder."""
    return {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}


def test_uv_environment_from_a_local_wheel_folder(runtime: ModuleType, tmp_path: Path, uv_env: dict[str, str]) -> None:
    uv = runtime.find_uv()
    assert uv is not None, "uv is missing from this test environment: run `python build.py setup`"
    make_wheel(tmp_path / "wheels")
    env_dir = tmp_path / "runtime"
    steps = runtime.plan_environment(env_dir, base_python=sys.executable, uv=uv, requirements=("mvd_probe_pkg",),
                                     installer_args=("--no-index", "--find-links", str(tmp_path / "wheels")))
    assert [s.argv[1] for s in steps] == ["venv", "pip"]
    assert "--torch-backend=auto" in steps[1].argv
    job = runtime.Job(steps, tmp_path / "install.log", env=uv_env)
    job.start()
    assert job.state is runtime.JobState.RUNNING
    assert job.wait(120) is runtime.JobState.DONE, job.output()
    python = runtime.env_python(env_dir)
    done = subprocess.run([str(python), "-c", "import mvd_probe_pkg; print(mvd_probe_pkg.VALUE)"],
                          capture_output=True, text=True, env=runtime.subprocess_env())
    assert done.stdout.strip() == "1.0", done.stderr
    log = job.output()
    for step in steps:  # the exact command lines are in the log, as the UI shows them
        assert f"$ {step.command_line}" in log
    assert log.count("=== exit 0") == 2


def test_venv_and_pip_environment_without_uv(runtime: ModuleType, tmp_path: Path) -> None:
    make_wheel(tmp_path / "wheels")
    env_dir = tmp_path / "runtime"
    steps = runtime.plan_environment(env_dir, base_python=sys.executable, uv=None,
                                     requirements=("mvd_probe_pkg",),
                                     installer_args=("--no-index", "--find-links", str(tmp_path / "wheels")))
    assert steps[0].argv == (sys.executable, "-m", "venv", str(env_dir))
    job = runtime.Job(steps, tmp_path / "install.log")
    job.start()
    assert job.wait(180) is runtime.JobState.DONE, job.output()
    python = runtime.env_python(env_dir)
    assert subprocess.run([str(python), "-c", "import mvd_probe_pkg"], env=runtime.subprocess_env()).returncode == 0


def test_pip_plan_uses_an_explicit_pytorch_index_for_a_chosen_build(runtime: ModuleType, tmp_path: Path) -> None:
    steps = runtime.plan_environment(tmp_path / "rt", base_python="/usr/bin/python3", uv=None, backend="cu126")
    torch_step = next(s for s in steps if s.title == "Install PyTorch")
    assert torch_step.argv[-3:] == ("--index-url", "https://download.pytorch.org/whl/cu126", "torch")
    auto = runtime.plan_environment(tmp_path / "rt", base_python="/usr/bin/python3", uv=None, backend="auto")
    assert not any("--index-url" in s.argv for s in auto)
    with pytest.raises(runtime.RuntimeSetupError, match="unknown PyTorch build 'cu999'"):
        runtime.plan_environment(tmp_path / "rt", base_python="/usr/bin/python3", uv=None, backend="cu999")


def test_a_failing_install_reports_command_output_and_hint(runtime: ModuleType, tmp_path: Path, uv_env: dict[str, str]) -> None:
    uv = runtime.find_uv()
    assert uv is not None
    (tmp_path / "wheels").mkdir()
    steps = runtime.plan_environment(tmp_path / "runtime", base_python=sys.executable, uv=uv,
                                     requirements=("mvd-package-that-is-not-there",),
                                     installer_args=("--no-index", "--find-links", str(tmp_path / "wheels")))
    job = runtime.Job(steps, tmp_path / "install.log", env=uv_env)
    job.start()
    assert job.wait(120) is runtime.JobState.FAILED
    assert job.step_index == 1 and job.returncode not in (0, None)
    assert job.error is not None
    assert "'Install PyTorch and the worker's libraries' failed" in job.error.message
    assert steps[1].command_line in job.error.message
    assert any("mvd-package-that-is-not-there" in line for line in job.error.log_tail), job.error.log_tail
    assert "no PyTorch build matches" in job.error.hint


def test_a_missing_program_fails_cleanly(runtime: ModuleType, tmp_path: Path) -> None:
    job = runtime.Job([runtime.Step("Run", (str(tmp_path / "no-such-program"),))], tmp_path / "log.txt")
    job.start()
    assert job.state is runtime.JobState.FAILED and job.error is not None
    assert "cannot start" in job.error.message and "no-such-program" in job.error.message


def test_cancel_stops_a_running_step(runtime: ModuleType, tmp_path: Path) -> None:
    job = runtime.Job([runtime.Step("Sleep", (sys.executable, "-c", "import time; time.sleep(60)")),
               runtime.Step("Never", (sys.executable, "-c", "print('unreachable')"))], tmp_path / "log.txt")
    job.start()
    started = time.monotonic()
    assert job.poll() is runtime.JobState.RUNNING
    job.cancel()
    assert job.state is runtime.JobState.CANCELLED and job.step_index == 0
    assert time.monotonic() - started < 10
    assert "unreachable" not in job.output() and "=== cancelled" in job.output()


def test_diagnose_gives_actionable_hints(runtime: ModuleType) -> None:
    assert "internet" in runtime.diagnose(["error: Failed to fetch: https://x", "dns error: failed to lookup"])
    assert "disk is full" in runtime.diagnose(["OSError: [Errno 28] No space left on device"])
    assert "Retry" in runtime.diagnose(["something unexpected"])


def test_uv_from_an_unpacked_extension_wheel_is_found_and_made_executable(runtime: ModuleType, tmp_path: Path) -> None:
    """Blender extracts bundled wheels verbatim: uv's binary sits in uv-X.data/scripts without +x."""
    real = runtime.find_uv()
    assert real is not None
    site = tmp_path / "site-packages"
    scripts = site / "uv-0.13.9.data" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copyfile(real, scripts / "uv")
    (scripts / "uv").chmod(0o644)
    found = runtime.find_uv([str(site)])
    assert found == str(scripts / "uv")
    assert os.stat(found).st_mode & stat.S_IXUSR
    assert subprocess.run([found, "--version"], capture_output=True, text=True).stdout.startswith("uv ")
