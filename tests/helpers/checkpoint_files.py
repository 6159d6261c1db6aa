"""Checkpoint files written the way the official training code writes them, for tests and bench/load.py.

``torch.save`` of ``{'model', 'optimizer', 'scaler', 'args', 'epoch'}`` with ``args`` an
``argparse.Namespace`` carrying the constructor string, and (optionally) a full AdamW state:
``exp_avg`` and ``exp_avg_sq`` per parameter, twice the weights, as the released files hold.
Also a page-cache eviction, so bench/load.py can time cold reads.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

import torch

from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import build_model
from mvdust3r_blender.engine.model_string import format_model_string


def random_state_dict(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the network's keys and shapes: floats uniform in [0, 0.02) (BatchNorm
    variances 1 + that), counters 7."""
    with torch.device("meta"):
        shapes = build_model(config).state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, meta in shapes.items():
        if meta.is_floating_point():
            out[key] = torch.rand(meta.shape, generator=gen).mul_(0.02).add_(1.0 if key.endswith("running_var") else 0.0)
        else:
            out[key] = torch.full(meta.shape, 7, dtype=meta.dtype)
    return out


def write_training_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], model_string: str,
                              with_moments: bool = True, extra_args: Optional[dict] = None) -> Path:
    """Write `state_dict` as an official training checkpoint; the model's tensors come first in the file.

    The AdamW moments are uninitialised memory (``empty_like``): a loader must never read them, and
    large ones then cost the writer no RAM (fresh pages read as zeros).
    """
    params = [t for k, t in state_dict.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    state = {}
    if with_moments:
        state = {i: {"step": torch.tensor(1000.0), "exp_avg": torch.empty_like(t),
                     "exp_avg_sq": torch.empty_like(t)} for i, t in enumerate(params)}
    optimizer = {"state": state, "param_groups": [{
        "lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.05, "amsgrad": False,
        "params": list(range(len(params)))}]}
    args = argparse.Namespace(model=model_string, lr=1e-4, epochs=100, **(extra_args or {}))
    torch.save({"model": state_dict, "optimizer": optimizer, "scaler": {"scale": 65536.0, "_growth_tracker": 0},
                "args": args, "epoch": 99}, path)
    return path


def write_like_release(path: Path, config: ModelConfig, seed: int = 0, with_moments: bool = True) -> Path:
    """A released-style checkpoint of `config` with random weights."""
    return write_training_checkpoint(path, random_state_dict(config, seed), format_model_string(config), with_moments)


def drop_from_page_cache(path: Path) -> None:
    """Flush `path` and evict it from the page cache, so the next read of it comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
