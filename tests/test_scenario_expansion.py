"""A scenario that names candidate builds: `eastwest scenario` chooses what to build where and when
with the expansion optimizer, every year's plan (builds as pools) verifies against the year's
written instance, the figures agree between summary.json, expansion.json and the instances, and
bad input exits 2 naming the file, the object and the field.

The solved case is tiny: 40 demands of the synthetic China network over three years, two
candidates with cheap capital so that building pays (a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.expansion import ExpansionResult
from models.scenario import ScenarioSummary
from scheduler import china_instance, write_instance
from scheduler.cli import main
from scheduler.io import read_instance, read_plan
from scheduler.verify import verify

ROOT = Path(__file__).resolve().parent.parent
YEARS = [2025, 2026, 2027]


def candidates(count: int = 2, **change) -> dict:
    data = json.loads((ROOT / "instances" / "candidates-china.json").read_text())
    data["candidates"] = [{**c, "capital_cny_per_gpu": 20000, **change} for c in data["candidates"][:count]]
    return data


def write_case(folder: Path, *, expansion: dict | None = None, base=None, cands: dict | None = None,
               **spec) -> Path:
    if base is None:
        write_instance(china_instance(demands=40, seed=5), folder / "base.json")
    else:
        (folder / "base.json").write_text(Path(base).read_text())
    (folder / "cands.json").write_text(json.dumps(cands or candidates()))
    path = folder / "scenario.json"
    path.write_text(json.dumps({
        "name": "tiny-expansion", "base_instance": "base.json", "years": YEARS, "seed": 3,
        "growth": {"llm_training": 1.5, "llm_inference": 1.5}, "solve": {"workers": 1, "seed": 0},
        "expansion": {"candidates": "cands.json", "time_limit_s": 10, "year_time_limit_s": 2,
                      **(expansion or {})}, **spec}))
    return path


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("expansion")
    folder = where / "out"
    assert main(["scenario", str(write_case(where)), "-o", str(folder), "-q"]) == 0
    return folder


def test_builds_are_chosen_and_every_year_verifies_with_them(out):
    """Something is built; each year's instance holds exactly the GPUs usable that year, and
    its plan passes the verifier against it."""
    summary = ScenarioSummary.model_validate_json((out / "summary.json").read_text())
    result = ExpansionResult.model_validate_json((out / "expansion.json").read_text())
    assert summary.complete and [y.year for y in summary.years] == YEARS
    ex = summary.expansion
    assert ex is not None and ex.builds and len(ex.builds) == len(result.builds)
    assert ex.objective_cny == result.objective_cny and ex.lower_bound_cny == result.lower_bound_cny
    assert ex.lower_bound_cny <= ex.objective_cny + 1e-6 and ex.gap == result.gap
    for year, row in zip(summary.years, result.year_summaries, strict=True):
        instance = read_instance(out / f"instance-{year.year}.json")
        plan = read_plan(out / year.plan_file)
        assert verify(instance, plan).ok and year.verified
        pools = {p.id: p.gpu_count for _, p in instance.pools()}
        built = {c: n for c, n in row.built_gpus.items() if n > 0}
        assert {c: pools[c] for c in built} == built
        assert not [c for c in result.steps if c not in built and c in pools]
        assert year.settings.gpus_built == sum(built.values())
        assert year.settings.gpus_out == 0
    usable = {b.usable_from_year for b in ex.builds}
    assert any(y.settings.gpus_built > 0 for y in summary.years if y.year >= min(usable))
    assert "builds (expansion" in (out / "summary.txt").read_text()


def test_the_report_shows_the_builds(out):
    """The report's builds section lists every build; its years table the GPUs built (the
    whole page is drawn in tests/test_scenario_report.py)."""
    pytest.importorskip("matplotlib")
    from scheduler.scenario_report import builds_section, load_years, overview_section, read_scenario_summary

    summary = read_scenario_summary(out)
    builds = builds_section(summary)
    assert builds is not None and builds.id == "builds"
    assert all(f"<td>{b.candidate}</td>" in builds.body for b in summary.expansion.builds)
    years = load_years(out, summary)  # the written instances, each plan verified again
    assert all(y.verification.ok for y in years)
    assert "built GPUs" in overview_section(years, built=True).body


@pytest.mark.parametrize("change, where, message", [
    ({"cands": candidates(region="atlantis")}, "cands.json",
     "candidate 'zhongwei_cluster/new-h20': field 'region' names unknown region 'atlantis'"),
    ({"cands": candidates(max_steps_per_year=-1)}, "cands.json", "max_steps_per_year"),
    ({"expansion": {"candidates": "nowhere.json"}}, "nowhere.json", "no such file"),
    ({"expansion": {"budget": 3}}, "scenario.json", "scenario: field 'expansion.budget'"),
    ({"expansion": {"year_time_limit_s": 0}}, "scenario.json", "scenario: field 'expansion.year_time_limit_s'"),
    ({"years": [2025, 2027]}, "scenario.json",
     "scenario: field 'years': with 'expansion' the years must be consecutive"),
    ({"base": ROOT / "instances" / "tiny" / "timed_valley.json"}, "scenario.json",
     "scenario: field 'expansion': the base instance has a horizon"),
])
def test_bad_input_exits_2_naming_file_object_and_field(tmp_path, capsys, change, where, message):
    path = write_case(tmp_path, **change)
    assert main(["scenario", str(path), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert where in err and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_sweep_refuses_a_scenario_with_expansion(tmp_path, capsys):
    scenario = write_case(tmp_path)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"scenario": scenario.name}))
    assert main(["sweep", str(sweep), "--backend", "serial", "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "scenario.json" in err and "field 'expansion': a sweep" in err and "Traceback" not in err


def test_the_shipped_builds_scenario_reads():
    """instances/scenario-builds.json: three consecutive years, its candidates valid against
    china-2025.json."""
    from scheduler.scenario import read_expansion, read_scenario

    path = ROOT / "instances" / "scenario-builds.json"
    spec, base, _ = read_scenario(path)
    assert spec.years == (2026, 2027, 2028) and spec.expansion is not None
    assert len(read_expansion(spec, path, base).candidates) == 5


def test_an_interrupt_in_the_optimizer_keeps_its_builds_so_far(tmp_path):
    """A stop while the expansion optimizer runs (at its bound): every year is still written and
    verifies, the summary says incomplete and the run interrupted."""
    import threading

    from scheduler.scenario import run_scenario

    stop = threading.Event()

    def hear(event) -> None:
        if "bound" in event.detail:
            stop.set()

    run = run_scenario(write_case(tmp_path), tmp_path / "out", on_event=hear, stop=stop)
    assert stop.is_set() and run.interrupted
    summary = ScenarioSummary.model_validate_json((tmp_path / "out" / "summary.json").read_text())
    assert not summary.complete and len(summary.years) == len(YEARS)
    result = ExpansionResult.model_validate_json((tmp_path / "out" / "expansion.json").read_text())
    assert result.stats["interrupted"] == 1
    for year in summary.years:
        instance = read_instance(tmp_path / "out" / year.instance_file)
        assert verify(instance, read_plan(tmp_path / "out" / year.plan_file)).ok
