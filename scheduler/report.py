"""Readable summaries of a plan: aligned text tables with totals."""

from __future__ import annotations

import codecs
import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from models import BEIJING, PERIOD_NAMES, QUANTUM_SLACK, DemandKind, Instance, Plan, Verification


def table(
    headers: list[str],
    rows: list[list[str]],
    *,
    total: list[str] | None = None,
    max_width: int | None = None,
    ellipsis: str = "…",
    names: tuple[int, ...] = (0,),
) -> str:
    """An aligned text table; the first column is left-aligned, the others right-aligned.

    With ``max_width``, a table wider than that shortens its ``names`` columns, the widest first
    (cut names end in ``ellipsis``), down to 4 characters each.
    """
    body = rows + ([total] if total else [])
    widths = [max(len(str(r[c])) for r in [headers, *body]) for c in range(len(headers))]
    if max_width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > max_width:
            widest = max(names, key=lambda c: widths[c])
            if widths[widest] <= 4:
                break
            widths[widest] -= 1
        headers, rows = _shorten(headers, widths, names, ellipsis), [
            _shorten(r, widths, names, ellipsis) for r in rows]
        total = _shorten(total, widths, names, ellipsis) if total else None

    def line(row: list[str]) -> str:
        cells = [
            str(v).ljust(widths[c]) if c == 0 else str(v).rjust(widths[c]) for c, v in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule, *(line(r) for r in rows)]
    if total:
        out += [rule, line(total)]
    return "\n".join(out)


def _shorten(row: list[str], widths: list[int], names: tuple[int, ...], ellipsis: str) -> list[str]:
    return [shorten(str(v), widths[c], ellipsis) if c in names else v for c, v in enumerate(row)]


def shorten(text: str, width: int, ellipsis: str = "…") -> str:
    """``text`` cut to ``width`` characters, ending in ``ellipsis`` where it was cut."""
    return text if len(text) <= width else text[: max(0, width - len(ellipsis))] + ellipsis


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def sector_table(instance: Instance, plan: Plan, *, max_width: int | None = None, ellipsis: str = "…") -> str:
    """Served and unserved demands and work by sector.

    A service counts as served when all its load is served and as unserved when any of it is not;
    the work column shows how much of its load was served.
    """
    sector = {d.id: d.sector.value for d in instance.demands}
    work = {d.id: d.work_pflop or 0.0 for d in instance.demands}
    counts: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for a in plan.assignments:
        row = counts[sector[a.demand]]
        row[0] += 1
        row[2] += work[a.demand]
        row[4] += a.cost_cny
    for u in plan.unserved:
        row = counts[sector[u.demand]]
        row[1] += 1
        row[3] += work[u.demand]
    slot_hours = instance.horizon.slot_hours if instance.horizon is not None else 1.0
    for s in plan.services:
        row = counts[sector[s.demand]]
        served = sum(sum(p.served_pflop_per_hour) for p in s.placements) * slot_hours
        row[0 if s.unserved_pflop <= 0 else 1] += 1
        row[2] += served
        row[3] += s.unserved_pflop
        row[4] += sum(p.cost_cny for p in s.placements)
    rows, totals = [], [0, 0, 0.0, 0.0, 0.0]
    for name in sorted(counts):
        row = counts[name]
        totals = [t + v for t, v in zip(totals, row, strict=True)]
        rows.append(_sector_row(name, row))
    return table(
        ["sector", "served", "unserved", "served work", "cost CNY"],
        rows,
        total=_sector_row("total", totals),
        max_width=max_width,
        ellipsis=ellipsis,
    )


def _sector_row(name: str, row: list[float]) -> list[str]:
    served, unserved, served_work, unserved_work, cost = row
    share = served_work / (served_work + unserved_work) if served_work + unserved_work else None
    return [name, f"{int(served):,}", f"{int(unserved):,}", percent(share), money(cost)]


def region_table(instance: Instance, plan: Plan, *, max_width: int | None = None, ellipsis: str = "…") -> str:
    """Capacity used by region (regions without pools are left out)."""
    used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for usage in plan.pools:
        used[usage.region][0] += usage.used_gpu_hours
        used[usage.region][1] += usage.capacity_gpu_hours
    rows = []
    total = [0.0, 0.0]
    for region in instance.regions:
        if region.id not in used:
            continue
        u, c = used[region.id]
        total = [total[0] + u, total[1] + c]
        rows.append([region.id, f"{u:,.0f}", f"{c:,.0f}", percent(u / c if c else None)])
    return table(
        ["region", "used GPU-h", "capacity GPU-h", "utilization"],
        rows,
        total=["total", f"{total[0]:,.0f}", f"{total[1]:,.0f}",
               percent(total[0] / total[1] if total[1] else None)],
        max_width=max_width,
        ellipsis=ellipsis,
    )


def cost_table(plan: Plan) -> str:
    """The objective split into its terms."""
    c = plan.costs
    rows = [
        ["compute", money(c.compute_cny)],
        ["energy", money(c.energy_cny)],
        ["transfer", money(c.transfer_cny)],
        ["carbon", money(c.carbon_cny)],
        ["unserved penalty", money(c.unserved_penalty_cny)],
    ]
    return table(["cost term", "CNY"], rows, total=["objective", money(plan.objective)])


