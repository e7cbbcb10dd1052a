"""Shadow prices and explanations (scheduler/explain).

The honest test of the prices: for multipliers u >= 0 of the capacity rows and their Lagrangian
value L(u) (saved as ``bound_cny``), weak duality gives ``opt(cap + d) >= L(u) - u . d`` for every
capacity change d. Checked against the exact optimum of the changed instance, enumerated by
tests/reference.py (which never calls the engines), it bounds how much one more GPU may save
(at most u per unit, plus the measured gap opt - L(u)) and how much one GPU less must cost (at
least u per unit, minus that gap). Where the LP relaxation is integral (every demand takes one
quantum on every pool: a bipartite b-matching) the gap is 0 and the two bounds pin u between the
optimum's marginal values, and a zero price means more capacity changes nothing.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Instance, Plan, Reason, Status
from scheduler import SolveParams, solve
from scheduler.cli import main
from scheduler.compile import RangeError
from scheduler.explain import UnknownName, explain, render
from scheduler.strategies import instances, timed_instances
from tests import reference, timed_reference

EXACT = SolveParams(time_limit_s=20, engine="exact", workers=1)


def _tolerance(opt: float, bound: float) -> float:
    """The measured gap of the prices' bound, plus float noise of the sums."""
    return max(0.0, opt - bound) + 1e-6 * max(1.0, abs(opt))


def _with_gpus(instance: Instance, pool_id: str, change: int) -> Instance:
    regions = []
    for region in instance.regions:
        pools = tuple(p.model_copy(update={"gpu_count": p.gpu_count + change}) if p.id == pool_id else p
                      for p in region.pools)
        regions.append(region.model_copy(update={"pools": pools}))
    return Instance.model_validate({**instance.model_dump(), "regions": [r.model_dump() for r in regions]})


def _price(plan: Plan, pool_id: str) -> float:
    return next(p.cny_per_gpu_hour for p in plan.shadow_prices.pools if p.pool == pool_id)


# -- the honest test: one window ------------------------------------------------------------------


@st.composite
def matching_instances(draw) -> Instance:
    """Every demand takes exactly one quantum (one GPU for the whole window) on every pool: the LP
    relaxation is integral, so the optimum's marginal values are what the LP duals say."""
    n_regions = draw(st.integers(2, 3))
    window = 10.0
    regions = []
    for r in range(n_regions):
        regions.append({
            "id": f"r{r}", "jurisdiction": "cn", "lat": 30.0 + r, "lon": 100.0 + r,
            "electricity_price_cny_per_kwh": draw(st.sampled_from([0.2, 0.5, 1.0])), "pue": 1.2,
            "carbon_g_co2_per_kwh": 500.0,
            "pools": [{"id": f"p{r}", "accelerator": "H800", "gpu_count": draw(st.integers(1, 3)),
                       "memory_gb_per_gpu": 80.0, "tflops_by_precision": {"bf16": 1000.0},
                       "power_kw_per_gpu": 0.5, "price_cny_per_gpu_hour": draw(st.integers(1, 12))}],
        })
    links = [{"source": f"r{a}", "target": f"r{b}", "latency_ms": float(draw(st.integers(1, 20))),
              "bandwidth_gbps": 100.0, "transfer_cost_cny_per_gb": draw(st.sampled_from([0.1, 0.5, 1.0]))}
             for a in range(n_regions) for b in range(a + 1, n_regions)]
    demands = [{"id": f"d{i}", "origin": f"r{draw(st.integers(0, n_regions - 1))}",
                "work_pflop": float(draw(st.integers(1_000, 30_000))),
                "data_gb": float(draw(st.integers(0, 40))),
                "unserved_penalty_cny": float(draw(st.integers(60, 250)))}
               for i in range(draw(st.integers(3, 6)))]
    return Instance.model_validate({"name": "matching", "window_hours": window, "gpu_hour_quantum": window,
                                    "regions": regions, "links": links, "demands": demands})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matching_instances())
