"""A reference for instances with a horizon, written from docs/formulation.md §1, §2 and §8 alone:
routes, eligibility, per-start costs, flows, service placements, and the optimum by enumeration.

It reads only the `Instance` (models, networkx and itertools; never `scheduler`), so a wrong rule,
unit, rounding or cost in the timed compiler or engines cannot hide behind it. Routes come from
enumerating every simple path (networkx.all_simple_paths), a different algorithm from the
compiler's. Where two paths tie on (latency, transfer) the formulation lets a plan use either; this
reference takes the first in region-id order, so instances meant for comparison have no ties.

Exponential: a few batch demands, a service or two, a handful of slots.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import networkx as nx

from models import (
    BANDWIDTH_QUANTUM_GBPS,
    INTRA_REGION_LATENCY_MS,
    PRECISION_FALLBACKS,
    QUANTUM_SLACK,
    DemandKind,
    Instance,
)


@dataclass(frozen=True)
class Route:
    """The route from a demand's origin to a region: latency, transfer CNY/GB and the links crossed."""

    latency: float
    transfer: float
    links: tuple[int, ...]  # indices into Instance.links


@dataclass(frozen=True)
class Start:
    """One allowed (batch demand, pool, start): slots held, cost, emissions and data rate."""

    demand: str
    pool: str
    start: int
    slots: int
    gang: int
    cost: float
    grams: int
    rate: int  # bandwidth quanta on every link of `links` in slots release .. start-1
    links: tuple[int, ...]
    release: int


@dataclass(frozen=True)
class Placement:
    """One eligible (service, pool): quanta per replica, per-slot rent and grams, traffic."""

    service: str
    pool: str
    gang: int
    kappa: int
    rent: tuple[float, ...]  # weighted cost of one replica in each slot
    co2_kg: tuple[float, ...]  # emissions of one replica in each slot
    transfer: float  # weighted transfer cost of one served quantum
    tau: int  # bandwidth quanta per served quantum on each route link
    links: tuple[int, ...]


def ceil_quanta(value: float) -> int:
    """Whole quanta, rounded up with the formulation's slack."""
    return math.ceil(value - QUANTUM_SLACK)


def routes(instance: Instance, origin: str) -> dict[str, Route]:
    """The lexicographic (latency, transfer) shortest route from ``origin`` to every reachable region."""
    graph = nx.Graph()
    graph.add_nodes_from(r.id for r in instance.regions)
    for k, link in enumerate(instance.links):
        graph.add_edge(link.source, link.target, index=k)
    out = {origin: Route(INTRA_REGION_LATENCY_MS, 0.0, ())}
    for region in instance.regions:
        if region.id == origin:
            continue
        best = None
        for path in sorted(nx.all_simple_paths(graph, origin, region.id)):
            links = tuple(graph.edges[a, b]["index"] for a, b in itertools.pairwise(path))
            key = (math.fsum(instance.links[k].latency_ms for k in links),
                   math.fsum(instance.links[k].transfer_cost_cny_per_gb for k in links))
            if best is None or key < best[0]:
                best = (key, links)
        if best is not None:
            out[region.id] = Route(best[0][0], best[0][1], best[1])
    return out


def run_precision(demand, pool):
    """The precision the demand runs at on the pool, or None (§2)."""
    if demand.precision in pool.tflops_by_precision:
        return demand.precision
    if demand.strict_precision:
        return None
    for fallback in PRECISION_FALLBACKS[demand.precision]:
        if fallback in pool.tflops_by_precision:
            return fallback
    return None


def _passes_common_rules(demand, region, pool, table) -> bool:
    """Rules 2-8: gang, accelerator, memory, precision, jurisdiction, reachability, latency."""
    if pool.gpu_count < demand.gang_size:
        return False
    if demand.accelerators is not None and pool.accelerator not in demand.accelerators:
        return False
    if pool.memory_gb_per_gpu < demand.min_memory_gb_per_gpu:
        return False
    if run_precision(demand, pool) is None:
        return False
    if demand.jurisdictions is not None and region.jurisdiction not in demand.jurisdictions:
        return False
    if region.id not in table:
        return False
    return not (demand.max_latency_ms is not None and table[region.id].latency > demand.max_latency_ms)


