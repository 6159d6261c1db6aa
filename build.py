#!/usr/bin/env python3
"""Project tasks: set-up of the development environments, tests, the extension zip, the demo.

    python build.py test        set up everything that is missing, then run every test suite
    python build.py demo        reconstruct the shipped sample photos through the installed extension
    python build.py extension   build the extension zips into dist/, one per platform (Blender's builder)
    python build.py setup       only create / update the environments

Environments (at the repository root, made on first use, refreshed when their requirements change):

    .venv               the worker's runtime: torch (CPU wheel, pinned), numpy, pillow, opencv, safetensors
    .venv-blender-4.2   bpy 4.2.23 (oldest Blender the manifest supports) with numpy<2
    .venv-blender-5.0   bpy 5.0.1 (newest)
    .venv-typecheck     mypy, fake-bpy-module-4.2 and the engine's libraries (their own type stubs)

Standard library only: this file runs before any environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"  # the CPU wheel in the test environment; never let an unpinned torch pull CUDA


@dataclass(frozen=True)
class Env:
    """One virtual environment: where it lives and what it holds."""

    name: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return ROOT / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


RAY = "ray==2.60.0"  # token authentication needs 2.52+; the cluster's nodes should run the same version
ENGINE = Env(".venv", (
    TORCH, "numpy>=1.26", "pillow>=10", "opencv-python-headless>=4.8", "safetensors>=0.4",
    "pytest>=8", "psutil>=5.9", "plyfile>=1.0", "trimesh>=4",
    RAY,  # the farm's driver and the test cluster (engine/farm.py, tests/ray_cluster.py)
))
BLENDER = {
    "4.2": Env(".venv-blender-4.2", ("bpy==4.2.23", "numpy<2", "pytest>=8", "pillow>=10")),
    "5.0": Env(".venv-blender-5.0", ("bpy==5.0.1", "numpy<2", "pytest>=8", "pillow>=10")),
}
TYPECHECK = Env(".venv-typecheck", (
    "mypy==2.4.1", "fake-bpy-module-4.2", "numpy<2", TORCH, "pillow>=10", "opencv-python-headless>=4.8",
    "safetensors>=0.4", "types-psutil", RAY,
))


def log(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str | Path], **kw) -> int:
    log(" ".join(str(c) for c in cmd))
    return subprocess.call([str(c) for c in cmd], **kw)


def ensure_env(env: Env) -> Path:
    """Create `env` or bring it up to date; a stamp of its requirements makes re-runs instant."""
    stamp = env.path / ".requirements.json"
    wanted = json.dumps(sorted(env.requirements))
    if stamp.exists() and stamp.read_text() == wanted and env.python.exists():
        return env.python
    if not env.python.exists():
        log(f"creating {env.name}")
        if run([sys.executable, "-m", "venv", env.path]) != 0:
            sys.exit(f"could not create the virtual environment {env.path}")
    log(f"installing into {env.name}: {' '.join(env.requirements)}")
    if run([env.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *env.requirements]) != 0:
        sys.exit(f"pip could not install the requirements of {env.name} (see the messages above)")
    stamp.write_text(wanted)
    return env.python


def setup() -> None:
    for env in (ENGINE, *BLENDER.values(), TYPECHECK):
        ensure_env(env)


SSHD = Path("/usr/sbin/sshd")


def ensure_sshd() -> None:
    """OpenSSH's server, which the remote-worker tests start on 127.0.0.1 (tests/helpers/remote_host.py):
    installed from Debian's openssh-server when missing (as root, with apt-get), else a clear stop."""
    import shutil

    if SSHD.is_file():
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"the remote-worker tests need OpenSSH's server ({SSHD}) and root: install the package "
                 "openssh-server and run the tests as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run(["apt-get", "update", "-qq"], env=env) != 0 or run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"], env=env) != 0:
        sys.exit("apt-get could not install openssh-server (its messages are above)")
    if not SSHD.is_file():
        sys.exit(f"openssh-server is installed but {SSHD} is missing")


