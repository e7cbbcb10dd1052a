"""The tabu search of GAP-like instances (`engines/tabu.py`): plans that fit, optima of tiny
problems, determinism for a seed, stop requests, and where it applies."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scheduler import SolveParams, compile_options, solve
from scheduler.engines import large, tabu
from scheduler.engines.large import solve_large
from scheduler.engines.primal import is_feasible, objective
from scheduler.gap import GapProblem, gap_to_instance
from tests.brute import brute_force
from tests.test_large_engine import hard_gap, random_options


def tiny_gap(seed: int, m: int = 3, n: int = 7, tight: float = 1.0) -> GapProblem:
    """A small type-D-like problem (cost falls as use rises) with tight capacities."""
    rng = np.random.default_rng(seed)
    use = rng.integers(1, 30, (m, n))
    cost = 40 - use + rng.integers(-5, 6, (m, n))
    capacity = np.maximum(np.floor(tight * use.sum(axis=1) / m), use.max()).astype(np.int64)
    return GapProblem(name=f"tiny-{seed}", m=m, n=n, cost=cost, use=use, capacity=capacity)


def feasible_start(options) -> np.ndarray | None:
    """Some complete plan that fits (each demand, largest first, on the pool with the most room
    left after it), or None."""
    room = options.capacity.copy()
    choice = np.full(options.n_demands, -1, dtype=np.int64)
    size = np.maximum.reduceat(options.units, options.start[:-1])
    for d in np.argsort(-size, kind="stable"):
        ks = np.arange(options.start[d], options.start[d + 1])
        left = room[options.pool[ks]] - options.units[ks]
        if left.max() < 0:
            return None
        k = int(ks[np.argmax(left)])
        room[options.pool[k]] -= options.units[k]
        choice[d] = k
    return choice


@pytest.mark.parametrize("seed", range(8))
def test_tiny_problems_reach_the_brute_force_optimum(seed):
    """From a plan that fits, a few hundred moves find the optimum (below what each job's
    cheapest agent would cost: the capacities bind), and the best plan fits."""
    problem = tiny_gap(seed)
    options = compile_options(gap_to_instance(problem))
    start = feasible_start(options)
    assert brute_force(options) > problem.cost.min(axis=0).sum()
    search = tabu.TabuSearch(options, start, seed)
    search.run(400)
    best = search.best_choice()
    assert is_feasible(options, best)
    assert objective(options, best) == search.best_cost == brute_force(options)


def test_moves_keep_loads_costs_and_state_consistent():
    """After every move the loads, the running cost and the per-demand cost and usage equal what
    they are recomputed from scratch, with short and with full candidate lists."""
    options = compile_options(gap_to_instance(hard_gap(n=60)))
    for candidates in (1, 100):
        search = tabu.TabuSearch(options, feasible_start(options), 0, candidates=candidates,
                                 min_listed=0)
        assert search.m == (search.n if candidates == 100 else -(-search.n // search.P))
        for _ in range(150):
            search.step()
            r = np.arange(search.n)
            load = np.bincount(search.at, weights=search.U[r, search.at], minlength=search.P)
            assert np.array_equal(load, search.load)
            assert search.cost == pytest.approx(search.C[r, search.at].sum(), abs=1e-6)
            assert np.array_equal(search.own, search.C[r, search.at])
            assert np.array_equal(search.uown, search.U[r, search.at])
        best = search.best_choice()
        assert is_feasible(options, best) and objective(options, best) == search.best_cost


def test_candidate_lists_hold_each_pools_best_suited_demands():
    """Each pool lists m distinct demands, and none left off suits the pool better."""
    options = compile_options(gap_to_instance(hard_gap(n=60)))
    search = tabu.TabuSearch(options, feasible_start(options), 0, candidates=2, min_listed=0)
    price = search.C + search.w * search.U
    regret = price - price.min(axis=1, keepdims=True)
    for b in range(search.P):
        listed = search.cand[b]
        assert len(set(listed.tolist())) == search.m
        rest = np.setdiff1d(np.arange(search.n), listed)
        assert regret[listed, b].max() <= regret[rest, b].min()


def test_same_seed_same_walk():
    options = compile_options(gap_to_instance(hard_gap(n=80)))
    start = feasible_start(options)
    walks = []
    for seed in (5, 5, 6):
        search = tabu.TabuSearch(options, start, seed)
        search.run(200)
        walks.append((search.at.tolist(), search.best_cost, dict(search.moves)))
    assert walks[0] == walks[1]
    assert walks[0] != walks[2]


def test_engine_with_the_tabu_is_deterministic_and_verifies(monkeypatch):
    """Through solve(): one worker, a seed and an iteration limit give the same verified plan
    twice, and the tabu search ran (short CP-SAT sub-solves, to keep the test fast)."""
    monkeypatch.setattr(large, "DETERMINISTIC_SUB_LIMIT", 0.05)
    instance = gap_to_instance(hard_gap(n=100))
    params = SolveParams(engine="large", time_limit_s=120, workers=1, seed=2, iteration_limit=3)
    first, second = solve(instance, params), solve(instance, params)
    assert first.verification.ok and first.verification.objective == first.objective
    assert sorted((a.demand, a.pool) for a in first.plan.assignments) == sorted(
        (a.demand, a.pool) for a in second.plan.assignments)
    details = first.plan.stats.details
    assert details["tabu_iterations"] > 0
    assert details == second.plan.stats.details | {
        k: v for k, v in details.items() if k.endswith("_s")}  # timings aside
    assert first.lower_bound <= first.objective


def test_two_workers_run_the_tabu_in_a_thread_and_verify():
    instance = gap_to_instance(hard_gap(n=100))
    result = solve(instance, SolveParams(engine="large", time_limit_s=2, workers=2, seed=1))
    assert result.verification.ok and result.verification.objective == result.objective
    assert result.plan.stats.details["tabu_iterations"] > 0
    assert result.lower_bound <= result.objective


def test_stop_request_ends_the_run_and_the_thread():
    """A stop callable that turns true ends `run` within a check; `halt` joins the thread."""
    options = compile_options(gap_to_instance(hard_gap(n=60)))
    search = tabu.TabuSearch(options, feasible_start(options), 0)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    search.run(10_000, stop=stop)
    assert search.iteration <= 3 * tabu.CHECK_EVERY
    companion = tabu.Companion(options, feasible_start(options), 0)
    event = threading.Event()
    companion.start(5, float("inf"), event.is_set)
    event.set()
    companion.halt()
    assert not companion.thread.is_alive()


def test_stop_event_reaches_the_threaded_tabu():
    """Through the engine with two workers: a stop set at the first plan ends a 600 s solve
    with a plan that fits (the tabu thread sees the same event)."""
    options = compile_options(gap_to_instance(hard_gap(n=100)))
    stop = threading.Event()

    def on_progress(progress):
        if progress.objective is not None:
            stop.set()

    result = solve_large(options, SolveParams(time_limit_s=600, workers=2), stop=stop,
                         on_progress=on_progress)
    assert result.choice is not None and is_feasible(options, result.choice)
    assert result.solver_status == "STOPPED"


def test_applies_only_to_must_serve_assignment_shapes():
    gap = compile_options(gap_to_instance(hard_gap(n=40)))
    assert tabu.applies(gap)
    assert not tabu.applies(random_options(3, demands=40, must_share=0.5))  # optional demands
