"""Growth scenarios: one derived instance per year, each solved and verified, and their figures.

``year_settings`` turns a `Scenario` into what changes in each year (pure), ``derive_instance``
builds the year's instance from the base one (pure, deterministic for a seed), ``summarize``
computes the year's figures from the instance, the plan and the verifier's verdict, and
`ScenarioRun` runs the years into an output folder. The model and its choices are explained in
docs/scenarios.md.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from models import Demand, DemandKind, Instance, Plan, Sector, Verification
from models.scenario import (
    PATH_TAGS,
    HubFigures,
    RatePath,
    Scenario,
    ScenarioBuild,
    ScenarioExpansion,
    ScenarioSummary,
    SectorFigures,
    YearSettings,
    YearSummary,
)
from scheduler.io import (InputError, _load_json, _load_yaml, field_message, read_instance, read_raw,
                          write_text)
from scheduler.params import SolveParams, Stopped

SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.txt"


@cache
def default_growth() -> dict[Sector, float]:
    """The sourced default growth per sector and year (scheduler/data/growth.json)."""
    data = json.loads(resources.files("scheduler.data").joinpath("growth.json").read_text("utf-8"))
    return {Sector(name): float(item["rate"]) for name, item in data["sector_growth"].items()}


# ---------------------------------------------------------------------------------------------
# Reading spec files


def read_spec(path: str | os.PathLike, model: type[BaseModel], what: str):
    """Read and validate a scenario or sweep file (JSON, or YAML with the safe loader);
    problems become an InputError naming the file, ``what`` (the object) and the field."""
    file, raw = read_raw(path)
    data = (_load_yaml(file, raw) if file.suffix.lower() in (".yaml", ".yml")
            else _load_json(file, raw))
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(file, describe(error, what)) from None


def describe(error: ValidationError, what: str, prefix: str = "") -> list[str]:
    """pydantic's errors as "<what>: field '<prefix><a.b>': message" lines."""
    lines = []
    for item in error.errors(include_url=False):
        where = prefix + ".".join(str(k) for k in item["loc"] if k not in ("[key]", *PATH_TAGS))
        if item["type"] == "value_error" and not item["loc"]:
            lines.extend(item["msg"].removeprefix("Value error, ").splitlines())
            continue
        message = field_message(item)
        if item["type"] == "enum" and "[key]" in item["loc"]:
            message = (f"'{item['input']}' is not a sector (the sectors: "
                       f"{', '.join(s.value for s in Sector)})")
        lines.append(f"{what}: field '{where}': {message}" if where else f"{what}: {message}")
    return lines[:50]


def solve_params(overrides: dict, where: str | os.PathLike, what: str) -> SolveParams:
    """SolveParams from a spec's ``solve`` mapping; problems name the file, ``what`` and the
    field ('solve.<name>')."""
    try:
        return SolveParams.model_validate(overrides)
    except ValidationError as error:
        raise InputError(where, describe(error, what, "solve.")) from None


def read_scenario(path: str | os.PathLike) -> tuple[Scenario, Instance, SolveParams]:
    """The scenario file, its base instance and its solve parameters, each checked: unknown
    pools in planned_capacity and bad solve fields name the scenario file."""
    spec = read_spec(path, Scenario, "scenario")
    base = read_instance(base_path(spec, path))
    check_against(spec, base, path)
    if spec.expansion is not None:
        read_expansion(spec, path, base)
    params = solve_params(spec.solve, path, "scenario")
    if spec.time_limit_s is not None:
        params = params.model_copy(update={"time_limit_s": spec.time_limit_s})
    return spec, base, params


def base_path(spec: Scenario, spec_path: str | os.PathLike) -> Path:
    """The base instance's path: relative paths are relative to the scenario file."""
    target = Path(spec.base_instance)
    return target if target.is_absolute() else Path(spec_path).parent / target


def candidates_path(spec: Scenario, spec_path: str | os.PathLike) -> Path:
    """The expansion's candidates file: relative paths are relative to the scenario file."""
    target = Path(spec.expansion.candidates)
    return target if target.is_absolute() else Path(spec_path).parent / target


