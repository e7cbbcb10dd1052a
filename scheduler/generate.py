"""Synthetic, source-grounded instances of China's national computing-power network.

`china_instance` builds an `Instance` with the 31 provinces and the 10 national data-centre clusters
as regions (facts from `scheduler/data/china.json`), a fibre backbone whose latencies follow the
calibrated model carried there, accelerator pools concentrated in the clusters, and demands drawn
from nine sector profiles. Every draw comes from one seeded numpy Generator, so a seed fixes the
instance. Pool sizes follow the drawn demand, so instances of any size are equally tight: the
demand that can reach the west, run at each pool's speed, needs `tightness` times the GPU-hours of
the western clusters. With `hours`, the instance gets a horizon of one-hour slots: time-of-use
prices and hourly carbon per region, pool outages, batch windows and services with day loads
(facts from `scheduler/data/china-time.json`). instances/README.md documents every assumption and
number.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from importlib import resources

import numpy as np

from models import (
    BEIJING,
    INTRA_REGION_LATENCY_MS,
    MAX_SLOTS,
    PRECISION_FALLBACKS,
    QUANTUM_SLACK,
    TIMED_SCHEMA_VERSION,
    AcceleratorPool,
    Demand,
    DemandKind,
    Horizon,
    Instance,
    Link,
    Outage,
    Precision,
    Region,
    Sector,
)

REFERENCE_TFLOPS = 300.0
"""Dense TFLOPS of the reference GPU that sector runtimes are drawn on (A800/910B class)."""

PFLOP_PER_REFERENCE_GPU_HOUR = REFERENCE_TFLOPS * 3600 / 1000

TYPICAL_CNY_PER_REFERENCE_GPU_HOUR = 7.0
"""Typical price of one reference GPU-hour (rental plus energy); penalties and price caps scale it."""

TYPICAL_TRANSFER_CNY_PER_GB = 0.08
"""Typical transfer price of a demand's data (one cluster link and one backbone link)."""

LONGEST_RUNTIME_SHARE = 0.6
"""No runtime on the reference GPU exceeds this share of the window."""

PROVINCE_NEIGHBOURS = 3
"""Each province is linked to its nearest provinces by great-circle distance."""

EAST_SHARES = {"east_clusters": (0.75, 0.06), "provinces": (0.35, 0.02)}
"""Capacity of the eastern clusters and of the provincial pools: shares of (the demand no western
cluster can take, for its latency bound or residency; the demand a western cluster can take).
The western clusters hold 1 / tightness of the demand they can take, so some of it must spill
east or stay unserved."""

PRICE_FACTOR = {"west": 0.85, "cy": 0.95, "east": 1.0, "province_east": 1.2, "province_west": 0.95}
"""Multipliers of the national rental price: cheap western land and subsidies, dear coastal sites."""

WEST_CLUSTERS = {"horinger": 0.30, "zhongwei": 0.25, "guian": 0.25, "qingyang": 0.20}
EAST_CLUSTERS = {"zhangjiakou": 0.25, "yrd_demo": 0.25, "shaoguan": 0.20, "wuhu": 0.10,
                 "tianfu": 0.12, "chongqing": 0.08}
WEST_MIX = {"Ascend910B": 0.45, "H20": 0.20, "H800": 0.20, "A800": 0.15}
EAST_MIX = {"H800": 0.25, "A800": 0.25, "Ascend910B": 0.30, "L20": 0.20}
CY_MIX = {"Ascend910B": 0.50, "H20": 0.30, "A800": 0.20}
PROVINCE_MIX: dict[str, dict[str, float]] = {
    "beijing": {"H800": 0.3, "A800": 0.3, "L20": 0.4},
    "shanghai": {"H800": 0.3, "A800": 0.3, "L20": 0.4},
    "guangdong": {"H800": 0.3, "A800": 0.3, "L20": 0.4},
    "jiangsu": {"A800": 0.5, "L20": 0.5},
    "zhejiang": {"A800": 0.5, "L20": 0.5},
    "shandong": {"Ascend910B": 0.6, "L20": 0.4},
    "tianjin": {"A800": 1.0},
    "fujian": {"L20": 1.0},
    "hubei": {"Ascend910B": 1.0},
    "henan": {"Ascend910B": 0.5, "MLU370-X8": 0.5},
    "hunan": {"MLU370-X8": 0.5, "L20": 0.5},
    "liaoning": {"MLU370-X8": 1.0},
    "shaanxi": {"Ascend910B": 1.0},
    "qinghai": {"Ascend910B": 1.0},
}
"""Provinces holding their own (small, dear) pools; the other provinces hold none."""


@dataclass(frozen=True)
class SectorProfile:
    """How one sector's demands are drawn (ranges are uniform unless named otherwise)."""

    sector: Sector
    share: float  # of all demands
    gdp_weight: float  # origin weight = gdp_weight * GDP share + (1 - gdp_weight) * population share
    gang_sizes: dict[int, float]
    runtime_median_h: float  # lognormal, on a reference GPU
    runtime_sigma: float
    runtime_range_h: tuple[float, float]
    deadline_slack: tuple[float, float]  # deadline = runtime x slack, at most the window
    precisions: dict[Precision, float]
    strict_share: float
    min_memory_gb: dict[float, float]
    latency_share: float  # share with a latency bound to the origin
    latency_ms: tuple[float, float]
    data_gb_median: float  # lognormal
    data_gb_sigma: float
    own_province_share: float  # residency: own jurisdiction only
    nearby_share: float  # residency: own + the two nearest jurisdictions with capacity
    priority: tuple[float, float]
    must_serve_share: float
    penalty_multiple: tuple[float, float]  # of the typical cost
    price_cap_share: float
    price_cap_multiple: tuple[float, float]  # of the typical cost