def test_prices_are_the_marginal_values_where_the_lp_is_integral(instance):
    """One more GPU saves at most its price, one less costs at least its price: with a zero gap
    (asserted) the price lies between the two marginal values, and a zero price saves nothing."""
    plan = solve(instance, EXACT).plan
    opt = reference.optimum(instance)
    bound = plan.shadow_prices.bound_cny
    assert plan.objective == pytest.approx(opt, abs=1e-6)
    assert opt - bound <= 1e-6 * max(1.0, opt), "the prices prove the optimum (the LP is integral)"
    tol = _tolerance(opt, bound)
    for _, pool in instance.pools():
        per_gpu = _price(plan, pool.id) * instance.window_hours  # one GPU = one quantum here
        saved = opt - reference.optimum(_with_gpus(instance, pool.id, +1))
        assert saved <= per_gpu + tol, f"{pool.id}: one more GPU saved {saved}, more than its price {per_gpu}"
        if per_gpu == 0:
            assert saved <= tol, f"{pool.id}: zero price, yet one more GPU saved {saved}"
        if pool.gpu_count > 1:
            lost = reference.optimum(_with_gpus(instance, pool.id, -1)) - opt
            assert lost >= per_gpu - tol, f"{pool.id}: one GPU less cost {lost}, less than its price {per_gpu}"


def test_a_positive_price_is_what_one_more_gpu_saves():
    """two_regions-like: east is short by 3 GPU-hours and moving d1 costs 2.189 CNY per GPU-hour
    more (instances/tiny/README.md); the LP's price of east-a is exactly that, west-a's is 0, and
    in the matching version below each GPU added to the short pool saves exactly its price."""
    inst = _instance(pools=[("east", "east-a", 1), ("west", "west-a", 3)], quantum=10.0,
                     demands=[("d1", "east", 200.0), ("d2", "east", 200.0)])
    plan = solve(inst, EXACT).plan
    opt = reference.optimum(inst)
    east, west = _price(plan, "east-a"), _price(plan, "west-a")
    saved = opt - reference.optimum(_with_gpus(inst, "east-a", +1))
    assert west == 0 and east > 0
    assert east * inst.window_hours == pytest.approx(saved, rel=1e-6)
    assert reference.optimum(_with_gpus(inst, "west-a", +1)) == pytest.approx(opt, abs=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_demands=4, max_regions=3, offers=True))
def test_no_capacity_change_beats_the_shifted_bound(instance):
    """Any instance (integer gap allowed): opt(cap + d) >= bound - u . d for one GPU more or less on
    each pool; the bound itself never exceeds the LP relaxation (GLOP on the reference's options)."""
    result = solve(instance, EXACT)
    prices = result.plan.shadow_prices
    if prices is None or result.plan.status not in (Status.OPTIMAL, Status.FEASIBLE):
        return
    assert prices.bound_cny <= reference.lp_value(instance) + 1e-6 * max(1.0, abs(prices.bound_cny))
    cap = reference.capacity(instance)
    for _, pool in instance.pools():
        for change in (+1, -1):
            if pool.gpu_count + change < 1:
                continue
            try:
                changed = _with_gpus(instance, pool.id, change)
            except ValueError:  # a gang larger than every pool: not an instance
                continue
            opt = reference.optimum(changed)
            if opt is None:
                continue
            quanta = reference.capacity(changed)[pool.id] - cap[pool.id]
            shift = _price(result.plan, pool.id) * instance.gpu_hour_quantum * quanta
            assert opt >= prices.bound_cny - shift - 1e-6 * max(1.0, abs(opt)), (pool.id, change)


def test_prices_scaled_wrong_break_the_check():
    """The check can fail: doubling east-a's price (or halving it) contradicts the optimum."""
    inst = _instance(pools=[("east", "east-a", 1), ("west", "west-a", 3)], quantum=10.0,
                     demands=[("d1", "east", 200.0), ("d2", "east", 200.0)])
    plan = solve(inst, EXACT).plan
    opt, bound = reference.optimum(inst), plan.shadow_prices.bound_cny
    per_gpu = _price(plan, "east-a") * inst.window_hours
    saved = opt - reference.optimum(_with_gpus(inst, "east-a", +1))
    assert saved > 0.5 * per_gpu + _tolerance(opt, bound)  # half the price would be too little
    plus = reference.optimum(_with_gpus(inst, "east-a", +1))
    assert plus >= bound - per_gpu - 1e-9 and not plus >= bound - 0.5 * per_gpu - 1e-9