NPM_TOOLS = ROOT / ".npm-tools"
NPM_PACKAGES = ("@playcanvas/splat-transform@3.10.2", "gltf-validator@2.0.0-dev.3.10")
"""The independent readers the splat-export tests check the files with (tests/helpers/npm_tools.py)."""


def ensure_npm_tools() -> None:
    """Node.js packages the tests run as independent readers, installed into the gitignored
    .npm-tools/ (a stamp of NPM_PACKAGES makes re-runs instant); Node.js and npm themselves come
    from Debian's nodejs/npm when missing (as root, with apt-get), else a clear stop."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit("the export tests need Node.js and npm: install the packages nodejs and npm")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if run(["apt-get", "update", "-qq"], env=env) != 0 or run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nodejs", "npm"], env=env) != 0:
            sys.exit("apt-get could not install nodejs and npm (its messages are above)")
    stamp = NPM_TOOLS / ".packages.json"
    wanted = json.dumps(sorted(NPM_PACKAGES))
    if stamp.is_file() and stamp.read_text() == wanted:
        return
    NPM_TOOLS.mkdir(exist_ok=True)
    (NPM_TOOLS / "package.json").write_text('{"private": true}\n')
    if run(["npm", "install", "--prefix", NPM_TOOLS, "--no-audit", "--no-fund", "--no-save", *NPM_PACKAGES]) != 0:
        sys.exit("npm could not install the export tests' readers (see the messages above)")
    stamp.write_text(wanted)


@dataclass
class SuiteResult:
    name: str
    code: int
    passed: int = 0
    failed: int = 0
    skipped: int = 0


def pytest_suite(name: str, python: Path, paths: list[str], extra_env: dict[str, str]) -> SuiteResult:
    """Run pytest on `paths` with `python`; count its results from a JUnit report."""
    env = {**os.environ, **extra_env, "PYTHONDONTWRITEBYTECODE": "1"}
    log(f"suite {name}")
    with tempfile.TemporaryDirectory(prefix="mvd-test-") as tmp:   # removed afterwards, unlike mkdtemp
        report = Path(tmp) / "junit.xml"
        # pytest's own temporary folders go inside this one too: /tmp is left as it was found
        code = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    f"--basetemp={Path(tmp) / 'pytest'}", *paths], cwd=ROOT, env={**env, "TMPDIR": tmp})
        suites = list(ET.parse(report).getroot().iter("testsuite")) if report.exists() else []
    result = SuiteResult(name, code)
    for suite in suites:
        tests, fail = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        result.passed += tests - fail - skip
        result.failed += fail
        result.skipped += skip
    if code not in (0, 5) and result.failed == 0:
        result.failed = 1  # pytest itself failed (collection error, crash): count it
    if code == 5:  # no test collected in a suite that must have tests
        result.failed += 1
    return result


def test(args: argparse.Namespace) -> int:
    setup()
    ensure_sshd()
    ensure_npm_tools()
    engine_python = str(ENGINE.python)
    common = {"MVDUST3R_WORKER_PYTHON": engine_python}
    results = [pytest_suite("engine", ENGINE.python, ["tests/engine", "tests/training"], common)]
    # The private-runtime test's wheels folder and uv cache (about 0.3 GB), filled by the first
    # Blender suite and reused by the second; removed when the run ends.
    with tempfile.TemporaryDirectory(prefix="mvd-runtime-cache-") as runtime_cache:
        for version, env in BLENDER.items():
            results.append(pytest_suite(f"blender-{version}", env.python, ["tests/blender"], {
                **common, "MVDUST3R_BLENDER_SERIES": version, "MVDUST3R_TEST_RUNTIME_CACHE": runtime_cache,
            }))
    results.append(typecheck())
    log("summary:")
    for r in results:
        log(f"  {r.name:<14} {'ok' if r.code in (0,) and r.failed == 0 else 'FAILED'}: "
            f"{r.passed} passed, {r.failed} failed, {r.skipped} skipped")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if failed == 0 and all(r.code == 0 for r in results) else 1


def typecheck() -> SuiteResult:
    """mypy over the add-on (Blender side against fake-bpy-module, the oldest supported API; engine
    against torch's own types), training/ and bench/: the files and rules are in pyproject.toml."""
    python = ensure_env(TYPECHECK)
    code = run([python, "-m", "mypy", "--config-file", ROOT / "pyproject.toml"], cwd=ROOT)
    return SuiteResult("typecheck", code, passed=int(code == 0), failed=int(code != 0))


EXTENSION_STAGE = ROOT / "build" / "extension"
DIST = ROOT / "dist"


def blender_ext_script() -> Path:
    """Blender's own extension validator/builder, shipped in the oldest supported bpy wheel.

    It is a stand-alone script that runs under plain Python 3.11 (no bpy needed), so the zip is
    checked by exactly the rules Blender applies when it installs the extension.
    """
    python = ensure_env(BLENDER["4.2"])
    found = sorted(python.parent.parent.glob("lib/python3*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        sys.exit(f"blender_ext.py not found in {BLENDER['4.2'].path}: reinstall it (delete the folder, run setup)")
    return found[0]


DEFAULT_MODEL = ROOT / "models" / "default.safetensors"  # shipped in the zip; the demo's model
LICENSE = ROOT / "LICENSE"  # GPL-3.0-or-later, the manifest's licence; shipped in the zip

# uv ships inside the extension: blender_manifest.toml lists one uv wheel per platform (as
# ``./wheels/<file>``) and Blender's builder puts each platform's wheel into that platform's zip.
# The wheels are fetched from PyPI at build time into the gitignored .whl/ and must match these
# sha256 sums (PyPI's); a new uv version means new file names here and in the manifest.
BUNDLED_WHEELS: dict[str, str] = {
    "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl":
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    "uv-0.13.9-py3-none-win_amd64.whl":
        "6a44b2ed8111d2f60d2b92627c5dccda3f7ed7570b18ce115e569cd68c28246b",
    "uv-0.13.9-py3-none-macosx_11_0_arm64.whl":
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
    "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl":
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
}
WHEEL_CACHE = ROOT / ".whl"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(filename: str) -> Path:
    """The bundled wheel `filename` in .whl/, downloaded with pip if missing; its sha256 must be the
    pinned one (a mismatch is an error, never a silent re-download)."""
    expected = BUNDLED_WHEELS.get(filename)
    if expected is None:
        sys.exit(f"blender_manifest.toml lists {filename}, which has no pinned sha256 in build.py's BUNDLED_WHEELS")
    target = WHEEL_CACHE / filename
    if not target.is_file():
        name, version, _python, _abi, platforms = filename[:-len(".whl")].split("-")
        WHEEL_CACHE.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mvd-wheel-", dir=WHEEL_CACHE) as tmp:
            tags = [arg for tag in platforms.split(".") for arg in ("--platform", tag)]
            code = run([ensure_env(BLENDER["4.2"]), "-m", "pip", "download", "-q", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--implementation", "py", "--abi", "none",
                        "--python-version", "3.11", *tags, "-d", tmp, f"{name}=={version}"])
            downloaded = Path(tmp) / filename
            if code != 0 or not downloaded.is_file():
                sys.exit(f"pip could not download {filename} from PyPI (messages above)")
            downloaded.replace(target)
    actual = sha256(target)
    if actual != expected:
        sys.exit(f"{target} has sha256 {actual}, not the pinned {expected}: delete it and build again; "
                 "if PyPI's file changed, check why before pinning the new sum")
    return target


def host_platform() -> str:
    """This machine in Blender's platform words (``linux-x64``, ``windows-x64``, ``macos-arm64``)."""
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(),
                                                                       platform.machine().lower())
    return f"{system}-{machine}"


def build_extension(stage: Path = EXTENSION_STAGE, out_dir: Path = DIST,
                    manifest_path: Path = ROOT / "blender_manifest.toml") -> dict[str, Path]:
    """Stage the extension (manifest + the package's contents + the built-in model + LICENSE + the
    listed wheels), validate it, and build one zip per platform of the manifest.

    The repository root holds the manifest but the extension's top level must be the package
    itself, hence the staging folder. Returns ``{platform: <out_dir>/mvdust3r_blender-<version>-
    <platform with _>.zip}`` (Blender's names, e.g. ``...-linux_x64.zip``); each zip carries only
    its platform's uv wheel. Raises SystemExit with Blender's messages when validation or the build
    fails.
    """
    import tomllib

    manifest = tomllib.loads(manifest_path.read_text())
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(ROOT / "mvdust3r_blender", stage,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", "training", "bench"))
    shutil.copy2(manifest_path, stage / "blender_manifest.toml")
    for needed in (DEFAULT_MODEL, LICENSE):
        if not needed.is_file():
            sys.exit(f"{needed} is missing (it is committed to the repository)")
    shutil.copy2(LICENSE, stage / "LICENSE")
    (stage / "models").mkdir()
    shutil.copy2(DEFAULT_MODEL, stage / "models" / DEFAULT_MODEL.name)
    for wheel in manifest.get("wheels", []):
        target = stage / wheel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fetch_wheel(Path(wheel).name), target)
    script = blender_ext_script()
    python = BLENDER["4.2"].python
    log(f"{python} {script} validate {stage}")
    checked = subprocess.run([str(python), str(script), "validate", str(stage)], capture_output=True, text=True)
    if checked.returncode != 0:   # its success line ("Success parsing TOML ...") is noise; its errors are not
        print(checked.stdout + checked.stderr, end="", file=sys.stderr)
        sys.exit(f"the extension in {stage} does not validate (Blender's messages above)")
    out_dir.mkdir(parents=True, exist_ok=True)
    zips = {p: out_dir / f"{manifest['id']}-{manifest['version']}-{p.replace('-', '_')}.zip"
            for p in manifest.get("platforms", [])}
    if not zips:
        sys.exit(f"{manifest_path} declares no platforms: each platform's zip carries its own uv")
    for path in zips.values():
        path.unlink(missing_ok=True)
    code = run([python, script, "build", "--split-platforms", "--source-dir", stage, "--output-dir", out_dir],
               stdout=subprocess.DEVNULL)
    missing = [str(path) for path in zips.values() if not path.is_file()]
    if code != 0 or missing:
        sys.exit(f"Blender's builder could not build {', '.join(missing) or out_dir} from {stage} (messages above)")
    for path in zips.values():
        log(f"built {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return zips


def demo(args: argparse.Namespace) -> int:
    """Set up what is missing, build the zip, then run demo/run_demo.py under Blender 5.0's Python:
    it installs the zip into a temporary Blender user folder and reconstructs samples/room through
    the installed extension's API into out/demo/ (demo.blend, preview.png)."""
    started = time.perf_counter()
    engine = ensure_env(ENGINE)
    blender = ensure_env(BLENDER["5.0"])
    log(f"demo: environments ready in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    zips = build_extension()
    if host_platform() not in zips:
        sys.exit(f"no extension zip for this platform ({host_platform()}): the manifest lists {', '.join(zips)}")
    zip_path = zips[host_platform()]
    log(f"demo: extension built in {time.perf_counter() - started:.1f} s")
    command: list[str | Path] = [blender, ROOT / "demo" / "run_demo.py", "--zip", zip_path,
                                 "--worker-python", engine, "--out", args.out]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    return run(command, cwd=ROOT)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create / update the environments")
    sub.add_parser("test", help="set up, then run every test suite")
    sub.add_parser("extension", help="build the extension zips into dist/, one per platform (Blender's builder)")
    demo_parser = sub.add_parser("demo", help="reconstruct samples/room through the installed extension")
    demo_parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="output folder")
    demo_parser.add_argument("--checkpoint", type=Path,
                             help="model file (default: the built-in models/default.safetensors)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.command == "setup":
        setup()
        code = 0
    elif args.command == "extension":
        build_extension()
        code = 0
    elif args.command == "demo":
        code = demo(args)
    else:
        code = test(args)
    log(f"{args.command} finished in {time.perf_counter() - started:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