def read_expansion(spec: Scenario, spec_path: str | os.PathLike, base: Instance):
    """The scenario's candidate builds (a `CandidateSet`), checked against the base instance:
    problems with a candidate name the candidates file, the others the scenario file."""
    from scheduler.expansion import check_input, read_candidates

    if base.timed:
        raise InputError(spec_path, ["scenario: field 'expansion': the base instance has a horizon "
                                     "(schema version 2); expansion plans single-window instances only"])
    where = candidates_path(spec, spec_path)
    candidates = read_candidates(where)
    # every year's instance keeps the base's window, quantum, regions and horizon
    problems = check_input([(year, base) for year in spec.years], candidates.candidates)
    of_candidates = [p for p in problems if p.startswith("candidate")]
    if of_candidates:
        raise InputError(where, of_candidates)
    lines = list(dict.fromkeys(f"scenario: field 'expansion': {p}" for p in problems))
    if lines:
        raise InputError(spec_path, lines)
    return candidates


def check_against(spec: Scenario, base: Instance, where) -> None:
    """Problems a scenario has with its base instance, as an InputError naming the scenario."""
    pools = {p.id for _, p in base.pools()}
    problems = [f"scenario: field 'planned_capacity.{year}.{pool}': no pool '{pool}' in the base instance"
                for year, added in spec.planned_capacity.items() for pool in added if pool not in pools]
    problems += [f"scenario: field 'base_instance': demand '{d.id}' has no work_pflop (a scenario "
                 "grows work; demands served only through offers cannot grow)"
                 for d in base.demands if d.kind == DemandKind.BATCH and d.work_pflop is None][:5]
    if problems:
        raise InputError(where, problems)


# ---------------------------------------------------------------------------------------------
# What changes in each year


@dataclass(frozen=True)
class YearSetting:
    """The changes of one year against the base instance (factors are cumulative)."""

    year: int
    demand_factor: dict[Sector, float]
    gpus_added: dict[str, int]
    carbon_price: float | None  # None: the base instance's
    electricity_factor: float = 1.0
    accelerator_price_factor: float = 1.0
    out_share: dict[str, float] = field(default_factory=dict)  # pool id: share of GPUs out
    seed: int = 0
    scaling: str = "copies"
    label: str = ""  # the sweep variant, if any


def _rate(path: RatePath, year: int, default: float) -> float:
    if isinstance(path, dict):
        return path.get(year, default)
    return path


def year_settings(spec: Scenario, *, growth_scale: float = 1.0,
                  carbon_price: float | None = None, out_share: dict[str, float] | None = None,
                  seed: int | None = None, label: str = "") -> list[YearSetting]:
    """The setting of every year of ``spec`` (a sweep variant scales growth, fixes the carbon
    price, takes GPUs out and changes the seed)."""
    defaults = default_growth()
    out = []
    for year in spec.years:
        steps = range(spec.base_year + 1, year + 1)
        factor = {}
        for sector in Sector:
            path = spec.growth.get(sector, defaults[sector])
            f = 1.0
            for t in steps:
                f *= max(0.0, 1.0 + growth_scale * _rate(path, t, defaults[sector]))
            factor[sector] = f
        added: dict[str, int] = defaultdict(int)
        for t, pools in spec.planned_capacity.items():
            if t <= year:
                for pool, gpus in pools.items():
                    added[pool] += gpus
        price = carbon_price
        if price is None:
            listed = [t for t in spec.carbon_price_cny_per_t_co2 if t <= year]
            price = spec.carbon_price_cny_per_t_co2[max(listed)] if listed else None
        electricity = math.prod(1.0 + _rate(spec.electricity_price_change, t, 0.0) for t in steps)
        accelerator = math.prod(1.0 + _rate(spec.accelerator_price_change, t, 0.0) for t in steps)
        out.append(YearSetting(year, factor, dict(added), price, electricity, accelerator,
                               dict(out_share or {}), spec.seed if seed is None else seed,
                               spec.demand_scaling, label))
    return out


# ---------------------------------------------------------------------------------------------
# The year's instance


