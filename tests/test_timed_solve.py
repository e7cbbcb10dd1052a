"""solve() on horizon instances: compile_timed -> engine -> build_timed_plan, with every objective
derived by hand from the tiny instances (instances/tiny/timed_*.json, whose descriptions say why).
Every plan passes the independent verifier inside solve()."""

from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path

import pytest

from models import Instance, Reason, Status
from scheduler import solve
from scheduler.engines import EngineResult
from scheduler.io import read_instance
from scheduler.params import SolveParams, Stopped
from scheduler.timed import TimedChoice, TimedProblem

TINY = Path(__file__).resolve().parent.parent / "instances" / "tiny"
solve_module = importlib.import_module("scheduler.solve")


def tiny(name: str, **changes) -> Instance:
    data = json.loads((TINY / f"timed_{name}.json").read_text())
    return Instance.model_validate({**data, **changes})


def demands(name: str, *rows: dict) -> Instance:
    """The tiny instance with its demands replaced by ``rows`` (each on top of the first)."""
    data = json.loads((TINY / f"timed_{name}.json").read_text())
    first = data["demands"][0]
    return Instance.model_validate({**data, "demands": [{**first, **row} for row in rows]})


def plan_of(instance: Instance):
    return solve(instance, SolveParams(time_limit_s=30)).plan


def test_a_job_moves_to_the_valley_tariff():
    """Compute 12 + 6 kWh at the valley's 0.2 = 13.2, in slot 1 (labelled V); the simple bound is
    the same job alone, so the plan is optimal."""
    plan = plan_of(read_instance(TINY / "timed_valley.json"))
    (a,) = plan.assignments
    assert (a.start_slot, a.end_slot, a.route) == (1, 2, None)
    assert a.energy_cny == pytest.approx(1.2) and a.cost_cny == pytest.approx(13.2)
    assert plan.objective == pytest.approx(13.2)
    assert plan.status == Status.OPTIMAL and plan.schema_version == 2
    assert plan.costs.energy_by_period_kwh == {"valley": 6.0}
    assert plan.costs.energy_by_period_cny == pytest.approx({"valley": 1.2})
    assert plan.pools[0].gpus_by_slot == (0, 1, 0, 0)
    assert plan.pools[0].available_by_slot == (4, 4, 4, 4)
    # 6 GPU-hours of 4 GPUs x 4 slots x 6 h = 96
    assert (plan.pools[0].used_gpu_hours, plan.pools[0].capacity_gpu_hours) == (6.0, 96.0)


def test_without_time_shifting_the_job_runs_at_its_release():
    """time_shifting=False holds the valley job to slot 0 (release): 12 + 6 kWh x 1.0 = 18 CNY,
    4.8 more than the valley start."""
    instance = read_instance(TINY / "timed_valley.json")
    plan = solve(instance, SolveParams(time_limit_s=30, time_shifting=False)).plan
    (a,) = plan.assignments
    assert (a.start_slot, a.end_slot) == (0, 1)
    assert plan.objective == pytest.approx(18.0)


def test_a_remote_job_waits_for_its_data():
    """The west costs 1 + 45 (transfer) = 46 against 100 at home; 3600 Gbit at 0.5 Gbps take two
    slots, so the job starts at slot 2 at the earliest (the link full in slots 0 and 1) or at 3
    (1/3 Gbps over slots 0-2), at the same cost: either is optimal."""
    plan = plan_of(read_instance(TINY / "timed_remote_data.json"))
    (a,) = plan.assignments
    assert (a.pool, a.route) == ("west-a", ("east", "west")) and a.start_slot in (2, 3)
    assert a.end_slot == a.start_slot + 1
    assert a.transfer_cny == pytest.approx(45.0)
    assert plan.objective == pytest.approx(46.0) and plan.status == Status.OPTIMAL
    (link,) = plan.links
    rate = 0.5 * 2 / a.start_slot  # 1 Gbps-slot of data spread evenly over slots 0 .. start-1
    expected = tuple(rate if t < a.start_slot else 0.0 for t in range(4))
    assert link.load_gbps == pytest.approx(expected, rel=1e-5)
    assert link.bandwidth_gbps == (0.5,) * 4


