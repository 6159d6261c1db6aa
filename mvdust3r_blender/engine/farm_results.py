"""A farm scene's result as it lands on the driver: checked, then written where its request said.

Results come back from a :class:`~.farm_actor.SceneActor` as bytes with SHA-256s; each file is
checked, the bundle read with the bundle reader's full check and given the local photo paths, and
everything is written atomically where the request said. A scene is ``done`` only then.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_file, sibling
from ..core.farm import FarmError
from ..core.protocol.events import ResultEvent
from ..core.protocol.requests import ReconstructRequest
from .farm_actor import BUNDLE_NAME, EXPORTS_NAME


def write_result(request: ReconstructRequest, result: ResultEvent,
                 files: dict[str, tuple[bytes, str]]) -> tuple[Path, dict[str, str]]:
    """Check `files` (name → bytes and their SHA-256, as the actor sent them) and write them where
    `request` said: the bundle at its output, the exports under its export folder. Returns the
    bundle's path and each export format's file or folder; a damaged file, or one the scene did not
    ask for, raises :class:`~..core.farm.FarmError`."""
    from ..core.bundle import read_bundle, write_bundle

    for name, (data, digest) in files.items():
        if hashlib.sha256(data).hexdigest() != digest:
            raise FarmError(f"'{name}' arrived damaged (SHA-256 differs)")
    output = Path(request.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = sibling(output, ".npz")
    try:
        staged.write_bytes(files[BUNDLE_NAME][0])
        bundle = read_bundle(staged)  # every array checked: nothing unverified reaches the scene
    finally:
        staged.unlink(missing_ok=True)
    bundle.photo_paths = list(request.photos)
    write_bundle(bundle, output)  # atomic
    exports: dict[str, str] = {}
    if request.export_dir is not None:
        base = Path(request.export_dir).resolve()
        for name, (data, _) in files.items():
            if name == BUNDLE_NAME:
                continue
            target = (base / name.removeprefix(EXPORTS_NAME + "/")).resolve()
            if not name.startswith(EXPORTS_NAME + "/") or not target.is_relative_to(base):
                raise FarmError(f"the actor sent a file this scene did not ask for: '{name}'")
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target) as partial:
                partial.write_bytes(data)
        exports = {fmt: str(base / rel.removeprefix(EXPORTS_NAME + "/")) for fmt, rel in result.exports.items()}
    return output, exports


def scene_timings(result: ResultEvent, answer: dict[str, Any], sent: float, sent_at: float) -> dict[str, float]:
    """The worker's timings of a scene (`result`) and where the rest of its time went, from the
    actor's `answer` and when the driver sent it (`sent`: ``time.monotonic``; `sent_at`: ``time.time``)."""
    timings = dict(result.timings)
    # sent → landed, compute included; until the actor began (queue + photos' upload + scheduling);
    # the actor's own work around the worker's (photos written, results read); after it ended
    # (results' download, checks, writes). The last three use the nodes' clocks: on one machine exact.
    timings["farm"] = round(time.monotonic() - sent, 4)
    timings["before"] = round(float(answer["began"]) - sent_at, 4)
    timings["actor"] = round(float(answer["ended"]) - float(answer["began"]) - float(timings.get("total", 0.0)), 4)
    timings["after"] = round(time.time() - float(answer["ended"]), 4)
    return timings
