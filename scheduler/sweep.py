"""Sweeps: one scenario over a grid of variants, every (variant, year) one solve, run serially,
on local processes or on Ray, with the same results for the same seeds.

Each solve runs with one worker and the spec's fixed seed; with a deterministic limit
(``iteration_limit`` for the large engine, ``deterministic_time_limit_s`` for the exact one) or
a solve that ends proven optimal, its plan does not depend on where or when it runs. The
backends only differ in where `run_task` is called. Ray is optional (``eastwest[ray]``).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from models import Instance
from models.scenario import Scenario, Sweep, SweepPoint, SweepSummary, YearSummary
from scheduler.io import InputError, write_text
from scheduler.params import SolveParams
from scheduler.scenario import (
    SUMMARY_FILE,
    TABLE_FILE,
    RunEvent,
    YearSetting,
    base_path,
    overview_table,
    prepare_output,
    read_scenario,
    read_spec,
    solve_params,
    solve_year,
    year_line,
    year_settings,
)

BACKENDS = ("serial", "local", "ray")


@dataclass(frozen=True)
class Variant:
    """One point of the grid."""

    id: str
    growth_scale: float
    carbon_price: float | None
    outage: str
    out_share: dict[str, float]
    seed: int


@dataclass(frozen=True)
class Task:
    """One solve: a variant's year. Everything a worker needs besides the base instance."""

    variant: str
    setting: YearSetting
    params: SolveParams
    want_plan: bool


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: the year's figures (and the plan's JSON if asked)."""

    variant: str
    summary: YearSummary
    plan_json: str | None


def read_sweep(path: str | os.PathLike) -> tuple[Sweep, Path, Scenario, Instance, SolveParams]:
    """The sweep file, its scenario (path), the scenario, the base instance and the solve
    parameters (the scenario's, then the sweep's, with one worker)."""
    sweep = read_spec(path, Sweep, "sweep")
    scenario_path = Path(sweep.scenario)
    if not scenario_path.is_absolute():
        scenario_path = Path(path).parent / scenario_path
    spec, base, params = read_scenario(scenario_path)
    merged = params.model_dump() | sweep.solve | {"workers": 1}
    params = solve_params(merged, path, "sweep")
    if spec.expansion is not None:
        raise InputError(scenario_path, ["scenario: field 'expansion': a sweep solves each year on its "
                                         "own and cannot choose builds; run the scenario with "
                                         "'eastwest scenario', or name the builds in planned_capacity"])
    problems = []
    if sweep.years is not None:
        problems += [f"sweep: field 'years': {y} is not a year of the scenario"
                     for y in sweep.years if y not in spec.years]
    regions = {r.id: r for r in base.regions}
    pools = {p.id for _, p in base.pools()}
    for k, case in enumerate(sweep.grid.outages):
        problems += [f"sweep: field 'grid.outages.{k}.regions.{r}': no region '{r}' in the base instance"
                     for r in case.regions if r not in regions]
        problems += [f"sweep: field 'grid.outages.{k}.pools.{p}': no pool '{p}' in the base instance"
                     for p in case.pools if p not in pools]
    if problems:
        raise InputError(path, problems)
    return sweep, scenario_path, spec, base, params


def variants(sweep: Sweep, spec: Scenario, base: Instance) -> list[Variant]:
    """The grid's points, in a fixed order (growth, carbon price, outage, seed)."""
    g = sweep.grid
    out = []
    for k, (scale, price, case, seed) in enumerate(itertools.product(
            g.growth_scale, g.carbon_price_cny_per_t_co2, g.outages, g.seeds or (spec.seed,))):
        share: dict[str, float] = {}
        for region in base.regions:
            for pool in region.pools:
                s = max(case.regions.get(region.id, 0.0), case.pools.get(pool.id, 0.0))
                if s > 0:
                    share[pool.id] = s
        out.append(Variant(f"v{k:03d}", scale, price, case.name, share, seed))
    return out


def tasks(sweep: Sweep, spec: Scenario, base: Instance, params: SolveParams) -> list[Task]:
    """Every solve of the sweep: the variants' years, variant by variant."""
    years = set(sweep.years or spec.years)
    out = []
    for v in variants(sweep, spec, base):
        run_params = params.model_copy(update={"seed": v.seed})
        for setting in year_settings(spec, growth_scale=v.growth_scale, carbon_price=v.carbon_price,
                                     out_share=v.out_share, seed=v.seed, label=v.id):
            if setting.year in years:
                out.append(Task(v.id, setting, run_params, sweep.plans))
    return out


