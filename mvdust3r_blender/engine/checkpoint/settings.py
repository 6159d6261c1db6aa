"""The network's settings (:class:`~..config.ModelConfig`) a checkpoint holds: inferred from a
training checkpoint's tensor shapes and constructor string (parsed, never evaluated), or read from
the metadata of our own ``.safetensors`` files; settings the network does not implement are refused
by name, and tensors that do not fit the network are named."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import torch

from ...core.registry import supported_files_text
from ..config import ModelConfig
from ..errors import CheckpointError
from ..model_string import parse_model_string
from .reading import _CORRUPT_HINT, _FIRST_FEW

if TYPE_CHECKING:
    from ..model import MultiViewModel


FORMAT = "mvdust3r_blender.weights"   # safetensors metadata "format" of files we write
FORMAT_VERSION = "1"
MULTIVIEW_CLASS = "AsymmetricCroCo3DStereoMultiView"
DEMO_N_REF = 4                        # n_ref of MV-DUSt3R+ when its string has none, as in the official demo
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
    from ..model import build_model

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
