"""Extreme but valid numbers: every instance solves to a verified plan or is refused by name.

The representable range is docs/formulation.md, section 7; the integer scaling section 4. Every
test here runs with RuntimeWarning as an error (pyproject.toml), so an overflow or an inf - inf
anywhere in the engines fails it.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import scheduler.compile as compile_module
from models import OPTIMAL_GAP, Instance, Status
from models.instance import AMOUNT_LIMIT, MIN_QUANTUM, MIN_TFLOPS
from scheduler import SolveParams, compile_options, read_plan, solve, verify
from scheduler.cli import main
from scheduler.compile import MAX_QUANTA, RangeError
from scheduler.strategies import instances

TINY = Path(__file__).resolve().parent.parent / "instances" / "tiny"
NAMED = re.compile(r"(demand|pool|offer|region|link|instance|weights)\b[^\n]*field '")
TWO_REGIONS_OPTIMUM = 266.38  # instances/tiny/two_regions.plan.json
ALL_WEST = 318.337  # the same three demands, all on the west pool (east-a priced out)


def base(name: str) -> dict:
    return json.loads((TINY / f"{name}.json").read_text())


def edited(name: str, *edits: tuple[tuple, object]) -> dict:
    """A shipped tiny instance with the values at the given paths replaced."""
    data = copy.deepcopy(base(name))
    for path, value in edits:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return data


POOL0 = ("regions", 0, "pools", 0)
D0 = ("demands", 0)
MUST = [(("demands", k, "must_serve"), True) for k in range(3)]
SOLVES, REFUSED = "solves", "refused"

CORPUS = {
    # Single fields at their limits: each solves.
    "work-largest": ("two_regions", [(D0 + ("work_pflop",), AMOUNT_LIMIT)], SOLVES),
    "work-smallest": ("two_regions", [(D0 + ("work_pflop",), 5e-324)], SOLVES),
    "tflops-slowest": ("two_regions", [(POOL0 + ("tflops_by_precision",), {"bf16": MIN_TFLOPS})],
                       SOLVES),
    "tflops-fastest": ("two_regions", [(POOL0 + ("tflops_by_precision",), {"bf16": AMOUNT_LIMIT})],
                       SOLVES),
    "quantum-smallest": ("two_regions", [(("gpu_hour_quantum",), MIN_QUANTUM)], SOLVES),
    "quantum-largest": ("two_regions", [(("gpu_hour_quantum",), 1000.0)], SOLVES),
    "price-dearest": ("two_regions", [(POOL0 + ("price_cny_per_gpu_hour",), AMOUNT_LIMIT)], SOLVES),
    "price-tiny": ("two_regions", [(POOL0 + ("price_cny_per_gpu_hour",), 1e-300)], SOLVES),
    "penalty-largest": ("two_regions", [(D0 + ("unserved_penalty_cny",), AMOUNT_LIMIT)], SOLVES),
    "penalty-tiny": ("two_regions", [(D0 + ("unserved_penalty_cny",), 5e-324)], SOLVES),
    "priority-largest": ("two_regions", [(D0 + ("priority",), AMOUNT_LIMIT),
                                         (D0 + ("unserved_penalty_cny",), AMOUNT_LIMIT)], SOLVES),
    "priority-tiny": ("two_regions", [(D0 + ("priority",), 1e-300)], SOLVES),
    "data-largest": ("two_regions", [(D0 + ("data_gb",), AMOUNT_LIMIT)], SOLVES),
    "transfer-dearest": ("two_regions", [(("links", 0, "transfer_cost_cny_per_gb"), AMOUNT_LIMIT),
                                         (D0 + ("data_gb",), AMOUNT_LIMIT)], SOLVES),
    "latency-longest": ("two_regions", [(("links", 0, "latency_ms"), AMOUNT_LIMIT)], SOLVES),
    "window-longest": ("two_regions", [(("window_hours",), 100_000.0)], SOLVES),
    "window-shortest": ("two_regions", [(("window_hours",), 1e-300)], SOLVES),
    "gpus-most": ("two_regions", [(POOL0 + ("gpu_count",), 10_000_000)], SOLVES),
    "power-largest": ("two_regions", [(POOL0 + ("power_kw_per_gpu",), AMOUNT_LIMIT),
                                      (("regions", 0, "electricity_price_cny_per_kwh"),
                                       AMOUNT_LIMIT)], SOLVES),
    "carbon-price-largest": ("two_regions", [(("weights", "carbon_price_cny_per_t_co2"),
                                              AMOUNT_LIMIT)], SOLVES),
    "weights-largest": ("two_regions", [(("weights", "compute"), AMOUNT_LIMIT),
                                        (("weights", "unserved"), AMOUNT_LIMIT)], SOLVES),
    "deadline-shortest": ("two_regions", [(D0 + ("deadline_hours",), 1e-300)], SOLVES),
    "price-cap-zero": ("two_regions", [(D0 + ("max_cost_cny",), 0.0)], SOLVES),
    "must-serve-dearest-pool": ("two_regions", [*MUST, (POOL0 + ("price_cny_per_gpu_hour",),
                                                        AMOUNT_LIMIT)], SOLVES),
    "offer-hours-largest": ("gap_offers", [(("offers", 0, "gpu_hours"), AMOUNT_LIMIT)], SOLVES),
    "offer-hours-tiny": ("gap_offers", [(("offers", 0, "gpu_hours"), 5e-324)], SOLVES),
    "offer-price-largest": ("gap_offers", [(("offers", 0, "price_cny"), AMOUNT_LIMIT)], SOLVES),
    # Combinations the engines cannot represent: refused by compile, naming object and field.
    "work-on-the-slowest-pool": ("two_regions", [
        (POOL0 + ("tflops_by_precision",), {"bf16": MIN_TFLOPS}), (D0 + ("work_pflop",), 1e12)],
        REFUSED),
    "capacity-beyond-quanta": ("two_regions", [
        (("gpu_hour_quantum",), MIN_QUANTUM), (("window_hours",), 100_000.0),
        (POOL0 + ("gpu_count",), 10_000_000)], REFUSED),
    "offer-hours-in-tiny-quanta": ("gap_offers", [
        (("gpu_hour_quantum",), MIN_QUANTUM), (("offers", 0, "gpu_hours"), AMOUNT_LIMIT)], REFUSED),
    # The filed values (issues #6 and #11): beyond the field bounds, refused when read.
    "work-1e300": ("two_regions", [(D0 + ("work_pflop",), 1e300)], REFUSED),
    "quantum-1e-300": ("two_regions", [(("gpu_hour_quantum",), 1e-300)], REFUSED),
    "tflops-1e-300": ("two_regions", [(POOL0 + ("tflops_by_precision",), {"bf16": 1e-300})],
                      REFUSED),
    "penalty-1e305": ("two_regions", [(D0 + ("unserved_penalty_cny",), 1e305)], REFUSED),
    "price-1e200": ("two_regions", [(POOL0 + ("price_cny_per_gpu_hour",), 1e200)], REFUSED),
}


def cli_solve(data: dict, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, Path]:
    source = tmp_path / "instance.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "plan.json"
    code = main(["solve", str(source), "-o", str(out), "--time-limit", "10", "-q", *extra])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_extreme_numbers_solve_verified_or_are_refused_by_name(name, tmp_path, capsys):
    """Each extreme instance exits 0/3 with a verified plan, or 2 naming object and field."""
    start, edits, expected = CORPUS[name]
    data = edited(start, *edits)
    code, err, out = cli_solve(data, tmp_path, capsys)
    assert "Traceback" not in err and "internal error" not in err, err
    if expected == SOLVES:
        assert code in (0, 3), err
        plan = read_plan(out)
        instance = Instance.model_validate(data)
        assert verify(instance, plan).ok
        assert plan.status != Status.OPTIMAL or plan.gap <= OPTIMAL_GAP
    else:
        assert code == 2, err
        assert NAMED.search(err), err
        assert not out.exists()


@pytest.mark.parametrize("price", [1e12, AMOUNT_LIMIT])
def test_a_pool_priced_out_does_not_set_the_cost_scale(price):
    """The dear pool's options cost more than the penalty: they leave the scale, the bound is tight."""
    data = edited("two_regions", (POOL0 + ("price_cny_per_gpu_hour",), price))
    result = solve(Instance.model_validate(data), SolveParams(engine="exact", time_limit_s=10))
    assert result.objective == pytest.approx(ALL_WEST, abs=1e-9)
    assert result.plan.status == Status.OPTIMAL and result.gap <= OPTIMAL_GAP
    assert result.plan.stats.cost_scale >= 1e6  # set by the ordinary costs, not by the dear pool


