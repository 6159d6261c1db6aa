"""build.py's test runner, for real: a suite leaves the temporary directory as it found it."""
from __future__ import annotations

import importlib.util
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mvdust3r_build", ROOT / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_a_suite_leaves_the_temporary_directory_as_it_found_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A suite whose tests leak (a forgotten mkdtemp, pytest's own tmp_path folders) run the way
    `python build.py test` runs each suite, with an empty folder as the temporary directory: the
    folder is empty again afterwards, and the tests passed."""
    watched = tmp_path / "tmp"
    watched.mkdir()
    tests = tmp_path / "suite" / "test_leaky.py"
    tests.parent.mkdir()
    tests.write_text(textwrap.dedent("""
        import tempfile

        def test_leaks(tmp_path):
            (tmp_path / "kept-by-pytest.txt").write_text("pytest keeps its last three runs")
            leaked = tempfile.mkdtemp(prefix="forgotten-")
            assert leaked.startswith(tempfile.gettempdir())
    """))
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    build = build_module()
    result = build.pytest_suite("leaky", Path(sys.executable), [str(tests)], {"TMPDIR": str(watched)})
    assert (result.code, result.passed, result.failed) == (0, 1, 0)
    assert sorted(p.name for p in watched.iterdir()) == []
