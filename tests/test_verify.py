"""The independent verifier: the tiny optima, then one broken thing at a time.

Each broken-plan test states the number it expects and where it comes from. Instances and their
derivations: instances/tiny/README.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from models import (
    OPTIMAL_GAP,
    Assignment,
    Instance,
    Link,
    Offer,
    Plan,
    PoolUsage,
    Reason,
    Status,
    Unserved,
)
from scheduler.verify import verify

TINY = Path(__file__).resolve().parent.parent / "instances" / "tiny"
OPTIMA = {
    "two_regions": 266.38,
    "precision_fallback": 84.88,
    "unserved_priority": 162.0,
    "gap_offers": 20.0,
}


def load(name: str) -> tuple[Instance, Plan]:
    inst = Instance.model_validate_json((TINY / f"{name}.json").read_text())
    plan = Plan.model_validate_json((TINY / f"{name}.plan.json").read_text())
    return inst, plan


def found(instance: Instance, plan: Plan) -> dict[tuple[str, str], float]:
    """(code, subject) -> amount for every violation."""
    return {(v.code, v.subject): v.amount for v in verify(instance, plan).violations}


def with_assignment(plan: Plan, demand: str, **changes) -> Plan:
    """The plan with one assignment's fields changed."""
    rows = tuple(a.model_copy(update=changes) if a.demand == demand else a
                 for a in plan.assignments)
    return plan.model_copy(update={"assignments": rows})


def with_demand(inst: Instance, demand: str, **changes) -> Instance:
    """The instance with one demand's fields changed."""
    rows = tuple(d.model_copy(update=changes) if d.id == demand else d for d in inst.demands)
    return inst.model_copy(update={"demands": rows})


def unserve(plan: Plan, demand: str, reason: Reason, penalty: float = 0.0) -> Plan:
    """The plan with `demand` moved from the assignments to the unserved list."""
    return plan.model_copy(update={
        "assignments": tuple(a for a in plan.assignments if a.demand != demand),
        "unserved": plan.unserved + (Unserved(demand=demand, reason=reason, penalty_cny=penalty),),
    })


# --- the tiny optima -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_tiny_plan_verifies(name):
    """Each hand-derived optimal plan is clean and recomputes to its stated objective."""
    inst, plan = load(name)
    result = verify(inst, plan)
    assert result.violations == ()
    assert result.ok
    assert result.objective == pytest.approx(OPTIMA[name], abs=1e-9)


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_tiny_optimum_by_enumeration(name):
    """No choice of pool-or-unserved per demand that meets the hard rules beats the hand optimum."""
    inst, _ = load(name)
    pools = [(r.id, p.id) for r in inst.regions for p in r.pools]
    hard = ("ineligible:", "over_capacity", "must_serve_unserved")
    best = None
    for combo in itertools.product([None, *pools], repeat=len(inst.demands)):
        assignments, unserved = [], []
        for d, choice in zip(inst.demands, combo):
            if choice is None:
                unserved.append(Unserved(demand=d.id, reason=Reason.CAPACITY, penalty_cny=0))
            else:
                assignments.append(Assignment(
                    demand=d.id, region=choice[0], pool=choice[1], precision="bf16", gpu_hours=0,
                    latency_ms=0, energy_kwh=0, co2_kg=0, compute_cny=0, energy_cny=0,
                    transfer_cny=0, carbon_cny=0, cost_cny=0,
                ))
        plan = Plan(instance=inst.name, status=Status.FEASIBLE, objective=0, lower_bound=None,
                    gap=None, assignments=tuple(assignments), unserved=tuple(unserved),
                    stats={"engine": "enumeration", "solver_status": "", "wall_time_s": 0})
        result = verify(inst, plan)
        if any(v.code.startswith(hard) for v in result.violations):
            continue
        if best is None or result.objective < best:
            best = result.objective
    assert best == pytest.approx(OPTIMA[name], abs=1e-9)


# --- coverage: every demand exactly once, known ids ----------------------------------------------


