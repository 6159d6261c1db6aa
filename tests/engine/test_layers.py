"""The rooms' import rules (docs/architecture.md), checked on the real modules in a fresh interpreter.

The interpreter is the worker's runtime, which HAS torch: an accidental ``import torch`` in the core
would succeed there, and so is caught here, not only where torch is missing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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


def test_the_engine_never_imports_bpy() -> None:
    count, found = imported("engine", ("bpy",))
    assert count >= 15 and found == [], f"the engine pulled in {found}"


def _import_graph() -> dict[str, set[str]]:
    """module → the package modules it imports (relative imports, at any depth in the file)."""
    import ast

    package = ROOT / "mvdust3r_blender"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
            target = f"{parent}.{node.module}" if node.module else parent
            for alias in node.names:  # `from . import x` names a module; `from .x import y` names x
                for candidate in (f"{target}.{alias.name}", target):
                    if candidate in modules:
                        graph[name].add(candidate)
                        break
    return graph


def test_the_import_graph_has_no_circle() -> None:
    graph = _import_graph()
    assert {"mvdust3r_blender.session", "mvdust3r_blender.core.protocol", "mvdust3r_blender.run"} <= set(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if target == module:
                continue
            assert state.get(target) != 1, " → ".join([*path[path.index(target):], target])
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_each_room_imports_only_what_the_map_allows() -> None:
    """docs/architecture.md: core imports nothing of the package above it; the engine only the core;
    session only the core and the preferences; importers only the core and the import options."""
    graph = _import_graph()
    allowed = {
        "mvdust3r_blender.core": ("mvdust3r_blender.core",),
        "mvdust3r_blender.engine": ("mvdust3r_blender.core", "mvdust3r_blender.engine"),
        "mvdust3r_blender.session": ("mvdust3r_blender.core", "mvdust3r_blender.preferences"),
        "mvdust3r_blender.importers": ("mvdust3r_blender.core", "mvdust3r_blender.importers",
                                       "mvdust3r_blender.import_options"),
    }
    for module, targets in graph.items():
        for room, rules in allowed.items():
            if module == room or module.startswith(room + "."):
                bad = sorted(t for t in targets if not any(t == r or t.startswith(r + ".") for r in rules))
                assert not bad, f"{module} imports {bad}, outside what {room} may import"
