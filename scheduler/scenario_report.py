"""One self-contained HTML page for a scenario's folder (the output of `eastwest scenario`): the
years side by side (docs/report.md, "A scenario's years").

The figures per year come from the folder's summary.json (`YearSummary`: demand, served and
unserved work by sector, utilization by hub, cost per PFLOP, tCO2), and the maps from each year's
plan with its instance (``instance-<year>.json`` where written, else derived again from the
scenario file, which is deterministic). Every plan is checked again by the independent verifier
and the page says what it found. The page is put together from `scheduler.html_report`'s pieces
(`map_data`, `map_svg`, `page`, `html_table`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from models import Instance, Plan, Verification
from models.scenario import ScenarioSummary, YearSummary
from scheduler.html_report import (
    _STYLE,
    MapData,
    Section,
    _pyplot,
    _svg,
    flow_weight,
    hub_names,
    html_table,
    map_data,
    map_svg,
    page,
)
from scheduler.io import InputError, read_instance, read_plan, read_raw
from scheduler.report import money, percent

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class Year:
    """One year of the folder: its figures, instance, plan and the verifier's verdict."""

    summary: YearSummary
    instance: Instance
    plan: Plan
    verification: Verification


def is_scenario_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def read_scenario_summary(folder: str | os.PathLike) -> ScenarioSummary:
    """The folder's summary.json; problems name the file and field (InputError)."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise InputError(folder, [f"no {SUMMARY_FILE}: not an output folder of 'eastwest scenario'"])
    file, raw = read_raw(path)
    if b'"eastwest-sweep"' in raw[:200]:
        raise InputError(file, ["is a sweep's summary; 'eastwest report' reads the folder of one "
                                "scenario ('eastwest scenario -o DIR')"])
    try:
        summary = ScenarioSummary.model_validate_json(raw)
    except ValidationError as error:
        from scheduler.scenario import describe

        raise InputError(file, describe(error, "scenario summary")) from None
    if not summary.years:
        raise InputError(file, ["scenario summary: field 'years': no year has been solved yet"])
    return summary


def load_years(folder: str | os.PathLike, summary: ScenarioSummary) -> list[Year]:
    """Each year's instance and plan, checked against each other and verified."""
    from scheduler.verify import verify

    folder = Path(folder)
    derived = None
    years = []
    for s in summary.years:
        if not s.plan_file:
            raise InputError(folder / SUMMARY_FILE, [f"year {s.year}: field 'plan_file' is missing"])
        plan = read_plan(folder / s.plan_file)
        if s.instance_file and (folder / s.instance_file).is_file():
            instance = read_instance(folder / s.instance_file)
        else:
            if derived is None:
                derived = _derivable(folder, summary)
            instance = derived(s.year)
        if plan.instance != instance.name:
            raise InputError(folder / s.plan_file, [
                f"plan: field 'instance' is '{plan.instance}'; the year's instance is '{instance.name}'"])
        _check_match(instance, plan, folder / s.plan_file)
        years.append(Year(s, instance, plan, verify(instance, plan)))
    return years


def _derivable(folder: Path, summary: ScenarioSummary):
    """A function year -> instance, deriving the years again from the scenario file."""
    from scheduler.scenario import derive_instance, read_scenario, year_settings

    named = Path(summary.scenario_file)
    where = next((p for p in (named, folder / named.name) if p.is_file()), None)
    if where is None:
        raise InputError(folder / SUMMARY_FILE, [
            f"scenario summary: field 'scenario_file': '{summary.scenario_file}' is not found and the "
            "folder has no instance-<year>.json (run 'eastwest scenario' with --instances)"])
    spec, base, _ = read_scenario(where)
    if spec.expansion is not None:
        raise InputError(folder / SUMMARY_FILE, [
            "scenario summary: a year's instance-<year>.json is missing (a scenario with expansion "
            "writes them: its builds are part of each year's instance)"])
    settings = {s.year: s for s in year_settings(spec)}

    def instance(year: int) -> Instance:
        if year not in settings:
            raise InputError(where, [f"scenario: field 'years': {year} is in the summary, not in the file"])
        return derive_instance(base, settings[year])

    return instance