def test_missing_demand():
    """Dropping d3 leaves it missing, and the stated lower bound now exceeds the objective."""
    inst, plan = load("two_regions")
    plan = plan.model_copy(update={"assignments": plan.assignments[:2]})
    got = found(inst, plan)
    assert got[("missing_demand", "d3")] == 1
    # d3 cost 53.15: objective 266.38 - 53.15 = 213.23, bound 266.38 is above it by 53.15.
    assert got[("lower_bound_above_objective", "lower_bound")] == pytest.approx(53.15)
    assert got[("mismatch:objective", "objective")] == pytest.approx(53.15)


def test_duplicate_demand_overloads_pool():
    """d2 listed twice: one extra entry, and east carries 13 + 8 = 21 GPU-h on 20: over by 1."""
    inst, plan = load("two_regions")
    d2 = next(a for a in plan.assignments if a.demand == "d2")
    got = found(inst, plan.model_copy(update={"assignments": plan.assignments + (d2,)}))
    assert got[("duplicate_demand", "d2")] == 1
    assert got[("over_capacity", "east-a")] == pytest.approx(1.0)


def test_demand_both_assigned_and_unserved():
    """A demand in both lists counts as a duplicate."""
    inst, plan = load("unserved_priority")
    extra = Unserved(demand="a", reason=Reason.CAPACITY, penalty_cny=60)
    got = found(inst, plan.model_copy(update={"unserved": plan.unserved + (extra,)}))
    assert got[("duplicate_demand", "a")] == 1


def test_unknown_ids():
    """Unknown demand, pool and region ids are violations, not exceptions."""
    inst, plan = load("two_regions")
    bad = with_assignment(plan, "d1", pool="nowhere-x", region="atlantis")
    got = found(inst, bad)
    assert got[("unknown_pool", "d1")] == 1
    assert got[("unknown_region", "d1")] == 1
    ghost = Unserved(demand="ghost", reason=Reason.CAPACITY, penalty_cny=0)
    got = found(inst, plan.model_copy(update={"unserved": (ghost,)}))
    assert got[("unknown_demand", "ghost")] == 1


def test_pool_in_wrong_region():
    """An assignment stating region east for pool west-a names the wrong region."""
    inst, plan = load("two_regions")
    got = found(inst, with_assignment(plan, "d1", region="east"))
    assert got == {("pool_region_mismatch", "d1"): 1}


def test_instance_name_mismatch():
    """A plan for another instance is flagged."""
    inst, plan = load("gap_offers")
    got = found(inst, plan.model_copy(update={"instance": "other"}))
    assert got == {("instance_mismatch", "instance"): 1}


# --- capacity ------------------------------------------------------------------------------------


def test_over_capacity_in_gpu_hours():
    """All three demands in east: 10 + 8 + 5 = 23 GPU-h on 20: over by 3 GPU-h."""
    inst, plan = load("two_regions")
    # d1 on east: compute 100, energy 6 kWh -> 6 CNY, CO2 3 kg -> 0.3 CNY at 100 CNY/t.
    plan = with_assignment(plan, "d1", region="east", pool="east-a", latency_ms=1, energy_kwh=6,
                           co2_kg=3, compute_cny=100, energy_cny=6, transfer_cny=0, carbon_cny=0.3,
                           cost_cny=106.3)
    got = found(inst, plan)
    assert got[("over_capacity", "east-a")] == pytest.approx(3.0)
    assert not any(code.startswith("ineligible") for code, _ in got)
    assert ("mismatch:cost_cny", "d1") not in got


def test_capacity_counts_whole_quanta():
    """job1 quoted at 2.5 GPU-h on agent0 counts 3 quanta: agent0 carries 7 on 6, over by 1."""
    inst, plan = load("gap_offers")
    offers = tuple(o.model_copy(update={"gpu_hours": 2.5})
                   if (o.demand, o.pool) == ("job1", "agent0") else o for o in inst.offers)
    got = found(inst.model_copy(update={"offers": offers}), plan)
    assert got[("over_capacity", "agent0")] == pytest.approx(1.0)
    assert got[("mismatch:gpu_hours", "job1")] == pytest.approx(1.0)  # reported 2, usage 3


# --- eligibility, one rule at a time -------------------------------------------------------------


