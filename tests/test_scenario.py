"""Growth scenarios: each year's instance is grown, extended and priced as the scenario says, and
`eastwest scenario` writes verified plans and figures that add up, refuses bad files with exit 2,
and keeps the years done when interrupted."""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import Instance, Plan, Sector
from models.scenario import Scenario, ScenarioSummary
from scheduler.cli import main
from scheduler.io import read_instance, read_plan
from scheduler.scenario import (
    ScenarioRun,
    default_growth,
    demand_work,
    derive_instance,
    read_scenario,
    spec_schema,
    year_settings,
)
from scheduler.strategies import instances, timed_instances
from scheduler.verify import verify

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "instances" / "tiny"


def sector_work(instance: Instance) -> dict[Sector, float]:
    """Work per sector in PFLOP: batch work plus service load over the horizon."""
    slots = instance.horizon.slots if instance.horizon else 1
    hours = instance.horizon.slot_hours if instance.horizon else 1.0
    out: dict[Sector, float] = defaultdict(float)
    for d in instance.demands:
        out[d.sector] += demand_work(d, hours, slots)
    return out


def three_sectors() -> dict:
    """two_regions.json with its three jobs in three sectors (9,000, 7,200 and 4,500 PFLOP)."""
    data = json.loads((TINY / "two_regions.json").read_text())
    for demand, sector in zip(data["demands"], ["llm_training", "finance", "education"]):
        demand["sector"] = sector
    return data


def write_case(folder: Path, spec: dict, base: dict | None = None) -> Path:
    """A base instance and a scenario file naming it by a relative path."""
    (folder / "base.json").write_text(json.dumps(base or three_sectors()))
    path = folder / "scenario.json"
    path.write_text(json.dumps({"base_instance": "base.json", **spec}))
    return path


SPEC = {
    "name": "tiny",
    "years": [2025, 2026, 2027],
    "growth": {"llm_training": {"2026": 1.5, "2027": 0.2}, "finance": 0.25, "education": -0.5},
    "planned_capacity": {"2026": {"west-a": 2}, "2027": {"west-a": 1, "east-a": 1}},
    "carbon_price_cny_per_t_co2": {"2026": 40},
    "electricity_price_change": {"2027": 0.1},
    "accelerator_price_change": -0.1,
    "time_limit_s": 10,
}


def test_each_year_grows_extends_and_prices_as_specified(tmp_path):
    """Sector totals, pool GPUs, carbon price and price factors of every derived year."""
    spec, base, _ = read_scenario(write_case(tmp_path, SPEC))
    years = {s.year: s for s in year_settings(spec)}
    # llm_training 9,000 x 2.5 (2026) x 1.2 (2027); finance 7,200 x 1.25 per year; education
    # 4,500 x 0.5 per year; the other sectors have no demand.
    expected = {2025: (9000, 7200, 4500), 2026: (22500, 9000, 2250), 2027: (27000, 11250, 1125)}
    for year, (training, finance, education) in expected.items():
        instance = derive_instance(base, years[year])
        work = sector_work(instance)
        assert math.isclose(work[Sector.LLM_TRAINING], training, rel_tol=1e-12)
        assert math.isclose(work[Sector.FINANCE], finance, rel_tol=1e-12)
        assert math.isclose(work[Sector.EDUCATION], education, rel_tol=1e-12)
    gpus = {y: {p.id: p.gpu_count for _, p in derive_instance(base, years[y]).pools()} for y in years}
    assert gpus == {2025: {"east-a": 2, "west-a": 4}, 2026: {"east-a": 2, "west-a": 6},
                    2027: {"east-a": 3, "west-a": 7}}
    prices = [derive_instance(base, years[y]) for y in (2025, 2026, 2027)]
    assert [i.weights.carbon_price_cny_per_t_co2 for i in prices] == [100.0, 40.0, 40.0]  # base, then the path
    east = [i.regions[0] for i in prices]
    assert [r.electricity_price_cny_per_kwh for r in east] == pytest.approx([1.0, 1.0, 1.1])
    assert [r.pools[0].price_cny_per_gpu_hour for r in east] == pytest.approx([10.0, 9.0, 8.1])


def test_copies_keep_the_base_jobs_and_cut_at_most_one_per_sector(tmp_path):
    """Growth by 2.5 keeps two copies of each job and a seeded third copy cut to size."""
    spec, base, _ = read_scenario(write_case(tmp_path, {**SPEC, "years": [2026]}))
    instance = derive_instance(base, year_settings(spec)[0])
    training = [d for d in instance.demands if d.sector == Sector.LLM_TRAINING]
    assert [d.id for d in training] == ["d1", "d1+1", "d1+2"]
    assert [d.work_pflop for d in training] == pytest.approx([9000, 9000, 4500])
    assert training[2].unserved_penalty_cny == pytest.approx(500)  # the cut copy's penalty halves too
    assert training[2].data_gb == pytest.approx(5)