# -- the honest test: a horizon ------------------------------------------------------------------


def _with_slot_gpu(instance: Instance, pool_id: str, slot: int, change: int) -> Instance | None:
    """One GPU more (change +1) or less (-1) in pool ``pool_id`` in slot ``slot`` only."""
    S = instance.horizon.slots
    data = instance.model_dump()
    for region in data["regions"]:
        for pool in region["pools"]:
            if pool["id"] != pool_id:
                continue
            outages = list(pool.get("outages", []))
            if change > 0:
                pool["gpu_count"] += 1
                outages += [{"start_slot": a, "end_slot": b, "gpus": 1} for a, b in ((0, slot), (slot + 1, S)) if b > a]
            else:
                outages.append({"start_slot": slot, "end_slot": slot + 1, "gpus": 1})
            pool["outages"] = outages
    try:
        return Instance.model_validate(data)
    except ValueError:  # the slot has no GPU left to take out
        return None


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed_instances(max_demands=3, max_slots=4, max_regions=2, max_pools_per_region=1, services=False),
       st.data())
def test_horizon_prices_bound_every_slot_change(instance, data):
    """opt(avail +- e[p,t]) >= bound -+ mu[p,t] for a GPU more or less in one pool-slot."""
    try:
        result = solve(instance, EXACT)
    except RangeError:  # a must-serve job with no allowed start: no plan to price
        return
    prices = result.plan.shadow_prices
    if prices is None or result.plan.status not in (Status.OPTIMAL, Status.FEASIBLE):
        return
    assert prices.bound_cny <= result.plan.objective + 1e-6 * max(1.0, abs(result.plan.objective))
    h = instance.horizon
    pools = [pool.id for _, pool in instance.pools()]
    pool_id = data.draw(st.sampled_from(pools))
    slot = data.draw(st.integers(0, h.slots - 1))
    mu = next(p for p in prices.pools if p.pool == pool_id).by_slot_cny_per_gpu_hour[slot] * h.slot_hours
    for change in (+1, -1):
        changed = _with_slot_gpu(instance, pool_id, slot, change)
        opt = None if changed is None else timed_reference.optimum(changed)
        if opt is not None:
            assert opt >= prices.bound_cny - change * mu - 1e-6 * max(1.0, abs(opt)), (pool_id, slot, change)


def test_horizon_outage_price():
    """timed_outage: the pool is out in slots 0-1 where power is 0.9 CNY per GPU-hour cheaper;
    a GPU back in slot 0 and 1 would let the 2-GPU gang run there: its prices say so."""
    from scheduler.io import read_instance

    inst = read_instance("instances/tiny/timed_outage.json")
    plan = solve(inst, EXACT).plan
    prices = plan.shadow_prices
    by_slot = prices.pools[0].by_slot_cny_per_gpu_hour
    opt = timed_reference.optimum(inst)
    assert prices.bound_cny == pytest.approx(opt, abs=1e-6)
    assert by_slot[2] == 0 and by_slot[3] == 0 and by_slot[0] > 0
    back = inst.model_copy(update={"regions": tuple(
        r.model_copy(update={"pools": tuple(p.model_copy(update={"outages": ()}) for p in r.pools)})
        for r in inst.regions)})
    saved = opt - timed_reference.optimum(back)
    # Two GPUs back in slot 0 (the gang's whole run): at most their price, plus the (zero) gap.
    assert saved <= 2 * by_slot[0] * inst.horizon.slot_hours + _tolerance(opt, prices.bound_cny)


# -- explanations for every reason ----------------------------------------------------------------


