"""Shared fixtures: where the golden vectors are. Missing golden data is an error, never a skip.

Test runs never write into the user's checkpoint cache: unless the caller chose one, the cache
(``$MVDUST3R_CACHE_DIR``, inherited by spawned workers too) is a temporary folder for this run.
"""
from __future__ import annotations

import atexit
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if "MVDUST3R_CACHE_DIR" not in os.environ:   # this run's own cache, removed when the run ends
    os.environ["MVDUST3R_CACHE_DIR"] = tempfile.mkdtemp(prefix="mvdust3r-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MVDUST3R_CACHE_DIR"], True)


def golden_dir() -> Path:
    """``$MVDUST3R_GOLDEN`` or ``../shared/golden`` beside the checkout (where CI has it)."""
    path = Path(os.environ.get("MVDUST3R_GOLDEN", ROOT.parent / "shared" / "golden"))
    if not (path / "README.md").is_file():
        raise RuntimeError(f"golden vectors not found at {path}: put shared/ beside the checkout "
                           "or set MVDUST3R_GOLDEN")
    return path


@pytest.fixture(scope="session")
def golden() -> Path:
    return golden_dir()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a real, full file system: a 1 MiB tmpfs mounted under tmp_path and filled to the
    last byte (so creating an empty file works, writing any data fails with ENOSPC). Mounting needs
    root, which the test machines have; elsewhere this fails loudly rather than skipping."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk tests mount a small tmpfs, which needs root")
    mount = tmp_path / "full-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder on a real read-only file system (a tmpfs mounted ro): root, which the test machines
    run as, ignores permission bits, not a read-only mount."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture(scope="session")
def remote_host() -> Iterator[Any]:
    """A real sshd on 127.0.0.1 and a throw-away user: the remote GPU machine (tests/helpers/remote_host.py).
    Started once per test run, stopped (user, processes, files) at its end."""
    from tests.helpers import remote_host as host_module

    host = host_module.start(host_module.default_worker_python())
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def ray_farm() -> Iterator[Any]:
    """A real two-node Ray cluster on 127.0.0.1 with token authentication (tests/helpers/ray_cluster.py),
    started once per test run in the worker runtime, stopped (processes, files) at its end."""
    from tests.helpers import ray_cluster

    cluster = ray_cluster.start(nodes=2)
    try:
        yield cluster
    finally:
        cluster.stop()
