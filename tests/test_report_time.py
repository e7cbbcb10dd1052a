"""The summary of a plan over a horizon: GPU chart, energy by tariff period, links, services,
starts per day, where shifting saved; width and ASCII fallback; plans without a horizon unchanged.

The plans are written by hand from docs/formulation.md §8 (no solver is involved): two pools on a
48-slot horizon of one-hour slots starting Monday 2025-06-02 00:00 Beijing time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import Assignment, CostBreakdown, Instance, LinkLoad, Plan, PoolUsage, Reason
from models import ServicePlacement, ServicePlan, SolveStats, Status, Unserved
from scheduler.cli import main
from scheduler.report import (
    ASCII,
    UNICODE,
    energy_table,
    glyphs_for,
    gpu_chart,
    ramp_level,
    shift_savings,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "instances" / "tiny"

# Prices: east pays 1.0 CNY/kWh in its peak (08:00-22:00) and 0.3 in its valley; west 0.4 flat.
EAST_PERIODS = "V" * 8 + "P" * 14 + "V" * 2
EAST_PRICE = [0.3] * 8 + [1.0] * 14 + [0.3] * 2
# West's grid: 900 g/kWh in slot 0, 600 in slots 1-2, 300 after (a profile of 48 values).
WEST_CARBON = [900.0] + [600.0] * 2 + [300.0] * 45
# Every pool: 0.8 kW per GPU at PUE 1.25, so one GPU-hour draws exactly 1 kWh.
POOL = {"memory_gb_per_gpu": 80, "tflops_by_precision": {"bf16": 1000}, "power_kw_per_gpu": 0.8,
        "price_cny_per_gpu_hour": 10}
GPU_HOUR_PFLOP = 3600  # 1000 TFLOPS x 3600 s / 1000: the work of one GPU-hour


def week_instance(**changes) -> Instance:
    """East (4 GPUs, time-of-use prices) and west (8 GPUs, outages, carbon by slot), one link."""
    data = {
        "schema_version": 2, "name": "two-days", "horizon": {"slots": 48, "slot_hours": 1},
        "regions": [
            {"id": "east", "jurisdiction": "e", "lat": 31, "lon": 121, "electricity_price_cny_per_kwh": 0.6,
             "electricity_price_by_slot_cny_per_kwh": EAST_PRICE, "tariff_periods": EAST_PERIODS,
             "pue": 1.25, "carbon_g_co2_per_kwh": 500, "tags": ["hub:yrd"],
             "pools": [{"id": "east-a", "accelerator": "H800", "gpu_count": 4, **POOL}]},
            {"id": "west", "jurisdiction": "w", "lat": 38, "lon": 106, "electricity_price_cny_per_kwh": 0.4,
             "pue": 1.25, "carbon_g_co2_per_kwh": 300, "carbon_by_slot_g_co2_per_kwh": WEST_CARBON,
             "tags": ["hub:nx"],
             "pools": [{"id": "west-a", "accelerator": "910B", "gpu_count": 8, **POOL,
                        "outages": [{"start_slot": 24, "end_slot": 30, "gpus": 4},
                                    {"start_slot": 40, "end_slot": 42, "gpus": 8}]}]},
        ],
        "links": [{"source": "east", "target": "west", "latency_ms": 20, "bandwidth_gbps": 10,
                   "transfer_cost_cny_per_gb": 0.1}],
        "demands": [
            # job1: 2 GPUs x 3 h, released at 08:00 Monday (east's peak).
            {"id": "job1", "origin": "east", "work_pflop": 6 * GPU_HOUR_PFLOP, "gang_size": 2,
             "release_slot": 8},
            # job2: 4 GPUs x 2 h; its 36 GB move east -> west, so its earliest start is slot 1.
            {"id": "job2", "origin": "east", "work_pflop": 8 * GPU_HOUR_PFLOP, "gang_size": 4,
             "data_gb": 36},
            # job3: 1 GPU x 1.5 h: two slots, the second drawn for half an hour.
            {"id": "job3", "origin": "east", "work_pflop": 1.5 * GPU_HOUR_PFLOP, "release_slot": 30},
            {"id": "job4", "origin": "east", "work_pflop": 100 * GPU_HOUR_PFLOP, "gang_size": 4,
             "unserved_penalty_cny": 50},
            {"id": "svc1", "kind": "service", "origin": "east", "load_pflop_per_hour": [1.0] * 24,
             "unserved_penalty_cny_per_pflop": 2},
        ],
        "weights": {"carbon_price_cny_per_t_co2": 100},
    }
    data.update(changes)
    return Instance.model_validate(data)


def assignment(demand: str, pool: str, region: str, start: int, end: int, gpu_hours: float, **extra) -> Assignment:
    """An assignment whose money figures are placeholders (the report takes them as given)."""
    return Assignment(demand=demand, region=region, pool=pool, precision="bf16", gpu_hours=gpu_hours,
                      latency_ms=1, energy_kwh=gpu_hours, co2_kg=0, compute_cny=10 * gpu_hours,
                      energy_cny=1, transfer_cny=0, carbon_cny=0, cost_cny=10 * gpu_hours + 1,
                      start_slot=start, end_slot=end, **extra)


def week_plan(**changes) -> Plan:
    """job1 at 22:00 Monday on east-a, job2 at 03:00 on west-a, job3 at its release (06:00
    Tuesday) on east-a, job4 unserved; svc1 on east-a with one replica, two at 12:00-18:00 Monday,
    half its load unserved at 20:00-22:00 Monday."""
    load = np.zeros(48)
    load[0:3] = 36 * 8 / (3 * 3600)  # job2's data over slots 0-2: 0.0267 Gbps
    data = {
        "instance": "two-days", "status": Status.FEASIBLE, "objective": 500.0, "lower_bound": 400.0,
        "gap": 0.2,
        "costs": CostBreakdown(compute_cny=300, energy_cny=57, unserved_penalty_cny=50, energy_kwh=100,
                               co2_t=0.05, energy_by_period_kwh={"peak": 30, "valley": 10, "flat": 60},
                               energy_by_period_cny={"peak": 30, "valley": 3, "flat": 24}),
        "assignments": (
            assignment("job1", "east-a", "east", 22, 25, 6),
            assignment("job2", "west-a", "west", 3, 5, 8, route=("east", "west")),
            assignment("job3", "east-a", "east", 30, 32, 1.5),
        ),
        "unserved": (Unserved(demand="job4", reason=Reason.CAPACITY, penalty_cny=50),),
        "pools": (
            PoolUsage(region="east", pool="east-a", accelerator="H800", used_gpu_hours=56, capacity_gpu_hours=192,
                      utilization=56 / 192),
            PoolUsage(region="west", pool="west-a", accelerator="910B", used_gpu_hours=8, capacity_gpu_hours=384,
                      utilization=8 / 384),
        ),
        "services": (ServicePlan(
            demand="svc1",
            placements=(ServicePlacement(region="east", pool="east-a", precision="bf16", latency_ms=1,
                                         route=("east",), replicas=(1,) * 12 + (2,) * 6 + (1,) * 30,
                                         served_pflop_per_hour=(1.0,) * 20 + (0.5,) * 2 + (1.0,) * 26,
                                         gpu_hours=54, energy_kwh=54, co2_kg=27, compute_cny=540,
                                         energy_cny=30, transfer_cny=0, carbon_cny=2.7, cost_cny=572.7),),
            unserved_pflop_per_hour=(0.0,) * 20 + (0.5,) * 2 + (0.0,) * 26, unserved_pflop=1.0,
            penalty_cny=2.0),),
        "links": (LinkLoad(source="east", target="west", load_gbps=tuple(load), bandwidth_gbps=(10.0,) * 48,
                           peak_utilization=float(load.max() / 10)),),
        "stats": SolveStats(engine="hand", solver_status="by hand", wall_time_s=0, demands=5, pools=2),
    }
    data.update(changes)
    return Plan(**data)


def lines_of(text: str, first: str, count: int) -> list[str]:
    """The ``count`` lines after the first line equal to ``first``."""
    lines = text.split("\n")
    k = lines.index(first)
    return lines[k + 1: k + 1 + count]


def test_untimed_summary_is_unchanged():
    """A plan without a horizon prints exactly as before, whatever width and glyphs are asked for."""
    from scheduler.io import read_instance, read_plan

    instance = read_instance(TINY / "unserved_priority.json")
    plan = read_plan(TINY / "unserved_priority.plan.json")
    # The text of main's summary at 90fb41a, before time was added.
    before = (
        "status optimal  objective 162.00  lower bound 162.00  gap 0.000%\n"
        "engine hand  0.0 s  5 demands  1 pools  4 options  energy 0 kWh  CO2 0.0 t\n\n"
        "sector  served  unserved  served work  cost CNY\n------  ------  --------  -----------  --------\n"
        "other        2         3        62.5%    100.00\n------  ------  --------  -----------  --------\n"
        "total        2         3        62.5%    100.00\n\n"
        "region  used GPU-h  capacity GPU-h  utilization\n------  ----------  --------------  -----------\n"
        "solo            10              10       100.0%\n------  ----------  --------------  -----------\n"
        "total           10              10       100.0%\n\n"
        "cost term            CNY\n----------------  ------\ncompute           100.00\n"
        "energy              0.00\ntransfer            0.00\ncarbon              0.00\n"
        "unserved penalty   62.00\n----------------  ------\nobjective         162.00"
    )
    assert summary(instance, plan) == before
    assert summary(instance, plan, width=30, glyphs=ASCII, pool_group="accelerator") == before


def test_gpu_chart_characters_for_known_loads():
    """One character per hour of used / available GPUs, rounded up to eighths, per hub and day."""
    chart = gpu_chart(week_instance(), week_plan()).split("\n")
    # hub yrd (east-a, 4 GPUs): svc1's 1 replica is 1/4 -> level 2 (▂); its 2 replicas at 12-17 h
    # are 2/4 -> ▄; job1 (2 GPUs, slots 22-24) with svc1 is 3/4 -> ▆; job3 (1 GPU, slots 30-31)
    # with svc1 is 2/4 -> ▄. Right: GPU-hours used / available, Monday svc1 30 + job1 4 = 34 of
    # 96 (35%), Tuesday svc1 24 + job1 2 + job3 2 = 28 of 96 (29%).
    assert lines_of("\n".join(chart), "hub yrd", 2) == [
        "Mon 06-02 |" + "▂" * 12 + "▄" * 6 + "▂" * 4 + "▆▆" + "|  35%",
        "Tue 06-03 |▆" + "▂" * 5 + "▄▄" + "▂" * 16 + "|  29%",
    ]
    # hub nx (west-a, 8 GPUs): job2's 4 GPUs at 3-4 h are 4/8 -> ▄ (8 of 192 GPU-hours, 4%);
    # Tuesday 16-17 h every GPU is out (×), 4 of 8 out at 0-5 h changes nothing while idle.
    assert lines_of("\n".join(chart), "hub nx", 2) == [
        "Mon 06-02 |   ▄▄" + " " * 19 + "|   4%",
        "Tue 06-03 |" + " " * 16 + "××" + " " * 6 + "|   0%",
    ]
    assert chart[3] == "           0     6     12    18"  # Beijing clock hours over the columns


def test_gpu_chart_narrow_takes_two_hours_per_character():
    """At 40 columns a day is 12 characters of two hours, each the fuller of its two slots."""
    chart = gpu_chart(week_instance(), week_plan(), width=40)
    # Monday's hours in pairs: 0-11 ▂, 12-17 ▄, 18-21 ▂, 22-23 ▆ (as in the hourly chart).
    assert lines_of(chart, "hub yrd", 1) == ["Mon 06-02 |▂▂▂▂▂▂▄▄▄▂▂▆|  35%"]
    assert all(len(line) <= 40 for line in chart.split("\n"))


def test_gpu_chart_by_region_and_accelerator():
    """The pool group names the rows: regions, or accelerator models."""
    assert lines_of(gpu_chart(week_instance(), week_plan(), by="accelerator"), "910B", 1) == [
        "Mon 06-02 |   ▄▄" + " " * 19 + "|   4%"]
    assert "west" in gpu_chart(week_instance(), week_plan(), by="region").split("\n")


def test_ramp_levels():
    """Idle 0, any use at least 1, k/8 up to level k, over capacity 9, nothing available -1."""
    used = np.array([0, 1, 4, 5, 8, 9, 0, 1, 1, 1])
    available = np.array([8, 8, 8, 8, 8, 8, 0, 0, 6, 100])
    # 1/8 -> 1, 4/8 -> 4, 5/8 -> 5, 8/8 -> 8, 9/8 over -> 9; 0 of 0 -> -1, 1 of 0 over -> 9;
    # 1/6 is above 1/8 -> 2 (rounded up, not to the nearest); 1/100 is still in use -> 1.
    assert ramp_level(used, available).tolist() == [0, 1, 4, 5, 8, 9, -1, 9, 2, 1]


def test_energy_by_tariff_period_shares():
    """kWh and CNY by period with their shares and average price, in tariff order, and tCO2."""
    text = energy_table(week_plan())
    # 100 kWh: peak 30 (30%), flat 60 (60%), valley 10 (10%); 57 CNY: peak 30 (52.6%), flat 24
    # (42.1%), valley 3 (5.3%); averages 1.000, 0.400, 0.300 and 0.570 CNY/kWh.
    assert text.split("\n")[2:4] == [
        "peak            30   30.0%       30.00   52.6%    1.000",
        "flat            60   60.0%       24.00   42.1%    0.400",
    ]
    assert "valley          10   10.0%        3.00    5.3%    0.300" in text
    assert "total          100  100.0%       57.00  100.0%    0.570" in text
    assert text.endswith("CO2 0.050 t  energy 100 kWh")


def test_shift_savings_by_hand():
    """Energy and carbon at the chosen start against the earliest allowed one, per §8.2."""
    shifts = {s.demand: s for s in shift_savings(week_instance(), week_plan())[0]}
    # job1: 2 GPUs draw 2 kWh a slot for 3 slots. Earliest start 8 (peak, 1.0 CNY/kWh): 6.0 CNY;
    # chosen 22-24 (valley, 0.3): 1.8 CNY. Carbon is flat (500 g/kWh: 3 kg, 0.30 CNY at 100 CNY/t
    # either way): saved 4.20 CNY, 0 kg.
    assert shifts["job1"].earliest_cny == pytest.approx(6.3)
    assert shifts["job1"].saved_cny == pytest.approx(4.2)
    assert shifts["job1"].saved_co2_kg == pytest.approx(0.0)
    # job2: its data moves, so its earliest start is slot 1 (not 0). 4 kWh a slot at 0.4 CNY either
    # way; slots 1-2 emit 4 x (600 + 600) g = 4.8 kg, slots 3-4 emit 4 x 600 g = 2.4 kg: saved
    # 2.4 kg = 0.24 CNY. (Slot 0 would have given 4 x 1500 g = 6.0 kg.)
    assert shifts["job2"].earliest_slot == 1
    assert shifts["job2"].saved_co2_kg == pytest.approx(2.4)
    assert shifts["job2"].saved_cny == pytest.approx(0.24)
    # job3 starts at its release: nothing saved.
    assert shifts["job3"].saved_cny == 0.0
    text = summary(week_instance(), week_plan())
    # Totals: 4.20 + 0.24 = 4.44 CNY, 2.4 kg = 0.0024 t.
    assert "jobs compared 3  moved later 2  earliest start not allowed 0" in text
    assert "saved 4.44 CNY energy and carbon  0.002 tCO2" in text


def test_shift_counts_the_half_drawn_last_slot():
    """A run's last slot draws only its remaining hours: job3 (1.5 GPU-hours) moved into the peak."""
    plan = week_plan(assignments=(*week_plan().assignments[:2],
                                  assignment("job3", "east-a", "east", 31, 33, 1.5)))
    (job3,) = [s for s in shift_savings(week_instance(), plan)[0] if s.demand == "job3"]
    # Earliest 30-31: 1 kWh x 0.3 + 0.5 kWh x 0.3 = 0.45; chosen 31-32: 1 x 0.3 + 0.5 x 1.0 = 0.80
    # (both 1.5 kWh at 500 g/kWh): saved -0.35 CNY. A full last slot would give 0.6 and 1.3.
    assert job3.saved_cny == pytest.approx(-0.35)


