"""The option compiler: rules, usage in quanta, costs and routes, with numbers derived by hand."""

from __future__ import annotations

import math

import pytest

from models import Instance, Reason
from scheduler import compile_options, rejections
from scheduler.network import RouteTable


def region(rid: str, *, jurisdiction: str = "A", pools=(), price: float = 0.5, pue: float = 1.2) -> dict:
    return {"id": rid, "jurisdiction": jurisdiction, "lat": 30.0, "lon": 110.0,
            "electricity_price_cny_per_kwh": price, "pue": pue, "carbon_g_co2_per_kwh": 500.0,
            "pools": list(pools)}


def pool(pid: str, *, gpus: int = 8, tflops=None, price: float = 10.0, power: float = 0.5,
         memory: float = 80.0, accelerator: str = "H800") -> dict:
    return {"id": pid, "accelerator": accelerator, "gpu_count": gpus, "memory_gb_per_gpu": memory,
            "tflops_by_precision": tflops or {"bf16": 1000.0, "fp8": 2000.0},
            "power_kw_per_gpu": power, "price_cny_per_gpu_hour": price}


def instance(regions, demands, links=(), **extra) -> Instance:
    return Instance.model_validate({"window_hours": 10.0, "regions": list(regions),
                                    "links": list(links), "demands": list(demands), **extra})


def test_fp8_work_runs_at_bf16_speed_on_a_pool_without_fp8():
    """7200 PFLOP at fp8: 1 GPU-hour at 2000 TFLOPS, 2 GPU-hours on a bf16-only pool at 1000."""
    inst = instance(
        [region("a", pools=[pool("fast"), pool("slow", tflops={"bf16": 1000.0})])],
        [{"id": "d", "origin": "a", "work_pflop": 7200.0, "precision": "fp8"}],
    )
    options = compile_options(inst)
    assert options.units.tolist() == [100, 200]  # quanta of 0.01 GPU-hour
    # cost = usage * (price + power * pue * electricity) = 1 * (10 + 0.5 * 1.2 * 0.5) = 10.3
    assert options.cost.tolist() == pytest.approx([10.3, 20.6])


def test_strict_precision_refuses_the_fallback():
    """A strict fp8 demand cannot run on a pool without fp8."""
    inst = instance(
        [region("a", pools=[pool("slow", tflops={"bf16": 1000.0})])],
        [{"id": "d", "origin": "a", "work_pflop": 7200.0, "precision": "fp8",
          "strict_precision": True}],
    )
    assert compile_options(inst).n_options == 0
    assert rejections(inst, "d") == [("a", "slow", Reason.PRECISION)]


def test_usage_is_rounded_up_to_whole_quanta_with_slack():
    """0.3 GPU-hours is 30 quanta (not 31, despite 0.3/0.01 = 29.999...); 0.301 is 31."""
    inst = instance(
        [region("a", pools=[pool("p", tflops={"bf16": 1000.0})])],
        [{"id": "exact", "origin": "a", "work_pflop": 1080.0},   # 1080e3 / 3.6e6 = 0.3 GPU-h
         {"id": "over", "origin": "a", "work_pflop": 1083.6}],   # 0.301 GPU-h
    )
    assert compile_options(inst).units.tolist() == [30, 31]


def test_capacity_is_gpus_times_window_in_quanta():
    """8 GPUs for 10 hours at 0.01 GPU-hour per quantum: 8000 quanta."""
    inst = instance([region("a", pools=[pool("p")])], [{"id": "d", "origin": "a", "work_pflop": 1.0}])
    assert compile_options(inst).capacity.tolist() == [8000]


def test_first_failed_rule_in_order():
    """Each pool keeps the first rule it fails, in the documented order."""
    inst = instance(
        [region("a", pools=[pool("small", gpus=2), pool("other", accelerator="910B"),
                            pool("tiny-mem", memory=16.0)]),
         region("far", jurisdiction="B", pools=[pool("remote")]),
         region("island", pools=[pool("cut-off")])],
        [{"id": "d", "origin": "a", "work_pflop": 72000.0, "gang_size": 4,
          "accelerators": ["H800"], "min_memory_gb_per_gpu": 40.0, "jurisdictions": ["A"],
          "max_latency_ms": 5.0}],
        links=[{"source": "a", "target": "far", "latency_ms": 3.0, "bandwidth_gbps": 10.0,
                "transfer_cost_cny_per_gb": 0.1}],
    )
    assert rejections(inst, "d") == [
        ("a", "small", Reason.GANG),
        ("a", "other", Reason.ACCELERATOR),
        ("a", "tiny-mem", Reason.MEMORY),
        ("far", "remote", Reason.JURISDICTION),
        ("island", "cut-off", Reason.UNREACHABLE),
    ]
    # Nothing is eligible; the nearest miss is the rule reached furthest: unreachable.
    options = compile_options(inst)
    assert options.n_options == 0
    assert options.nearest_miss.tolist() == [list(Reason).index(Reason.UNREACHABLE)]


