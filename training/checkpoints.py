"""Training checkpoints in the official file format, so the project's loader reads what we train.

Official ``croco/utils/misc.save_model`` writes ``torch.save({'model', 'optimizer', 'scaler',
'args', 'epoch'})`` where ``args`` is an ``argparse.Namespace`` whose ``model`` field is the
constructor call ``AsymmetricCroCo3DStereoMultiView(...)``. We write the same keys
(plus ``step``, ours, which the official loader ignores) and keep ``args`` to plain values so the
file also opens with ``torch.load(weights_only=True)`` and ``argparse.Namespace`` allow-listed.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvdust3r_blender.core.atomic import atomic_file
from mvdust3r_blender.engine.checkpoint import ALLOWED_GLOBALS
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model_string import format_model_string


def save_training_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: ModelConfig,
                             step: int, epoch: int, run_args: dict[str, Any]) -> Path:
    """Write an official-format checkpoint atomically (temporary file, then rename).

    ``run_args`` (plain values only) become the ``args`` namespace next to ``model``.
    """
    args = argparse.Namespace(**{**run_args, "model": format_model_string(cfg)})
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {},
               "args": args, "epoch": epoch, "step": step}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_training_checkpoint`, opened without arbitrary unpickling."""
    with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
        return torch.load(path, map_location="cpu", weights_only=True)