def test_a_service_splits_across_two_pools_when_the_cheap_one_is_full():
    """Per slot: 2 replicas on 'cheap' (6 quanta) for 2 CNY and 2 on 'dear' (6 quanta) for 4
    serve the 10 quanta: 12 CNY over two slots, nothing unserved; the exact engine proves it.
    How the 10 split between the four replicas (6 + 4 or 4 + 6) costs the same: either is
    optimal, and CP-SAT's workers return either (seen: 'cheap' serving 6 in one slot, 4 in the
    other, when the suite ran in another order)."""
    plan = plan_of(read_instance(TINY / "timed_service_split.json"))
    (service,) = plan.services
    cheap, dear = service.placements
    assert (cheap.pool, cheap.replicas) == ("cheap", (2, 2))
    assert (dear.pool, dear.replicas) == ("dear", (2, 2))
    for t in range(2):
        assert cheap.served_pflop_per_hour[t] + dear.served_pflop_per_hour[t] == 10.0
        assert max(cheap.served_pflop_per_hour[t], dear.served_pflop_per_hour[t]) <= 6.0  # 2 x 3 quanta
    assert (cheap.cost_cny, dear.cost_cny) == (4.0, 8.0)
    assert service.unserved_pflop == 0.0 and service.penalty_cny == 0.0
    assert plan.objective == pytest.approx(12.0)
    assert plan.lower_bound == pytest.approx(12.0, rel=1e-6) and plan.status == Status.OPTIMAL
    assert plan.pools[0].gpus_by_slot == (2, 2) and plan.pools[1].gpus_by_slot == (2, 2)


def test_unserved_service_load_pays_its_penalty():
    """With the penalty at 0.5 per PFLOP (0.5 per quantum) no replica pays (1/3 per quantum on
    'cheap' needs 3 quanta: 1 CNY < 1.5, so 'cheap' serves 6; 'dear' at 2/3 does not): per slot
    4 quanta unserved = 2 CNY, plus 2 CNY of rent: 8 in all."""
    data = json.loads((TINY / "timed_service_split.json").read_text())
    data["demands"][0]["unserved_penalty_cny_per_pflop"] = 0.5
    plan = plan_of(Instance.model_validate(data))
    (service,) = plan.services
    (cheap,) = service.placements
    assert cheap.replicas == (2, 2)
    assert service.unserved_pflop_per_hour == (4.0, 4.0) and service.unserved_pflop == 8.0
    assert service.penalty_cny == pytest.approx(4.0)
    assert plan.objective == pytest.approx(8.0)
    assert plan.costs.unserved_penalty_cny == pytest.approx(4.0)


def test_a_partial_replica_only_where_it_pays():
    """Penalty 1 per quantum: full replicas pay on both pools (1/3 and 2/3 per quantum), but a
    fourth replica on 'dear' for the last quantum costs 2 > 1: per slot 2 + 2 for 9 quanta and
    1 unserved: 5, 10 in all."""
    data = json.loads((TINY / "timed_service_split.json").read_text())
    data["demands"][0]["unserved_penalty_cny_per_pflop"] = 1.0
    plan = plan_of(Instance.model_validate(data))
    (service,) = plan.services
    assert [p.replicas for p in service.placements] == [(2, 2), (1, 1)]
    assert service.unserved_pflop_per_hour == (1.0, 1.0)
    assert plan.objective == pytest.approx(10.0)


def test_a_remote_service_is_held_to_its_link():
    """A service of 10 PFLOP/h in the east served from the west only: at 1 Gbps at peak load each
    served quantum puts 1 / 10 Gbps = 100,000 quanta on the 0.5 Gbps (500,000-quanta) link, so 5
    quanta a slot: 2 replicas (3 + 2, each 1 CNY), 5 quanta unserved at 5 each: 27 per slot,
    108 over 4 slots; the link is full."""
    data = json.loads((TINY / "timed_remote_data.json").read_text())
    data["regions"][0]["pools"] = []
    data["regions"][1]["pools"][0]["tflops_by_precision"] = {"bf16": 1.0}
    data["links"][0]["transfer_cost_cny_per_gb"] = 0.0
    data["load_quantum_pflop_per_hour"] = 1.0
    data["demands"] = [{"id": "chat", "kind": "service", "origin": "east",
                        "load_pflop_per_hour": [10.0] * 4, "traffic_gbps": 1.0,
                        "unserved_penalty_cny_per_pflop": 5.0}]
    plan = plan_of(Instance.model_validate(data))
    (placement,) = plan.services[0].placements
    assert placement.replicas == (2,) * 4 and placement.served_pflop_per_hour == (5.0,) * 4
    assert placement.route == ("east", "west")
    assert plan.links[0].load_gbps == pytest.approx((0.5,) * 4)
    assert plan.objective == pytest.approx(108.0)


