"""MV-DUSt3R+ for Blender: unposed photos in, points, cameras and Gaussians out.

This package is imported by two processes: Blender (the add-on) and the worker (``engine``,
with torch and without bpy). So nothing here imports bpy at import time; ``register()`` does,
through the Blender-side modules listed in ``_MODULES`` (each has ``register``/``unregister``).
"""
from __future__ import annotations

import importlib

# Blender-side modules, registered in this order and unregistered in reverse.
_MODULES: tuple[str, ...] = ("operators_import", "operators_camera", "operators_align", "handlers", "properties",
                             "result_settings", "preferences", "run", "operators_setup", "operators_farm",
                             "operators_run", "operators_result", "panel", "cli")


def register() -> None:
    for name in _MODULES:
        importlib.import_module(f".{name}", __package__).register()


def unregister() -> None:
    for name in reversed(_MODULES):
        importlib.import_module(f".{name}", __package__).unregister()
