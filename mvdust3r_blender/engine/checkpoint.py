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
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import re
import secrets
import shutil
import tempfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ModelConfig
from .devices import resolve_device
from .errors import CheckpointError
from .model_string import parse_model_string
from ..core.registry import supported_files_text

if TYPE_CHECKING:
    from .model import MultiViewModel

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "mvdust3r_blender.weights"   # safetensors metadata "format" of files we write
FORMAT_VERSION = "1"
CACHE_ENV = "MVDUST3R_CACHE_DIR"
ALLOWED_GLOBALS = (argparse.Namespace,)  # ``args``: the one class official checkpoints need
MULTIVIEW_CLASS = "AsymmetricCroCo3DStereoMultiView"
DEMO_N_REF = 4                        # the official demo's n_ref for MV-DUSt3R+ (spec §1)
_ZIP_MAGIC = b"PK\x03\x04"
_FIRST_FEW = 5                        # how many offending keys an error names
_DIGESTS = "tensor_crc32"             # cache metadata: JSON {key: CRC-32 of the tensor's bytes}
_CHUNK = 16 << 20                     # bytes read at a time when checking those

# Constructor defaults of the official class (and its CroCoNet base) for keywords a string omits.
_OFFICIAL_DEFAULTS: dict[str, Any] = {
    "output_mode": "pts3d", "head_type": "linear", "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf), "freeze": "none", "landscape_only": True,
    "patch_embed_cls": "PatchEmbedDust3R", "GS": False, "GS_skip": False, "sh_degree": 0,
    "pts_head_config": {}, "n_ref": None, "m_ref_flag": False, "img_size": 224, "patch_size": 16,
    "mask_ratio": 0.9, "enc_embed_dim": 768, "enc_depth": 12, "enc_num_heads": 12,
    "dec_embed_dim": 512, "dec_depth": 8, "dec_num_heads": 16, "mlp_ratio": 4,
    "norm_im2_in_dec": True, "pos_embed": "cosine",
}
# Settings our network implements; any other value is refused with its name.
_REQUIRED: dict[str, Any] = {
    "output_mode": "pts3d", "head_type": "linear", "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, 1e9), "pos_embed": "RoPE100", "GS": True, "GS_skip": False,
    "sh_degree": 0, "pts_head_config": {"skip": True}, "norm_im2_in_dec": True,
}
# Keywords that change nothing at inference are accepted with any value: freeze (training-time),
# mask_ratio (the unused mask generator), landscape_only (the heads' transposition wrapper) and
# patch_embed_cls among these two (same weights either way).
_PATCH_EMBED_CLASSES = {"PatchEmbedDust3R", "ManyAR_PatchEmbed"}


@dataclass
class RawCheckpoint:
    """What inference needs from a training checkpoint: memory-mapped weights and the constructor string."""

    path: Path
    state_dict: dict[str, torch.Tensor]   # backed by the file; pages are read when touched
    model_string: str                     # ``ckpt['args'].model``


# ---------------------------------------------------------------------------------------------
# public entry points

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
        model = _empty_checked_model(config, tensors, str(source))
        _refuse_non_finite(tensors, str(source))
        return OpenedCheckpoint(source, model, tensors)
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


