"""Prediction heads: the linear point head with its skip CNN, and the Gaussian head.

Both map decoder tokens [B, T, D] of one output slot to per-pixel maps [B, H, W, C]: a linear
layer gives ``C·p²`` features per token, read channel-major and unfolded by ``pixel_shuffle(p)``.
Parameter names follow the official state dict (``proj``, ``skip_proj.k.conv/norm``,
``norm``, ``mlp_rgb.0/2`` ...).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .typed_modules import TypedSequential

SKIP_SCALE = 1e-4        # official ``skip_proj_scale``: the skip CNN's output is added ×1e-4
CONF_MAX = 1e9 - 1.0     # conf_mode ('exp', 1, 1e9): conf = 1 + exp(c).clip(max=1e9 - 1)


def tokens_to_maps(feat: torch.Tensor, hw: tuple[int, int], patch: int) -> torch.Tensor:
    """Token features [B, T, C·p²] -> maps [B, C, H, W] (channel-major read, pixel shuffle)."""
    h, w = hw[0] // patch, hw[1] // patch
    return F.pixel_shuffle(feat.transpose(-1, -2).reshape(feat.shape[0], -1, h, w), patch)


class MiddleBlock(nn.Module):
    """Conv2d ('same' padding) -> BatchNorm2d (eps 1e-5) [-> SELU]."""

    def __init__(self, c_in: int, c_out: int, kernel: int, activation: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.SELU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class LinearPts3d(nn.Module):
    """Linear point head with the full-resolution skip CNN (``pts_head_config={'skip': True}``).

    Output channels: xyz (depth mode 'exp') and a confidence logit (conf mode ('exp', 1, 1e9)).
    The skip CNN sees the normalised image and the raw xyz; its output ×1e-4 is added to xyz.
    """

    def __init__(self, dec_dim: int, patch: int, skip_dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(dec_dim, 4 * patch * patch)
        self.skip_proj = TypedSequential(
            MiddleBlock(6, skip_dim, 3, True),
            MiddleBlock(skip_dim, skip_dim, 5, True),
            MiddleBlock(skip_dim, skip_dim, 5, True),
            MiddleBlock(skip_dim, 3, 3, False),
        )

    def forward(self, tokens: torch.Tensor, img: torch.Tensor, hw: tuple[int, int],
                skip_cnn: bool = True, skip_dtype: Optional[torch.dtype] = None,
                channels_last: bool = False) -> dict[str, torch.Tensor]:
        """tokens [B, T, D], img [B, 3, H, W] -> ``pts3d`` [B, H, W, 3], ``conf`` [B, H, W].

        ``skip_cnn=False`` drops the skip CNN (an approximation: its output is scaled by 1e-4);
        ``skip_dtype`` runs it in that autocast dtype (e.g. bfloat16: its ×1e-4 contribution
        keeps the rounding far below float32 noise of the outputs); ``channels_last`` runs the
        convolutions in NHWC layout (same maths; a GPU option, slower on the test CPU).
        The output maths (xyz, depth and confidence activations) is always float32.
        """
        feat = tokens_to_maps(self.proj(tokens), hw, self.patch)             # [B, 4, H, W]
        xyz = feat[:, :3].float()
        if skip_cnn:
            conv_dtype = self.skip_proj[0].conv.weight.dtype
            x = torch.cat([img.to(conv_dtype), feat[:, :3].to(conv_dtype)], dim=1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with (torch.autocast(x.device.type, dtype=skip_dtype) if skip_dtype is not None
                  else nullcontext()):
                skip = self.skip_proj(x)
            xyz = xyz + skip.float() * SKIP_SCALE
        xyz = xyz.permute(0, 2, 3, 1)
        d = xyz.norm(dim=-1, keepdim=True)
        pts3d = xyz / d.clip(min=1e-8) * torch.expm1(d)
        conf = 1.0 + feat[:, 3].float().exp().clip(max=CONF_MAX)
        return {"pts3d": pts3d, "conf": conf}


class GSHead(nn.Module):
    """Gaussian parameters per pixel (``GS=True, sh_degree``). LayerNorm eps is 1e-5."""

    def __init__(self, dec_dim: int, patch: int, hidden: int, sh_degree: int) -> None:
        super().__init__()
        self.patch = patch
        self.norm = nn.LayerNorm(dec_dim, eps=1e-5)
        p2 = patch * patch

        def mlp(k: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(dec_dim, hidden, bias=False), nn.ReLU(),
                                 nn.Linear(hidden, k * p2, bias=False))

        self.mlp_rgb = mlp(3 * (sh_degree + 1) ** 2)
        self.mlp_opacity = mlp(1)
        self.mlp_scale2 = mlp(3)
        self.mlp_rotation = mlp(4)

    def forward(self, tokens: torch.Tensor, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """tokens [B, T, D] -> ``rgb`` [B,H,W,3(sh+1)²], ``opacity`` [B,H,W,1], ``scale`` [B,H,W,3],
        ``rotation`` [B,H,W,4] (unit quaternion, w x y z)."""
        x = self.norm(tokens)

        def maps(mlp: nn.Sequential) -> torch.Tensor:
            return tokens_to_maps(mlp(x), hw, self.patch).permute(0, 2, 3, 1)

        return {
            "rgb": maps(self.mlp_rgb),
            "opacity": torch.sigmoid(maps(self.mlp_opacity)),
            "scale": 0.1 * maps(self.mlp_scale2),
            "rotation": F.normalize(maps(self.mlp_rotation), dim=-1, eps=1e-5),
        }