def test_shift_refused_where_the_price_cap_rejects_the_earliest_start():
    """job1's price at slot 8 is 60 + 6.0 = 66 CNY, above a cap of 63; at slot 22 it is 61.8."""
    data = week_instance().model_dump(mode="json", exclude_defaults=False)
    data["demands"][0]["max_cost_cny"] = 63
    shifts, without = shift_savings(Instance.model_validate(data), week_plan())
    assert [s.demand for s in shifts] == ["job2", "job3"]
    assert without == 1


def test_summary_of_a_horizon_plan_has_every_section():
    """Headline, costs, energy by period, chart, links, services, starts per day, shifting."""
    text = summary(week_instance(), week_plan())
    assert text.startswith("status feasible  objective 500.00  lower bound 400.00  gap 20.000%")
    for fragment in ("cost term", "tariff period", "GPU use by hub", "links by peak utilization",
                     "svc1", "batch jobs started", "where shifting saved"):
        assert fragment in text
    # job2's 36 GB over 3 h: 8 x 36 / 10,800 s = 0.0267 Gbps of 10, peak 0.3% at 00:00 Monday.
    assert "east-west  0.3%  Mon 06-02 00:00  0.0%       0.03" in text
    # svc1: 20 x 1 + 2 x 0.5 + 26 x 1 = 47 PFLOP served, 1 unserved (97.9%), penalty 2.
    assert "svc1         1              2          47.0             1.0   97.9%         2.00" in text
    # Monday: job1 (6 GPU-h) and job2 (8); Tuesday: job3 (1.5).
    assert "Mon 2025-06-02         2     14    142.00" in text
    assert "batch jobs unserved: 1" in text


