"""The verifier over a horizon (formulation §8): one hand-built instance and plan, then one broken
thing at a time, each with the amount it must report and where that number comes from.

The instance (4 slots of 1 h; carbon price 100 CNY/t; load quantum Q = 0.5 PFLOP/h):

* east: price by slot 1, 1, 0.5, 0.5 CNY/kWh (tariff P P V V), 500 g/kWh, PUE 1; pool east-a:
  2 GPUs, 10 CNY/GPU-h, 1 kW, BF16 100 TFLOPS, FP32 0.5 TFLOPS.
* west: 0.2 CNY/kWh flat (no tariff: "flat"), 100 g/kWh, PUE 1; pool west-a: 4 GPUs, 5 CNY/GPU-h,
  1 kW, the same speeds, 2 GPUs out in slot 3 (avail 4, 4, 4, 2).
* link east-west: 10 ms, 1 Gbps (10^6 quanta per slot), 0.1 CNY/GB.
* b1 (batch, east, must serve): 540 PFLOP at BF16 = 540 * 1000 / (100 * 3600) = 1.5 GPU-h, gang 1:
  runtime 1.5 h, n = 2 slots, no data.
* b2 (batch, east): 720 PFLOP = 2 GPU-h, gang 2: runtime 1 h, n = 1; 450 GB of data.
* b3 (batch, west): 720 PFLOP, gang 4 (only west-a), n = 1; penalty 5 (below its cost 10.42).
* s1 (service, east): FP32 strict, load 1, 2, 2, 1 PFLOP/h = Lq 2, 4, 4, 2 quanta (peak 4);
  kappa = floor(1 * 0.5 * 3.6 / 0.5) = 3 quanta per replica; traffic 0.4 Gbps at peak:
  tau = 0.4 / 4 / 1e-6 = 10^5 quanta per served quantum, 0.4 * 3600 / 8 / 4 = 45 GB per quantum;
  10 CNY per unserved PFLOP.

The plan (objective 141.265):

* b1 on east-a, slots 2-3: 1 kWh at 0.5 + 0.5 kWh at 0.5 = 0.75 CNY; 1.5 kWh x 500 g = 750 g
  (0.075 CNY); compute 1.5 x 10 = 15; cost 15.825.
* b2 on west-a at slot 2 (its data moves in slots 0-1: 8 x 450 / (2 x 3600) = 0.5 Gbps = 500,000
  quanta on east-west): compute 2 x 5 = 10, energy 2 kWh x 0.2 = 0.4, 200 g (0.02 CNY), transfer
  450 x 0.1 = 45; cost 55.42.
* b3 unserved (uneconomic), penalty 5.
* s1 on east-a: replicas 1, 1, 0, 0 serving 1, 1.5, 0, 0 PFLOP/h (2, 3 quanta): 2 GPU-h, compute
  20, 2 kWh at 1 = 2 CNY, 1000 g (0.1 CNY); cost 22.1. On west-a: replicas 0, 0, 1, 1 serving
  0, 0, 1.5, 1 (3, 2 quanta): 2 GPU-h, compute 10, energy 0.4, 200 g (0.02), transfer 5 quanta x
  45 GB x 0.1 = 22.5; cost 32.92. Unserved 0, 0.5, 0.5, 0 PFLOP/h = 1 PFLOP: penalty 10.
* east-a holds 1, 1, 1, 1 GPUs (used 1.5 + 2 = 3.5 GPU-h of 8); west-a 0, 0, 3, 1 (used 2 + 2 = 4
  of 4 + 4 + 4 + 2 = 14); east-west carries 0.5, 0.5, 0.3, 0.2 Gbps (peak utilization 0.5).
* energy by period: peak 2 kWh (2 CNY), valley 1.5 (0.75), flat 2 + 2 = 4 (0.8); 2150 g in all.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from models import (
    Assignment,
    CostBreakdown,
    Instance,
    LinkLoad,
    Plan,
    PoolUsage,
    Reason,
    ServicePlacement,
    ServicePlan,
    Status,
    Unserved,
)
from scheduler.strategies import timed_instances
from scheduler.verify import verify

OBJECTIVE = 141.265
ROOT = Path(__file__).resolve().parent.parent


def pool(pool_id: str, gpus: int, price: float, outages=()) -> dict:
    return {"id": pool_id, "accelerator": "A100", "gpu_count": gpus, "memory_gb_per_gpu": 80.0,
            "tflops_by_precision": {"bf16": 100.0, "fp32": 0.5}, "power_kw_per_gpu": 1.0,
            "price_cny_per_gpu_hour": price, "outages": list(outages)}


def instance(**changes) -> Instance:
    """The instance of the module docstring, with top-level fields replaced."""
    data = {
        "schema_version": 2, "name": "timed", "horizon": {"slots": 4, "slot_hours": 1.0},
        "load_quantum_pflop_per_hour": 0.5,
        "weights": {"carbon_price_cny_per_t_co2": 100.0},
        "regions": [
            {"id": "east", "jurisdiction": "e", "lat": 31.0, "lon": 121.0, "pue": 1.0,
             "electricity_price_cny_per_kwh": 0.8,
             "electricity_price_by_slot_cny_per_kwh": [1.0, 1.0, 0.5, 0.5],
             "tariff_periods": "PPVV", "carbon_g_co2_per_kwh": 500.0,
             "pools": [pool("east-a", 2, 10.0)]},
            {"id": "west", "jurisdiction": "w", "lat": 26.0, "lon": 106.0, "pue": 1.0,
             "electricity_price_cny_per_kwh": 0.2, "carbon_g_co2_per_kwh": 100.0,
             "pools": [pool("west-a", 4, 5.0, [{"start_slot": 3, "end_slot": 4, "gpus": 2}])]},
        ],
        "links": [{"source": "east", "target": "west", "latency_ms": 10.0, "bandwidth_gbps": 1.0,
                   "transfer_cost_cny_per_gb": 0.1}],
        "demands": [
            {"id": "b1", "origin": "east", "work_pflop": 540.0, "must_serve": True},
            {"id": "b2", "origin": "east", "work_pflop": 720.0, "gang_size": 2, "data_gb": 450.0},
            {"id": "b3", "origin": "west", "work_pflop": 720.0, "gang_size": 4,
             "unserved_penalty_cny": 5.0},
            {"id": "s1", "kind": "service", "origin": "east", "precision": "fp32",
             "strict_precision": True, "load_pflop_per_hour": [1.0, 2.0, 2.0, 1.0],
             "traffic_gbps": 0.4, "unserved_penalty_cny_per_pflop": 10.0},
        ],
    }
    data.update(changes)
    return Instance.model_validate(data)


def demand_changed(inst: Instance, demand: str, **changes) -> Instance:
    rows = tuple(d.model_copy(update=changes) if d.id == demand else d for d in inst.demands)
    return inst.model_copy(update={"demands": rows})


def with_links(inst: Instance, *links: dict) -> Instance:
    data = inst.model_dump(mode="json")
    data["links"] = list(links)
    return Instance.model_validate(data)


def region_added(inst: Instance, region_id: str) -> dict:
    data = inst.model_dump(mode="json")
    data["regions"].append({"id": region_id, "jurisdiction": "m", "lat": 28.0, "lon": 110.0,
                            "pue": 1.0, "electricity_price_cny_per_kwh": 0.3,
                            "carbon_g_co2_per_kwh": 300.0})
    return data


def link(a: str, b: str, ms: float, cny: float, gbps: float = 1.0, by_slot=None) -> dict:
    row = {"source": a, "target": b, "latency_ms": ms, "bandwidth_gbps": gbps,
           "transfer_cost_cny_per_gb": cny}
    if by_slot is not None:
        row["bandwidth_by_slot_gbps"] = by_slot
    return row


B1 = Assignment(demand="b1", region="east", pool="east-a", precision="bf16", gpu_hours=1.5,
                latency_ms=1.0, energy_kwh=1.5, co2_kg=0.75, compute_cny=15.0, energy_cny=0.75,
                transfer_cny=0.0, carbon_cny=0.075, cost_cny=15.825, start_slot=2, end_slot=4)
B2 = Assignment(demand="b2", region="west", pool="west-a", precision="bf16", gpu_hours=2.0,
                latency_ms=10.0, energy_kwh=2.0, co2_kg=0.2, compute_cny=10.0, energy_cny=0.4,
                transfer_cny=45.0, carbon_cny=0.02, cost_cny=55.42, start_slot=2, end_slot=3,
                route=("east", "west"))
S1_EAST = ServicePlacement(region="east", pool="east-a", precision="fp32", latency_ms=1.0,
                           route=("east",), replicas=(1, 1, 0, 0),
                           served_pflop_per_hour=(1.0, 1.5, 0.0, 0.0), gpu_hours=2.0,
                           energy_kwh=2.0, co2_kg=1.0, compute_cny=20.0, energy_cny=2.0,
                           transfer_cny=0.0, carbon_cny=0.1, cost_cny=22.1)
S1_WEST = ServicePlacement(region="west", pool="west-a", precision="fp32", latency_ms=10.0,
                           route=("east", "west"), replicas=(0, 0, 1, 1),
                           served_pflop_per_hour=(0.0, 0.0, 1.5, 1.0), gpu_hours=2.0,
                           energy_kwh=2.0, co2_kg=0.2, compute_cny=10.0, energy_cny=0.4,
                           transfer_cny=22.5, carbon_cny=0.02, cost_cny=32.92)
S1 = ServicePlan(demand="s1", placements=(S1_EAST, S1_WEST),
                 unserved_pflop_per_hour=(0.0, 0.5, 0.5, 0.0), unserved_pflop=1.0,
                 penalty_cny=10.0)
POOLS = (
    PoolUsage(region="east", pool="east-a", accelerator="A100", used_gpu_hours=3.5,
              capacity_gpu_hours=8.0, utilization=3.5 / 8, gpus_by_slot=(1, 1, 1, 1),
              available_by_slot=(2, 2, 2, 2)),
    PoolUsage(region="west", pool="west-a", accelerator="A100", used_gpu_hours=4.0,
              capacity_gpu_hours=14.0, utilization=4 / 14, gpus_by_slot=(0, 0, 3, 1),
              available_by_slot=(4, 4, 4, 2)),
)
LINKS = (LinkLoad(source="east", target="west", load_gbps=(0.5, 0.5, 0.3, 0.2),
                  bandwidth_gbps=(1.0, 1.0, 1.0, 1.0), peak_utilization=0.5),)
COSTS = CostBreakdown(compute_cny=55.0, energy_cny=3.55, transfer_cny=67.5, carbon_cny=0.215,
                      unserved_penalty_cny=15.0, energy_kwh=7.5, co2_t=0.00215,
                      energy_by_period_kwh={"peak": 2.0, "valley": 1.5, "flat": 4.0},
                      energy_by_period_cny={"peak": 2.0, "valley": 0.75, "flat": 0.8})


def plan(**changes) -> Plan:
    """The plan of the module docstring, with top-level fields replaced."""
    fields = dict(
        schema_version=2, instance="timed", status=Status.FEASIBLE, objective=OBJECTIVE,
        lower_bound=None, gap=None, costs=COSTS, assignments=(B1, B2),
        unserved=(Unserved(demand="b3", reason=Reason.UNECONOMIC, penalty_cny=5.0),),
        pools=POOLS, services=(S1,), links=LINKS,
        stats={"engine": "hand", "solver_status": "", "wall_time_s": 0},
    )
    fields.update(changes)
    return Plan(**fields)


def found(inst: Instance, p: Plan) -> dict[tuple[str, str], float]:
    """(code, subject) -> amount for every violation."""
    return {(v.code, v.subject): v.amount for v in verify(inst, p).violations}


def approx(expected: dict) -> dict:
    return {key: pytest.approx(value) for key, value in expected.items()}


def batch(a: Assignment, **changes) -> Assignment:
    return a.model_copy(update=changes)


def service(**changes) -> ServicePlan:
    return S1.model_copy(update=changes)


def east(**changes) -> ServicePlacement:
    return S1_EAST.model_copy(update=changes)


def west(**changes) -> ServicePlacement:
    return S1_WEST.model_copy(update=changes)


# --- the hand-derived plan -----------------------------------------------------------------------


def test_hand_plan_verifies():
    """The plan of the module docstring is clean and recomputes to 141.265."""
    result = verify(instance(), plan())
    assert result.violations == ()
    assert result.objective == pytest.approx(OBJECTIVE, abs=1e-9)


def test_plan_over_a_horizon_has_schema_version_2():
    """A version-1 plan for an instance with a horizon is flagged (amount 1)."""
    assert found(instance(), plan(schema_version=1)) == {("mismatch:schema_version", "schema_version"): 1}


# --- batch jobs in time --------------------------------------------------------------------------


def test_start_before_release():
    """b1 released at slot 3 but started at 2: early by 1 slot; n = 2 from slot 3 passes the
    end of the horizon (3 + 2 > 4), so the pool also fails the window rule by 1 slot."""
    got = found(demand_changed(instance(), "b1", release_slot=3), plan())
    assert got == {("early_start", "b1"): 1, ("ineligible:window", "b1"): 1}


def test_start_after_release_is_allowed_without_data():
    """b1 (no data) released at slot 2 may start at 2: delta is 0."""
    assert found(demand_changed(instance(), "b1", release_slot=2), plan()) == {}


def test_data_needs_a_slot_before_the_start():
    """b2's data moves, so its earliest start is release + 1. Released at 1, the start at 2 is
    allowed and the data crosses in slot 1 alone: 8 x 450 / 3600 = 1 Gbps (load 0, 1, 0.3, 0.2:
    the plan's 0.5, 0.5 are off by 0.5, peak 1 not 0.5). Released at 2, it is early by 1 and no
    slot is left to move the data: the 0.5 Gbps of slots 0-1 vanish (peak 0.3 instead of 0.5)."""
    got = found(demand_changed(instance(), "b2", release_slot=1), plan())
    assert got == approx({("mismatch:load_gbps", "east-west"): 0.5,
                          ("mismatch:peak_utilization", "east-west"): 0.5})
    got = found(demand_changed(instance(), "b2", release_slot=2), plan())
    assert got == approx({("early_start", "b2"): 1, ("mismatch:load_gbps", "east-west"): 0.5,
                          ("mismatch:peak_utilization", "east-west"): 0.2})


def test_finish_after_deadline():
    """b1 runs slots 2-3 (ends at 4) against a deadline slot of 3: late by 1 slot."""
    got = found(demand_changed(instance(), "b1", deadline_slot=3), plan())
    assert got == {("late_finish", "b1"): 1}


def test_window_rule_amount():
    """b1 with release 2 and deadline 3: one slot for a 2-slot run, short by 2 + 2 - 3 = 1."""
    got = found(demand_changed(instance(), "b1", release_slot=2, deadline_slot=3), plan())
    assert got == {("ineligible:window", "b1"): 1, ("late_finish", "b1"): 1}


def test_end_slot_is_start_plus_run():
    """b1 takes n = 2 slots from 2: an end_slot of 3 (an interrupted or cut run) is off by 1."""
    got = found(instance(), plan(assignments=(batch(B1, end_slot=3), B2)))
    assert got == {("mismatch:end_slot", "b1"): 1}


def test_missing_start():
    """An assignment over a horizon without a start slot is flagged; it adds no GPUs or cost,
    so east-a's slots 2-3 hold 0 (off by 1) and the totals lose b1's 15.825."""
    got = found(instance(), plan(assignments=(batch(B1, start_slot=None, end_slot=None), B2)))
    assert got[("missing_start", "b1")] == 1
    assert got[("mismatch:gpus_by_slot", "east-a")] == 1
    assert got[("mismatch:objective", "objective")] == pytest.approx(15.825)


def test_energy_follows_the_tariff():
    """b1 moved to slots 0-1 (peak, 1 CNY/kWh): energy 1.5 instead of 0.75, and the report of the
    valley start is off by 0.75; its carbon is the same (500 g/kWh in every slot)."""
    got = found(instance(), plan(assignments=(batch(B1, start_slot=0, end_slot=2), B2)))
    assert got[("mismatch:energy_cny", "b1")] == pytest.approx(0.75)
    assert got[("mismatch:cost_cny", "b1")] == pytest.approx(0.75)
    assert ("mismatch:co2_kg", "b1") not in got
    # By period: peak gains 1.5 kWh (3.5 instead of 2), valley loses it (0 instead of 1.5).
    assert got[("mismatch:costs.energy_by_period_kwh.peak", "costs")] == pytest.approx(1.5)
    assert got[("mismatch:costs.energy_by_period_kwh.valley", "costs")] == pytest.approx(1.5)


def test_carbon_follows_the_slot_intensity():
    """West's grid at 150 g/kWh in slot 2 only: b2 emits 2 x 150 = 300 g (0.3 kg, not 0.2) and
    s1's west replica 1 x 150 + 1 x 100 = 250 g (0.25 kg, not 0.2)."""
    data = instance().model_dump(mode="json")
    data["regions"][1]["carbon_by_slot_g_co2_per_kwh"] = [100.0, 100.0, 150.0, 100.0]
    got = found(Instance.model_validate(data), plan())
    assert got[("mismatch:co2_kg", "b2")] == pytest.approx(0.1)
    assert got[("mismatch:co2_kg", "s1")] == pytest.approx(0.05)


def test_price_cap_at_the_chosen_start():
    """b1's price at slot 2 is 15 + 0.75 = 15.75: a cap of 15.5 rejects it by 0.25 (a start at
    slot 0 would cost 16.5); a cap of 15.75 passes."""
    got = found(demand_changed(instance(), "b1", max_cost_cny=15.5), plan())
    assert got == approx({("ineligible:price_cap", "b1"): 0.25})
    assert found(demand_changed(instance(), "b1", max_cost_cny=15.75), plan()) == {}


# --- pools in time -------------------------------------------------------------------------------


def test_gpus_over_avail_after_an_outage():
    """west-a's outage of 2 GPUs from slot 2 (not 3): avail 4, 4, 2, 2; slot 2 holds b2's 2 and
    s1's 1 = 3: over by 1 GPU. The row's availability is off by 2 at slot 2, capacity 12 not 14,
    utilization 4 / 12 not 4 / 14 (by 1/21)."""
    data = instance().model_dump(mode="json")
    data["regions"][1]["pools"][0]["outages"] = [{"start_slot": 2, "end_slot": 4, "gpus": 2}]
    got = found(Instance.model_validate(data), plan())
    assert got == approx({("over_gpus", "west-a@2"): 1,
                          ("mismatch:available_by_slot", "west-a"): 2,
                          ("mismatch:capacity_gpu_hours", "west-a"): 2,
                          ("mismatch:utilization", "west-a"): 4 / 12 - 4 / 14})


def test_services_replicas_count_against_the_pool():
    """Two replicas of s1 on west-a in slot 3 (avail 2) with b2 gone from slot 2: 2 GPUs fit; three
    do not: over by 1 (the replicas serve no more than before, 1 PFLOP/h)."""
    three = west(replicas=(0, 0, 1, 3), gpu_hours=4.0, energy_kwh=4.0, co2_kg=0.4,
                 compute_cny=20.0, energy_cny=0.8, carbon_cny=0.04, cost_cny=43.34)
    pools = (POOLS[0], POOLS[1].model_copy(update={"used_gpu_hours": 6.0, "utilization": 6 / 14,
                                                   "gpus_by_slot": (0, 0, 3, 3)}))
    costs = COSTS.model_copy(update={
        "compute_cny": 65.0, "energy_cny": 3.95, "carbon_cny": 0.235, "energy_kwh": 9.5,
        "co2_t": 0.00235, "energy_by_period_kwh": {"peak": 2.0, "valley": 1.5, "flat": 6.0},
        "energy_by_period_cny": {"peak": 2.0, "valley": 0.75, "flat": 1.2}})
    p = plan(services=(service(placements=(S1_EAST, three)),), pools=pools, costs=costs,
             objective=OBJECTIVE + 10.42)
    assert found(instance(), p) == {("over_gpus", "west-a@3"): 1}


def test_pool_row_series():
    """A wrong GPU count in one slot is off by its difference; a missing series by its length."""
    rows = (POOLS[0].model_copy(update={"gpus_by_slot": (1, 1, 2, 1)}),
            POOLS[1].model_copy(update={"available_by_slot": None}))
    got = found(instance(), plan(pools=rows))
    assert got == {("mismatch:gpus_by_slot", "east-a"): 1,
                   ("mismatch:available_by_slot", "west-a"): 4}


def test_used_gpu_hours_count_batch_usage_and_rented_replicas():
    """east-a uses b1's 1.5 GPU-h and s1's 2 replica-hours: 3.5 (reporting the held 4 is off by 0.5)."""
    rows = (POOLS[0].model_copy(update={"used_gpu_hours": 4.0, "utilization": 0.5}), POOLS[1])
    got = found(instance(), plan(pools=rows))
    assert got == approx({("mismatch:used_gpu_hours", "east-a"): 0.5,
                          ("mismatch:utilization", "east-a"): 0.0625})


# --- links and routes ----------------------------------------------------------------------------


def test_batch_data_over_bandwidth():
    """east-west at 0.4 Gbps in slot 0: b2's 0.5 Gbps is over by 0.1; the row's bandwidth is off
    by 0.6 and its peak utilization 0.5 / 0.4 = 1.25 by 0.75."""
    inst = with_links(instance(), link("east", "west", 10.0, 0.1, by_slot=[0.4, 1.0, 1.0, 1.0]))
    got = found(inst, plan())
    assert got == approx({("over_bandwidth", "east-west@0"): 0.1,
                          ("mismatch:bandwidth_gbps", "east-west"): 0.6,
                          ("mismatch:peak_utilization", "east-west"): 0.75})


def test_service_traffic_over_bandwidth():
    """s1 serves 3 quanta from west in slot 2: 3 x 10^5 quanta = 0.3 Gbps on a 0.25 Gbps slot:
    over by 0.05; peak utilization 0.3 / 0.25 = 1.2 (reported 0.5)."""
    inst = with_links(instance(), link("east", "west", 10.0, 0.1, by_slot=[1.0, 1.0, 0.25, 1.0]))
    got = found(inst, plan())
    assert got == approx({("over_bandwidth", "east-west@2"): 0.05,
                          ("mismatch:bandwidth_gbps", "east-west"): 0.75,
                          ("mismatch:peak_utilization", "east-west"): 0.7})


def test_rate_is_rounded_up_to_whole_quanta():
    """450 GB over 2 slots is 500,000 quanta exactly; a capacity of 499,999.5 quanta (floored to
    499,999) is over by one quantum, 1e-6 Gbps."""
    bw = 0.4999995
    inst = with_links(instance(), link("east", "west", 10.0, 0.1, gbps=bw))
    got = found(inst, plan())
    assert got[("over_bandwidth", "east-west@0")] == pytest.approx(1e-6)
    assert got[("over_bandwidth", "east-west@1")] == pytest.approx(1e-6)
    # 449.999 GB over 2 slots: 8 x 449.999 / 7200 / 1e-6 = 499,998.9 quanta, rounded up to
    # 499,999, one over a 0.499998 Gbps link (the other figures of b2 change too).
    inst = demand_changed(with_links(instance(), link("east", "west", 10.0, 0.1, gbps=0.499998)),
                          "b2", data_gb=449.999)
    got = found(inst, plan())
    assert got[("over_bandwidth", "east-west@0")] == pytest.approx(1e-6)
    assert got[("over_bandwidth", "east-west@1")] == pytest.approx(1e-6)


def test_link_rows():
    """A load off by 0.1 in one slot, an unknown link, a duplicate row, a missing row."""
    off = LINKS[0].model_copy(update={"load_gbps": (0.5, 0.5, 0.4, 0.2)})
    got = found(instance(), plan(links=(off,)))
    assert got == approx({("mismatch:load_gbps", "east-west"): 0.1})
    ghost = LinkLoad(source="east", target="mars", load_gbps=(0, 0, 0, 0),
                     bandwidth_gbps=(1, 1, 1, 1), peak_utilization=0)
    got = found(instance(), plan(links=(LINKS[0], LINKS[0], ghost)))
    assert got == {("duplicate_link", "east-west"): 1, ("unknown_link", "east-mars"): 1}
    # Without the row: the peak, 0.5 Gbps, carried without a row.
    assert found(instance(), plan(links=())) == approx({("missing_link_load", "east-west"): 0.5})


def test_a_row_may_name_the_link_backwards():
    """Links are undirected: a row west-east is the east-west link."""
    back = LINKS[0].model_copy(update={"source": "west", "target": "east"})
    assert found(instance(), plan(links=(back,))) == {}


def tied_instance(ms: float = 5.0, cny: float = 0.05) -> Instance:
    """east-mid-west beside the direct link: 2 x 5 ms and 2 x 0.05 CNY/GB tie with 10 ms, 0.1."""
    data = region_added(instance(), "mid")
    data["links"] = [link("east", "west", 10.0, 0.1), link("east", "mid", ms, cny),
                     link("mid", "west", ms, cny)]
    return Instance.model_validate(data)


def test_tied_route_is_accepted_and_loads_its_own_links():
    """b2 over east-mid-west (a tie): no route violation; its 0.5 Gbps leaves east-west (load 0 in
    slots 0-1, peak 0.3) and lies on the two mid links, which have no row."""
    p = plan(assignments=(B1, batch(B2, route=("east", "mid", "west"))))
    assert found(tied_instance(), plan()) == {}
    got = found(tied_instance(), p)
    assert got == approx({("mismatch:load_gbps", "east-west"): 0.5,
                          ("mismatch:peak_utilization", "east-west"): 0.2,
                          ("missing_link_load", "east-mid"): 0.5,
                          ("missing_link_load", "mid-west"): 0.5})


@pytest.mark.parametrize(("ms", "cny", "code", "amount"), [
    (6.0, 0.05, "route_not_shortest", 2.0),  # 12 ms against 10
    (5.0, 0.06, "route_not_cheapest", 0.02),  # 10 ms tie, 0.12 CNY/GB against 0.1
])
def test_route_not_the_lexicographic_minimum(ms, cny, code, amount):
    """A route through mid that loses on latency, or ties on it and loses on cost."""
    p = plan(assignments=(B1, batch(B2, route=("east", "mid", "west"))),
             links=(LINKS[0].model_copy(update={"load_gbps": (0, 0, 0.3, 0.2),
                                                "peak_utilization": 0.3}),
                    LinkLoad(source="east", target="mid", load_gbps=(0.5, 0.5, 0, 0),
                             bandwidth_gbps=(1, 1, 1, 1), peak_utilization=0.5),
                    LinkLoad(source="mid", target="west", load_gbps=(0.5, 0.5, 0, 0),
                             bandwidth_gbps=(1, 1, 1, 1), peak_utilization=0.5)))
    assert found(tied_instance(ms, cny), p) == approx({(code, "b2"): amount})


@pytest.mark.parametrize("route", [None, ("east",), ("west", "east"), ("east", "mars", "west"),
                                   ("east", "west", "east", "west")])
def test_invalid_route(route):
    """No route, a route that stops short, runs backwards, crosses no link or loops: invalid; its
    data then loads no link (east-west loses 0.5 Gbps in slots 0-1, peak 0.3 not 0.5)."""
    got = found(instance(), plan(assignments=(B1, batch(B2, route=route))))
    assert got == approx({("invalid_route", "b2"): 1, ("mismatch:load_gbps", "east-west"): 0.5,
                          ("mismatch:peak_utilization", "east-west"): 0.2})


# --- services ------------------------------------------------------------------------------------


def test_served_at_most_kappa_times_replicas():
    """s1 serves 2 PFLOP/h (4 quanta) from one east replica of 3 in slot 1: over by 0.5 PFLOP/h.
    The plan's unserved figures follow (slot 1 fully served: 0.5 PFLOP, penalty 5)."""
    p = plan(services=(service(
        placements=(east(served_pflop_per_hour=(1.0, 2.0, 0.0, 0.0)), S1_WEST),
        unserved_pflop_per_hour=(0.0, 0.0, 0.5, 0.0), unserved_pflop=0.5, penalty_cny=5.0),),
        costs=COSTS.model_copy(update={"unserved_penalty_cny": 10.0}), objective=OBJECTIVE - 5)
    assert found(instance(), p) == approx({("over_replicas", "s1/east-a@1"): 0.5})


def test_served_at_most_the_load():
    """s1 serves 1.5 PFLOP/h (3 quanta) in slot 0 against a load of 2 quanta: over by 0.5."""
    p = plan(services=(service(placements=(east(served_pflop_per_hour=(1.5, 1.5, 0, 0)),
                                           S1_WEST)),))
    assert found(instance(), p) == approx({("over_load", "s1@0"): 0.5})


def test_served_in_whole_quanta():
    """0.75 PFLOP/h is 1.5 quanta of 0.5: off the nearest quantum by 0.25."""
    p = plan(services=(service(placements=(east(served_pflop_per_hour=(0.75, 1.5, 0, 0)),
                                           S1_WEST)),))
    got = found(instance(), p)
    assert got[("load_not_in_quanta", "s1/east-a@0")] == pytest.approx(0.25)


def test_negative_replicas_and_served():
    """-1 replicas and -0.5 PFLOP/h are flagged by their size."""
    p = plan(services=(service(placements=(
        east(replicas=(1, 1, -1, 0), served_pflop_per_hour=(1.0, 1.5, -0.5, 0)), S1_WEST)),))
    got = found(instance(), p)
    assert got[("negative_replicas", "s1/east-a@2")] == 1
    assert got[("negative_served", "s1/east-a@2")] == pytest.approx(0.5)


def test_load_is_counted_in_quanta_rounded_up():
    """A load of 1.1 PFLOP/h in slot 0 is ceil(2.2) = 3 quanta: 1 quantum unserved there (0.5
    PFLOP/h), so the plan's unserved figures are off by 0.5 and its penalty by 5."""
    inst = demand_changed(instance(), "s1", load_pflop_per_hour=(1.1, 2.0, 2.0, 1.0))
    got = found(inst, plan())
    assert got[("mismatch:unserved_pflop_per_hour", "s1")] == pytest.approx(0.5)
    assert got[("mismatch:unserved_pflop", "s1")] == pytest.approx(0.5)
    assert got[("mismatch:penalty_cny", "s1")] == pytest.approx(5.0)


def test_service_only_on_eligible_pools():
    """s1 within 5 ms of east: west (10 ms) fails latency by 5; on a jurisdiction list of east
    only, west fails jurisdiction (amount 1)."""
    got = found(demand_changed(instance(), "s1", max_latency_ms=5.0), plan())
    assert got == {("ineligible:latency", "s1"): 5}
    got = found(demand_changed(instance(), "s1", jurisdictions=("e",)), plan())
    assert got == {("ineligible:jurisdiction", "s1"): 1}


def test_service_precision_reported():
    """s1 runs at FP32 (strict): a placement reporting BF16 is a mismatch."""
    p = plan(services=(service(placements=(east(precision="bf16"), S1_WEST)),))
    assert found(instance(), p) == {("mismatch:precision", "s1"): 1}


@pytest.mark.parametrize(("field", "value", "diff"), [
    ("gpu_hours", 3.0, 1.0),  # 2 replica-slots x 1 GPU x 1 h = 2
    ("energy_kwh", 1.0, 1.0),  # 2 GPU-h x 1 kW x PUE 1
    ("co2_kg", 0.5, 0.5),  # 2 kWh x 500 g = 1 kg
    ("compute_cny", 10.0, 10.0),  # 2 x 10
    ("energy_cny", 1.6, 0.4),  # slots 0-1 at 1 CNY/kWh = 2 (0.8 is the unused flat price)
    ("carbon_cny", 0.0, 0.1),  # 1 kg = 0.001 t x 100
    ("cost_cny", 22.0, 0.1),
    ("latency_ms", 0.0, 1.0),  # the city circle
])
def test_placement_figure_mismatch(field, value, diff):
    """Each misreported figure of s1's east placement is flagged by its difference."""
    p = plan(services=(service(placements=(east(**{field: value}), S1_WEST)),))
    assert found(instance(), p) == approx({(f"mismatch:{field}", "s1"): diff})


def test_service_transfer_follows_the_served_load():
    """s1's west placement: 5 quanta x 45 GB x 0.1 = 22.5; reporting 0 is off by 22.5."""
    p = plan(services=(service(placements=(S1_EAST, west(transfer_cny=0.0))),))
    assert found(instance(), p) == approx({("mismatch:transfer_cny", "s1"): 22.5})


def test_service_unserved_figures():
    """Unserved load 0, 0.5, 0.5, 0 PFLOP/h: 1 PFLOP, penalty 10 x 1 = 10."""
    p = plan(services=(service(unserved_pflop_per_hour=(0, 0.5, 0, 0), unserved_pflop=2.0,
                               penalty_cny=20.0),))
    assert found(instance(), p) == approx({("mismatch:unserved_pflop_per_hour", "s1"): 0.5,
                                           ("mismatch:unserved_pflop", "s1"): 1.0,
                                           ("mismatch:penalty_cny", "s1"): 10.0})


def test_wrong_number_of_slots():
    """Three replica values for four slots: one missing (the fourth counts as 0)."""
    p = plan(services=(service(placements=(east(replicas=(1, 1, 0)), S1_WEST)),))
    assert found(instance(), p) == {("wrong_slot_count", "s1"): 1}


def test_every_service_exactly_once_in_services():
    """s1 missing from services; listed twice; listed as an assignment or as unserved; a batch
    demand listed as a service."""
    no_service = plan(services=(), costs=COSTS, objective=OBJECTIVE)
    got = found(instance(), no_service)
    assert got[("missing_demand", "s1")] == 1
    twice = found(instance(), plan(services=(S1, S1)))
    assert twice[("duplicate_demand", "s1")] == 1
    fake = batch(B1, demand="s1")
    got = found(instance(), plan(assignments=(B1, B2, fake)))
    assert got[("wrong_kind", "s1")] == 1 and got[("duplicate_demand", "s1")] == 1
    got = found(instance(), plan(unserved=plan().unserved + (
        Unserved(demand="s1", reason=Reason.CAPACITY, penalty_cny=0),)))
    assert got[("wrong_kind", "s1")] == 1
    as_service = ServicePlan(demand="b3", unserved_pflop_per_hour=(0, 0, 0, 0), unserved_pflop=0,
                             penalty_cny=0)
    got = found(instance(), plan(services=(S1, as_service)))
    assert got == {("wrong_kind", "b3"): 1, ("duplicate_demand", "b3"): 1}


def test_duplicate_placement():
    """Two placements of s1 on east-a are one too many."""
    got = found(instance(), plan(services=(service(placements=(S1_EAST, S1_EAST, S1_WEST)),)))
    assert got[("duplicate_placement", "s1")] == 1


# --- the carbon cap, totals and reasons ----------------------------------------------------------


def test_carbon_cap_in_grams():
    """2150 g against a cap of 0.002 t = 2000 g: over by 150 g; a cap of 2150 g passes."""
    assert found(instance(carbon_cap_t_co2=0.002), plan()) == approx(
        {("over_carbon_cap", "carbon_cap_t_co2"): 150})
    assert found(instance(carbon_cap_t_co2=0.00215), plan()) == {}


def test_carbon_cap_rounds_each_choice_up():
    """West at 100.1 g/kWh: b2 and s1's west replicas emit 200.2 g each, 201 g rounded up; with
    b1's 750 and east's 1000: 2152 g, over a cap of 2151 g by 1 (unrounded, 2150.4 would pass)."""
    data = instance(carbon_cap_t_co2=0.002151).model_dump(mode="json")
    data["regions"][1]["carbon_g_co2_per_kwh"] = 100.1
    got = found(Instance.model_validate(data), plan())
    assert got[("over_carbon_cap", "carbon_cap_t_co2")] == pytest.approx(1)


def test_totals_and_periods():
    """The breakdown sums batch jobs and placements; each tariff period is checked by name."""
    costs = COSTS.model_copy(update={
        "compute_cny": 35.0,  # without the services' 20 + 10
        "energy_by_period_kwh": {"peak": 2.0, "valley": 1.5, "flat": 4.0, "critical": 1.0},
        "energy_by_period_cny": {"peak": 2.0, "valley": 0.75}})  # flat's 0.8 left out
    got = found(instance(), plan(costs=costs))
    assert got == approx({("mismatch:costs.compute_cny", "costs"): 20.0,
                          ("mismatch:costs.energy_by_period_kwh.critical", "costs"): 1.0,
                          ("mismatch:costs.energy_by_period_cny.flat", "costs"): 0.8})
    got = found(instance(), plan(objective=OBJECTIVE + 1))
    assert got == approx({("mismatch:objective", "objective"): 1.0})


def test_gap_and_bound():
    """A bound of 140: gap (141.265 - 140) / 141.265; reported 0, flagged by that much."""
    got = found(instance(), plan(lower_bound=140.0, gap=0.0))
    assert got == approx({("mismatch:gap", "gap"): 1.265 / 141.265})


def test_unserved_reasons_over_a_horizon():
    """b3 costs 10.42 on west-a at any start (penalty 5): uneconomic, not capacity. Released at 3
    with 2160 PFLOP (6 GPU-h on 4 GPUs: 1.5 h, 2 slots), no start fits: its nearest miss is the
    window rule (east-a fails gang, rule 2)."""
    reasons = lambda r: (Unserved(demand="b3", reason=r, penalty_cny=5.0),)  # noqa: E731
    assert found(instance(), plan(unserved=reasons(Reason.CAPACITY))) == {("wrong_reason", "b3"): 1}
    late = demand_changed(instance(), "b3", release_slot=3, work_pflop=2160.0)
    assert found(late, plan(unserved=reasons(Reason.WINDOW))) == {}
    assert found(late, plan(unserved=reasons(Reason.UNECONOMIC))) == {("wrong_reason", "b3"): 1}


def test_cheap_unserved_may_blame_the_carbon_cap_only_with_a_cap():
    """b3 at penalty 50 (above its 10.42): capacity fits; carbon_cap only with a cap set; the
    objective rises by 45 in both."""
    inst = demand_changed(instance(), "b3", unserved_penalty_cny=50.0)
    costs = COSTS.model_copy(update={"unserved_penalty_cny": 60.0})
    for reason, cap, ok in ((Reason.CAPACITY, None, True), (Reason.CARBON_CAP, None, False),
                            (Reason.CARBON_CAP, 1.0, True), (Reason.BANDWIDTH, None, False)):
        p = plan(unserved=(Unserved(demand="b3", reason=reason, penalty_cny=50.0),), costs=costs,
                 objective=OBJECTIVE + 45)
        target = inst if cap is None else inst.model_copy(update={"carbon_cap_t_co2": cap})
        assert (found(target, p) == {}) is ok


def test_unsolved_plan_over_a_horizon():
    """An unknown plan: every batch demand not_solved, s1 with no placements and its full load
    unserved (6 PFLOP, penalty 60); clean, with no objective."""
    s1 = ServicePlan(demand="s1", unserved_pflop_per_hour=(1.0, 2.0, 2.0, 1.0), unserved_pflop=6.0,
                     penalty_cny=60.0)
    rows = tuple(Unserved(demand=d, reason=Reason.NOT_SOLVED, penalty_cny=pi)
                 for d, pi in (("b1", 0.0), ("b2", 0.0), ("b3", 5.0)))
    p = plan(status=Status.UNKNOWN, objective=None, assignments=(), unserved=rows, services=(s1,),
             pools=(), links=(), costs=CostBreakdown())
    result = verify(instance(), p)
    assert result.violations == () and result.objective is None
    placed = p.model_copy(update={"services": (s1.model_copy(update={"placements": (S1_EAST,)}),)})
    assert ("assignment_without_solution", "s1") in found(instance(), placed)


# --- random instances and decisions --------------------------------------------------------------


@st.composite
def decisions(draw, inst: Instance) -> Plan:
    """A plan of random decisions over a horizon (any pool, start, route, replicas and served load;
    every figure 0): mostly wrong, for the verifier to judge without raising."""
    slots = inst.horizon.slots
    pools = [(r.id, p.id) for r in inst.regions for p in r.pools]
    assignments, unserved, services = [], [], []
    zero = dict(gpu_hours=0, latency_ms=0, energy_kwh=0, co2_kg=0, compute_cny=0, energy_cny=0,
                transfer_cny=0, carbon_cny=0, cost_cny=0)
    for d in inst.demands:
        if d.kind == "service":
            placements = []
            for region, pool_id in draw(st.lists(st.sampled_from(pools), max_size=2)):
                row = st.lists(st.integers(-1, 3), min_size=slots - 1, max_size=slots + 1)
                served = st.lists(st.integers(-1, 8).map(lambda u: u * 0.05), min_size=slots,
                                  max_size=slots)
                placements.append(ServicePlacement(
                    region=region, pool=pool_id, precision=d.precision, route=(d.origin, region),
                    replicas=tuple(draw(row)), served_pflop_per_hour=tuple(draw(served)), **zero))
            services.append(ServicePlan(demand=d.id, placements=tuple(placements),
                                        unserved_pflop_per_hour=(0.0,) * slots, unserved_pflop=0,
                                        penalty_cny=0))
        elif draw(st.booleans()):
            region, pool_id = draw(st.sampled_from(pools))
            start = draw(st.integers(0, slots + 1))
            assignments.append(Assignment(
                demand=d.id, region=region, pool=pool_id, precision=d.precision,
                start_slot=start, end_slot=start + draw(st.integers(1, 3)),
                route=draw(st.sampled_from([None, (d.origin,), (d.origin, region)])), **zero))
        else:
            unserved.append(Unserved(demand=d.id, reason=draw(st.sampled_from(list(Reason))),
                                     penalty_cny=0))
    return Plan(schema_version=2, instance=inst.name, status=Status.FEASIBLE, objective=0,
                lower_bound=None, gap=None, assignments=tuple(assignments),
                unserved=tuple(unserved), services=tuple(services),
                stats={"engine": "hypothesis", "solver_status": "", "wall_time_s": 0})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_random_decisions_are_judged_without_raising(data):
    """Random plans over random horizon instances give violations, never exceptions; each amount
    is finite and non-negative, each code a short snake_case word (with a rule or field)."""
    inst = data.draw(timed_instances(max_demands=5, max_slots=6))
    result = verify(inst, data.draw(decisions(inst)))
    for v in result.violations:
        assert math.isfinite(v.amount) and v.amount >= 0, v
        assert re.fullmatch(r"[a-z0-9_]+(:[a-z0-9_.]+)?", v.code), v.code
    assert result.objective is not None


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_timed_instances_checks_its_arguments():
    """Bad ranges are refused with Hypothesis's InvalidArgument."""
    for kwargs in ({"min_slots": 0}, {"max_slots": 2, "min_slots": 3},
                   {"max_slots": 10**6}, {"min_demands": 0}):
        with pytest.raises(InvalidArgument):
            timed_instances(**kwargs).example()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(timed_instances(max_demands=6, max_slots=8, connected=True))
def test_solved_horizon_plans_pass_the_verifier(inst):
    """Every plan solve() returns over a random horizon instance passes the verifier (solve raises
    VerificationError otherwise); a must-serve job that fits no window is refused as a RangeError."""
    from scheduler import SolveParams, solve
    from scheduler.compile import RangeError

    try:
        result = solve(inst, SolveParams(time_limit_s=5, workers=1, seed=0))
    except RangeError:
        return
    assert verify(inst, result.plan).ok


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.data())
def test_drawn_horizon_plans_pass_the_verifier(data):
    """`strategies.plans` over a horizon: every drawn plan passes the verifier unless a must-serve
    job found no room (then only that rule is broken)."""
    from scheduler.strategies import plans

    inst = data.draw(timed_instances(max_demands=5, max_slots=6, connected=True))
    plan = data.draw(plans(inst))
    result = verify(inst, plan)
    must = {d.id for d in inst.demands if d.must_serve}
    left = {u.demand for u in plan.unserved} & must
    assert result.ok or (left and {v.code for v in result.violations} <= {"must_serve_unserved"}), \
        result.violations


@pytest.mark.parametrize("name", ["timed_service_split", "timed_remote_data", "timed_carbon_cap"])
def test_drawn_horizon_plans_place_work(name):
    """The drawn plans are not all empty: on shipped tiny instances some run jobs or serve load,
    and pass the verifier."""
    from hypothesis import find

    from scheduler.strategies import plans

    inst = Instance.model_validate_json((ROOT / "instances" / "tiny" / f"{name}.json").read_text())

    def busy(plan) -> bool:
        return bool(plan.assignments) or any(
            sum(sum(p.served_pflop_per_hour) for p in s.placements) > 0 for s in plan.services)

    plan = find(plans(inst), busy, settings=settings(max_examples=200, deadline=None, database=None,
                                                     derandomize=True))
    assert verify(inst, plan).ok