FP = Precision
SECTOR_PROFILES: tuple[SectorProfile, ...] = (
    SectorProfile(
        sector=Sector.AUTONOMOUS_DRIVING, share=0.1, gdp_weight=0.8,
        gang_sizes={1: 0.2, 2: 0.2, 4: 0.2, 8: 0.25, 16: 0.1, 32: 0.05}, runtime_median_h=6.0,
        runtime_sigma=1.0, runtime_range_h=(0.25, 100.0), deadline_slack=(1.3, 3.0),
        precisions={FP.BF16: 0.5, FP.FP16: 0.2, FP.FP8: 0.2, FP.INT8: 0.1}, strict_share=0.1,
        min_memory_gb={0.0: 0.4, 48.0: 0.3, 80.0: 0.3}, latency_share=0.5, latency_ms=(8.0, 20.0),
        data_gb_median=3000.0, data_gb_sigma=1.0, own_province_share=0.2, nearby_share=0.0,
        priority=(1.0, 2.0), must_serve_share=0.01, penalty_multiple=(1.5, 4.0), price_cap_share=0.1,
        price_cap_multiple=(1.3, 2.5),
    ),
    SectorProfile(
        sector=Sector.MEDICAL_IMAGING, share=0.08, gdp_weight=0.5,
        gang_sizes={1: 0.5, 2: 0.25, 4: 0.15, 8: 0.1}, runtime_median_h=3.0, runtime_sigma=1.0,
        runtime_range_h=(0.1, 72.0), deadline_slack=(1.5, 4.0),
        precisions={FP.FP16: 0.4, FP.BF16: 0.4, FP.INT8: 0.2}, strict_share=0.05,
        min_memory_gb={0.0: 0.5, 48.0: 0.3, 64.0: 0.2}, latency_share=0.3, latency_ms=(10.0, 25.0),
        data_gb_median=300.0, data_gb_sigma=1.0, own_province_share=0.6, nearby_share=0.2,
        priority=(1.5, 3.0), must_serve_share=0.05, penalty_multiple=(2.0, 6.0), price_cap_share=0.1,
        price_cap_multiple=(1.3, 2.5),
    ),
    SectorProfile(
        sector=Sector.LLM_TRAINING, share=0.04, gdp_weight=0.9,
        gang_sizes={8: 0.15, 16: 0.2, 32: 0.2, 64: 0.2, 128: 0.15, 256: 0.1}, runtime_median_h=24.0,
        runtime_sigma=0.7, runtime_range_h=(2.0, 110.0), deadline_slack=(1.2, 2.5),
        precisions={FP.BF16: 0.85, FP.FP8: 0.15}, strict_share=0.3,
        min_memory_gb={64.0: 0.5, 80.0: 0.5}, latency_share=0.0, latency_ms=(0.0, 0.0),
        data_gb_median=2000.0, data_gb_sigma=1.0, own_province_share=0.0, nearby_share=0.0,
        priority=(1.0, 3.0), must_serve_share=0.0, penalty_multiple=(1.5, 3.0), price_cap_share=0.2,
        price_cap_multiple=(1.2, 2.0),
    ),
    SectorProfile(
        sector=Sector.LLM_INFERENCE, share=0.22, gdp_weight=0.8,
        gang_sizes={1: 0.35, 2: 0.25, 4: 0.2, 8: 0.2}, runtime_median_h=8.0, runtime_sigma=0.8,
        runtime_range_h=(0.25, 120.0), deadline_slack=(1.1, 1.6),
        precisions={FP.FP8: 0.6, FP.INT8: 0.15, FP.BF16: 0.25}, strict_share=0.25,
        min_memory_gb={0.0: 0.4, 48.0: 0.2, 80.0: 0.3, 96.0: 0.1}, latency_share=0.85,
        latency_ms=(5.0, 20.0), data_gb_median=20.0, data_gb_sigma=1.0, own_province_share=0.05,
        nearby_share=0.05, priority=(1.0, 2.0), must_serve_share=0.01, penalty_multiple=(2.0, 5.0),
        price_cap_share=0.1, price_cap_multiple=(1.3, 2.5),
    ),
    SectorProfile(
        sector=Sector.FINANCE, share=0.1, gdp_weight=0.95,
        gang_sizes={1: 0.4, 2: 0.2, 4: 0.2, 8: 0.15, 16: 0.05}, runtime_median_h=2.0, runtime_sigma=1.0,
        runtime_range_h=(0.1, 48.0), deadline_slack=(1.2, 2.0),
        precisions={FP.INT8: 0.3, FP.FP8: 0.3, FP.BF16: 0.3, FP.FP16: 0.1}, strict_share=0.15,
        min_memory_gb={0.0: 0.5, 48.0: 0.25, 80.0: 0.25}, latency_share=0.8, latency_ms=(5.0, 12.0),
        data_gb_median=50.0, data_gb_sigma=1.0, own_province_share=0.4, nearby_share=0.2,
        priority=(1.5, 3.0), must_serve_share=0.04, penalty_multiple=(3.0, 8.0), price_cap_share=0.05,
        price_cap_multiple=(1.3, 2.5),
    ),
    SectorProfile(
        sector=Sector.SMART_CITY, share=0.14, gdp_weight=0.5, gang_sizes={1: 0.5, 2: 0.3, 4: 0.2},
        runtime_median_h=6.0, runtime_sigma=0.9, runtime_range_h=(0.25, 120.0),
        deadline_slack=(1.2, 2.5), precisions={FP.INT8: 0.4, FP.FP16: 0.3, FP.FP8: 0.2, FP.BF16: 0.1},
        strict_share=0.1, min_memory_gb={0.0: 0.7, 48.0: 0.3}, latency_share=0.6,
        latency_ms=(10.0, 20.0), data_gb_median=500.0, data_gb_sigma=1.0, own_province_share=0.3,
        nearby_share=0.1, priority=(1.0, 2.0), must_serve_share=0.02, penalty_multiple=(1.5, 4.0),
        price_cap_share=0.2, price_cap_multiple=(1.2, 2.0),
    ),
    SectorProfile(
        sector=Sector.INDUSTRIAL_MANUFACTURING, share=0.12, gdp_weight=0.8,
        gang_sizes={1: 0.4, 2: 0.3, 4: 0.2, 8: 0.1}, runtime_median_h=4.0, runtime_sigma=1.0,
        runtime_range_h=(0.1, 96.0), deadline_slack=(1.3, 3.0),
        precisions={FP.FP16: 0.3, FP.BF16: 0.3, FP.INT8: 0.2, FP.FP8: 0.2}, strict_share=0.05,
        min_memory_gb={0.0: 0.6, 48.0: 0.3, 80.0: 0.1}, latency_share=0.4, latency_ms=(10.0, 20.0),
        data_gb_median=100.0, data_gb_sigma=1.0, own_province_share=0.1, nearby_share=0.0,
        priority=(1.0, 2.0), must_serve_share=0.01, penalty_multiple=(1.5, 3.0), price_cap_share=0.2,
        price_cap_multiple=(1.2, 2.0),
    ),
    SectorProfile(
        sector=Sector.EDUCATION, share=0.12, gdp_weight=0.3,
        gang_sizes={1: 0.5, 2: 0.25, 4: 0.15, 8: 0.1}, runtime_median_h=4.0, runtime_sigma=1.0,
        runtime_range_h=(0.1, 96.0), deadline_slack=(2.0, 6.0),
        precisions={FP.BF16: 0.5, FP.FP16: 0.4, FP.FP8: 0.1}, strict_share=0.0,
        min_memory_gb={0.0: 0.7, 48.0: 0.3}, latency_share=0.1, latency_ms=(20.0, 40.0),
        data_gb_median=20.0, data_gb_sigma=1.0, own_province_share=0.0, nearby_share=0.0,
        priority=(0.5, 1.0), must_serve_share=0.0, penalty_multiple=(0.8, 2.0), price_cap_share=0.5,
        price_cap_multiple=(1.0, 1.6),
    ),
    SectorProfile(
        sector=Sector.AGRICULTURE, share=0.08, gdp_weight=0.2, gang_sizes={1: 0.6, 2: 0.25, 4: 0.15},
        runtime_median_h=3.0, runtime_sigma=1.0, runtime_range_h=(0.1, 72.0), deadline_slack=(2.0, 6.0),
        precisions={FP.FP16: 0.4, FP.BF16: 0.3, FP.INT8: 0.3}, strict_share=0.0,
        min_memory_gb={0.0: 0.8, 48.0: 0.2}, latency_share=0.05, latency_ms=(20.0, 40.0),
        data_gb_median=200.0, data_gb_sigma=1.0, own_province_share=0.1, nearby_share=0.0,
        priority=(0.5, 1.0), must_serve_share=0.0, penalty_multiple=(0.8, 2.0), price_cap_share=0.5,
        price_cap_multiple=(1.0, 1.6),
    ),
)

PRECISIONS: tuple[Precision, ...] = tuple(Precision)
MUST_SERVE_MIN_POOLS = 3
"""A must-serve demand keeps at least this many eligible pools (capacity aside)."""
MUST_SERVE_MAX_GANG = 8
MUST_SERVE_MIN_LATENCY_MS = 20.0


@lru_cache(maxsize=1)
def china_data() -> dict:
    """The facts in scheduler/data/china.json (sources included)."""
    text = resources.files("scheduler").joinpath("data/china.json").read_text(encoding="utf-8")
    return json.loads(text)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a 6,371 km sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def model_latency_ms(km: float, route_factor: float | None = None) -> float:
    """One-way latency of one link under the calibrated model (route factor, fibre speed, overhead)."""
    model = china_data()["latency_model"]
    factor = model["route_factor_optical"]["value"] if route_factor is None else route_factor
    return factor * km / model["fiber_km_per_ms"]["value"] + model["link_overhead_ms"]["value"]


def cluster_region_id(cluster_id: str) -> str:
    return f"{cluster_id}_cluster"


# --------------------------------------------------------------------------------------------
# Network


@dataclass(frozen=True)
class _Site:
    """A region before its pools are known."""

    id: str
    name: str
    jurisdiction: str
    lat: float
    lon: float
    electricity: float
    pue: float
    carbon: float
    kind: str  # "province" or "cluster"
    hub: str | None
    role: str
    tags: tuple[str, ...]


def _sites(data: dict) -> list[_Site]:
    out = []
    for p in data["provinces"]:
        out.append(_Site(
            p["id"], f"{p['name_en']} ({p['name_zh']})", p["jurisdiction"], p["lat"], p["lon"],
            p["electricity_price_cny_per_kwh"]["value"], p["pue"]["value"],
            p["carbon_g_co2_per_kwh"]["value"], "province", p["hub_id"], p["role"],
            ("province", f"hub:{p['hub_id'] or 'none'}", p["role"], f"nbs:{p['nbs_region']}"),
        ))
    for c in data["clusters"]:
        out.append(_Site(
            cluster_region_id(c["id"]), f"{c['name_en']} ({c['name_zh']})", c["jurisdiction"],
            c["lat"], c["lon"], c["electricity_price_cny_per_kwh"]["value"], c["pue"]["value"],
            c["carbon_g_co2_per_kwh"]["value"], "cluster", c["hub_id"], c["role"],
            ("cluster", f"hub:{c['hub_id']}", c["role"], f"province:{c['province']}"),
        ))
    return out