def headline(plan: Plan, verification: Verification | None = None) -> str:
    """Status, objective, bound, gap and how the plan was found."""
    s = plan.stats
    checked = ""
    if verification is not None:
        checked = "  verified" if verification.ok else f"  VERIFICATION FAILED ({len(verification.violations)})"
    return (
        f"status {plan.status.value}  objective {money(plan.objective)}  "
        f"lower bound {money(plan.lower_bound)}  gap {percent(plan.gap, 3)}{checked}\n"
        f"engine {s.engine}  {s.wall_time_s:.1f} s  {s.demands:,} demands  {s.pools:,} pools  "
        f"{s.options:,} options  energy {plan.costs.energy_kwh:,.0f} kWh  CO2 {plan.costs.co2_t:,.1f} t"
    )


# ---------------------------------------------------------------------------------------------
# Plans over a horizon (docs/formulation.md §8): the sections over time.
#
# Presentation only: the GPU chart and the shifting figures are recomputed from the instance and
# the plan's decisions (starts, pools, replicas), the other figures are the plan's own. Nothing
# here checks the plan; `verify` does.


@dataclass(frozen=True)
class Glyphs:
    """The characters the charts are drawn with."""

    ramp: str  # 9 levels: idle, then up to 1/8 ... 8/8 of the available GPUs
    over: str  # more in use than available
    none: str  # no GPU available (every GPU out)
    ellipsis: str
    arrow: str
    window: str  # a batch job may run here but does not
    moving: str  # a batch job's data moves
    running: str


UNICODE = Glyphs(" ▁▂▃▄▅▆▇█", "!", "×", "…", "→", "·", "»", "█")
ASCII = Glyphs(" .:-=+*#@", "!", "x", "~", "->", ".", ">", "#")

POOL_GROUPS = ("hub", "region", "accelerator")
CHART_GROUPS = 12  # the most pool groups the summary charts; `eastwest show` charts them all
TOP_LINKS = 5
TOP_SHIFTS = 5
DAY_ROWS = 14  # up to this many days, one chart row per day; beyond, one character per day


def glyphs_for(encoding: str | None) -> Glyphs:
    """`UNICODE` where the stream's encoding is UTF-8, else `ASCII`."""
    try:
        name = codecs.lookup(encoding or "ascii").name
    except LookupError:
        return ASCII
    return UNICODE if name.startswith("utf-") else ASCII


def beijing(moment: datetime, fmt: str = "%a %Y-%m-%d %H:%M") -> str:
    """A date-time in Beijing time."""
    return moment.astimezone(BEIJING).strftime(fmt)


def wrap_fields(text: str, width: int) -> str:
    """Each line of ``text`` broken between its double-space-separated fields to fit ``width``
    (a field longer than that between its words, the rest indented)."""
    out = []
    for line in text.split("\n"):
        current = ""
        for field in line.split("  "):
            if current and len(current) + 2 + len(field) > width:
                out.append(current)
                current = field
            else:
                current = f"{current}  {field}" if current else field
        out.extend(textwrap.wrap(current, width, subsequent_indent="  ", break_on_hyphens=False) or [""])
    return "\n".join(out)


class Timeline:
    """Per-slot arrays of one horizon plan, recomputed from the instance and the plan's decisions."""

    def __init__(self, instance: Instance, plan: Plan):
        h = instance.horizon
        self.instance = instance
        self.horizon = h
        self.slots = h.slots
        self.slot_hours = h.slot_hours
        pairs = instance.pools()
        self.pool_ids = [p.id for _, p in pairs]
        self.pool_index = {pid: k for k, pid in enumerate(self.pool_ids)}
        self.pool_region = [r for r, _ in pairs]
        self.demands = {d.id: d for d in instance.demands}
        self.region_index = {r.id: k for k, r in enumerate(instance.regions)}
        # Available GPUs: gpu_count minus the outages (difference arrays, one row per pool).
        diff = np.zeros((len(pairs), self.slots + 1), dtype=np.int64)
        for k, (_, pool) in enumerate(pairs):
            diff[k, 0] += pool.gpu_count
            for outage in pool.outages:
                diff[k, outage.start_slot] -= outage.gpus
                diff[k, outage.end_slot] += outage.gpus
        self.available = np.cumsum(diff, axis=1)[:, : self.slots]
        # GPUs in use: each batch job's gang over [start, end), each service replica's gang.
        diff = np.zeros((len(pairs), self.slots + 1), dtype=np.int64)
        timed = [a for a in plan.assignments if a.start_slot is not None and a.pool in self.pool_index]
        if timed:
            rows = np.array([self.pool_index[a.pool] for a in timed])
            gang = np.array([self.demands[a.demand].gang_size if a.demand in self.demands else 0
                             for a in timed])
            start = np.clip([a.start_slot for a in timed], 0, self.slots)
            end = np.clip([a.end_slot if a.end_slot is not None else a.start_slot + 1 for a in timed],
                          0, self.slots)
            np.add.at(diff, (rows, start), gang)
            np.add.at(diff, (rows, end), -gang)
        self.used = np.cumsum(diff, axis=1)[:, : self.slots]
        for service in plan.services:
            gang = self.demands[service.demand].gang_size if service.demand in self.demands else 0
            for placement in service.placements:
                if placement.pool in self.pool_index and len(placement.replicas) == self.slots:
                    self.used[self.pool_index[placement.pool]] += gang * np.asarray(placement.replicas)
        # Electricity price and grid intensity of each region in each slot (§8.1).
        self.price = np.array([h.expand(r.electricity_price_by_slot_cny_per_kwh)
                               if r.electricity_price_by_slot_cny_per_kwh
                               else (r.electricity_price_cny_per_kwh,) * self.slots
                               for r in instance.regions], dtype=float).reshape(-1, self.slots)
        self.carbon = np.array([h.expand(r.carbon_by_slot_g_co2_per_kwh)
                                if r.carbon_by_slot_g_co2_per_kwh
                                else (r.carbon_g_co2_per_kwh,) * self.slots
                                for r in instance.regions], dtype=float).reshape(-1, self.slots)

    def groups(self, by: str) -> tuple[list[str], np.ndarray]:
        """The group names (in the instance's order) and each pool's group index."""
        names: list[str] = []
        index: dict[str, int] = {}
        of_pool = np.zeros(len(self.pool_ids), dtype=np.int64)
        for k, (region, pool) in enumerate(self.instance.pools()):
            name = _group_name(region, pool, by)
            of_pool[k] = index.setdefault(name, len(names))
            if of_pool[k] == len(names):
                names.append(name)
        return names, of_pool

    def slots_of_run(self, gpu_hours: float, gang: int) -> tuple[int, float]:
        """n[d,p] and the hours drawn in the last slot of a run of ``gpu_hours`` (§8.2)."""
        runtime = gpu_hours / gang
        n = max(1, math.ceil(runtime / self.slot_hours - QUANTUM_SLACK))
        return n, runtime - (n - 1) * self.slot_hours


