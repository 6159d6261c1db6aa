"""Shared fixtures: where the golden vectors are. Missing golden data is an error, never a skip.

Test runs never write into the user's checkpoint cache: unless the caller chose one, the cache
(``$MVDUST3R_CACHE_DIR``, inherited by spawned workers too) is a temporary folder for this run.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MVDUST3R_CACHE_DIR", tempfile.mkdtemp(prefix="mvdust3r-test-cache-"))


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


@pytest.fixture(scope="session")
def remote_host() -> Iterator[Any]:
    """A real sshd on 127.0.0.1 and a throw-away user: the remote GPU machine (tests/remote_host.py).
    Started once per test run, stopped (user, processes, files) at its end."""
    import remote_host as host_module

    host = host_module.start(host_module.default_worker_python())
    try:
        yield host
    finally:
        host.stop()
