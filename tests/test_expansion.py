"""Capacity expansion: the schedule and bound against brute force on tiny cases, limits, lead
times, savings, and bad input (library and CLI)."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Instance, Plan, Status
from models.expansion import CandidateBuild, CandidateSet, ExpansionParams, ExpansionResult
from scheduler import read_instance, verify
from scheduler.cli import main
from scheduler.compile import compile_options
from scheduler.expansion import ExpansionInputError, ExpansionProblem, assess, growth_years, plan_expansion
from tests.brute import brute_force

ROOT = Path(__file__).resolve().parent.parent
FAST = ExpansionParams(time_limit_s=30, year_time_limit_s=5, workers=1)


def tiny_instance(works=(900.0, 1800.0, 900.0), penalties=(400.0, 900.0, 500.0), east_gpus=1) -> Instance:
    """East has one dear pool; west none yet. Work in PFLOP at 250 TFLOPS: 900 PFLOP = 1 GPU-hour."""
    pool = {"id": "east-a", "accelerator": "A100", "gpu_count": east_gpus, "memory_gb_per_gpu": 80,
            "tflops_by_precision": {"bf16": 250.0}, "power_kw_per_gpu": 0.5,
            "price_cny_per_gpu_hour": 100.0}
    region = {"jurisdiction": "x", "lat": 30.0, "lon": 110.0, "electricity_price_cny_per_kwh": 1.0,
              "pue": 1.2, "carbon_g_co2_per_kwh": 500.0}
    return Instance.model_validate({
        "name": "tiny", "window_hours": 2.0, "gpu_hour_quantum": 0.5,
        "regions": [{"id": "east", **region, "pools": [pool]},
                    {"id": "west", **region, "electricity_price_cny_per_kwh": 0.4, "pue": 1.1}],
        "links": [{"source": "east", "target": "west", "latency_ms": 20, "bandwidth_gbps": 10,
                   "transfer_cost_cny_per_gb": 1.0}],
        "demands": [{"id": f"d{k}", "origin": "east", "work_pflop": w, "unserved_penalty_cny": p,
                     "data_gb": 10.0} for k, (w, p) in enumerate(zip(works, penalties, strict=True))],
    })


def candidate(id="west-h", region="west", capital=4380.0, per_year=1, total=None, lead=0, price=20.0,
              gpus=1, **extra) -> CandidateBuild:
    return CandidateBuild.model_validate({
        "id": id, "region": region, "gpus_per_step": gpus, "capital_cny_per_gpu": capital,
        "lifetime_years": 1, "discount_rate": 0.0, "max_steps_per_year": per_year,
        "max_steps_total": total, "lead_time_years": lead,
        "pool": {"accelerator": "A100", "memory_gb_per_gpu": 80, "tflops_by_precision": {"bf16": 250.0},
                 "power_kw_per_gpu": 0.5, "price_cny_per_gpu_hour": price}, **extra})


def brute(years, candidates) -> float:
    """min over every schedule of capital + each year's optimum by enumeration (CNY per year)."""
    problem = ExpansionProblem(years, candidates)
    ranges = [range(int(problem.limit[c, y]) + 1) for c in range(problem.C) for y in range(problem.Y)]
    best = math.inf
    for flat in itertools.product(*ranges):
        steps = np.array(flat, dtype=np.int64).reshape(problem.C, problem.Y)
        if not problem.feasible_steps(steps):
            continue
        total = problem.capital(steps)
        for y in range(problem.Y):
            value = brute_force(compile_options(problem.instance(y, steps)))
            total = math.inf if value is None else total + value
        best = min(best, total * problem.annualization)
    return best


def test_schedule_and_bound_match_brute_force():
    years = growth_years(tiny_instance(), [2026, 2027], 0.5)
    cands = [candidate(), candidate(id="east-h", region="east", capital=2000.0, price=60.0)]
    run = plan_expansion(years, cands, FAST)
    r = run.result
    optimum = brute(years, cands)
    assert r.lower_bound_cny <= optimum * (1 + 1e-9)
    assert r.objective_cny >= optimum * (1 - 1e-9)
    assert r.objective_cny == pytest.approx(optimum, rel=1e-9)  # this case is solved to optimality
    assert r.lower_bound_cny <= r.objective_cny
    for res in run.plans:
        assert res.verification.ok
    if r.status == Status.OPTIMAL:
        assert r.gap <= 1e-6
    assert "interrupted" not in r.stats