def _group_name(region, pool, by: str) -> str:
    if by == "region":
        return region.id
    if by == "accelerator":
        return pool.accelerator
    hubs = [t.removeprefix("hub:") for t in region.tags if t.startswith("hub:")]
    if not hubs:
        return region.id
    return "no hub" if hubs[0] == "none" else f"hub {hubs[0]}"


def default_pool_group(instance: Instance) -> str:
    """Hubs where the regions name them (``hub:...`` tags), else regions."""
    return "hub" if any(t.startswith("hub:") for r in instance.regions for t in r.tags) else "region"


class Chart:
    """Values per slot drawn as rows of characters: each row one day (or, on long horizons, a run
    of days at one character per day), each character the largest value in its hours."""

    def __init__(self, horizon, width: int, label_width: int = 10, tail_width: int = 6):
        self.horizon = horizon
        days = horizon.hours / 24
        room = max(1, width - label_width - tail_width - 2)
        if days <= DAY_ROWS:
            self.cell_hours = next((b for b in (1, 2, 3, 4, 6, 8, 12) if 24 / b <= room), 24)
            self.row_cells = round(24 / self.cell_hours)
        else:
            self.cell_hours = 24
            self.row_cells = max(1, min(room, 28) // 7 * 7 or room)
        self.label_width = label_width
        self.cells = math.ceil(horizon.hours / self.cell_hours - QUANTUM_SLACK)
        # Which cells each slot overlaps: slot t covers hours [t h, (t + 1) h).
        h = horizon.slot_hours
        first = np.floor(np.arange(horizon.slots) * h / self.cell_hours + QUANTUM_SLACK).astype(np.int64)
        last = np.ceil((np.arange(horizon.slots) + 1) * h / self.cell_hours - QUANTUM_SLACK).astype(np.int64) - 1
        span = np.maximum(last - first, 0) + 1
        self.slot_of_pair = np.repeat(np.arange(horizon.slots), span)
        offsets = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
        self.cell_of_pair = np.minimum(np.repeat(first, span) + offsets, self.cells - 1)

    def reduce(self, values: np.ndarray, empty: int = -2) -> np.ndarray:
        """[rows, cells]: the largest of ``values`` [rows, slots] in each cell (``empty`` where no slot)."""
        out = np.full((values.shape[0], self.cells), empty, dtype=values.dtype)
        for row in range(values.shape[0]):
            np.maximum.at(out[row], self.cell_of_pair, values[row, self.slot_of_pair])
        return out

    def rows(self) -> list[tuple[str, int, int]]:
        """(label, first cell, last cell + 1) of each chart row."""
        out = []
        for first in range(0, self.cells, self.row_cells):
            moment = self.horizon.start + timedelta(hours=first * self.cell_hours)
            fmt = "%a %m-%d" if beijing(moment, "%H:%M") == "00:00" or self.cell_hours == 24 else "%d %H:%M"
            out.append((beijing(moment, fmt), first, min(first + self.row_cells, self.cells)))
        return out

    def row_slots(self, first_cell: int, end_cell: int) -> slice:
        """The slots whose start lies in the row's hours."""
        h = self.horizon.slot_hours
        lo = math.ceil(first_cell * self.cell_hours / h - QUANTUM_SLACK)
        hi = math.ceil(end_cell * self.cell_hours / h - QUANTUM_SLACK)
        return slice(lo, min(hi, self.horizon.slots))

    def header(self) -> str:
        """Beijing clock hours (or weekday initials) over the character columns."""
        chars = [" "] * self.row_cells
        for c in range(self.row_cells):
            moment = self.horizon.start + timedelta(hours=c * self.cell_hours)
            if self.cell_hours == 24:
                chars[c] = beijing(moment, "%a")[0]
                continue
            hour = int(beijing(moment, "%H"))
            if hour % 6 == 0 and beijing(moment, "%M") == "00":
                label = str(hour)
                if all(ch == " " for ch in chars[c: c + len(label) + 1]) and c + len(label) <= self.row_cells:
                    chars[c: c + len(label)] = label
        return " " * (self.label_width + 1) + "".join(chars).rstrip()

    def legend(self) -> str:
        if self.cell_hours == 24:
            return "one character per day (Beijing time)"
        unit = "hour" if self.cell_hours == 1 else f"{self.cell_hours:g} hours"
        return f"one character per {unit} (Beijing time)"


def ramp_level(used: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Chart codes of used / available GPUs: -1 none available, 0 idle, 1..8 up to k/8, 9 over."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(available > 0, used / np.where(available > 0, available, 1), 0.0)
    level = np.ceil(8 * share - QUANTUM_SLACK).astype(np.int64)
    level = np.clip(level, 1, 8)
    level = np.where(used == 0, 0, level)
    level = np.where(used > available, 9, level)
    return np.where((available == 0) & (used == 0), -1, level)


def _draw(codes: np.ndarray, g: Glyphs) -> str:
    return "".join(" " if c == -2 else g.none if c == -1 else g.over if c == 9 else g.ramp[c] for c in codes)


def gpu_chart(
    instance: Instance, plan: Plan, *, by: str | None = None, width: int = 80, glyphs: Glyphs = UNICODE,
    max_groups: int | None = CHART_GROUPS, timeline: Timeline | None = None,
) -> str:
    """GPUs in use over the available ones, per pool group, day by day and hour by hour."""
    t = timeline or Timeline(instance, plan)
    by = by or default_pool_group(instance)
    names, of_pool = t.groups(by)
    used = np.zeros((len(names), t.slots), dtype=np.int64)
    available = np.zeros_like(used)
    np.add.at(used, of_pool, t.used)
    np.add.at(available, of_pool, t.available)
    shown = list(range(len(names)))
    if max_groups is not None and len(names) > max_groups:
        busiest = np.argsort(-used.sum(axis=1), kind="stable")[:max_groups]
        shown = sorted(int(k) for k in busiest)
    chart = Chart(instance.horizon, width)
    codes = chart.reduce(ramp_level(used, available))
    g = glyphs
    lines = [f"GPU use by {by}: the fullest slot's used / available GPUs,",
             chart.legend() + "; right: GPU-hours used / available",
             f"'{g.ramp[0]}' idle  {g.ramp[1]} up to 1/8  {g.ramp[4]} up to 1/2  {g.ramp[8]} up to all  "
             f"{g.none} none available  {g.over} over",
             chart.header()]
    for k in shown:
        lines.append(shorten(names[k], width, g.ellipsis))
        for label, first, end in chart.rows():
            part = chart.row_slots(first, end)
            total = available[k, part].sum()
            share = percent(used[k, part].sum() / total, 0) if total else "-"
            cells = _draw(codes[k, first:end], g).ljust(chart.row_cells)
            lines.append(f"{label:<{chart.label_width}}|{cells}|{share:>5}")
    lines = [shorten(line, width, g.ellipsis) for line in lines]
    if len(shown) < len(names):
        lines.append(wrap_fields(f"({len(names) - len(shown)} quieter groups not shown: eastwest show "
                                 f"PLAN --instance INSTANCE --pool-group {by})", width))
    return "\n".join(lines)


PERIOD_ORDER = [*PERIOD_NAMES.values()]


def energy_table(plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE) -> str:
    """Energy by tariff period: kWh, CNY and their shares, the average price, and tCO2."""
    c = plan.costs
    kwh, cny = c.energy_by_period_kwh, c.energy_by_period_cny
    periods = sorted(set(kwh) | set(cny), key=lambda p: (PERIOD_ORDER.index(p) if p in PERIOD_ORDER
                                                         else len(PERIOD_ORDER), p))
    total_kwh, total_cny = sum(kwh.values()), sum(cny.values())
    if not periods:
        return f"energy by tariff period: none in the plan\nCO2 {c.co2_t:,.3f} t  energy {c.energy_kwh:,.0f} kWh"
    rows = []
    for period in periods:
        e, m = kwh.get(period, 0.0), cny.get(period, 0.0)
        rows.append([period, f"{e:,.0f}", percent(e / total_kwh if total_kwh else None),
                     money(m), percent(m / total_cny if total_cny else None),
                     f"{m / e:.3f}" if e else "-"])
    text = table(
        ["tariff period", "kWh", "share", "energy CNY", "share", "CNY/kWh"], rows,
        total=["total", f"{total_kwh:,.0f}", percent(1.0 if total_kwh else None), money(total_cny),
               percent(1.0 if total_cny else None), f"{total_cny / total_kwh:.3f}" if total_kwh else "-"],
        max_width=width, ellipsis=glyphs.ellipsis,
    )
    return text + f"\nCO2 {c.co2_t:,.3f} t  energy {c.energy_kwh:,.0f} kWh"


def link_table(instance: Instance, plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE,
               top: int = TOP_LINKS) -> str:
    """The links with the highest peak utilization: when the peak is, and the mean."""
    h = instance.horizon
    loaded = [link for link in plan.links if any(link.load_gbps)]
    if not loaded:
        count = len(instance.links)
        return f"links: no traffic ({count:,} link{'' if count == 1 else 's'})"
    rows = []
    for link in sorted(loaded, key=lambda x: -x.peak_utilization)[:top]:
        load = np.asarray(link.load_gbps, dtype=float)
        bandwidth = np.asarray(link.bandwidth_gbps, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(bandwidth > 0, load / bandwidth, 0.0)
        at = int(np.argmax(share))
        rows.append([f"{link.source}-{link.target}", percent(link.peak_utilization),
                     beijing(h.slot_start(at), "%a %m-%d %H:%M"), percent(float(share.mean())),
                     f"{float(load.max()):,.2f}"])
    title = f"links by peak utilization (top {len(rows)} of {len(loaded):,} with traffic)"
    return title + "\n" + table(["link", "peak", "peak at", "mean", "peak Gbps"], rows,
                                max_width=width, ellipsis=glyphs.ellipsis)


def service_table(instance: Instance, plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE) -> str:
    """Each service's load served and unserved over the horizon, and its penalty."""
    h = instance.horizon.slot_hours
    rows, served_total, unserved_total, penalty_total = [], 0.0, 0.0, 0.0
    for service in plan.services:
        served = sum(sum(p.served_pflop_per_hour) for p in service.placements) * h
        peak = max((sum(r) for r in zip(*(p.replicas for p in service.placements), strict=False)),
                   default=0)
        served_total += served
        unserved_total += service.unserved_pflop
        penalty_total += service.penalty_cny
        whole = served + service.unserved_pflop
        rows.append([service.demand, f"{len(service.placements)}", f"{peak:,}", f"{served:,.1f}",
                     f"{service.unserved_pflop:,.1f}", percent(served / whole if whole else None),
                     money(service.penalty_cny)])
    whole = served_total + unserved_total
    return table(["service", "pools", "peak replicas", "served PFLOP", "unserved PFLOP", "served",
                  "penalty CNY"], rows,
                 total=["total", "", "", f"{served_total:,.1f}", f"{unserved_total:,.1f}",
                        percent(served_total / whole if whole else None), money(penalty_total)],
                 max_width=width, ellipsis=glyphs.ellipsis)


def starts_table(instance: Instance, plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE) -> str:
    """Batch jobs started on each day (Beijing time), their GPU-hours and cost."""
    h = instance.horizon
    by_day: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    order: list[str] = []
    for a in sorted((a for a in plan.assignments if a.start_slot is not None), key=lambda a: a.start_slot):
        day = beijing(h.slot_start(a.start_slot), "%a %Y-%m-%d")
        if day not in by_day:
            order.append(day)
        row = by_day[day]
        row[0] += 1
        row[1] += a.gpu_hours
        row[2] += a.cost_cny
    rows = [[day, f"{int(by_day[day][0]):,}", f"{by_day[day][1]:,.0f}", money(by_day[day][2])] for day in order]
    total = [sum(by_day[d][k] for d in order) for k in range(3)]
    kind = {d.id: d.kind for d in instance.demands}
    batch_unserved = sum(1 for u in plan.unserved if kind.get(u.demand) == DemandKind.BATCH)
    text = table(["batch jobs started", "jobs", "GPU-h", "cost CNY"], rows,
                 total=["total", f"{int(total[0]):,}", f"{total[1]:,.0f}", money(total[2])],
                 max_width=width, ellipsis=glyphs.ellipsis)
    return text + f"\nbatch jobs unserved: {batch_unserved:,}"


@dataclass(frozen=True)
class Shift:
    """One batch job at its chosen start against the same job, on the same pool, at its earliest
    allowed start (``release_slot`` + 1 when its data moves): the energy and carbon terms, the only
    ones that depend on the start (§8.2)."""

    demand: str
    pool: str
    earliest_slot: int
    start_slot: int
    earliest_cny: float  # weighted energy + carbon cost at the earliest start
    chosen_cny: float
    earliest_co2_kg: float
    chosen_co2_kg: float

    @property
    def saved_cny(self) -> float:
        return self.earliest_cny - self.chosen_cny

    @property
    def saved_co2_kg(self) -> float:
        return self.earliest_co2_kg - self.chosen_co2_kg


def shift_savings(instance: Instance, plan: Plan, timeline: Timeline | None = None) -> tuple[list[Shift], int]:
    """Each assigned batch job's `Shift`, where its earliest start is allowed on its pool (window and
    price cap), and how many jobs have no such comparison. Recomputed per §8.2 from the instance and
    the plan's starts and usage; each job alone (the capacity its earliest start needs is not checked)."""
    t = timeline or Timeline(instance, plan)
    pools = {p.id: (r, p) for r, p in instance.pools()}
    offers = {(o.demand, o.pool): o for o in instance.offers}
    w = instance.weights
    jobs, rows = [], []
    for a in plan.assignments:
        d = t.demands.get(a.demand)
        if a.start_slot is None or d is None or a.pool not in pools:
            continue
        region, pool = pools[a.pool]
        n, last_hours = t.slots_of_run(a.gpu_hours, d.gang_size)
        moves = d.data_gb > 0 and region.id != d.origin
        earliest = (d.release_slot or 0) + (1 if moves else 0)
        if a.start_slot + n > t.slots or earliest + n > t.slots:
            continue
        draw = d.gang_size * pool.power_kw_per_gpu * region.pue
        jobs.append((a, d, region, pool, earliest, n, moves))
        rows.append((t.region_index[region.id], a.start_slot, earliest, n, draw * t.slot_hours,
                     draw * last_hours, (d.id, pool.id) not in offers))
    if not rows:
        return [], sum(1 for a in plan.assignments if a.start_slot is not None)
    region_k, start, earliest, n, kwh_full, kwh_last, priced = (np.array(c) for c in zip(*rows, strict=True))
    energy = {}
    co2 = {}
    for name, s in (("chosen", start), ("earliest", earliest)):
        energy[name] = _run_sum(t.price, region_k, s, n, kwh_full, kwh_last) * priced
        co2[name] = _run_sum(t.carbon, region_k, s, n, kwh_full, kwh_last) / 1000
    fares = _Fares(instance)
    shifts = []
    without = sum(1 for a in plan.assignments if a.start_slot is not None) - len(jobs)
    for k, (a, d, region, pool, first, runs, moves) in enumerate(jobs):
        deadline = t.slots if d.deadline_slot is None else d.deadline_slot
        allowed = first + runs <= deadline
        if allowed and d.max_cost_cny is not None:
            offer = offers.get((d.id, pool.id))
            compute = offer.price_cny if offer else a.gpu_hours * pool.price_cny_per_gpu_hour
            transfer = d.data_gb * fares.per_gb(d.origin, region.id, a.route) if moves else 0.0
            allowed = compute + energy["earliest"][k] + transfer <= d.max_cost_cny
        if not allowed:
            without += 1
            continue
        cost = {name: w.energy * energy[name][k] + co2[name][k] / 1000 * w.carbon_price_cny_per_t_co2
                for name in energy}
        shifts.append(Shift(d.id, pool.id, int(first), int(a.start_slot), float(cost["earliest"]),
                            float(cost["chosen"]), float(co2["earliest"][k]), float(co2["chosen"][k])))
    return shifts, without


def _run_sum(per_slot: np.ndarray, region: np.ndarray, start: np.ndarray, n: np.ndarray,
             full: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Σ_k kwh_k · value[r, s + k] for runs of n slots: ``full`` in all but the last, ``last`` in it."""
    prefix = np.concatenate([np.zeros((per_slot.shape[0], 1)), np.cumsum(per_slot, axis=1)], axis=1)
    end = start + n - 1
    return full * (prefix[region, end] - prefix[region, start]) + last * per_slot[region, end]


class _Fares:
    """Transfer CNY per GB from an origin to a region: along the plan's route where it names one,
    else along the route of §1 (found once per origin)."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.link_cost = {frozenset((x.source, x.target)): x.transfer_cost_cny_per_gb for x in instance.links}
        self.by_origin: dict[str, dict[str, tuple[float, float]]] = {}

    def per_gb(self, origin: str, target: str, route) -> float:
        hops = list(zip(route, route[1:], strict=False)) if route else []
        if hops and all(frozenset(hop) in self.link_cost for hop in hops):
            return sum(self.link_cost[frozenset(hop)] for hop in hops)
        if origin not in self.by_origin:
            from scheduler.network import build_graph, routes_from

            self.by_origin[origin] = routes_from(build_graph(self.instance), origin)
        return self.by_origin[origin].get(target, (math.inf, math.inf))[1]


def shift_table(instance: Instance, plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE,
                top: int = TOP_SHIFTS, timeline: Timeline | None = None) -> str:
    """Where shifting in time saved: the totals, and the jobs that saved most."""
    shifts, without = shift_savings(instance, plan, timeline)
    h = instance.horizon
    moved = [s for s in shifts if s.start_slot != s.earliest_slot]
    saved_cny = sum(s.saved_cny for s in shifts)
    saved_t = sum(s.saved_co2_kg for s in shifts) / 1000
    lines = [
        textwrap.fill("where shifting saved: each batch job at its start against the same job on the "
                      "same pool at its earliest allowed start (its release, +1 slot when its data "
                      "moves), each alone", width),
        f"jobs compared {len(shifts):,}  moved later {len(moved):,}  earliest start not allowed {without:,}",
        f"saved {money(saved_cny)} CNY energy and carbon  {saved_t:,.3f} tCO2",
    ]
    best = sorted((s for s in moved if s.saved_cny or s.saved_co2_kg), key=lambda s: -s.saved_cny)[:top]
    if best:
        rows = [[s.demand, s.pool, beijing(h.slot_start(s.earliest_slot), "%m-%d %H:%M"),
                 beijing(h.slot_start(s.start_slot), "%m-%d %H:%M"), money(s.saved_cny),
                 f"{s.saved_co2_kg:,.1f}"] for s in best]
        lines.append(table(["demand", "pool", "earliest", "start", "saved CNY", "saved kgCO2"], rows,
                           max_width=width, ellipsis=glyphs.ellipsis, names=(0, 1)))
    return "\n".join(line if "\n" in line or len(line) <= width else wrap_fields(line, width) for line in lines)


def timed_sections(instance: Instance, plan: Plan, *, width: int = 80, glyphs: Glyphs = UNICODE,
                   pool_group: str | None = None, max_groups: int | None = CHART_GROUPS) -> list[str]:
    """The summary's sections over the horizon: energy by tariff period, GPU use per pool group,
    links, services, batch starts per day and where shifting saved."""
    timeline = Timeline(instance, plan)
    parts = [energy_table(plan, width=width, glyphs=glyphs),
             gpu_chart(instance, plan, by=pool_group, width=width, glyphs=glyphs, max_groups=max_groups,
                       timeline=timeline),
             link_table(instance, plan, width=width, glyphs=glyphs)]
    if any(d.kind == DemandKind.SERVICE for d in instance.demands):
        parts.append(service_table(instance, plan, width=width, glyphs=glyphs))
    if any(d.kind == DemandKind.BATCH for d in instance.demands):
        parts += [starts_table(instance, plan, width=width, glyphs=glyphs),
                  shift_table(instance, plan, width=width, glyphs=glyphs, timeline=timeline)]
    return parts


def demand_view(instance: Instance, plan: Plan, demand_id: str, *, width: int = 80,
                glyphs: Glyphs = UNICODE) -> str:
    """One demand over the horizon: a batch job's window, pool and run in Beijing time; a
    service's replicas per pool, hour by hour, and its unserved load."""
    d = next(x for x in instance.demands if x.id == demand_id)
    g = glyphs
    head = (f"demand {d.id}  {d.kind.value}  {d.sector.value}  origin {d.origin}  gang {d.gang_size}"
            + (f"  priority {d.priority:g}" if d.priority != 1 else ""))
    lines = [wrap_fields(head, width)]
    h = instance.horizon
    if d.kind == DemandKind.SERVICE:
        lines += _service_view(instance, plan, d, width, g)
        return "\n".join(lines)
    assignment = next((a for a in plan.assignments if a.demand == d.id), None)
    unserved = next((u for u in plan.unserved if u.demand == d.id), None)
    if h is not None:
        release = d.release_slot or 0
        deadline = h.slots if d.deadline_slot is None else d.deadline_slot
        lines.append(wrap_fields(f"window  release {beijing(h.slot_start(release))}  deadline "
                                 f"{beijing(h.slot_start(deadline))}  ({_slot_range(release, deadline)})", width))
    if assignment is None:
        why = f"unserved: {unserved.reason.value}  penalty {money(unserved.penalty_cny)} CNY" if unserved else (
            "not in the plan")
        lines.append(why)
        return "\n".join(lines)
    a = assignment
    lines.append(wrap_fields(f"pool {a.pool}  region {a.region}  {a.precision.value}  latency {a.latency_ms:g} ms", width))
    if a.route:
        lines.append(shorten("route " + f" {g.arrow} ".join(a.route), width, g.ellipsis))
    lines.append(wrap_fields(
        f"cost {money(a.cost_cny)} CNY  compute {money(a.compute_cny)}  energy {money(a.energy_cny)}  "
        f"transfer {money(a.transfer_cny)}  carbon {money(a.carbon_cny)}  {a.gpu_hours:,.2f} GPU-h  "
        f"{a.energy_kwh:,.1f} kWh  CO2 {a.co2_kg:,.1f} kg", width))
    if h is None or a.start_slot is None:
        return "\n".join(lines)
    end = a.end_slot if a.end_slot is not None else a.start_slot + 1
    lines.append(wrap_fields(f"runs  {beijing(h.slot_start(a.start_slot))} {g.arrow} "
                             f"{beijing(h.slot_start(end))}  ({_slot_range(a.start_slot, end)} of "
                             f"{h.slot_hours:g} h)", width))
    shift = next((s for s in shift_savings(instance, plan.model_copy(update={"assignments": (a,)}))[0]), None)
    if shift is None:
        lines.append("at its earliest start: not allowed (window or price cap)")
    else:
        lines.append(wrap_fields(
            f"at its earliest start ({beijing(h.slot_start(shift.earliest_slot))}): energy and carbon "
            f"{money(shift.earliest_cny)} CNY, {shift.earliest_co2_kg:,.1f} kg CO2; at its start "
            f"{money(shift.chosen_cny)} CNY, {shift.chosen_co2_kg:,.1f} kg; saved {money(shift.saved_cny)} CNY, "
            f"{shift.saved_co2_kg:,.1f} kg CO2", width))
    # The timeline: window, data moving, running (codes 0 outside, 1 window, 2 moving, 3 running).
    code = np.zeros((1, h.slots), dtype=np.int64)
    code[0, release:deadline] = 1
    if a.route and len(a.route) > 1:
        code[0, release:a.start_slot] = 2
    code[0, a.start_slot:end] = 3
    chart = Chart(h, width, tail_width=0)
    cells = chart.reduce(code)
    marks = {-2: " ", 0: " ", 1: g.window, 2: g.moving, 3: g.running}
    lines.append(f"{g.window} window  {g.moving} data moving  {g.running} running; " + chart.legend())
    lines.append(chart.header())
    for label, first, last in chart.rows():
        lines.append(f"{label:<{chart.label_width}}|" + "".join(marks[int(c)] for c in cells[0, first:last])
                     .ljust(chart.row_cells) + "|")
    return "\n".join(lines)


def _slot_range(first: int, end: int) -> str:
    """Slots ``first`` to ``end - 1``, named inclusively."""
    return f"slot {first}" if end - first == 1 else f"slots {first}-{end - 1}"


def _service_view(instance: Instance, plan: Plan, d, width: int, g: Glyphs) -> list[str]:
    h = instance.horizon
    service = next((s for s in plan.services if s.demand == d.id), None)
    if service is None:
        return ["not in the plan"]
    served = sum(sum(p.served_pflop_per_hour) for p in service.placements) * h.slot_hours
    whole = served + service.unserved_pflop
    lines = [wrap_fields(f"served {served:,.1f} PFLOP of {whole:,.1f} ({percent(served / whole if whole else None)})"
                         f"  unserved {service.unserved_pflop:,.1f} PFLOP  penalty {money(service.penalty_cny)} CNY",
                         width)]
    chart = Chart(h, width)
    lines.append("replicas per pool (digits; a ramp of the pool's peak above 9), " + chart.legend())
    lines.append(chart.header())
    for p in service.placements:
        replicas = np.asarray(p.replicas, dtype=np.int64).reshape(1, -1)
        peak = int(replicas.max(initial=0))
        lines.append(shorten(f"{p.pool}  {p.region}  {p.latency_ms:g} ms  peak {peak:,}  {p.gpu_hours:,.0f} GPU-h  "
                             f"{sum(p.served_pflop_per_hour) * h.slot_hours:,.1f} PFLOP", width, g.ellipsis))
        cells = chart.reduce(replicas, empty=-1)[0]
        for label, first, last in chart.rows():
            if peak <= 9:
                text = "".join(" " if c <= 0 else str(int(c)) for c in cells[first:last])
            else:
                text = "".join(" " if c <= 0 else g.ramp[max(1, math.ceil(8 * c / peak - QUANTUM_SLACK))]
                               for c in cells[first:last])
            lines.append(f"{label:<{chart.label_width}}|{text.ljust(chart.row_cells)}|")
    load = np.asarray(h.expand(d.load_pflop_per_hour), dtype=float)
    short = np.asarray(service.unserved_pflop_per_hour, dtype=float)
    if short.any():
        lines.append("unserved share of the load")
        level = ramp_level(short, load) if len(short) == h.slots else np.zeros(h.slots, dtype=np.int64)
        codes = chart.reduce(np.where(load > 0, level, 0).reshape(1, -1))[0]
        for label, first, last in chart.rows():
            lines.append(f"{label:<{chart.label_width}}|{_draw(codes[first:last], g).ljust(chart.row_cells)}|")
    return lines


def policy_table(instance: Instance, plan: Plan) -> str:
    """Each quota's share against its limits, and with fairness the largest unserved share."""
    rows = []
    for q, use in zip(instance.policy.quotas, plan.policy.quotas, strict=True):
        group = " ".join(x for x in (q.sector, q.origin) if x) or "all"
        rows.append([q.id, group, q.measure.value, q.hub or "national", percent(q.min_share),
                     percent(use.share), percent(q.max_share)])
    out = table(["quota", "group", "share of", "scope", "min", "share", "max"], rows) if rows else ""
    fair = plan.policy.fairness
    if fair is not None:
        bound = "" if fair.share_lower_bound is None else f" (proven at least {percent(fair.share_lower_bound)})"
        out += ("\n" if out else "") + (f"largest unserved share among {fair.groups}s: "
                                        f"{percent(fair.largest_unserved_share)}{bound}")
    return out


def summary(
    instance: Instance,
    plan: Plan,
    verification: Verification | None = None,
    *,
    width: int = 80,
    glyphs: Glyphs | None = None,
    pool_group: str | None = None,
    chart_groups: int | None = CHART_GROUPS,
) -> str:
    """Everything an operator reads after a solve.

    A plan of an instance with a horizon adds the sections over time (`timed_sections`), fitted to
    ``width`` columns and drawn with ``glyphs`` (`UNICODE` unless given); ``pool_group`` (hub,
    region or accelerator) groups the GPU chart, which shows the ``chart_groups`` busiest groups
    (None: all). Without a horizon the summary is the tables alone, whatever the width.
    """
    if instance.horizon is None:
        parts = [headline(plan, verification), sector_table(instance, plan)]
        if plan.objective is not None:
            parts += [region_table(instance, plan), cost_table(plan)]
        if plan.policy is not None and instance.policy is not None:
            parts.append(policy_table(instance, plan))
        return "\n\n".join(parts)
    g = glyphs or UNICODE
    parts = [wrap_fields(headline(plan, verification), width),
             sector_table(instance, plan, max_width=width, ellipsis=g.ellipsis)]
    if plan.objective is not None:
        parts += [region_table(instance, plan, max_width=width, ellipsis=g.ellipsis), cost_table(plan)]
        parts += timed_sections(instance, plan, width=width, glyphs=g, pool_group=pool_group,
                                max_groups=chart_groups)
    return "\n\n".join(parts)