def read_checkpoint(path: PathLike) -> RawCheckpoint:
    """Open a ``torch.save`` checkpoint safely; return its state dict and constructor string.

    Nothing but ``argparse.Namespace`` may be unpickled, tensors are memory-mapped, and only
    ``model`` and ``args.model`` are kept: the optimizer's tensors are dropped unread.
    """
    source = Path(path).expanduser()
    if _sniff(source) != "torch":
        raise CheckpointError(f"{source} is a safetensors file, not a PyTorch training checkpoint",
                              "load it with load_model()")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)), _torch_named(source) as named:
            ckpt = torch.load(named, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(source, exc) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise _unreadable_zip(source, exc) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {source}: {exc.strerror or exc}",
                              "check that the file is readable") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        kind = type(ckpt).__name__
        raise CheckpointError(
            f"{source} is a PyTorch file but not an MV-DUSt3R training checkpoint "
            f"(expected a dict with 'model' and 'args', found a {kind}"
            + (f" with keys {sorted(map(str, ckpt))[:_FIRST_FEW]}" if isinstance(ckpt, dict) else "") + ")",
            f"supported: {supported_files_text()}")
    state_dict = ckpt["model"]
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: 'model' holds non-tensor entries ({', '.join(map(str, bad[:_FIRST_FEW]))})",
                              f"supported: {supported_files_text()}")
    args = ckpt.get("args")
    model_string = args.get("model") if isinstance(args, dict) else getattr(args, "model", None)
    if not isinstance(model_string, str):
        raise CheckpointError(
            f"{source} has no constructor string (args.model), so its head counts are unknown",
            f"supported: {supported_files_text()}")
    return RawCheckpoint(source, _without_wrapper_prefix(state_dict), model_string)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""What ``torch.nn.DataParallel`` / ``DistributedDataParallel`` (``module.``) and ``torch.compile``
(``_orig_mod.``) put before every key of the network they wrap when it is saved through them."""


def _without_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with a wrapper's prefix removed when every key carries it (the same network's
    weights, saved from a multi-GPU training or a compiled model); otherwise unchanged."""
    result = dict(state_dict)
    for _ in _WRAPPER_PREFIXES:  # a compiled model inside DataParallel carries both
        prefix = next((p for p in _WRAPPER_PREFIXES if result and all(k.startswith(p) for k in result)), None)
        if prefix is None:
            break
        result = {key[len(prefix):]: value for key, value in result.items()}
    return result


