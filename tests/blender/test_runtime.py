"""The worker runtime set-up, for real: environments are created with uv and with venv + pip from
a wheel folder made here (no network); failures report the command, the installer's last lines and
a hint; the fallback's PyTorch build follows the driver that a fake ``nvidia-smi`` on PATH reports.
(Whether a Python has torch is checked through the worker itself: test_preferences, test_run; the
whole private runtime with torch: test_private_runtime.)"""
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
    return importlib.import_module(f"{ext.__name__}.client.runtime")


@pytest.fixture
def setup_steps(ext: ModuleType) -> ModuleType:
    """The installed extension's setup steps (the jobs that install a runtime)."""
    return importlib.import_module(f"{ext.__name__}.client.setup_steps")


@pytest.fixture
def torch_build(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.client.torch_build")


def fake_program(folder: Path, name: str, stdout: str, code: int = 0) -> Path:
    """An executable `name` in `folder` that prints `stdout` and exits with `code`."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nexit {code}\n")
    program.chmod(0o755)
    return program


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


def test_uv_environment_from_a_local_wheel_folder(setup_steps: ModuleType, runtime: ModuleType, torch_build: ModuleType,
                                                  tmp_path: Path, uv_env: dict[str, str]) -> None:
    uv = runtime.find_uv()
    assert uv is not None, "uv is missing from this test environment: run `python build.py setup`"
    make_wheel(tmp_path / "wheels")
    env_dir = tmp_path / "runtime"
    auto = torch_build.TorchBuild("auto", "uv detects the GPU driver")
    steps = runtime.plan_environment(env_dir, base_python=sys.executable, uv=uv, build=auto,
                                     requirements=("mvd_probe_pkg",), wheels=str(tmp_path / "wheels"))
    assert [s.argv[1] for s in steps] == ["venv", "pip"]
    assert "--torch-backend=auto" in steps[1].argv
    assert "--offline" in steps[0].argv and {"--offline", "--no-index"} <= set(steps[1].argv)
    job = setup_steps.Job(steps, tmp_path / "install.log", env=uv_env, notes=["PyTorch build: auto"])
    job.start()
    assert job.state is setup_steps.JobState.RUNNING
    assert job.wait(120) is setup_steps.JobState.DONE, job.output()
    assert job.output().lstrip().startswith("# PyTorch build: auto")
    python = runtime.env_python(env_dir)
    done = subprocess.run([str(python), "-c", "import mvd_probe_pkg; print(mvd_probe_pkg.VALUE)"],
                          capture_output=True, text=True, env=setup_steps.subprocess_env())
    assert done.stdout.strip() == "1.0", done.stderr
    log = job.output()
    for step in steps:  # the exact command lines are in the log, as the UI shows them
        assert f"$ {step.command_line}" in log
    assert log.count("=== exit 0") == 2


def test_venv_and_pip_environment_without_uv(setup_steps: ModuleType, runtime: ModuleType, torch_build: ModuleType,
                                             tmp_path: Path) -> None:
    make_wheel(tmp_path / "wheels")
    env_dir = tmp_path / "runtime"
    steps = runtime.plan_environment(env_dir, base_python=sys.executable, uv=None,
                                     build=torch_build.TorchBuild("cpu", "test"),
                                     requirements=("mvd_probe_pkg",), wheels=str(tmp_path / "wheels"))
    assert steps[0].argv == (sys.executable, "-m", "venv", str(env_dir))
    job = setup_steps.Job(steps, tmp_path / "install.log")
    job.start()
    assert job.wait(180) is setup_steps.JobState.DONE, job.output()
    python = runtime.env_python(env_dir)
    assert subprocess.run([str(python), "-c", "import mvd_probe_pkg"], env=setup_steps.subprocess_env()).returncode == 0


def test_a_wheels_folder_is_the_only_source_whatever_pip_is_configured_with(setup_steps: ModuleType,
                                                                             runtime: ModuleType,
                                                                             torch_build: ModuleType,
                                                                             tmp_path: Path) -> None:
    """The machine's pip configuration (a pip.conf, PIP_FIND_LINKS) once added its own sources to a
    Wheels Folder install, which then "succeeded" with packages from elsewhere while the log said
    "only from the wheels folder". The package is only where the configuration points: the install fails."""
    elsewhere = tmp_path / "elsewhere"
    make_wheel(elsewhere)
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {elsewhere}\n")
    (tmp_path / "wheels").mkdir()
    steps = runtime.plan_environment(tmp_path / "runtime", base_python=sys.executable, uv=None,
                                     build=torch_build.TorchBuild("cpu", "test"),
                                     requirements=("mvd_probe_pkg",), wheels=str(tmp_path / "wheels"))
    env = {**os.environ, "PIP_CONFIG_FILE": str(config), "PIP_FIND_LINKS": str(elsewhere)}
    job = setup_steps.Job(steps, tmp_path / "install.log", env=env)
    job.start()
    assert job.wait(180) is setup_steps.JobState.FAILED, job.output()
    assert "mvd_probe_pkg" in job.output() and "--isolated" in job.output()
    python = runtime.env_python(tmp_path / "runtime")
    assert subprocess.run([str(python), "-c", "import mvd_probe_pkg"], env=setup_steps.subprocess_env(),
                          capture_output=True).returncode != 0


def test_pip_plan_uses_pytorch_index_of_the_build(runtime: ModuleType, torch_build: ModuleType, tmp_path: Path) -> None:
    Build = torch_build.TorchBuild

    def torch_step(build: object, wheels: object = None) -> tuple[str, ...]:
        steps = runtime.plan_environment(tmp_path / "rt", base_python="/usr/bin/python3", uv=None, build=build,
                                         wheels=wheels)
        return next(s for s in steps if s.title == "Install PyTorch").argv

    assert torch_step(Build("cu126", "chosen"))[-3:] == ("--index-url", "https://download.pytorch.org/whl/cu126", "torch")
    assert "--index-url" not in torch_step(Build("default", "Apple silicon"))   # PyPI's own torch
    offline = torch_step(Build("cu128", "driver"), wheels=str(tmp_path))         # a wheels folder: no index at all
    assert "--index-url" not in offline and offline[-4:] == ("--no-index", "--find-links", str(tmp_path), "torch")
    with pytest.raises(ValueError, match="pip cannot resolve the 'auto' build"):
        torch_step(Build("auto", "uv"))
    with pytest.raises(ValueError, match="unknown PyTorch build 'cu999'"):
        torch_build.choose_build("cu999", uv_runs=False)


@pytest.mark.parametrize("driver, backend", [
    ("580.65.06", "cu130"),   # CUDA 13 needs 580 or newer
    ("575.57.08", "cu128"),
    ("525.60.13", "cu128"),   # CUDA 12.x's minimum (minor version compatibility)
    ("525.60.12", "cpu"),     # too old for any current CUDA build: CPU, and the reason says to update
    ("470.256.02", "cpu"),
])
def test_fallback_build_from_a_fake_nvidia_smi(runtime: ModuleType, torch_build: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, driver: str, backend: str) -> None:
    """Without uv, the driver that nvidia-smi reports picks PyTorch's index for pip."""
    fake_program(tmp_path / "bin", "nvidia-smi", f"{driver}\n{driver}\n")  # two GPUs: one line each
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    facts = torch_build.probe_machine(kfd_path=str(tmp_path / "no-kfd"))
    assert facts.nvidia_driver == driver
    build = torch_build.choose_build("auto", uv_runs=False, facts=facts)
    assert build.backend == backend
    assert f"NVIDIA driver {driver}" in build.reason
    if backend == "cpu":
        assert "update the driver" in build.reason
    steps = runtime.plan_environment(tmp_path / "rt", base_python=sys.executable, uv=None, build=build)
    torch_step = next(s for s in steps if s.title == "Install PyTorch")
    assert ("--index-url", f"https://download.pytorch.org/whl/{backend}") == torch_step.argv[-3:-1]
    with_uv = torch_build.choose_build("auto", uv_runs=True, facts=facts)   # uv decides; the log says ours
    assert with_uv.backend == "auto" and backend in with_uv.reason


def test_fallback_build_with_no_gpu_driver(torch_build: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No nvidia-smi at all, or one that fails (no driver loaded): the CPU build; ROCm's device: ROCm."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert torch_build.nvidia_driver() is None
    none = torch_build.choose_build("auto", uv_runs=False, facts=torch_build.probe_machine(str(tmp_path / "no-kfd")))
    assert (none.backend, none.index_url) == ("cpu", "https://download.pytorch.org/whl/cpu")
    assert "no NVIDIA driver" in none.reason
    fake_program(tmp_path / "bin", "nvidia-smi", "NVIDIA-SMI has failed because it couldn't communicate "
                                                 "with the NVIDIA driver.\n", code=9)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert torch_build.nvidia_driver() is None
    (tmp_path / "kfd").write_text("")   # AMD's ROCm kernel driver is loaded
    rocm = torch_build.choose_build("auto", uv_runs=False, facts=torch_build.probe_machine(str(tmp_path / "kfd")))
    assert rocm.backend == "rocm6.4" and rocm.index_url == "https://download.pytorch.org/whl/rocm6.4"
    assert torch_build.choose_build("cu126", uv_runs=False).reason == "chosen in the preferences"


def test_build_per_platform(torch_build: ModuleType) -> None:
    """Windows has its own driver minimums; macOS gets PyPI's build (MPS on Apple silicon)."""
    Facts, pick = torch_build.MachineFacts, torch_build.torch_build_for
    assert pick(Facts("win32", "AMD64", "528.33")).backend == "cu128"
    assert pick(Facts("win32", "AMD64", "528.24")).backend == "cpu"     # fine on Linux, too old on Windows
    assert pick(Facts("linux", "x86_64", "528.24")).backend == "cu128"
    assert pick(Facts("win32", "AMD64", "581.29")).backend == "cu130"
    assert pick(Facts("win32", "AMD64", None, rocm=True)).backend == "cpu"  # ROCm builds are Linux only
    apple = pick(Facts("darwin", "arm64"))
    assert apple.backend == "default" and apple.index_url is None and "MPS" in apple.reason
    assert pick(Facts("darwin", "x86_64")).backend == "default"
    assert torch_build.parse_nvidia_driver("garbage\n") is None


def test_installer_is_pip_when_uv_cannot_run(runtime: ModuleType, tmp_path: Path) -> None:
    broken = fake_program(tmp_path / "bin", "uv", "", code=126)
    chosen = runtime.choose_installer(str(broken))
    assert chosen.uv is None and "cannot run (exit 126" in chosen.description
    missing = runtime.choose_installer(str(tmp_path / "no-uv"))
    assert missing.uv is None and "cannot run" in missing.description
    good = runtime.choose_installer()
    assert good.uv is not None and good.description.startswith("uv 0.13.9 at ")


def test_wheels_folder_from_preference_or_environment(setup_steps: ModuleType, runtime: ModuleType,
                                                      tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {runtime.WHEELS_ENV: str(tmp_path / "b")}
    assert runtime.wheels_folder("", {}) is None
    assert runtime.wheels_folder("", env) == str(tmp_path / "b")
    assert runtime.wheels_folder(str(tmp_path / "a"), env) == str(tmp_path / "a")   # the preference wins
    with pytest.raises(setup_steps.RuntimeSetupError, match=r"'.*/gone' \(\$MVDUST3R_WHEELS\) does not exist"):
        runtime.wheels_folder("", {runtime.WHEELS_ENV: str(tmp_path / "gone")})


def test_a_failing_install_reports_command_output_and_hint(setup_steps: ModuleType, runtime: ModuleType,
                                                           torch_build: ModuleType, tmp_path: Path, uv_env: dict[str, str]) -> None:
    uv = runtime.find_uv()
    assert uv is not None
    (tmp_path / "wheels").mkdir()
    steps = runtime.plan_environment(tmp_path / "runtime", base_python=sys.executable, uv=uv,
                                     build=torch_build.TorchBuild("auto", "test"),
                                     requirements=("mvd-package-that-is-not-there",), wheels=str(tmp_path / "wheels"))
    job = setup_steps.Job(steps, tmp_path / "install.log", env=uv_env)
    job.start()
    assert job.wait(120) is setup_steps.JobState.FAILED
    assert job.step_index == 1 and job.returncode not in (0, None)
    assert job.error is not None
    assert "'Install PyTorch and the worker's libraries' failed" in job.error.message
    assert steps[1].command_line in job.error.message
    assert any("mvd-package-that-is-not-there" in line for line in job.error.log_tail), job.error.log_tail
    assert "no PyTorch build matches" in job.error.hint


def test_a_missing_program_fails_cleanly(setup_steps: ModuleType, tmp_path: Path) -> None:
    job = setup_steps.Job([setup_steps.Step("Run", (str(tmp_path / "no-such-program"),))], tmp_path / "log.txt")
    job.start()
    assert job.state is setup_steps.JobState.FAILED and job.error is not None
    assert "cannot start" in job.error.message and "no-such-program" in job.error.message


def test_cancel_stops_a_running_step(setup_steps: ModuleType, tmp_path: Path) -> None:
    job = setup_steps.Job([setup_steps.Step("Sleep", (sys.executable, "-c", "import time; time.sleep(60)")),
               setup_steps.Step("Never", (sys.executable, "-c", "print('unreachable')"))], tmp_path / "log.txt")
    job.start()
    started = time.monotonic()
    assert job.poll() is setup_steps.JobState.RUNNING
    job.cancel()
    assert job.state is setup_steps.JobState.CANCELLED and job.step_index == 0
    assert time.monotonic() - started < 10
    assert "unreachable" not in job.output() and "=== cancelled" in job.output()


def test_diagnose_gives_actionable_hints(setup_steps: ModuleType) -> None:
    assert "internet" in setup_steps.diagnose(["error: Failed to fetch: https://x", "dns error: failed to lookup"])
    assert "disk is full" in setup_steps.diagnose(["OSError: [Errno 28] No space left on device"])
    assert "Retry" in setup_steps.diagnose(["something unexpected"])


def test_uv_from_an_unpacked_extension_wheel_is_found_and_made_executable(runtime: ModuleType, tmp_path: Path) -> None:
    """Blender extracts bundled wheels verbatim: uv's binary sits in uv-X.data/scripts without +x.
    When several extensions bring a uv, the newest version wins (numerically: 0.13.10 > 0.13.9)."""
    real = runtime.find_uv()
    assert real is not None
    site = tmp_path / "site-packages"
    for version in ("0.13.9", "0.13.10", "0.9.30"):
        scripts = site / f"uv-{version}.data" / "scripts"
        scripts.mkdir(parents=True)
        shutil.copyfile(real, scripts / "uv")
        (scripts / "uv").chmod(0o644)
    found = runtime.find_uv([str(site)])
    assert found == str(site / "uv-0.13.10.data" / "scripts" / "uv")
    assert os.stat(found).st_mode & stat.S_IXUSR
    assert subprocess.run([found, "--version"], capture_output=True, text=True).stdout.startswith("uv ")


def test_the_installed_extension_brings_its_own_uv(setup_steps: ModuleType, runtime: ModuleType) -> None:
    """The linux-x64 zip's uv wheel, as Blender unpacked it into the user resources' .local
    (without its executable bit: find_uv sets it), not a uv of the test environment."""
    user = Path(os.environ["BLENDER_USER_RESOURCES"])
    bundled = next((user / "extensions" / ".local").glob("lib/python3*/site-packages/uv-0.13.9.data/scripts/uv"))
    bundled.chmod(0o644)   # as Blender leaves it (measured: 4.2.23 and 5.0.1 extract it 0644)
    assert runtime.find_uv() == str(bundled)
    assert os.access(bundled, os.X_OK)
    done = subprocess.run([str(bundled), "--version"], capture_output=True, text=True, env=setup_steps.subprocess_env())
    assert done.stdout.startswith("uv 0.13.9 ")
