"""Shared fixtures: where the golden vectors are. Missing golden data is an error, never a skip.

Test runs never write into the user's checkpoint cache: unless the caller chose one, the cache
(``$MVDUST3R_CACHE_DIR``, inherited by spawned workers too) is a temporary folder for this run.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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
