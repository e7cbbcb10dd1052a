"""One self-contained HTML page per plan: a map of China with the flows of work, utilization by
pool group over the hours, the cost breakdown, unserved work by sector and reason, and carbon by
hour and region (docs/report.md).

The page opens offline: its figures are inline SVG drawn by matplotlib (Agg, text left as text in
the page's own sans-serif font), the map's outline is Natural Earth's, shipped in
``scheduler/data/east-asia-outline.json``, and nothing is loaded from elsewhere. The figures are
built in two steps so that other pages (a scenario's years side by side) can reuse them: pure
functions turn an instance and a plan into numbers (`map_data`, `utilization`, `carbon`,
`unserved_work`), others draw those numbers (`map_svg`, `heatmap_svg`, ...), and `page` puts
`Section`s together. Presentation only: nothing here checks a plan (`verify` does).

matplotlib is the optional extra ``eastwest[report]``; without it `html_report` raises
`MissingExtra`, naming the extra.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

import numpy as np

from models import Instance, Plan, Verification
from scheduler.report import Timeline, beijing, default_pool_group, money, percent

OUTLINE = "east-asia-outline.json"
CHINA = frozenset({"China", "Taiwan", "Hong Kong", "Macao"})  # drawn as one land
CHINA_BOX = (73.0, 135.5, 17.5, 54.0)  # lon min, lon max, lat min, lat max of the map
TOP_FLOWS = 25  # flows listed in the table (all of them are drawn and in the page's data)
TOP_REGIONS = 8  # regions named in the carbon chart; the rest are summed as "other regions"
SERVICE_SHORTFALL = "service load"  # the reason column for a service's unserved load


class MissingExtra(ImportError):
    """The report needs matplotlib: the ``eastwest[report]`` extra."""


# ---------------------------------------------------------------------------------------------
# Numbers: pure functions of an instance and a plan.


@dataclass(frozen=True)
class Site:
    """A region on the map: where it is, its hub, the GPU-hours used there and its capacity."""

    id: str
    name: str
    lat: float
    lon: float
    hub: str | None
    used_gpu_hours: float
    capacity_gpu_hours: float

    @property
    def utilization(self) -> float | None:
        return self.used_gpu_hours / self.capacity_gpu_hours if self.capacity_gpu_hours else None


@dataclass(frozen=True)
class Flow:
    """Work from the region where its data is (``origin``) to the region where it runs."""

    origin: str
    target: str
    demands: int
    work_pflop: float  # batch jobs' work plus services' served load, over the plan
    gpu_hours: float


@dataclass(frozen=True)
class MapData:
    """Everything the map draws; `to_json` is embedded in the page."""

    sites: tuple[Site, ...]
    flows: tuple[Flow, ...]  # origin == target too: work that runs where its data is

    def to_json(self) -> str:
        return json.dumps({"sites": [asdict(s) for s in self.sites],
                           "flows": [asdict(f) for f in self.flows]}, separators=(",", ":"))


def region_hub(region) -> str | None:
    """The hub a region's ``hub:`` tag names (None without one, or for ``hub:none``)."""
    hubs = [t.removeprefix("hub:") for t in region.tags if t.startswith("hub:")]
    return hubs[0] if hubs and hubs[0] != "none" else None


def map_data(instance: Instance, plan: Plan) -> MapData:
    """The regions with their use and capacity, and the flows summed by (origin, region).

    Raises ValueError naming the object and field where the plan refers to a demand or pool the
    instance lacks.
    """
    demands = {d.id: d for d in instance.demands}
    used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for usage in plan.pools:
        used[usage.region][0] += usage.used_gpu_hours
        used[usage.region][1] += usage.capacity_gpu_hours
    sites = tuple(Site(r.id, short_name(r), r.lat, r.lon, region_hub(r), *used.get(r.id, (0.0, 0.0)))
                  for r in instance.regions)
    flows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for a in plan.assignments:
        d = _demand(demands, a.demand, "assignment")
        row = flows[d.origin, a.region]
        row[0] += 1
        row[1] += d.work_pflop or 0.0
        row[2] += a.gpu_hours
    slot_hours = instance.horizon.slot_hours if instance.horizon else instance.window_hours
    for s in plan.services:
        d = _demand(demands, s.demand, "service")
        for p in s.placements:
            row = flows[d.origin, p.region]
            row[0] += 1
            row[1] += math.fsum(p.served_pflop_per_hour) * slot_hours
            row[2] += p.gpu_hours
    order = sorted(flows, key=lambda k: (-flows[k][2], k))
    return MapData(sites, tuple(Flow(o, t, int(flows[o, t][0]), flows[o, t][1], flows[o, t][2])
                                for o, t in order))


def _demand(demands: dict, demand_id: str, kind: str):
    if demand_id not in demands:
        raise ValueError(f"{kind} '{demand_id}': field 'demand' names a demand the instance lacks")
    return demands[demand_id]