def _assert_stopped_run_is_whole(run, years, cands, limit_s):
    """A stopped run still gives every year a verified plan, a total, and a bound that holds."""
    r = run.result
    assert r.stats["interrupted"] == 1
    assert len(run.plans) == len(years) and all(res.verification.ok for res in run.plans)
    assert r.objective_cny is not None and r.lower_bound_cny <= r.objective_cny
    assert r.lower_bound_cny <= brute(years, cands) * (1 + 1e-9)
    assert r.stats["wall_time_s"] < limit_s / 4  # it did not run on to the limit (600 s)


def test_a_stop_set_before_the_start_gives_a_plan_at_once():
    """Ctrl-C before anything ran: the schedule so far (no builds), each year solved briefly."""
    years = growth_years(tiny_instance(), [2026, 2027], 0.5)
    cands = [candidate(capital=500.0)]
    stop = threading.Event()
    stop.set()
    params = FAST.model_copy(update={"time_limit_s": 600, "year_time_limit_s": 300})
    run = plan_expansion(years, cands, params, stop=stop)
    _assert_stopped_run_is_whole(run, years, cands, 600)
    assert run.result.steps["west-h"] == (0, 0)
    assert all(b.saving_cny is None for b in run.result.builds)


@pytest.mark.parametrize("at", ["bound", "builds chosen", "solving 2027", "pricing"])
def test_a_stop_set_while_it_runs_keeps_what_it_has(at):
    """Ctrl-C in each phase (the bound, the search for builds, the years' solves, the savings)."""
    years = growth_years(tiny_instance(), [2026, 2027], 0.5)
    cands = [candidate(capital=500.0)]
    stop = threading.Event()
    heard: list[str] = []

    def hear(text: str) -> None:
        heard.append(text)
        if at in text:
            stop.set()

    params = FAST.model_copy(update={"time_limit_s": 600, "year_time_limit_s": 300})
    run = plan_expansion(years, cands, params, on_progress=hear, stop=stop)
    assert stop.is_set(), heard  # the phase was reached
    _assert_stopped_run_is_whole(run, years, cands, 600)
    if at != "bound":  # the builds were chosen before the stop: kept
        assert run.result.steps == plan_expansion(years, cands, FAST).result.steps


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(
    works=st.lists(st.sampled_from([450.0, 900.0, 1800.0, 2700.0]), min_size=2, max_size=3),
    penalty=st.sampled_from([150.0, 400.0, 1200.0]),
    capitals=st.lists(st.sampled_from([500.0, 4380.0, 20000.0]), min_size=1, max_size=2),
    per_year=st.integers(0, 2),
    lead=st.integers(0, 1),
    growth=st.sampled_from([0.0, 0.5]),
)
def test_bound_never_above_the_optimum(works, penalty, capitals, per_year, lead, growth):
    base = tiny_instance(tuple(works), tuple(penalty * (k + 1) for k in range(len(works))))
    years = growth_years(base, [2026, 2027], growth)
    cands = [candidate(id=f"c{k}", region=("west", "east")[k % 2], capital=cap, per_year=per_year,
                       lead=lead) for k, cap in enumerate(capitals)]
    r = plan_expansion(years, cands, FAST.model_copy(update={"savings": False})).result
    optimum = brute(years, cands)
    assert r.lower_bound_cny <= optimum * (1 + 1e-9) + 1e-9
    assert r.objective_cny >= optimum * (1 - 1e-9) - 1e-9
    assert r.lower_bound_cny <= r.objective_cny
    if r.status == Status.OPTIMAL:
        assert r.objective_cny == pytest.approx(optimum, rel=1e-6)