# ---------------------------------------------------------------------------------------------
# Workers

_BASES: dict[str, Instance] = {}


def _base(text: str) -> Instance:
    """The base instance from its JSON text, parsed once per process."""
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _BASES:
        _BASES.clear()
        _BASES[key] = Instance.model_validate_json(text)
    return _BASES[key]


def run_task(base_json: str, task: Task) -> Outcome:
    """One solve, where a backend runs it: derive the year, solve it (one worker), summarize."""
    summary, plan, _ = solve_year(_base(base_json), task.setting, task.params)
    return Outcome(task.variant, summary, plan.model_dump_json(indent=1) if task.want_plan else None)


_LOCAL_BASE: list[str] = []  # a local worker's base instance JSON, from its initializer


def _start_local_worker(base_json: str) -> None:
    """A local worker leaves Ctrl-C to the parent (which stops it) and keeps the base instance."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _LOCAL_BASE[:] = [base_json]
    _base(base_json)


def _run_local(task: Task) -> Outcome:
    return run_task(_LOCAL_BASE[0], task)


class Backend:
    """Runs tasks, at most ``workers`` at a time, and yields outcomes as they finish."""

    def __init__(self, base_json: str, workers: int):
        self.base_json, self.workers = base_json, max(1, workers)

    def run(self, todo: list[Task], stop: threading.Event,
            started: Callable[[Task], None]) -> Iterator[tuple[Task, Outcome]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what is still running."""


class SerialBackend(Backend):
    """In this process, one task after another."""

    def run(self, todo, stop, started):
        for task in todo:
            if stop.is_set():
                return
            started(task)
            yield task, run_task(self.base_json, task)


class LocalBackend(Backend):
    """Local processes (concurrent.futures, spawn context)."""

    def __init__(self, base_json: str, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        super().__init__(base_json, workers)
        self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_local_worker, initargs=(base_json,))

    def run(self, todo, stop, started):
        from concurrent.futures import FIRST_COMPLETED, wait

        queue, flying = list(reversed(todo)), {}
        while queue or flying:
            while queue and len(flying) < self.workers and not stop.is_set():
                task = queue.pop()
                started(task)
                flying[self.pool.submit(_run_local, task)] = task
            if not flying:
                return
            finished, _ = wait(list(flying), timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                yield flying.pop(future), future.result()
            if stop.is_set() and flying:
                return

    def close(self) -> None:
        # Running solves are not waited for: their processes are ended (concurrent.futures has
        # no public way to do that before Python 3.14's terminate_workers()).
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)


class RayBackend(Backend):
    """Ray tasks: a local Ray (``workers`` CPUs) unless ``address`` names a cluster."""

    def __init__(self, base_json: str, workers: int, address: str | None):
        super().__init__(base_json, workers)
        ray = ray_module()
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:  # a local Ray whose workers import the same eastwest as this process
                package_root = str(Path(__file__).resolve().parent.parent)
                path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self.base_ref = ray.put(base_json)
        self.flying: dict = {}

    def run(self, todo, stop, started):
        ray = self.ray
        queue = list(reversed(todo))
        while queue or self.flying:
            while queue and len(self.flying) < self.workers and not stop.is_set():
                task = queue.pop()
                started(task)
                self.flying[self.remote.remote(self.base_ref, task)] = task
            if not self.flying:
                return
            ready, _ = ray.wait(list(self.flying), num_returns=1, timeout=0.2)
            for ref in ready:
                yield self.flying.pop(ref), ray.get(ref)
            if stop.is_set() and self.flying:
                return

    def close(self) -> None:
        for ref in self.flying:
            self.ray.cancel(ref, force=True)
        self.flying.clear()
        if self.started_here:
            self.ray.shutdown()


