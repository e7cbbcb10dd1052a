"""Re-planning's time budget and its faster fixed phases (docs/replan.md, "Time"): the search
gets the limit less the measured phases before it and the reserve; the shortcuts (the
verifier's bounded scan, the warm start's partial pricing, the plan's load built at once) give
what the plain computations give."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Baseline, DemandKind, Replanning, Status
from scheduler import read_instance, solve
from scheduler.engines.timed_greedy import Candidates, TimedGreedy
from scheduler.generate import china_instance
from scheduler.params import SolveParams
from scheduler.replan import POST_PER_VERIFY, Events, OutageEvent, replan
from scheduler.strategies import timed_instances
from scheduler.timed import TimedLoad, compile_timed
from scheduler.timed_decode import choice_load
from scheduler.verify import _PASS, _PRICE_CAP, _WINDOW, _Checker, _Figures, _Run, _static_rule, _Timed

ROOT = Path(__file__).resolve().parent.parent
PRE_SEARCH = ("verify_old_s", "apply_events_s", "compile_s", "adjust_s", "warm_start_s")


def _outage(instance, now):
    pool = instance.regions[0].pools[0].id
    return Events(outages=(OutageEvent(target=pool, from_slot=now, to_slot=instance.horizon.slots),))


@pytest.fixture(scope="module")
def week_like():
    """A small generated week: 120 demands over 48 hourly slots, and its plan."""
    instance = china_instance(demands=120, seed=3, hours=48)
    return instance, solve(instance, SolveParams(time_limit_s=2, seed=1, workers=1)).plan


@pytest.mark.parametrize("limit", [0.5, 3.0])
def test_the_search_gets_the_limit_less_the_measured_phases_and_the_reserve(week_like, limit):
    """search budget = limit - (phases before the search) - reserve, the reserve the old plan's
    check times POST_PER_VERIFY; a ratio of recorded figures, no wall-clock assert."""
    instance, plan = week_like
    result = replan(instance, plan, now_slot=12, events=_outage(instance, 12),
                    params=SolveParams(time_limit_s=limit, seed=1, workers=1))
    d = result.plan.stats.details
    assert d["reserve_s"] == POST_PER_VERIFY * d["verify_old_s"] * 1.0 + 0.02
    assert d["search_budget_s"] == max(limit - d["prepare_s"] - d["reserve_s"], 0.05)
    phases = sum(d[k] for k in PRE_SEARCH)
    assert phases <= d["prepare_s"] <= phases + 0.05 + 0.05 * phases  # the laps tile the time
    assert result.plan.stats.wall_time_s >= sum(d[k] for k in (*PRE_SEARCH, "search_s", "itemize_s",
                                                              "verify_new_s", "change_s"))


def test_a_limit_below_the_fixed_phases_is_said_up_front(week_like):
    """A limit the old plan's check and the reserve already pass: one "late:" message, before the
    first plan exists, and the re-plan still ends with a verified plan."""
    instance, plan = week_like
    told = []
    result = replan(instance, plan, now_slot=12, events=_outage(instance, 12),
                    params=SolveParams(time_limit_s=0.01, seed=1, workers=1),
                    on_progress=lambda p: told.append(p.message))
    late = [i for i, m in enumerate(told) if m.startswith("late: ")]
    assert len(late) == 1 and late[0] < told.index("first plan")
    assert "verifying the old plan took" in told[late[0]]
    assert result.verification.ok


def test_an_iteration_limited_replan_repeats_exactly(week_like):
    """With an iteration limit (and time to spare) the plan does not depend on the clock."""
    instance, plan = week_like
    params = SolveParams(time_limit_s=300, seed=1, workers=1, iteration_limit=1)
    first, second = (replan(instance, plan, now_slot=12, events=_outage(instance, 12), params=params)
                     for _ in range(2))
    assert first.plan.assignments == second.plan.assignments
    assert first.plan.objective == second.plan.objective
    assert first.plan.lower_bound == second.plan.lower_bound


def test_the_warm_start_prices_some_jobs_as_all_would(week_like):
    """Candidates of a subset of the jobs cost what those rows of the candidates of all jobs
    cost (starts of equal cost may differ: the chunks differ), each its own start's figures."""
    instance, _ = week_like
    problem = compile_timed(instance)
    whole = Candidates(problem)
    jobs = np.arange(0, problem.batch.n_demands, 3)
    part = Candidates(problem, jobs=np.zeros(0, dtype=np.int64))
    part.price(jobs[: len(jobs) // 2])
    part.price(jobs[len(jobs) // 2:])
    assert np.array_equal(part.cost[jobs], whole.cost[jobs])
    found = np.isfinite(part.cost)
    assert found[jobs].any()
    cost, co2, rate, allowed = problem.evaluate(part.option[found], part.start[found])
    assert allowed.all() and np.array_equal(cost, part.cost[found])
    assert np.array_equal(rate, part.rate[found])
    if problem.carbon_cap_g is not None:  # emissions are priced only under a cap
        assert np.array_equal(co2, part.co2[found])
    rest = np.setdiff1d(np.arange(problem.batch.n_demands), jobs)
    assert np.all(np.isinf(part.cost[rest]))
    greedy = TimedGreedy(problem, jobs=np.zeros(0, dtype=np.int64))
    assert np.all(np.isinf(greedy.cheapest))


def test_the_plan_load_built_at_once_is_the_load_job_by_job(week_like):
    instance, plan = week_like
    problem = compile_timed(instance)
    choice, _ = TimedGreedy(problem).run()
    fast, slow = choice_load(problem, choice), TimedLoad.of(problem, choice)
    assert np.array_equal(fast.gpus, slow.gpus)
    assert np.array_equal(fast.link, slow.link)
    assert fast.batch_grams == slow.batch_grams and fast.service_grams == slow.service_grams
    assert np.array_equal(fast.service_kg, slow.service_kg)


# -- the verifier's bounded scan against every start priced ------------------------------------


def _scan_every_start(tm: _Timed, d):
    """`_Timed.scan` as it read before its bounds: every start of every pool priced."""
    c = tm.c
    routes = c.routes(d.origin)
    worst = 0 if d.work_pflop is None else _PASS
    cheapest, moves = None, False
    offered = {o.pool: o for o in c.offers_by_demand.get(d.id, ())}
    if d.work_pflop is None and len(offered) == len(c.pools):
        worst = _PASS
    w = c.w
    for p in c.pools:
        offer = offered.get(p.id)
        if d.work_pflop is None and offer is None:
            continue
        rule, _, precision = _static_rule(d, p, routes)
        if rule != _PASS:
            worst = max(worst, rule)
            continue
        f = _Figures(d, p, offer, precision, routes[p.region][1], c.q, w)
        if d.deadline_hours is not None and f.runtime > d.deadline_hours:
            worst = max(worst, 8)
            continue
        run = _Run(tm, d, p, f)
        if not run.starts():
            worst = max(worst, _WINDOW)
            continue
        best = None
        for s in run.starts():
            energy = tm.energy_raw(run, p, s)
            if d.max_cost_cny is not None and f.compute_raw + energy + f.transfer_raw > d.max_cost_cny:
                continue
            cost = (f.compute + f.transfer + w.energy * energy
                    + tm.run_grams(run, p, s) / 1e6 * w.carbon_price_cny_per_t_co2 + tm.move_cost(d, p, s))
            best = cost if best is None or cost < best else best
        if best is None:
            worst = max(worst, _PRICE_CAP)
            continue
        moves = moves or run.moves
        cheapest = best if cheapest is None or best < cheapest else cheapest
    return worst, cheapest, moves


def _with_baseline(instance, draw_or_rng, now: int):
    """``instance`` with a `Replanning` whose baseline puts each batch job on some pool and start
    (pinned or not, with move and re-transfer costs); not checked against the plan rules, which
    the scan does not read."""
    pools = [p.id for _, p in instance.pools()]
    S = instance.horizon.slots
    rows = []
    for d in instance.demands:
        if d.kind == DemandKind.SERVICE or draw_or_rng(0, 3) == 0:
            continue
        rows.append(Baseline(demand=d.id, pool=pools[draw_or_rng(0, len(pools) - 1)],
                             start_slot=draw_or_rng(0, S - 1), pinned=draw_or_rng(0, 3) == 0,
                             move_cost_cny=float(draw_or_rng(0, 500)), retransfer_cny=float(draw_or_rng(0, 50))))
    return instance.model_copy(update={"replanning": Replanning(now_slot=now, baseline=tuple(rows))})


def _same_scans(instance) -> None:
    tm = _Timed(_Checker(instance))
    for d in instance.demands:
        if d.kind != DemandKind.SERVICE:
            assert tm.scan(d) == _scan_every_start(tm, d), d.id


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(instance=timed_instances(max_regions=3, max_demands=6, max_slots=8), data=st.data())
def test_the_bounded_scan_is_the_scan_of_every_start(instance, data):
    """Nearest miss, cheapest cost and `moves` as pricing every start gives them, with price
    caps, offers and a re-planning baseline (move costs, pinned jobs)."""
    _same_scans(instance)
    now = data.draw(st.integers(0, instance.horizon.slots - 1))
    _same_scans(_with_baseline(instance, lambda a, b: data.draw(st.integers(a, b)), now))


def _tight_caps(instance, rng):
    """Each batch job's price cap drawn near the least price of its starts on one of its pools
    (2% either side): some starts pass and some do not, or the bounds cannot tell."""
    tm = _Timed(_Checker(instance))
    c, out = tm.c, []
    for d in instance.demands:
        prices = []
        if d.kind != DemandKind.SERVICE and d.work_pflop is not None:
            routes = c.routes(d.origin)
            for p in c.pools:
                rule, _, precision = _static_rule(d, p, routes)
                if rule == _PASS:
                    f = _Figures(d, p, None, precision, routes[p.region][1], c.q, c.w)
                    run = _Run(tm, d, p, f)
                    prices += [min(f.compute_raw + tm.energy_raw(run, p, s) + f.transfer_raw
                                   for s in run.starts())] if run.starts() else []
        if prices:
            d = d.model_copy(update={"max_cost_cny": float(rng.choice(prices)) * rng.uniform(0.98, 1.02)})
        out.append(d)
    return instance.model_copy(update={"demands": tuple(out)})


def test_the_bounded_scan_on_a_generated_day_with_a_baseline():
    """The same on `china_instance` (tariffs, carbon by slot, price caps, many pools), its caps
    as generated and drawn tight."""
    instance = china_instance(demands=150, seed=5, hours=24)
    rng = np.random.default_rng(5)
    _same_scans(instance)
    _same_scans(_with_baseline(instance, lambda a, b: int(rng.integers(a, b + 1)), 6))
    _same_scans(_with_baseline(_tight_caps(instance, rng), lambda a, b: int(rng.integers(a, b + 1)), 6))


def test_the_week_replan_records_every_phase():
    """The shipped week's plan is long to make: a tiny instance stands in; every phase is named."""
    instance = read_instance(ROOT / "instances" / "tiny" / "timed_outage.json")
    plan = solve(instance, SolveParams(time_limit_s=5, engine="exact", workers=1)).plan
    result = replan(instance, plan, now_slot=1, params=SolveParams(time_limit_s=5, engine="exact", workers=1))
    d = result.plan.stats.details
    for key in (*PRE_SEARCH, "search_s", "itemize_s", "verify_new_s", "change_s", "reserve_s",
                "search_budget_s", "prepare_s"):
        assert key in d and d[key] >= 0 and math.isfinite(d[key]), key
    assert result.plan.status in (Status.OPTIMAL, Status.FEASIBLE)


def test_the_simple_bound_reusing_the_warm_starts_pricing_is_the_full_one(week_like):
    """Under the large engine the warm start prices only the jobs that need a new spot;
    `Adjusted.simple_bound` prices the others and sums: the value of `timed_lower_bound` with
    every job priced afresh."""
    from scheduler.engines.timed_greedy import timed_lower_bound
    from scheduler.replan import Adjusted, apply_events

    instance, plan = week_like
    modified = apply_events(instance, plan, 12, _outage(instance, 12))
    adjusted = Adjusted(compile_timed(modified.instance), modified.instance, plan)
    _, complete, greedy = adjusted.warm_start(None, price_all=False)
    assert complete and 0 < adjusted.priced.sum() < len(adjusted.priced)
    assert adjusted.simple_bound(greedy) == timed_lower_bound(adjusted.problem)


def test_with_no_time_left_the_warm_start_is_the_plan_unsearched(week_like):
    """A limit the fixed phases pass: the engine is not started; the plan is the warm start
    (the old plan's spots where they fit), its bound the simple bound, and it is verified."""
    from scheduler.replan import Adjusted, apply_events

    instance, plan = week_like
    events = _outage(instance, 12)
    result = replan(instance, plan, now_slot=12, events=events,
                    params=SolveParams(time_limit_s=0.01, seed=1, workers=1, engine="large"))
    d = result.plan.stats.details
    assert d["skipped"] == "search (no time left)" and "engine_bound" not in d
    assert result.plan.stats.solver_status == "no time left: the warm start, not searched"
    assert result.plan.lower_bound == pytest.approx(d["simple_bound"], rel=1e-12)
    assert result.verification.ok
    modified = apply_events(instance, plan, 12, events)
    adjusted = Adjusted(compile_timed(modified.instance), modified.instance, plan)
    hint, _, _ = adjusted.warm_start(None, price_all=False)
    back = adjusted.back(hint)
    problem = compile_timed(modified.instance)
    b = problem.batch
    ids = [modified.instance.demands[int(r)].id for r in b.rows]
    pools = [p.id for _, p in modified.instance.pools()]
    expected = {ids[i]: (pools[int(b.pool[k])], int(s)) for i, (k, s) in
                enumerate(zip(back.option.tolist(), back.start_slot.tolist())) if k >= 0}
    assert {a.demand: (a.pool, a.start_slot) for a in result.plan.assignments} == expected


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(instance=timed_instances(max_regions=2, max_demands=6, max_slots=6, connected=True), data=st.data())
def test_the_simple_bound_from_the_old_spots_never_passes_the_full_one(instance, data):
    """Whatever the disruption cost (0 included) and the outage, `Adjusted.simple_bound`, which
    counts an undisturbed job's old spot without pricing its other starts, is at most the
    `timed_lower_bound` that prices every start (a valid bound), and equal to it here."""
    from scheduler.engines.timed_greedy import timed_lower_bound
    from scheduler.replan import Adjusted, apply_events

    try:
        plan = solve(instance, SolveParams(time_limit_s=5, engine="exact", workers=1)).plan
    except Exception:  # noqa: BLE001 - instances the compiler refuses say nothing here
        return
    if plan.status not in (Status.OPTIMAL, Status.FEASIBLE):
        return
    S = instance.horizon.slots
    now = data.draw(st.integers(0, S - 1))
    pool = data.draw(st.sampled_from([p.id for _, p in instance.pools()]))
    disruption = data.draw(st.sampled_from([None, 0.0, 1.0]))
    events = Events(outages=(OutageEvent(target=pool, from_slot=now, to_slot=S),))
    modified = apply_events(instance, plan, now, events, data.draw(st.sampled_from([0.0, 5.0])),
                            disruption_cost_cny=disruption)
    adjusted = Adjusted(compile_timed(modified.instance), modified.instance, plan)
    _, complete, greedy = adjusted.warm_start(None, price_all=False)
    if not complete:
        return
    fast, full = adjusted.simple_bound(greedy), timed_lower_bound(adjusted.problem)
    assert full is not None and fast <= full + 1e-9 * max(abs(full), 1.0)
    assert math.isclose(fast, full, rel_tol=1e-9, abs_tol=1e-9)