def test_lead_time_and_limits_are_respected():
    years = growth_years(tiny_instance(works=(1800.0, 1800.0, 1800.0), penalties=(5000.0,) * 3),
                         [2026, 2027, 2028], 0.0)
    cands = [candidate(capital=100.0, per_year=2, total=3, lead=1)]
    run = plan_expansion(years, cands, FAST)
    steps = run.result.steps["west-h"]
    assert sum(steps) <= 3 and max(steps) <= 2 and steps[-1] == 0  # built in 2028: never usable
    assert sum(steps) > 0  # cheap capital, dear penalties: it builds
    first_usable = min(run.result.years[k] + 1 for k, s in enumerate(steps) if s > 0)
    for year, res in zip(run.result.years, run.plans, strict=True):
        on_build = [a for a in res.plan.assignments if a.pool == "west-h"]
        if year < first_usable:
            assert not on_build
            assert "west-h" not in {p.id for _, p in run.instances[run.result.years.index(year)].pools()}
    assert run.result.year_summaries[0].built_gpus["west-h"] == 0


def test_savings_of_an_unused_build_are_its_capital_lost():
    years = growth_years(tiny_instance(works=(900.0,), penalties=(50.0,)), [2026, 2027], 0.0)
    cands = [candidate(capital=4380.0, price=500.0)]  # dearer to use than leaving the work unserved
    problem = ExpansionProblem(years, cands)
    forced = assess(problem, np.array([[1, 0]]), FAST).result
    (build,) = forced.builds
    assert forced.year_summaries[0].built_gpu_hours_used["west-h"] == 0
    assert build.operating_saving_cny == pytest.approx(0.0, abs=1e-9)
    assert build.saving_cny == pytest.approx(-build.capital_cny)
    assert build.capital_cny == pytest.approx(2 * 4380.0)  # usable in both years
    assert plan_expansion(years, cands, FAST).result.steps["west-h"] == (0, 0)


def test_a_useful_build_saves_what_the_re_solve_says():
    years = growth_years(tiny_instance(), [2026], 0.0)
    run = plan_expansion(years, [candidate(capital=500.0)], FAST)
    (build,) = run.result.builds
    without = assess(ExpansionProblem(years, [candidate(capital=500.0)]), np.array([[0]]), FAST).result
    assert build.saving_cny == pytest.approx(without.objective_cny - run.result.objective_cny)
    assert build.saving_cny > 0


def test_capital_recovery_factor():
    c = candidate(capital=1000.0).model_copy(update={"lifetime_years": 5, "discount_rate": 0.08})
    assert c.capital_recovery_factor == pytest.approx(0.08 * 1.08**5 / (1.08**5 - 1))
    assert candidate().capital_recovery_factor == 1.0


@pytest.mark.parametrize("years, cands, words", [
    ([2027, 2026], [candidate()], ["years", "2026 follows 2027"]),
    ([2026], [candidate(region="mars")], ["candidate 'west-h'", "'region'", "mars"]),
    ([2026], [candidate(id="east-a")], ["candidate 'east-a'", "'id'"]),
])
def test_bad_input_is_named(years, cands, words):
    with pytest.raises(ExpansionInputError) as error:
        plan_expansion(growth_years(tiny_instance(), years, 0.1), cands, FAST)
    for word in words:
        assert word in str(error.value)


def test_horizon_instance_is_refused():
    week = ROOT / "instances" / "tiny" / "timed_valley.json"
    inst = Instance.model_validate_json(week.read_text())
    with pytest.raises(ExpansionInputError, match="horizon.*not supported yet"):
        ExpansionProblem([(2026, inst)], [candidate(region=inst.regions[0].id)])


def _write(tmp_path: Path, cands: list[dict]) -> tuple[Path, Path]:
    inst = tmp_path / "tiny.json"
    inst.write_text(tiny_instance().model_dump_json())
    path = tmp_path / "cands.json"
    path.write_text(json.dumps({"candidates": cands}))
    return inst, path


def _dict(**kw) -> dict:
    return json.loads(candidate(**kw).model_dump_json())


