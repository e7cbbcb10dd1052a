"""Quotas and fairness (Instance.policy, docs/policy.md): the exact engine against brute force,
the verifier against hand-made bad plans, bad input, and fairness against cost alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from models import Instance, Reason, Status
from scheduler import solve
from scheduler.compile import RangeError, compile_options
from scheduler.engines.greedy import greedy
from scheduler.params import SolveParams
from scheduler.policy import quota_rows, repair
from scheduler.strategies import feasible_instances, plans, policies
from scheduler.verify import verify
from tests.brute import brute_force_policy

PARAMS = SolveParams(time_limit_s=20, workers=1)


def region(rid: str, tags: list[str], gpus: int, price: float) -> dict:
    return {"id": rid, "jurisdiction": rid, "lat": 30.0, "lon": 110.0, "tags": tags,
            "electricity_price_cny_per_kwh": 0.0, "pue": 1.0, "carbon_g_co2_per_kwh": 0.0,
            "pools": [{"id": f"{rid}-p", "accelerator": "H800", "gpu_count": gpus, "memory_gb_per_gpu": 80.0,
                       "tflops_by_precision": {"bf16": 1000.0}, "power_kw_per_gpu": 0.0,
                       "price_cny_per_gpu_hour": price}]}


def demand(did: str, sector: str, origin: str, hours: float, penalty: float = 1000.0) -> dict:
    # 1000 TFLOPS: work_pflop = 3600 x GPU-hours
    return {"id": did, "sector": sector, "origin": origin, "work_pflop": 3600.0 * hours,
            "unserved_penalty_cny": penalty}


def base(policy: dict | None = None) -> dict:
    """Two regions, 10 + 10 GPU-hours; finance asks for 12, llm_training for 8 (all paying)."""
    data = {
        "name": "policy", "window_hours": 10.0, "gpu_hour_quantum": 1.0,
        "regions": [region("e", ["east", "hub:jjj"], 1, 1.0), region("w", ["west", "hub:nm"], 1, 2.0)],
        "links": [{"source": "e", "target": "w", "latency_ms": 10.0, "bandwidth_gbps": 100.0,
                   "transfer_cost_cny_per_gb": 0.0}],
        "demands": [demand("f1", "finance", "e", 6), demand("f2", "finance", "e", 6),
                    demand("l1", "llm_training", "w", 4, 900.0), demand("l2", "llm_training", "w", 4, 900.0)],
    }
    if policy is not None:
        data["policy"] = policy
    return data


def test_a_max_work_quota_holds_and_names_its_reason():
    inst = Instance.model_validate(base({"quotas": [
        {"id": "fin", "sector": "finance", "max_share": 0.5}]}))
    result = solve(inst, PARAMS)
    plan = result.plan
    assert plan.status == Status.OPTIMAL and result.verification.ok
    use = plan.policy.quotas[0]
    assert use.share <= 0.5 + 1e-9
    # Without the quota both finance jobs run (12 of 20 h); with it one finance job is held back.
    free = solve(Instance.model_validate(base()), PARAMS).plan
    assert {a.demand for a in free.assignments} >= {"f1", "f2"}
    reasons = {u.demand: u.reason for u in plan.unserved}
    assert Reason.QUOTA in reasons.values()
    best = brute_force_policy(inst, compile_options(inst))
    assert plan.objective == pytest.approx(best[1])


def test_a_capacity_quota_per_hub_and_a_minimum():
    inst = Instance.model_validate(base({"quotas": [
        {"id": "llm-west", "sector": "llm_training", "measure": "capacity", "hub": "hub:nm", "max_share": 0.4},
        {"id": "fin-min", "sector": "finance", "measure": "capacity", "min_share": 0.6}]}))
    result = solve(inst, PARAMS)
    assert result.verification.ok
    uses = {u.quota: u for u in result.plan.policy.quotas}
    assert uses["llm-west"].amount <= 0.4 * 10 + 1e-9 and uses["llm-west"].total == 10
    assert uses["fin-min"].amount >= 0.6 * 20 - 1e-9
    assert result.plan.objective == pytest.approx(brute_force_policy(inst, compile_options(inst))[1])


def test_an_unmeetable_minimum_is_infeasible():
    inst = Instance.model_validate(base({"quotas": [
        {"id": "fin-min", "sector": "finance", "measure": "capacity", "min_share": 0.7}]}))
    plan = solve(inst, PARAMS).plan
    assert plan.status == Status.INFEASIBLE  # finance asks for 12 of the 20 GPU-hours, not 14


def test_fairness_lowers_the_largest_unserved_share():
    """Cost alone serves the cheap finance jobs and leaves llm_training half unserved; fairness
    evens the unserved shares out."""
    data = base()
    data["regions"][1]["pools"][0]["gpu_count"] = 0 + 1
    data["window_hours"] = 6.0  # 12 GPU-hours for 20 asked
    plain = solve(Instance.model_validate(data), PARAMS).plan
    fair_inst = Instance.model_validate({**data, "policy": {"fairness": "sector"}})
    result = solve(fair_inst, PARAMS)
    fair = result.plan
    assert result.verification.ok
    def largest(plan):
        served = {a.demand for a in plan.assignments}
        shares = {}
        for d in fair_inst.demands:
            total, left = shares.get(d.sector, (0.0, 0.0))
            shares[d.sector] = (total + d.work_pflop, left + (0 if d.id in served else d.work_pflop))
        return max(left / total for total, left in shares.values())
    assert fair.policy.fairness.largest_unserved_share == pytest.approx(largest(fair))
    assert largest(fair) < largest(plain) - 0.1
    assert fair.policy.fairness.share_lower_bound <= largest(fair) + 1e-9
    share, cost = brute_force_policy(fair_inst, compile_options(fair_inst))
    assert largest(fair) == pytest.approx(share, abs=1e-6)
    assert fair.objective == pytest.approx(cost)


def test_the_verifier_catches_a_broken_quota():
    """A plan solved without the quota breaks it: the verifier says which and by how much."""
    quota = {"quotas": [{"id": "fin", "sector": "finance", "max_share": 0.5}]}
    free = solve(Instance.model_validate(base()), PARAMS).plan
    inst = Instance.model_validate(base(quota))
    found = verify(inst, free)
    codes = {v.code for v in found.violations}
    assert "quota_above_max" in codes and "mismatch:policy" in codes
    hit = next(v for v in found.violations if v.code == "quota_above_max")
    assert hit.subject == "fin" and hit.amount > 0
    # A right plan with a wrong figure is caught too.
    good = solve(inst, PARAMS).plan
    use = good.policy.quotas[0].model_copy(update={"share": 0.9})
    bad = good.model_copy(update={"policy": good.policy.model_copy(update={"quotas": (use,)})})
    assert {v.code for v in verify(inst, bad).violations} == {"mismatch:policy.quotas.share"}
    # And an unserved reason 'quota' where no quota binds.
    scarce = base({"quotas": [{"id": "any", "max_share": 1.0}]}) | {"window_hours": 6.0}
    plain = Instance.model_validate(scarce)
    good = solve(plain, PARAMS).plan
    assert good.unserved and good.unserved[0].reason == Reason.CAPACITY
    wrong = good.unserved[0].model_copy(update={"reason": Reason.QUOTA})
    bad = good.model_copy(update={"unserved": (wrong, *good.unserved[1:])})
    assert {v.code for v in verify(plain, bad).violations} == {"wrong_reason"}


@pytest.mark.parametrize("quota, field", [
    ({"id": "a", "sector": "fishing", "max_share": 0.5}, "field 'sector' names unknown sector 'fishing'"),
    ({"id": "a", "origin": "mars", "max_share": 0.5}, "field 'origin' names 'mars'"),
    ({"id": "a", "hub": "hub:moon", "max_share": 0.5}, "field 'hub' names 'hub:moon'"),
    ({"id": "a", "min_share": 0.6, "max_share": 0.5}, "field 'min_share' (0.6) is above 'max_share' (0.5)"),
    ({"id": "a"}, "fields 'min_share' and 'max_share' are both missing"),
    ({"id": "a", "max_share": 1.5}, "less than or equal to 1"),
])
def test_bad_quotas_name_the_quota_and_field(quota, field):
    with pytest.raises(ValidationError) as caught:
        Instance.model_validate(base({"quotas": [quota]}))
    assert field in str(caught.value)


def test_duplicate_quota_ids_and_a_horizon_are_refused():
    with pytest.raises(ValidationError, match="quota 'a': field 'id' is used by more than one quota"):
        Instance.model_validate(base({"quotas": [{"id": "a", "max_share": 1}, {"id": "a", "max_share": 1}]}))
    data = base({"fairness": "sector"})
    data |= {"schema_version": 2, "horizon": {"slots": 10, "slot_hours": 1.0}}
    del data["window_hours"]
    with pytest.raises(ValidationError, match="field 'policy' is supported only without a horizon"):
        Instance.model_validate(data)


def test_engines_without_quotas_refuse_and_auto_picks_exact():
    inst = Instance.model_validate(base({"quotas": [{"id": "fin", "sector": "finance", "max_share": 0.5}]}))
    with pytest.raises(RangeError, match="engine 'large' does not enforce quotas"):
        solve(inst, SolveParams(time_limit_s=20, engine="large"))
    assert solve(inst, SolveParams(time_limit_s=20, workers=1)).plan.stats.engine == "exact"


@settings(max_examples=40)
@given(feasible_instances(max_demands=5, max_regions=3).flatmap(lambda inst: policies(inst, min_quotas=1)))
def test_solver_matches_brute_force_with_policies(inst):
    """Every plan verifies (quotas included); a proven-optimal one has brute force's lexicographic
    optimum, and nothing is proven infeasible that brute force can serve."""
    result = solve(inst, PARAMS)
    assert result.verification.ok
    plan = result.plan
    options = compile_options(inst)
    best = brute_force_policy(inst, options)
    first, complete = greedy(options)
    fixed = repair(options, first) if complete else None
    if fixed is not None:  # a repaired first plan meets every quota row and keeps must-serve demands
        assert not options.must_serve[fixed < 0].any()
        for row in quota_rows(options):
            activity = int(row.coeffs[np.isin(row.ks, fixed[fixed >= 0])].sum())
            assert activity <= row.rhs if row.sense == "<=" else activity >= row.rhs
    if best is None:
        assert plan.status in (Status.INFEASIBLE, Status.UNKNOWN)
        return
    assert plan.status != Status.INFEASIBLE
    if plan.status == Status.OPTIMAL:
        if plan.policy.fairness is not None:
            assert plan.policy.fairness.largest_unserved_share == pytest.approx(best[0], abs=1e-6)
        assert plan.objective == pytest.approx(best[1], rel=1e-6, abs=1e-6)
    slack = 1e-6 * max(1.0, abs(best[1]))
    assert plan.lower_bound is None or plan.lower_bound <= best[1] + slack
    if plan.shadow_prices is not None:  # the Lagrangian bound of the LP duals is a bound too
        assert plan.shadow_prices.bound_cny <= best[1] + slack


def test_explain_names_the_quota_and_its_price_and_the_overview_lists_it():
    from scheduler.explain import explain

    inst = Instance.model_validate(base({"quotas": [{"id": "fin", "sector": "finance", "max_share": 0.5}]}))
    plan = solve(inst, PARAMS).plan
    held = next(u.demand for u in plan.unserved if u.reason == Reason.QUOTA)
    answer = explain(inst, plan, demand=held)
    assert answer.quota is not None and answer.quota.quota == "fin" and answer.quota.binding
    assert "quota 'fin'" in answer.answer and "shadow price" in answer.answer
    prices = plan.shadow_prices
    assert prices.quotas and prices.quotas[0].cny_per_unit > 0
    assert prices.bound_cny <= plan.objective + 1e-9
    overview = explain(inst, plan)
    assert "binding quotas: fin" in overview.answer and overview.quotas[0].binding


def test_cli_refuses_a_bad_policy_and_the_large_engine_with_exit_2(tmp_path, capsys):
    import json

    from scheduler.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(base({"quotas": [{"id": "q", "hub": "hub:moon", "max_share": 0.5}]})))
    assert main(["solve", str(bad), "-o", str(tmp_path / "p.json"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "quota 'q': field 'hub'" in err and "Traceback" not in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(base({"quotas": [{"id": "q", "max_share": 0.5}]})))
    assert main(["solve", str(good), "-o", str(tmp_path / "p.json"), "-q", "--engine", "large"]) == 2
    assert "does not enforce quotas" in capsys.readouterr().err
    assert main(["solve", str(good), "-o", str(tmp_path / "p.json"), "-q", "--time-limit", "20"]) == 0
    assert main(["verify", str(good), str(tmp_path / "p.json")]) == 0
    from scheduler import read_plan, summary

    text = summary(Instance.model_validate(base({"quotas": [{"id": "q", "max_share": 0.5}]})),
                   read_plan(tmp_path / "p.json"))
    assert "quota" in text and "national" in text and "50.0%" in text


def quota_breaks(inst: Instance, plan) -> dict[str, float]:
    """Per quota, how far the plan's assignments pass it (> 0: broken), from docs/policy.md."""
    pools = {pool.id: region for region, pool in inst.pools()}
    work = {d.id: d.work_pflop or 0.0 for d in inst.demands}
    demands = {d.id: d for d in inst.demands}
    tags = {r.id: r.tags for r in inst.regions}
    out = {}
    for q in inst.policy.quotas:
        def member(d, q=q):
            return ((q.sector is None or d.sector.value == q.sector)
                    and (q.origin is None or q.origin in (d.origin, *tags[d.origin])))
        inside = [a for a in plan.assignments if q.hub is None or q.hub in pools[a.pool].tags]
        if q.measure == "work":
            amount = sum(work[a.demand] for a in inside if member(demands[a.demand]))
            total = sum(work[a.demand] for a in inside)
        else:
            amount = sum(a.gpu_hours for a in inside if member(demands[a.demand]))
            total = sum(pool.gpu_count * inst.window_hours for region, pool in inst.pools()
                        if q.hub is None or q.hub in region.tags)
        worst = -1.0
        if q.max_share is not None:
            worst = max(worst, amount - q.max_share * total)
        if q.min_share is not None:
            worst = max(worst, q.min_share * total - amount)
        out[q.id] = worst
    return out