def test_an_outage_forces_a_later_start():
    """Slots 0-1 are cheaper (0.1 CNY/kWh) but the pool is out: start 2, 2 + 2 x 1.0 = 4 CNY.
    The bound uses only starts that fit the pool alone, so it is 4 too."""
    plan = plan_of(read_instance(TINY / "timed_outage.json"))
    (a,) = plan.assignments
    assert (a.start_slot, a.cost_cny) == (2, 4.0)
    assert plan.pools[0].gpus_by_slot == (0, 0, 2, 0)
    assert plan.status == Status.OPTIMAL


def test_a_carbon_cap_makes_the_cleaner_pool_win():
    """Coal (1 CNY, 1000 g) is over the 500 g cap; hydro costs 3 and emits 100 g."""
    plan = plan_of(read_instance(TINY / "timed_carbon_cap.json"))
    (a,) = plan.assignments
    assert (a.pool, a.cost_cny, a.co2_kg) == ("hydro-a", 3.0, pytest.approx(0.1))
    assert plan.objective == pytest.approx(3.0)
    uncapped = plan_of(tiny("carbon_cap", carbon_cap_t_co2=None))
    assert uncapped.assignments[0].pool == "coal-a" and uncapped.objective == pytest.approx(1.0)


def test_capacity_and_uneconomic_reasons():
    """One GPU in slot 1 only (release 1, deadline 2): 'a' (penalty 100) takes it for 13.2, 'b'
    (50) is left for capacity; 'c' (penalty 10, below 13.2) is uneconomic: 13.2 + 50 + 10."""
    data = json.loads((TINY / "timed_valley.json").read_text())
    data["regions"][0]["pools"][0]["gpu_count"] = 1
    base = {**data["demands"][0], "must_serve": False, "release_slot": 1, "deadline_slot": 2}
    data["demands"] = [{**base, "id": "a", "unserved_penalty_cny": 100.0},
                       {**base, "id": "b", "unserved_penalty_cny": 50.0},
                       {**base, "id": "c", "unserved_penalty_cny": 10.0}]
    plan = plan_of(Instance.model_validate(data))
    assert [a.demand for a in plan.assignments] == ["a"]
    assert {u.demand: u.reason for u in plan.unserved} == {"b": Reason.CAPACITY,
                                                            "c": Reason.UNECONOMIC}
    assert plan.objective == pytest.approx(73.2)


def test_window_reason_for_an_optional_job():
    """9 GPU-hours (2 slots) in a 1-slot window: unserved with reason window, penalty 7."""
    plan = plan_of(demands("valley", {"work_pflop": 32400.0, "must_serve": False, "release_slot": 1,
                                      "deadline_slot": 2, "unserved_penalty_cny": 7.0}))
    (u,) = plan.unserved
    assert (u.reason, u.penalty_cny) == (Reason.WINDOW, 7.0)
    assert plan.objective == 7.0 and plan.status == Status.OPTIMAL


def test_bandwidth_reason():
    """Two remote jobs, no pool at home: 'first' (must-serve) takes the link for slots 0-1
    (start 2, or 3 at 1/3 Gbps); either way the link cannot carry 'second' as well, the west pool
    could, so it is unserved for bandwidth: 46 + 100."""
    data = json.loads((TINY / "timed_remote_data.json").read_text())
    data["regions"][0]["pools"] = []
    job = data["demands"][0]
    data["demands"] = [{**job, "id": "first"},
                       {**job, "id": "second", "must_serve": False, "unserved_penalty_cny": 100.0}]
    plan = plan_of(Instance.model_validate(data))
    assert [a.demand for a in plan.assignments] == ["first"]
    assert [(u.demand, u.reason) for u in plan.unserved] == [("second", Reason.BANDWIDTH)]
    assert plan.objective == pytest.approx(146.0)