@pytest.mark.parametrize("field, value, words", [
    ("capital_cny_per_gpu", -5.0, ["candidate 'west-h'", "capital_cny_per_gpu"]),
    ("capital_cny_per_gpu", 0.0, ["candidate 'west-h'", "capital_cny_per_gpu"]),
    ("lifetime_years", 0, ["candidate 'west-h'", "lifetime_years"]),
    ("region", "mars", ["candidate 'west-h'", "region", "mars"]),
    ("colour", "red", ["candidate 'west-h'", "colour", "not a known field"]),
])
def test_cli_bad_candidates_exit_2(tmp_path, capsys, field, value, words):
    inst, path = _write(tmp_path, [_dict() | {field: value}])
    code = main(["expand", str(inst), str(path), "--years", "2026-2027", "--growth", "0.2",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err and "Traceback" not in err
    for word in words:
        assert word in err


def test_cli_years_reversed_and_horizon_exit_2(tmp_path, capsys):
    inst, path = _write(tmp_path, [_dict()])
    assert main(["expand", str(inst), str(path), "--years", "2030-2026", "-o", str(tmp_path / "o")]) == 2
    assert "--years" in capsys.readouterr().err
    timed = ROOT / "instances" / "tiny" / "timed_valley.json"
    region = json.loads(timed.read_text())["regions"][0]["id"]
    path.write_text(json.dumps({"candidates": [_dict(region=region)]}))
    assert main(["expand", str(timed), str(path), "--years", "2026", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(timed) in err and "horizon" in err and "not supported yet" in err


def test_cli_writes_result_plans_and_instances(tmp_path, capsys):
    inst, path = _write(tmp_path, [_dict(capital=500.0)])
    out = tmp_path / "out"
    code = main(["expand", str(inst), str(path), "--years", "2026-2027", "--growth", "0.5",
                 "--time-limit", "30", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "west-h" in text and "bound" in text
    result = json.loads((out / "expansion.json").read_text())
    assert result["years"] == [2026, 2027] and result["lower_bound_cny"] <= result["objective_cny"]
    for year in (2026, 2027):
        assert main(["verify", str(out / f"{year}.instance.json"), str(out / f"{year}.plan.json")]) == 0


@pytest.mark.parametrize("kind, model", [("candidates", CandidateSet), ("expansion", ExpansionResult)])
def test_expansion_schemas_are_shipped(capsys, kind, model):
    assert main(["schema", kind]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((ROOT / "docs" / "schema" / f"{kind}.schema.json").read_text())
    assert printed == model.model_json_schema()


def test_written_result_matches_its_schema(tmp_path):
    import jsonschema

    inst, path = _write(tmp_path, [_dict(capital=500.0)])
    assert main(["expand", str(inst), str(path), "--years", "2026", "-q", "-o", str(tmp_path / "o")]) == 0
    schema = json.loads((ROOT / "docs" / "schema" / "expansion.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "o" / "expansion.json").read_text()), schema)


def test_shipped_candidates_validate():
    from scheduler.io import read_instance

    cands = CandidateSet.model_validate_json((ROOT / "instances" / "candidates-china.json").read_text())
    inst = read_instance(ROOT / "instances" / "china-2025.json")
    regions = {r.id for r in inst.regions}
    assert all(c.region in regions for c in cands.candidates)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_ctrl_c_writes_what_it_has_and_exits_130(tmp_path):
    """SIGINT a few seconds into `eastwest expand` (wherever it lands: reading, the bound, the
    search): the folder gets the result and every year's verified plan, exit 130."""
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "expand", str(ROOT / "instances" / "china-2025.json"),
         str(ROOT / "instances" / "candidates-china.json"), "--years", "2026-2027", "--growth", "0.4",
         "--time-limit", "600", "-o", str(out), "-q"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    result = ExpansionResult.model_validate_json((out / "expansion.json").read_text())
    assert result.stats["interrupted"] == 1 and result.objective_cny is not None
    for year in (2026, 2027):
        instance = read_instance(out / f"{year}.instance.json")
        assert verify(instance, Plan.model_validate_json((out / f"{year}.plan.json").read_text())).ok