def demand_work(d: Demand, slot_hours: float, slots: int) -> float:
    """A demand's work in PFLOP: a batch job's work, a service's load summed over the horizon."""
    if d.kind == DemandKind.SERVICE:
        load = d.load_pflop_per_hour or ()
        per_slot = [load[t % len(load)] for t in range(slots)] if len(load) != slots else load
        return float(sum(per_slot)) * slot_hours
    return d.work_pflop or 0.0


def _scaled(d: Demand, share: float, new_id: str) -> Demand:
    """``d`` with its work (and what goes with the work) multiplied by ``share``."""
    update: dict = {"id": new_id}
    if d.kind == DemandKind.SERVICE:
        update["load_pflop_per_hour"] = tuple(v * share for v in d.load_pflop_per_hour)
        if d.traffic_gbps is not None:
            update["traffic_gbps"] = d.traffic_gbps * share
    else:
        update["work_pflop"] = d.work_pflop * share
        update["unserved_penalty_cny"] = d.unserved_penalty_cny * share
        update["data_gb"] = d.data_gb * share
        if d.max_cost_cny is not None:
            update["max_cost_cny"] = d.max_cost_cny * share
    return d.model_copy(update=update)


def copy_id(demand_id: str, copy: int) -> str:
    """The id of a demand's copy: the original keeps its id, copy k >= 1 is '<id>+<k>'."""
    return demand_id if copy == 0 else f"{demand_id}+{copy}"


def grown_demands(base: Instance, setting: YearSetting) -> list[tuple[Demand, str, float]]:
    """The year's demands as (base demand, new id, share of its work).

    copies: a sector grown by f keeps floor(f) copies of each demand, then walks its demands in
    a seeded order adding one more copy of each while the remainder (f - floor(f)) x base work
    allows, and the first that does not fit is cut to exactly what is left. work: every demand
    keeps its place, its work times f. Either way the sector's total is f x its base total.
    """
    slots = base.horizon.slots if base.horizon else 1
    slot_hours = base.horizon.slot_hours if base.horizon else 1.0
    by_sector: dict[Sector, list[Demand]] = defaultdict(list)
    for d in base.demands:
        by_sector[d.sector].append(d)
    chosen: list[tuple[Demand, str, float]] = []
    for sector in Sector:
        demands = by_sector.get(sector, [])
        f = setting.demand_factor[sector]
        if not demands or f <= 0:
            continue
        if setting.scaling == "work":
            chosen += [(d, d.id, f) for d in demands]
            continue
        whole = math.floor(f)
        chosen += [(d, copy_id(d.id, k), 1.0) for k in range(whole) for d in demands]
        work = np.array([demand_work(d, slot_hours, slots) for d in demands])
        left = (f - whole) * float(work.sum())
        order = np.random.default_rng([setting.seed, list(Sector).index(sector)]).permutation(len(demands))
        for k in order:
            if left <= 0:
                break
            d, w = demands[k], float(work[k])
            share = 1.0 if w <= left else left / w
            chosen.append((d, copy_id(d.id, whole), share))
            left -= w * share
    return chosen