def _slot_series(instance: Instance, region) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(electricity price, grid carbon) of the region in every slot (§8.1)."""
    h = instance.horizon
    price = (h.expand(region.electricity_price_by_slot_cny_per_kwh)
             if region.electricity_price_by_slot_cny_per_kwh is not None
             else (region.electricity_price_cny_per_kwh,) * h.slots)
    carbon = (h.expand(region.carbon_by_slot_g_co2_per_kwh) if region.carbon_by_slot_g_co2_per_kwh is not None
              else (region.carbon_g_co2_per_kwh,) * h.slots)
    return price, carbon


def starts(instance: Instance) -> dict[str, list[Start]]:
    """Every allowed start of every batch demand, by demand (§2 rules, §8.2 windows, costs, rates)."""
    h = instance.horizon
    S, hours = h.slots, h.slot_hours
    q, w = instance.gpu_hour_quantum, instance.weights
    offers = {(o.demand, o.pool): o for o in instance.offers}
    out: dict[str, list[Start]] = {}
    for d in instance.demands:
        if d.kind != DemandKind.BATCH:
            continue
        table = routes(instance, d.origin)
        mine = out.setdefault(d.id, [])
        for region in instance.regions:
            price, carbon = _slot_series(instance, region)
            for p in region.pools:
                offer = offers.get((d.id, p.id))
                if d.work_pflop is None and offer is None:
                    continue
                if not _passes_common_rules(d, region, p, table):
                    continue
                if offer is not None:
                    raw = offer.gpu_hours
                else:
                    raw = d.work_pflop * 1000 / (p.tflops_by_precision[run_precision(d, p)] * 3600)
                units = max(1, math.ceil(raw / q - QUANTUM_SLACK))
                usage = units * q
                runtime = usage / d.gang_size
                if d.deadline_hours is not None and runtime > d.deadline_hours:
                    continue
                n = max(1, math.ceil(runtime / hours - QUANTUM_SLACK))
                route = table[region.id]
                moves = d.data_gb > 0 and region.id != d.origin
                rel = d.release_slot or 0
                dl = S if d.deadline_slot is None else d.deadline_slot
                compute_raw = offer.price_cny if offer is not None else usage * p.price_cny_per_gpu_hour
                transfer_raw = d.data_gb * route.transfer
                draw_kw = d.gang_size * p.power_kw_per_gpu * region.pue
                for s in range(rel + (1 if moves else 0), dl - n + 1):
                    hours_in = [hours] * (n - 1) + [runtime - (n - 1) * hours]
                    kwh = [draw_kw * a for a in hours_in]
                    energy_raw = 0.0 if offer is not None else math.fsum(
                        e * price[s + k] for k, e in enumerate(kwh))
                    co2_kg = math.fsum(e * carbon[s + k] for k, e in enumerate(kwh)) / 1000
                    if d.max_cost_cny is not None and compute_raw + energy_raw + transfer_raw > d.max_cost_cny:
                        continue
                    cost = (w.compute * compute_raw + w.energy * energy_raw + w.transfer * transfer_raw
                            + co2_kg / 1000 * w.carbon_price_cny_per_t_co2)
                    rate = 0
                    if moves:
                        gbps = 8 * d.data_gb / ((s - rel) * hours * 3600)
                        rate = ceil_quanta(gbps / BANDWIDTH_QUANTUM_GBPS)
                    mine.append(Start(d.id, p.id, s, n, d.gang_size, cost, ceil_quanta(co2_kg * 1000), rate,
                                      route.links if moves else (), rel))
    return out


def load_quanta(instance: Instance, demand) -> list[int]:
    """Lq[d,t]: the service's load in whole quanta, rounded up (0 for no load)."""
    Q = instance.load_quantum_pflop_per_hour
    return [ceil_quanta(v / Q) if v > 0 else 0 for v in instance.horizon.expand(demand.load_pflop_per_hour)]


def service_penalty_per_quantum(instance: Instance, demand) -> float:
    """π_load · Q · h: the cost of one load quantum left unserved for one slot."""
    w = instance.weights
    pi_load = w.unserved * demand.priority * (demand.unserved_penalty_cny_per_pflop or 0.0)
    return pi_load * instance.load_quantum_pflop_per_hour * instance.horizon.slot_hours