def test_carbon_cap_reason():
    """Cap 150 g: one job on hydro (100 g, 3 CNY); the other would emit 100 g more on hydro's free
    slot or 1000 g on coal: unserved for the carbon cap, 3 + 10."""
    data = json.loads((TINY / "timed_carbon_cap.json").read_text())
    data["carbon_cap_t_co2"] = 0.00015
    job = {**data["demands"][0], "must_serve": False, "unserved_penalty_cny": 10.0}
    data["demands"] = [{**job, "id": "a"}, {**job, "id": "b"}]
    plan = plan_of(Instance.model_validate(data))
    assert [a.pool for a in plan.assignments] == ["hydro-a"]
    assert [u.reason for u in plan.unserved] == [Reason.CARBON_CAP]
    assert plan.objective == pytest.approx(13.0)


def test_the_engine_seam(monkeypatch):
    """A timed engine is called as engine(problem, params, hint=, on_progress=, stop=) and its
    TimedChoice becomes the plan; a bound it proves above the simple one is kept."""
    seen = {}

    def engine(problem, params, *, hint, on_progress, stop):
        seen.update(problem=problem, params=params, hint=hint)
        return EngineResult(hint, Status.FEASIBLE, 5.0, "fake", workers=1)

    monkeypatch.setattr(solve_module, "timed_engine", lambda name: engine)
    plan = solve(read_instance(TINY / "timed_service_split.json"), SolveParams(engine="exact")).plan
    assert isinstance(seen["problem"], TimedProblem) and isinstance(seen["hint"], TimedChoice)
    assert seen["params"].engine == "exact"
    assert plan.objective == pytest.approx(12.0) and plan.lower_bound == 6.666666666666666
    assert plan.stats.engine == "exact"

    def better(problem, params, *, hint, on_progress, stop):
        return EngineResult(hint, Status.FEASIBLE, 10.0, "fake", workers=1)

    monkeypatch.setattr(solve_module, "timed_engine", lambda name: better)
    assert solve(read_instance(TINY / "timed_service_split.json")).plan.lower_bound == 10.0


def test_an_engine_that_finds_nothing_leaves_the_greedy_plan(monkeypatch):
    """Status unknown without a choice: the greedy plan (12 CNY) is kept, status feasible."""
    def nothing(problem, params, *, hint, on_progress, stop):
        return EngineResult(None, Status.UNKNOWN, None, "timeout", workers=1)

    monkeypatch.setattr(solve_module, "timed_engine", lambda name: nothing)
    plan = solve(read_instance(TINY / "timed_service_split.json")).plan
    assert plan.status == Status.FEASIBLE and plan.objective == pytest.approx(12.0)


def test_a_stop_before_the_first_plan_raises_stopped():
    """A stop set before solving ends it while compiling: no plan, `Stopped`."""
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        solve(read_instance(TINY / "timed_valley.json"), stop=stop)


def test_instances_without_a_horizon_keep_their_plans():
    """The single-window path is untouched: two_regions solves to its committed plan's objective,
    in a version-1 plan without timed fields."""
    from scheduler.io import read_plan

    result = solve(read_instance(TINY / "two_regions.json"), SolveParams(time_limit_s=30))
    committed = read_plan(TINY / "two_regions.plan.json")
    assert result.plan.objective == pytest.approx(committed.objective)
    assert result.plan.schema_version == 1 and result.plan.services == ()


