"""Transformer blocks of the CroCo / DUSt3R ViT: attention, encoder and decoder blocks.

Module and parameter names follow the official state dict exactly (``norm1``, ``attn.qkv``,
``cross_attn.projq`` ...), so released checkpoints load unchanged. Every LayerNorm uses eps 1e-6.

The decoder block is split into its three residual steps (self-attention, cross-attention, MLP)
plus :meth:`DecoderBlock.memory`, which projects a view's keys/values once. In the multi-view
decoder every query view attends to the same normed tokens of the other views through the same
``projk``/``projv``, so the caller computes each view's memory once per block and shares it
instead of re-projecting it for every query (the official code does the latter; the maths is the
same because LayerNorm and the projections act token by token).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RotaryTables

LN_EPS = 1e-6


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., T, D] -> [..., heads, T, D/heads] (a view; the official head layout)."""
    return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(-2, -3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[..., heads, T, d] -> [..., T, heads·d]."""
    return x.transpose(-2, -3).flatten(-2)


class Mlp(nn.Module):
    """``fc1`` -> exact (erf) GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with RoPE on q and k; qkv output features are [q | k | v]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryTables) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                   # [B, heads, T, d]
        out = F.scaled_dot_product_attention(rope.apply(q), rope.apply(k), v)
        return self.proj(merge_heads(out))


class CrossAttention(nn.Module):
    """Cross-attention with separate q/k/v projections and RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: ``x += attn(norm1(x)); x += mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RotaryTables) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block in multi-view mode (``norm_mem=True``)::

        x = x + attn(norm1(x))
        x = x + cross_attn(q=norm2(x), k=v=concat(norm_y(y) for y in ys))
        x = x + mlp(norm3(x))

    Used through its steps: :meth:`self_step`, :meth:`memory` (keys/values of token sets),
    :meth:`cross_step`, :meth:`mlp_step`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS)

    def self_step(self, x: torch.Tensor, rope: RotaryTables) -> torch.Tensor:
        """x [B, T, D] -> x + attn(norm1(x))."""
        return x + self.attn(self.norm1(x), rope)

    def memory(self, y: torch.Tensor, rope: RotaryTables) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (RoPE applied) and values of token sets y [..., T, D]: each [..., heads, T, d]."""
        yn = self.norm_y(y)
        k = rope.apply(split_heads(self.cross_attn.projk(yn), self.num_heads))
        v = split_heads(self.cross_attn.projv(yn), self.num_heads)
        return k, v

    def query(self, x: torch.Tensor, rope: RotaryTables) -> torch.Tensor:
        """Cross-attention queries of x [..., T, D] (RoPE applied): [..., heads, T, d]."""
        return rope.apply(split_heads(self.cross_attn.projq(self.norm2(x)), self.num_heads))

    def cross_step(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """x + proj(attended), with ``attended`` the attention output [..., heads, T, d]."""
        return x + self.cross_attn.proj(merge_heads(attended))

    def mlp_step(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm3(x))


def attend_excluding_groups(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            q_group: torch.Tensor, k_group: torch.Tensor, chunk: int) -> torch.Tensor:
    """Softmax attention where query i sees only keys of a different group.

    q [B, heads, Lq, d]; k, v [B, heads, Lk, d]; q_group int [Lq], k_group int [Lk] (group = the
    view, or the reference path, a token belongs to). This is "attend to the concatenation of all
    *other* views' tokens" with every view's keys/values computed once: masked keys get exactly
    zero weight and the kept keys stay in ascending order, as in the official concatenation.
    Queries are processed ``chunk`` tokens at a time to bound the mask's memory.
    """
    out = []
    for start in range(0, q.shape[-2], chunk):
        qc = q[..., start:start + chunk, :]
        mask = q_group[start:start + chunk, None] != k_group[None, :]
        out.append(F.scaled_dot_product_attention(qc, k, v, attn_mask=mask))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-2)