def derive_instance(base: Instance, setting: YearSetting) -> Instance:
    """The year's instance: demand grown, planned GPUs added, outage shares out, prices
    changed. Pure and deterministic for the setting's seed; raises InputError naming the year
    when the result is not a valid instance."""
    chosen = grown_demands(base, setting)
    taken = {d.id for d in base.demands}
    demands, offers_of = [], defaultdict(list)
    for offer in base.offers:
        offers_of[offer.demand].append(offer)
    offers = []
    for d, new_id, share in chosen:
        if new_id != d.id and new_id in taken:
            raise InputError(f"year {setting.year}", [
                f"demand '{d.id}': the copy id '{new_id}' is already a demand of the base instance"])
        demands.append(d.model_copy(update={"id": new_id}) if share == 1.0 else _scaled(d, share, new_id))
        for offer in offers_of.get(d.id, ()):
            offers.append(offer.model_copy(update={
                "demand": new_id, "gpu_hours": offer.gpu_hours * share, "price_cny": offer.price_cny * share}))
    regions = []
    for region in base.regions:
        pools = []
        for pool in region.pools:
            count = pool.gpu_count + setting.gpus_added.get(pool.id, 0)
            count -= math.floor(count * setting.out_share.get(pool.id, 0.0))
            pools.append(pool.model_copy(update={
                "gpu_count": count,
                "price_cny_per_gpu_hour": pool.price_cny_per_gpu_hour * setting.accelerator_price_factor,
                "outages": tuple(o.model_copy(update={"gpus": min(o.gpus, count)}) for o in pool.outages),
            }))
        e = setting.electricity_factor
        update: dict = {"pools": tuple(pools),
                        "electricity_price_cny_per_kwh": region.electricity_price_cny_per_kwh * e}
        if region.electricity_price_by_slot_cny_per_kwh is not None:
            update["electricity_price_by_slot_cny_per_kwh"] = tuple(
                v * e for v in region.electricity_price_by_slot_cny_per_kwh)
        regions.append(region.model_copy(update=update))
    weights = base.weights
    if setting.carbon_price is not None:
        weights = weights.model_copy(update={"carbon_price_cny_per_t_co2": setting.carbon_price})
    suffix = f"-{setting.label}" if setting.label else ""
    fields = {name: getattr(base, name) for name in type(base).model_fields}
    fields.update(name=f"{base.name}-{setting.year}{suffix}"[:256], regions=tuple(regions),
                  demands=tuple(demands), offers=tuple(offers), weights=weights)
    try:
        return Instance(**fields)
    except ValidationError as error:
        raise InputError(f"year {setting.year}{suffix}", [
            line for e in error.errors(include_url=False)
            for line in str(e["msg"]).removeprefix("Value error, ").splitlines()][:20]) from None


# ---------------------------------------------------------------------------------------------
# The year's figures


def hub_of(region) -> str:
    """A region's hub (its 'hub:<id>' tag), or the region itself where it names none."""
    hubs = [t.removeprefix("hub:") for t in region.tags if t.startswith("hub:")]
    if not hubs:
        return region.id
    return "no hub" if hubs[0] == "none" else hubs[0]


def summarize(instance: Instance, plan: Plan, verification: Verification, setting: YearSetting,
              base: Instance, built: int = 0) -> YearSummary:
    """The year's figures, computed from the instance, the plan and the verifier's verdict
    (``built``: GPUs of the expansion's builds in the instance)."""
    slots = instance.horizon.slots if instance.horizon else 1
    slot_hours = instance.horizon.slot_hours if instance.horizon else 1.0
    by_id = {d.id: d for d in instance.demands}
    work = {d.id: demand_work(d, slot_hours, slots) for d in instance.demands}
    rows: dict[Sector, list[float]] = {s: [0, 0, 0.0, 0.0, 0.0] for s in Sector}
    for d in instance.demands:
        rows[d.sector][0] += 1
        rows[d.sector][2] += work[d.id]
    for a in plan.assignments:
        row = rows[by_id[a.demand].sector]
        row[1] += 1
        row[3] += work[a.demand]
    for s in plan.services:
        row = rows[by_id[s.demand].sector]
        row[3] += max(0.0, work[s.demand] - s.unserved_pflop)
        row[1] += 1 if s.unserved_pflop < work[s.demand] else 0
        row[4] += s.penalty_cny
    for u in plan.unserved:
        rows[by_id[u.demand].sector][4] += u.penalty_cny
    sectors = tuple(
        SectorFigures(sector=s, demands=int(n), served_demands=int(served), demand_pflop=total,
                      served_pflop=min(done, total), unserved_pflop=max(0.0, total - done),
                      served_share=min(1.0, done / total) if total else None, penalty_cny=penalty)
        for s, (n, served, total, done, penalty) in rows.items() if n)
    usage = {u.pool: u for u in plan.pools}
    hubs: dict[str, list[float]] = {}
    for region in instance.regions:
        for pool in region.pools:
            row = hubs.setdefault(hub_of(region), [0, 0, 0.0, 0.0])
            row[0] += 1
            row[1] += pool.gpu_count
            if pool.id in usage:
                row[2] += usage[pool.id].used_gpu_hours
                row[3] += usage[pool.id].capacity_gpu_hours
    hub_rows = tuple(HubFigures(hub=h, pools=int(p), gpus=int(g), used_gpu_hours=u, capacity_gpu_hours=c,
                                utilization=u / c if c else None)
                     for h, (p, g, u, c) in sorted(hubs.items()))
    c = plan.costs
    operating = c.compute_cny + c.energy_cny + c.transfer_cny + c.carbon_cny
    served = sum(f.served_pflop for f in sectors)
    demand = sum(f.demand_pflop for f in sectors)
    base_gpus = {p.id: p.gpu_count for _, p in base.pools()}
    gpus = sum(p.gpu_count for _, p in instance.pools())
    added = sum(setting.gpus_added.values())
    weights = instance.weights
    return YearSummary(
        year=setting.year, instance=instance.name, status=plan.status.value,
        objective=plan.objective, lower_bound=plan.lower_bound, gap=plan.gap,
        verified=verification.ok, violations=len(verification.violations),
        engine=plan.stats.engine, wall_time_s=plan.stats.wall_time_s,
        settings=YearSettings(
            demand_factor=setting.demand_factor, gpus_added=added, gpus_built=built,
            gpus_out=sum(base_gpus.values()) + added + built - gpus,
            carbon_price_cny_per_t_co2=weights.carbon_price_cny_per_t_co2,
            electricity_price_factor=setting.electricity_factor,
            accelerator_price_factor=setting.accelerator_price_factor),
        demands=len(instance.demands), gpus=gpus, demand_pflop=demand, served_pflop=served,
        unserved_pflop=max(0.0, demand - served), operating_cost_cny=operating,
        unserved_penalty_cny=c.unserved_penalty_cny,
        cost_per_pflop_cny=operating / served if served > 0 else None,
        co2_t=c.co2_t, energy_kwh=c.energy_kwh, sectors=sectors, hubs=hub_rows)


