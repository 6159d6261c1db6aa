"""Load MV-DUSt3R / MV-DUSt3R+ checkpoints safely and without reading what inference never uses.

The released files are training checkpoints: a ``torch.save`` pickle of ``model`` (the state
dict), ``optimizer`` (AdamW moments, twice the weights), ``scaler``, ``epoch`` and ``args`` (an
``argparse.Namespace`` whose ``model`` string is the constructor call). They are opened with
``torch.load(weights_only=True, mmap=True)`` and an allow-list of exactly ``argparse.Namespace``,
so no code in the file can run and no tensor is read until it is touched: the optimizer state is
never paged in. The first load writes the weights and the network's settings to a safetensors
cache; later loads memory-map that cache and hand its tensors to the network without a copy
(the network is built on the ``meta`` device and the tensors are assigned). A ``.safetensors``
file written by :func:`save_safetensors` (our own shipped models) loads the same way.

The cache lives in ``$MVDUST3R_CACHE_DIR`` or ``~/.cache/mvdust3r_blender`` (or a directory the
caller passes); its metadata records the source path, size and modification time and a CRC-32 of
every tensor. A cache that does not match its source, does not parse, whose tensors do not fit the
network, or whose bytes no longer match their checksums (a damaged or edited file) is rebuilt from
the source with a warning — never trusted. Files are written to a temporary name and renamed into
place. What a file is comes from its first bytes, never its suffix.

One idea a module: :mod:`.reading` (safe unpickling, what a file is), :mod:`.settings` (the
network's settings a file holds), :mod:`.cache` (our safetensors files, the CRC-checked cache),
:mod:`.casting` (weights onto the device); here, the entry points.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..config import ModelConfig
from ..devices import resolve_device
from ..errors import CheckpointError
from .cache import (_DIGESTS, CACHE_ENV, _cache_root, _read_cache, _read_weights_file, _source_stamp,
                    _write_safetensors, cache_path, default_cache_dir, tensor_digests)
from .casting import _cast, _materialise
from .reading import ALLOWED_GLOBALS, PathLike, RawCheckpoint, _sniff, read_checkpoint
from .settings import _check_config, _empty_checked_model, _metadata, config_from_checkpoint

if TYPE_CHECKING:
    from ..model import MultiViewModel

log = logging.getLogger(__name__)

__all__ = ["ALLOWED_GLOBALS", "CACHE_ENV", "OpenedCheckpoint", "RawCheckpoint", "cache_path", "config_from_checkpoint",
           "default_cache_dir", "load_model", "open_checkpoint", "read_checkpoint", "save_safetensors",
           "tensor_digests"]

_HALF = (torch.float16, torch.bfloat16)


@dataclass
class OpenedCheckpoint:
    """A checkpoint whose file is read and checked (config, every key and shape) but whose weights
    are not materialised yet: memory-mapped, no RAM or GPU memory spent. The worker opens the next
    model before it frees the current one, so a bad file never costs the user the loaded model."""

    source: Path
    model: MultiViewModel               # the empty (meta-device) network of the file's config
    tensors: Mapping[str, torch.Tensor]

    def materialise(self, device: Union[str, torch.device] = "cpu",
                    dtype: Optional[torch.dtype] = None) -> "MultiViewModel":
        """The network with the weights on `device` in eval mode (see :func:`load_model`)."""
        target = resolve_device(str(device))
        if dtype is None and target.type == "cpu" and any(t.dtype in _HALF for t in self.tensors.values()):
            dtype = torch.float32
        model = _materialise(self.model, self.tensors, target, dtype)
        model.checkpoint_path = str(self.source.absolute())  # recorded in every bundle's meta
        return model


def open_checkpoint(path: PathLike, cache_dir: Optional[PathLike] = None) -> OpenedCheckpoint:
    """Read and check a ``.pth`` (through the cache) or ``.safetensors`` file without materialising
    its weights. Raises :class:`CheckpointError` naming the file."""
    source = Path(path).expanduser()
    if _sniff(source) == "safetensors":
        config, tensors = _read_weights_file(source)
        return OpenedCheckpoint(source, _empty_checked_model(config, tensors, str(source)), tensors)
    model, tensors = _load_through_cache(source, _cache_root(cache_dir))
    return OpenedCheckpoint(source, model, tensors)


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu", dtype: Optional[torch.dtype] = None,
               cache_dir: Optional[PathLike] = None) -> "MultiViewModel":
    """Load an official checkpoint (``.pth``) or one of our ``.safetensors`` files, in eval mode.

    `device` is ``"cpu"``, ``"cuda"`` (``"cuda:1"``), ``"mps"``, ``"auto"`` or a ``torch.device``; `dtype` (e.g.
    ``torch.float16``) casts floating weights except BatchNorm's, which stay float32; integer
    buffers are never cast. Without `dtype`, half-precision files (our shipped fp16 ``.safetensors``)
    are widened to float32 on the CPU, whose fp16 convolutions are slow reference code (≈ 50× slower
    here); elsewhere the stored dtype is kept. `cache_dir` overrides where ``.pth`` files are cached.
    On CPU with the stored dtype the weights stay memory-mapped: pages are read as the network uses them.
    The model remembers its file as ``model.checkpoint_path``.
    Raises :class:`CheckpointError` (naming the file) or :class:`DeviceError`.
    """
    resolve_device(str(device))  # a device this runtime lacks fails before any file is read
    return open_checkpoint(path, cache_dir).materialise(device, dtype)


def save_safetensors(state_dict_or_model: Union[Mapping[str, torch.Tensor], nn.Module], config: ModelConfig,
                     path: PathLike, dtype: Optional[torch.dtype] = None) -> Path:
    """Write weights + `config` (as metadata) to a ``.safetensors`` file that :func:`load_model` reads.

    `dtype` (e.g. ``torch.float16`` for a shipped model) casts floating tensors except BatchNorm's.
    The tensors must fit the network `config` describes. Written atomically; returns the path.
    """
    tensors = state_dict_or_model.state_dict() if isinstance(state_dict_or_model, nn.Module) \
        else dict(state_dict_or_model)
    target = Path(path).expanduser()
    _check_config(config, str(target))
    _empty_checked_model(config, tensors, str(target))
    tensors = _cast(tensors, torch.device("cpu"), dtype)
    _write_safetensors(tensors, _metadata(config), target)
    return target


def _load_through_cache(source: Path, cache_root: Path) -> tuple[MultiViewModel, dict[str, torch.Tensor]]:
    """Empty network + memory-mapped tensors, from a fresh cache or (rebuilding it) from the source."""
    cache = cache_path(source, cache_root)
    stamp = _source_stamp(source)
    cached = _read_cache(cache, stamp)
    if cached is not None:
        try:
            return _empty_checked_model(cached[0], cached[1], str(cache)), cached[1]
        except CheckpointError as exc:
            log.warning("rebuilding the cache %s: %s", cache, exc.message)
        del cached  # unmap it before it is replaced (Windows refuses to replace a mapped file)
    raw = read_checkpoint(source)
    config = config_from_checkpoint(raw.state_dict, raw.model_string, str(source))
    model = _empty_checked_model(config, raw.state_dict, str(source))
    tensors = raw.state_dict
    del raw
    needed = sum(t.nbytes for t in tensors.values()) + (1 << 20)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_root).free
        if free < needed + (256 << 20):
            raise OSError(f"only {free / 1e9:.1f} GB free, {needed / 1e9:.1f} GB needed")
        _write_safetensors(tensors, _metadata(config, **stamp, **{_DIGESTS: json.dumps(tensor_digests(tensors))}),
                           cache)
        tensors = load_file(str(cache))
    except (OSError, SafetensorError) as exc:
        log.warning("cannot write the checkpoint cache %s (%s); loading from %s directly, "
                    "and the next load will read the pickle again", cache, exc, source)
    return model, tensors