def short_name(region) -> str:
    """A region's name without its Chinese part and the word 'cluster' (its id if unnamed)."""
    name = (region.name or region.id).split(" (")[0].removesuffix(" cluster")
    return name if len(name) <= 24 else region.id.removesuffix("_cluster")


@dataclass(frozen=True)
class Utilization:
    """GPUs in use and available per pool group (rows) and slot (columns)."""

    by: str  # hub, region or accelerator
    groups: tuple[str, ...]
    used: np.ndarray
    available: np.ndarray

    def share(self) -> np.ndarray:
        """used / available; NaN where nothing is available."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.available > 0, self.used / np.where(self.available > 0, self.available, 1),
                            np.nan)


def utilization(instance: Instance, plan: Plan, by: str | None = None) -> Utilization:
    """Per pool group and slot, from the plan's decisions (`scheduler.report.Timeline`); an
    instance without a horizon has one column: GPU-hours used and available in the window."""
    by = by or default_pool_group(instance)
    if instance.horizon is None:
        index: dict[str, int] = {}
        rows: list[list[float]] = []
        usage = {u.pool: u for u in plan.pools}
        for region, pool in instance.pools():
            name = _group(region, pool, by)
            k = index.setdefault(name, len(rows))
            if k == len(rows):
                rows.append([0.0, 0.0])
            u = usage.get(pool.id)
            rows[k][0] += u.used_gpu_hours if u else 0.0
            rows[k][1] += u.capacity_gpu_hours if u else pool.gpu_count * instance.window_hours
        table = np.array(rows, dtype=float).reshape(-1, 2)
        return Utilization(by, tuple(index), table[:, :1], table[:, 1:])
    t = Timeline(instance, plan)
    names, of_pool = t.groups(by)
    if by == "hub":
        names = [_hub_label(n.removeprefix("hub ")) if n.startswith("hub ") else n for n in names]
    used = np.zeros((len(names), t.slots), dtype=float)
    available = np.zeros_like(used)
    np.add.at(used, of_pool, t.used)
    np.add.at(available, of_pool, t.available)
    return Utilization(by, tuple(names), used, available)


def _group(region, pool, by: str) -> str:
    if by == "region":
        return region.id
    if by == "accelerator":
        return pool.accelerator
    hub = region_hub(region)
    return _hub_label(hub) if hub else ("no hub" if any(t == "hub:none" for t in region.tags) else region.id)


@dataclass(frozen=True)
class Carbon:
    """Emissions in kg CO2 per region (rows, the instance's order) and slot (columns; one
    column without a horizon)."""

    regions: tuple[str, ...]
    kg: np.ndarray


def carbon(instance: Instance, plan: Plan) -> Carbon:
    """kg CO2 by region and slot, recomputed from the plan's decisions: a batch job draws
    gang x power x PUE kW in each slot it runs (the last one for the rest of its run time), a
    service's placement gang x replicas x power x PUE, each at the region's grid intensity in
    that slot (docs/formulation.md §8). Without a horizon: each assignment's own figure."""
    regions = tuple(r.id for r in instance.regions)
    index = {r: k for k, r in enumerate(regions)}
    if instance.horizon is None:
        kg = np.zeros((len(regions), 1))
        for a in plan.assignments:
            kg[index[a.region], 0] += a.co2_kg
        return Carbon(regions, kg)
    t = Timeline(instance, plan)
    draw = {p.id: p.power_kw_per_gpu * r.pue for r, p in instance.pools()}
    kg = np.zeros((len(regions), t.slots))
    h = t.slot_hours
    for a in plan.assignments:
        if a.start_slot is None or a.pool not in draw:
            continue
        gang = t.demands[_demand(t.demands, a.demand, "assignment").id].gang_size
        n, last = t.slots_of_run(a.gpu_hours, gang)
        r = index[a.region]
        hours = np.full(n, h)
        hours[-1] = last
        slots = np.arange(a.start_slot, a.start_slot + n)
        inside = slots < t.slots
        kg[r, slots[inside]] += gang * draw[a.pool] * hours[inside] * t.carbon[r, slots[inside]] / 1000
    for s in plan.services:
        gang = _demand(t.demands, s.demand, "service").gang_size
        for p in s.placements:
            r = index[p.region]
            replicas = np.asarray(p.replicas, dtype=float)[: t.slots]
            kg[r, : len(replicas)] += (gang * replicas * draw[p.pool] * h
                                       * t.carbon[r, : len(replicas)] / 1000)
    return Carbon(regions, kg)


@dataclass(frozen=True)
class UnservedRow:
    sector: str
    reason: str
    demands: int
    work_pflop: float
    penalty_cny: float


