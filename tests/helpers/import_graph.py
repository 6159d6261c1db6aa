"""The package's import graph (used by tests/engine/test_layers.py) in three numbers: rooms, floors, circles.

    python -m tests.helpers.import_graph

A *room* is a first-level part of ``mvdust3r_blender`` (a sub-package such as ``core`` or
``engine``, or a top-level module such as ``session``); the graph is every relative import in every
module (at any depth in the file, so imports inside functions count). *Floors* is the longest chain
of imports between different rooms (rooms on the chain, the ground floor counting 1) once the rooms
that import each other are merged; *circles* counts the groups of modules that import each other
(strongly connected components with more than one module). Pure ``ast``: nothing is imported.
"""
from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mvdust3r_blender"


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the package modules it imports (relative imports, at any depth in the file)."""
    package = root / PACKAGE
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
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
                        if candidate != name:
                            graph[name].add(candidate)
                        break
    return graph


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components, iterative enough for a package of a few hundred modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            found.append(group)

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def measure(root: Path = ROOT) -> dict[str, object]:
    graph = module_graph(root)
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room_of(module), set()).update(room_of(t) for t in targets if room_of(t) != room_of(module))
    merged = {room: i for i, group in enumerate(strongly_connected(rooms)) for room in group}
    condensed: dict[int, set[int]] = {}
    for room, targets in rooms.items():
        condensed.setdefault(merged[room], set()).update(merged[t] for t in targets if merged[t] != merged[room])

    @cache
    def height(node: int) -> int:
        return 1 + max((height(t) for t in condensed.get(node, ())), default=0)

    floors = max(height(n) for n in condensed)
    room_circles = [sorted(g) for g in strongly_connected(rooms) if len(g) > 1]
    return {"modules": len(graph), "rooms": len(rooms), "floors": floors, "circles": len(circles),
            "room circles": room_circles, "module circles": [sorted(c) for c in circles],
            "room names": sorted(rooms)}


def main() -> None:
    for key, value in measure().items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
