"""The HTML report: a self-contained page whose figures add up to the plan's, written atomically,
refusing plans that do not match their instance, and loading in a real headless browser.

The plans are solved (and so verified) on small synthetic China instances: 120 demands in one
window, and 120 demands over 48 one-hour slots (batch jobs and services).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from scheduler import SolveParams, china_instance, solve, write_instance, write_plan
from scheduler.cli import main

pytest.importorskip("matplotlib")  # the `report` extra, part of the `test` extra

from scheduler.html_report import (  # noqa: E402
    MissingExtra,
    carbon,
    html_report,
    map_data,
    unserved_work,
    utilization,
    write_html_report,
)

SECTIONS = ("map", "utilization", "costs", "unserved", "carbon", "sectors")


def solved(hours: int | None):
    instance = china_instance(demands=120, seed=5, hours=hours)
    return instance, solve(instance, SolveParams(time_limit_s=3, seed=0, workers=1)).plan


@pytest.fixture(scope="module")
def window():
    return solved(None)


@pytest.fixture(scope="module")
def week():
    return solved(48)


@pytest.fixture(scope="module", params=["window", "week"])
def case(request):
    """Each plan with its page."""
    instance, plan = request.getfixturevalue(request.param)
    return instance, plan, html_report(instance, plan)


def embedded(page: str, name: str) -> dict:
    found = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', page, re.S)
    assert found, f"no {name} in the page"
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_page_refers_to_nothing_outside_itself(case):
    """Every src/href is an anchor in the page or a data: URI; no stylesheet, script or font is loaded."""
    _, _, page = case
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert references, "expected the table of contents' links"
    assert all(r.startswith(("#", "data:")) for r in references), [r for r in references
                                                                  if not r.startswith(("#", "data:"))]
    assert not re.search(r"url\(\s*['\"]?(?!#|data:)", page)
    assert not re.search(r"<link\b|@import|<script\b[^>]*\bsrc=|<iframe\b", page)


def test_page_has_every_section_with_a_figure(case):
    """Map, utilization, costs, unserved work, carbon and sectors, each a section; the map is an SVG."""
    instance, plan, page = case
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    body = page.split('<section id="map">', 1)[1].split("</section>", 1)[0]
    assert "<svg" in body and "<table>" in body
    assert page.count("<svg") >= 5
    if instance.horizon is not None:
        assert "Carbon by hour and region" in page and "slot (1 h each)" in page


def test_flows_add_up_to_the_plans_placements(case):
    """The map's flows (in the page's data) carry exactly the plan's GPU-hours and work, origin by origin."""
    instance, plan, page = case
    data = embedded(page, "eastwest-map-data")
    demands = {d.id: d for d in instance.demands}
    hours = instance.horizon.slot_hours if instance.horizon else instance.window_hours
    expected: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # by origin
    for a in plan.assignments:
        row = expected[demands[a.demand].origin]
        row[0] += 1
        row[1] += demands[a.demand].work_pflop
        row[2] += a.gpu_hours
    for s in plan.services:
        for p in s.placements:
            row = expected[demands[s.demand].origin]
            row[0] += 1
            row[1] += sum(p.served_pflop_per_hour) * hours
            row[2] += p.gpu_hours
    got: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for f in data["flows"]:
        for k, field in enumerate(("demands", "work_pflop", "gpu_hours")):
            got[f["origin"]][k] += f[field]
    assert set(got) == set(expected)
    for origin, row in expected.items():
        assert got[origin][0] == row[0]
        assert math.isclose(got[origin][1], row[1], rel_tol=1e-9)
        assert math.isclose(got[origin][2], row[2], rel_tol=1e-9)
    # Every GPU-hour the plan's pools report used is on some flow (the verifier checked those).
    used = sum(u.used_gpu_hours for u in plan.pools)
    assert math.isclose(sum(f["gpu_hours"] for f in data["flows"]), used, rel_tol=1e-9)
    # The sites are the instance's regions, where the instance puts them.
    assert [(s["id"], s["lat"], s["lon"]) for s in data["sites"]] == [(r.id, r.lat, r.lon)
                                                                      for r in instance.regions]