def solve_year(base: Instance, setting: YearSetting, params: SolveParams, *,
               stop: threading.Event | None = None, on_progress=None,
               keep_instance: bool = False) -> tuple[YearSummary, Plan, Instance | None]:
    """Derive, solve and summarize one year; the plan is verified inside `solve`."""
    from scheduler.solve import VerificationError, solve

    instance = derive_instance(base, setting)
    try:
        result = solve(instance, params, on_progress=on_progress, stop=stop)
    except VerificationError as error:  # a bug: recorded as an unverified year
        result = error.result
    summary = summarize(instance, result.plan, result.verification, setting, base)
    return summary, result.plan, instance if keep_instance else None


# ---------------------------------------------------------------------------------------------
# Running a scenario into a folder


@dataclass(frozen=True)
class RunEvent:
    """What a long run tells its progress display: an item started, finished, or a solve's
    progress (``detail``)."""

    kind: str  # "start", "finish" or "solve"
    item: str
    done: int
    total: int
    running: tuple[str, ...] = ()
    detail: str = ""


def prepare_output(folder: str | os.PathLike, kind: str, *, force: bool,
                   ) -> Path:
    """Create ``folder`` or accept it: empty, a previous output of the same command (its
    summary.json says so), or anything with ``force``. Inputs inside it are never written over
    (every write protects them)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(out, ["is a file, not a folder"])
    if out.is_dir() and any(out.iterdir()) and not force:
        marker = out / SUMMARY_FILE
        previous = None
        if marker.is_file():
            try:
                previous = json.loads(marker.read_text("utf-8")).get("kind")
            except (OSError, ValueError, AttributeError):
                previous = None
        if previous != kind:
            raise InputError(out, [f"is not empty and not a previous output of this command "
                                   f"(no {SUMMARY_FILE} of kind '{kind}'); use --force to write into it"])
    out.mkdir(parents=True, exist_ok=True)
    return out


class ScenarioRun:
    """Runs a scenario's years in order into a folder; summary.json after every year."""

    def __init__(self, spec: Scenario, spec_path: str | os.PathLike, base: Instance,
                 params: SolveParams, out: Path, *, write_instances: bool = False,
                 on_event: Callable[[RunEvent], None] | None = None,
                 stop: threading.Event | None = None):
        self.spec, self.spec_path, self.base, self.params = spec, Path(spec_path), base, params
        self.out, self.write_instances = out, write_instances
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.protect = (self.spec_path, base_path(spec, spec_path))
        if spec.expansion is not None:
            self.protect += (candidates_path(spec, spec_path),)
        self.done: list[YearSummary] = []
        self.expansion: ScenarioExpansion | None = None
        self.interrupted = False

    def run(self) -> list[YearSummary]:
        """Solve every year; an interrupt keeps the years done (``interrupted`` set)."""
        settings = year_settings(self.spec)
        if self.spec.expansion is not None:
            return self._run_expansion(settings)
        total = len(settings)
        for setting in settings:
            if self.stop.is_set():
                self.interrupted = True
                break
            label = str(setting.year)
            self.on_event(RunEvent("start", label, len(self.done), total, (label,)))

            def progress(report, label=label) -> None:
                if report.objective is not None or report.bound is not None:
                    gap = ("" if report.gap is None else f" gap {100 * report.gap:.2f}%")
                    self.on_event(RunEvent("solve", label, len(self.done), total, (label,),
                                           f"{report.engine} {report.elapsed_s:.0f} s{gap}"))
            try:
                summary, plan, instance = solve_year(self.base, setting, self.params, stop=self.stop,
                                                     on_progress=progress,
                                                     keep_instance=self.write_instances)
            except Stopped:
                self.interrupted = True
                break
            if self.stop.is_set():  # the year's search was cut short: not kept
                self.interrupted = True
                break
            summary = self._write_year(summary, plan, instance)
            self.done.append(summary)
            self.write_summary(complete=False)
            self.on_event(RunEvent("finish", label, len(self.done), total, (), year_line(summary)))
        self.write_summary(complete=not self.interrupted and len(self.done) == total)
        return self.done

    def _run_expansion(self, settings: list[YearSetting]) -> list[YearSummary]:
        """Every year at once: the expansion optimizer chooses the builds and each year's
        placement (docs/expansion.md); each year's instance, with its builds, is written. An
        interrupt while the optimizer runs ends its search: the builds so far, each year solved
        briefly, are written, and the summary is marked incomplete."""
        from models.expansion import ExpansionParams
        from scheduler.expansion import ExpansionInputError, plan_expansion

        ex = self.spec.expansion
        where = candidates_path(self.spec, self.spec_path)
        candidates = read_expansion(self.spec, self.spec_path, self.base)
        total = len(settings)
        if self.stop.is_set():
            self.interrupted = True
            self.write_summary(complete=False)
            return self.done
        self.on_event(RunEvent("start", "expansion", 0, total, ("expansion",)))
        years = [(s.year, derive_instance(self.base, s)) for s in settings]
        params = ExpansionParams(time_limit_s=ex.time_limit_s, year_time_limit_s=ex.year_time_limit_s,
                                 seed=self.params.seed, workers=self.params.workers, savings=ex.savings,
                                 lp_max_options=ex.lp_max_options)
        try:
            run = plan_expansion(years, candidates.candidates, params, on_progress=lambda text: self.on_event(
                RunEvent("solve", "expansion", 0, total, ("expansion",), text.strip())), stop=self.stop)
        except ExpansionInputError as error:
            raise InputError(self.spec_path, [f"scenario: field 'expansion': {p}" for p in error.problems]) from None
        year_rows = []
        for setting, instance, result, row in zip(settings, run.instances, run.plans,
                                                  run.result.year_summaries, strict=True):
            summary = summarize(instance, result.plan, result.verification, setting, self.base,
                                built=sum(row.built_gpus.values()))
            summary = self._write_year(summary, result.plan, instance)
            self.done.append(summary)
            year_rows.append(row.model_copy(update={"plan_file": summary.plan_file}))
        result = run.result.model_copy(update={"year_summaries": tuple(year_rows)})
        write_text(result.model_dump_json(indent=1), self.out / "expansion.json", protect=self.protect)
        self.expansion = ScenarioExpansion(
            candidates_file=str(where), status=result.status.value, objective_cny=result.objective_cny,
            lower_bound_cny=result.lower_bound_cny, gap=result.gap, capital_cny=result.capital_cny,
            operating_cny=result.operating_cny, bound_method=result.bound_method,
            wall_time_s=float(result.stats.get("wall_time_s", 0.0)),
            builds=tuple(ScenarioBuild(candidate=b.candidate, region=b.region, accelerator=b.accelerator,
                                       year=b.year, usable_from_year=b.usable_from_year, gpus=b.gpus,
                                       capital_cny=b.capital_cny, saving_cny=b.saving_cny)
                         for b in result.builds))
        self.interrupted = bool(result.stats.get("interrupted"))
        self.write_summary(complete=not self.interrupted)
        self.on_event(RunEvent("finish", "expansion", total, total, (),
                               f"gap {_pct(result.gap, 2)}, {len(result.builds)} build(s)"))
        return self.done

    def _write_year(self, summary: YearSummary, plan: Plan, instance: Instance | None) -> YearSummary:
        plan_name = f"plan-{summary.year}.json"
        write_text(plan.model_dump_json(indent=1), self.out / plan_name, protect=self.protect)
        instance_name = None
        if instance is not None:
            instance_name = f"instance-{summary.year}.json"
            write_text(instance.model_dump_json(indent=1), self.out / instance_name, protect=self.protect)
        return summary.model_copy(update={"plan_file": plan_name, "instance_file": instance_name})

    def summary(self, complete: bool) -> ScenarioSummary:
        return ScenarioSummary(
            name=self.spec.name, scenario_file=str(self.spec_path),
            base_instance=str(base_path(self.spec, self.spec_path)), base_year=self.spec.base_year,
            years_planned=self.spec.years, complete=complete, years=tuple(self.done),
            expansion=self.expansion)

    def write_summary(self, complete: bool) -> None:
        summary = self.summary(complete)
        write_text(summary.model_dump_json(indent=1), self.out / SUMMARY_FILE, protect=self.protect)
        write_text(tables(summary.years, complete=complete, expansion=summary.expansion) + "\n",
                   self.out / TABLE_FILE, protect=self.protect)


