"""The rooms' import rules, read from the table in docs/architecture.md and checked on the real modules.

The page is the rule: each row names a room and the rooms it may import, and any import of the
package that the row does not list fails here (imports inside functions count). The bpy / torch
rules are checked in a fresh interpreter — the worker's runtime, which HAS torch, so an accidental
``import torch`` in the core would succeed there and is caught here, not only where torch is missing.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.import_graph import PACKAGE, module_graph, strongly_connected

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"

_IMPORT_ALL = """
import importlib, pkgutil, sys
import mvdust3r_blender.{package} as package
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names), " ".join(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def imported(package: str, forbidden: tuple[str, ...]) -> tuple[int, list[str]]:
    """(modules imported, forbidden modules that came with them) for every module under `package`."""
    code = _IMPORT_ALL.format(package=package, forbidden=forbidden)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, *found = done.stdout.split()
    return int(count), found


def test_the_core_imports_neither_bpy_nor_torch() -> None:
    count, found = imported("core", ("bpy", "torch", "cv2", "PIL", "safetensors"))
    assert count >= 12 and found == [], f"the core pulled in {found}"


def test_the_client_imports_neither_bpy_nor_torch() -> None:
    count, found = imported("client", ("bpy", "torch", "cv2", "PIL", "safetensors"))
    assert count >= 4 and found == [], f"the client pulled in {found}"


def test_the_engine_never_imports_bpy() -> None:
    count, found = imported("engine", ("bpy",))
    assert count >= 15 and found == [], f"the engine pulled in {found}"


def room_rules(page: Path = PAGE) -> dict[str, set[str]]:
    """room (``core``, ``session``, ...) → the rooms it may import, from the page's "Rooms" table."""
    rules: dict[str, set[str]] = {}
    section = page.read_text(encoding="utf-8").split("## Rooms", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        room, = re.findall(r"`([^`]+)`", cells[0])
        rules[_room_name(room)] = {_room_name(r) for r in re.findall(r"`([^`]+)`", cells[1])}
    return rules


def _room_name(written: str) -> str:
    """``core/`` → ``core``, ``session.py`` → ``session``, ``__init__.py`` → the package itself."""
    name = written.removesuffix("/").removesuffix(".py")
    return "" if name == "__init__" else name


def _room(module: str) -> str:
    """The room of a module: its first name under the package ('' for the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_page_names_every_room() -> None:
    rooms = {_room(m) for m in module_graph()}
    rules = room_rules()
    assert rooms == set(rules), f"rooms without a row: {sorted(rooms - set(rules))}; " \
                                f"rows without a room: {sorted(set(rules) - rooms)}"


def test_each_room_imports_only_what_the_page_allows() -> None:
    rules = room_rules()
    bad = sorted(f"{module} → {target}" for module, targets in module_graph().items() for target in targets
                 if _room(target) != _room(module) and _room(target) not in rules[_room(module)])
    assert not bad, "imports the page's Rooms table does not allow:\n" + "\n".join(bad)


def test_the_rules_follow_the_floors() -> None:
    """The table is listed from the ground floor up: a room may import only rooms above its row."""
    rules = room_rules()
    order = list(rules)
    upward = sorted(f"{room} → {target}" for room, targets in rules.items() for target in targets
                    if order.index(target) >= order.index(room))
    assert not upward, f"rows that allow an import of a room on or above their floor: {upward}"


def test_the_import_graph_has_no_circle() -> None:
    graph = module_graph()
    assert {f"{PACKAGE}.session", f"{PACKAGE}.core.protocol", f"{PACKAGE}.run"} <= set(graph)
    circles = [sorted(group) for group in strongly_connected(graph) if len(group) > 1]
    assert not circles, f"modules that import each other: {circles}"