def unserved_work(instance: Instance, plan: Plan) -> tuple[UnservedRow, ...]:
    """Unserved demands and work by sector and reason; a service's load left unserved counts
    under the reason `SERVICE_SHORTFALL`."""
    demands = {d.id: d for d in instance.demands}
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for u in plan.unserved:
        d = _demand(demands, u.demand, "unserved")
        row = rows[d.sector.value, u.reason.value]
        row[0] += 1
        row[1] += u.work_pflop if u.work_pflop is not None else (d.work_pflop or 0.0)
        row[2] += u.penalty_cny
    for s in plan.services:
        if s.unserved_pflop > 0:
            row = rows[_demand(demands, s.demand, "service").sector.value, SERVICE_SHORTFALL]
            row[0] += 1
            row[1] += s.unserved_pflop
            row[2] += s.penalty_cny
    return tuple(UnservedRow(sector, reason, int(v[0]), v[1], v[2])
                 for (sector, reason), v in sorted(rows.items()))


@dataclass(frozen=True)
class SectorRow:
    sector: str
    served: int
    unserved: int
    served_pflop: float
    unserved_pflop: float
    cost_cny: float


def sectors(instance: Instance, plan: Plan) -> tuple[SectorRow, ...]:
    """Demands served and unserved, work and cost by sector (services: served and unserved load)."""
    demands = {d.id: d for d in instance.demands}
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for a in plan.assignments:
        d = _demand(demands, a.demand, "assignment")
        row = rows[d.sector.value]
        row[0] += 1
        row[2] += d.work_pflop or 0.0
        row[4] += a.cost_cny
    for u in plan.unserved:
        d = _demand(demands, u.demand, "unserved")
        rows[d.sector.value][1] += 1
        rows[d.sector.value][3] += u.work_pflop if u.work_pflop is not None else (d.work_pflop or 0.0)
    hours = instance.horizon.slot_hours if instance.horizon else instance.window_hours
    for s in plan.services:
        row = rows[_demand(demands, s.demand, "service").sector.value]
        served = math.fsum(math.fsum(p.served_pflop_per_hour) for p in s.placements) * hours
        row[0 if served > 0 else 1] += 1
        row[2] += served
        row[3] += s.unserved_pflop
        row[4] += math.fsum(p.cost_cny for p in s.placements)
    return tuple(SectorRow(k, int(v[0]), int(v[1]), v[2], v[3], v[4]) for k, v in sorted(rows.items()))


# ---------------------------------------------------------------------------------------------
# Figures: numbers in, an SVG string out.


def require_matplotlib() -> None:
    """Raise `MissingExtra`, naming the extra, where matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise MissingExtra("the HTML report needs matplotlib: pip install 'eastwest[report]'") from error


def _pyplot():
    """matplotlib's pyplot on the Agg backend."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_STYLE = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10}


def _svg(fig, name: str) -> str:
    """The figure as an inline SVG element: no XML prologue, no metadata, ids unique to ``name``."""
    plt = _pyplot()
    out = io.StringIO()
    with plt.rc_context({"svg.hashsalt": name}):
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = out.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(name)}" ', 1)


@cache
def outline() -> dict:
    """The shipped outline (GeoJSON): Natural Earth 1:50m admin-0 countries around China."""
    return json.loads(resources.files("scheduler.data").joinpath(OUTLINE).read_text(encoding="utf-8"))


def _frame(sites: tuple[Site, ...]) -> tuple[float, float, float, float]:
    """China's box if every site lies in it, else the sites' box with a margin."""
    x0, x1, y0, y1 = CHINA_BOX
    if all(x0 <= s.lon <= x1 and y0 <= s.lat <= y1 for s in sites):
        return CHINA_BOX
    lons, lats = [s.lon for s in sites], [s.lat for s in sites]
    pad = max(1.0, 0.08 * max(max(lons) - min(lons), max(lats) - min(lats)))
    return min(lons) - pad, max(lons) + pad, min(lats) - pad, max(lats) + pad


def map_svg(data: MapData, *, title: str = "", name: str = "map", hub_names: dict[str, str] | None = None,
            scale: tuple[float, float] | None = None, size: tuple[float, float] = (9.5, 7.0)) -> str:
    """Regions as points (area by GPU-hours of capacity, colour by utilization), flows between
    regions as arcs from origin to where the work runs (width by work), hubs labelled.

    ``scale`` (largest flow, largest capacity) sizes flows and points against figures shared by
    several maps (a scenario's years); by default against this map's own largest."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=size)
        x0, x1, y0, y1 = _frame(data.sites)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect(1 / math.cos(math.radians((y0 + y1) / 2)))
        ax.set_xlabel("longitude (°E)")
        ax.set_ylabel("latitude (°N)")
        ax.set_title(title)
        _draw_land(ax)
        unit, top = _draw_flows(ax, data, scale[0] if scale else None)
        points = _draw_sites(ax, data, scale[1] if scale else None)
        bar = fig.colorbar(points, ax=ax, shrink=0.6, pad=0.01)
        bar.set_label("utilization (GPU-hours used / capacity)")
        bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        handles = [plt.Line2D([], [], color=FLOW_COLOUR, alpha=0.55, linewidth=_flow_width(q),
                              label=f"{_figure(q * top)} {unit}") for q in (1.0, 0.5, 0.1)] if top else []
        ax.legend(handles=handles, title="work moved (line width)", loc="lower left", fontsize=7,
                  title_fontsize=7, framealpha=0.9)
        _draw_labels(fig, ax, data, hub_names or {})
        return _svg(fig, name)


FLOW_COLOUR = "#c2410c"


def _flow_width(share: float) -> float:
    """Line width in points of a flow carrying ``share`` of the largest flow's work."""
    return 0.4 + 7.0 * share