def run_scenario(spec_path: str | os.PathLike, out: str | os.PathLike, *, params: SolveParams | None = None,
                 force: bool = False, write_instances: bool = False,
                 on_event: Callable[[RunEvent], None] | None = None,
                 stop: threading.Event | None = None) -> ScenarioRun:
    """Read a scenario file and run it into ``out`` (the library face of `eastwest scenario`).
    ``params`` replaces the file's solve parameters."""
    spec, base, file_params = read_scenario(spec_path)
    folder = prepare_output(out, "eastwest-scenario", force=force)
    run = ScenarioRun(spec, spec_path, base, params or file_params, folder,
                      write_instances=write_instances, on_event=on_event, stop=stop)
    run.run()
    return run


# ---------------------------------------------------------------------------------------------
# Tables


def year_line(s: YearSummary) -> str:
    """One line per year, for progress when the output is piped."""
    gap = "-" if s.gap is None else f"{100 * s.gap:.2f}%"
    share = f"{100 * s.served_pflop / s.demand_pflop:.1f}%" if s.demand_pflop else "-"
    check = "verified" if s.verified else f"VERIFICATION FAILED ({s.violations})"
    return f"{s.status} gap {gap} served {share} {s.demands:,} demands {s.wall_time_s:.1f} s {check}"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _sig(value: float | None) -> str:
    """Four significant digits (costs per PFLOP are fractions of a yuan)."""
    return "-" if value is None else f"{value:.4g}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def overview_table(years) -> str:
    """One row per year: status, gap, demand and served work, cost per PFLOP, tCO2."""
    from scheduler.report import table

    rows = [[str(s.year), s.status, _pct(s.gap, 2), f"{s.demands:,}", _num(s.demand_pflop),
             _pct(s.served_pflop / s.demand_pflop if s.demand_pflop else None),
             _sig(s.cost_per_pflop_cny), _num(s.co2_t, 1), f"{s.gpus:,}",
             "yes" if s.verified else "NO"] for s in years]
    return table(["year", "status", "gap", "demands", "demand PFLOP", "served", "CNY/PFLOP", "tCO2",
                  "GPUs", "verified"], rows)