def _refuse_non_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming `source` and the first weights that hold NaN or infinity
    (a diverged training saved anyway): such a network's every output is NaN, so it is refused at
    load, not blamed on the bundle at the end of a run."""
    bad = [key for key, tensor in tensors.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} weight tensor{'s' if len(bad) != 1 else ''} hold NaN or "
                              f"infinite values ({', '.join(bad[:_FIRST_FEW])}{', ...' if len(bad) > _FIRST_FEW else ''})",
                              "the training that saved it diverged; use an earlier checkpoint or the released one")


@contextlib.contextmanager
def _torch_named(source: Path) -> Iterator[Path]:
    """`source`, or a link to it under a ``.pth`` name when its name ends in ``.safetensors``:
    ``torch.load`` picks its reader by that suffix, and this file is a torch zip (sniffed) renamed.
    Where links are refused the file is copied into the temporary folder instead."""
    if not source.name.endswith(".safetensors"):
        yield source
        return
    log.warning("%s is a PyTorch checkpoint (a zip written by torch.save) despite its .safetensors name; "
                "reading it as one", source)
    with tempfile.TemporaryDirectory(prefix="mvdust3r-checkpoint-", ignore_cleanup_errors=True) as folder:
        named = Path(folder) / (source.stem + ".pth")
        try:
            os.symlink(source.absolute(), named)
        except OSError:
            shutil.copyfile(source, named)
        yield named


def config_from_checkpoint(state_dict: Mapping[str, Any], model_string: str,
                           source: str = "checkpoint") -> ModelConfig:
    """The :class:`ModelConfig` of a checkpoint: sizes from tensor shapes, the rest from `model_string`.

    Widths, depths, patch size, MLP ratio, skip-CNN and Gaussian-MLP widths come from the shapes;
    head counts, ``n_ref`` (4 for MV-DUSt3R+ when absent, as in the demo) and ``img_size`` from
    the string, which is parsed, never evaluated. Settings the network does not implement are
    refused with their name. `source` names the file in messages.
    """
    try:
        call = parse_model_string(model_string)
    except ValueError as exc:
        raise CheckpointError(f"{source}: cannot read its constructor string args.model ({exc}): "
                              f"{model_string[:200]!r}", f"supported: {supported_files_text()}") from None
    _refuse_other_models(call.class_name, state_dict, source)
    kwargs = {**_OFFICIAL_DEFAULTS, **call.kwargs}
    unknown = sorted(set(call.kwargs) - set(_OFFICIAL_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{source}: unknown constructor setting(s) {', '.join(unknown)} in args.model",
                              "this add-on implements the released MV-DUSt3R networks only")
    for name, wanted in _REQUIRED.items():
        if _normalised(kwargs[name]) != _normalised(wanted):
            raise CheckpointError(
                f"{source}: unsupported setting {name}={kwargs[name]!r} (this add-on implements {name}={wanted!r})",
                f"supported: {supported_files_text()}")
    if kwargs["patch_embed_cls"] not in _PATCH_EMBED_CLASSES:
        raise CheckpointError(f"{source}: unsupported patch_embed_cls={kwargs['patch_embed_cls']!r}",
                              f"supported: {', '.join(sorted(_PATCH_EMBED_CLASSES))}")

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(f"{source}: missing weight {key!r}", _CORRUPT_HINT)
        found = tuple(int(n) for n in state_dict[key].shape)
        if len(found) != ndim:
            raise CheckpointError(f"{source}: weight {key!r} has shape {list(found)}, not {ndim}-D", _CORRUPT_HINT)
        return found

    enc_dim, in_chans, patch, patch_w = shape("patch_embed.proj.weight", 4)
    dec_dim, dec_in = shape("decoder_embed.weight", 2)
    mlp_ratio = shape("enc_blocks.0.mlp.fc1.weight", 2)[0] / enc_dim
    multi_ref = any(key.startswith("dec_same_view_blocks.") for key in state_dict)
    config = ModelConfig(
        enc_embed_dim=enc_dim,
        enc_depth=_block_count(state_dict, "enc_blocks", source),
        enc_num_heads=_positive_int(kwargs, "enc_num_heads", source),
        dec_embed_dim=dec_dim,
        dec_depth=_block_count(state_dict, "dec_blocks", source),
        dec_num_heads=_positive_int(kwargs, "dec_num_heads", source),
        patch_size=patch,
        mlp_ratio=mlp_ratio,
        rope_freq=100.0,
        skip_dim=shape("downstream_head1.skip_proj.0.conv.weight", 4)[0],
        gs_mlp_dim=shape("downstream_GS_head.0.mlp_rgb.0.weight", 2)[0],
        sh_degree=0,
        multi_ref=multi_ref,
        n_ref=_n_ref(kwargs, multi_ref, source),
        img_size=_img_size(kwargs["img_size"], source),
    )
    mismatches = [
        f"{name}={kwargs[name]} but the weights have {actual}"
        for name, actual in (("enc_embed_dim", enc_dim), ("dec_embed_dim", dec_dim), ("patch_size", patch),
                             ("enc_depth", config.enc_depth), ("dec_depth", config.dec_depth),
                             ("mlp_ratio", mlp_ratio))
        if name in call.kwargs and kwargs[name] != actual
    ]
    if in_chans != 3 or patch_w != patch or dec_in != enc_dim:
        mismatches.append(f"patch_embed {in_chans}×{patch}×{patch_w} / decoder_embed input {dec_in} do not fit "
                          f"an RGB ViT of width {enc_dim}")
    dec_ratio = shape("dec_blocks.0.mlp.fc1.weight", 2)[0] / dec_dim
    if dec_ratio != mlp_ratio:
        mismatches.append(f"encoder MLP ratio {mlp_ratio} differs from the decoder's {dec_ratio}")
    if shape("downstream_GS_head.0.mlp_rgb.2.weight", 2)[0] != 3 * patch * patch:
        mismatches.append("the Gaussian colour head is not sh_degree=0")
    if mismatches:
        raise CheckpointError(f"{source}: constructor string and weights disagree: {'; '.join(mismatches)}",
                              _CORRUPT_HINT)
    _check_config(config, source)
    return config


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


def default_cache_dir() -> Path:
    """``$MVDUST3R_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvdust3r_blender``, else ``~/.cache/mvdust3r_blender``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mvdust3r_blender"