@pytest.mark.parametrize("engine", ["exact", "large"])
def test_must_serve_options_dearer_than_the_greedy_plan_leave_the_scale(engine):
    """All demands must-serve: the greedy plan's objective rules the 1e15 pool out of the scale."""
    data = edited("two_regions", *MUST, (POOL0 + ("price_cny_per_gpu_hour",), AMOUNT_LIMIT))
    params = SolveParams(engine=engine, time_limit_s=10, iteration_limit=50, workers=1)
    result = solve(Instance.model_validate(data), params)
    assert result.objective == pytest.approx(ALL_WEST, abs=1e-9)
    assert result.plan.status == Status.OPTIMAL and result.gap <= OPTIMAL_GAP
    assert result.plan.stats.rounding_bound_cny <= 1e-6


def test_the_filed_1e200_price_is_refused_naming_the_pool(tmp_path, capsys):
    """Issue #11's instance (east-a at 1e200 CNY per GPU-hour) exits 2, not optimal at gap 10.4."""
    data = edited("two_regions", (POOL0 + ("price_cny_per_gpu_hour",), 1e200))
    code, err, out = cli_solve(data, tmp_path, capsys)
    assert code == 2 and "pool 'east-a': field 'price_cny_per_gpu_hour'" in err
    assert not out.exists()


