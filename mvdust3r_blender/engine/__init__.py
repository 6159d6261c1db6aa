"""The reconstruction engine: network, checkpoints, preprocessing, cameras, exports, worker.

Runs in the worker's own Python (torch installed there); never imports bpy. Importing this
package does not import torch: the numpy-only parts (exports, errors) are usable from Blender.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