def test_latency_deadline_and_price_cap():
    """Latency over the bound, run time over the deadline, and price over the cap are rejected."""
    inst = instance(
        [region("a", pools=[pool("p", gpus=8)]),
         region("b", pools=[pool("q")])],
        [
            # 36000 PFLOP at bf16 = 10 GPU-hours; gang 2 -> 5 hours of run time.
            {"id": "slow", "origin": "a", "work_pflop": 36000.0, "gang_size": 2, "deadline_hours": 4.9},
            {"id": "far", "origin": "b", "work_pflop": 3600.0, "max_latency_ms": 10.0},
            # 1 GPU-hour: 10 + 0.5*1.2*0.5 = 10.30 CNY; data 100 GB at 0.2/GB adds 20 over the link.
            {"id": "dear", "origin": "b", "work_pflop": 3600.0, "data_gb": 100.0,
             "max_cost_cny": 10.3, "jurisdictions": ["A"]},
        ],
        links=[{"source": "a", "target": "b", "latency_ms": 12.0, "bandwidth_gbps": 10.0,
                "transfer_cost_cny_per_gb": 0.2}],
    )
    assert rejections(inst, "slow")[0] == ("a", "p", Reason.DEADLINE)
    assert rejections(inst, "far")[0] == ("a", "p", Reason.LATENCY)
    assert rejections(inst, "far")[1] == ("b", "q", None)  # 1 ms inside its own region
    assert rejections(inst, "dear")[0] == ("a", "p", Reason.PRICE_CAP)  # 30.30 > 10.3
    assert rejections(inst, "dear")[1] == ("b", "q", None)  # local: 10.30 <= 10.3


def test_offers_replace_compute_and_energy_but_not_transfer():
    """An offer's price stands in for compute and energy; moving the data still costs."""
    inst = instance(
        [region("a", pools=[pool("p")]), region("b", pools=[pool("q")])],
        [{"id": "d", "origin": "a", "data_gb": 10.0}],
        links=[{"source": "a", "target": "b", "latency_ms": 2.0, "bandwidth_gbps": 10.0,
                "transfer_cost_cny_per_gb": 0.5}],
        offers=[{"demand": "d", "pool": "q", "gpu_hours": 3.0, "price_cny": 42.0}],
    )
    options = compile_options(inst)
    assert options.pool.tolist() == [1]  # only the offered pool: no work figure otherwise
    assert options.units.tolist() == [300]
    assert options.cost.tolist() == pytest.approx([42.0 + 10.0 * 0.5])
    assert rejections(inst, "d")[0] == ("a", "p", Reason.NO_OFFER)


def test_route_prefers_lower_latency_then_lower_transfer_cost():
    """Two 4 ms routes a-b-d and a-c-d: the cheaper one (0.1+0.1) sets the transfer cost."""
    link = lambda s, t, ms, cost: {"source": s, "target": t, "latency_ms": ms,  # noqa: E731
                                   "bandwidth_gbps": 1.0, "transfer_cost_cny_per_gb": cost}
    inst = instance(
        [region(r, pools=[pool(f"p{r}")]) for r in "abcd"],
        [{"id": "x", "origin": "a", "work_pflop": 1.0}],
        links=[link("a", "b", 2, 0.5), link("b", "d", 2, 0.5), link("a", "c", 2, 0.1),
               link("c", "d", 2, 0.1), link("a", "d", 5, 0.0)],
    )
    table = RouteTable(inst, ["a"])
    assert table.latency_ms[0].tolist() == [1.0, 2.0, 2.0, 4.0]  # own region: 1 ms
    assert table.transfer_cny_per_gb[0].tolist() == pytest.approx([0.0, 0.5, 0.1, 0.2])
    assert math.isinf(RouteTable(instance([region("a", pools=[pool("p")]), region("z")],
                                          [{"id": "x", "origin": "a", "work_pflop": 1.0}]),
                                 ["a"]).latency_ms[0, 1])


def test_penalties_are_weighted_by_priority_and_weight():
    """pi = w.unserved * priority * penalty = 2 * 3 * 100."""
    inst = instance([region("a", pools=[pool("p")])],
                    [{"id": "d", "origin": "a", "work_pflop": 1.0, "priority": 3.0,
                      "unserved_penalty_cny": 100.0}],
                    weights={"unserved": 2.0})
    assert compile_options(inst).penalty.tolist() == [600.0]