def _instance(pools, demands, quantum=0.01, links=None, extra_demand=None, horizon=None, offers=(),
              **kw) -> Instance:
    """Regions named by the pools' regions, full links of 5 ms, demands (id, origin, penalty)."""
    names = sorted({r for r, *_ in pools} | {o for _, o, _ in demands})
    regions = []
    for k, name in enumerate(names):
        regions.append({
            "id": name, "jurisdiction": kw.get("jurisdiction", {}).get(name, "cn"), "lat": 30.0 + k,
            "lon": 100.0 + k, "electricity_price_cny_per_kwh": 0.5, "pue": 1.2,
            "carbon_g_co2_per_kwh": 500.0,
            "pools": [{"id": pid, "accelerator": "H800", "gpu_count": gpus, "memory_gb_per_gpu": 80.0,
                       "tflops_by_precision": {"bf16": 1000.0}, "power_kw_per_gpu": 0.5,
                       "price_cny_per_gpu_hour": 5.0 if name == "east" else 6.0, **(more[0] if more else {})}
                      for r, pid, gpus, *more in pools if r == name],
        })
    if links is None:
        links = [{"source": a, "target": b, "latency_ms": 5.0, "bandwidth_gbps": 10.0,
                  "transfer_cost_cny_per_gb": 0.5} for i, a in enumerate(names) for b in names[i + 1:]]
    ds = [{"id": i, "origin": o, "work_pflop": 20_000.0, "unserved_penalty_cny": pen} for i, o, pen in demands]
    for d in extra_demand or ():
        ds.append(d)
    data = {"name": "tiny", "window_hours": 10.0, "gpu_hour_quantum": quantum, "regions": regions,
            "links": links, "demands": ds, "offers": list(offers)}
    if horizon:
        data.update({"schema_version": 2, "horizon": {"slots": horizon}})
        data.pop("window_hours")
    return Instance.model_validate(data)


def _why(inst: Instance, demand: str, reason: Reason) -> str:
    result = solve(inst, EXACT)
    unserved = {u.demand: u.reason for u in result.plan.unserved}
    assert unserved.get(demand) == reason, unserved
    answer = explain(inst, result.plan, demand=demand)
    assert not answer.served and answer.reason == reason
    render(answer)
    return answer.answer


BASE = dict(pools=[("east", "east-a", 2), ("west", "west-a", 2)], demands=[("ok", "east", 500.0)])


def _job(**fields) -> dict:
    return {"id": "x", "origin": "east", "work_pflop": 20_000.0, "unserved_penalty_cny": 500.0, **fields}


@pytest.mark.parametrize("fields, reason, amount", [
    ({"gang_size": 3, "work_pflop": None}, Reason.GANG, "has 2 GPUs"),  # the 3-GPU pool has no offer
    ({"accelerators": ["B200"], "gang_size": 2}, Reason.ACCELERATOR, "has H800"),  # the B200 pool is too small
    ({"min_memory_gb_per_gpu": 141.0}, Reason.MEMORY, "80 GB"),
    ({"precision": "fp8", "strict_precision": True}, Reason.PRECISION, "fp8"),
    ({"jurisdictions": ["hk"], "min_memory_gb_per_gpu": 60.0}, Reason.JURISDICTION, "lies in cn"),
    ({"max_latency_ms": 0.5}, Reason.LATENCY, "1 ms away"),
    ({"deadline_hours": 1.0}, Reason.DEADLINE, "5.56 h"),
    ({"max_cost_cny": 1.0}, Reason.PRICE_CAP, "costs"),
    ({"unserved_penalty_cny": 1.0}, Reason.UNECONOMIC, "more than its penalty of 1.00"),
])
def test_each_rule_is_explained_with_its_amount(fields, reason, amount):
    extra = [_job(**fields)]
    pools = BASE["pools"]
    if reason == Reason.ACCELERATOR:  # the only B200 pool fails an earlier rule (gang)
        pools = [*pools, ("far", "far-b", 1, {"accelerator": "B200"})]
    if reason == Reason.JURISDICTION:  # the only pool in hk fails an earlier rule (memory)
        pools = [*pools, ("hk", "hk-a", 2, {"memory_gb_per_gpu": 40.0})]
    if reason == Reason.GANG:
        pools = [("east", "east-a", 2), ("west", "west-a", 3)]
        extra[0]["work_pflop"] = None
    offers = [{"demand": "x", "pool": "east-a", "gpu_hours": 6.0, "price_cny": 30.0}] if reason == Reason.GANG else []
    inst = _instance(pools=pools, demands=BASE["demands"], extra_demand=extra, offers=offers,
                     jurisdiction={"hk": "hk"})
    text = _why(inst, "x", reason)
    assert amount in text, text