def _coarse_instance(n: int, price: float = 0.123456789) -> Instance:
    """n optional demands, each cheap to serve but with a penalty near the whole plan's cost: the
    penalties set the scale, and each cheap cost rounds."""
    pool = {"id": "p", "accelerator": "X", "gpu_count": n, "memory_gb_per_gpu": 80.0,
            "tflops_by_precision": {"bf16": 1000.0}, "power_kw_per_gpu": 0.0,
            "price_cny_per_gpu_hour": price}
    region = {"id": "r", "jurisdiction": "j", "lat": 0.0, "lon": 0.0,
              "electricity_price_cny_per_kwh": 0.0, "pue": 1.0, "carbon_g_co2_per_kwh": 0.0,
              "pools": [pool]}
    demands = [{"id": f"d{i}", "origin": "r", "work_pflop": 36.0,
                "unserved_penalty_cny": 0.9 * n * 0.00123456789} for i in range(n)]
    return Instance.model_validate({"window_hours": 1.0, "regions": [region],
                                    "demands": demands})


def test_too_coarse_a_scaling_is_refused_naming_what_sets_it(monkeypatch, tmp_path, capsys):
    """E above PRECISION_LIMIT of the greedy plan: compile, solve and validate refuse, exit 2."""
    instance = _coarse_instance(20_000)
    scaling = compile_options(instance).scaling
    assert scaling.upper_bound is not None  # E / least objective > OPTIMAL_GAP: greedy consulted
    share = scaling.rounding_bound / scaling.reference
    assert OPTIMAL_GAP < share < compile_module.PRECISION_LIMIT  # accepted at the shipped limit
    monkeypatch.setattr(compile_module, "PRECISION_LIMIT", 1e-9)
    with pytest.raises(RangeError) as error:
        compile_options(instance)
    assert "demand 'd0': field 'unserved_penalty_cny'" in str(error.value)
    source = tmp_path / "coarse.json"
    source.write_text(instance.model_dump_json())
    assert main(["validate", str(source)]) == 2
    err = capsys.readouterr().err
    assert "field 'unserved_penalty_cny'" in err and "known plan's objective" in err


def test_the_shipped_china_instance_has_a_wide_precision_margin():
    """E / objective on instances/china-2025.json stays far below OPTIMAL_GAP and the refusal."""
    from scheduler import read_instance
    from scheduler.engines.greedy import greedy

    options = compile_options(read_instance(TINY.parent / "china-2025.json"))
    choice, complete = greedy(options)
    served = choice >= 0
    known = math.fsum(options.cost[choice[served]]) + math.fsum(options.penalty[~served])
    assert complete and options.scaling.rounding_bound / known < 1e-3 * OPTIMAL_GAP


EXTREMES = st.sampled_from([5e-324, 1e-300, 1e-9, 1.0, 1e6, 1e12, AMOUNT_LIMIT])


