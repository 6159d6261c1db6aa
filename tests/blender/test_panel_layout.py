"""Every sidebar panel's draw(), recorded as text (rows, labels, properties, operators with their
settings, enabled state) in each state an artist meets — empty, ready, running, done, error — and
compared with the reviewed copy in ``tests/blender/layouts/<state>.txt``. A button that disappears,
a label that changes or a control greyed out fails here; after a deliberate change, rerun with
``MVDUST3R_UPDATE_LAYOUTS=1``, review the diff of the text files and commit them."""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import bpy
import pytest
from installed import PACKAGE, module
from recording_layout import RecordingLayout
from test_panel import configure_ready

from tests.helpers.photos import flat_photos

LAYOUTS = Path(__file__).parent / "layouts"
PANELS = ("VIEW3D_PT_mvdust3r_photos", "VIEW3D_PT_mvdust3r_options", "VIEW3D_PT_mvdust3r_run",
          "VIEW3D_PT_mvdust3r_result", "VIEW3D_PT_mvdust3r_placement")


def _word(value: Any, tmp: Path) -> str:
    if isinstance(value, bpy.types.ID):
        return f"<{type(value).__name__} {value.name!r}>"
    if isinstance(value, bpy.types.bpy_struct):
        return f"<{type(value).__name__}>"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value).replace(str(tmp), "<tmp>")


def as_text(layout: RecordingLayout, tmp: Path) -> list[str]:
    """One line per call: ``label(text='…', icon='…')``, ``prop(<…>, 'name')``, ``set enabled(False)``."""
    lines = []
    for name, args, kwargs in layout.log:
        words = [_word(a, tmp) for a in args] + [f"{k}={_word(v, tmp)}" for k, v in sorted(kwargs.items())]
        lines.append(re.sub(r"photos-\w{8}", "photos-<tmp>", f"{name}({', '.join(words)})"))  # make_bundle's folder
    return lines


def draw_all(tmp: Path) -> str:
    text = []
    for name in PANELS:
        layout = RecordingLayout()
        getattr(module("panel"), name).draw(SimpleNamespace(layout=layout), bpy.context)
        text += [f"== {name}", *as_text(layout, tmp)]
    return "\n".join(text) + "\n"


def compare(state: str, tmp: Path) -> None:
    drawn = draw_all(tmp)
    reviewed = LAYOUTS / f"{state}.txt"
    if os.environ.get("MVDUST3R_UPDATE_LAYOUTS"):
        reviewed.parent.mkdir(exist_ok=True)
        reviewed.write_text(drawn, encoding="utf-8")
    assert reviewed.is_file(), f"no reviewed layout {reviewed}: run with MVDUST3R_UPDATE_LAYOUTS=1 and review it"
    assert drawn == reviewed.read_text(encoding="utf-8"), \
        f"the panels' layout in state '{state}' differs from {reviewed} (update and review it if intended)"


def _empty(ext: ModuleType, golden: Path, tmp: Path, make_bundle: Callable[..., Any]) -> None:
    pass  # fresh preferences (no runtime, no model), no photos, no result


def _ready(ext: ModuleType, golden: Path, tmp: Path, make_bundle: Callable[..., Any]) -> None:
    configure_ready(golden)
    paths = flat_photos(tmp / "shoot", [(8, 6)] * 4, [(10, 20, 30)] * 4, name=["a.png", "b.png", "c.png", "d.png"])
    bpy.ops.mvdust3r_blender.add_photos(directory=str(tmp / "shoot") + os.sep, files=[{"name": p.name} for p in paths])


def _running(ext: ModuleType, golden: Path, tmp: Path, make_bundle: Callable[..., Any]) -> None:
    _ready(ext, golden, tmp, make_bundle)
    run, session = module("run"), module("session")
    spec = session.RunSpec(photos=("/a.png", "/b.png"), worker=session.WorkerSettings("/p", "/c", "cpu"))
    controller = run.RunController(spec, scene_name="Scene")
    controller.stage, controller.fraction = "network", 0.4
    controller.publish()
    run._active = controller


def _done(ext: ModuleType, golden: Path, tmp: Path, make_bundle: Callable[..., Any]) -> None:
    _ready(ext, golden, tmp, make_bundle)
    path = module("core.bundle").write_bundle(make_bundle(), tmp / "shoot.npz")
    bpy.ops.mesh.primitive_cube_add(size=200.0)  # encloses everything: the F12 warning shows
    assert bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path)) == {"FINISHED"}
    state = bpy.context.window_manager.mvdust3r_run
    state.state, state.message, state.timings = "DONE", "4 photos → shoot", "total 2.0 s · network 1.2 s"


def _error(ext: ModuleType, golden: Path, tmp: Path, make_bundle: Callable[..., Any]) -> None:
    _ready(ext, golden, tmp, make_bundle)
    state = bpy.context.window_manager.mvdust3r_run
    state.state, state.message, state.hint = "FAILED", "cannot read photo 'x.png'", "remove it from the list"


STATES = {"empty": _empty, "ready": _ready, "running": _running, "done": _done, "error": _error}


@pytest.mark.parametrize("state", list(STATES))
def test_panels_match_the_reviewed_layout(state: str, ext: ModuleType, golden: Path, tmp_path: Path,
                                          make_bundle: Callable[..., Any]) -> None:
    assert PACKAGE in bpy.context.preferences.addons
    STATES[state](ext, golden, tmp_path, make_bundle)
    try:
        compare(state, tmp_path)
    finally:
        module("run")._active = None