def year_tables(s: YearSummary) -> str:
    """The year's sectors and hubs."""
    from scheduler.report import table

    sectors = table(["sector", "demands", "demand PFLOP", "served PFLOP", "unserved PFLOP", "served"],
                    [[f.sector.value, f"{f.demands:,}", _num(f.demand_pflop), _num(f.served_pflop),
                      _num(f.unserved_pflop), _pct(f.served_share)] for f in s.sectors],
                    total=["total", f"{s.demands:,}", _num(s.demand_pflop), _num(s.served_pflop),
                           _num(s.unserved_pflop),
                           _pct(s.served_pflop / s.demand_pflop if s.demand_pflop else None)])
    used = sum(h.used_gpu_hours for h in s.hubs)
    capacity = sum(h.capacity_gpu_hours for h in s.hubs)
    hubs = table(["hub", "pools", "GPUs", "used GPU-h", "utilization"],
                 [[h.hub, str(h.pools), f"{h.gpus:,}", _num(h.used_gpu_hours), _pct(h.utilization)]
                  for h in s.hubs],
                 total=["total", str(sum(h.pools for h in s.hubs)), f"{s.gpus:,}", _num(used),
                        _pct(used / capacity if capacity else None)])
    st = s.settings
    head = (f"{s.year}: {s.status}, objective {_num(s.objective, 2)}, bound {_num(s.lower_bound, 2)}, "
            f"gap {_pct(s.gap, 3)}, {'verified' if s.verified else 'VERIFICATION FAILED'}\n"
            f"cost {_sig(s.cost_per_pflop_cny)} CNY/PFLOP, {_num(s.co2_t, 1)} tCO2, carbon price "
            f"{st.carbon_price_cny_per_t_co2:g} CNY/t, electricity x{st.electricity_price_factor:.3f}, "
            f"GPU-hour price x{st.accelerator_price_factor:.3f}, +{st.gpus_added:,} GPUs planned"
            + (f", +{st.gpus_built:,} built" if st.gpus_built else ""))
    return "\n\n".join([head, sectors, hubs])