@st.composite
def extreme_instances(draw) -> Instance:
    """Generated instances with a few money, work, speed or size fields pushed to extremes."""
    data = draw(instances(max_demands=4)).model_dump(mode="json")
    pools = [p for r in data["regions"] for p in r["pools"]]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["price", "work", "tflops", "penalty", "data", "offer",
                                     "quantum", "window", "gpus", "weight", "must"]))
        demand = draw(st.sampled_from(data["demands"]))
        pool = draw(st.sampled_from(pools))
        value = draw(EXTREMES)
        if kind == "price":
            pool["price_cny_per_gpu_hour"] = value
        elif kind == "work" and demand["work_pflop"] is not None:
            demand["work_pflop"] = value
        elif kind == "tflops":
            pool["tflops_by_precision"] = {k: max(value, MIN_TFLOPS)
                                           for k in pool["tflops_by_precision"]}
        elif kind == "penalty":
            demand["unserved_penalty_cny"] = value
        elif kind == "data":
            demand["data_gb"] = value
        elif kind == "offer" and data["offers"]:
            offer = draw(st.sampled_from(data["offers"]))
            offer[draw(st.sampled_from(["gpu_hours", "price_cny"]))] = max(value, 5e-324)
        elif kind == "quantum":
            data["gpu_hour_quantum"] = draw(st.sampled_from([MIN_QUANTUM, 1e-3, 1000.0]))
        elif kind == "window":
            data["window_hours"] = draw(st.sampled_from([1e-300, 1e-3, 100_000.0]))
        elif kind == "gpus":
            pool["gpu_count"] = draw(st.sampled_from([1, 10_000_000]))
        elif kind == "weight":
            data["weights"][draw(st.sampled_from(["compute", "energy", "transfer", "unserved",
                                                  "carbon_price_cny_per_t_co2"]))] = value
        elif kind == "must":
            demand["must_serve"] = True
    try:
        return Instance.model_validate(data)
    except ValueError:  # e.g. a gang larger than every pool after a gpu_count change
        return draw(instances(max_demands=4))


@given(extreme_instances(), st.sampled_from(["exact", "large"]))
def test_generated_extremes_solve_verified_or_are_refused_by_name(instance, engine):
    """Generated extremes: a verified plan (optimal only within OPTIMAL_GAP) or a named RangeError."""
    try:
        compile_options(instance)
    except RangeError as error:
        assert error.problems and all(NAMED.search(p) for p in error.problems), error.problems
        return
    params = SolveParams(engine=engine, time_limit_s=5, iteration_limit=20, workers=1)
    result = solve(instance, params)  # raises VerificationError if the plan fails the verifier
    assert result.plan.status != Status.OPTIMAL or result.gap <= OPTIMAL_GAP


@given(instances(max_demands=5), st.sampled_from(["exact", "large"]), st.sampled_from([1e2, 1e4, 1e6]))
def test_optimal_always_comes_with_a_gap_within_optimal_gap(instance, engine, units):
    """With the integer scale made coarse (as a national instance's is), optimal means gap <= 1e-6."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compile_module, "OBJECTIVE_UNITS_LIMIT", units)
        try:
            compile_options(instance)
        except RangeError as error:  # rounding above PRECISION_LIMIT of the greedy plan
            assert all("known plan's objective" in p for p in error.problems)
            return
        params = SolveParams(engine=engine, time_limit_s=5, iteration_limit=20, workers=1)
        result = solve(instance, params)
    assert result.plan.status != Status.OPTIMAL or result.gap <= OPTIMAL_GAP


def test_a_closed_integer_gap_is_not_optimal_when_rounding_leaves_a_gap():
    """20,000 cheap costs that round down at scale 1e7: CP-SAT closes its gap, the true one is 2e-5."""
    instance = _coarse_instance(20_000, price=0.123451234)
    result = solve(instance, SolveParams(engine="exact", time_limit_s=60))
    assert result.plan.stats.solver_status == "OPTIMAL"  # CP-SAT's own verdict
    assert result.gap > OPTIMAL_GAP and result.plan.status == Status.FEASIBLE


def test_usage_within_range_but_beyond_every_pool_is_still_legal():
    """A demand too large for any pool (usage above capacity, below MAX_QUANTA) stays unserved."""
    data = edited("two_regions", (D0 + ("work_pflop",), 1e12), (D0 + ("unserved_penalty_cny",), 1e15))
    options = compile_options(Instance.model_validate(data))
    assert options.capacity.max() < options.units[options.options_of(0)].min() <= MAX_QUANTA
    result = solve(Instance.model_validate(data), SolveParams(time_limit_s=10))
    assert result.plan.unserved[0].demand == "d1" and result.plan.unserved[0].reason == "capacity"


def test_the_smoothed_dual_stays_finite_when_a_must_serve_demand_fits_no_pool():
    """A must-serve demand bigger than its only pool makes L unbounded: no inf - inf on the way."""
    from scheduler.engines.lagrangian import CapacityRelaxation, smoothed_ascent

    data = edited("two_regions", (D0 + ("must_serve",), True), (D0 + ("work_pflop",), 1e6),
                  (("regions", 1, "pools"), []))
    instance = Instance.model_validate(data)
    options = compile_options(instance)
    assert options.units[options.options_of(0)].min() > options.capacity.max()
    best = smoothed_ascent(CapacityRelaxation(options), deadline=math.inf)
    assert np.all(np.isfinite(best.lam)) and math.isfinite(best.value)
    result = solve(instance, SolveParams(engine="large", time_limit_s=5, iteration_limit=5))
    assert result.plan.status in (Status.INFEASIBLE, Status.UNKNOWN)