def test_unreachable_names_the_cut_off_regions():
    inst = _instance(pools=[("east", "east-a", 2), ("west", "west-a", 2)], demands=[("x", "island", 500.0)],
                     links=[{"source": "east", "target": "west", "latency_ms": 5.0, "bandwidth_gbps": 1.0,
                             "transfer_cost_cny_per_gb": 0.1}])
    text = _why(inst, "x", Reason.UNREACHABLE)
    assert "island" in text and "east" in text


def test_capacity_names_the_shadow_price_against_the_penalty():
    # One GPU-hour of room for three 5.56 GPU-hour jobs of different penalties.
    inst = _instance(pools=[("east", "east-a", 1)], demands=[("a", "east", 400.0), ("b", "east", 300.0),
                                                             ("c", "east", 200.0)])
    result = solve(inst, EXACT)
    unserved = [u.demand for u in result.plan.unserved]
    assert unserved and all(u.reason == Reason.CAPACITY for u in result.plan.unserved)
    answer = explain(inst, result.plan, demand=unserved[0])
    price = _price(result.plan, "east-a")
    assert f"{price:,.4g} CNY per GPU-hour" in answer.answer and "against its penalty" in answer.answer
    best = answer.options[0]
    assert best.capacity_cny == pytest.approx(price * best.gpu_hours)
    assert best.priced_cny >= answer.penalty_cny - 1e-6  # at the LP optimum an unserved demand does not pay


def test_window_bandwidth_carbon_and_not_solved_on_a_horizon():
    # window: 4 slots, a job of 5.56 h needs 6 slots
    inst = _instance(pools=[("east", "east-a", 2)], demands=[], horizon=4,
                     extra_demand=[_job()])
    assert "needs 6" in _why(inst, "x", Reason.WINDOW)
    # bandwidth: the data (500 GB) cannot cross a 0.01 Gbps link before the deadline, and home is full
    inst = _instance(pools=[("east", "east-a", 1), ("west", "west-a", 1)], demands=[], horizon=8,
                     links=[{"source": "east", "target": "west", "latency_ms": 5.0, "bandwidth_gbps": 0.01,
                             "transfer_cost_cny_per_gb": 0.0}],
                     extra_demand=[_job(work_pflop=3000.0, data_gb=500.0, origin="west"),
                                   _job(id="home", work_pflop=3600.0 * 8, origin="west", data_gb=500.0,
                                        unserved_penalty_cny=5000.0)])
    assert "cannot cross the links" in _why(inst, "x", Reason.BANDWIDTH)
    # carbon cap: nothing may be emitted
    data = _instance(pools=[("east", "east-a", 2)], demands=[], horizon=8, extra_demand=[_job()]).model_dump()
    data["carbon_cap_t_co2"] = 0.0
    text = _why(Instance.model_validate(data), "x", Reason.CARBON_CAP)
    assert "carbon cap of 0.000 t" in text
    # not solved: a must-serve demand that fits nowhere makes the instance infeasible
    inst = _instance(pools=[("east", "east-a", 2)], demands=[("ok", "east", 500.0)],
                     extra_demand=[_job(must_serve=True, max_latency_ms=0.5)])
    result = solve(inst, EXACT)
    assert result.plan.status == Status.INFEASIBLE and result.plan.shadow_prices is None
    answer = explain(inst, result.plan, demand="ok")
    assert answer.reason == Reason.NOT_SOLVED and "no plan was found" in answer.answer


def test_served_demand_names_the_next_best_option():
    inst = _instance(pools=[("east", "east-a", 2), ("west", "west-a", 2)], demands=[("a", "east", 500.0)])
    plan = solve(inst, EXACT).plan
    answer = explain(inst, plan, demand="a")
    assert answer.served and answer.chosen.pool == "east-a" and answer.next_best.pool == "west-a"
    assert answer.extra_cny == pytest.approx(answer.next_best.cost_cny - answer.chosen.cost_cny)
    assert answer.extra_cny > 0 and "next best: west-a" in answer.answer