def _check_match(instance: Instance, plan: Plan, path: Path) -> None:
    demands = {d.id for d in instance.demands}
    pools = {p.id for _, p in instance.pools()}
    problems = [f"field 'demand' names unknown demand '{x.demand}'"
                for x in (*plan.assignments, *plan.unserved, *plan.services) if x.demand not in demands]
    problems += [f"assignment '{a.demand}': field 'pool' names unknown pool '{a.pool}'"
                 for a in plan.assignments if a.pool not in pools]
    if problems:
        raise InputError(path, problems[:20])


# ---------------------------------------------------------------------------------------------
# Figures


def sector_svg(years: list[YearSummary], *, name: str = "sectors") -> str:
    """Small multiples, one per sector: served and unserved PFLOP stacked, one bar per year."""
    plt = _pyplot()
    sectors = sorted({f.sector.value for s in years for f in s.sectors})
    cols = min(4, max(1, len(sectors)))
    rows = -(-len(sectors) // cols)
    labels = [str(s.year) for s in years]
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= len(sectors):
                ax.set_axis_off()
                continue
            of = [{f.sector.value: f for f in s.sectors}.get(sectors[k]) for s in years]
            served = [f.served_pflop if f else 0.0 for f in of]
            unserved = [f.unserved_pflop if f else 0.0 for f in of]
            x = np.arange(len(years))
            ax.bar(x, served, color="#2563eb", label="served")
            ax.bar(x, unserved, bottom=served, color="#f59e0b", label="unserved")
            ax.set_xticks(x, labels, fontsize=6.5, rotation=45 if len(years) > 6 else 0)
            ax.set_title(sectors[k], fontsize=8)
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.tick_params(axis="y", labelsize=6.5)
        axes.flat[0].legend(fontsize=6.5, loc="upper left")
        fig.supylabel("PFLOP", fontsize=8)
        fig.tight_layout()
        return _svg(fig, name)


def hub_svg(years: list[YearSummary], *, name: str = "hubs") -> str:
    """Utilization by hub (rows) and year (columns), each cell labelled with its percentage."""
    plt = _pyplot()
    hubs = sorted({h.hub for s in years for h in s.hubs})
    share = np.full((len(hubs), len(years)), np.nan)
    for j, s in enumerate(years):
        for h in s.hubs:
            if h.utilization is not None:
                share[hubs.index(h.hub), j] = h.utilization
    names = hub_names()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(years), 0.6 + 0.3 * len(hubs)))
        cmap = plt.get_cmap("YlOrRd").with_extremes(bad="#d4d4d4")
        image = ax.imshow(share, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        for i in range(len(hubs)):
            for j in range(len(years)):
                if not np.isnan(share[i, j]):
                    ax.text(j, i, f"{100 * share[i, j]:.0f}%", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "#222")
        ax.set_yticks(range(len(hubs)), [names.get(h, h) for h in hubs], fontsize=7)
        ax.set_xticks(range(len(years)), [str(s.year) for s in years], fontsize=7)
        bar = fig.colorbar(image, ax=ax, pad=0.02, fraction=0.05)
        bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        bar.set_label("GPU-hours used / capacity", fontsize=7)
        return _svg(fig, name)


def trend_svg(years: list[YearSummary], *, name: str = "trends") -> str:
    """Cost per PFLOP served and tCO2 by year, side by side."""
    plt = _pyplot()
    x = [s.year for s in years]
    with plt.rc_context(_STYLE):
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.8))
        cost = [np.nan if s.cost_per_pflop_cny is None else s.cost_per_pflop_cny for s in years]
        a.plot(x, cost, marker="o", color="#2563eb")
        a.set_title("operating cost per PFLOP served (CNY)")
        b.plot(x, [s.co2_t for s in years], marker="o", color="#15803d")
        b.set_title("emissions (t CO2)")
        for ax in (a, b):
            ax.set_xticks(x, [str(v) for v in x], fontsize=7)
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.4g}"))
        fig.tight_layout()
        return _svg(fig, name)


