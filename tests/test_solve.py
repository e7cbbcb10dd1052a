"""Both engines against an independent enumeration (tests/reference.py, written from the
formulation, not from compile), and properties every optimum must have."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from models import Instance, Plan, Status
from scheduler import SolveParams, compile_options, solve
from scheduler.strategies import feasible_instances, instances
from tests import reference

TINY = Path(__file__).resolve().parent.parent / "instances" / "tiny"
EXACT = SolveParams(engine="exact", time_limit_s=600, workers=1, deterministic_time_limit_s=20)
"""One worker and a deterministic-time budget: the verdict does not depend on the machine's speed."""
LARGE = SolveParams(engine="large", time_limit_s=600, workers=1, iteration_limit=40)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@given(instances(max_demands=5, max_regions=3))
def test_exact_engine_equals_independent_enumeration(instance):
    """On tiny instances the exact engine proves the optimum that tests/reference.py enumerates."""
    expected = reference.optimum(instance)
    result = solve(instance, EXACT)
    if expected is None:
        assert result.plan.status == Status.INFEASIBLE
        assert result.objective is None
    else:
        assert result.plan.status == Status.OPTIMAL
        assert close(result.objective, expected)
        assert result.lower_bound <= expected + 1e-6
        assert close(reference.plan_objective(instance, result.plan), expected)


@given(instances(max_demands=4, max_regions=3))
def test_large_engine_equals_independent_enumeration(instance):
    """The large engine, on an iteration budget, ends at the enumerated optimum with a bound
    below it."""
    expected = reference.optimum(instance)
    result = solve(instance, LARGE)
    if expected is None:
        assert result.objective is None
        assert result.plan.status in (Status.INFEASIBLE, Status.UNKNOWN)
    else:
        assert close(result.objective, expected)
        assert result.lower_bound <= expected + 1e-6
        assert close(reference.plan_objective(instance, result.plan), expected)


@given(instances(max_demands=6))
def test_compiled_options_match_the_reference(instance):
    """compile_options gives exactly the reference's eligible options, units and costs."""
    options = compile_options(instance)
    pool_ids = [p.id for _, p in instance.pools()]
    compiled = {}
    for i, d in enumerate(instance.demands):
        for k in range(int(options.start[i]), int(options.start[i + 1])):
            compiled[(d.id, pool_ids[int(options.pool[k])])] = (int(options.units[k]),
                                                              float(options.cost[k]))
    expected = {(o.demand, o.pool): (o.units, o.cost) for o in reference.options(instance)}
    assert compiled.keys() == expected.keys()
    for key, (units, cost) in expected.items():
        assert compiled[key][0] == units, key
        assert close(compiled[key][1], cost), key
    assert options.capacity.tolist() == [reference.capacity(instance)[p] for p in pool_ids]
    for i, d in enumerate(instance.demands):
        assert close(float(options.penalty[i]), reference.penalty(instance, d))


@given(instances(max_demands=6))
def test_verifier_recomputes_the_solver_objective(instance):
    """The verifier's objective for a solved plan equals the reference's recomputation of it."""
    result = solve(instance, EXACT)
    if result.objective is None:
        assert result.verification.objective is None
    else:
        assert close(result.verification.objective, result.objective)
        assert close(reference.plan_objective(instance, result.plan), result.objective)


@given(feasible_instances(max_demands=6), st.data())
def test_more_capacity_never_worsens_the_optimum(instance, data):
    """Adding GPUs to any pool can only lower (or keep) the optimal cost."""
    base = solve(instance, EXACT)
    r, k = data.draw(st.sampled_from([(r, k) for r, region in enumerate(instance.regions)
                                      for k in range(len(region.pools))]))
    extra = data.draw(st.integers(1, 16))
    region = instance.regions[r]
    pool = region.pools[k].model_copy(update={"gpu_count": region.pools[k].gpu_count + extra})
    grown_region = region.model_copy(
        update={"pools": region.pools[:k] + (pool,) + region.pools[k + 1:]}
    )
    grown = instance.model_copy(
        update={"regions": instance.regions[:r] + (grown_region,) + instance.regions[r + 1:]}
    )
    bigger = solve(grown, EXACT)
    assert base.plan.status == bigger.plan.status == Status.OPTIMAL
    assert bigger.objective <= base.objective + 1e-6