def _links(data: dict, sites: list[_Site]) -> list[Link]:
    """Clusters fully meshed and linked to every hub province; provinces to their nearest provinces."""
    net = data["network"]

    def link(a: _Site, b: _Site, kind: str) -> Link:
        km = great_circle_km(a.lat, a.lon, b.lat, b.lon)
        return Link(
            source=a.id, target=b.id, latency_ms=round(model_latency_ms(km), 3),
            bandwidth_gbps=net["bandwidth_gbps"][kind]["value"],
            transfer_cost_cny_per_gb=net["transfer_cost_cny_per_gb"][kind]["value"],
        )

    clusters = [s for s in sites if s.kind == "cluster"]
    provinces = [s for s in sites if s.kind == "province"]
    hub_provinces = [s for s in provinces if s.hub]
    links: dict[frozenset[str], Link] = {}
    for i, a in enumerate(clusters):
        for b in clusters[i + 1:]:
            links[frozenset((a.id, b.id))] = link(a, b, "cluster_to_cluster")
        for b in hub_provinces:
            links[frozenset((a.id, b.id))] = link(a, b, "cluster_to_province")

    def km(a: _Site, b: _Site) -> float:
        return great_circle_km(a.lat, a.lon, b.lat, b.lon)

    for a in provinces:
        nearest = sorted((b for b in provinces if b is not a), key=lambda b: (km(a, b), b.id))
        for b in nearest[:PROVINCE_NEIGHBOURS]:
            links.setdefault(frozenset((a.id, b.id)), link(a, b, "province_to_province"))

    # Join any separate components by their closest pair of provinces.
    while True:
        component = _component_of(provinces[0].id, links)
        outside = [s for s in sites if s.id not in component]
        if not outside:
            break
        inside = [s for s in sites if s.id in component]
        a, b = min(((a, b) for a in inside for b in outside), key=lambda ab: km(*ab))
        links[frozenset((a.id, b.id))] = link(a, b, "province_to_province")
    return list(links.values())


def _component_of(start: str, links: dict[frozenset[str], Link]) -> set[str]:
    neighbours: dict[str, list[str]] = {}
    for link in links.values():
        neighbours.setdefault(link.source, []).append(link.target)
        neighbours.setdefault(link.target, []).append(link.source)
    seen, stack = {start}, [start]
    while stack:
        for n in neighbours.get(stack.pop(), ()):
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen


def route_matrices(region_ids: list[str], links: list[Link]) -> tuple[np.ndarray, np.ndarray]:
    """(latency_ms, transfer_cny_per_gb) between every pair of regions along the route of
    docs/formulation.md §1 (least latency, ties by transfer cost); the diagonal is the intra-region
    latency and zero transfer; unreachable pairs are inf."""
    index = {r: k for k, r in enumerate(region_ids)}
    adjacency: list[list[tuple[int, float, float]]] = [[] for _ in region_ids]
    for link in links:
        a, b = index[link.source], index[link.target]
        adjacency[a].append((b, link.latency_ms, link.transfer_cost_cny_per_gb))
        adjacency[b].append((a, link.latency_ms, link.transfer_cost_cny_per_gb))
    n = len(region_ids)
    latency = np.full((n, n), np.inf)
    transfer = np.full((n, n), np.inf)
    for origin in range(n):
        best = {origin: (0.0, 0.0)}
        done: set[int] = set()
        heap = [(0.0, 0.0, origin)]
        while heap:
            lat, cost, node = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            latency[origin, node], transfer[origin, node] = lat, cost
            for nb, dl, dc in adjacency[node]:
                label = (lat + dl, cost + dc)
                if nb not in done and label < best.get(nb, (math.inf, math.inf)):
                    best[nb] = label
                    heapq.heappush(heap, (*label, nb))
        latency[origin, origin], transfer[origin, origin] = INTRA_REGION_LATENCY_MS, 0.0
    return latency, transfer


# --------------------------------------------------------------------------------------------
# Pools


@dataclass
class _PoolPlan:
    """A pool whose size is set once the demand is known."""

    region: int  # index into the sites
    accelerator: dict
    group: str
    weight: float
    price: float
    gpu_count: int = 0


def _pool_plans(data: dict, sites: list[_Site]) -> list[_PoolPlan]:
    accelerators = {a["id"]: a for a in data["accelerators"]}
    site_index = {s.id: k for k, s in enumerate(sites)}
    gdp = {p["id"]: p["gdp_2023_trillion_cny"]["value"] for p in data["provinces"]}
    plans = []

    def add(site_id: str, mix: dict[str, float], group: str, weight: float, factor: float) -> None:
        for acc_id, share in mix.items():
            acc = accelerators[acc_id]
            price = round(acc["price_cny_per_gpu_hour"]["value"] * factor, 2)
            plans.append(_PoolPlan(site_index[site_id], acc, group, weight * share, price))

    for cluster, weight in WEST_CLUSTERS.items():
        add(cluster_region_id(cluster), WEST_MIX, "west", weight, PRICE_FACTOR["west"])
    for cluster, weight in EAST_CLUSTERS.items():
        hub = sites[site_index[cluster_region_id(cluster)]].hub
        mix, factor = (CY_MIX, PRICE_FACTOR["cy"]) if hub == "cy" else (EAST_MIX, PRICE_FACTOR["east"])
        add(cluster_region_id(cluster), mix, "east_clusters", weight, factor)
    total_gdp = sum(gdp[p] for p in PROVINCE_MIX)
    for province, mix in PROVINCE_MIX.items():
        role = sites[site_index[province]].role
        factor = PRICE_FACTOR["province_west" if role == "west" else "province_east"]
        add(province, mix, "provinces", gdp[province] / total_gdp, factor)
    return plans


def _run_tflops(accelerator: dict, precision: Precision, strict: bool) -> float:
    """Dense TFLOPS a demand of this precision runs at on the accelerator; 0 if it cannot."""
    tflops = accelerator["tflops"]
    if precision.value in tflops:
        return float(tflops[precision.value])
    if strict:
        return 0.0
    for fallback in PRECISION_FALLBACKS[precision]:
        if fallback.value in tflops:
            return float(tflops[fallback.value])
    return 0.0


def _group_demands(d: _DemandDraws, precision: np.ndarray, west_ok: np.ndarray, tightness: float,
                   work: np.ndarray,
                   east_scale: float = 1.0) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """For each pool group, (work_pflop, precision index, share of that demand it must hold);
    `east_scale` multiplies the eastern groups' shares (EAST_SHARES)."""
    groups = {"west": (work[west_ok], precision[west_ok], 1.0 / tightness)}
    for group, (east_bound, west_bound) in EAST_SHARES.items():
        # H_a below is linear in the work, so a weighted demand with share 1 sizes the group.
        groups[group] = (np.where(west_ok, west_bound, east_bound) * work, precision, east_scale)
    return groups


def _share_per_gpu(plans: list[_PoolPlan], work: np.ndarray, precision: np.ndarray,
                   window_hours: float) -> list[float]:
    """Share of a demand one GPU of each pool holds: window / H_a, where H_a is the GPU-hours the
    whole demand would take on accelerator a (each demand at its own precision)."""
    work_by_precision = np.bincount(precision, weights=work, minlength=len(PRECISIONS))
    used = work_by_precision > 0
    out = []
    for plan in plans:
        rates = np.array([_run_tflops(plan.accelerator, p, strict=False) for p in PRECISIONS])
        if np.any(rates[used] <= 0):
            raise ValueError(f"accelerator {plan.accelerator['id']} cannot run some demanded precision")
        hours_all_on = float(np.sum(work_by_precision[used] / (3.6 * rates[used])))
        out.append(window_hours / hours_all_on if hours_all_on > 0 else 0.0)
    return out


