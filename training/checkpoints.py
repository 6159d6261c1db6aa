"""Training checkpoints in the official file format, so the project's loader reads what we train.

Official ``croco/utils/misc.save_model`` writes ``torch.save({'model', 'optimizer', 'scaler',
'args', 'epoch'})`` where ``args`` is an ``argparse.Namespace`` whose ``model`` field is the
constructor call ``AsymmetricCroCo3DStereoMultiView(...)`` (spec §1–§2). We write the same keys
(plus ``step``, ours, which the official loader ignores) and keep ``args`` to plain values so the
file also opens with ``torch.load(weights_only=True)`` and ``argparse.Namespace`` allow-listed.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvdust3r_blender.engine.checkpoint import ALLOWED_GLOBALS, MULTIVIEW_CLASS
from mvdust3r_blender.engine.config import ModelConfig


def model_string(cfg: ModelConfig) -> str:
    """The official constructor string of ``cfg`` (the released checkpoints' syntax, spec §1).

    The skip-CNN and Gaussian-MLP widths are hard-coded officially and not part of the string; a
    loader infers them from the weights' shapes, as ours does.
    """
    h, w = cfg.img_size
    text = (f"{MULTIVIEW_CLASS}(pos_embed='RoPE100', img_size=({h}, {w}), head_type='linear', "
            f"output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, 1e+09), "
            f"enc_embed_dim={cfg.enc_embed_dim}, enc_depth={cfg.enc_depth}, enc_num_heads={cfg.enc_num_heads}, "
            f"dec_embed_dim={cfg.dec_embed_dim}, dec_depth={cfg.dec_depth}, dec_num_heads={cfg.dec_num_heads}, "
            f"GS=True, sh_degree=0, pts_head_config={{'skip': True}}")
    if cfg.multi_ref:
        text += f", m_ref_flag=True, n_ref={cfg.n_ref}"
    return text + ")"


def save_training_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: ModelConfig,
                             step: int, epoch: int, run_args: dict[str, Any]) -> Path:
    """Write an official-format checkpoint atomically (temporary file, then rename).

    ``run_args`` (plain values only) become the ``args`` namespace next to ``model``.
    """
    args = argparse.Namespace(**{**run_args, "model": model_string(cfg)})
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {},
               "args": args, "epoch": epoch, "step": step}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_training_checkpoint`, opened without arbitrary unpickling."""
    with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
        return torch.load(path, map_location="cpu", weights_only=True)
