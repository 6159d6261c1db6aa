"""The multi-view decoder layers of MV-DUSt3R and MV-DUSt3R+.

Decoder state is one tensor ``X`` [R, N, B, T, D]: reference path r (R = 1 for MV-DUSt3R), view
v, scene b, token t. In path r, view r is the reference view and goes through the reference
block (``dec_blocks[l]``); every other view goes through the source block (``dec_blocks2[l]``).
Each view cross-attends to all *other* views of its path (the previous layer's states, ascending
order). MV-DUSt3R+ then runs the cross-reference block (``dec_same_view_blocks[l]``): each view of
path r attends to the same view in the other paths (this layer's states).

Work removed compared with the official loops, same maths: keys/values of a view are projected
once per block and shared by every query view (one masked attention call hides each query's own
view), and all views/paths of a block run as one batch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .blocks import DecoderBlock, attend_excluding_groups
from .rope import RotaryTables


def concat_tokens(x: torch.Tensor) -> torch.Tensor:
    """[G, B, heads, T, d] (G token sets) -> [B, heads, G·T, d], sets concatenated in order."""
    g, b, h, t, d = x.shape
    return x.permute(1, 2, 0, 3, 4).reshape(b, h, g * t, d)


def split_tokens(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`concat_tokens`: [B, heads, G·T, d] -> [G, B, heads, T, d]."""
    b, h, gt, d = x.shape
    return x.view(b, h, groups, gt // groups, d).permute(2, 0, 1, 3, 4)


def group_ids(groups: torch.Tensor, tokens: int) -> torch.Tensor:
    """Group id of every token of concatenated token sets: [G] -> [G·T]."""
    return groups.repeat_interleave(tokens)


def multiview_layer(ref_block: DecoderBlock, src_block: DecoderBlock, x: torch.Tensor,
                    rope: RotaryTables, chunk_tokens: int) -> torch.Tensor:
    """One decoder layer over every path: x [R, N, B, T, D] -> [R, N, B, T, D].

    Path r's reference is view r: ``Y[r, r] = ref_block(X[r, r], ys=X[r, v != r])`` and
    ``Y[r, v] = src_block(X[r, v], ys=X[r, w != v])`` for v != r.
    """
    r_paths, n, b, t, d = x.shape
    dev = x.device
    flat = x.reshape(r_paths * n, b, t, d)
    ref_idx = torch.tensor([r * n + r for r in range(r_paths)], device=dev)      # (r, r)
    src_idx = torch.tensor([r * n + v for r in range(r_paths) for v in range(n) if v != r],
                           device=dev)                          # (r, v != r), r-major, v ascending
    x_ref, x_src = flat[ref_idx], flat[src_idx]                 # [R, B, T, D], [R·(N-1), B, T, D]

    # Reference views: keys/values are this path's other views under the reference block.
    y_ref = ref_block.self_step(x_ref.flatten(0, 1), rope).view_as(x_ref)
    k, v = ref_block.memory(x_src.view(r_paths, n - 1, b, t, d), rope)      # [R, N-1, B, h, T, d]
    q = ref_block.query(y_ref, rope)                                        # [R, B, h, T, d]
    keys, values = (a.permute(0, 2, 3, 1, 4, 5).flatten(3, 4).flatten(0, 1) for a in (k, v))
    attended = F.scaled_dot_product_attention(q.flatten(0, 1), keys, values).view_as(q)   # nothing to hide
    y_ref = ref_block.mlp_step(ref_block.cross_step(y_ref, attended))

    # Source views: every view's keys/values under the source block, computed once per path.
    y_src = src_block.self_step(x_src.flatten(0, 1), rope).view_as(x_src)
    k, v = src_block.memory(x, rope)                                        # [R, N, B, h, T, d]
    q = src_block.query(y_src, rope).unflatten(0, (r_paths, n - 1))      # [R, N-1, B, h, T, d]
    views = torch.arange(n, device=dev)
    k_group = group_ids(views, t)
    attended_src = []
    for r in range(r_paths):
        q_group = group_ids(torch.cat([views[:r], views[r + 1:]]), t)
        out = attend_excluding_groups(concat_tokens(q[r]), concat_tokens(k[r]),
                                      concat_tokens(v[r]), q_group, k_group, chunk_tokens)
        attended_src.append(split_tokens(out, n - 1))
    y_src = src_block.mlp_step(src_block.cross_step(y_src, torch.stack(attended_src).flatten(0, 1)))

    y = flat.index_copy(0, ref_idx, y_ref).index_copy(0, src_idx, y_src)
    return y.view(r_paths, n, b, t, d)


def cross_reference_layer(block: DecoderBlock, y: torch.Tensor, rope: RotaryTables,
                          chunk_tokens: int, out_paths: Optional[int] = None) -> torch.Tensor:
    """MV-DUSt3R+ cross-reference-view block: y [R, N, B, T, D] -> [R', N, B, T, D].

    ``Z[r, v] = block(Y[r, v], ys=[Y[r', v] for r' != r])``: each view attends to itself in the
    other reference paths (ascending r'). Only the first ``out_paths`` paths are computed (R' of
    them; default all): after the last layer only path 0 is used, but it reads every path.
    """
    r_paths, n, b, t, d = y.shape
    r_out = r_paths if out_paths is None else out_paths
    z = block.self_step(y[:r_out].flatten(0, 2), rope).view(r_out, n, b, t, d)
    k, v = block.memory(y, rope)                                            # [R, N, B, h, T, d]
    q = block.query(z, rope)                                                # [R', N, B, h, T, d]
    h, hd = q.shape[-3], q.shape[-1]

    def by_view(a: torch.Tensor) -> torch.Tensor:
        # [P, N, B, h, T, d] -> [N·B, h, P·T, d]: one attention problem per (view, scene).
        return a.permute(1, 2, 3, 0, 4, 5).reshape(n * b, h, a.shape[0] * t, hd)

    group = group_ids(torch.arange(r_paths, device=y.device), t)
    out = attend_excluding_groups(by_view(q), by_view(k), by_view(v), group[: r_out * t], group,
                                  chunk_tokens)
    out = out.view(n, b, h, r_out, t, hd).permute(3, 0, 1, 2, 4, 5)        # [R', N, B, h, T, d]
    return block.mlp_step(block.cross_step(z, out))