def test_ineligible_latency():
    """p3 (bound 10 ms) on far-new, 40 ms away: over by 30 ms."""
    inst, plan = load("precision_fallback")
    got = found(inst, with_assignment(plan, "p3", region="far", pool="far-new"))
    assert got[("ineligible:latency", "p3")] == pytest.approx(30.0)


def test_ineligible_precision():
    """Strict-FP8 p2 on hub-old, which has no FP8."""
    inst, plan = load("precision_fallback")
    got = found(inst, with_assignment(plan, "p2", region="hub", pool="hub-old"))
    assert got[("ineligible:precision", "p2")] == 1


def test_precision_fallback_reported():
    """p1 runs at BF16 on hub-old; reporting FP8 is a mismatch."""
    inst, plan = load("precision_fallback")
    got = found(inst, with_assignment(plan, "p1", precision="fp8"))
    assert got == {("mismatch:precision", "p1"): 1}


def test_ineligible_memory():
    """x needs 100 GB per GPU; solo-a has 80: short by 20 GB."""
    inst, plan = load("unserved_priority")
    x = Assignment(demand="x", region="solo", pool="solo-a", precision="bf16", gpu_hours=1,
                   latency_ms=1, energy_kwh=0, co2_kg=0, compute_cny=10, energy_cny=0,
                   transfer_cny=0, carbon_cny=0, cost_cny=10)
    plan = plan.model_copy(update={"assignments": plan.assignments + (x,),
                                   "unserved": tuple(u for u in plan.unserved if u.demand != "x")})
    got = found(inst, plan)
    assert got[("ineligible:memory", "x")] == pytest.approx(20.0)
    assert ("mismatch:cost_cny", "x") not in got


def test_ineligible_gang():
    """A gang of 3 on the 2-GPU east pool: short by 1 GPU."""
    inst, plan = load("two_regions")
    got = found(with_demand(inst, "d2", gang_size=3), plan)
    assert got[("ineligible:gang", "d2")] == 1


def test_ineligible_accelerator():
    """d1 allows only H800; west-a is A100."""
    inst, plan = load("two_regions")
    got = found(with_demand(inst, "d1", accelerators=("H800",)), plan)
    assert got == {("ineligible:accelerator", "d1"): 1}


def test_rules_keep_first_failure():
    """d1 fails accelerator, jurisdiction and latency on west-a; accelerator (rule 3) counts."""
    inst, plan = load("two_regions")
    inst = with_demand(inst, "d1", accelerators=("H800",), jurisdictions=("shanghai",),
                       max_latency_ms=5)
    got = found(inst, plan)
    assert got == {("ineligible:accelerator", "d1"): 1}


def test_ineligible_jurisdiction():
    """d1 must stay in Shanghai; west is in Guizhou."""
    inst, plan = load("two_regions")
    got = found(with_demand(inst, "d1", jurisdictions=("shanghai",)), plan)
    assert got == {("ineligible:jurisdiction", "d1"): 1}


def test_ineligible_unreachable():
    """Without the link, west cannot be reached from east."""
    inst, plan = load("two_regions")
    got = found(inst.model_copy(update={"links": ()}), plan)
    assert got[("ineligible:unreachable", "d1")] == 1
    assert not [key for key in got if key[0].startswith("ineligible") and key[1] != "d1"]


def test_ineligible_deadline():
    """d1 needs 10 GPU-h on one GPU: 10 h against a deadline of 8 h, over by 2 h."""
    inst, plan = load("two_regions")
    got = found(with_demand(inst, "d1", deadline_hours=8), plan)
    assert got == {("ineligible:deadline", "d1"): pytest.approx(2.0)}


def test_deadline_divides_by_gang():
    """A gang of 2 runs d1's 10 GPU-h in 5 h, inside a 6 h deadline."""
    inst, plan = load("two_regions")
    assert found(with_demand(inst, "d1", deadline_hours=6, gang_size=2), plan) == {}