def _size_pools(plans: list[_PoolPlan], demand_of_group: dict[str, tuple[np.ndarray, np.ndarray, float]],
                window_hours: float) -> dict[str, float]:
    """Set the GPU counts so that each group holds its share of its demand (see _group_demands);
    return the shares held once the counts are rounded to whole GPUs (at least one)."""
    for group, (work, precision, share) in demand_of_group.items():
        members = [p for p in plans if p.group == group]
        per_gpu = _share_per_gpu(members, work, precision, window_hours)
        per_weight = sum(p.weight * g for p, g in zip(members, per_gpu))
        scale = share / per_weight if per_weight > 0 else 0.0
        for plan in members:
            plan.gpu_count = max(1, round(plan.weight * scale))
    return _held_shares(plans, demand_of_group, window_hours)


def _held_shares(plans: list[_PoolPlan], demand_of_group: dict[str, tuple[np.ndarray, np.ndarray, float]],
                 window_hours: float) -> dict[str, float]:
    """Share of its demand each group holds with the current GPU counts."""
    held = {}
    for group, (work, precision, _) in demand_of_group.items():
        members = [p for p in plans if p.group == group]
        per_gpu = _share_per_gpu(members, work, precision, window_hours)
        held[group] = sum(p.gpu_count * g for p, g in zip(members, per_gpu))
    return held


def _narrow_gangs(d: _DemandDraws, widest: int, window_hours: float) -> None:
    """Narrow gangs wider than `widest`; the job keeps its work up to the longest runtime."""
    too_wide = d.gang > widest
    stretched = d.runtime_h[too_wide] * d.gang[too_wide] / widest
    d.runtime_h[too_wide] = np.round(np.minimum(stretched, LONGEST_RUNTIME_SHARE * window_hours), 3)
    d.gang[too_wide] = widest


# --------------------------------------------------------------------------------------------
# Demands


@dataclass
class _DemandDraws:
    """One array per Demand field (index = demand)."""

    sector: np.ndarray
    origin: np.ndarray  # site index
    gang: np.ndarray
    runtime_h: np.ndarray  # on the reference GPU
    precision: np.ndarray  # index into PRECISIONS
    strict: np.ndarray
    min_memory: np.ndarray
    latency_bound: np.ndarray  # inf: none
    data_gb: np.ndarray
    residency: np.ndarray  # 0 none, 1 own jurisdiction, 2 own + nearby
    priority: np.ndarray
    must_serve: np.ndarray
    penalty_multiple: np.ndarray
    price_cap_multiple: np.ndarray  # inf: no cap
    deadline_slack: np.ndarray
    # Timed instances only (None otherwise): see _draw_time.
    service: np.ndarray | None = None  # the demand is a service
    extra_h: np.ndarray | None = None  # batch: hours of slack added to the window
    release_u: np.ndarray | None = None  # batch: where the window sits in the horizon, in [0, 1)

    @property
    def work_pflop(self) -> np.ndarray:
        return np.round(self.runtime_h * self.gang * PFLOP_PER_REFERENCE_GPU_HOUR, 1)

    @property
    def typical_cost(self) -> np.ndarray:
        """Typical price of serving the demand: compute and energy, plus moving its data."""
        compute = self.runtime_h * self.gang * TYPICAL_CNY_PER_REFERENCE_GPU_HOUR
        return compute + self.data_gb * TYPICAL_TRANSFER_CNY_PER_GB

    def take(self, rows: np.ndarray) -> _DemandDraws:
        """The draws of the demands at `rows` (copies)."""
        return _DemandDraws(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                               for f in fields(self)})


def _choice(rng: np.random.Generator, table: dict, size: int) -> np.ndarray:
    keys = np.array(list(table.keys()))
    probabilities = np.array(list(table.values()), dtype=float)
    return keys[rng.choice(len(keys), size=size, p=probabilities / probabilities.sum())]


def _draw_demands(rng: np.random.Generator, n: int, data: dict, window_hours: float,
                  nearest_capacity_ms: np.ndarray) -> _DemandDraws:
    provinces = data["provinces"]
    gdp = np.array([p["gdp_2023_trillion_cny"]["value"] for p in provinces])
    population = np.array([p["population_2023_million"]["value"] for p in provinces])
    shares = np.array([s.share for s in SECTOR_PROFILES])
    sector = rng.choice(len(SECTOR_PROFILES), size=n, p=shares / shares.sum()).astype(np.int8)

    def empty(dtype, fill=0):
        return np.full(n, fill, dtype=dtype)

    d = _DemandDraws(
        sector=sector, origin=empty(np.int16), gang=empty(np.int64), runtime_h=empty(float),
        precision=empty(np.int8), strict=empty(bool), min_memory=empty(float),
        latency_bound=empty(float, np.inf), data_gb=empty(float), residency=empty(np.int8),
        priority=empty(float), must_serve=empty(bool), penalty_multiple=empty(float),
        price_cap_multiple=empty(float, np.inf), deadline_slack=empty(float),
    )
    precision_index = {p: k for k, p in enumerate(PRECISIONS)}
    longest = LONGEST_RUNTIME_SHARE * window_hours
    for k, prof in enumerate(SECTOR_PROFILES):
        rows = np.flatnonzero(sector == k)
        m = len(rows)
        if m == 0:
            continue
        weights = prof.gdp_weight * gdp / gdp.sum() + (1 - prof.gdp_weight) * population / population.sum()
        d.origin[rows] = rng.choice(len(provinces), size=m, p=weights / weights.sum())
        d.gang[rows] = _choice(rng, prof.gang_sizes, m)
        low, high = prof.runtime_range_h
        runtime = prof.runtime_median_h * np.exp(prof.runtime_sigma * rng.standard_normal(m))
        d.runtime_h[rows] = np.clip(runtime, min(low, longest), min(high, longest))
        d.precision[rows] = _choice(rng, {precision_index[p]: w for p, w in prof.precisions.items()}, m)
        d.strict[rows] = rng.random(m) < prof.strict_share
        d.min_memory[rows] = _choice(rng, prof.min_memory_gb, m)
        bounded = rng.random(m) < prof.latency_share
        bound = rng.uniform(*prof.latency_ms, size=m) if prof.latency_share > 0 else np.zeros(m)
        d.latency_bound[rows] = np.where(bounded, bound, np.inf)
        d.data_gb[rows] = prof.data_gb_median * np.exp(prof.data_gb_sigma * rng.standard_normal(m))
        u = rng.random(m)
        d.residency[rows] = np.where(u < prof.own_province_share, 1,
                                     np.where(u < prof.own_province_share + prof.nearby_share, 2, 0))
        d.priority[rows] = rng.uniform(*prof.priority, size=m)
        d.must_serve[rows] = rng.random(m) < prof.must_serve_share
        d.penalty_multiple[rows] = rng.uniform(*prof.penalty_multiple, size=m)
        capped = rng.random(m) < prof.price_cap_share
        d.price_cap_multiple[rows] = np.where(capped, rng.uniform(*prof.price_cap_multiple, size=m), np.inf)
        d.deadline_slack[rows] = rng.uniform(*prof.deadline_slack, size=m)

    # A latency bound no region with capacity can meet is loosened to the nearest such region.
    d.latency_bound = np.maximum(d.latency_bound, nearest_capacity_ms[d.origin] + 0.5)
    d.latency_bound = np.ceil(d.latency_bound * 10) / 10
    d.runtime_h = np.round(d.runtime_h, 3)
    d.data_gb = np.round(d.data_gb, 1)
    d.priority = np.round(d.priority, 1)

    # Must-serve demands are kept easy to place: small gangs, loose latency, no caps.
    ms = d.must_serve
    d.gang[ms] = np.minimum(d.gang[ms], MUST_SERVE_MAX_GANG)
    d.latency_bound[ms] = np.maximum(d.latency_bound[ms], MUST_SERVE_MIN_LATENCY_MS)
    d.strict[ms] = False
    d.min_memory[ms] = 0.0
    d.price_cap_multiple[ms] = np.inf
    return d


# --------------------------------------------------------------------------------------------
# Eligibility (capacity aside), used to keep every demand servable


@dataclass
class _Context:
    sites: list[_Site]
    plans: list[_PoolPlan]
    latency: np.ndarray
    transfer: np.ndarray
    jurisdiction_of_site: np.ndarray  # index into jurisdictions
    residency_sets: np.ndarray  # [origin site, residency code, jurisdiction] -> allowed
    window_hours: float
    quantum: float
    slots: int | None = None  # timed instances: the horizon's slots of one hour
    cap_price: np.ndarray | None = None  # per site: the energy price price caps are checked at