def test_carbon_by_slot_adds_up_to_the_plans_co2(case):
    """Recomputed slot by slot from gang, power, PUE and each slot's grid intensity, the emissions
    total the plan's own (verified) figure, region by region."""
    instance, plan, _ = case
    c = carbon(instance, plan)
    assert math.isclose(c.kg.sum() / 1000, plan.costs.co2_t, rel_tol=1e-6)
    by_region: dict[str, float] = defaultdict(float)
    for a in plan.assignments:
        by_region[a.region] += a.co2_kg
    for s in plan.services:
        for p in s.placements:
            by_region[p.region] += p.co2_kg
    for k, region in enumerate(c.regions):
        assert math.isclose(c.kg[k].sum(), by_region.get(region, 0.0), rel_tol=1e-6, abs_tol=1e-9)


def test_a_batch_jobs_carbon_lies_in_the_slots_it_runs(week):
    """One job alone: its emissions fall in slots start .. end - 1 and nowhere else."""
    instance, plan = week
    a = max(plan.assignments, key=lambda x: x.end_slot - x.start_slot)
    c = carbon(instance, plan.model_copy(update={"assignments": (a,), "services": ()}))
    row = c.kg[c.regions.index(a.region)]
    assert set(row.nonzero()[0]) <= set(range(a.start_slot, a.end_slot))
    assert row[a.start_slot] > 0 and math.isclose(row.sum(), a.co2_kg, rel_tol=1e-6)
    assert c.kg.sum() == row.sum()


def test_utilization_is_the_plans_gpus_by_group(week):
    """Slot by slot, the heatmap's GPUs in use are the plan's reported GPUs per pool, summed by hub."""
    instance, plan = week
    u = utilization(instance, plan, "region")
    for k, region in enumerate(u.groups):
        reported = [0] * instance.horizon.slots
        for usage in plan.pools:
            if usage.region == region:
                reported = [x + y for x, y in zip(reported, usage.gpus_by_slot, strict=True)]
        assert u.used[k].tolist() == reported, region
    assert u.used.sum() == utilization(instance, plan, "hub").used.sum()


def test_utilization_of_one_window_is_the_plans_gpu_hours(window):
    """Without a horizon: one column per group, the GPU-hours used and the capacity."""
    instance, plan = window
    u = utilization(instance, plan, "region")
    assert u.used.shape == (len(u.groups), 1)
    assert math.isclose(u.used.sum(), sum(x.used_gpu_hours for x in plan.pools), rel_tol=1e-9)
    assert math.isclose(u.available.sum(), sum(x.capacity_gpu_hours for x in plan.pools), rel_tol=1e-9)


def test_unserved_work_adds_up_to_the_penalty(case):
    """The unserved rows by sector and reason carry every unserved demand and the whole penalty."""
    instance, plan, page = case
    rows = unserved_work(instance, plan)
    assert sum(r.penalty_cny for r in rows) == pytest.approx(plan.costs.unserved_penalty_cny, rel=1e-9)
    assert sum(r.demands for r in rows) == len(plan.unserved) + sum(s.unserved_pflop > 0 for s in plan.services)
    for r in rows:
        assert f"<td>{r.sector}</td><td>{r.reason}</td>" in page


def test_a_plan_naming_an_unknown_demand_is_refused_by_the_library(window):
    """The library names the object and the field."""
    instance, plan = window
    stray = plan.assignments[0].model_copy(update={"demand": "ghost"})
    with pytest.raises(ValueError, match="assignment 'ghost': field 'demand'"):
        map_data(instance, plan.model_copy(update={"assignments": (stray, *plan.assignments[1:])}))


@pytest.fixture
def files(tmp_path, week):
    instance, plan = week
    write_instance(instance, tmp_path / "week.json")
    write_plan(plan, tmp_path / "plan.json")
    return tmp_path