def test_ineligible_price_cap():
    """d1 on west: price 120 + 2.75 + 5 = 127.75 (no carbon term), over a cap of 120 by 7.75."""
    inst, plan = load("two_regions")
    got = found(with_demand(inst, "d1", max_cost_cny=120), plan)
    assert got == {("ineligible:price_cap", "d1"): pytest.approx(7.75)}


def test_price_cap_at_price_is_eligible():
    """A cap equal to the price (127.75) passes: the comparison is strict."""
    inst, plan = load("two_regions")
    assert found(with_demand(inst, "d1", max_cost_cny=127.75), plan) == {}


def test_ineligible_no_offer():
    """gap_offers without the (job3, agent0) offer: job3 has no work figure, so no option there."""
    inst, plan = load("gap_offers")
    offers = tuple(o for o in inst.offers if (o.demand, o.pool) != ("job3", "agent0"))
    got = found(inst.model_copy(update={"offers": offers}), plan)
    assert got[("ineligible:no_offer", "job3")] == 1


# --- figures -------------------------------------------------------------------------------------


def test_figures_within_tolerance_pass():
    """A cost off by 1e-7 (tolerance 1e-6 + 1e-9 x 128.19) is accepted."""
    inst, plan = load("two_regions")
    assert found(inst, with_assignment(plan, "d1", cost_cny=128.19 + 1e-7)) == {}


@pytest.mark.parametrize(
    ("field", "value", "diff"),
    [
        ("gpu_hours", 10.5, 0.5),
        ("latency_ms", 21.0, 1.0),
        ("energy_kwh", 5.0, 0.5),  # 10 GPU-h x 0.5 kW x PUE 1.1 = 5.5 kWh
        ("co2_kg", 4.0, 0.4),  # 5.5 kWh x 800 g = 4.4 kg
        ("compute_cny", 100.0, 20.0),  # 10 GPU-h x 12 = 120
        ("energy_cny", 3.0, 0.25),  # 5.5 kWh x 0.5 = 2.75
        ("transfer_cny", 0.0, 5.0),  # 10 GB x 0.5 = 5
        ("carbon_cny", 0.0, 0.44),  # 4.4 kg = 0.0044 t x 100
        ("cost_cny", 128.2, 0.01),
    ],
)
def test_assignment_figure_mismatch(field, value, diff):
    """Each misreported assignment figure of d1 (on west-a) is flagged by the difference."""
    inst, plan = load("two_regions")
    got = found(inst, with_assignment(plan, "d1", **{field: value}))
    assert got == {(f"mismatch:{field}", "d1"): pytest.approx(diff)}


def test_weights_scale_the_terms():
    """Weight 2 on compute doubles compute_cny of every assignment: d1 120 -> 240."""
    inst, plan = load("two_regions")
    inst = inst.model_copy(update={"weights": inst.weights.model_copy(update={"compute": 2.0})})
    got = found(inst, plan)
    assert got[("mismatch:compute_cny", "d1")] == pytest.approx(120.0)
    assert got[("mismatch:costs.compute_cny", "costs")] == pytest.approx(250.0)
    assert verify(inst, plan).objective == pytest.approx(266.38 + 250.0)


def test_offer_replaces_compute_and_energy_cost_only():
    """An offer (9 GPU-h, 100 CNY) for d1 on west-a: 4.95 kWh still counted, energy cost 0."""
    inst, plan = load("two_regions")
    offer = Offer(demand="d1", pool="west-a", gpu_hours=9, price_cny=100)
    inst = inst.model_copy(update={"offers": (offer,)})
    # 9 x 0.5 kW x 1.1 = 4.95 kWh; x 800 g = 3.96 kg -> 0.396 CNY; transfer 10 GB x 0.5 = 5.
    plan = with_assignment(plan, "d1", gpu_hours=9, energy_kwh=4.95, co2_kg=3.96, compute_cny=100,
                           energy_cny=0, transfer_cny=5, carbon_cny=0.396, cost_cny=105.396)
    got = found(inst, plan)
    assert not [key for key in got if key[1] == "d1"]
    assert verify(inst, plan).objective == pytest.approx(266.38 - 128.19 + 105.396)