def builds_table(expansion: ScenarioExpansion) -> str:
    """What to build where and when, and the expansion's objective, bound and gap."""
    from scheduler.report import money, table

    rows = [[b.candidate, b.region, b.accelerator, str(b.year), str(b.usable_from_year), f"{b.gpus:,}",
             money(b.capital_cny), money(b.saving_cny)] for b in expansion.builds]
    head = ("builds (expansion; CNY per year summed over the years: capital annualized, saving "
            "re-solved without the build)")
    body = (table(["candidate", "region", "accelerator", "built", "usable", "GPUs", "capital CNY",
                   "saving CNY"], rows) if rows else "(nothing to build)")
    foot = (f"objective {money(expansion.objective_cny)} CNY, bound {money(expansion.lower_bound_cny)}, "
            f"gap {_pct(expansion.gap, 3)}, {expansion.status} ({expansion.wall_time_s:.0f} s)")
    return "\n".join([head, body, foot])


def tables(years, *, complete: bool = True, expansion: ScenarioExpansion | None = None) -> str:
    """The readable summary: the overview, the builds (with expansion), then each year's tables."""
    parts = [overview_table(years)] + ([builds_table(expansion)] if expansion else [])
    parts += [year_tables(s) for s in years]
    if not complete:
        parts.append("(incomplete: not every year has been solved)")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# JSON Schemas


def spec_schema(model: type[BaseModel]) -> dict:
    """The JSON Schema of a scenario or sweep file, its ``solve`` field described by SolveParams'
    own schema (the same as docs/schema/params.schema.json)."""
    schema = model.model_json_schema()
    params = SolveParams.model_json_schema()
    params.pop("$defs", None)
    schema.setdefault("$defs", {})["SolveParams"] = params
    solve = schema["properties"]["solve"]
    schema["properties"]["solve"] = {"$ref": "#/$defs/SolveParams", "description": solve.get("description", "")}
    return schema