def cache_path(path: PathLike, cache_dir: Optional[PathLike] = None) -> Path:
    """Where the safetensors cache of checkpoint `path` lives: one file per real (symlink-resolved)
    source path, named after the path as given (a Hugging Face cache links names to hashed blobs)."""
    given = Path(path).expanduser()
    digest = hashlib.sha256(str(given.resolve()).encode("utf-8")).hexdigest()[:16]
    return _cache_root(cache_dir) / f"{given.stem}-{digest}.safetensors"


# ---------------------------------------------------------------------------------------------
# reading and checking

_CORRUPT_HINT = "the file is damaged or not an official MV-DUSt3R checkpoint; download it again"


def _sniff(path: Path) -> str:
    """``"torch"`` (a zip written by torch.save) or ``"safetensors"``; anything else is an error."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}",
                              f"check the path, or download one of {supported_files_text()}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", "choose the .pth or .safetensors file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    raise CheckpointError(f"{path} is not a checkpoint: {_describe(head)}",
                          f"choose a checkpoint file; supported: {supported_files_text()}")


def _describe(head: bytes) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer (the repository was cloned without git-lfs), not the file itself"
    if head.startswith(b"\x80") and b"\x8a\x0al\xfc\x9cF\xf9" in head:
        return "it uses the legacy (pre-1.6) PyTorch format, which cannot be memory-mapped"
    kinds = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"%PDF": "a PDF document",
             b"\x1f\x8b": "a gzip archive", b"<": "an HTML/XML page (an error page saved by a failed download?)"}
    for magic, kind in kinds.items():
        if head.lstrip().startswith(magic):
            return f"it looks like {kind}"
    return f"it does not start with a PyTorch (zip) or safetensors header (first bytes {head[:8]!r})"


def _unpickling_error(source: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return CheckpointError(
            f"refused to load {source}: it needs Python code ({found.group(1)}) outside the allow-list of a "
            "weights-only load (tensors, plain containers, argparse.Namespace); unpickling it could run "
            "arbitrary code, so nothing in it was executed",
            f"use an official checkpoint ({supported_files_text()})")
    return CheckpointError(f"{source} is corrupt: its pickle cannot be read ({_first_line(exc)})", _CORRUPT_HINT)


def _unreadable_zip(source: Path, exc: BaseException) -> CheckpointError:
    """A zip torch cannot load: some other archive (an .npz, a zipped .pth), or a damaged checkpoint."""
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = None   # no readable central directory: the end of the file is missing
    if names is not None and not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
        return CheckpointError(f"{source} is a zip archive, not a PyTorch checkpoint (it holds "
                               f"{', '.join(names[:_FIRST_FEW]) or 'nothing'})",
                               "extract the checkpoint from it, or choose the .pth file itself")
    return CheckpointError(
        f"{source} is truncated or corrupt ({source.stat().st_size:,} bytes; torch: {_first_line(exc)})",
        "download it again; an interrupted download leaves a partial file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _refuse_other_models(class_name: str, state_dict: Mapping[str, Any], source: str) -> None:
    """Name what a checkpoint of another network is, and what is supported instead."""
    hint = f"supported: {supported_files_text()}"
    if class_name == "AsymmetricCroCo3DStereo":
        raise CheckpointError(f"{source} is a pair-wise DUSt3R checkpoint ({class_name}), not MV-DUSt3R", hint)
    if "MASt3R" in class_name:
        raise CheckpointError(f"{source} is a MASt3R checkpoint ({class_name}), not MV-DUSt3R", hint)
    if class_name != MULTIVIEW_CLASS:
        raise CheckpointError(f"{source} holds a {class_name} network, not MV-DUSt3R ({MULTIVIEW_CLASS})", hint)
    if not any(key.startswith("downstream_GS_head.") for key in state_dict):
        raise CheckpointError(f"{source} has no Gaussian head (no downstream_GS_head.* weights): it is a "
                              "pair-wise DUSt3R-style model, not a released MV-DUSt3R checkpoint", hint)


def _normalised(value: Any) -> Any:
    """Lists as tuples, so ``[a, b]`` in a string equals ``(a, b)``."""
    return tuple(value) if isinstance(value, list) else value


def _positive_int(kwargs: Mapping[str, Any], name: str, source: str) -> int:
    value = kwargs[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{source}: {name}={value!r} is not a positive integer", _CORRUPT_HINT)
    return value


def _block_count(state_dict: Mapping[str, Any], prefix: str, source: str) -> int:
    """Number of blocks ``prefix.0 .. prefix.{n-1}``; a gap means the file is damaged."""
    indices = {int(key.split(".")[1]) for key in state_dict
               if key.startswith(prefix + ".") and key.split(".")[1].isdigit()}
    if not indices or indices != set(range(max(indices) + 1)):
        raise CheckpointError(f"{source}: the {prefix} blocks are missing or not numbered 0..n-1", _CORRUPT_HINT)
    return max(indices) + 1


def _n_ref(kwargs: Mapping[str, Any], multi_ref: bool, source: str) -> int:
    flag, n_ref = kwargs["m_ref_flag"], kwargs["n_ref"]
    if bool(flag) != multi_ref:
        raise CheckpointError(
            f"{source}: args.model says m_ref_flag={flag!r} but the weights "
            f"{'have' if multi_ref else 'lack'} cross-reference-view blocks (dec_same_view_blocks)", _CORRUPT_HINT)
    if not multi_ref:
        if n_ref not in (None, 1):
            raise CheckpointError(f"{source}: n_ref={n_ref!r} without m_ref_flag (independent reference paths "
                                  "without fusion) is not a released configuration", f"supported: {supported_files_text()}")
        return 1
    if n_ref is None:
        return DEMO_N_REF
    if isinstance(n_ref, bool) or not isinstance(n_ref, int) or n_ref < 2:
        raise CheckpointError(f"{source}: n_ref={n_ref!r}; MV-DUSt3R+ needs an integer n_ref >= 2", _CORRUPT_HINT)
    return n_ref


def _img_size(value: Any, source: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[1]))
    raise CheckpointError(f"{source}: img_size={value!r} is not an int or an (H, W) pair", _CORRUPT_HINT)


def _check_config(config: ModelConfig, source: str) -> None:
    """Refuse a config the network cannot be built for (e.g. from a hand-edited metadata block)."""
    problems = []
    for name, dim, heads in (("encoder", config.enc_embed_dim, config.enc_num_heads),
                             ("decoder", config.dec_embed_dim, config.dec_num_heads)):
        if heads < 1 or dim % heads or (dim // heads) % 4:
            problems.append(f"{name} width {dim} with {heads} heads (2-D RoPE needs a head width divisible by 4)")
    if config.sh_degree != 0:
        problems.append(f"sh_degree={config.sh_degree} (only 0 is implemented)")
    if config.rope_freq != 100.0:
        problems.append(f"RoPE frequency {config.rope_freq} (only RoPE100 is implemented)")
    if (config.multi_ref and config.n_ref < 2) or (not config.multi_ref and config.n_ref != 1):
        problems.append(f"n_ref={config.n_ref} with multi_ref={config.multi_ref}")
    if any(size % config.patch_size for size in config.img_size):
        problems.append(f"img_size {config.img_size} is not a multiple of the patch size {config.patch_size}")
    if problems:
        raise CheckpointError(f"{source}: unsupported network settings: {'; '.join(problems)}",
                              f"supported: {supported_files_text()}")


def _read_weights_file(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and memory-mapped tensors of a ``.safetensors`` file we wrote."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = _mapped_tensors(handle)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged safetensors file ({_first_line(exc)})",
                              "write or download it again") from None
    return _config_from_metadata(metadata, str(path)), tensors


def _mapped_tensors(handle: safe_open) -> dict[str, torch.Tensor]:
    """Every tensor of an open ``safe_open`` handle, memory-mapped (what ``load_file`` does, without
    opening the file and parsing its header a second time)."""
    return {key: handle.get_tensor(key) for key in handle.keys()}


def _config_from_metadata(metadata: Optional[Mapping[str, str]], source: str) -> ModelConfig:
    if not metadata or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{source} is a safetensors file without MV-DUSt3R settings in its metadata",
                              "only .safetensors files written by this add-on (save_safetensors) carry them")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source} was written in weights format {metadata.get('format_version')!r}; "
                              f"this version reads {FORMAT_VERSION!r}", "update the add-on or re-create the file")
    try:
        fields = json.loads(metadata["config"])
        fields["img_size"] = tuple(fields.get("img_size", ModelConfig.img_size))
        config = ModelConfig(**fields)
        for field in dataclasses.fields(ModelConfig):
            if not _same_kind(getattr(config, field.name), field.default):
                raise TypeError(f"{field.name}={getattr(config, field.name)!r}")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: the network settings in its metadata are unreadable ({exc})",
                              "write or download the file again") from None
    _check_config(config, source)
    return config


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a config value read from JSON has the type of the field's default (ints count as floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) == len(default) and all(_same_kind(v, d) for v, d in zip(value, default))
    return isinstance(value, type(default))


def _metadata(config: ModelConfig, **extra: str) -> dict[str, str]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps(dataclasses.asdict(config)), **extra}


def _empty_checked_model(config: ModelConfig, tensors: Mapping[str, torch.Tensor], source: str) -> MultiViewModel:
    """The network for `config` without storage (``meta`` device), after checking `tensors` fit it."""
    from .model import build_model

    with torch.device("meta"):
        model = build_model(config)
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    wrong = [f"{key} {list(tensors[key].shape)} (network: {list(value.shape)})"
             for key, value in expected.items()
             if key in tensors and (tuple(tensors[key].shape) != tuple(value.shape)
                                    or tensors[key].is_floating_point() != value.is_floating_point())]
    problems = [f"{len(items)} {what}: {', '.join(items[:_FIRST_FEW])}{', ...' if len(items) > _FIRST_FEW else ''}"
                for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape or type", wrong))
                if items]
    if problems:
        raise CheckpointError(f"{source} does not fit the network its settings describe: {'; '.join(problems)}",
                              _CORRUPT_HINT)
    return model


# ---------------------------------------------------------------------------------------------
# the cache

def _cache_root(cache_dir: Optional[PathLike]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _source_stamp(source: Path) -> dict[str, str]:
    stat = source.stat()
    return {"source_path": str(source.resolve()), "source_size": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns)}


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
    _refuse_non_finite(raw.state_dict, str(source))  # once, before the cache: a cache holds checked weights
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


def _read_cache(cache: Path, stamp: Mapping[str, str]) -> Optional[tuple[ModelConfig, dict[str, torch.Tensor]]]:
    """The cached config and tensors if `cache` is a readable cache of exactly this source file, else None."""
    if not cache.is_file():
        return None
    try:
        with safe_open(str(cache), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if any(metadata.get(key) != value for key, value in stamp.items()):
                log.info("the cache %s belongs to another version of %s; rebuilding it", cache, stamp["source_path"])
                return None
            if _DIGESTS not in metadata:
                log.info("the cache %s has no checksums (an older version wrote it); rebuilding it", cache)
                return None
            config, tensors = _config_from_metadata(metadata, str(cache)), _mapped_tensors(handle)
        damaged = _damaged_tensors(cache, json.loads(metadata[_DIGESTS]))
    except (SafetensorError, OSError, CheckpointError, ValueError, TypeError) as exc:
        log.warning("ignoring the unreadable cache %s (%s); rebuilding it", cache, exc)
        return None
    if damaged:
        log.warning("the checkpoint cache %s is damaged: the bytes of %s do not match the checksums written with them; "
                    "rebuilding it from %s", cache, ", ".join(damaged[:_FIRST_FEW])
                    + (f" and {len(damaged) - _FIRST_FEW} more" if len(damaged) > _FIRST_FEW else ""),
                    stamp["source_path"])
        return None
    return config, tensors


def tensor_digests(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """CRC-32 (8 hex digits) of each tensor's bytes, as a safetensors file stores them. A checksum
    against damage (a disk error, a stray edit), not against someone who can write the cache (and
    could rewrite the checksums too)."""
    def crc(tensor: torch.Tensor) -> int:
        flat = tensor.detach().contiguous().reshape(-1)
        return zlib.crc32(flat.view(torch.uint8).numpy().data) if flat.numel() else 0

    return {key: f"{crc(tensor):08x}" for key, tensor in tensors.items()}


def _damaged_tensors(path: Path, expected: Mapping[str, str]) -> list[str]:
    """Keys of the safetensors file `path` whose stored bytes do not match `expected` (or that have no
    checksum, or a checksum but no tensor). The file is read, not touched through the tensors' memory
    map, so the pass fills the page cache but not this process's memory; zlib and file reads release
    the GIL, so tensors are checked on several threads, each with its own handle."""
    if not isinstance(expected, Mapping):
        raise ValueError(f"{_DIGESTS} is not a mapping")
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    start = 8 + header_size

    def crc(span: list[int]) -> str:
        value, left = 0, span[1] - span[0]
        with open(path, "rb") as handle:
            handle.seek(start + span[0])
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path} ends inside a tensor")
                value, left = zlib.crc32(chunk, value), left - len(chunk)
        return f"{value:08x}"

    ranges = {key: entry["data_offsets"] for key, entry in header.items() if key != "__metadata__"}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = dict(zip(ranges, pool.map(crc, ranges.values())))
    return sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))


def _write_safetensors(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = temporary.stat().st_mode & 0o777   # 0o666 less the umask: safetensors itself writes 0o600
    try:
        save_file({key: t.detach().contiguous() for key, t in tensors.items()}, temporary, metadata=metadata)
        os.chmod(temporary, mode)
        with open(temporary, "r+b") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------------------------
# giving the network its weights

def _batchnorm_prefixes(keys: Iterable[str]) -> set[str]:
    """Module prefixes of BatchNorm layers in a state dict (the ones with running statistics)."""
    return {key.rsplit(".", 1)[0] for key in keys if key.endswith(".running_mean")}


def _cast(tensors: Mapping[str, torch.Tensor], device: torch.device,
          dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    """Move to `device`; cast floating tensors to `dtype` except BatchNorm's (kept float32)."""
    batchnorm = _batchnorm_prefixes(tensors)
    out = {}
    for key, tensor in tensors.items():
        wanted = tensor.dtype
        if dtype is not None and tensor.is_floating_point():
            wanted = torch.float32 if key.rsplit(".", 1)[0] in batchnorm else dtype
        out[key] = tensor.to(device=device, dtype=wanted)
    return out


def _materialise(model: MultiViewModel, tensors: Mapping[str, torch.Tensor], device: torch.device,
                 dtype: Optional[torch.dtype]) -> "MultiViewModel":
    """Assign the (cast, moved) tensors to the empty network without copying; eval mode."""
    model.load_state_dict(_cast(tensors, device, dtype), strict=True, assign=True)
    empty = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if empty:
        raise RuntimeError(f"the network has tensors no checkpoint provides: {empty[:_FIRST_FEW]}")
    return model.eval()
