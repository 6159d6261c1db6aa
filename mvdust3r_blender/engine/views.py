"""Which photos the network sees first: the reference views.

MV-DUSt3R treats input position 0 as its reference view (the world frame); MV-DUSt3R+ uses the first
``n_ref`` positions as reference views. The official demo (``get_reconstructed_scene``) spreads the
references over the sequence by a fixed swap rule; :func:`reference_order` reproduces it and lets the
user name the view that becomes position 0. The pipeline feeds the photos in this order and undoes it
with :func:`inverse_order`, so results always come back in the user's order.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import InputError


def official_order(n: int) -> list[int]:
    """The demo's order for ``n`` views: ``order[k]`` is the user index fed at network position k.

    N < 12: swap positions 1↔3 when N > 3 and 2↔6 when N > 6; N ≥ 12: swap 1↔N//4+1, 2↔2N//4+1,
    3↔3N//4+1. Position 0 never moves.
    """
    order = list(range(n))
    if n < 12:
        swaps = ([(1, 3)] if n > 3 else []) + ([(2, 6)] if n > 6 else [])
    else:
        swaps = [(1, n // 4 + 1), (2, 2 * n // 4 + 1), (3, 3 * n // 4 + 1)]
    for a, b in swaps:
        order[a], order[b] = order[b], order[a]
    return order


def check_reference_view(n: int, reference_view: Optional[int]) -> None:
    """Raise :class:`InputError` unless `reference_view` is None or a valid index among `n` photos."""
    if reference_view is not None and not 0 <= reference_view < n:
        raise InputError(f"reference view {reference_view} does not exist among {n} photos",
                         f"give an index from 0 to {n - 1} (in the order the photos were given)")


def reference_order(n: int, reference_view: Optional[int] = None) -> list[int]:
    """The official order, then the user's chosen view (if any) swapped into position 0.

    The swap keeps the official spread of the other reference positions: the view that was at
    position 0 takes the chosen view's old position.
    """
    check_reference_view(n, reference_view)
    order = official_order(n)
    if reference_view is not None:
        pos = order.index(reference_view)
        order[0], order[pos] = order[pos], order[0]
    return order


def inverse_order(order: Sequence[int]) -> list[int]:
    """``inv`` with ``inv[user_index]`` = network position, so ``network_result[inv]`` is in user order."""
    inv = [0] * len(order)
    for position, user_index in enumerate(order):
        inv[user_index] = position
    return inv
