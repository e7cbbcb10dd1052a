"""One service cell's cover (`scheduler.engines.timed_cells`) against enumerated replicas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engines.timed_cells import cell_cover
from tests.timed_reference import cell_by_enumeration

rows_ = st.lists(st.tuples(st.integers(1, 6), st.floats(0, 40), st.integers(0, 3)), min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(rows=rows_, load=st.integers(0, 14), pen=st.floats(0, 10), transfer=st.lists(st.floats(0, 4), min_size=7, max_size=7))
def test_cover_is_a_cover_and_least_cost_where_transfer_follows_size(rows, load, pen, transfer):
    """Valid (replicas within room, quanta within replicas and load, cost as stated), never
    cheaper than the enumerated optimum, and equal to it when the rows of one replica size
    share one transfer price (where the rule of taking each size's best rows first is exact)."""
    kappa = [k for k, _, _ in rows]
    rent = [r for _, r, _ in rows]
    room = [m for _, _, m in rows]
    per_size = [transfer[k] for k in kappa]  # one transfer price per size
    for tr, exact in ((per_size, True), (transfer[: len(rows)], False)):
        got = cell_cover(load, pen, kappa, rent, tr, room)
        assert got is not None
        placed, cost = got
        served = 0
        total = 0.0
        for j, m, u in placed:
            assert 1 <= m <= room[j] and 0 < u <= m * kappa[j]
            served += u
            total += rent[j] * m + tr[j] * u
        assert served <= load and len({j for j, _, _ in placed}) == len(placed)
        assert cost == pytest.approx(total + pen * (load - served), rel=1e-12, abs=1e-12)
        best = cell_by_enumeration(load, pen, kappa, rent, tr, room)
        tol = 1e-9 * max(1.0, abs(best))
        assert cost >= best - tol and cost <= pen * load + tol
        if exact:
            assert cost == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_small_load_takes_the_small_replica():
    """A quarter of a large replica's load: one small replica at half the rent, not the large
    replica that is cheaper per quantum when full (the case the per-quantum greedy gets wrong)."""
    placed, cost = cell_cover(100, 1.0, [400, 120], [40.0, 30.0], [0.0, 0.0], [1, 1])
    assert placed == [(1, 1, 100)] and cost == pytest.approx(30.0)


def test_too_many_counts_gives_up():
    """Past ``max_combinations`` counts of full replicas the cover gives up (None)."""
    kappa, rent, tr, room = [1, 2, 3], [0.1, 0.1, 0.1], [0.0, 0.0, 0.0], [50, 50, 50]
    assert cell_cover(8, 1.0, kappa, rent, tr, room, max_combinations=10) is None
    placed, cost = cell_cover(8, 1.0, kappa, rent, tr, room)  # 41 counts: within the default
    assert sum(u for _, _, u in placed) == 8 and cost == pytest.approx(0.3)
