"""Sweeps: the grid's variants, the same results serially, on local processes and on Ray, an
interrupted sweep keeping what it finished, and bad files or a missing Ray giving exit 2."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from models.scenario import SweepSummary
from scheduler.cli import main
from scheduler.generate import china_instance
from scheduler.sweep import SweepRun, comparable, read_sweep, tasks, variants

ROOT = Path(__file__).resolve().parent.parent

GRID = {  # 2 x 2 x 2 x 2 = 16 variants
    "growth_scale": [0.5, 1.5],
    "carbon_price_cny_per_t_co2": [None, 300],
    "outages": [{"name": "none"}, {"name": "west-out", "regions": {"zhongwei_cluster": 0.5},
                                   "pools": {"zhongwei_cluster/h800": 0.75}}],
    "seeds": [1, 2],
}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """A 60-demand China instance, a scenario to 2026 (3 GPUs more in its busiest pool, which
    the outage case takes out again: floor(0.75 x 4)), and a sweep of 16 variants of its 2026.

    Each solve is the exact engine with one worker stopped by CP-SAT's deterministic-time
    counter (0.02 of its seconds: before it proves optimality), so the plans depend on the
    seeds only, not on the machine or the backend."""
    folder = tmp_path_factory.mktemp("sweep")
    base = china_instance(demands=60, seed=3, tightness=2.0)
    (folder / "base.json").write_text(base.model_dump_json())
    (folder / "scenario.json").write_text(json.dumps({
        "base_instance": "base.json", "years": [2025, 2026], "time_limit_s": 120,
        "planned_capacity": {"2026": {"zhongwei_cluster/h800": 3}}}))
    sweep = folder / "sweep.json"
    sweep.write_text(json.dumps({
        "scenario": "scenario.json", "years": [2026], "grid": GRID,
        "solve": {"engine": "exact", "deterministic_time_limit_s": 0.02}}))
    return sweep


@pytest.fixture(scope="module")
def serial(case, tmp_path_factory) -> SweepSummary:
    run = SweepRun(case, tmp_path_factory.mktemp("serial") / "out", backend="serial")
    return run.run()


def test_the_grid_has_every_combination_once(case):
    """16 variants in a fixed order; outages take the named share of the named pools' GPUs."""
    sweep, _, spec, base, params = read_sweep(case)
    points = variants(sweep, spec, base)
    assert len(points) == sweep.points == 16
    assert len({(p.growth_scale, p.carbon_price, p.outage, p.seed) for p in points}) == 16
    assert [p.seed for p in points[:2]] == [1, 2] and points[0].growth_scale == 0.5
    zhongwei = {p.id for r in base.regions if r.id == "zhongwei_cluster" for p in r.pools}
    assert points[2].out_share == {**dict.fromkeys(zhongwei, 0.5), "zhongwei_cluster/h800": 0.75}
    assert all(t.params.workers == 1 and t.params.engine == "exact" for t in tasks(sweep, spec, base, params))


def test_serial_results_are_verified_and_some_stop_before_optimality(serial):
    """Every solve verified; the deterministic limit stops some before a proof (so equality
    below says more than 'optimal twice')."""
    years = [y for p in serial.points for y in p.years]
    assert serial.complete and len(years) == 16 and all(y.verified for y in years)
    assert {y.settings.gpus_out for y in years} == {0, 3}
    assert any(y.status == "feasible" for y in years)
    assert len({y.objective for y in years}) == 16  # every axis changes the plan


def test_local_processes_give_the_serial_results(case, serial, tmp_path):
    """Two local processes: the same figures (objective, bound, plan figures) for every solve."""
    local = SweepRun(case, tmp_path / "out", backend="local", workers=2).run()
    assert comparable(local) == comparable(serial)


def test_ray_gives_the_serial_results(case, serial, tmp_path, capsys):
    """A local Ray with 2 CPUs, from the command line: the same figures for all 16 variants."""
    pytest.importorskip("ray")
    assert main(["sweep", str(case), "--backend", "ray", "--workers", "2", "-o", str(tmp_path / "out"),
                 "-q"]) == 0
    ray = SweepSummary.model_validate_json((tmp_path / "out" / "summary.json").read_text())
    assert ray.backend == "ray" and comparable(ray) == comparable(serial)


def test_an_interrupted_sweep_keeps_what_it_finished(case, serial, tmp_path):
    """Stopped after the first solve on local processes: the finished results are in the
    summary (marked incomplete) and equal the serial ones."""
    stop = threading.Event()

    def on_event(event) -> None:
        if event.kind == "finish":
            stop.set()

    run = SweepRun(case, tmp_path / "out", backend="local", workers=2, on_event=on_event, stop=stop)
    summary = run.run()
    assert run.interrupted and not summary.complete and 1 <= summary.finished < 16
    written = SweepSummary.model_validate_json((tmp_path / "out" / "summary.json").read_text())
    assert written.finished == summary.finished
    expected = {(r["variant"], r["year"]): r for r in comparable(serial)}
    for row in comparable(written):
        assert row == expected[(row["variant"], row["year"])]


def test_a_missing_ray_says_which_extra(case, tmp_path, capsys, monkeypatch):
    """Without Ray, --backend ray exits 2 naming the extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert main(["sweep", str(case), "--backend", "ray", "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'eastwest[ray]'" in err and "Traceback" not in err


@pytest.mark.parametrize("change, message", [
    ({"grid": {"outages": [{"name": "x", "regions": {"atlantis": 0.5}}]}},
     "sweep: field 'grid.outages.0.regions.atlantis': no region 'atlantis'"),
    ({"grid": {"outages": [{"name": "x", "pools": {"guian_cluster/h20": 1.0}}]}},
     "sweep: field 'grid.outages.0.pools.guian_cluster/h20': Input should be less than 1"),
    ({"grid": {"growth_scale": [-1]}}, "sweep: field 'grid.growth_scale.0'"),
    ({"years": [2031]}, "sweep: field 'years': 2031 is not a year of the scenario"),
    ({"solve": {"iteration_limit": 0}}, "sweep: field 'solve.iteration_limit'"),
    ({"scenario": "nowhere.json"}, "nowhere.json: no such file"),
])
def test_bad_sweeps_exit_2_naming_file_object_and_field(case, tmp_path, capsys, change, message):
    """Each mistake: exit 2 with the file, 'sweep' and the field."""
    spec = {**json.loads(case.read_text()), **change, "scenario": str(case.parent / "scenario.json")}
    if "scenario" in change:
        spec["scenario"] = change["scenario"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    assert main(["sweep", str(path), "--backend", "serial", "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_the_shipped_sweep_reads():
    """instances/sweep-example.json: 16 variants of two years, deterministic solves."""
    sweep, _, spec, base, params = read_sweep(ROOT / "instances" / "sweep-example.json")
    assert sweep.points == 16 and len(tasks(sweep, spec, base, params)) == 32
    assert params.iteration_limit is not None and params.workers == 1