def _random_instance(draw) -> Instance:
    """Two regions, one or two pools each, up to three batch jobs over four 1-hour slots."""
    from hypothesis import strategies as st

    def pool(pid: str) -> dict:
        gpus = draw(st.integers(1, 3))
        outages = []
        if draw(st.booleans()):
            start = draw(st.integers(0, 3))
            outages = [{"start_slot": start, "end_slot": draw(st.integers(start + 1, 4)),
                        "gpus": draw(st.integers(1, gpus))}]
        return {"id": pid, "accelerator": "H800", "gpu_count": gpus, "memory_gb_per_gpu": 80.0,
                "tflops_by_precision": {"bf16": 1000.0}, "power_kw_per_gpu": 1.0,
                "price_cny_per_gpu_hour": float(draw(st.integers(1, 5))), "outages": outages}

    def region(rid: str) -> dict:
        prices = [float(draw(st.integers(1, 4))) / 4 for _ in range(4)]
        return {"id": rid, "jurisdiction": "cn", "lat": 30.0, "lon": 110.0,
                "electricity_price_cny_per_kwh": 1.0, "electricity_price_by_slot_cny_per_kwh": prices,
                "pue": 1.0, "carbon_g_co2_per_kwh": float(draw(st.sampled_from([100, 1000]))),
                "pools": [pool(f"{rid}-{k}") for k in range(draw(st.integers(1, 2)))]}

    regions = [region("a"), region("b")]
    largest = max(p["gpu_count"] for r in regions for p in r["pools"])
    jobs = []
    for k in range(draw(st.integers(1, 3))):
        release = draw(st.integers(0, 2))
        jobs.append({"id": f"j{k}", "origin": draw(st.sampled_from(["a", "b"])),
                     "work_pflop": 3600.0 * draw(st.integers(1, 3)), "gang_size": draw(st.integers(1, min(2, largest))),
                     "data_gb": float(draw(st.sampled_from([0, 225, 450]))),
                     "release_slot": release, "deadline_slot": draw(st.integers(release + 1, 4)),
                     "unserved_penalty_cny": float(draw(st.integers(0, 40)))})
    cap = draw(st.sampled_from([None, 0.002, 0.005]))
    return Instance.model_validate({
        "schema_version": 2, "horizon": {"slots": 4, "slot_hours": 1.0},
        "regions": regions,
        "links": [{"source": "a", "target": "b", "latency_ms": 5.0, "transfer_cost_cny_per_gb": 0.01,
                   "bandwidth_gbps": float(draw(st.sampled_from([0.25, 0.5, 1.0])))}],
        "demands": jobs, "carbon_cap_t_co2": cap})


def _brute_optimum(problem: TimedProblem) -> float:
    """The least objective over every combination of (option, start) or unserved per job."""
    import itertools

    from scheduler.timed import TimedLoad

    b = problem.batch
    alternatives = []
    for i in range(b.n_demands):
        mine = [] if b.must_serve[i] else [(None, None, None, None, float(b.penalty[i]))]
        for k in range(int(b.start[i]), int(b.start[i + 1])):
            starts, cost, co2, rate = problem.start_costs(k)
            mine += [(k, int(s), int(r), float(g), float(c))
                     for s, c, g, r in zip(starts, cost, co2, rate, strict=True)]
        alternatives.append(mine)
    best = float("inf")
    for combo in itertools.product(*alternatives):
        load, ok = TimedLoad(problem), True
        for k, s, rate, co2, _ in combo:
            if k is not None:
                if not load.fits(k, s, rate, co2):
                    ok = False
                    break
                load.add_batch(k, s, rate, co2)
        if ok:
            best = min(best, sum(alt[-1] for alt in combo))
    return best


def test_greedy_plans_fit_and_the_bound_holds_on_small_random_instances():
    """On random instances of up to three jobs: every plan keeps to the GPUs each pool has in each
    slot (recomputed from the instance's outages and the plan's starts), its objective is at least
    the brute-force optimum, and its lower bound at most that optimum."""
    from hypothesis import given
    from hypothesis import strategies as st

    from scheduler.compile import RangeError
    from scheduler.timed import compile_timed

    @given(st.data())
    def check(data):
        instance = _random_instance(data.draw)
        try:
            problem = compile_timed(instance)
        except RangeError:
            return  # a must-serve job no plan can serve: refused, nothing to compare
        optimum = _brute_optimum(problem)
        plan = plan_of(instance)
        gang = {d.id: d.gang_size for d in instance.demands}
        for (_, pool), usage in zip(instance.pools(), plan.pools, strict=True):
            held = [0] * 4
            for a in plan.assignments:
                if a.pool == pool.id:
                    for t in range(a.start_slot, a.end_slot):
                        held[t] += gang[a.demand]
            down = [sum(o.gpus for o in pool.outages if o.start_slot <= t < o.end_slot)
                    for t in range(4)]
            assert all(held[t] <= pool.gpu_count - down[t] for t in range(4))
            assert tuple(held) == usage.gpus_by_slot
        for link in plan.links:
            assert all(x <= y + 1e-12 for x, y in zip(link.load_gbps, link.bandwidth_gbps, strict=True))
        assert plan.objective >= optimum - 1e-9
        assert plan.lower_bound <= optimum + 1e-9

    check()