@settings(max_examples=40)
@given(base=instances(max_demands=6, offers=False) | timed_instances(max_demands=5),
       rates=st.lists(st.floats(-1, 3), min_size=len(Sector), max_size=len(Sector)),
       scaling=st.sampled_from(["copies", "work"]), seed=st.integers(0, 1000),
       years=st.integers(1, 3))
def test_sector_totals_match_the_growth_exactly(base, rates, scaling, seed, years):
    """Whatever the rates (down to -100%), each sector's total is its base total times the
    product of (1 + rate), and the same seed gives the same instance."""
    growth = {s.value: r for s, r in zip(Sector, rates)}
    spec = Scenario(base_instance="x", years=[2025 + years], growth=growth, seed=seed,
                    demand_scaling=scaling)
    setting = year_settings(spec)[0]
    before = sector_work(base)
    if not any(before[s] * (1 + rates[k]) > 0 for k, s in enumerate(Sector)):
        return  # every sector shrinks to nothing: no instance (tested by the CLI test below)
    instance = derive_instance(base, setting)
    after = sector_work(instance)
    for k, sector in enumerate(Sector):
        assert math.isclose(after[sector], before[sector] * (1 + rates[k]) ** years,
                            rel_tol=1e-9, abs_tol=1e-9)
    assert derive_instance(base, setting) == instance
    if scaling == "copies":  # only one demand per sector is cut to size
        ids = {d.id: d for d in base.demands}
        for sector in Sector:
            cut = [d for d in instance.demands if d.sector == sector
                   and not math.isclose(demand_work(d, *_hours(base)), demand_work(ids[d.id.split("+")[0]], *_hours(base)))]
            assert len(cut) <= 1


def _hours(instance: Instance) -> tuple[float, int]:
    h = instance.horizon
    return (h.slot_hours, h.slots) if h else (1.0, 1)


def test_the_command_writes_verified_plans_and_figures_that_add_up(tmp_path, capsys):
    """Per year a plan that verifies against the year's written instance; the summary's served
    work is the work of the demands the plan places, and its table is printed."""
    path = write_case(tmp_path, SPEC)
    out = tmp_path / "out"
    assert main(["scenario", str(path), "-o", str(out), "--instances"]) == 0
    printed = capsys.readouterr().out
    summary = ScenarioSummary.model_validate_json((out / "summary.json").read_text())
    assert summary.complete and [y.year for y in summary.years] == [2025, 2026, 2027]
    for year in summary.years:
        instance = read_instance(out / year.instance_file)
        plan = read_plan(out / year.plan_file)
        check = verify(instance, plan)
        assert check.ok and year.verified
        assert year.objective == pytest.approx(check.objective)
        work = {d.id: d.work_pflop for d in instance.demands}
        assert year.served_pflop == pytest.approx(sum(work[a.demand] for a in plan.assignments))
        assert year.demand_pflop == pytest.approx(sum(work.values()))
        assert sum(h.gpus for h in year.hubs) == sum(p.gpu_count for _, p in instance.pools())
        assert str(year.year) in printed
    assert "llm_training" in printed and "utilization" in printed
    assert "demand PFLOP" in (out / "summary.txt").read_text()


def test_a_horizon_base_instance_works(tmp_path):
    """A base instance with a horizon and a service: the years solve and verify."""
    base = json.loads((TINY / "timed_service_split.json").read_text())
    path = write_case(tmp_path, {"years": [2025, 2026], "time_limit_s": 10}, base)
    assert main(["scenario", str(path), "-o", str(tmp_path / "out"), "-q"]) == 0
    summary = ScenarioSummary.model_validate_json((tmp_path / "out" / "summary.json").read_text())
    grown = summary.years[1]
    factor = grown.settings.demand_factor[Sector(base["demands"][0].get("sector", "other"))]
    assert grown.demand_pflop == pytest.approx(summary.years[0].demand_pflop * factor)
    assert all(y.verified for y in summary.years)