@settings(max_examples=40)
@given(feasible_instances(max_demands=6).flatmap(lambda inst: policies(inst, min_quotas=1))
       .flatmap(lambda inst: plans(inst).map(lambda plan: (inst, plan))))
def test_the_verifier_flags_exactly_the_broken_quotas_of_random_plans(case):
    """Random plans (their policy figures written by scheduler.policy): the verifier agrees with
    a third count of the rules, and with the writer's figures."""
    inst, plan = case
    found = verify(inst, plan)
    flagged = {v.subject for v in found.violations if v.code in ("quota_above_max", "quota_below_min")}
    for qid, excess in quota_breaks(inst, plan).items():
        if abs(excess) > 1e-3:  # away from the tolerance band
            assert (qid in flagged) == (excess > 0), (qid, excess)
    assert not [v for v in found.violations if v.code.startswith("mismatch:policy")]


def test_an_empty_policy_is_no_policy():
    assert Instance.model_validate(base({})).policy is None
    assert Instance.model_validate(base({"quotas": [], "fairness": "none"})).policy is None
    assert Instance.model_validate(base({"fairness": "origin"})).policy is not None


def test_explain_says_a_minimum_holds_an_uneconomic_demand_in():
    """Finance jobs cost more than their penalty on the dear pool; a minimum keeps one in."""
    from scheduler.explain import explain

    data = base({"quotas": [{"id": "fin-min", "sector": "finance", "measure": "capacity", "min_share": 0.6}]})
    data["demands"][1]["unserved_penalty_cny"] = 5.0  # f2 costs 6 or 12 CNY
    inst = Instance.model_validate(data)
    plan = solve(inst, PARAMS).plan
    assert "f2" in {a.demand for a in plan.assignments}
    answer = explain(inst, plan, demand="f2").answer
    assert "served for the policy: binding quota 'fin-min'" in answer