def _draw_land(ax) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Polygon

    ax.set_facecolor("#dbe7f0")
    land, china = [], []
    for feature in outline()["features"]:
        rings = [Polygon(poly[0], closed=True) for poly in feature["geometry"]["coordinates"]]
        (china if feature["properties"]["name"] in CHINA else land).extend(rings)
    ax.add_collection(PatchCollection(land, facecolor="#eef0ee", edgecolor="#b9c0c4", linewidth=0.5))
    ax.add_collection(PatchCollection(china, facecolor="#f7f1e3", edgecolor="#8d7f64", linewidth=0.7))


def flow_weight(data: MapData) -> tuple[str, Callable[[Flow], float]]:
    """What a map's flow widths measure: PFLOP where every flow between regions has a work
    figure, else GPU-hours; (unit, the flow's value)."""
    remote = [f for f in data.flows if f.origin != f.target]
    if all(f.work_pflop > 0 for f in remote):
        return "PFLOP", lambda f: f.work_pflop
    return "GPU-h", lambda f: f.gpu_hours


def _draw_flows(ax, data: MapData, top: float | None = None) -> tuple[str, float]:
    """Arcs between regions, widest last, widths against ``top`` (default: the largest flow's
    value); (the unit of their width, ``top``)."""
    from matplotlib.patches import FancyArrowPatch

    where = {s.id: s for s in data.sites}
    remote = [f for f in data.flows if f.origin != f.target]
    unit, weight = flow_weight(data)
    if top is None:
        top = max((weight(f) for f in remote), default=0.0)
    for f in sorted(remote, key=weight):
        a, b = where[f.origin], where[f.target]
        share = min(1.0, weight(f) / top) if top else 0.0
        width = _flow_width(share)
        ax.add_patch(FancyArrowPatch((a.lon, a.lat), (b.lon, b.lat), connectionstyle="arc3,rad=0.18",
                                     arrowstyle="-|>", mutation_scale=6 + width, linewidth=width,
                                     color=FLOW_COLOUR, alpha=0.25 + 0.5 * share, zorder=3, shrinkB=3))
    return unit, top


def _draw_sites(ax, data: MapData, biggest: float | None = None):
    """Regions without pools as small white points, the others sized (against ``biggest``,
    default this map's largest capacity) and coloured; the latter returned."""
    with_pools = [s for s in data.sites if s.capacity_gpu_hours > 0]
    others = [s for s in data.sites if s.capacity_gpu_hours <= 0]
    biggest = biggest or max((s.capacity_gpu_hours for s in with_pools), default=1.0)
    ax.scatter([s.lon for s in others], [s.lat for s in others], s=10, facecolor="white",
               edgecolor="#555", linewidth=0.6, zorder=4)
    return ax.scatter([s.lon for s in with_pools], [s.lat for s in with_pools],
                      s=[20 + 500 * s.capacity_gpu_hours / biggest for s in with_pools],
                      c=[s.utilization for s in with_pools], cmap="viridis", vmin=0, vmax=1,
                      edgecolor="#222", linewidth=0.6, zorder=5)