def ray_module():
    """Ray, or an InputError (exit 2) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--backend ray", [
            "needs Ray, which is not installed: pip install 'eastwest[ray]' (or use --backend local)"
        ]) from None
    return ray


def make_backend(name: str, base_json: str, workers: int, address: str | None) -> Backend:
    if name == "serial":
        return SerialBackend(base_json, 1)
    if name == "local":
        return LocalBackend(base_json, workers)
    if name == "ray":
        return RayBackend(base_json, workers, address)
    raise InputError("--backend", [f"'{name}' is not one of {', '.join(BACKENDS)}"])


# ---------------------------------------------------------------------------------------------
# Running a sweep into a folder


class SweepRun:
    """Runs a sweep's solves on a backend into a folder; summary.json as solves finish."""

    def __init__(self, sweep_path: str | os.PathLike, out: str | os.PathLike, *, backend: str = "local",
                 workers: int | None = None, address: str | None = None, force: bool = False,
                 on_event: Callable[[RunEvent], None] | None = None,
                 stop: threading.Event | None = None):
        self.sweep_path = Path(sweep_path)
        self.sweep, self.scenario_path, self.spec, self.base, self.params = read_sweep(sweep_path)
        self.backend_name = backend
        self.workers = workers or max(1, min(os.cpu_count() or 1, 8))
        self.address = address
        self.out = prepare_output(out, "eastwest-sweep", force=force)
        self.protect = (self.sweep_path, self.scenario_path, base_path(self.spec, self.scenario_path))
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.variants = variants(self.sweep, self.spec, self.base)
        self.todo = tasks(self.sweep, self.spec, self.base, self.params)
        self.results: dict[tuple[str, int], YearSummary] = {}
        self.interrupted = False

    def run(self) -> SweepSummary:
        """Run every solve; an interrupt keeps the finished ones (``interrupted`` set)."""
        base_json = self.base.model_dump_json()
        backend = make_backend(self.backend_name, base_json, self.workers, self.address)
        running: dict[str, None] = {}
        total = len(self.todo)

        def started(task: Task) -> None:
            name = f"{task.variant} {task.setting.year}"
            running[name] = None
            self.on_event(RunEvent("start", name, len(self.results), total, tuple(running)))

        try:
            for task, outcome in backend.run(self.todo, self.stop, started):
                name = f"{task.variant} {task.setting.year}"
                running.pop(name, None)
                summary = outcome.summary
                if outcome.plan_json is not None:
                    plan_name = f"plan-{task.variant}-{task.setting.year}.json"
                    write_text(outcome.plan_json, self.out / plan_name, protect=self.protect)
                    summary = summary.model_copy(update={"plan_file": plan_name})
                self.results[(task.variant, task.setting.year)] = summary
                self.write_summary(complete=False)
                self.on_event(RunEvent("finish", name, len(self.results), total, tuple(running),
                                       year_line(summary)))
        finally:
            backend.close()
        self.interrupted = len(self.results) < total
        return self.write_summary(complete=not self.interrupted)

    def summary(self, complete: bool) -> SweepSummary:
        points = []
        for v in self.variants:
            years = tuple(self.results[(v.id, y)] for y in self.spec.years if (v.id, y) in self.results)
            points.append(SweepPoint(id=v.id, growth_scale=v.growth_scale,
                                     carbon_price_cny_per_t_co2=v.carbon_price, outage=v.outage,
                                     seed=v.seed, years=years))
        return SweepSummary(name=self.sweep.name, sweep_file=str(self.sweep_path),
                            scenario_file=str(self.scenario_path), backend=self.backend_name,
                            solves=len(self.todo), finished=len(self.results), complete=complete,
                            points=tuple(points))

    def write_summary(self, complete: bool) -> SweepSummary:
        summary = self.summary(complete)
        write_text(summary.model_dump_json(indent=1), self.out / SUMMARY_FILE, protect=self.protect)
        write_text(sweep_table(summary) + "\n", self.out / TABLE_FILE, protect=self.protect)
        return summary


def sweep_table(summary: SweepSummary) -> str:
    """The readable summary: each variant's settings, then its years."""
    parts = []
    for p in summary.points:
        price = "scenario's" if p.carbon_price_cny_per_t_co2 is None else f"{p.carbon_price_cny_per_t_co2:g}"
        parts.append(f"{p.id}: growth x{p.growth_scale:g}, carbon price {price} CNY/t, outage "
                     f"{p.outage}, seed {p.seed}\n" + (overview_table(p.years) if p.years else "(not run)"))
    if not summary.complete:
        parts.append(f"(incomplete: {summary.finished} of {summary.solves} solves finished)")
    return "\n\n".join(parts)


def comparable(summary: SweepSummary) -> list[dict]:
    """The results without the wall-clock figures, for comparing runs on different backends."""
    return [{**y.model_dump(exclude={"wall_time_s"}), "variant": p.id}
            for p in summary.points for y in p.years]
