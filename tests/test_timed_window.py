"""Windows of a horizon plan re-solved exactly (`engines/timed_window.py`): the freed part as a
problem of its own differs from the whole plan by a constant, the hint is the plan itself, and a
merged sub-plan keeps every row of the whole problem."""

from __future__ import annotations

import time

import numpy as np
import pytest

from scheduler.engines.timed_dual import Routes, StartPricer
from scheduler.engines.timed_exact import choice_objective, solve_timed_exact
from scheduler.engines.timed_large import _hint_state, solve_timed_large
from scheduler.engines.timed_window import Window, WindowProblem, WindowSearch
from scheduler.generate import china_instance
from scheduler.params import SolveParams
from scheduler.timed import TimedLoad, compile_timed
from tests.test_timed_large import make_problem

BUDGET = SolveParams(time_limit_s=600, workers=1, seed=0, iteration_limit=2)
SUB = SolveParams(time_limit_s=600, workers=1, seed=0, deterministic_time_limit_s=0.5, gap_limit=0.0)


def _state(problem):
    """A plan of ``problem`` as a plan state: the large engine's after two dual steps, else (a
    must-serve job left out) the exact engine's."""
    result = solve_timed_large(problem, BUDGET)
    if result.choice is None:
        result = solve_timed_exact(problem, SUB)
    if result.choice is None:
        pytest.skip("no plan: the generated problem is infeasible")
    state = _hint_state(problem, StartPricer(problem), Routes(problem), result.choice, lambda: False)
    assert state is not None
    return state


def _check_window(problem, state, window: Window) -> None:
    carbon = None if problem.carbon_cap_g is None else state.carbon_free
    base = state.choice()
    wp = WindowProblem(problem, base, window, state.pool_free, state.link_free, carbon)
    merged_hint = wp.merge(wp.hint)
    for name in ("option", "start_slot", "replicas", "served"):
        assert np.array_equal(getattr(merged_hint, name), getattr(base, name)), name
    # The freed part's room is exactly the room it used plus the room the plan leaves.
    load = TimedLoad.of(problem, base)
    sub = wp.problem
    assert np.array_equal(sub.avail - TimedLoad.of(sub, wp.hint).gpus, problem.avail - load.gpus)
    result = solve_timed_exact(sub, SUB, hint=wp.hint)
    assert result.choice is not None  # the hint is a plan of the sub-problem
    change = choice_objective(sub, result.choice) - choice_objective(sub, wp.hint)
    assert change <= 1e-9 * max(1.0, abs(choice_objective(sub, wp.hint)))
    merged = wp.merge(result.choice)
    whole = choice_objective(problem, merged) - choice_objective(problem, base)
    assert whole == pytest.approx(change, abs=1e-6 * max(1.0, abs(choice_objective(problem, base))))
    # Every pool-slot, link-slot and the cap hold for the merged plan (placed from scratch).
    after = TimedLoad.of(problem, merged)
    assert (after.gpus <= problem.avail).all()
    assert (after.link <= problem.bandwidth).all()
    if problem.carbon_cap_g is not None:
        assert after.grams_used <= problem.carbon_cap_g
    assert _hint_state(problem, StartPricer(problem), Routes(problem), merged, lambda: False) is not None


@pytest.mark.parametrize("seed", range(12))
def test_windows_of_random_small_problems(seed):
    problem = make_problem(seed, demands=6, pools=2, slots=5, services=2, carbon_cap=seed % 2 == 0,
                           must_share=0.0 if seed % 3 else 0.3)
    state = _state(problem)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        pools = rng.random(problem.n_pools) < 0.6
        pools[rng.integers(problem.n_pools)] = True
        first = int(rng.integers(problem.slots))
        end = int(rng.integers(first + 1, problem.slots + 1))
        _check_window(problem, state, Window(pools, first, end))


@pytest.mark.parametrize("cap_t", [None, 2.0])
def test_windows_of_a_generated_day(cap_t):
    """A generated day (batch jobs moving data, services on several pools); the cap binds at 2 t."""
    problem = compile_timed(china_instance(demands=80, seed=5, hours=24, carbon_cap_t_co2=cap_t))
    state = _state(problem)
    search = WindowSearch(problem, np.random.default_rng(0))
    for _ in range(4):
        window = search.draw()
        _check_window(problem, state, window)


def test_window_search_step_never_returns_a_dearer_plan():
    problem = compile_timed(china_instance(demands=80, seed=2, hours=24))
    state = _state(problem)
    search = WindowSearch(problem, np.random.default_rng(3))
    before = state.objective()
    for _ in range(3):
        choice = search.step(state, BUDGET, deadline=time.perf_counter() + 600, deterministic=True, stop=None)
        if choice is None:
            continue
        assert choice_objective(problem, choice) <= before + 1e-6 * before
    assert search.tries == 3


def test_deterministic_with_an_iteration_limit_and_windows():
    """With an iteration limit the windows run under CP-SAT's deterministic limit, one worker:
    two runs give the same plan."""
    problem = compile_timed(china_instance(demands=60, seed=4, hours=12))
    params = SolveParams(time_limit_s=600, workers=1, seed=1, iteration_limit=40)
    first, second = solve_timed_large(problem, params), solve_timed_large(problem, params)
    assert first.details.get("window_tries", 0) > 0
    assert np.array_equal(first.choice.option, second.choice.option)
    assert np.array_equal(first.choice.start_slot, second.choice.start_slot)
    assert np.array_equal(first.choice.replicas, second.choice.replicas)
    assert first.lower_bound == second.lower_bound