def _draw_labels(fig, ax, data: MapData, names: dict[str, str]) -> None:
    """Hub names in bold below their regions' mean position, then the names of the regions with
    pools where they overlap no other label (`place_labels`)."""
    ax.apply_aspect()
    box = ax.get_position()
    width_pt, height_pt = box.width * fig.get_figwidth() * 72, box.height * fig.get_figheight() * 72
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    scale = ((x1 - x0) / width_pt, (y1 - y0) / height_pt)  # degrees per point
    hubs = hub_positions(data.sites)
    taken = []
    for hub, (lon, lat) in hubs.items():
        text = names.get(hub, f"hub {hub}")
        ax.annotate(text, (lon, lat), xytext=(0, HUB_DROP), textcoords="offset points", ha="center",
                    fontsize=7.5, fontweight="bold", color="#1e3a8a", zorder=7,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
        taken.append(_box(lon, lat, (0, HUB_DROP, "center"), len(text) * HUB_CHAR_POINTS, scale))
    sites = [s for s in data.sites if s.capacity_gpu_hours > 0]
    for s, (dx, dy, ha) in place_labels(sites, scale, taken):
        ax.annotate(s.name, (s.lon, s.lat), xytext=(dx, dy), textcoords="offset points", ha=ha,
                    fontsize=6.5, color="#222", zorder=6)


HUB_DROP = -14  # hub names sit this many points below their regions' mean position
CHAR_POINTS = 4.0  # width of a 6.5 pt character, about (DejaVu Sans, mixed case)
HUB_CHAR_POINTS = 5.0  # of a 7.5 pt bold one
LINE_POINTS = 8.0
LABEL_SPOTS = ((4, 3, "left"), (4, -10, "left"), (-4, 3, "right"), (-4, -10, "right"), (0, 7, "center"),
               (0, -15, "center"))


def hub_positions(sites: tuple[Site, ...]) -> dict[str, tuple[float, float]]:
    """Each hub at the mean position of its regions."""
    members: dict[str, list[Site]] = defaultdict(list)
    for s in sites:
        if s.hub:
            members[s.hub].append(s)
    return {hub: (sum(s.lon for s in group) / len(group), sum(s.lat for s in group) / len(group))
            for hub, group in members.items()}


def _box(lon: float, lat: float, spot: tuple[float, float, str], width: float,
         scale: tuple[float, float]) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in degrees of a label ``width`` points wide at ``spot`` (offset
    in points and alignment), with ``scale`` degrees of longitude and latitude per point."""
    dx, dy, ha = spot
    left = {"left": dx, "right": dx - width, "center": dx - width / 2}[ha]
    kx, ky = scale
    return lon + left * kx, lon + (left + width) * kx, lat + dy * ky, lat + (dy + LINE_POINTS) * ky


def place_labels(sites: list[Site], scale: tuple[float, float], taken: list | None = None
                 ) -> list[tuple[Site, tuple[float, float, str]]]:
    """Each site's label spot (offset in points, alignment): of `LABEL_SPOTS`, the one that
    overlaps the labels placed before it (largest sites first) least, the first on a tie."""
    boxes = list(taken or [])
    out = []
    for s in sorted(sites, key=lambda x: (-x.capacity_gpu_hours, x.id)):
        spots = [(spot, _box(s.lon, s.lat, spot, len(s.name) * CHAR_POINTS, scale)) for spot in LABEL_SPOTS]
        spot, box = min(spots, key=lambda sb: sum(_overlap(sb[1], o) for o in boxes))
        boxes.append(box)
        out.append((s, spot))
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes share (0 when apart)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[2], b[2]))


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2g}"


def heatmap_svg(u: Utilization, instance: Instance, *, name: str = "utilization") -> str:
    """used / available GPUs per pool group and slot, with the days of the horizon in Beijing time."""
    plt = _pyplot()
    h = instance.horizon
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(10, 0.6 + 0.28 * len(u.groups)))
        cmap = plt.get_cmap("YlOrRd").with_extremes(bad="#d4d4d4")
        image = ax.imshow(u.share(), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                          extent=(0, h.slots, len(u.groups) - 0.5, -0.5))
        ax.set_yticks(range(len(u.groups)), u.groups, fontsize=7)
        days = [t for t in range(h.slots) if beijing(h.slot_start(t), "%H:%M") == "00:00"] or [0]
        ax.set_xticks(days, [beijing(h.slot_start(t), "%a %m-%d") for t in days], fontsize=7)
        for t in days:
            ax.axvline(t, color="white", linewidth=0.6)
        bar = fig.colorbar(image, ax=ax, pad=0.01, fraction=0.03)
        bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        bar.set_label("GPUs used / available", fontsize=7)
        ax.set_xlabel(f"slot ({h.slot_hours:g} h each), days start at 00:00 Beijing time")
        return _svg(fig, name)


def bars_svg(labels: list[str], values: list[float], *, unit: str, name: str,
             share: bool = False) -> str:
    """Horizontal bars, one per label, valued in ``unit`` (``share``: as percentages)."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.26 * len(labels)))
        ax.barh(range(len(labels)), values, color="#2563eb")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        if share:
            ax.set_xlim(0, max(1.0, max(values, default=0)))
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        else:
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(unit)
        return _svg(fig, name)


def stacked_bars_svg(rows: list[str], parts: list[str], values: np.ndarray, *, unit: str, name: str) -> str:
    """Horizontal bars per row, split into ``parts`` (values[row, part])."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 0.9 + 0.3 * len(rows)))
        left = np.zeros(len(rows))
        colours = plt.get_cmap("tab10")
        for k, part in enumerate(parts):
            ax.barh(range(len(rows)), values[:, k], left=left, label=part, color=colours(k % 10))
            left += values[:, k]
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.invert_yaxis()
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(unit)
        ax.legend(fontsize=7, loc="lower right", title="reason", title_fontsize=7)
        return _svg(fig, name)


def carbon_svg(c: Carbon, instance: Instance, *, name: str = "carbon") -> str:
    """t CO2 per hour, stacked by region (the `TOP_REGIONS` largest, the rest together); without
    a horizon, t CO2 by region as bars."""
    totals = c.kg.sum(axis=1)
    order = [int(k) for k in np.argsort(-totals, kind="stable") if totals[k] > 0]
    if instance.horizon is None:
        return bars_svg([c.regions[k] for k in order], [totals[k] / 1000 for k in order], unit="t CO2",
                        name=name)
    plt = _pyplot()
    h = instance.horizon
    named, rest = order[:TOP_REGIONS], order[TOP_REGIONS:]
    series = [c.kg[k] / 1000 / h.slot_hours for k in named]
    labels = [c.regions[k] for k in named]
    if rest:
        series.append(c.kg[rest].sum(axis=0) / 1000 / h.slot_hours)
        labels.append(f"{len(rest)} other regions")
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(10, 3.6))
        if series:
            ax.stackplot(np.arange(h.slots), *series, labels=labels, step=None,
                         colors=[plt.get_cmap("tab10")(k % 10) for k in range(len(series))])
        days = [t for t in range(h.slots) if beijing(h.slot_start(t), "%H:%M") == "00:00"] or [0]
        ax.set_xticks(days, [beijing(h.slot_start(t), "%a %m-%d") for t in days], fontsize=7)
        ax.set_xlim(0, max(1, h.slots - 1))
        ax.set_ylabel("t CO2 per hour")
        if series:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, name)


# ---------------------------------------------------------------------------------------------
# The page.


@dataclass(frozen=True)
class Section:
    """One part of a page: an anchor, a heading and its HTML body."""

    id: str
    title: str
    body: str


def html_table(headers: list[str], rows: list[list[str]], total: list[str] | None = None, *,
               text: int = 1) -> str:
    """A table whose first ``text`` columns are text and the others numbers (right-aligned)."""
    def cells(row: list[str], tag: str) -> str:
        return "".join(f'<{tag}{"" if c < text else " class=num"}>{html.escape(str(v))}</{tag}>'
                       for c, v in enumerate(row))

    head = f"<thead><tr>{cells(headers, 'th')}</tr></thead>"
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    foot = f"<tfoot><tr>{cells(total, 'th')}</tr></tfoot>" if total else ""
    return f"<table>{head}<tbody>{body}</tbody>{foot}</table>"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;
margin:0;color:#1f2933;background:#fafaf7;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5rem;margin:.4rem 0}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #d9d9d0}
nav a{margin-right:1rem;font-size:.9rem}.facts{display:flex;flex-wrap:wrap;gap:.4rem 1.6rem;font-size:.95rem}
.facts b{font-variant-numeric:tabular-nums}svg{max-width:100%;height:auto;display:block}
#map svg{width:100%}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.2rem .6rem;border-bottom:1px solid #e4e4dc;text-align:left}
.num{text-align:right}thead th{background:#efefe8}tfoot th{border-top:2px solid #bbb}
p.note{font-size:.85rem;color:#52606d;max-width:70rem}
.multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:.4rem 1rem}
.multiples figure{margin:0}.multiples figcaption{font-weight:600;font-size:.9rem}
"""


def page(title: str, facts: list[tuple[str, str]], sections: list[Section], data: dict[str, str]) -> str:
    """A whole page: title, key figures, a table of contents, the sections, and ``data`` (name ->
    JSON text) embedded as ``<script type="application/json" id="NAME">`` for readers and tests."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    fact_html = "".join(f"<span>{html.escape(k)} <b>{html.escape(v)}</b></span>" for k, v in facts)
    body = "".join(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    scripts = "".join(f'<script type="application/json" id="{html.escape(k)}">{_script_safe(v)}</script>'
                      for k, v in data.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1><div class=facts>{fact_html}</div>"
            f"<nav>{nav}</nav>{body}{scripts}</main></body></html>\n")


def _script_safe(text: str) -> str:
    """JSON text that cannot end its <script> element early."""
    return text.replace("</", "<\\/")


@cache
def hub_names() -> dict[str, str]:
    """Hub ids to English names, from the shipped China data (``scheduler/data/china.json``)."""
    data = json.loads(resources.files("scheduler.data").joinpath("china.json").read_text(encoding="utf-8"))
    return {h["id"]: h["name_en"].removesuffix(" hub") for h in data.get("hubs", ())}


def _hub_label(hub: str) -> str:
    """'hub NAME' for the China hubs' ids, 'hub ID' for others."""
    return f"hub {hub_names().get(hub, hub)}"


def plan_sections(instance: Instance, plan: Plan, data: MapData, *,
                  pool_group: str | None = None) -> list[Section]:
    """The report's sections for one plan: map, utilization, costs, unserved work, carbon, sectors."""
    return [map_section(instance, data), utilization_section(instance, plan, pool_group),
            cost_section(plan), unserved_section(instance, plan), carbon_section(instance, plan),
            sector_section(instance, plan)]


def map_section(instance: Instance, data: MapData) -> Section:
    flows = [f for f in data.flows if f.origin != f.target]
    local = [f for f in data.flows if f.origin == f.target]
    rows = [[f"{f.origin} → {f.target}", f"{f.demands:,}", f"{f.work_pflop:,.1f}", f"{f.gpu_hours:,.0f}"]
            for f in flows[:TOP_FLOWS]]
    moved = [sum(f.demands for f in flows), sum(f.work_pflop for f in flows), sum(f.gpu_hours for f in flows)]
    stay = [sum(f.demands for f in local), sum(f.work_pflop for f in local), sum(f.gpu_hours for f in local)]
    note = (f"<p class=note>Each point is a region at its coordinates: its area is the GPU-hours of capacity "
            f"there, its colour the share used; white points are regions without pools. Each arc runs from "
            f"the region where a demand's data is to the region where it runs, its width proportional to the "
            f"work moved. {stay[0]:,} placements ({stay[2]:,.0f} GPU-h) run where their data is and are not "
            f"drawn. The table lists the {min(TOP_FLOWS, len(flows))} largest of {len(flows):,} flows by "
            f"GPU-hours; all of them are in the page's data (<code>eastwest-map-data</code>).</p>")
    table = html_table(["flow", "placements", "work PFLOP", "GPU-h"], rows,
                       total=["all flows between regions", f"{moved[0]:,}", f"{moved[1]:,.1f}", f"{moved[2]:,.0f}"])
    return Section("map", "Map: regions and flows of work", map_svg(data, hub_names=hub_names()) + note + table)


def utilization_section(instance: Instance, plan: Plan, pool_group: str | None) -> Section:
    u = utilization(instance, plan, pool_group)
    used, available = u.used.sum(axis=1), u.available.sum(axis=1)
    hours = instance.horizon.slot_hours if instance.horizon else 1.0
    rows = [[g, f"{used[k] * hours:,.0f}", f"{available[k] * hours:,.0f}",
             percent(used[k] / available[k] if available[k] else None)] for k, g in enumerate(u.groups)]
    total = ["total", f"{used.sum() * hours:,.0f}", f"{available.sum() * hours:,.0f}",
             percent(used.sum() / available.sum() if available.sum() else None)]
    if instance.horizon is not None:
        figure = heatmap_svg(u, instance)
        note = (f"<p class=note>GPUs in use over GPUs available (outages taken out) by {u.by}, slot by slot; "
                "grey: none available.</p>")
    else:
        figure = bars_svg(list(u.groups), [used[k] / available[k] if available[k] else 0.0
                                           for k in range(len(u.groups))],
                          unit="GPU-hours used / capacity", name="utilization", share=True)
        note = f"<p class=note>GPU-hours used over capacity in the planning window, by {u.by}.</p>"
    table = html_table([u.by, "used GPU-h", "available GPU-h", "utilization"], rows, total=total)
    return Section("utilization", f"Utilization by {u.by}", figure + note + table)


def cost_section(plan: Plan) -> Section:
    c = plan.costs
    terms = [("compute", c.compute_cny), ("energy", c.energy_cny), ("transfer", c.transfer_cny),
             ("carbon", c.carbon_cny), ("unserved penalty", c.unserved_penalty_cny)]
    figure = bars_svg([t for t, _ in terms], [v for _, v in terms], unit="CNY", name="costs")
    rows = [[t, money(v), percent(v / plan.objective if plan.objective else None)] for t, v in terms]
    table = html_table(["cost term", "CNY", "share"], rows, total=["objective", money(plan.objective), ""])
    bound = html_table(["proven lower bound", "gap"], [[money(plan.lower_bound), percent(plan.gap, 3)]])
    periods = ""
    if c.energy_by_period_kwh:
        periods = html_table(["tariff period", "kWh", "CNY"],
                             [[k, f"{v:,.0f}", money(c.energy_by_period_cny.get(k))]
                              for k, v in c.energy_by_period_kwh.items()])
    return Section("costs", "Cost breakdown", figure + table + bound + periods)


def unserved_section(instance: Instance, plan: Plan) -> Section:
    rows = unserved_work(instance, plan)
    if not rows:
        return Section("unserved", "Unserved work by sector and reason", "<p>Every demand is served.</p>")
    sector_names = sorted({r.sector for r in rows})
    reasons = sorted({r.reason for r in rows})
    values = np.zeros((len(sector_names), len(reasons)))
    for r in rows:
        values[sector_names.index(r.sector), reasons.index(r.reason)] += r.work_pflop
    figure = stacked_bars_svg(sector_names, reasons, values, unit="unserved work, PFLOP", name="unserved")
    table = html_table(["sector", "reason", "demands", "work PFLOP", "penalty CNY"],
                       [[r.sector, r.reason, f"{r.demands:,}", f"{r.work_pflop:,.1f}", money(r.penalty_cny)]
                        for r in rows], text=2,
                       total=["total", "", f"{sum(r.demands for r in rows):,}",
                              f"{sum(r.work_pflop for r in rows):,.1f}", money(sum(r.penalty_cny for r in rows))])
    note = (f"<p class=note>Reasons as in the plan file (docs/formulation.md); "
            f"'{SERVICE_SHORTFALL}': the part of a service's load left unserved.</p>")
    return Section("unserved", "Unserved work by sector and reason", figure + note + table)


def carbon_section(instance: Instance, plan: Plan) -> Section:
    c = carbon(instance, plan)
    totals = c.kg.sum(axis=1)
    rows = [[c.regions[k], f"{totals[k] / 1000:,.2f}", percent(totals[k] / totals.sum() if totals.sum() else None)]
            for k in np.argsort(-totals, kind="stable") if totals[k] > 0]
    table = html_table(["region", "t CO2", "share"], rows,
                       total=["total", f"{totals.sum() / 1000:,.2f}", ""])
    when = ("by hour and region (each region's grid intensity in each slot)" if instance.horizon
            else "by region")
    note = f"<p class=note>Emissions of the energy drawn {when}; the plan reports {plan.costs.co2_t:,.2f} t.</p>"
    return Section("carbon", "Carbon by hour and region" if instance.horizon else "Carbon by region",
                   carbon_svg(c, instance) + note + table)


def sector_section(instance: Instance, plan: Plan) -> Section:
    rows = sectors(instance, plan)

    def line(name, served, unserved, done, left, cost):
        return [name, f"{served:,}", f"{unserved:,}", f"{done:,.1f}", f"{left:,.1f}",
                percent(done / (done + left) if done + left else None), money(cost)]

    body = [line(r.sector, r.served, r.unserved, r.served_pflop, r.unserved_pflop, r.cost_cny) for r in rows]
    total = line("total", *(sum(getattr(r, f) for r in rows)
                            for f in ("served", "unserved", "served_pflop", "unserved_pflop", "cost_cny")))
    return Section("sectors", "Sectors", html_table(
        ["sector", "served", "unserved", "served PFLOP", "unserved PFLOP", "served work", "cost CNY"],
        body, total=total))


def headline_facts(plan: Plan, verification: Verification | None = None) -> list[tuple[str, str]]:
    """Status, objective, bound, gap, engine and totals, as (label, value) pairs."""
    facts = [("status", plan.status.value), ("objective CNY", money(plan.objective)),
             ("lower bound", money(plan.lower_bound)), ("gap", percent(plan.gap, 3)),
             ("engine", f"{plan.stats.engine}, {plan.stats.wall_time_s:.1f} s"),
             ("energy", f"{plan.costs.energy_kwh:,.0f} kWh"), ("CO2", f"{plan.costs.co2_t:,.1f} t")]
    if verification is not None:
        facts.append(("verifier", "ok" if verification.ok else f"{len(verification.violations)} violation(s)"))
    return facts


def html_report(instance: Instance, plan: Plan, verification: Verification | None = None, *,
                pool_group: str | None = None) -> str:
    """The whole page for one plan of ``instance`` (see the module docstring).

    ``verification`` (from `verify`) adds its verdict to the headline; ``pool_group`` (hub,
    region or accelerator) groups the utilization chart, by hub where regions name hubs.
    Raises `MissingExtra` without matplotlib, ValueError where the plan names a demand the
    instance lacks.
    """
    _pyplot()
    data = map_data(instance, plan)
    sections = plan_sections(instance, plan, data, pool_group=pool_group)
    when = ""
    if instance.horizon is not None:
        h = instance.horizon
        when = f" · {h.slots} slots of {h.slot_hours:g} h from {beijing(h.start, '%Y-%m-%d %H:%M')} Beijing time"
    title = f"eastwest plan: {instance.name}{when}"
    return page(title, headline_facts(plan, verification), sections,
                {"eastwest-map-data": data.to_json()})


def write_html_report(instance: Instance, plan: Plan, path, *, protect: tuple = (),
                      verification: Verification | None = None, pool_group: str | None = None) -> None:
    """`html_report` written to ``path`` atomically, never over a path in ``protect``."""
    from scheduler.io import write_text

    write_text(html_report(instance, plan, verification, pool_group=pool_group), path, protect=protect)


__all__ = ["Carbon", "Flow", "MapData", "MissingExtra", "Section", "Site", "Utilization", "carbon",
           "html_report", "html_table", "map_data", "map_svg", "page", "plan_sections", "require_matplotlib", "sectors",
           "unserved_work", "utilization", "write_html_report"]
