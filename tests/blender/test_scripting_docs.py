"""The documentation's examples, run as written against the installed extension, from fresh
preferences (no model chosen or downloaded: the examples name the built-in one; the worker's Python
comes from ``$MVDUST3R_WORKER_PYTHON``, as on a render farm).

docs/scripting.md: the Python blocks run in order in one namespace; the first one defines the paths
(PHOTOS, SHOOTS, OUT; CHECKPOINT stays as written), which are replaced by this test's before the rest
runs. The shell examples' ``blender -b -c mvdust3r ...`` lines run through ``cli.main`` with
``$SHOOTS`` and ``$OUT`` replaced and globs expanded as a shell would. The sample summary has the
real table's header and counts that add up. The Python blocks of the other pages run with their
placeholder paths (``/path/scene.npz``, ``/path/out``) replaced by a real bundle and a folder."""
from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator

import bpy
import pytest

from installed import PACKAGE, ROOT, module, worker_python
from scripting_setup import scene_folder

DOC = ROOT / "docs" / "scripting.md"


def code_blocks(language: str, doc: Path = DOC) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)


@pytest.fixture
def fresh(ext: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh preferences (the factory reset before each test), the worker's Python from the environment."""
    monkeypatch.setenv("MVDUST3R_WORKER_PYTHON", worker_python())
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    assert prefs.checkpoint not in ("LOCAL", "BUILTIN") and prefs.bundle_folder == ""  # a download nobody made
    yield
    module("session").SESSION.shutdown()


def test_python_examples(fresh: None, tmp_path: Path) -> None:
    blocks = code_blocks("python")
    assert len(blocks) >= 6, f"{DOC} lost its Python examples"
    namespace: dict[str, Any] = {"__name__": "scripting_docs"}
    exec(compile(blocks[0], f"{DOC}:paths", "exec", dont_inherit=True), namespace)
    assert {"PHOTOS", "SHOOTS", "OUT", "CHECKPOINT"} <= set(namespace), "the first block must define the paths"
    shoots = tmp_path / "shoots"
    assert namespace["CHECKPOINT"] == "builtin"
    namespace.update(PHOTOS=str(scene_folder(shoots / "kitchen", 4)),
                     SHOOTS=[str(shoots / "kitchen"), str(scene_folder(shoots / "garage", 4, first=2))],
                     OUT=str(tmp_path / "out"))
    try:
        for k, block in enumerate(blocks[1:], 1):
            exec(compile(block, f"{DOC}:python block {k + 1}", "exec", dont_inherit=True), namespace)
    finally:
        operator = namespace.get("MYPIPELINE_OT_reconstruct_folder")
        if operator is not None and operator.is_registered:
            bpy.utils.unregister_class(operator)
    out = tmp_path / "out"
    # what the examples did
    assert namespace["report"].ok and {s.name for s in namespace["report"].scenes} == {"kitchen", "garage"}
    assert (out / "kitchen.blend").is_file() and (out / "garage" / "points.ply").is_file()
    assert set(namespace["result"].exports) == {"colmap", "glb"} and set(namespace["written"]) == {"ply", "gaussians"}
    assert (out / "kitchen" / "points.ply").is_file()
    assert (out / "kitchen" / "scene.glb").is_file() and (out / "kitchen" / "colmap").is_dir()
    assert namespace["mvd"].__name__ == f"{PACKAGE}.api"
    # the operator example added its collection to the (batch's last) open file
    assert "kitchen" in bpy.data.collections
    # the sample summary is the real table's shape, and its counts add up
    (sample,) = code_blocks("text")[-1:]
    lines = sample.splitlines()
    assert lines[0] == namespace["report"].table().splitlines()[0]
    statuses = [line.split()[-1] for line in lines[1:] if line.split()[-1] in ("done", "skipped", "failed")]
    counts = re.search(r"(\d+) done, (\d+) skipped, (\d+) failed", sample)
    assert counts is not None
    assert [int(c) for c in counts.groups()] == [statuses.count(s) for s in ("done", "skipped", "failed")]


def test_shell_examples(fresh: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = code_blocks("sh")
    assert len(blocks) == 2, f"{DOC}: expected a block of variables, then the commands"
    variables = dict(pair.split("=", 1) for pair in shlex.split(blocks[0]))
    assert set(variables) == {"SHOOTS", "OUT"}
    shoots = tmp_path / "shoots"
    scene_folder(shoots / "kitchen", 4)
    scene_folder(shoots / "garage", 4, first=2)
    values = {"SHOOTS": str(shoots), "OUT": str(tmp_path / "out")}
    main = module("cli").main
    commands = [line for line in blocks[1].splitlines() if line.strip()]
    assert all(line.startswith("blender -b -c mvdust3r ") for line in commands)
    for line in commands:
        for name, value in values.items():
            line = line.replace(f'"${name}"', shlex.quote(value))
        words = []
        for word in shlex.split(line)[4:]:
            words += sorted(glob.glob(word)) if "*" in word else [word]
        assert main(words) == 0, f"{line}\n{capsys.readouterr().err}"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.blend")) == ["garage.blend", "kitchen-points.blend", "kitchen.blend"]
    assert (out / "kitchen" / "points.ply").is_file() and (out / "garage" / "scene.glb").is_file()
    bpy.ops.wm.open_mainfile(filepath=str(out / "kitchen-points.blend"))
    assert not [o for o in bpy.data.objects if o.name.endswith("Gaussians")]


@pytest.mark.parametrize("page", ["import.md", "exports.md"])
def test_other_pages_python_examples(page: str, fresh: None, tmp_path: Path, make_bundle: Callable[..., Any]) -> None:
    bundle = module("core.bundle").write_bundle(make_bundle(), tmp_path / "scene.npz")
    blocks = code_blocks("python", ROOT / "docs" / page)
    assert blocks, f"docs/{page} lost its Python example"
    for k, block in enumerate(blocks, 1):
        code = block.replace("/path/scene.npz", str(bundle)).replace("/path/out", str(tmp_path / "out"))
        exec(compile(code, f"docs/{page}: python block {k}", "exec", dont_inherit=True), {"__name__": "docs"})
    if page == "exports.md":
        assert {p.name for p in (tmp_path / "out").iterdir()} >= {"points.ply", "gaussians.ply", "scene.splat",
                                                                   "colmap", "scene.glb"}