def test_horizon_served_demand_says_why_this_start():
    from scheduler.io import read_instance

    inst = read_instance("instances/tiny/timed_outage.json")
    plan = solve(inst, EXACT).plan
    answer = explain(inst, plan, demand="gang")
    assert answer.chosen.start_slot == 2 and "starting at slot 0 would save 1.80 CNY" in answer.answer
    pool = explain(inst, plan, pool="east-a")
    assert pool.full_slots == 3 and pool.priced_slots == 2 and pool.top_demands[0].name == "gang"


def test_pool_region_link_and_overview():
    inst = _instance(pools=[("east", "east-a", 1), ("west", "west-a", 2)],
                     demands=[("a", "east", 400.0), ("b", "east", 300.0)])
    plan = solve(inst, EXACT).plan
    pool = explain(inst, plan, pool="east-a")
    assert pool.utilization == pytest.approx(plan.pools[0].utilization)
    assert pool.price_cny_per_gpu_hour == _price(plan, "east-a")
    region = explain(inst, plan, region="west")
    assert [p.pool for p in region.pools] == ["west-a"]
    link = explain(inst, plan, link="west-east")
    assert {link.source, link.target} == {"east", "west"} and "no bandwidth rows" in link.answer
    whole = explain(inst, plan)
    assert whole.bound_cny == plan.shadow_prices.bound_cny
    for bad in ({"demand": "nope"}, {"pool": "nope"}, {"region": "nope"}, {"link": "east-nope"}):
        with pytest.raises(UnknownName, match="nope"):
            explain(inst, plan, **bad)


def test_plans_without_prices_stay_as_they_were():
    inst = _instance(**BASE)
    plan = solve(inst, EXACT).plan
    bare = plan.model_copy(update={"shadow_prices": None})
    assert "shadow_prices" not in json.loads(bare.model_dump_json())
    again = explain(inst, bare, pool="east-a")
    assert not again.prices_saved and again.price_cny_per_gpu_hour == pytest.approx(
        explain(inst, plan, pool="east-a").price_cny_per_gpu_hour, abs=1e-6)


# -- the command --------------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path):
    inst = _instance(pools=[("east", "east-a", 1), ("west", "west-a", 2)],
                     demands=[("a", "east", 400.0), ("b", "east", 300.0), ("c", "east", 1.0)])
    path = tmp_path / "inst.json"
    path.write_text(inst.model_dump_json())
    plan = tmp_path / "plan.json"
    assert main(["solve", str(path), "-o", str(plan), "--engine", "exact", "-q"]) == 0
    return path, plan, tmp_path


def test_cli_explain_text_and_json(files, capsys):
    path, plan, _ = files
    assert main(["explain", str(path), str(plan), "--demand", "c"]) == 0
    assert "more than its penalty" in capsys.readouterr().out
    assert main(["explain", str(path), str(plan), "--pool", "east-a", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "pool" and data["pool"] == "east-a" and "price_cny_per_gpu_hour" in data
    assert main(["explain", str(path), str(plan)]) == 0
    assert "batch demands served" in capsys.readouterr().out
    assert main(["explain", str(path), "a"]) == 0  # the former form: rules per pool, no plan
    assert "eligible" in capsys.readouterr().out


@pytest.mark.parametrize("option, value", [("--demand", "zz"), ("--pool", "zz"), ("--region", "zz"),
                                           ("--link", "east-zz")])
def test_cli_unknown_ids_exit_2(files, capsys, option, value):
    path, plan, _ = files
    assert main(["explain", str(path), str(plan), option, value]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{value}'" in err and option in err and "Traceback" not in err


def test_cli_plan_of_another_instance_exits_2(files, capsys):
    path, plan, tmp = files
    other = _instance(pools=[("east", "east-a", 1)], demands=[("a", "east", 400.0)])
    other_path = tmp / "other.json"
    other_path.write_text(other.model_dump_json())
    before = plan.read_bytes()
    assert main(["explain", str(other_path), str(plan), "--demand", "a"]) == 2
    err = capsys.readouterr().err
    assert str(plan) in err and "does not belong to instance" in err
    assert plan.read_bytes() == before