def test_quantum_slack_and_minimum():
    """0.1 + 0.2 GPU-h is 30 quanta of 0.01 (not 31); 0.001 GPU-h is raised to one quantum.

    agent0 then carries 30 + 1 = 31 quanta = 0.31 GPU-h of its 6 x 1 h = 6 GPU-h.
    """
    inst, plan = load("gap_offers")
    inst = inst.model_copy(update={"gpu_hour_quantum": 0.01, "offers": (
        Offer(demand="job0", pool="agent0", gpu_hours=0.1 + 0.2, price_cny=1),
        Offer(demand="job1", pool="agent0", gpu_hours=0.001, price_cny=1),
    ), "demands": inst.demands[:2]})
    cells = {"precision": "bf16", "latency_ms": 1, "energy_kwh": 0, "co2_kg": 0, "compute_cny": 1,
             "energy_cny": 0, "transfer_cny": 0, "carbon_cny": 0, "cost_cny": 1}
    row = PoolUsage(region="gap", pool="agent0", accelerator="agent", used_gpu_hours=0.31,
                    capacity_gpu_hours=6, utilization=0.31 / 6)
    plan = plan.model_copy(update={
        "assignments": (
            Assignment(demand="job0", region="gap", pool="agent0", gpu_hours=0.3, **cells),
            Assignment(demand="job1", region="gap", pool="agent0", gpu_hours=0.01, **cells),
        ),
        "pools": (row,),
        "costs": plan.costs.model_copy(update={"compute_cny": 2}),
        "objective": 2.0,
        "lower_bound": 2.0,
    })
    assert found(inst, plan) == {}


def test_lexicographic_route():
    """Equal-latency routes tie-break on transfer cost; latency wins over cost.

    east-west direct: 30 ms, 0.1 CNY/GB; via mid: 10 + 20 = 30 ms, 0.2 + 0.2 = 0.4 CNY/GB, so the
    tie goes to the direct link; then via mid drops to 29 ms (10 + 19) and wins despite its cost.
    """
    inst, plan = load("two_regions")
    mid = inst.regions[1].model_copy(update={"id": "mid", "pools": ()})
    def link(a, b, ms, cny):
        return Link(source=a, target=b, latency_ms=ms, bandwidth_gbps=1,
                    transfer_cost_cny_per_gb=cny)

    links = (link("east", "west", 30, 0.1), link("east", "mid", 10, 0.2),
             link("mid", "west", 20, 0.2))
    inst = inst.model_copy(update={"regions": inst.regions + (mid,), "links": links})
    got = found(inst, plan)
    # d1 (10 GB): transfer 10 x 0.1 = 1 instead of the 5 reported; latency 30 instead of 20.
    assert got[("mismatch:transfer_cny", "d1")] == pytest.approx(4.0)
    assert got[("mismatch:latency_ms", "d1")] == pytest.approx(10.0)
    faster = links[:2] + (links[2].model_copy(update={"latency_ms": 19}),)
    got = found(inst.model_copy(update={"links": faster}), plan)
    # via mid: 29 ms and 10 GB x 0.4 = 4 CNY (reported 20 ms, 5 CNY).
    assert got[("mismatch:latency_ms", "d1")] == pytest.approx(9.0)
    assert got[("mismatch:transfer_cny", "d1")] == pytest.approx(1.0)


def test_penalty_and_work_mismatch():
    """b's penalty is 1 x 50; reporting 40 is off by 10; a wrong work figure is flagged too."""
    inst, plan = load("unserved_priority")
    rows = tuple(u.model_copy(update={"penalty_cny": 40, "work_pflop": 1.0})
                 if u.demand == "b" else u for u in plan.unserved)
    got = found(inst, plan.model_copy(update={"unserved": rows}))
    assert got[("mismatch:penalty_cny", "b")] == pytest.approx(10.0)
    assert got[("mismatch:work_pflop", "b")] == pytest.approx(3599.0)


