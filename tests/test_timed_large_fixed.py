"""The horizon large engine's fixed costs and its clock (issues #7, #8): the vectorized warm
start against the job-by-job one, the clock checked before the zero-multiplier pricing, and the
garbage collector's state restored."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable

import numpy as np
import pytest

from scheduler.engines import timed_large
from scheduler.engines.timed_dual import Routes, StartPricer
from scheduler.engines.timed_greedy import TimedGreedy
from scheduler.engines.timed_large import HUGE, PlanState, _grams_int, _hint_state, solve_timed_large
from scheduler.generate import china_instance
from scheduler.params import SolveParams
from scheduler.timed import TimedChoice, TimedProblem, compile_timed


# The warm start placed job by job, as before it was vectorized (the reference).
def reference_hint_state(problem: TimedProblem, pricer: StartPricer, routes: Routes,
                hint: TimedChoice, stopped: Callable[[], bool]) -> PlanState | None:
    """The hint as a plan state, or None if it does not fit its rows or windows (or stopped).
    Placed as given; the rows are checked once, at the end (no room may be negative)."""
    b, sv = problem.batch, problem.services
    if len(hint.option) != len(b.rows) or hint.replicas.shape != (len(sv.pool), problem.slots):
        return None
    state = PlanState(problem, pricer, routes)
    for d in range(len(b.rows)):
        k, s = int(hint.option[d]), int(hint.start_slot[d])
        if k < 0:
            continue
        if d % 256 == 255 and stopped():
            return None
        if not (b.start[d] <= k < b.start[d + 1]) or not (b.first[k] <= s <= b.last[k]):
            return None
        one, sm = np.array([k]), np.array([[s]])
        if pricer.capped[k] and not pricer.raw_price(one, sm)[0, 0] <= b.max_price[k]:
            return None
        grams_f = pricer.grams(one, sm)
        rate, grams = pricer.rate(one, sm), _grams_int(grams_f)
        state.place(d, k, s, float(pricer.cost(one, sm, grams_f)[0, 0]), int(rate[0, 0]), int(grams[0, 0]))
    for i in range(len(sv.rows)):
        lo, hi = int(sv.start[i]), int(sv.start[i + 1])
        for t in range(problem.slots):
            snap = (hint.replicas[lo:hi, t].astype(np.int64), hint.served[lo:hi, t].astype(np.int64))
            if np.any(snap[0] < 0) or np.any(snap[1] < 0) or np.any(snap[1] > snap[0] * sv.kappa[lo:hi]):
                return None
            if int(snap[1].sum()) > int(sv.load[i, t]):
                return None
            cost = float((snap[0] * sv.rent[lo:hi, t]).sum() + (snap[1] * sv.transfer_per_quantum[lo:hi]).sum()
                         + (int(sv.load[i, t]) - int(snap[1].sum())) * sv.penalty_per_quantum[i])
            state.restore_service_slot(i, t, (snap[0], snap[1], cost))
    if np.any(state.pool_free < 0) or np.any(state.link_free < 0) or state.carbon_free < 0:
        return None
    return state


def _same_state(a: PlanState, b: PlanState) -> None:
    for name in ("option", "start", "batch_cost", "batch_grams", "batch_rate", "replicas",
                 "served", "service_cost", "service_grams", "pool_free", "service_held"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.link_free, b.link_free)
    np.testing.assert_array_equal(a.route_free, b.route_free)
    assert a.carbon_free == b.carbon_free
    assert a.objective() == b.objective()  # bit for bit
    assert a.unplaced() == b.unplaced()


@pytest.fixture(scope="module")
def compiled() -> list[tuple[TimedProblem, TimedChoice]]:
    out = []
    for cap in (None, 2.0):
        inst = china_instance(demands=150, seed=3, hours=24, carbon_cap_t_co2=cap)
        pb = compile_timed(inst)
        hint, complete = TimedGreedy(pb, None).run()
        assert complete
        out.append((pb, hint))
    return out


def test_vectorized_warm_start_is_the_job_by_job_one(compiled):
    for pb, hint in compiled:
        pricer, routes = StartPricer(pb), Routes(pb)
        got = _hint_state(pb, pricer, routes, hint, lambda: False)
        want = reference_hint_state(pb, pricer, routes, hint, lambda: False)
        assert got is not None and want is not None
        _same_state(got, want)


def test_warm_start_is_checked_against_the_clock_before_the_zero_multiplier_pricing(compiled, monkeypatch):
    """With a warm start and no time left, no start is priced for the bound: the warm start
    comes back as the plan (the caller has or computes a bound)."""
    pb, hint = compiled[0]
    priced = []
    real = timed_large.TimedRelaxation.chunk_costs
    monkeypatch.setattr(timed_large.TimedRelaxation, "chunk_costs",
                        lambda self, i, ks: priced.append(i) or real(self, i, ks))

    def no_ascent(*_a, **_k):
        raise AssertionError("the zero-multiplier pricing ran with no time left")

    monkeypatch.setattr(timed_large, "PolyakAscent", no_ascent)
    out = solve_timed_large(pb, SolveParams(time_limit_s=1e-9, workers=1), hint=hint)
    assert priced == []
    assert out.choice is not None and out.lower_bound is None
    np.testing.assert_array_equal(out.choice.option, hint.option)
    np.testing.assert_array_equal(out.choice.start_slot, hint.start_slot)
    np.testing.assert_array_equal(out.choice.replicas, hint.replicas)


def test_no_start_is_priced_after_a_stop(compiled, monkeypatch):
    """The zero-multiplier pricing and the builder's pricing pass read the stop between chunks:
    once it is set, not one more chunk is priced."""
    from scheduler.engines import timed_dual

    pb, hint = compiled[1]
    monkeypatch.setattr(timed_dual, "CHUNK_CELLS", 64)  # many small chunks
    calls = {"after": 0, "chunks": 0}
    stop = {"set": False}
    real = timed_large.TimedRelaxation.chunk_costs
    real_fit = timed_large.PlanState.price_fitting

    def counted(self, i, ks):
        calls["chunks"] += 1
        calls["after"] += stop["set"]
        if calls["chunks"] == 3:
            stop["set"] = True
        return real(self, i, ks)

    def fitted(self, ks, rc_extra=None):
        calls["after"] += stop["set"]
        return real_fit(self, ks, rc_extra)

    monkeypatch.setattr(timed_large.TimedRelaxation, "chunk_costs", counted)
    monkeypatch.setattr(timed_large.PlanState, "price_fitting", fitted)
    out = solve_timed_large(pb, SolveParams(time_limit_s=3600, workers=1), hint=hint,
                            stop=lambda: stop["set"])
    assert calls["chunks"] == 3 and calls["after"] == 0
    assert out.choice is not None  # the warm start
    np.testing.assert_array_equal(out.choice.option, hint.option)


def test_tiny_budget_without_hint_still_gives_a_verified_plan():
    """`solve_timed` at a limit shorter than compiling: the engine gets its floor of 0.05 s and
    the command still returns a plan the verifier accepts (it raises otherwise)."""
    from scheduler.solve import solve_timed

    inst = china_instance(demands=60, seed=5, hours=24)
    result = solve_timed(inst, SolveParams(time_limit_s=0.01, workers=1))
    assert result.verification.ok and result.plan.lower_bound is not None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("before", [True, False])
def test_no_gc_restores_the_collector_on_errors(error, before):
    """`solve.no_gc` turns the collector off inside and puts back the state it found, also when
    the body raises (an error or Ctrl-C)."""
    from scheduler.solve import no_gc

    was = gc.isenabled()
    try:
        (gc.enable if before else gc.disable)()
        with pytest.raises(error):
            with no_gc():
                assert not gc.isenabled()
                raise error("boom")
        assert gc.isenabled() is before
    finally:
        (gc.enable if was else gc.disable)()


def test_prefilled_start_costs_give_the_evaluation_it_would_compute(compiled):
    """The clock-checked prefill (`_price_starts`) keeps the chunks the evaluation reads: L(0)
    after it is L(0) from scratch, bit for bit, and a chunk kept for other options is refused."""
    from scheduler.engines.timed_dual import Multipliers, TimedRelaxation

    for pb, _ in compiled:
        zero = Multipliers(np.zeros(pb.avail.shape), np.zeros(pb.bandwidth.shape), 0.0)
        fresh = TimedRelaxation(pb).evaluate(zero)
        relax = TimedRelaxation(pb)
        assert timed_large._price_starts(relax, lambda: False)
        assert len(relax._kept) == len(relax.chunks())
        got = relax.evaluate(zero)
        assert got.value == fresh.value and got.bound == fresh.bound
        chunks = relax.chunks()
        if len(chunks) > 1:  # chunks are disjoint: chunk 0's costs are not chunk 1's
            with pytest.raises(ValueError):
                relax.chunk_costs(0, chunks[1])