def _eligible_pool_counts(d: _DemandDraws, ctx: _Context, deadline: np.ndarray,
                          max_cost: np.ndarray) -> np.ndarray:
    """How many pools pass every rule of docs/formulation.md §2 for each demand (capacity aside)."""
    count = np.zeros(len(d.gang), dtype=np.int32)
    for _, ok in _eligible_masks(d, ctx, deadline, max_cost):
        count += ok
    return count


def _eligible_masks(d: _DemandDraws, ctx: _Context, deadline: np.ndarray, max_cost: np.ndarray):
    """(pool plan, mask of the demands it is eligible for), pool by pool."""
    work = d.work_pflop
    allowed_by_region = ctx.residency_sets[d.origin, d.residency]  # [demands, jurisdictions]
    for plan in ctx.plans:
        acc, r = plan.accelerator, plan.region
        site = ctx.sites[r]
        ok = (d.gang <= plan.gpu_count) & (d.min_memory <= acc["memory_gb"])
        rates = np.array([[_run_tflops(acc, p, s) for s in (False, True)] for p in PRECISIONS])
        rate = rates[d.precision, d.strict.astype(np.int8)]
        ok &= rate > 0
        ok &= allowed_by_region[:, ctx.jurisdiction_of_site[r]]
        ok &= ctx.latency[d.origin, r] <= d.latency_bound
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = work * 1000 / (rate * 3600)
            units = np.maximum(1, np.ceil(raw / ctx.quantum - QUANTUM_SLACK))
        usage = units * ctx.quantum
        ok &= usage / d.gang <= deadline
        energy_kwh = usage * acc["power_kw"] * site.pue
        electricity = site.electricity if ctx.cap_price is None else ctx.cap_price[r]
        price = usage * plan.price + energy_kwh * electricity + d.data_gb * ctx.transfer[d.origin, r]
        ok &= price <= max_cost
        yield plan, ok


def _bound_relaxed_services(d: _DemandDraws, ctx: _Context) -> None:
    """Give a service whose latency bound was relaxed away the bound of its nearest eligible pool
    (+ 0.5 ms, rounded up to 0.1 ms): a service always stays near its users."""
    rows = np.flatnonzero(d.service & np.isinf(d.latency_bound))
    if len(rows) == 0:
        return
    trial = d.take(rows)
    nearest = np.full(len(rows), np.inf)
    for plan, ok in _eligible_masks(trial, ctx, _run_limits(trial, ctx), _price_caps(trial)):
        nearest = np.where(ok, np.minimum(nearest, ctx.latency[trial.origin, plan.region]), nearest)
    d.latency_bound[rows] = np.ceil((nearest + 0.5) * 10) / 10


def _deadlines(d: _DemandDraws, window_hours: float) -> np.ndarray:
    return np.minimum(window_hours, np.round(d.runtime_h * d.deadline_slack, 2))


def _run_limits(d: _DemandDraws, ctx: _Context) -> np.ndarray:
    """The longest run each demand may have on a pool, in hours: its deadline, or in a timed
    instance its window less the slot its data may need to arrive (services: none)."""
    if ctx.slots is None:
        return _deadlines(d, ctx.window_hours)
    release, deadline = _windows(d, ctx.slots)
    return np.where(d.service, np.inf, (deadline - release - 1).astype(float))


def _price_caps(d: _DemandDraws) -> np.ndarray:
    return np.round(d.typical_cost * d.price_cap_multiple, 2)


def _make_servable(d: _DemandDraws, ctx: _Context) -> dict[str, int]:
    """Relax the demands left without enough eligible pools and return how many each step touched.

    Must-serve demands need MUST_SERVE_MIN_POOLS pools (capacity aside), the others one. A short
    demand first gets the single relaxation, in the order of RELAXATION_STEPS, that fixes it alone;
    the few that no single step fixes get the steps one after another until they are fixed.
    """
    needed = np.where(d.must_serve, MUST_SERVE_MIN_POOLS, 1)

    def short_rows(rows: np.ndarray, draws: _DemandDraws) -> np.ndarray:
        counts = _eligible_pool_counts(draws, ctx, _run_limits(draws, ctx), _price_caps(draws))
        return counts < needed[rows]

    relaxed: dict[str, int] = {}
    rows = np.flatnonzero(short_rows(np.arange(len(needed)), d))
    for step in RELAXATION_STEPS:
        if len(rows) == 0:
            return relaxed
        trial = d.take(rows)
        _relax(trial, step, np.ones(len(rows), dtype=bool))
        fixed = ~short_rows(rows, trial)
        _relax(d, step, _mask(len(needed), rows[fixed]))
        relaxed[step] = int(fixed.sum())
        rows = rows[~fixed]
    for step in RELAXATION_STEPS:
        if len(rows) == 0:
            return relaxed
        _relax(d, step, _mask(len(needed), rows))
        relaxed[step] += len(rows)
        rows = rows[short_rows(rows, d.take(rows))]
    if len(rows):
        raise RuntimeError(f"{len(rows)} demands have too few eligible pools with every rule relaxed")
    return relaxed


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _relax(d: _DemandDraws, step: str, rows: np.ndarray) -> None:
    if step == "price cap":
        d.price_cap_multiple[rows] = np.inf
    elif step == "strict precision":
        d.strict[rows] = False
    elif step == "memory":
        d.min_memory[rows] = 0.0
    elif step == "deadline":
        d.deadline_slack[rows] = np.inf
    elif step == "latency":
        d.latency_bound[rows] = np.inf
    elif step == "residency":
        d.residency[rows] = 0
    else:
        raise ValueError(f"unknown relaxation step {step!r}")


RELAXATION_STEPS = ("price cap", "strict precision", "memory", "deadline", "latency", "residency")


# --------------------------------------------------------------------------------------------
# The instance