def test_pool_usage_rows():
    """Pool rows: wrong used, capacity, utilization, accelerator; a duplicate; a missing row."""
    inst, plan = load("two_regions")
    east, west = plan.pools
    bad_east = east.model_copy(update={"used_gpu_hours": 12, "capacity_gpu_hours": 25,
                                       "utilization": 0.5, "accelerator": "H800"})
    got = found(inst, plan.model_copy(update={"pools": (bad_east, east)}))
    assert got[("mismatch:used_gpu_hours", "east-a")] == pytest.approx(1.0)  # 13 used
    assert got[("mismatch:capacity_gpu_hours", "east-a")] == pytest.approx(5.0)  # 2 x 10 = 20
    assert got[("mismatch:utilization", "east-a")] == pytest.approx(0.15)  # 13 / 20 = 0.65
    assert got[("mismatch:accelerator", "east-a")] == 1
    assert got[("duplicate_pool", "east-a")] == 1
    assert got[("missing_pool_usage", "west-a")] == pytest.approx(10.0)  # d1's 10 GPU-h
    stray = PoolUsage(region="west", pool="nope", accelerator="A100", used_gpu_hours=0,
                      capacity_gpu_hours=0, utilization=0)
    got = found(inst, plan.model_copy(update={"pools": plan.pools + (stray,)}))
    assert got == {("unknown_pool", "nope"): 1}


def test_unused_pool_row_may_be_omitted():
    """A pool without load needs no usage row (a spare west pool, absent from the plan)."""
    inst, plan = load("two_regions")
    west = inst.regions[1]
    spare = west.pools[0].model_copy(update={"id": "west-spare"})
    west = west.model_copy(update={"pools": west.pools + (spare,)})
    inst = inst.model_copy(update={"regions": (inst.regions[0], west)})
    assert found(inst, plan) == {}


def test_cost_breakdown():
    """The breakdown: co2_t is kg / 1000 (8.3 kg -> 0.0083 t); penalties sum to 50 + 5 + 7 = 62."""
    inst, plan = load("two_regions")
    costs = plan.costs.model_copy(update={"co2_t": 8.3})
    got = found(inst, plan.model_copy(update={"costs": costs}))
    assert got == {("mismatch:costs.co2_t", "costs"): pytest.approx(8.3 - 0.0083)}
    inst, plan = load("unserved_priority")
    bad = plan.costs.model_copy(update={"unserved_penalty_cny": 60})
    got = found(inst, plan.model_copy(update={"costs": bad}))
    assert got == {("mismatch:costs.unserved_penalty_cny", "costs"): pytest.approx(2.0)}


def test_objective_lower_bound_gap():
    """Objective off by 1; a bound above the objective by 1; a gap that disagrees with the bound."""
    inst, plan = load("gap_offers")
    got = found(inst, plan.model_copy(update={"objective": 21.0}))
    assert got == {("mismatch:objective", "objective"): pytest.approx(1.0)}
    got = found(inst, plan.model_copy(update={"lower_bound": 21.0}))
    assert got == {("lower_bound_above_objective", "lower_bound"): pytest.approx(1.0)}
    # bound 15: gap (20 - 15) / 20 = 0.25, reported 0 (as a feasible plan, so only the gap).
    feasible = plan.model_copy(update={"status": Status.FEASIBLE})
    got = found(inst, feasible.model_copy(update={"lower_bound": 15.0}))
    assert got == {("mismatch:gap", "gap"): pytest.approx(0.25)}
    got = found(inst, feasible.model_copy(update={"lower_bound": None, "gap": None}))
    assert got == {}
    got = found(inst, plan.model_copy(update={"objective": None}))
    assert got == {("mismatch:objective", "objective"): pytest.approx(20.0)}


