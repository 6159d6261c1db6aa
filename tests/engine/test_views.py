"""Reference-view order: the official demo rule, the user's choice, and its inverse."""
from __future__ import annotations

import pytest

from mvdust3r_blender.engine.errors import InputError
from mvdust3r_blender.engine.views import inverse_order, official_order, reference_order


@pytest.mark.parametrize("n, expected", [
    (2, [0, 1]),
    (3, [0, 1, 2]),
    (4, [0, 3, 2, 1]),
    (6, [0, 3, 2, 1, 4, 5]),
    (7, [0, 3, 6, 1, 4, 5, 2]),
    (11, [0, 3, 6, 1, 4, 5, 2, 7, 8, 9, 10]),
    (12, [0, 4, 7, 10, 1, 5, 6, 2, 8, 9, 3, 11]),   # 1↔4, 2↔7, 3↔10
    (20, [0, 6, 11, 16, 4, 5, 1, 7, 8, 9, 10, 2, 12, 13, 14, 15, 3, 17, 18, 19]),  # 1↔6, 2↔11, 3↔16
])
def test_official_order_matches_the_demo_swaps(n, expected):
    assert official_order(n) == expected


@pytest.mark.parametrize("n", [2, 4, 7, 12, 57, 100])
def test_orders_are_permutations_and_inverse_undoes_them(n):
    for ref in (None, 0, n - 1, n // 2):
        order = reference_order(n, ref)
        assert sorted(order) == list(range(n))
        back = inverse_order(order)
        assert [order[back[u]] for u in range(n)] == list(range(n))
        if ref is not None:
            assert order[0] == ref


def test_chosen_view_swaps_with_position_zero_keeping_the_spread():
    # official for 5 views: [0,3,2,1,4]; view 3 sits at position 1 and trades places with view 0
    assert reference_order(5, 3) == [3, 0, 2, 1, 4]
    # a view outside the reference positions comes to the front, view 0 takes its place
    assert reference_order(5, 4) == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("bad", [-1, 5, 99])
def test_reference_view_out_of_range_is_an_input_error(bad):
    with pytest.raises(InputError, match=f"reference view {bad} does not exist among 5 photos"):
        reference_order(5, bad)
