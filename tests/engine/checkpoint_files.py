"""Checkpoint files written the way the official training code writes them, for tests and bench/load.py.

``torch.save`` of ``{'model', 'optimizer', 'scaler', 'args', 'epoch'}`` with ``args`` an
``argparse.Namespace`` carrying the constructor string, and (optionally) a full AdamW state:
``exp_avg`` and ``exp_avg_sq`` per parameter, twice the weights, as the released files hold.
Also the page-cache tools the memory test uses to prove the optimizer state was never read.
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import struct
import zipfile
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


def record_ranges(path: Path) -> dict[int, tuple[int, int]]:
    """Byte range [start, end) of every tensor record ``<archive>/data/<key>`` in a torch.save zip."""
    ranges = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if len(parts) == 3 and parts[1] == "data" and parts[2].isdigit():
                raw.seek(info.header_offset)
                header = struct.unpack("<IHHHHHIIIHH", raw.read(30))
                start = info.header_offset + 30 + header[9] + header[10]
                ranges[int(parts[2])] = (start, start + info.file_size)
    return ranges


def drop_from_page_cache(path: Path) -> None:
    """Flush `path` and evict it from the page cache, so residency afterwards shows what was read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_pages(path: Path) -> list[bool]:
    """Which pages of `path` are in the page cache (mincore(2)), without reading any."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return [bool(v & 1) for v in vec]