def test_optimal_status_needs_a_gap_within_optimal_gap():
    """A plan reported optimal may have a recomputed gap of at most models.OPTIMAL_GAP (1e-6)."""
    inst, plan = load("gap_offers")  # objective 20, reported optimal with bound 20
    assert plan.status == Status.OPTIMAL and OPTIMAL_GAP == 1e-6
    # bound 19.99999: gap 1e-5 / 20 = 5e-7 <= 1e-6, honest.
    assert found(inst, plan.model_copy(update={"lower_bound": 19.99999, "gap": 5e-7})) == {}
    # bound 19.9999: gap 1e-4 / 20 = 5e-6, over by 4e-6; the gap figure itself is right.
    got = found(inst, plan.model_copy(update={"lower_bound": 19.9999, "gap": 5e-6}))
    assert got == {("optimal_gap_exceeded", "status"): pytest.approx(4e-6, rel=1e-6)}
    # bound 15: gap 0.25, over by 0.25 - 1e-6; reported 0, so the gap figure is flagged too.
    got = found(inst, plan.model_copy(update={"lower_bound": 15.0}))
    assert got == {("mismatch:gap", "gap"): pytest.approx(0.25),
                   ("optimal_gap_exceeded", "status"): pytest.approx(0.25 - 1e-6)}
    # No bound at all: nothing proves optimality (amount 1).
    got = found(inst, plan.model_copy(update={"lower_bound": None, "gap": None}))
    assert got == {("optimal_gap_exceeded", "status"): 1.0}
    # The same figures under status feasible are honest.
    feasible = plan.model_copy(update={"status": Status.FEASIBLE, "lower_bound": 15.0,
                                       "gap": 0.25})
    assert found(inst, feasible) == {}


# --- unserved demands and their reasons ----------------------------------------------------------


def test_must_serve_unserved():
    """m1 must be served; leaving it out (reason uneconomic: 60 >= penalty 0) is flagged once."""
    inst, plan = load("unserved_priority")
    got = found(inst, unserve(plan, "m1", Reason.UNECONOMIC))
    assert got[("must_serve_unserved", "m1")] == 1
    assert ("wrong_reason", "m1") not in got


@pytest.mark.parametrize(
    ("demand", "reason"),
    [
        ("b", Reason.UNECONOMIC),  # its option costs 40 < penalty 50
        ("u", Reason.CAPACITY),  # its option costs 10 > penalty 5
        ("x", Reason.CAPACITY),  # no option at all: the reason is its nearest miss, memory
        ("b", Reason.MEMORY),  # has an option
        ("b", Reason.NOT_SOLVED),  # the plan is optimal
    ],
)
def test_wrong_reason(demand, reason):
    """An unserved reason that contradicts the data is flagged."""
    inst, plan = load("unserved_priority")
    rows = tuple(u.model_copy(update={"reason": reason}) if u.demand == demand else u
                 for u in plan.unserved)
    got = found(inst, plan.model_copy(update={"unserved": rows}))
    assert got == {("wrong_reason", demand): 1}


def test_reason_at_equal_cost_may_be_either():
    """b's penalty at exactly its cost, 40: both uneconomic and capacity are consistent.

    Penalties 40 + 5 + 7 = 52; objective 60 + 40 + 52 = 152.
    """
    inst, plan = load("unserved_priority")
    inst = with_demand(inst, "b", unserved_penalty_cny=40)
    costs = plan.costs.model_copy(update={"unserved_penalty_cny": 52})
    for reason in (Reason.CAPACITY, Reason.UNECONOMIC):
        rows = tuple(u.model_copy(update={"reason": reason, "penalty_cny": 40})
                     if u.demand == "b" else u for u in plan.unserved)
        plan = plan.model_copy(update={"unserved": rows, "costs": costs,
                                       "objective": 152.0, "lower_bound": 152.0})
        assert found(inst, plan) == {}


def test_nearest_miss_is_the_largest_rule():
    """d1 may only go to Guizhou within 10 ms: east fails rule 6 (jurisdiction), west rule 8
    (latency, 20 ms): the nearest miss is latency. Without d1: 266.38 - 128.19 = 138.19."""
    inst, plan = load("two_regions")
    inst = with_demand(inst, "d1", jurisdictions=("guizhou",), max_latency_ms=10,
                       unserved_penalty_cny=0)
    east_only = {"compute_cny": 130, "energy_cny": 7.8, "transfer_cny": 0, "carbon_cny": 0.39,
                 "energy_kwh": 7.8, "co2_t": 0.0039}
    idle_west = plan.pools[1].model_copy(update={"used_gpu_hours": 0, "utilization": 0})
    for reason, ok in ((Reason.LATENCY, True), (Reason.JURISDICTION, False),
                       (Reason.UNECONOMIC, False)):
        bad = unserve(plan, "d1", reason)
        bad = bad.model_copy(update={
            "pools": (bad.pools[0], idle_west),
            "costs": bad.costs.model_copy(update=east_only),
            "objective": 138.19, "lower_bound": 138.19})
        assert (found(inst, bad) == {}) is ok


