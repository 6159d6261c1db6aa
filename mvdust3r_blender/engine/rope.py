"""2-D rotary position embedding (CroCo's ``RoPE2D`` with base 100, "RoPE100").

Each attention head's feature vector is split in two halves: the first half rotates with the
token's row index, the second with its column index. Inside a half of size m the frequencies are
``base^(-2i/m)`` and the rotation uses the "rotate-half" layout (``[x1, x2] -> [-x2, x1]``).

The tables depend only on the token grid, which all views share, so they are built once per
forward pass (:meth:`RoPE2D.tables`) and applied by every attention layer (:meth:`RotaryTables.apply`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def grid_positions(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """Patch positions int64 [rows·cols, 2] as (row, col), tokens in row-major order."""
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    return torch.cartesian_prod(r, c)


@dataclass(frozen=True)
class RotaryTables:
    """Per-token cosines and signed sines for one head dim: float [T, head_dim] each.

    ``sin_signed`` carries the minus sign of rotate-half on the first quarter of each half, so
    ``apply`` is ``x·cos + swap_quarters(x)·sin_signed`` — bit-identical to the official
    ``x·cos + rotate_half(x)·sin`` (negating before or after the product rounds the same).
    """

    cos: torch.Tensor
    sin_signed: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [..., T, head_dim] (e.g. [B, heads, T, head_dim])."""
        cos, sin = self.cos, self.sin_signed
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        swapped = x.unflatten(-1, (2, 2, x.shape[-1] // 4)).flip(-2).flatten(-3)
        return x * cos + swapped * sin


class RoPE2D:
    """Builds :class:`RotaryTables` for a token grid (no parameters, nothing in the state dict)."""

    def __init__(self, base: float = 100.0) -> None:
        self.base = base

    def tables(self, positions: torch.Tensor, head_dim: int) -> RotaryTables:
        """Tables for positions int64 [T, 2] (row, col) and a head dim divisible by 4 (float32)."""
        if head_dim % 4:
            raise ValueError(f"RoPE2D needs a head dim divisible by 4, got {head_dim}")
        m = head_dim // 2
        # Same arithmetic as the official table: float32 inverse frequencies, outer product.
        inv_freq = 1.0 / (self.base ** (torch.arange(0, m, 2, device=positions.device).float() / m))
        cos_halves, sin_halves = [], []
        for axis in (0, 1):
            angles = positions[:, axis].float()[:, None] * inv_freq[None, :]
            angles = torch.cat((angles, angles), dim=-1)              # [T, m]
            s = angles.sin()
            cos_halves.append(angles.cos())
            sin_halves.append(torch.cat((-s[:, : m // 2], s[:, m // 2:]), dim=-1))
        return RotaryTables(torch.cat(cos_halves, dim=-1), torch.cat(sin_halves, dim=-1))