# ---------------------------------------------------------------------------------------------
# Sections


def overview_section(years: list[Year], built: bool = False) -> Section:
    """Each year's figures; ``built``: with the expansion's GPUs usable that year."""
    rows = []
    for y in years:
        s = y.summary
        rows.append([str(s.year), s.status, percent(s.gap, 2), f"{s.demands:,}", f"{s.demand_pflop:,.0f}",
                     f"{s.served_pflop:,.0f}", f"{s.unserved_pflop:,.0f}",
                     percent(s.served_pflop / s.demand_pflop if s.demand_pflop else None),
                     "-" if s.cost_per_pflop_cny is None else f"{s.cost_per_pflop_cny:.4g}",
                     f"{s.co2_t:,.1f}", f"{s.gpus:,}", f"+{s.settings.gpus_added:,}",
                     *([f"+{s.settings.gpus_built:,}"] if built else []),
                     f"{s.settings.carbon_price_cny_per_t_co2:g}",
                     "ok" if y.verification.ok else f"{len(y.verification.violations)} violation(s)"])
    table = html_table(["year", "status", "gap", "demands", "demand PFLOP", "served PFLOP", "unserved PFLOP",
                        "served", "CNY/PFLOP", "t CO2", "GPUs", "planned GPUs",
                        *(["built GPUs"] if built else []), "carbon CNY/t", "verifier"], rows)
    note = ("<p class=note>Cost per PFLOP: compute, energy, transfer and carbon (the objective's operating "
            "terms) over the work served; penalties of unserved work are not in it. 'verifier': each "
            "plan checked again by the independent verifier against its year's instance.</p>")
    return Section("overview", "Years", trend_svg([y.summary for y in years]) + note + table)


def sectors_section(years: list[Year]) -> Section:
    summaries = [y.summary for y in years]
    sectors = sorted({f.sector.value for s in summaries for f in s.sectors})
    rows = []
    for sector in sectors:
        row = [sector]
        for s in summaries:
            f = {x.sector.value: x for x in s.sectors}.get(sector)
            row.append("-" if f is None else f"{percent(f.served_share)} of {f.demand_pflop:,.0f}")
        rows.append(row)
    table = html_table(["sector", *(str(s.year) for s in summaries)], rows)
    note = "<p class=note>Share of the demand served, of the demand in PFLOP, per sector and year.</p>"
    return Section("sectors", "Demand, served and unserved by sector", sector_svg(summaries) + note + table)


def hubs_section(years: list[Year]) -> Section:
    summaries = [y.summary for y in years]
    hubs = sorted({h.hub for s in summaries for h in s.hubs})
    names = hub_names()
    rows = []
    for hub in hubs:
        row = [names.get(hub, hub)]
        for s in summaries:
            h = {x.hub: x for x in s.hubs}.get(hub)
            row.append("-" if h is None else f"{percent(h.utilization)} of {h.gpus:,}")
        rows.append(row)
    table = html_table(["hub", *(str(s.year) for s in summaries)], rows)
    note = ("<p class=note>GPU-hours used over capacity by hub (regions without a hub by region), "
            "with each year's GPUs (planned additions and builds included).</p>")
    return Section("hubs", "Utilization by hub", hub_svg(summaries) + note + table)


def maps_section(years: list[Year], maps: list[MapData]) -> Section:
    """One map per year, flows and points on scales shared by all the years."""
    units = {flow_weight(m)[0] for m in maps}
    unit = "PFLOP" if units == {"PFLOP"} else "GPU-h"
    weight = (lambda f: f.work_pflop) if unit == "PFLOP" else (lambda f: f.gpu_hours)
    top = max((weight(f) for m in maps for f in m.flows if f.origin != f.target), default=0.0)
    biggest = max((s.capacity_gpu_hours for m in maps for s in m.sites), default=0.0) or None
    figures = []
    for y, m in zip(years, maps, strict=True):
        moved = sum(weight(f) for f in m.flows if f.origin != f.target)
        svg = map_svg(m, name=f"map-{y.summary.year}", hub_names=hub_names(), scale=(top, biggest))
        figures.append(f"<figure><figcaption>{y.summary.year}: {moved:,.0f} {unit} moved between "
                       f"regions</figcaption>{svg}</figure>")
    note = ("<p class=note>Each year's flows of work from the region of a demand's data to the region "
            "where it runs, and each region's capacity (point area) and utilization (colour), on scales "
            "shared by all the years: line widths against the largest flow of any year, point areas "
            "against the largest capacity of any year.</p>")
    return Section("maps", "Maps by year", note + '<div class="multiples">' + "".join(figures) + "</div>")