# --- plans without a solution --------------------------------------------------------------------


def unsolved(inst: Instance, status: Status, reasons: dict[str, Reason]) -> Plan:
    """An infeasible/unknown plan: every demand unserved with its penalty, no figures."""
    w = inst.weights
    rows = tuple(Unserved(demand=d.id, reason=reasons.get(d.id, Reason.NOT_SOLVED),
                          penalty_cny=w.unserved * d.priority * d.unserved_penalty_cny)
                 for d in inst.demands)
    return Plan(instance=inst.name, status=status, objective=None, lower_bound=None, gap=None,
                unserved=rows, stats={"engine": "test", "solver_status": "", "wall_time_s": 0})


def test_unsolved_plan_is_consistent():
    """Status unknown, all not_solved but x (memory): clean, objective None."""
    inst, _ = load("unserved_priority")
    result = verify(inst, unsolved(inst, Status.UNKNOWN, {"x": Reason.MEMORY}))
    assert result.ok and result.objective is None
    got = found(inst, unsolved(inst, Status.INFEASIBLE, {}))
    assert got == {("wrong_reason", "x"): 1}  # x has no option: memory, not not_solved


def test_unsolved_plan_breakdown():
    """An unsolved plan's penalty total may be empty (0) or the sum 0 + 60 + 50 + 5 + 7 = 122."""
    inst, _ = load("unserved_priority")
    plan = unsolved(inst, Status.INFEASIBLE, {"x": Reason.MEMORY})
    for total, expected in ((0.0, {}), (122.0, {}),
                            (100.0, {("mismatch:costs.unserved_penalty_cny", "costs"): 22.0})):
        costs = plan.costs.model_copy(update={"unserved_penalty_cny": total})
        assert found(inst, plan.model_copy(update={"costs": costs})) == expected


def test_unsolved_plan_with_figures_or_assignments():
    """An infeasible plan may not carry an objective, bound, gap or assignment."""
    inst, plan = load("gap_offers")
    base = unsolved(inst, Status.INFEASIBLE, {})
    assert found(inst, base) == {}
    got = found(inst, base.model_copy(update={"objective": 20.0, "lower_bound": 18.0, "gap": 0.1}))
    assert got == {("mismatch:objective", "objective"): 20.0,
                   ("mismatch:lower_bound", "lower_bound"): 18.0,
                   ("mismatch:gap", "gap"): pytest.approx(0.1)}
    job0 = plan.assignments[0]
    bad = base.model_copy(update={"assignments": (job0,), "unserved": base.unserved[1:],
                                  "pools": (plan.pools[0].model_copy(
                                      update={"used_gpu_hours": 3, "utilization": 0.5}),),
                                  "costs": base.costs.model_copy(update={"compute_cny": 5})})
    assert found(inst, bad) == {("assignment_without_solution", "job0"): 1}


def test_verify_never_raises_on_garbage():
    """A plan naming nothing the instance knows yields violations only."""
    inst, _ = load("two_regions")
    junk = Assignment(demand="zz", region="zz", pool="zz", precision="int4", gpu_hours=0,
                      latency_ms=0, energy_kwh=0, co2_kg=0, compute_cny=0, energy_cny=0,
                      transfer_cny=0, carbon_cny=0, cost_cny=0)
    plan = Plan(instance="zz", status=Status.OPTIMAL, objective=-1, lower_bound=5, gap=3,
                assignments=(junk, junk),
                stats={"engine": "x", "solver_status": "", "wall_time_s": 0})
    result = verify(inst, plan)
    assert not result.ok
    codes = {v.code for v in result.violations}
    assert {"unknown_demand", "unknown_pool", "unknown_region", "duplicate_demand",
            "missing_demand", "instance_mismatch", "lower_bound_above_objective"} <= codes