@pytest.mark.parametrize("change, message", [
    ({"growth": {"quantum_computing": 0.5}}, "field 'growth.quantum_computing': 'quantum_computing' is not a sector"),
    ({"growth": {"finance": -1.5}}, "field 'growth.finance'"),
    ({"years": [2026, 2025]}, "field 'years': 2025 follows 2026"),
    ({"base_instance": "missing.json"}, "missing.json: no such file"),
    ({"planned_capacity": {"2026": {"nowhere": 3}}}, "field 'planned_capacity.2026.nowhere'"),
    ({"growth": {"finance": {"2024": 0.1}}}, "field 'growth.finance': year 2024 is not after base_year"),
    ({"colour": "red"}, "field 'colour': is not a known field"),
    ({"solve": {"engine": "fast"}}, "field 'solve.engine'"),
])
def test_bad_scenarios_exit_2_naming_file_object_and_field(tmp_path, capsys, change, message):
    """Each mistake: exit 2, one message naming the file, 'scenario' and the field; no traceback."""
    spec = {**SPEC, **change}
    path = write_case(tmp_path, spec)
    if "base_instance" in change:
        path.write_text(json.dumps(spec))
    assert main(["scenario", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    if "no such file" not in message:
        assert f"{path}: scenario: " in err


def test_all_demand_gone_names_the_year(tmp_path, capsys):
    """-100% in every sector with demand leaves no demands: exit 2 naming the year."""
    path = write_case(tmp_path, {"years": [2026], "growth": {s.value: -1 for s in Sector}})
    assert main(["scenario", str(path), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "year 2026: instance: field 'demands' is empty" in capsys.readouterr().err


def test_output_folders_and_inputs_are_protected(tmp_path, capsys):
    """A non-empty folder that is no scenario output is refused, a previous output is reused,
    --force writes anyway but never over an input."""
    path = write_case(tmp_path, {**SPEC, "years": [2025]})
    assert main(["scenario", str(path), "-o", str(tmp_path), "-q"]) == 2  # holds the inputs
    assert "use --force" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["scenario", str(path), "-o", str(out), "-q"]) == 0
    assert main(["scenario", str(path), "-o", str(out), "-q"]) == 0  # its own output: reused
    trap = tmp_path / "trap"
    trap.mkdir()
    base = trap / "plan-2025.json"  # the base instance where the plan would go
    base.write_text(json.dumps(three_sectors()))
    spec = trap / "s.json"
    spec.write_text(json.dumps({**SPEC, "years": [2025], "base_instance": "plan-2025.json"}))
    before = base.read_text()
    assert main(["scenario", str(spec), "-o", str(trap), "-q", "--force"]) == 2
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert base.read_text() == before


def test_an_interrupt_keeps_the_years_done(tmp_path):
    """Stopped after the first year: that year's plan and an incomplete summary remain."""
    spec, base, params = read_scenario(write_case(tmp_path, SPEC))
    stop = threading.Event()

    def on_event(event) -> None:
        if event.kind == "finish":
            stop.set()

    out = tmp_path / "out"
    out.mkdir()
    run = ScenarioRun(spec, tmp_path / "scenario.json", base, params, out, on_event=on_event, stop=stop)
    done = run.run()
    assert run.interrupted and [s.year for s in done] == [2025]
    summary = ScenarioSummary.model_validate_json((out / "summary.json").read_text())
    assert not summary.complete and [y.year for y in summary.years] == [2025]
    assert Plan.model_validate_json((out / "plan-2025.json").read_text()).instance.endswith("2025")
    assert not (out / "plan-2026.json").exists()


def test_shipped_schemas_match_the_models(capsys):
    """docs/schema holds what `eastwest schema` prints for the scenario formats."""
    for kind in ("scenario", "sweep", "scenario-summary", "sweep-summary"):
        assert main(["schema", kind]) == 0
        printed = json.loads(capsys.readouterr().out)
        shipped = json.loads((ROOT / "docs" / "schema" / f"{kind}.schema.json").read_text())
        assert printed == shipped, f"regenerate docs/schema/{kind}.schema.json"
    assert spec_schema(Scenario)["properties"]["solve"]["$ref"] == "#/$defs/SolveParams"


def test_the_shipped_scenario_reads_and_the_defaults_carry_sources():
    """instances/scenario-2025-2030.json is valid against china-2025.json; every sector has a
    default growth rate whose figure names a listed source."""
    spec, base, params = read_scenario(ROOT / "instances" / "scenario-2025-2030.json")
    assert spec.years == (2025, 2026, 2027, 2028, 2029, 2030) and len(base.demands) == 3000
    assert set(default_growth()) == set(Sector)
    data = json.loads((ROOT / "scheduler" / "data" / "growth.json").read_text())
    for item in data["sector_growth"].values():
        figure = data["figures"][item["basis"]]
        assert figure["ref"] in data["sources"] and figure["value"] == item["rate"]