def china_instance(*, demands: int, seed: int = 0, window_hours: float | None = None,
                   tightness: float | None = None, gpu_hour_quantum: float = 0.01,
                   name: str | None = None, hours: int | None = None, start: datetime | None = None,
                   carbon_cap_t_co2: float | None = None) -> Instance:
    """A China national-network instance with `demands` demands, fixed by `seed`.

    `tightness` is the demand a western cluster can take (latency bound and residency allowing)
    over the capacity of the four western clusters, each demand run at the pool's speed for its
    precision (default 1.15; TIMED_TIGHTNESS with `hours`); the eastern clusters and provincial
    pools are sized by EAST_SHARES. Deadlines never exceed `window_hours` (default 168).

    With `hours`, the instance has a horizon of that many one-hour slots from `start` (default
    Monday 2025-06-02 00:00 Beijing time): time-of-use prices and hourly carbon per region, pool
    outages, batch windows and services (facts in scheduler/data/china-time.json; see _draw_time).
    Without it the instance is the single-window one, unchanged.
    """
    if isinstance(demands, bool) or not isinstance(demands, int) or demands < 1:
        raise ValueError(f"demands must be a positive integer, got {demands!r}")
    if hours is not None:
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_SLOTS:
            raise ValueError(f"hours must be an integer in [1, {MAX_SLOTS}], got {hours!r}")
        if window_hours is not None and window_hours != hours:
            raise ValueError(f"window_hours ({window_hours!r}) must equal hours ({hours}) or be left out")
        window_hours = float(hours)
    elif start is not None or carbon_cap_t_co2 is not None:
        raise ValueError("start and carbon_cap_t_co2 need hours (a horizon)")
    window_hours = 168.0 if window_hours is None else window_hours
    tightness = (1.15 if hours is None else TIMED_TIGHTNESS) if tightness is None else tightness
    if not (0 < window_hours <= 100_000):
        raise ValueError(f"window_hours must be in (0, 100000], got {window_hours!r}")
    if not (tightness > 0 and math.isfinite(tightness)):
        raise ValueError(f"tightness must be positive, got {tightness!r}")
    if not (0 < gpu_hour_quantum <= 1_000):
        raise ValueError(f"gpu_hour_quantum must be in (0, 1000], got {gpu_hour_quantum!r}")
    if carbon_cap_t_co2 is not None and not (0 <= carbon_cap_t_co2 <= 1e15):
        raise ValueError(f"carbon_cap_t_co2 must be in [0, 1e15], got {carbon_cap_t_co2!r}")

    data = china_data()
    rng = np.random.default_rng(seed)
    sites = _sites(data)
    site_ids = [s.id for s in sites]
    links = _links(data, sites)
    latency, transfer = route_matrices(site_ids, links)
    plans = _pool_plans(data, sites)

    jurisdictions = sorted({s.jurisdiction for s in sites})
    jurisdiction_index = {j: k for k, j in enumerate(jurisdictions)}
    jurisdiction_of_site = np.array([jurisdiction_index[s.jurisdiction] for s in sites])
    capacity_sites = sorted({p.region for p in plans})
    has_capacity = np.zeros(len(jurisdictions), dtype=bool)
    has_capacity[jurisdiction_of_site[capacity_sites]] = True
    nearest_capacity_ms = latency[:, capacity_sites].min(axis=1)
    residency_sets, residency_tuples = _residency_sets(sites, latency, jurisdictions,
                                                       jurisdiction_of_site, has_capacity)

    d = _draw_demands(rng, demands, data, window_hours, nearest_capacity_ms)
    d.residency[(d.residency == 1) & ~has_capacity[jurisdiction_of_site[d.origin]]] = 2
    services = None if hours is None else _draw_time(rng, d, nearest_capacity_ms)

    def work() -> np.ndarray:
        """Work per demand that sizes the pools: a service's mean load over the horizon."""
        if services is None:
            return d.work_pflop
        return np.where(d.service, _service_sizing_work(d, services, window_hours), d.work_pflop)

    precision = d.precision.astype(np.int64)
    west_ok = _reaches_west(d, sites, latency, residency_sets, jurisdiction_of_site)
    # Every western pool must host any gang: gangs wider than the smallest western pool are
    # narrowed (the job keeps its work and runs longer, up to the longest runtime, so the work of
    # the widest jobs can shrink) and the pools sized again, until the two agree.
    while True:
        groups = (_group_demands(d, precision, west_ok, tightness, work()) if hours is None else
                  _group_demands(d, precision, west_ok, tightness, work(), TIMED_EAST_SCALE))
        held = _size_pools(plans, groups, window_hours)
        smallest_west_pool = min(p.gpu_count for p in plans if p.group == "west")
        widest = 2 ** int(math.log2(smallest_west_pool))
        if d.gang.max() <= widest:
            break
        _narrow_gangs(d, widest, window_hours)

    west_share = float(work()[west_ok].sum() / work().sum())
    if hours is None:
        ctx = _Context(sites, plans, latency, transfer, jurisdiction_of_site, residency_sets,
                       window_hours, gpu_hour_quantum)
        relaxed = _make_servable(d, ctx)
        regions = _regions(sites, plans)
        demand_objects = _demand_objects(d, sites, residency_tuples, window_hours)
    else:
        start = DEFAULT_START if start is None else start
        days = _time_profiles(sites, start.astimezone(BEIJING).month)
        ctx = _Context(sites, plans, latency, transfer, jurisdiction_of_site, residency_sets,
                       window_hours, gpu_hour_quantum, slots=hours,
                       cap_price=np.array([max(day.price) for day in days]))
        relaxed = _make_servable(d, ctx)
        _bound_relaxed_services(d, ctx)
        regions = _regions(sites, plans, days, _draw_outages(rng, plans, sites, hours))
        demand_objects = _timed_demand_objects(d, services, sites, residency_tuples, hours)
    relaxed_text = ", ".join(f"{k}: {v}" for k, v in relaxed.items() if v) or "none"
    timed_args = "" if hours is None else f", hours={hours}"
    if carbon_cap_t_co2 is not None:
        timed_args += f", carbon_cap_t_co2={carbon_cap_t_co2}"
    timed_text = "" if hours is None else (
        f" {int(d.service.sum())} of the demands are services. Time-of-use prices, hourly carbon, "
        f"outages, windows and services: scheduler/data/china-time.json."
    )
    description = (
        f"China national computing-power network (31 provinces, 10 national clusters), generated by "
        f"scheduler.generate.china_instance(demands={demands}, seed={seed}, window_hours={window_hours}, "
        f"tightness={tightness}{timed_args}). {west_share:.1%} of the work can reach a western cluster; the "
        f"western clusters hold {held['west']:.3f} of that work. Demands relaxed to "
        f"stay servable ({relaxed_text}).{timed_text} Sources and assumptions: instances/README.md."
    )
    if hours is None:
        return Instance(
            name=name or f"china-{demands}-s{seed}", description=description, window_hours=window_hours,
            gpu_hour_quantum=gpu_hour_quantum, regions=regions, links=tuple(links),
            demands=demand_objects,
        )
    return Instance(
        schema_version=TIMED_SCHEMA_VERSION, name=name or f"china-{demands}-s{seed}-h{hours}",
        description=description, window_hours=window_hours,
        horizon=Horizon(slots=hours, slot_hours=1.0, start=start),
        gpu_hour_quantum=gpu_hour_quantum, regions=regions, links=tuple(links),
        demands=demand_objects, carbon_cap_t_co2=carbon_cap_t_co2,
    )


def _reaches_west(d: _DemandDraws, sites: list[_Site], latency: np.ndarray, residency_sets: np.ndarray,
                  jurisdiction_of_site: np.ndarray) -> np.ndarray:
    """Whether some western cluster meets the demand's latency bound and residency."""
    ok = np.zeros(len(d.origin), dtype=bool)
    for r, site in enumerate(sites):
        if site.kind == "cluster" and site.role == "west":
            allowed = residency_sets[d.origin, d.residency, jurisdiction_of_site[r]]
            ok |= allowed & (latency[d.origin, r] <= d.latency_bound)
    return ok


def _residency_sets(sites, latency, jurisdictions, jurisdiction_of_site, has_capacity):
    """allowed[origin site, code, jurisdiction] and the matching tuples of jurisdiction names.

    Code 0: anywhere; 1: own jurisdiction; 2: own and the two nearest other jurisdictions that
    hold capacity (by latency from the origin)."""
    n_sites, n_jur = len(sites), len(jurisdictions)
    allowed = np.zeros((n_sites, 3, n_jur), dtype=bool)
    tuples: list[list[tuple[str, ...] | None]] = []
    for o in range(n_sites):
        own = jurisdiction_of_site[o]
        nearby: list[int] = []
        for r in np.argsort(latency[o], kind="stable"):
            j = jurisdiction_of_site[r]
            if j != own and has_capacity[j] and j not in nearby:
                nearby.append(j)
            if len(nearby) == 2:
                break
        allowed[o, 0, :] = True
        allowed[o, 1, own] = True
        allowed[o, 2, [own, *nearby]] = True
        tuples.append([None, (jurisdictions[own],), tuple(jurisdictions[j] for j in (own, *nearby))])
    return allowed, tuples


def _regions(sites: list[_Site], plans: list[_PoolPlan], days: list[_Day] | None = None,
             outages: list[tuple[Outage, ...]] | None = None) -> tuple[Region, ...]:
    """The regions with their pools; with `days` and `outages`, their profiles and outages too."""
    pools_by_site: dict[int, list[AcceleratorPool]] = {}
    for k, plan in enumerate(plans):
        acc = plan.accelerator
        pools_by_site.setdefault(plan.region, []).append(AcceleratorPool(
            id=f"{sites[plan.region].id}/{acc['id'].lower()}", accelerator=acc["id"],
            gpu_count=plan.gpu_count, memory_gb_per_gpu=acc["memory_gb"],
            tflops_by_precision={Precision(k): v for k, v in acc["tflops"].items()},
            power_kw_per_gpu=acc["power_kw"], price_cny_per_gpu_hour=plan.price,
            outages=() if outages is None else outages[k],
        ))

    def profiles(k: int) -> dict:
        if days is None:
            return {}
        day = days[k]
        return {"electricity_price_by_slot_cny_per_kwh": day.price, "tariff_periods": day.periods,
                "carbon_by_slot_g_co2_per_kwh": day.carbon}

    return tuple(
        Region(id=s.id, name=s.name, jurisdiction=s.jurisdiction, lat=s.lat, lon=s.lon,
               electricity_price_cny_per_kwh=s.electricity, pue=s.pue, carbon_g_co2_per_kwh=s.carbon,
               pools=tuple(pools_by_site.get(k, ())), tags=s.tags, **profiles(k))
        for k, s in enumerate(sites)
    )


