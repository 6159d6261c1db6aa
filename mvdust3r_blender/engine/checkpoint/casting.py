"""Giving the empty network its weights: moved to the device and cast, BatchNorm's kept float32."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Optional

import torch

from .reading import _FIRST_FEW

if TYPE_CHECKING:
    from ..model import MultiViewModel


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
