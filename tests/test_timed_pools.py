"""The pool bound (scheduler/engines/timed_pools.py): valid on tiny problems, never below the
capacity relaxation it starts from, and above it where whole jobs cannot fill a pool."""

from __future__ import annotations

import functools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engines.timed_dual import Multipliers, PolyakAscent, TimedRelaxation
from scheduler.engines.timed_pools import PoolBound
from scheduler.generate import china_instance
from scheduler.timed import compile_timed
from tests.test_timed_large import choice_cost, make_problem, optimum, violations


def _never(): return False


def _multipliers(pb, seed: int, scale: float) -> Multipliers:
    rng = np.random.default_rng(seed)
    return Multipliers(rng.exponential(scale, pb.avail.shape), rng.exponential(scale, pb.bandwidth.shape), 0.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), services=st.integers(0, 1), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_pool_bound_lies_between_the_relaxation_and_the_optimum(seed, services, scale):
    """At arbitrary multipliers: with every pool at its LP bound the decomposition is L(mu)
    exactly; with CP-SAT's bounds it is at least L(mu) and at most the enumerated optimum."""
    pb = make_problem(seed, services=services)
    opt = optimum(pb)
    if math.isinf(opt):
        return
    relax = TimedRelaxation(pb)
    point = relax.evaluate(_multipliers(pb, seed, scale))
    pools = PoolBound(pb, relax)
    prices = pools.prices(point)
    assert prices is not None
    assert math.isclose(prices.base - math.fsum(prices.lp_pool), point.value, rel_tol=1e-9, abs_tol=1e-9)
    value, _ = pools.bound(point, 10.0, 1, 1.0, _never)
    tol = 1e-9 * max(1.0, abs(opt))
    assert point.bound - tol <= value <= opt + tol


@functools.lru_cache(maxsize=1)
def _generated_day():
    """A small generated day, the ascent's best point on it and the pool bound there."""
    pb = compile_timed(china_instance(demands=40, seed=3, hours=8))
    relax = TimedRelaxation(pb)
    ascent = PolyakAscent(relax)
    for _ in range(300):
        ascent.step(None)
    pools = PoolBound(pb, relax)
    value, raised = pools.bound(ascent.best, 30.0, 1, 5.0, _never)
    return pb, relax, ascent, pools, value, raised


def test_pool_bound_raises_the_ascents_bound_on_a_generated_day():
    """On a small day the ascent's best L is an LP bound; keeping each pool's GPUs whole
    proves more (gangs of 1-16 GPUs on pools of a few), and still no more than CP-SAT's optimum."""
    from scheduler.engines.timed_exact import solve_timed_exact
    from scheduler.params import SolveParams

    pb, _relax, ascent, _pools, value, raised = _generated_day()
    assert raised > 0 and value > ascent.best.bound + 1e-6 * abs(ascent.best.bound)
    exact = solve_timed_exact(pb, SolveParams(engine="exact", time_limit_s=120, workers=1, seed=0,
                                                  gap_limit=0.0))
    assert exact.solver_status == "OPTIMAL"  # (the status keeps the rounding's 1e-6 margin)
    opt = choice_cost(pb, exact.choice)
    assert value <= opt + 1e-9 * abs(opt)


def test_huge_prices_keep_the_lp_bound_of_their_pools():
    """Multipliers so large that a pool's rounded profits would overflow CP-SAT's int64
    objective: those pools keep their LP bound (no error), and the value is still L(mu)'s."""
    pb = make_problem(5, demands=6, must_share=1.0)  # must-serve: sigma is the huge reduced cost
    relax = TimedRelaxation(pb)
    point = relax.evaluate(_multipliers(pb, 5, 1e17))
    value, raised = PoolBound(pb, relax).bound(point, 5.0, 1, 1.0, _never)
    assert raised == 0
    assert math.isclose(value, point.bound, rel_tol=1e-6)


def test_the_pools_packings_fit_their_pools_and_guide_a_plan_that_meets_every_row():
    """What the pools' CP-SAT solutions chose fits each pool's GPUs in every slot (whole jobs at
    one start each, whole replicas), and the plan built after them keeps every row and reports
    its own cost."""
    from scheduler.engines.timed_dual import Routes
    from scheduler.engines.timed_large import Builder

    pb, relax, ascent, pools, _value, _raised = _generated_day()
    picks = pools.picks
    assert picks is not None and len(picks.option) > 0
    pr, sv, S = relax.pricer, pb.services, pb.slots
    used = np.zeros(pb.avail.shape, dtype=np.int64)
    for k, s in zip(picks.option.tolist(), picks.start.tolist()):
        assert pr.first[k] <= s <= pr.last[k]
        used[pr.pool[k], s: s + pr.n[k]] += pr.gang[k]
    np.add.at(used, sv.pool.astype(np.int64), picks.replicas * sv.gang[relax.service_owner].astype(np.int64)[:, None])
    assert np.all(used <= pb.avail)
    pairs = list(zip(pr.pool[picks.option].tolist(), pr.owner[picks.option].tolist()))
    assert len(pairs) == len(set(pairs))  # a pool takes a demand at most once
    state = Builder(pb, relax, Routes(pb)).build_from(picks, ascent.best.multipliers, _never)
    choice = state.choice()
    assert violations(pb, choice) == []
    assert math.isclose(state.objective(), choice_cost(pb, choice), rel_tol=1e-9)