def scenario_report(folder: str | os.PathLike) -> tuple[str, list[Year]]:
    """The page for a scenario's folder, and its years (each with the verifier's verdict).
    Raises InputError for a folder, summary or plan that cannot be read or does not match."""
    import json

    summary = read_scenario_summary(folder)
    years = load_years(folder, summary)
    maps = [map_data(y.instance, y.plan) for y in years]
    sections = [overview_section(years, summary.expansion is not None), sectors_section(years),
                hubs_section(years), maps_section(years, maps)]
    builds = builds_section(summary)
    if builds is not None:
        sections.insert(1, builds)
    bad = [y.summary.year for y in years if not y.verification.ok]
    gaps = [y.summary.gap for y in years if y.summary.gap is not None]
    facts = [("years", f"{years[0].summary.year}-{years[-1].summary.year} ({len(years)} solved"
                       f"{'' if summary.complete else ', incomplete'})"),
             ("base year", str(summary.base_year)),
             ("largest gap of a year", percent(max(gaps), 3) if gaps else "-"),
             *([("expansion gap", percent(summary.expansion.gap, 3)),
                ("builds", f"{sum(b.gpus for b in summary.expansion.builds):,} GPUs")]
               if summary.expansion else []),
             ("verifier", "ok, every year" if not bad else f"FAILED in {', '.join(map(str, bad))}")]
    data = {"eastwest-scenario-summary": summary.model_dump_json(),
            "eastwest-map-data": json.dumps({str(y.summary.year): json.loads(m.to_json())
                                             for y, m in zip(years, maps, strict=True)},
                                            separators=(",", ":"))}
    return page(f"eastwest scenario: {summary.name}", facts, sections, data), years


def builds_section(summary: ScenarioSummary) -> Section | None:
    """What to build where and when, where the scenario chose builds (its ``expansion``)."""
    expansion = summary.expansion
    if expansion is None:
        return None
    rows = [[b.candidate, b.region, b.accelerator, str(b.year), str(b.usable_from_year), f"{b.gpus:,}",
             money(b.capital_cny), money(b.saving_cny)] for b in expansion.builds]
    body = html_table(["candidate", "region", "accelerator", "built", "usable from", "GPUs",
                       "capital CNY", "saving CNY"], rows) if rows else "<p>Nothing is built.</p>"
    bound = html_table(["objective CNY/yr, all years", "proven lower bound", "gap", "status"],
                       [[money(expansion.objective_cny), money(expansion.lower_bound_cny),
                         percent(expansion.gap, 3), expansion.status]])
    note = ("<p class=note>Chosen by the expansion optimizer (docs/expansion.md): annualized capital "
            "plus operating cost plus unserved penalties over the years, with its proven bound; "
            "saving: the objective re-solved without the build minus with it.</p>")
    return Section("builds", "Builds: what to build where and when", body + bound + note)


def write_scenario_report(folder: str | os.PathLike, path: str | os.PathLike) -> list[Year]:
    """`scenario_report` written to ``path`` atomically, never over the folder's files."""
    from scheduler.io import write_text

    text, years = scenario_report(folder)
    write_text(text, path, protect=tuple(Path(folder).glob("*.json")))
    return years


__all__ = ["Year", "hub_svg", "read_scenario_summary", "scenario_report", "sector_svg", "trend_svg",
           "write_scenario_report"]