def placements(instance: Instance) -> dict[str, list[Placement]]:
    """Every eligible (service, pool), by service (§8.3)."""
    h = instance.horizon
    Q, w = instance.load_quantum_pflop_per_hour, instance.weights
    out: dict[str, list[Placement]] = {}
    for d in instance.demands:
        if d.kind != DemandKind.SERVICE:
            continue
        table = routes(instance, d.origin)
        mine = out.setdefault(d.id, [])
        peak = max(load_quanta(instance, d))
        traffic = d.traffic_gbps or 0.0
        for region in instance.regions:
            price, carbon = _slot_series(instance, region)
            for p in region.pools:
                if not _passes_common_rules(d, region, p, table):
                    continue
                tflops = p.tflops_by_precision[run_precision(d, p)]
                kappa = math.floor(d.gang_size * tflops * 3.6 / Q + QUANTUM_SLACK)
                gpu_hours = d.gang_size * h.slot_hours
                kwh = gpu_hours * p.power_kw_per_gpu * region.pue
                rent, emitted = [], []
                for t in range(h.slots):
                    co2_kg = kwh * carbon[t] / 1000
                    rent.append(w.compute * gpu_hours * p.price_cny_per_gpu_hour + w.energy * kwh * price[t]
                                + co2_kg / 1000 * w.carbon_price_cny_per_t_co2)
                    emitted.append(co2_kg)
                away = region.id != d.origin and peak > 0
                tau = ceil_quanta(traffic / peak / BANDWIDTH_QUANTUM_GBPS) if away else 0
                gb = traffic * h.slot_hours * 3600 / 8 / peak if away else 0.0
                transfer = w.transfer * table[region.id].transfer * gb
                mine.append(Placement(d.id, p.id, d.gang_size, kappa, tuple(rent), tuple(emitted), transfer,
                                      tau, table[region.id].links if away else ()))
    return out


def pool_capacity(instance: Instance) -> dict[str, list[int]]:
    """avail_p[t]: GPUs not taken out by an outage covering slot t."""
    S = instance.horizon.slots
    out = {}
    for _, p in instance.pools():
        out[p.id] = [p.gpu_count - sum(o.gpus for o in p.outages if o.start_slot <= t < o.end_slot)
                     for t in range(S)]
    return out


def link_capacity(instance: Instance) -> list[list[int]]:
    """bwq_l[t]: each link's bandwidth per slot in whole quanta, rounded down."""
    h = instance.horizon
    out = []
    for link in instance.links:
        bw = h.expand(link.bandwidth_by_slot_gbps) if link.bandwidth_by_slot_gbps is not None \
            else (link.bandwidth_gbps,) * h.slots
        out.append([math.floor(v / BANDWIDTH_QUANTUM_GBPS + QUANTUM_SLACK) for v in bw])
    return out


def carbon_cap_grams(instance: Instance) -> int | None:
    """The cap in whole grams (10^6 g per tonne)."""
    if instance.carbon_cap_t_co2 is None:
        return None
    return math.floor(instance.carbon_cap_t_co2 * 1e6 + QUANTUM_SLACK)


def batch_penalty(instance: Instance, demand) -> float:
    return instance.weights.unserved * demand.priority * demand.unserved_penalty_cny


def _pareto(points: list[tuple[float, tuple[float, ...]]]) -> list[tuple[float, tuple[float, ...]]]:
    """The (cost, emissions per placement) points that no other point beats in every coordinate."""
    out: list[tuple[float, tuple[float, ...]]] = []
    for cost, kg in sorted(set(points)):
        if not any(all(a <= b for a, b in zip(other, kg, strict=True)) for _, other in out):
            out.append((cost, kg))
    return out


def placement_grams(kg: tuple[float, ...]) -> int:
    """Against the cap each placement's emissions over all its slots are rounded up once (§8.1)."""
    return sum(ceil_quanta(v * 1000) for v in kg)