def test_cli_writes_the_report(files, capsys):
    """`eastwest report` exits 0, writes one page and says where; the verifier's verdict is in it."""
    out = files / "report.html"
    assert main(["report", str(files / "week.json"), str(files / "plan.json"), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "verifier <b>ok</b>" in page
    assert "report written to" in capsys.readouterr().out
    assert out.stat().st_size < 3 * 1024**2


@pytest.mark.parametrize("change, fragment", [
    (lambda p: {"assignments": (p.assignments[0].model_copy(update={"pool": "nowhere"}),)},
     "field 'pool' names unknown pool 'nowhere'"),
    (lambda p: {"assignments": (p.assignments[0].model_copy(update={"start_slot": None}),)},
     "field 'start_slot' is missing; the instance has a horizon"),
    (lambda p: {"services": (p.services[0].model_copy(update={"demand": "ghost"}),)},
     "field 'demand' names unknown demand 'ghost'"),
])
def test_cli_refuses_a_plan_that_does_not_match(files, capsys, week, change, fragment):
    """Exit 2, the plan file named, the object and the field; nothing written."""
    _, plan = week
    bad = files / "bad.json"
    write_plan(plan.model_copy(update=change(plan)), bad)
    out = files / "report.html"
    assert main(["report", str(files / "week.json"), str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and fragment in err and "Traceback" not in err
    assert not out.exists()


def test_cli_missing_files_and_protected_inputs(files, capsys):
    """A missing file and an output over an input are refused with exit 2; the input is intact."""
    plan_file = files / "plan.json"
    before = plan_file.read_bytes()
    assert main(["report", str(files / "week.json"), str(files / "nope.json"), "-o", str(files / "r.html")]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["report", str(files / "week.json"), str(plan_file), "-o", str(plan_file)]) == 2
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert plan_file.read_bytes() == before


def test_write_is_atomic(tmp_path, window, monkeypatch):
    """A failure while writing leaves the old report whole and no temporary file behind."""
    instance, plan = window
    out = tmp_path / "report.html"
    out.write_text("old report")

    def broken(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_html_report(instance, plan, out)
    assert out.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_without_matplotlib_the_extra_is_named(window, monkeypatch, capsys, tmp_path):
    """The library raises MissingExtra, the command exits 1; both name eastwest[report]."""
    instance, plan = window
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=re.escape("eastwest[report]")):
        html_report(instance, plan)
    assert main(["report", "x.json", "y.json", "-o", str(tmp_path / "r.html")]) == 1
    assert "pip install 'eastwest[report]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A real browser.

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless, offline, with a fresh profile; console messages logged to stderr."""
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=180)


def load_in_chromium(page: Path, tmp_path: Path, sections, size: tuple[int, int]):
    """Load ``page`` from file:// in headless Chromium: no console message, every section in the
    DOM, and a screenshot that is not blank and shows the flows' orange (#c2410c at 25-75% on
    the map's land). Returns the screenshot."""
    from PIL import Image

    shot = tmp_path / "shot.png"
    done = headless(browser(), tmp_path / "profile", f"--screenshot={shot}",
                    f"--window-size={size[0]},{size[1]}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    dom = headless(browser(), tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in sections:
        assert f'<section id="{section}">' in dom.stdout
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # not one colour: a page with a map
    orange = sum(n for n, (r, g, b) in colours if r > 180 and 60 < g < 160 and b < 110)
    assert orange > 200
    return image


@pytest.mark.skipif(browser() is None, reason="no Chromium installed")
def test_page_loads_in_headless_chromium(week, tmp_path):
    """The week's page loads from file:// with no console message; the DOM has every section;
    the screenshot is not blank and shows the flows' orange."""
    instance, plan = week
    page = tmp_path / "report.html"
    write_html_report(instance, plan, page)
    image = load_in_chromium(page, tmp_path, SECTIONS, (1200, 1400))
    assert image.size == (1200, 1400)