def _optional(values: np.ndarray) -> list[float | None]:
    return [None if math.isinf(v) else v for v in values.tolist()]


def _demand_objects(d: _DemandDraws, sites: list[_Site], residency_tuples,
                    window_hours: float) -> tuple[Demand, ...]:
    """Build the Demand objects from plain lists (the main cost at scale)."""
    n = len(d.sector)
    width = len(str(max(n - 1, 0)))
    sectors = [p.sector for p in SECTOR_PROFILES]
    origin_ids = [s.id for s in sites]
    penalty = np.round(d.typical_cost * d.penalty_multiple, 2)
    columns = zip(
        d.sector.tolist(), d.origin.tolist(), d.work_pflop.tolist(), d.gang.tolist(),
        d.precision.tolist(), d.strict.tolist(), d.min_memory.tolist(), _optional(d.latency_bound),
        d.data_gb.tolist(), d.residency.tolist(), _deadlines(d, window_hours).tolist(),
        d.priority.tolist(), d.must_serve.tolist(), penalty.tolist(), _optional(_price_caps(d)),
    )
    out = []
    for i, (sec, org, work, gang, prec, strict, mem, lat, data_gb, res, deadline, prio, must,
            pen, cap) in enumerate(columns):
        out.append(Demand(
            id=f"d{i:0{width}d}", sector=sectors[sec], origin=origin_ids[org], work_pflop=work,
            gang_size=gang, precision=PRECISIONS[prec], strict_precision=strict,
            min_memory_gb_per_gpu=mem, max_latency_ms=lat, data_gb=data_gb,
            jurisdictions=residency_tuples[org][res], deadline_hours=deadline, priority=prio,
            must_serve=must, unserved_penalty_cny=pen, max_cost_cny=cap,
        ))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Time (instances with a horizon): scheduler/data/china-time.json

DEFAULT_START = datetime(2025, 6, 2, tzinfo=BEIJING)
"""Slot 0 of a timed instance: Monday 2 June 2025, 00:00 Beijing time."""

TIMED_TIGHTNESS = 0.8
"""Default tightness of a timed instance: the western clusters hold 1.25 times the work that can
reach them, averaged over the horizon, because windows and services crowd the busy hours."""

TIMED_EAST_SCALE = 1.3
"""A timed instance's eastern clusters and provincial pools hold this many times their shares of
EAST_SHARES: services and urgent jobs with tight latency bounds crowd them in the busy hours."""

MAINTENANCE_SHARE = 0.3
"""Share of pools with one maintenance window (night start 0-4 h, 2-6 h, 10-50% of the GPUs)."""

RESERVED_BLOCKS = 2
"""Cluster pools with a reserved block (24-48 h, 10-20% of the GPUs)."""


@dataclass(frozen=True)
class TimedSectorProfile:
    """How a sector's demands are timed: batch windows, and the share that are services."""

    window_extra_h: tuple[float, float]  # batch: hours added to runtime x slack (uniform)
    service_share: float = 0.0
    load_shapes: tuple[tuple[str, float], ...] = ()  # (china-time.json inference_load_shapes key, weight)
    service_gangs: tuple[tuple[int, float], ...] = ((1, 0.6), (2, 0.3), (4, 0.1))  # GPUs of a replica
    peak_replicas: tuple[float, float] = (1.0, 3.0)  # replicas of reference GPUs at the peak hour
    service_latency_ms: tuple[float, float] = (0.0, 0.0)
    traffic_gbps: tuple[float, float] = (0.0, 0.0)  # at full load


TIMED_PROFILES: dict[Sector, TimedSectorProfile] = {
    Sector.AUTONOMOUS_DRIVING: TimedSectorProfile(window_extra_h=(6.0, 48.0)),
    Sector.MEDICAL_IMAGING: TimedSectorProfile(window_extra_h=(0.0, 4.0)),
    Sector.LLM_TRAINING: TimedSectorProfile(window_extra_h=(24.0, 96.0)),
    Sector.LLM_INFERENCE: TimedSectorProfile(
        window_extra_h=(12.0, 24.0), service_share=0.15,
        load_shapes=(("consumer_chat", 0.5), ("api_enterprise", 0.5)),
        service_latency_ms=(8.0, 15.0), traffic_gbps=(0.5, 5.0)),
    Sector.FINANCE: TimedSectorProfile(
        window_extra_h=(0.0, 3.0), service_share=0.06, load_shapes=(("api_enterprise", 1.0),),
        service_latency_ms=(3.0, 8.0), traffic_gbps=(0.5, 5.0)),
    Sector.SMART_CITY: TimedSectorProfile(
        window_extra_h=(4.0, 24.0), service_share=0.08, load_shapes=(("consumer_chat", 1.0),),
        service_latency_ms=(5.0, 10.0), traffic_gbps=(5.0, 40.0)),
    Sector.INDUSTRIAL_MANUFACTURING: TimedSectorProfile(window_extra_h=(4.0, 36.0)),
    Sector.EDUCATION: TimedSectorProfile(window_extra_h=(24.0, 96.0)),
    Sector.AGRICULTURE: TimedSectorProfile(window_extra_h=(24.0, 96.0)),
}
"""All estimates (instances/README.md, "The week"): training, education and agriculture batch work
is flexible over days, medical imaging and finance urgent; offline inference gets about the 24 h
completion window of batch inference APIs; services are interactive inference, smart-city video
analytics and finance."""

LOAD_SHAPES = ("consumer_chat", "api_enterprise")