class _ServiceSlots:
    """The services' best trade-offs in one slot between cost and each placement's emissions,
    given what batch jobs leave free (emissions are ignored, hence collapsed, without a cap)."""

    def __init__(self, instance: Instance):
        self.services = [d for d in instance.demands if d.kind == DemandKind.SERVICE]
        self.places = placements(instance)
        self.order = [pl for d in self.services for pl in self.places[d.id]]
        self.capped = instance.carbon_cap_t_co2 is not None
        self.load = {d.id: load_quanta(instance, d) for d in self.services}
        self.penalty = {d.id: service_penalty_per_quantum(instance, d) for d in self.services}
        self.memo: dict[tuple, list[tuple[float, tuple[float, ...]]]] = {}

    def zero(self) -> tuple[float, ...]:
        return (0.0,) * len(self.order) if self.capped else ()

    def frontier(self, t: int, pools: dict[str, int], links: tuple[int, ...]):
        """Every choice of replicas and served quanta for every service in slot t (Pareto-reduced)."""
        key = (t, tuple(sorted(pools.items())), links)
        if key not in self.memo:
            self.memo[key] = self._enumerate(t, pools, links)
        return self.memo[key]

    def _enumerate(self, t: int, pools: dict[str, int], links: tuple[int, ...]):
        choices = []  # one list of (placement, replicas, served) per eligible (service, pool)
        for pl in self.order:
            choices.append([(pl, m, u) for m in range(pools[pl.pool] // pl.gang + 1)
                            for u in range(min(pl.kappa * m, self.load[pl.service][t]) + 1)])
        points = []
        for combo in itertools.product(*choices):
            gpus = dict.fromkeys(pools, 0)
            bw = list(links)
            served = dict.fromkeys(self.load, 0)
            cost = []
            for pl, m, u in combo:
                gpus[pl.pool] += pl.gang * m
                for k in pl.links:
                    bw[k] -= pl.tau * u
                served[pl.service] += u
                cost.append(pl.rent[t] * m + pl.transfer * u)
            if any(gpus[p] > pools[p] for p in pools) or any(b < 0 for b in bw):
                continue
            if any(served[s] > self.load[s][t] for s in served):
                continue
            cost.extend(self.penalty[s] * (self.load[s][t] - served[s]) for s in served)
            kg = tuple(pl.co2_kg[t] * m for pl, m, _ in combo) if self.capped else ()
            points.append((math.fsum(cost), kg))
        return _pareto(points)


def optimum(instance: Instance) -> float | None:
    """The optimal objective of §8.4 by enumerating every plan (None: the must-serve demands cannot
    all be served)."""
    S = instance.horizon.slots
    batch = [d for d in instance.demands if d.kind == DemandKind.BATCH]
    by_demand = starts(instance)
    alternatives = []
    for d in batch:
        mine: list[Start | None] = list(by_demand[d.id])
        if not d.must_serve:
            mine.append(None)
        alternatives.append(mine)
    avail = pool_capacity(instance)
    bandwidth = link_capacity(instance)
    cap = carbon_cap_grams(instance)
    pen = [batch_penalty(instance, d) for d in batch]
    slots = _ServiceSlots(instance)
    best = None
    for combo in itertools.product(*alternatives):
        free = {p: list(v) for p, v in avail.items()}
        bw = [list(v) for v in bandwidth]
        grams = 0
        costs = []
        for i, col in enumerate(combo):
            if col is None:
                costs.append(pen[i])
                continue
            costs.append(col.cost)
            grams += col.grams
            for t in range(col.start, col.start + col.slots):
                free[col.pool][t] -= col.gang
            for k in col.links:
                for t in range(col.release, col.start):
                    bw[k][t] -= col.rate
        if any(v < 0 for row in free.values() for v in row) or any(v < 0 for row in bw for v in row):
            continue
        if cap is not None and grams > cap:
            continue
        # The services, slot by slot, combined over the slots under what is left of the cap
        # (a placement's emissions only grow slot by slot, so a point over the cap stays over).
        combined = [(0.0, slots.zero())]
        for t in range(S):
            here = slots.frontier(t, {p: free[p][t] for p in free}, tuple(row[t] for row in bw))
            combined = _pareto([(a + b, tuple(x + y for x, y in zip(g, h, strict=True)))
                                for a, g in combined for b, h in here
                                if cap is None or grams + placement_grams(
                                    tuple(x + y for x, y in zip(g, h, strict=True))) <= cap])
        if not combined:
            continue
        total = math.fsum(costs) + combined[0][0]
        if best is None or total < best:
            best = total
    return best


def cell_by_enumeration(load: int, pen: float, kappa, rent, transfer, room=None) -> float:
    """The least cost of one service cell (a service in one slot): every count of whole
    replicas per row (within ``room``, if given), the quanta then on the rows of least transfer
    within the load, the rest at the penalty."""
    best = math.inf
    rows = sorted(range(len(kappa)), key=lambda j: transfer[j])
    room = room if room is not None else [load] * len(kappa)
    for m in itertools.product(*(range(min(r, -(-load // k)) + 1) for k, r in zip(kappa, room))):
        left, cost = load, sum(r * mj for r, mj in zip(rent, m))
        for j in rows:
            u = min(left, m[j] * kappa[j]) if transfer[j] < pen else 0
            cost += u * transfer[j]
            left -= u
        best = min(best, cost + left * pen)
    return best
