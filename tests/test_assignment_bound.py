"""The knapsack (assignment-row) Lagrangian bound: exact knapsacks, valid bounds, never weaker."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from scheduler import compile_options
from scheduler.engines.assignment import (
    AssignmentRelaxation,
    _knapsack,
    fits,
    subgradient_ascent,
)
from scheduler.engines.lagrangian import CapacityRelaxation, DualAscent
from scheduler.gap import GapProblem, gap_to_instance
from tests.brute import brute_force
from tests.test_large_engine import TOL, exact_optimum, random_options


def small_gap(seed: int, m: int = 3, n: int = 9) -> GapProblem:
    """A tight type-D-like GAP problem small enough for brute force."""
    rng = np.random.default_rng(seed)
    use = rng.integers(1, 30, (m, n))
    cost = 40 - use + rng.integers(-5, 6, (m, n))
    capacity = np.floor(0.8 * use.sum(axis=1) / m).astype(np.int64)
    return GapProblem(name=f"small-{seed}", m=m, n=n, cost=cost, use=use, capacity=capacity)


def test_knapsack_programme_and_branch_and_bound_are_exact():
    """The dynamic programme and OR-Tools' branch and bound (profits rounded up) both reach the
    enumerated optimum, and the chosen items fit and are worth the value."""
    rng = np.random.default_rng(3)
    relax = AssignmentRelaxation(random_options(0))
    for _ in range(40):
        n = int(rng.integers(1, 11))
        profit = rng.uniform(0.01, 20.0, n)
        weight = rng.integers(0, 15, n)
        cap = int(rng.integers(0, 40))
        weight = np.minimum(weight, cap)
        best = max(float(profit[list(s)].sum()) for r in range(n + 1)
                   for s in itertools.combinations(range(n), r) if weight[list(s)].sum() <= cap)
        for solve in (_knapsack, relax._solve):
            value, pick = solve(profit, weight, cap)
            assert value >= best - 1e-9 and value <= best + 1e-9 * max(1.0, best)
            assert int(weight[pick].sum()) <= cap
            assert abs(float(profit[pick].sum()) - best) <= 1e-9 * max(1.0, best)


@pytest.mark.parametrize("seed", range(6))
def test_bound_is_valid_and_never_below_the_capacity_relaxation(seed):
    """On small GAP problems and on random instances with optional demands: L(mu) <= optimum at
    the start, at random multipliers and after the ascent; the start is at least the capacity
    relaxation's bound at the same multipliers."""
    if seed % 2:
        options = random_options(200 + seed, demands=12, pools=3)
        best = exact_optimum(options)
    else:
        options = compile_options(gap_to_instance(small_gap(seed)))
        best = brute_force(options)
    if best is None:
        pytest.skip("infeasible draw")
    capacity = CapacityRelaxation(options)
    dual = DualAscent(capacity)
    dual.run(200, time.perf_counter() + 5)
    relax = AssignmentRelaxation(options)
    mu0 = relax.start(dual.best.lam)
    first = relax.evaluate(mu0)
    assert first.bound >= dual.best.bound - 1e-9 * max(1.0, abs(best))
    assert first.bound <= best + TOL
    rng = np.random.default_rng(seed)
    for _ in range(10):
        assert relax.evaluate(mu0 + rng.normal(0.0, 5.0, len(mu0))).bound <= best + TOL
    result = subgradient_ascent(relax, mu0, best, time.perf_counter() + 30, 300)
    assert first.bound - TOL <= result.best.bound <= best + TOL


def test_knapsack_bound_is_stronger_on_tight_gap():
    """On tight GAP problems the knapsack bound closes part of the LP gap (it can fail: were the
    relaxation no stronger than the LP, every problem would end at the capacity bound)."""
    gained = 0
    for seed in range(4):
        options = compile_options(gap_to_instance(small_gap(seed, m=4, n=16)))
        assert fits(options)
        dual = DualAscent(CapacityRelaxation(options))
        dual.run(300, time.perf_counter() + 5)
        relax = AssignmentRelaxation(options)
        result = subgradient_ascent(relax, relax.start(dual.best.lam), dual.best.value * 1.05,
                                    time.perf_counter() + 30, 300)
        gained += result.best.bound > dual.best.bound + 1e-6
    assert gained >= 2


def test_national_scale_shapes_do_not_fit():
    """Large capacities in quanta keep the knapsack bound off (the capacity relaxation alone)."""
    options = random_options(1)
    big = type(options)(**{**options.__dict__, "capacity": options.capacity * 10**6})
    assert not fits(big)


@pytest.mark.parametrize("repair", [0, 5])
def test_engine_reports_the_knapsack_bound_and_stays_valid(monkeypatch, repair):
    """Through solve_large (iteration limit, one worker): the knapsack phase runs on a GAP
    problem, its bound is below the optimum and the plan is feasible, with and without repair."""
    from scheduler import SolveParams
    from scheduler.engines import large
    from scheduler.engines.primal import is_feasible, objective

    monkeypatch.setattr(large, "REPAIR_EVERY", repair)
    options = compile_options(gap_to_instance(small_gap(1, m=4, n=16)))
    best = exact_optimum(options)
    result = large.solve_large(options, SolveParams(time_limit_s=60, workers=1, seed=0,
                                                    iteration_limit=3))
    assert is_feasible(options, result.choice)
    assert result.lower_bound <= best + TOL <= objective(options, result.choice) + 2 * TOL
    assert result.details["knapsack_steps"] == large.ASSIGNMENT_DETERMINISTIC_STEPS
    assert result.details["knapsack_bound"] <= best + TOL
    assert result.details["knapsack_repairs"] == (
        result.details["knapsack_steps"] // repair if repair else 0)