@given(feasible_instances(max_demands=6), st.data())
def test_looser_latency_bound_never_worsens_the_optimum(instance, data):
    """Relaxing (or dropping) one demand's latency bound can only lower (or keep) the optimum."""
    bounded = [i for i, d in enumerate(instance.demands) if d.max_latency_ms is not None]
    assume(bounded)
    base = solve(instance, EXACT)
    i = data.draw(st.sampled_from(bounded))
    demand = instance.demands[i]
    looser = data.draw(st.sampled_from([None, demand.max_latency_ms + 1.0,
                                        demand.max_latency_ms + 10.0, demand.max_latency_ms + 100.0]))
    demands = list(instance.demands)
    demands[i] = demand.model_copy(update={"max_latency_ms": looser})
    relaxed = solve(instance.model_copy(update={"demands": tuple(demands)}), EXACT)
    assert base.plan.status == relaxed.plan.status == Status.OPTIMAL
    assert relaxed.objective <= base.objective + 1e-6


@given(instances(max_demands=6, max_regions=4), st.randoms(use_true_random=False))
def test_relabelling_regions_keeps_the_optimum(instance, random):
    """Renaming and reordering regions changes nothing the optimizer may care about."""
    ids = [region.id for region in instance.regions]
    shuffled = ids[:]
    random.shuffle(shuffled)
    rename = {old: f"site-{new}" for old, new in zip(ids, shuffled, strict=True)}
    data = json.loads(instance.model_dump_json())
    for region in data["regions"]:
        region["id"] = rename[region["id"]]
    random.shuffle(data["regions"])
    for link in data["links"]:
        link["source"], link["target"] = rename[link["source"]], rename[link["target"]]
    for demand in data["demands"]:
        demand["origin"] = rename[demand["origin"]]
    relabelled = Instance.model_validate(data)
    a, b = solve(instance, EXACT), solve(relabelled, EXACT)
    assert a.plan.status == b.plan.status
    if a.objective is not None:
        assert close(a.objective, b.objective)


@given(instances())
def test_instance_and_plan_survive_a_json_round_trip(instance):
    """Writing and reading back gives the same objects."""
    assert Instance.model_validate_json(instance.model_dump_json()) == instance
    plan = solve(instance, EXACT).plan
    assert Plan.model_validate_json(plan.model_dump_json()) == plan


@given(instances())
def test_solve_is_pure(instance):
    """solve() leaves its input exactly as it was."""
    before = instance.model_dump_json()
    solve(instance, EXACT)
    assert instance.model_dump_json() == before


@pytest.mark.parametrize("path", sorted(TINY.glob("*.plan.json")), ids=lambda p: p.name)
def test_tiny_instances_reach_their_hand_derived_optimum(path):
    """The hand-made instances solve to the optimum derived by hand in instances/tiny/README.md."""
    instance = Instance.model_validate_json(path.with_name(path.name.replace(".plan", "")).read_text())
    expected = Plan.model_validate_json(path.read_text())
    result = solve(instance, EXACT)
    assert result.plan.status == Status.OPTIMAL
    assert close(result.objective, expected.objective)
    assert close(result.lower_bound, expected.objective)
    assert close(reference.optimum(instance), expected.objective)
    large = solve(instance, LARGE)
    assert close(large.objective, expected.objective)


def test_a_must_serve_demand_without_options_makes_the_instance_infeasible():
    """A must-serve demand that no pool may take is reported as infeasible, with its reason."""
    instance = Instance.model_validate({
        "window_hours": 10,
        "regions": [{"id": "a", "jurisdiction": "A", "lat": 0, "lon": 0,
                     "electricity_price_cny_per_kwh": 0.5, "pue": 1.2, "carbon_g_co2_per_kwh": 500,
                     "pools": [{"id": "p", "accelerator": "H20", "gpu_count": 8,
                                "memory_gb_per_gpu": 96, "tflops_by_precision": {"bf16": 148},
                                "power_kw_per_gpu": 0.4, "price_cny_per_gpu_hour": 6}]}],
        "demands": [{"id": "d", "origin": "a", "work_pflop": 10, "must_serve": True,
                     "precision": "fp8", "strict_precision": True}],
    })
    result = solve(instance, EXACT)
    assert result.plan.status == Status.INFEASIBLE
    assert [u.reason.value for u in result.plan.unserved] == ["precision"]
