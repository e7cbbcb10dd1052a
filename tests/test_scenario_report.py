"""The report of a scenario's folder: one self-contained page with the years side by side, whose
figures are the summary's and the plans', refusing folders and plans that do not match, and
loading in a real headless browser.

The scenario is tiny: 40 demands of the synthetic China network over three years (a few seconds).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from models.scenario import ScenarioSummary
from scheduler import china_instance, write_instance
from scheduler.cli import main
from scheduler.io import read_plan
from scheduler.scenario import run_scenario

pytest.importorskip("matplotlib")

from scheduler.scenario_report import load_years, read_scenario_summary  # noqa: E402
from tests.test_html_report import browser, embedded, load_in_chromium  # noqa: E402

SECTIONS = ("overview", "sectors", "hubs", "maps")
YEARS = [2025, 2026, 2027]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny scenario run into a folder (without --instances: the report derives the years)."""
    where = tmp_path_factory.mktemp("scenario")
    write_instance(china_instance(demands=40, seed=5), where / "base.json")
    (where / "scenario.json").write_text(json.dumps({
        "name": "tiny-china", "base_instance": "base.json", "years": YEARS, "seed": 3,
        "planned_capacity": {"2026": {"guian_cluster/h20": 4}}, "carbon_price_cny_per_t_co2": {"2027": 200},
        "solve": {"workers": 1, "seed": 0}, "time_limit_s": 5}))
    run = run_scenario(where / "scenario.json", where / "out")
    assert not run.interrupted and len(run.done) == 3
    return where / "out"


@pytest.fixture(scope="module")
def report(folder, tmp_path_factory):
    """The page, written by `eastwest report DIR`, and the years it read."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(folder), "-o", str(out)]) == 0
    return out.read_text(), load_years(folder, read_scenario_summary(folder))


def test_page_is_self_contained_with_every_section(report):
    """Every section, one map per year; nothing is loaded from outside the page."""
    page, years = report
    assert page.startswith("<!DOCTYPE html>") and [y.summary.year for y in years] == YEARS
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert all(f'aria-label="map-{year}"' in page for year in YEARS)
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert references and all(r.startswith(("#", "data:")) for r in references)
    assert not re.search(r"<link\b|@import|<script\b[^>]*\bsrc=|<iframe\b", page)
    assert "verifier <b>ok, every year</b>" in page
    assert "builds" not in re.findall(r'<section id="(\w+)">', page)  # no expansion in this scenario


def test_the_pages_figures_are_the_summarys_and_the_plans(folder, report):
    """The embedded summary is summary.json; each year's flows add up to its plan's GPU-hours."""
    page, years = report
    summary = ScenarioSummary.model_validate_json((folder / "summary.json").read_text())
    assert ScenarioSummary.model_validate(embedded(page, "eastwest-scenario-summary")) == summary
    maps = embedded(page, "eastwest-map-data")
    assert sorted(maps) == [str(y) for y in YEARS]
    for y in years:
        plan = read_plan(folder / f"plan-{y.summary.year}.json")
        flows = maps[str(y.summary.year)]["flows"]
        assert math.isclose(sum(f["gpu_hours"] for f in flows),
                            sum(a.gpu_hours for a in plan.assignments), rel_tol=1e-9, abs_tol=1e-6)
        assert y.instance.name == plan.instance
    # the sector table's cells are the summary's
    first = summary.years[0].sectors[0]
    assert f"{100 * first.served_share:.1f}% of {first.demand_pflop:,.0f}" in page


def test_cli_refuses_what_does_not_fit(folder, tmp_path, capsys):
    """Exit 2 naming the file, object and field: not a scenario folder (or a sweep's), a plan
    given with a folder, a plan of another instance, the scenario file gone; an output over an
    input."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert "no summary.json" in capsys.readouterr().err
    (empty / "summary.json").write_text(json.dumps({"kind": "eastwest-sweep", "points": []}))
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert "is a sweep's summary" in capsys.readouterr().err
    assert main(["report", str(folder), str(folder / "plan-2025.json"), "-o", str(tmp_path / "r.html")]) == 2
    assert "give no plan with it" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    plan = json.loads((copy / "plan-2026.json").read_text())
    plan["instance"] = "elsewhere"
    (copy / "plan-2026.json").write_text(json.dumps(plan))
    assert main(["report", str(copy), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "plan-2026.json" in err and "field 'instance' is 'elsewhere'" in err and "Traceback" not in err
    summary = json.loads((copy / "summary.json").read_text())
    summary["scenario_file"] = str(tmp_path / "gone.json")
    (copy / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(copy), "-o", str(tmp_path / "r.html")]) == 2
    assert "field 'scenario_file'" in capsys.readouterr().err
    before = (folder / "summary.json").read_bytes()
    assert main(["report", str(folder), "-o", str(folder / "summary.json")]) == 2
    assert (folder / "summary.json").read_bytes() == before
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(browser() is None, reason="no Chromium installed")
def test_page_loads_in_headless_chromium(folder, tmp_path):
    """The page loads from file:// with no console message, every section is in the DOM, and
    the screenshot shows the maps' flows (orange)."""
    page = tmp_path / "report.html"
    assert main(["report", str(folder), "-o", str(page)]) == 0
    load_in_chromium(page, tmp_path, SECTIONS, (1200, 4000))