def long_names(instance: Instance, plan: Plan, size: int = 100) -> tuple[Instance, Plan]:
    """The same instance and plan with every pool, region and demand id ``size`` characters long."""
    inst, pl = instance.model_dump_json(), plan.model_dump_json()
    for name in ("east-a", "west-a", "east", "west", "job1", "job2", "job3", "job4", "svc1"):
        long = (name + "-") * (size // (len(name) + 1)) + "x" * (size % (len(name) + 1))
        inst, pl = inst.replace(f'"{name}"', f'"{long}"'), pl.replace(f'"{name}"', f'"{long}"')
    return Instance.model_validate_json(inst), Plan.model_validate_json(pl)


def test_summary_fits_the_width_with_long_names():
    """Every line fits 80 columns with 100-character ids (names cut, ending in an ellipsis)."""
    instance, plan = long_names(week_instance(), week_plan())
    text = summary(instance, plan)
    assert max(len(line) for line in text.split("\n")) <= 80
    assert "…" in text
    wide = summary(*long_names(week_instance(), week_plan(), size=20), width=200)
    assert "job1-job1-job1-job1-" in wide  # no cut where there is room


def test_ascii_fallback():
    """With ASCII glyphs the whole summary is ASCII, the chart drawn with ' .:-=+*#@'."""
    text = summary(*long_names(week_instance(), week_plan()), glyphs=ASCII)
    text.encode("ascii")
    chart = summary(week_instance(), week_plan(), glyphs=ASCII)
    # The same loads as the Unicode chart: ▂ -> ':', ▄ -> '=', ▆ -> '*', × -> 'x'.
    assert lines_of(chart, "hub yrd", 1) == ["Mon 06-02 |" + ":" * 12 + "=" * 6 + ":" * 4 + "**" + "|  35%"]
    assert lines_of(chart, "hub nx", 2)[1] == "Tue 06-03 |" + " " * 16 + "xx" + " " * 6 + "|   0%"
    assert glyphs_for("UTF-8") is UNICODE and glyphs_for("utf_8") is UNICODE
    assert glyphs_for("cp1252") is ASCII and glyphs_for("ascii") is ASCII and glyphs_for(None) is ASCII
    assert glyphs_for("no-such-codec") is ASCII


@pytest.fixture
def week_files(tmp_path):
    """The instance and plan of this file, written to disk."""
    from scheduler.io import write_instance, write_plan

    write_instance(week_instance(), tmp_path / "week.json")
    write_plan(week_plan(), tmp_path / "week.plan.json")
    return tmp_path / "week.json", tmp_path / "week.plan.json"


def test_show_one_batch_job(week_files, capsys, monkeypatch):
    """show --demand: the window, pool, run and shifting in Beijing time, and a timeline."""
    monkeypatch.setenv("COLUMNS", "80")
    instance, plan = week_files
    assert main(["show", str(plan), "--instance", str(instance), "--demand", "job1"]) == 0
    out = capsys.readouterr().out
    assert "runs  Mon 2025-06-02 22:00 → Tue 2025-06-03 01:00  (slots 22-24 of 1 h)" in out
    assert "saved 4.20 CNY" in out
    # Released at slot 8, due by the horizon's end: slots 8-47 (the field wraps at 80 columns).
    assert "window  release Mon 2025-06-02 08:00  deadline Wed 2025-06-04 00:00\n(slots 8-47)" in out
    # Released at 08:00 Monday, running 22:00 to 01:00 Tuesday.
    assert lines_of(out, "           0     6     12    18", 2) == [
        "Mon 06-02 |        " + "·" * 14 + "██|", "Tue 06-03 |█" + "·" * 23 + "|"]


def test_show_one_service(week_files, capsys, monkeypatch):
    """show --demand on a service: replicas per pool per hour as digits, and the unserved share."""
    monkeypatch.setenv("COLUMNS", "80")
    instance, plan = week_files
    assert main(["show", str(plan), "--instance", str(instance), "--demand", "svc1"]) == 0
    out = capsys.readouterr().out
    assert "Mon 06-02 |" + "1" * 12 + "2" * 6 + "1" * 6 + "|" in out
    # Half the load unserved at 20-21 h: 1/2 -> ▄.
    assert lines_of(out, "unserved share of the load", 1) == ["Mon 06-02 |" + " " * 20 + "▄▄" + "  |"]


def test_show_summary_groups_and_bad_input(week_files, capsys):
    """show prints the summary grouped as asked; an unknown demand exits 2 naming it."""
    instance, plan = week_files
    assert main(["show", str(plan), "--instance", str(instance), "--pool-group", "accelerator"]) == 0
    assert "GPU use by accelerator" in capsys.readouterr().out
    assert main(["show", str(plan), "--instance", str(instance), "--demand", "nope"]) == 2
    assert "demand 'nope': no such demand" in capsys.readouterr().err


def test_show_refuses_a_plan_naming_unknown_pools(week_files, tmp_path, capsys):
    """A plan whose assignment names a pool the instance lacks exits 2 with the pool named."""
    instance, plan = week_files
    plan.write_text(plan.read_text().replace('"west-a"', '"gone"'))
    assert main(["show", str(plan), "--instance", str(instance)]) == 2
    assert "unknown pool 'gone'" in capsys.readouterr().err


def test_verify_of_a_horizon_plan_prints_the_summary(week_files, capsys, monkeypatch):
    """verify, when the plan passes, prints the summary over time after its ok line."""
    import importlib

    from models import Verification

    # The hand-made plan's money figures are placeholders: stand in for the verifier.
    checker = importlib.import_module("scheduler.verify")
    monkeypatch.setattr(checker, "verify", lambda i, p: Verification(ok=True, objective=500.0))
    instance, plan = week_files
    assert main(["verify", str(instance), str(plan)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: the plan meets every rule; objective 500.00")
    assert "verified" in out and "GPU use by hub" in out and "where shifting saved" in out


def test_ascii_on_a_terminal_without_utf8(week_files):
    """The real command with an ASCII stdout prints an ASCII chart, and no error."""
    import os
    import subprocess
    import sys

    instance, plan = week_files
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "scheduler", "show", str(plan), "--instance", str(instance)],
                          capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("ascii")
    assert "Mon 06-02 |" + ":" * 12 + "=" * 6 + ":" * 4 + "**" + "|  35%" in out


def test_show_a_job_whose_data_moves():
    """job2's data moves east -> west over slots 0-2 before it runs at 3-4 (» then █)."""
    from scheduler.report import demand_view

    text = demand_view(week_instance(), week_plan(), "job2")
    assert "route east → west" in text
    assert lines_of(text, "           0     6     12    18", 1) == ["Mon 06-02 |»»»██" + "·" * 19 + "|"]


def test_long_horizon_one_character_per_day():
    """Beyond 14 days a chart row is 28 days, one character per day (its fullest hour)."""
    data = week_instance().model_dump(mode="json")
    data["horizon"]["slots"], data["window_hours"] = 720, 720  # 30 days
    data["regions"][1]["carbon_by_slot_g_co2_per_kwh"] = [300.0] * 24
    plan = week_plan()
    service = plan.services[0]
    placement = service.placements[0].model_copy(update={"replicas": (1,) * 720})
    plan = plan.model_copy(update={"services": (service.model_copy(update={"placements": (placement,)}),),
                                   "links": ()})
    chart = gpu_chart(Instance.model_validate(data), plan)
    # Days 1-2 peak at 3/4 (job1 with svc1: ▆), every later day at svc1's 1/4 (▂); 28 + 2 days.
    assert chart.split("\n")[3] == "           " + "MTWTFSS" * 4
    assert lines_of(chart, "hub yrd", 2) == ["Mon 06-02 |▆▆" + "▂" * 26 + "|  25%",
                                             "Mon 06-30 |▂▂" + " " * 26 + "|  25%"]


def test_plan_without_energy_by_period_says_so():
    """A plan that splits no energy by tariff period says so in one line, with its totals."""
    plan = week_plan(costs=CostBreakdown(energy_kwh=0, co2_t=0))
    assert energy_table(plan) == "energy by tariff period: none in the plan\nCO2 0.000 t  energy 0 kWh"


def test_show_a_plan_without_a_horizon(capsys):
    """show works on a plan without a horizon: the usual summary, one demand's pool and costs."""
    args = [str(TINY / "two_regions.plan.json"), "--instance", str(TINY / "two_regions.json")]
    assert main(["show", *args]) == 0
    assert "GPU use" not in capsys.readouterr().out
    assert main(["show", *args, "--demand", "d1"]) == 0
    out = capsys.readouterr().out
    assert "pool west-a  region west  bf16  latency 20 ms" in out and "runs" not in out


def test_sector_table_counts_services():
    """svc1 has 1 of its 48 PFLOP unserved: it counts as unserved, its served load as served work."""
    from scheduler.report import sector_table

    text = sector_table(week_instance(), week_plan())
    total = text.strip().split("\n")[-1].split()
    served_work = (6 + 8 + 1.5) * GPU_HOUR_PFLOP + 47
    unserved_work = 100 * GPU_HOUR_PFLOP + 1
    share = 100 * served_work / (served_work + unserved_work)
    assert total == ["total", "3", "2", f"{share:.1f}%", "730.70"]