@lru_cache(maxsize=1)
def china_time_data() -> dict:
    """The time-varying facts in scheduler/data/china-time.json (sources included)."""
    text = resources.files("scheduler").joinpath("data/china-time.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class _ServiceDraws:
    """Per demand (meaningful where it is a service): load shape, peak size and traffic."""

    shape: np.ndarray  # index into LOAD_SHAPES
    peak_replicas: np.ndarray
    traffic_gbps: np.ndarray


def _draw_time(rng: np.random.Generator, d: _DemandDraws, nearest_capacity_ms: np.ndarray) -> _ServiceDraws:
    """Draw the batch windows and turn a share of each service sector's demands into services.

    Services get a latency bound of their sector's (loosened to the nearest region with capacity,
    as batch bounds are), are never must-serve and have no price cap.
    """
    n = len(d.sector)
    d.service = np.zeros(n, dtype=bool)
    d.extra_h = np.zeros(n)
    d.release_u = rng.random(n)
    shape = np.zeros(n, dtype=np.int8)
    peak = np.zeros(n)
    traffic = np.zeros(n)
    for k, prof in enumerate(SECTOR_PROFILES):
        timed = TIMED_PROFILES[prof.sector]
        rows = np.flatnonzero(d.sector == k)
        d.extra_h[rows] = rng.uniform(*timed.window_extra_h, size=len(rows))
        if timed.service_share == 0:
            continue
        rows = rows[rng.random(len(rows)) < timed.service_share]
        m = len(rows)
        d.service[rows] = True
        d.gang[rows] = _choice(rng, dict(timed.service_gangs), m)
        shape[rows] = _choice(rng, {LOAD_SHAPES.index(key): w for key, w in timed.load_shapes}, m)
        peak[rows] = rng.uniform(*timed.peak_replicas, size=m)
        traffic[rows] = rng.uniform(*timed.traffic_gbps, size=m)
        bound = np.maximum(rng.uniform(*timed.service_latency_ms, size=m),
                           nearest_capacity_ms[d.origin[rows]] + 0.5)
        d.latency_bound[rows] = np.ceil(bound * 10) / 10
    d.extra_h = np.round(d.extra_h, 1)
    d.must_serve[d.service] = False
    d.price_cap_multiple[d.service] = np.inf
    return _ServiceDraws(shape, np.round(peak, 2), np.round(traffic, 2))


def _service_loads(d: _DemandDraws, s: _ServiceDraws) -> np.ndarray:
    """[demand, 24] load in PFLOP/h: the day shape scaled so its peak hour needs `peak_replicas`
    gangs of reference GPUs (rounded to the default load quantum, 0.01 PFLOP/h)."""
    shapes = china_time_data()["inference_load_shapes"]
    table = np.array([shapes[key]["value"] for key in LOAD_SHAPES])
    relative = table[s.shape] / table[s.shape].max(axis=1, keepdims=True)
    peak = s.peak_replicas * d.gang * PFLOP_PER_REFERENCE_GPU_HOUR
    return np.round(peak[:, None] * relative, 2)


def _service_sizing_work(d: _DemandDraws, s: _ServiceDraws, hours: float) -> np.ndarray:
    """The work that sizes the pools for a service: its load rounded up, hour by hour, to whole
    replicas of reference GPUs (replicas are rented whole), over the horizon."""
    replica = d.gang * PFLOP_PER_REFERENCE_GPU_HOUR
    replicas = np.ceil(_service_loads(d, s) / replica[:, None] - QUANTUM_SLACK)
    return replicas.mean(axis=1) * replica * hours


def _windows(d: _DemandDraws, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch (release_slot, deadline_slot): ceil(runtime x slack + extra) slots plus one for the
    data to arrive, at most the horizon, placed at `release_u` of the room the horizon leaves."""
    need = np.minimum(d.runtime_h * d.deadline_slack + d.extra_h, slots)  # inf (relaxed) -> slots
    length = np.minimum(np.ceil(need - QUANTUM_SLACK) + 1, slots).astype(np.int64)
    release = np.floor(d.release_u * (slots - length + 1)).astype(np.int64)
    return release, release + length


@dataclass(frozen=True)
class _Day:
    """A region's 24 hourly values: tariff periods, price (CNY/kWh) and carbon (g/kWh)."""

    periods: str
    price: tuple[float, ...]
    carbon: tuple[float, ...]


def _time_profiles(sites: list[_Site], month: int) -> list[_Day]:
    """Each site's day in `month`: the season's TOU pattern times its base price, and the annual
    carbon intensity shaped by its solar and wind day (china-time.json `carbon_model`)."""
    facts = china_time_data()
    tariff_of = {rid: t for t in facts["tariffs"] for rid in t["regions"]}
    group_of = {rid: g for g in facts["carbon_groups"] if isinstance(g["regions"], list)
                for rid in g["regions"]}
    other = next(g for g in facts["carbon_groups"] if g["id"] == "other")
    out = []
    for site in sites:
        tariff = tariff_of.get(site.id)
        season = next((s for s in tariff["seasons"] if month in s["months"]), None) if tariff else None
        periods = "F" * 24 if season is None else season["pattern"]
        ratios = {"F": 1.0} if season is None else season["ratios"]
        price = tuple(round(site.electricity * ratios[c], 4) for c in periods)
        carbon = _carbon_day(site.carbon, site.lon, month, group_of.get(site.id, other), facts)
        out.append(_Day(periods, price, carbon))
    return out


def _carbon_day(annual: float, lon: float, month: int, group: dict, facts: dict) -> tuple[float, ...]:
    """24 intensities whose mean is exactly `annual` (in tenths of a gram): lowest in the
    renewable hours, `swing` below the highest."""
    pv = np.array(facts["solar_shape"]["value"], dtype=float)
    solar_noon_h = 12 + 4 * (120 - lon) / 60
    pv = np.roll(pv, math.floor(solar_noon_h - facts["solar_shape"]["centre_hour"] + 0.5))
    wind = np.array(facts["wind_shape"]["value"], dtype=float)
    wind_month = facts["wind_season_multiplier"]["value"][str(month)]
    share = group["solar_energy_share"]["value"]
    renewable = share * pv / pv.mean() + (1 - share) * wind_month * wind / wind.mean()
    x = renewable / renewable.mean() - 1
    swing = group["swing"]["value"]
    beta = swing / (x.max() - x.min() + swing * x.min())
    tenths = annual * 10 * (1 - beta * x)
    whole = np.floor(tenths)
    missing = int(round(round(annual * 10) * 24 - whole.sum()))
    whole[np.argsort(-(tenths - whole), kind="stable")[:missing]] += 1
    return tuple(round(v / 10, 1) for v in whole.tolist())


def _draw_outages(rng: np.random.Generator, plans: list[_PoolPlan], sites: list[_Site],
                  slots: int) -> list[tuple[Outage, ...]]:
    """Maintenance windows on MAINTENANCE_SHARE of the pools and RESERVED_BLOCKS reserved blocks."""
    n = len(plans)
    has = rng.random(n) < MAINTENANCE_SHARE
    day = rng.integers(0, max(1, slots // 24), size=n)
    hour = rng.integers(0, 5, size=n)
    length = rng.integers(2, 7, size=n)
    share = rng.uniform(0.1, 0.5, size=n)
    clusters = [k for k, p in enumerate(plans) if sites[p.region].kind == "cluster"]
    reserved = rng.choice(clusters, size=RESERVED_BLOCKS, replace=False)
    reserved_start = rng.integers(0, slots, size=RESERVED_BLOCKS)
    reserved_length = rng.integers(24, 49, size=RESERVED_BLOCKS)
    reserved_share = rng.uniform(0.1, 0.2, size=RESERVED_BLOCKS)
    out: list[list[Outage]] = [[] for _ in plans]
    down = [0] * n
    for k in np.flatnonzero(has).tolist():
        begin = min(int(day[k] * 24 + hour[k]), slots - 1)
        down[k] = min(plans[k].gpu_count, max(1, round(share[k] * plans[k].gpu_count)))
        out[k].append(Outage(start_slot=begin, end_slot=min(begin + int(length[k]), slots), gpus=down[k]))
    for j, k in enumerate(reserved.tolist()):
        begin = int(reserved_start[j])
        gpus = min(plans[k].gpu_count - down[k], max(1, round(reserved_share[j] * plans[k].gpu_count)))
        if gpus > 0:
            out[k].append(Outage(start_slot=begin, end_slot=min(begin + int(reserved_length[j]), slots),
                                 gpus=gpus, kind="reserved"))
    return [tuple(sorted(o, key=lambda x: (x.start_slot, x.end_slot))) for o in out]


def _timed_demand_objects(d: _DemandDraws, s: _ServiceDraws, sites: list[_Site], residency_tuples,
                          slots: int) -> tuple[Demand, ...]:
    """Build the Demand objects of a timed instance: batch demands with windows (no deadline in
    hours: the window is the deadline), services with loads, traffic and a penalty per PFLOP."""
    n = len(d.sector)
    width = len(str(max(n - 1, 0)))
    sectors = [p.sector for p in SECTOR_PROFILES]
    origin_ids = [s_.id for s_ in sites]
    penalty = np.round(d.typical_cost * d.penalty_multiple, 2)
    penalty_per_pflop = np.round(
        d.penalty_multiple * TYPICAL_CNY_PER_REFERENCE_GPU_HOUR / PFLOP_PER_REFERENCE_GPU_HOUR, 6)
    release, deadline = _windows(d, slots)
    loads = _service_loads(d, s)
    columns = zip(
        d.sector.tolist(), d.origin.tolist(), d.work_pflop.tolist(), d.gang.tolist(),
        d.precision.tolist(), d.strict.tolist(), d.min_memory.tolist(), _optional(d.latency_bound),
        d.data_gb.tolist(), d.residency.tolist(), d.priority.tolist(), d.must_serve.tolist(),
        penalty.tolist(), _optional(_price_caps(d)), d.service.tolist(), release.tolist(),
        deadline.tolist(), s.traffic_gbps.tolist(), penalty_per_pflop.tolist(),
    )
    out = []
    for i, (sec, org, work, gang, prec, strict, mem, lat, data_gb, res, prio, must, pen, cap,
            service, rel, dl, traffic, pen_pflop) in enumerate(columns):
        common = dict(
            id=f"d{i:0{width}d}", sector=sectors[sec], origin=origin_ids[org], gang_size=gang,
            precision=PRECISIONS[prec], strict_precision=strict, min_memory_gb_per_gpu=mem,
            max_latency_ms=lat, jurisdictions=residency_tuples[org][res], priority=prio,
        )
        if service:
            out.append(Demand(
                kind=DemandKind.SERVICE, **common, load_pflop_per_hour=tuple(loads[i].tolist()),
                traffic_gbps=traffic, unserved_penalty_cny_per_pflop=pen_pflop,
            ))
        else:
            out.append(Demand(
                **common, work_pflop=work, data_gb=data_gb, must_serve=must, unserved_penalty_cny=pen,
                max_cost_cny=cap, release_slot=rel, deadline_slot=dl,
            ))
    return tuple(out)
