"""Horizon instances -> the time-expanded problem of docs/formulation.md §8, as arrays.

`TimedProblem` is what the timed engines (`engines/timed_exact.py`, `engines/timed_large.py`) and
the map back to a plan (`timed_decode.py`) read; `TimedChoice` is what they return. Batch options
are (demand, pool) pairs with their range of allowed starts: the (demand, pool, start) triples are
priced on demand (`TimedProblem.start_costs`, `TimedProblem.evaluate`, `TimedProblem.best_starts`),
never stored.

`compile_timed` builds the problem: rules 1-9 per pool through `compile.Compiler.column`
(vectorized over the demands), then the window rule and the price cap per start (§8.2), the
services' replicas (§8.3), routes, profiles and capacities in whole quanta (§8.1). Instances
outside the representable range, and data no plan can honour (a must-serve job whose window
cannot hold its run, or whose data no link can carry), raise `compile.RangeError` naming the
object and field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from models import (
    BANDWIDTH_QUANTUM_GBPS,
    QUANTUM_SLACK,
    RULES,
    TARIFF_PERIODS,
    DemandKind,
    Instance,
    Reason,
)
from scheduler.compile import ELIGIBLE, MAX_QUANTA, ROW_QUANTA_LIMIT, Compiler, RangeError
from scheduler.network import build_graph, paths_from
from scheduler.params import Stopped

_RULE = {reason: k for k, reason in enumerate(RULES)}
BATCH_RULES = tuple(r for r in RULES if r not in (Reason.WINDOW, Reason.PRICE_CAP))
"""Rules 1-9, checked by `Compiler.column`; the window and the price cap are checked per start."""
SERVICE_RULES = (Reason.GANG, Reason.ACCELERATOR, Reason.MEMORY, Reason.PRECISION,
                 Reason.JURISDICTION, Reason.UNREACHABLE, Reason.LATENCY)
"""The rules a service's pools must pass (§8.3: rules 2-8)."""
FLAT = TARIFF_PERIODS.index("F")
"""The tariff period of an unlabelled slot."""
CHUNK_ELEMENTS = 1 << 20
"""(option, start) pairs priced at once by `TimedProblem.best_starts` (a few tens of MB)."""


@dataclass(frozen=True, eq=False)
class BatchOptions:
    """Eligible (batch demand, pool) pairs, grouped by demand: ``start[i]:start[i+1]`` (by pool).

    A start ``s`` of option ``k`` is allowed when ``first[k] <= s <= last[k]`` and its raw price
    is within the demand's cap (``max_price``, inf when none; `TimedProblem.evaluate` says so).
    """

    rows: np.ndarray  # int64 [batch]: index into Instance.demands
    start: np.ndarray  # int64 [batch + 1]
    pool: np.ndarray  # int32 [K]: pool index (order of Instance.pools())
    units: np.ndarray  # int64 [K]: usage in GPU-hour quanta (§2)
    slots: np.ndarray  # int32 [K]: n[d,p], slots the run holds
    first: np.ndarray  # int32 [K]: earliest allowed start
    last: np.ndarray  # int32 [K]: latest allowed start (inclusive), >= first
    fixed_cost: np.ndarray  # float64 [K]: weighted compute + transfer (start-independent)
    kwh_full: np.ndarray  # float64 [K]: kWh drawn in each full slot of the run
    kwh_last: np.ndarray  # float64 [K]: kWh drawn in the last slot of the run
    priced_energy: np.ndarray  # bool [K]: False for offers (energy in the quote, §2)
    route: np.ndarray  # int32 [K]: index into TimedProblem.routes when the data moves, else -1
    data_gb: np.ndarray  # float64 [K]: data moved (0 when it does not move)
    gang: np.ndarray  # int32 [batch]
    release: np.ndarray  # int32 [batch]
    penalty: np.ndarray  # float64 [batch]: pi[d]
    must_serve: np.ndarray  # bool [batch]
    nearest_miss: np.ndarray  # int8 [batch]: rule index reached furthest (compile.ELIGIBLE if any)
    # Added for the plan and the price cap:
    precision: np.ndarray  # int8 [K]: run precision (index into compile.PRECISIONS)
    latency_ms: np.ndarray  # float64 [K]
    compute: np.ndarray  # float64 [K]: weighted compute cost
    transfer: np.ndarray  # float64 [K]: weighted transfer cost
    energy_kwh: np.ndarray  # float64 [K]: kWh over the whole run (§2)
    price_fixed: np.ndarray  # float64 [K]: raw compute + transfer price (rule 10)
    max_price: np.ndarray  # float64 [K]: the demand's max_cost_cny, inf when none

    @property
    def n_demands(self) -> int:
        return len(self.rows)

    @property
    def n_options(self) -> int:
        return len(self.pool)

    @cached_property
    def demand(self) -> np.ndarray:
        """int64 [K]: the batch demand (position in ``rows``) of each option."""
        return np.repeat(np.arange(self.n_demands, dtype=np.int64), np.diff(self.start))

    def options_of(self, i: int) -> slice:
        return slice(int(self.start[i]), int(self.start[i + 1]))


BATCH_PER_DEMAND = frozenset({"rows", "start", "gang", "release", "penalty", "must_serve", "nearest_miss"})
"""`BatchOptions` fields indexed by demand; every other array field is indexed by option."""


@dataclass(frozen=True, eq=False)
class ServiceOptions:
    """Eligible (service, pool) pairs, grouped by service: ``start[j]:start[j+1]``.

    Pools where one replica serves less than one quantum (kappa 0) are left out: a replica there
    serves nothing.
    """

    rows: np.ndarray  # int64 [services]: index into Instance.demands
    start: np.ndarray  # int64 [services + 1]
    pool: np.ndarray  # int32 [J]
    kappa: np.ndarray  # int64 [J]: load quanta one replica serves
    rent: np.ndarray  # float64 [J, S]: weighted cost of one replica in slot t (compute+energy+carbon)
    co2_kg: np.ndarray  # float64 [J, S]: emissions of one replica in slot t
    transfer_per_quantum: np.ndarray  # float64 [J]: weighted transfer cost of a served quantum
    tau: np.ndarray  # int64 [J]: bandwidth quanta per served quantum on each route link (0 at home)
    route: np.ndarray  # int32 [J]: index into TimedProblem.routes, -1 in the origin's region
    load: np.ndarray  # int64 [services, S]: Lq[d,t]
    penalty_per_quantum: np.ndarray  # float64 [services]: pi_load * Q * h
    gang: np.ndarray  # int32 [services]
    nearest_miss: np.ndarray  # int8 [services]
    # Added for the plan:
    precision: np.ndarray  # int8 [J]
    latency_ms: np.ndarray  # float64 [J]
    compute: np.ndarray  # float64 [J]: weighted compute cost of one replica in one slot
    kwh: np.ndarray  # float64 [J]: kWh of one replica in one slot
    gb_per_quantum: np.ndarray  # float64 [J]: data a served quantum moves (0 at home)
    path: np.ndarray  # int32 [J]: index into TimedProblem.route_regions (origin -> pool region)

    @property
    def n_services(self) -> int:
        return len(self.rows)

    @property
    def n_options(self) -> int:
        return len(self.pool)

    @cached_property
    def service(self) -> np.ndarray:
        """int64 [J]: the service (position in ``rows``) of each option."""
        return np.repeat(np.arange(self.n_services, dtype=np.int64), np.diff(self.start))


SERVICE_PER_SERVICE = frozenset({"rows", "start", "load", "penalty_per_quantum", "gang", "nearest_miss"})
"""`ServiceOptions` fields indexed by service; every other array field is indexed by option."""


@dataclass(frozen=True, eq=False)
class TimedProblem:
    """The time-expanded problem of one horizon instance (docs/formulation.md §8)."""

    slots: int
    slot_hours: float
    batch: BatchOptions
    services: ServiceOptions
    avail: np.ndarray  # int64 [pools, S]: GPUs available
    bandwidth: np.ndarray  # int64 [links, S]: capacity in bandwidth quanta
    routes: tuple[np.ndarray, ...]  # link indices (order of Instance.links) of each route
    route_regions: tuple[tuple[str, ...], ...]  # region ids along each route, origin first
    price: np.ndarray  # float64 [pools, S]: weighted energy price of the pool's region (CNY/kWh)
    carbon: np.ndarray  # float64 [pools, S]: grid intensity of the pool's region (g/kWh)
    carbon_price: float  # weighted CNY per kg CO2
    carbon_cap_g: int | None  # the cap in grams, or None
    # Added:
    raw_price: np.ndarray  # float64 [pools, S]: unweighted energy price (rule 10, reports)
    period: np.ndarray  # int8 [pools, S]: tariff period (index into models.TARIFF_PERIODS)
    carbon_price_per_t: float  # weights.carbon_price_cny_per_t_co2 (the plan's formula)
    energy_weight: float  # weights.energy

    @property
    def n_pools(self) -> int:
        return self.avail.shape[0]

    @property
    def n_links(self) -> int:
        return self.bandwidth.shape[0]

    @cached_property
    def _flat(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per (pool, slot) values raveled for fast gathers, with their prefix sums over the
        slots (``cum[p * (S+1) + t]`` sums slots before ``t``): the cost of a kWh with its carbon
        (priced energy), the carbon cost of a kWh alone (offers), grid intensity, raw price."""
        carbon_cost = self.carbon * self.carbon_price / 1000.0

        def flat(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cum = np.zeros((a.shape[0], a.shape[1] + 1))
            np.cumsum(a, axis=1, out=cum[:, 1:])
            return cum.ravel(), np.ascontiguousarray(a).ravel()

        return {"cost": flat(self.price + carbon_cost), "carbon_cost": flat(carbon_cost),
                "carbon": flat(self.carbon), "raw": flat(self.raw_price)}

    @cached_property
    def route_links(self) -> np.ndarray:
        """float64 [routes, links]: 1 where the route crosses the link (incidence)."""
        out = np.zeros((len(self.routes), self.n_links))
        for r, links in enumerate(self.routes):
            out[r, links] = 1.0
        return out

    def rate(self, k: np.ndarray, s: np.ndarray) -> np.ndarray:
        """int64: bandwidth quanta option ``k`` started at ``s`` puts on each route link (§8.2)."""
        b = self.batch
        rel = b.release[b.demand[k]]
        waited = np.maximum(s - rel, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = 8.0 * b.data_gb[k] / (waited * self.slot_hours * 3600.0) / BANDWIDTH_QUANTUM_GBPS
        out = np.ceil(raw - QUANTUM_SLACK)
        return np.where(b.route[k] >= 0, np.maximum(out, 0.0), 0.0).astype(np.int64)

    def evaluate(self, k: np.ndarray, s: np.ndarray, co2: bool = True) -> tuple[np.ndarray, ...]:
        """(cost, co2_kg, rate, allowed) of options ``k`` started at ``s`` (same-shaped arrays).

        ``allowed``: ``first <= s <= last`` and the start's raw price is within the cap. Values
        at starts that are not allowed are meaningless (but finite). With ``co2`` False the
        emissions are not computed (zeros): the cost includes their price either way.
        """
        b, flat, S = self.batch, self._flat, self.slots
        k = np.asarray(k, dtype=np.int64)
        s = np.asarray(s, dtype=np.int64)
        inside = (s >= b.first[k]) & (s <= b.last[k])
        sc = np.clip(s, 0, S - 1)
        p = b.pool[k].astype(np.int64)
        end = np.minimum(sc + b.slots[k] - 1, S - 1)  # the last slot run
        at_s, at_end, value_end = p * (S + 1) + sc, p * (S + 1) + end, p * S + end
        kf, kl = b.kwh_full[k], b.kwh_last[k]

        def drawn(name: str) -> np.ndarray:
            cum, value = flat[name]
            return kf * (cum.take(at_end) - cum.take(at_s)) + kl * value.take(value_end)

        per_start = drawn("cost")
        priced = b.priced_energy[k]
        if not priced.all():
            per_start = np.where(priced, per_start, drawn("carbon_cost"))
        cost = b.fixed_cost[k] + per_start
        kg = drawn("carbon") / 1000.0 if co2 else np.zeros(cost.shape)
        allowed = inside
        capped = np.isfinite(b.max_price[k])
        if capped.any():
            raw = np.where(priced, drawn("raw"), 0.0)
            allowed = inside & (b.price_fixed[k] + raw <= b.max_price[k])
        return cost, kg, self.rate(k, s), allowed

    def start_costs(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(starts, cost, co2_kg, rate) over the allowed starts of batch option ``k``."""
        b = self.batch
        starts = np.arange(int(b.first[k]), int(b.last[k]) + 1, dtype=np.int64)
        cost, co2, rate, allowed = self.evaluate(np.full(len(starts), k, dtype=np.int64), starts)
        return starts[allowed], cost[allowed], co2[allowed], rate[allowed]

    @cached_property
    def _width_order(self) -> np.ndarray:
        """Options by the number of starts they allow, widest first (chunks of similar width
        waste little, and each chunk's first option is its widest)."""
        b = self.batch
        return np.argsort(b.first - b.last, kind="stable")

    def best_starts(
        self,
        extra_pool_slot: np.ndarray | None = None,
        extra_link_slot: np.ndarray | None = None,
        carbon_weight: float = 0.0,
        options: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The cheapest allowed start of every batch option (or of ``options``), and its cost.

        The cost of option ``k`` at start ``s`` is §8.2's ``c[d,p,s]`` plus
        ``gang * sum_{s<=t<s+n} extra_pool_slot[p,t]``, plus
        ``rate * sum_{l in route} sum_{rel<=t<s} extra_link_slot[l,t]`` and
        ``carbon_weight * co2_kg`` (the Lagrangian prices of §8.5, with the carbon multiplier per
        kg). Returns ``(best_cost[K'], best_start[K'])``; it prices at most `CHUNK_ELEMENTS`
        (option, start) pairs at a time and never holds K x S.
        """
        b = self.batch
        order = self._width_order if options is None else np.asarray(options, dtype=np.int64)
        out_cost = np.full(len(order), np.inf)
        out_start = np.full(len(order), -1, dtype=np.int64)
        pool_cum = link_cum = None
        if extra_pool_slot is not None:
            pool_cum = np.zeros((self.n_pools, self.slots + 1))
            np.cumsum(extra_pool_slot, axis=1, out=pool_cum[:, 1:])
        if extra_link_slot is not None and len(self.routes):
            link_cum = np.zeros((len(self.routes), self.slots + 1))
            np.cumsum(self.route_links @ extra_link_slot, axis=1, out=link_cum[:, 1:])
        width = (b.last - b.first + 1).astype(np.int64)
        lo = 0
        while lo < len(order):
            w_max = int(width[order[lo]]) if options is None else int(width[order].max())
            hi = min(len(order), lo + max(1, CHUNK_ELEMENTS // max(w_max, 1)))
            ks = order[lo:hi]
            w = int(width[ks].max())
            s = b.first[ks].astype(np.int64)[:, None] + np.arange(w, dtype=np.int64)[None, :]
            kk = np.broadcast_to(ks[:, None], s.shape)
            cost, co2, rate, allowed = self.evaluate(kk, s)
            if carbon_weight:
                cost = cost + carbon_weight * co2
            sc = np.clip(s, 0, self.slots - 1)
            if pool_cum is not None:
                p = b.pool[ks].astype(np.int64)[:, None]
                end = np.minimum(sc + b.slots[ks][:, None], self.slots)
                cost = cost + b.gang[b.demand[ks]][:, None] * (pool_cum[p, end] - pool_cum[p, sc])
            if link_cum is not None:
                r = b.route[ks].astype(np.int64)[:, None]
                rel = b.release[b.demand[ks]].astype(np.int64)[:, None]
                rc = np.maximum(r, 0)
                waited = link_cum[rc, sc] - link_cum[rc, rel]
                cost = cost + np.where(r >= 0, rate * waited, 0.0)
            cost = np.where(allowed, cost, np.inf)
            best = np.argmin(cost, axis=1)
            rows = np.arange(len(ks))
            out_cost[lo:hi] = cost[rows, best]
            out_start[lo:hi] = np.where(np.isfinite(cost[rows, best]), s[rows, best], -1)
            lo = hi
        if options is not None:
            return out_cost, out_start
        cost_k = np.empty(b.n_options)
        start_k = np.empty(b.n_options, dtype=np.int64)
        cost_k[order] = out_cost
        start_k[order] = out_start
        return cost_k, start_k

    def service_quantum_cost(self, j: np.ndarray | slice | None = None) -> np.ndarray:
        """float64 [J, S]: cost of one served quantum on service option j with full replicas
        (rent / kappa + transfer), the per-quantum price of the LP relaxation (§8.5)."""
        sv = self.services
        sel = slice(None) if j is None else j
        return sv.rent[sel] / sv.kappa[sel][:, None] + sv.transfer_per_quantum[sel][:, None]


@dataclass(frozen=True, eq=False)
class TimedChoice:
    """A solution: each batch demand's option and start (-1: unserved), each service placement's
    replicas and served quanta per slot."""

    option: np.ndarray  # int64 [batch]: index into BatchOptions (K), -1 unserved
    start_slot: np.ndarray  # int32 [batch]: chosen start, -1 unserved
    replicas: np.ndarray  # int64 [J, S]
    served: np.ndarray  # int64 [J, S]: load quanta served


# -- compiling ----------------------------------------------------------------------------------


def _profile(horizon, values, flat: float) -> np.ndarray:
    """A profile's value in every slot, or the flat value where there is none (§8.1)."""
    if values is None:
        return np.full(horizon.slots, float(flat))
    return np.array(horizon.expand(values), dtype=np.float64)


class _RouteBook:
    """Routes interned by (origin, region): link indices and region ids, origin first."""

    def __init__(self, instance: Instance):
        self.graph = build_graph(instance)
        self.link_of = {frozenset((l.source, l.target)): k for k, l in enumerate(instance.links)}
        self.paths: dict[str, dict[str, tuple[str, ...]]] = {}
        self.index: dict[tuple[str, ...], int] = {}
        self.links: list[np.ndarray] = []
        self.regions: list[tuple[str, ...]] = []

    def of(self, origin: str, region: str) -> int:
        """The route index from ``origin`` to ``region`` (a one-region path at home)."""
        if origin not in self.paths:
            self.paths[origin] = paths_from(self.graph, origin)
        path = self.paths[origin][region]
        if path not in self.index:
            self.index[path] = len(self.regions)
            self.regions.append(path)
            self.links.append(np.array([self.link_of[frozenset(pair)] for pair in zip(path, path[1:])],
                                       dtype=np.int32))
        return self.index[path]


def earliest_starts(problem: TimedProblem) -> TimedProblem:
    """The problem with every batch option held to its earliest allowed start: the plan a
    first-come scheduler would make, to measure what shifting in time saves
    (`SolveParams.time_shifting` False)."""
    return replace(problem, batch=replace(problem.batch, last=problem.batch.first.copy()))


def compile_timed(instance: Instance, *, stop: Callable[[], bool] | None = None) -> TimedProblem:
    """The time-expanded problem of a horizon instance (docs/formulation.md §8).

    ``stop()`` is asked before each pool; when it says yes, `Stopped` is raised. Raises
    `RangeError` (naming object and field) outside the representable range, for a must-serve job
    whose window cannot hold its run on any pool that passes the other rules (field
    'deadline_slot'), and for a must-serve job whose data no link can carry in time.
    """
    h = instance.horizon
    if h is None:
        raise ValueError("compile_timed needs an instance with a horizon")
    S, hours = h.slots, h.slot_hours
    w = instance.weights
    compiler = Compiler(instance)
    pairs = instance.pools()
    n_pools = len(pairs)
    region_of_pool = compiler.pools.region
    problems: list[str] = []

    # -- profiles (§8.1) --------------------------------------------------------------------
    raw_r = np.array([_profile(h, r.electricity_price_by_slot_cny_per_kwh, r.electricity_price_cny_per_kwh)
                      for r in instance.regions])
    carbon_r = np.array([_profile(h, r.carbon_by_slot_g_co2_per_kwh, r.carbon_g_co2_per_kwh)
                         for r in instance.regions])
    period_r = np.full((len(instance.regions), S), FLAT, dtype=np.int8)
    for k, r in enumerate(instance.regions):
        if r.tariff_periods is not None:
            period_r[k] = [TARIFF_PERIODS.index(c) for c in h.expand(r.tariff_periods)]
    raw_price, carbon, period = raw_r[region_of_pool], carbon_r[region_of_pool], period_r[region_of_pool]
    avail = np.array([[p.gpu_count] * S for _, p in pairs], dtype=np.int64).reshape(n_pools, S)
    for k, (_, pool) in enumerate(pairs):
        for outage in pool.outages:
            avail[k, outage.start_slot:outage.end_slot] -= outage.gpus
    bw_quanta = np.zeros((len(instance.links), S))
    for k, link in enumerate(instance.links):
        gbps = _profile(h, link.bandwidth_by_slot_gbps, link.bandwidth_gbps)
        bw_quanta[k] = np.floor(gbps / BANDWIDTH_QUANTUM_GBPS + QUANTUM_SLACK)
        if bw_quanta[k].max() > MAX_QUANTA:
            field = "bandwidth_by_slot_gbps" if link.bandwidth_by_slot_gbps else "bandwidth_gbps"
            problems.append(f"link {k} ({link.source}-{link.target}): field '{field}' "
                            f"({gbps.max():g} Gbps) is {bw_quanta[k].max():.3g} bandwidth quanta; the "
                            f"engines represent at most {MAX_QUANTA:.0e}")
    bandwidth = np.minimum(bw_quanta, MAX_QUANTA + 1).astype(np.int64)
    book = _RouteBook(instance)
    region_ids = [r.id for r in instance.regions]
    origin_region = {r.id: k for k, r in enumerate(instance.regions)}

    kinds = np.array([d.kind == DemandKind.SERVICE for d in instance.demands], dtype=bool)
    batch_rows = np.flatnonzero(~kinds)
    service_rows = np.flatnonzero(kinds)
    batch = _compile_batch(instance, compiler, batch_rows, book, raw_price, region_ids,
                           origin_region, bandwidth, problems, stop)
    services = _compile_services(instance, compiler, service_rows, book, raw_price, carbon,
                                 region_ids, problems, stop)
    cap_g = None
    if instance.carbon_cap_t_co2 is not None:
        grams = math.floor(instance.carbon_cap_t_co2 * 1e6 + QUANTUM_SLACK)
        if grams > ROW_QUANTA_LIMIT:
            problems.append(f"instance: field 'carbon_cap_t_co2' ({instance.carbon_cap_t_co2:g}) is "
                            f"{grams:.3g} g; the carbon row holds at most {ROW_QUANTA_LIMIT:.0e} g "
                            "(leave the cap out if it is not meant to bind)")
        cap_g = int(grams)
    if problems:
        raise RangeError(problems)
    return TimedProblem(
        slots=S,
        slot_hours=hours,
        batch=batch,
        services=services,
        avail=avail,
        bandwidth=bandwidth,
        routes=tuple(book.links),
        route_regions=tuple(book.regions),
        price=w.energy * raw_price,
        carbon=carbon,
        carbon_price=w.carbon_price_cny_per_t_co2 / 1000.0,
        carbon_cap_g=cap_g,
        raw_price=raw_price,
        period=period,
        carbon_price_per_t=w.carbon_price_cny_per_t_co2,
        energy_weight=w.energy,
    )


def _compile_batch(instance, compiler, rows, book, raw_price, region_ids, origin_region, bandwidth,
                   problems, stop) -> BatchOptions:
    """The batch options of §8.2, pool by pool, vectorized over the batch demands."""
    h = instance.horizon
    S, hours, q = h.slots, h.slot_hours, instance.gpu_hour_quantum
    ds = [instance.demands[i] for i in rows]
    nb = len(rows)
    release = np.array([d.release_slot or 0 for d in ds], dtype=np.int64)
    deadline = np.array([S if d.deadline_slot is None else d.deadline_slot for d in ds], dtype=np.int64)
    gang = np.array([d.gang_size for d in ds], dtype=np.int64)
    data = np.array([d.data_gb for d in ds], dtype=np.float64)
    max_cost = np.array([np.inf if d.max_cost_cny is None else d.max_cost_cny for d in ds])
    origin = np.array([origin_region[d.origin] for d in ds], dtype=np.int64)
    nearest = np.full(nb, -1, dtype=np.int8)
    least_need = np.full(nb, np.iinfo(np.int64).max, dtype=np.int64)  # slots the window must hold
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (
        "demand", "pool", "units", "slots", "first", "last", "fixed", "kwh_full", "kwh_last",
        "priced", "route", "data", "precision", "latency", "compute", "transfer", "kwh",
        "price_fixed", "max_price")}
    pools = compiler.pools
    for p in range(len(pools.ids) if nb else 0):
        if stop is not None and stop():
            raise Stopped("stopped while compiling the options")
        col = compiler.column(p, rows, rules=BATCH_RULES)
        rule = col.rule.copy()
        passed = rule == ELIGIBLE
        runtime = col.quanta * q / gang
        n = np.maximum(1.0, np.ceil(runtime / hours - QUANTUM_SLACK))
        n = np.minimum(n, S + 1).astype(np.int64)
        moves = (data > 0) & (origin != pools.region[p])
        first = release + moves
        last = deadline - n
        np.minimum(least_need, np.where(passed, n + moves, least_need), out=least_need)
        rule[passed & (first > last)] = _RULE[Reason.WINDOW]
        per_slot_kwh = gang * pools.power[p] * pools.pue[p]
        kwh_full = per_slot_kwh * hours
        kwh_last = per_slot_kwh * (runtime - (n - 1) * hours)
        priced = ~col.offered
        price_fixed = col.compute_raw + col.transfer_raw
        capped = np.flatnonzero((rule == ELIGIBLE) & np.isfinite(max_cost))
        if len(capped):
            ok_first, ok_last = _price_cap_range(
                raw_price[p], first[capped], last[capped], n[capped], kwh_full[capped],
                kwh_last[capped], priced[capped], price_fixed[capped], max_cost[capped])
            rule[capped[ok_first < 0]] = _RULE[Reason.PRICE_CAP]
            first[capped], last[capped] = ok_first, ok_last
        np.maximum(nearest, rule, out=nearest)
        chosen = np.flatnonzero(rule == ELIGIBLE)
        over = chosen[col.quanta[chosen] > MAX_QUANTA]
        for i in over[:20].tolist():
            problems.append(f"demand '{ds[i].id}': field 'work_pflop' makes its usage on pool "
                            f"'{pools.ids[p]}' {col.quanta[i]:.3g} quanta; the engines represent "
                            f"at most {MAX_QUANTA:.0e} quanta per option (check the field, or raise "
                            "the instance's 'gpu_hour_quantum')")
        route = np.full(len(chosen), -1, dtype=np.int32)
        for k, i in enumerate(chosen.tolist()):
            if moves[i]:
                route[k] = book.of(ds[i].origin, region_ids[pools.region[p]])
        for key, value in (
            ("demand", chosen), ("pool", np.full(len(chosen), p)), ("units", col.units[chosen]),
            ("slots", n[chosen]), ("first", first[chosen]), ("last", last[chosen]),
            ("fixed", (col.compute + col.transfer)[chosen]), ("kwh_full", kwh_full[chosen]),
            ("kwh_last", kwh_last[chosen]), ("priced", priced[chosen]), ("route", route),
            ("data", np.where(moves, data, 0.0)[chosen]), ("precision", col.run_precision[chosen]),
            ("latency", col.latency_ms[chosen]), ("compute", col.compute[chosen]),
            ("transfer", col.transfer[chosen]), ("kwh", col.energy_kwh[chosen]),
            ("price_fixed", price_fixed[chosen]), ("max_price", max_cost[chosen]),
        ):
            parts[key].append(np.asarray(value))

    def cat(key: str, dtype) -> np.ndarray:
        if not parts[key]:
            return np.zeros(0, dtype=dtype)
        return np.concatenate(parts[key]).astype(dtype)

    demand = cat("demand", np.int64)
    order = np.argsort(demand, kind="stable")  # pool order within a demand is kept
    start = np.zeros(nb + 1, dtype=np.int64)
    np.cumsum(np.bincount(demand, minlength=nb), out=start[1:])
    must = np.array([d.must_serve for d in ds], dtype=bool)
    for i in np.flatnonzero(must & (nearest == _RULE[Reason.WINDOW]))[:20].tolist():
        d = ds[i]
        problems.append(
            f"demand '{d.id}': field 'deadline_slot' ({int(deadline[i])}) leaves "
            f"{int(deadline[i] - release[i])} slots after its release slot {int(release[i])}, but on "
            f"every pool that passes the other rules the job needs at least {int(least_need[i])} "
            "(its run, and one slot to move its data when it is remote): a must-serve job with no "
            "allowed start")
    options = BatchOptions(
        rows=np.asarray(rows, dtype=np.int64), start=start,
        pool=cat("pool", np.int32)[order], units=cat("units", np.int64)[order],
        slots=cat("slots", np.int32)[order], first=cat("first", np.int32)[order],
        last=cat("last", np.int32)[order], fixed_cost=cat("fixed", np.float64)[order],
        kwh_full=cat("kwh_full", np.float64)[order], kwh_last=cat("kwh_last", np.float64)[order],
        priced_energy=cat("priced", bool)[order], route=cat("route", np.int32)[order],
        data_gb=cat("data", np.float64)[order], gang=gang.astype(np.int32),
        release=release.astype(np.int32),
        penalty=compiler.demands.penalty[rows] if nb else np.zeros(0),
        must_serve=must, nearest_miss=np.where(nearest < 0, 0, nearest).astype(np.int8),
        precision=cat("precision", np.int8)[order], latency_ms=cat("latency", np.float64)[order],
        compute=cat("compute", np.float64)[order], transfer=cat("transfer", np.float64)[order],
        energy_kwh=cat("kwh", np.float64)[order], price_fixed=cat("price_fixed", np.float64)[order],
        max_price=cat("max_price", np.float64)[order],
    )
    problems.extend(_rate_problems(options, ds, hours))
    problems.extend(_blocked_problems(options, ds, book, bandwidth, instance, hours))
    return options


def _price_cap_range(raw, first, last, n, kwh_full, kwh_last, priced, price_fixed, cap):
    """The first and last start within the price cap of each option (-1, -1 where none)."""
    S = len(raw)
    cum = np.zeros(S + 1)
    np.cumsum(raw, out=cum[1:])
    width = int((last - first).max()) + 1
    s = first[:, None] + np.arange(width)[None, :]
    sc = np.clip(s, 0, S - 1)
    end = np.minimum(sc + n[:, None] - 1, S - 1)
    energy = kwh_full[:, None] * (cum[end] - cum[sc]) + kwh_last[:, None] * raw[end]
    price = price_fixed[:, None] + np.where(priced[:, None], energy, 0.0)
    ok = (s <= last[:, None]) & (price <= cap[:, None])
    has = ok.any(axis=1)
    lo = np.where(has, first + np.argmax(ok, axis=1), -1)
    hi = np.where(has, first + width - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
    return lo, hi


def _rate_problems(b: BatchOptions, ds, hours: float) -> list[str]:
    """Options whose data rate at their earliest start passes MAX_QUANTA bandwidth quanta."""
    moving = np.flatnonzero(b.route >= 0)
    if not len(moving):
        return []
    waited = b.first[moving] - b.release[b.demand[moving]]
    raw = 8.0 * b.data_gb[moving] / (waited * hours * 3600.0) / BANDWIDTH_QUANTUM_GBPS
    out = []
    for k in moving[raw > MAX_QUANTA][:20].tolist():
        d = ds[int(b.demand[k])]
        out.append(f"demand '{d.id}': field 'data_gb' ({d.data_gb:g}) moved in one slot is more than "
                   f"{MAX_QUANTA:.0e} bandwidth quanta; the engines cannot represent it")
    return out


def _blocked_problems(b: BatchOptions, ds, book, bandwidth, instance, hours) -> list[str]:
    """Must-serve jobs whose every option and start needs more bandwidth than some link of its
    route has in some slot of the transfer (zero-bandwidth links where the data must pass)."""
    out = []
    S = bandwidth.shape[1] if bandwidth.ndim == 2 else 0
    for i in np.flatnonzero(b.must_serve & (np.diff(b.start) > 0)).tolist():
        ks = np.arange(b.start[i], b.start[i + 1])
        if np.any(b.route[ks] < 0):
            continue  # some option needs no link
        worst = None
        for k in ks.tolist():
            links = book.links[int(b.route[k])]
            rel = int(b.release[i])
            starts = np.arange(int(b.first[k]), int(b.last[k]) + 1)
            least = np.minimum.accumulate(bandwidth[links, rel:S].min(axis=0))  # over rel..t
            rate = np.ceil(8.0 * b.data_gb[k] / ((starts - rel) * hours * 3600.0)
                           / BANDWIDTH_QUANTUM_GBPS - QUANTUM_SLACK)
            if np.any(least[starts - rel - 1] >= rate):
                worst = None
                break
            slot = rel + int(np.argmin(bandwidth[links, rel:int(b.last[k])].min(axis=0)))
            link = int(links[int(np.argmin(bandwidth[links, slot]))])
            worst = (link, slot)
        if worst is not None:
            link, slot = worst
            lk = instance.links[link]
            field = "bandwidth_by_slot_gbps" if lk.bandwidth_by_slot_gbps else "bandwidth_gbps"
            out.append(
                f"demand '{ds[i].id}': field 'data_gb' ({ds[i].data_gb:g} GB) cannot reach any "
                f"eligible pool in time: link {link} ({lk.source}-{lk.target}) field '{field}' "
                f"carries {bandwidth[link, slot] * BANDWIDTH_QUANTUM_GBPS:g} Gbps in slot {slot}, "
                "on the way to every pool (a must-serve job whose data no link can carry)")
        if len(out) >= 20:
            break
    return out


def _compile_services(instance, compiler, rows, book, raw_price, carbon, region_ids, problems,
                      stop) -> ServiceOptions:
    """The services of §8.3: eligible pools (rules 2-8), replica capacity, rent and traffic."""
    h = instance.horizon
    S, hours = h.slots, h.slot_hours
    w = instance.weights
    Q = instance.load_quantum_pflop_per_hour
    ds = [instance.demands[i] for i in rows]
    ns = len(rows)
    load = np.zeros((ns, S), dtype=np.int64)
    for k, d in enumerate(ds):
        raw = np.array(h.expand(d.load_pflop_per_hour), dtype=np.float64) / Q
        if raw.max() > MAX_QUANTA:
            problems.append(f"demand '{d.id}': field 'load_pflop_per_hour' ({raw.max() * Q:g}) is "
                            f"{raw.max():.3g} load quanta; the engines represent at most "
                            f"{MAX_QUANTA:.0e} (raise the instance's 'load_quantum_pflop_per_hour')")
            continue
        load[k] = np.maximum(np.ceil(raw - QUANTUM_SLACK), 0).astype(np.int64)
    peak = load.max(axis=1) if ns else np.zeros(0, dtype=np.int64)
    traffic = np.array([d.traffic_gbps or 0.0 for d in ds])
    gang = np.array([d.gang_size for d in ds], dtype=np.int64)
    origin = [d.origin for d in ds]
    nearest = np.full(ns, -1, dtype=np.int8)
    pools = compiler.pools
    parts: dict[str, list] = {key: [] for key in (
        "service", "pool", "kappa", "rent", "co2", "tpq", "tau", "route", "precision", "latency",
        "compute", "kwh", "gb", "path")}
    for p in range(len(pools.ids) if ns else 0):
        if stop is not None and stop():
            raise Stopped("stopped while compiling the options")
        col = compiler.column(p, rows, rules=SERVICE_RULES)
        passed = col.rule == ELIGIBLE
        tflops = pools.tflops[p][np.maximum(col.run_precision, 0)]
        kappa_raw = np.where(passed, np.floor(gang * tflops * 3.6 / Q + QUANTUM_SLACK), 0.0)
        rule = np.where(passed, ELIGIBLE, col.rule).astype(np.int8)
        np.maximum(nearest, rule, out=nearest)
        chosen = np.flatnonzero(passed & (kappa_raw >= 1))
        for i in chosen[kappa_raw[chosen] > MAX_QUANTA][:20].tolist():
            problems.append(f"pool '{pools.ids[p]}': field 'tflops_by_precision' makes one replica "
                            f"of demand '{ds[i].id}' serve {kappa_raw[i]:.3g} load quanta; the engines "
                            f"represent at most {MAX_QUANTA:.0e} (raise the instance's "
                            "'load_quantum_pflop_per_hour')")
        home = region_ids[pools.region[p]]
        gpu_hours = gang[chosen] * hours
        compute = w.compute * gpu_hours * pools.price[p]
        kwh = gpu_hours * pools.power[p] * pools.pue[p]
        co2 = kwh[:, None] * carbon[p][None, :] / 1000.0
        rent = (compute[:, None] + w.energy * kwh[:, None] * raw_price[p][None, :]
                + co2 / 1000.0 * w.carbon_price_cny_per_t_co2)
        tau = np.zeros(len(chosen), dtype=np.int64)
        route = np.full(len(chosen), -1, dtype=np.int32)
        path = np.zeros(len(chosen), dtype=np.int32)
        gb = np.zeros(len(chosen))
        tpq = np.zeros(len(chosen))
        for k, i in enumerate(chosen.tolist()):
            path[k] = book.of(origin[i], home)
            if peak[i] == 0:
                continue
            gb[k] = traffic[i] * hours * 3600.0 / 8.0 / peak[i]
            per_gb = compiler.routes.transfer_cny_per_gb[compiler.demands.origin_row[rows[i]],
                                                          pools.region[p]]
            tpq[k] = w.transfer * per_gb * gb[k]
            if home != origin[i]:
                route[k] = path[k]
                value = math.ceil(traffic[i] / peak[i] / BANDWIDTH_QUANTUM_GBPS - QUANTUM_SLACK)
                if value * peak[i] > MAX_QUANTA:
                    problems.append(f"demand '{ds[i].id}': field 'traffic_gbps' ({traffic[i]:g}) is "
                                    f"more than {MAX_QUANTA:.0e} bandwidth quanta at full load")
                tau[k] = max(value, 0)
        for key, value in (
            ("service", chosen), ("pool", np.full(len(chosen), p)),
            ("kappa", np.minimum(kappa_raw[chosen], MAX_QUANTA + 1)), ("rent", rent), ("co2", co2),
            ("tpq", tpq), ("tau", tau), ("route", route), ("precision", col.run_precision[chosen]),
            ("latency", col.latency_ms[chosen]), ("compute", compute), ("kwh", kwh), ("gb", gb),
            ("path", path),
        ):
            parts[key].append(np.asarray(value))

    def cat(key: str, dtype, shape=(0,)) -> np.ndarray:
        if not parts[key]:
            return np.zeros(shape, dtype=dtype)
        return np.concatenate(parts[key]).astype(dtype)

    service = cat("service", np.int64)
    order = np.argsort(service, kind="stable")
    start = np.zeros(ns + 1, dtype=np.int64)
    np.cumsum(np.bincount(service, minlength=ns), out=start[1:])
    pen = np.array([w.unserved * d.priority * (d.unserved_penalty_cny_per_pflop or 0.0) * Q * hours
                    for d in ds], dtype=np.float64)
    return ServiceOptions(
        rows=np.asarray(rows, dtype=np.int64), start=start, pool=cat("pool", np.int32)[order],
        kappa=cat("kappa", np.int64)[order], rent=cat("rent", np.float64, (0, S))[order],
        co2_kg=cat("co2", np.float64, (0, S))[order], transfer_per_quantum=cat("tpq", np.float64)[order],
        tau=cat("tau", np.int64)[order], route=cat("route", np.int32)[order], load=load,
        penalty_per_quantum=pen, gang=gang.astype(np.int32),
        nearest_miss=np.where(nearest < 0, 0, nearest).astype(np.int8),
        precision=cat("precision", np.int8)[order], latency_ms=cat("latency", np.float64)[order],
        compute=cat("compute", np.float64)[order], kwh=cat("kwh", np.float64)[order],
        gb_per_quantum=cat("gb", np.float64)[order], path=cat("path", np.int32)[order],
    )


# -- the load of a (partial) plan ---------------------------------------------------------------


def grams(co2_kg: np.ndarray | float) -> np.ndarray:
    """Emissions in whole grams against the carbon cap, rounded up (§8.1)."""
    return np.maximum(np.ceil(np.asarray(co2_kg) * 1000.0 - QUANTUM_SLACK), 0).astype(np.int64)


class TimedLoad:
    """What a partial plan uses: GPUs per (pool, slot), bandwidth quanta per (link, slot), grams.

    The greedy engine grows it one choice at a time; the plan's unserved reasons read what is
    left. Service emissions are counted per placement (service, pool) over the horizon.
    """

    def __init__(self, problem: TimedProblem):
        self.problem = problem
        self.gpus = np.zeros_like(problem.avail)
        self.link = np.zeros_like(problem.bandwidth)
        self.batch_grams = 0
        self.service_kg = np.zeros(problem.services.n_options)  # kg of each placement so far
        self.service_grams = 0  # sum over placements of their kg in whole grams, rounded up
        longest = max((len(r) for r in problem.routes), default=0)
        # Route links padded with a phantom link (index L) that never limits anything.
        self._route_pad = np.full((max(len(problem.routes), 1), max(longest, 1)), problem.n_links,
                                  dtype=np.int64)
        for r, links in enumerate(problem.routes):
            self._route_pad[r, :len(links)] = links

    @property
    def grams_used(self) -> int:
        return self.batch_grams + self.service_grams

    def grams_left(self) -> float:
        cap = self.problem.carbon_cap_g
        return math.inf if cap is None else cap - self.grams_used

    def free_gpus(self) -> np.ndarray:
        return self.problem.avail - self.gpus

    def free_bandwidth(self) -> np.ndarray:
        """[links + 1, S]: bandwidth quanta left, with the phantom link's row last."""
        free = self.problem.bandwidth - self.link
        big = np.full((1, self.problem.slots), np.iinfo(np.int64).max // 4, dtype=np.int64)
        return np.concatenate([free, big])

    def route_free(self, routes: np.ndarray, free_bw: np.ndarray | None = None) -> np.ndarray:
        """[len(routes), S]: the least bandwidth left on any link of each route, slot by slot."""
        free_bw = self.free_bandwidth() if free_bw is None else free_bw
        return free_bw[self._route_pad[np.maximum(routes, 0)]].min(axis=1)

    def add_batch(self, k: int, s: int, rate: int | None = None, co2_kg: float | None = None) -> None:
        """Run option ``k`` from slot ``s`` (``rate`` and ``co2_kg`` of that start if known)."""
        b, pr = self.problem.batch, self.problem
        i = int(b.demand[k])
        n = int(b.slots[k])
        if rate is None or co2_kg is None:
            _, co2, rates, _ = pr.evaluate(np.array([k]), np.array([s]))
            rate, co2_kg = int(rates[0]), float(co2[0])
        self.gpus[b.pool[k], s:s + n] += int(b.gang[i])
        if b.route[k] >= 0:
            self.link[pr.routes[int(b.route[k])], int(b.release[i]):s] += int(rate)
        self.batch_grams += int(grams(co2_kg))

    def add_service(self, j: int, replicas: np.ndarray, served: np.ndarray) -> None:
        sv, pr = self.problem.services, self.problem
        self.gpus[sv.pool[j]] += int(sv.gang[int(sv.service[j])]) * replicas
        if sv.route[j] >= 0 and sv.tau[j] > 0:
            self.link[pr.routes[int(sv.route[j])]] += int(sv.tau[j]) * served[None, :]
        before = int(grams(self.service_kg[j]))
        self.service_kg[j] += float(np.dot(replicas, sv.co2_kg[j]))
        self.service_grams += int(grams(self.service_kg[j])) - before

    def add_service_slots(self, js: np.ndarray, ts: np.ndarray, replicas: np.ndarray,
                          served: np.ndarray) -> None:
        """Add ``replicas[i]`` replicas serving ``served[i]`` quanta of option ``js[i]`` in slot
        ``ts[i]`` (each (option, slot) at most once per call)."""
        sv, pr = self.problem.services, self.problem
        gang = sv.gang[sv.service[js]].astype(np.int64)
        np.add.at(self.gpus, (sv.pool[js].astype(np.int64), ts), gang * replicas)
        carries = (sv.route[js] >= 0) & (sv.tau[js] > 0) & (served > 0)
        if carries.any():
            links = self._route_pad[sv.route[js[carries]]]  # [m, longest], L = padding
            slot = np.broadcast_to(ts[carries][:, None], links.shape)
            amount = np.broadcast_to((sv.tau[js[carries]] * served[carries])[:, None], links.shape)
            real = links < pr.n_links
            np.add.at(self.link, (links[real], slot[real]), amount[real])
        touched = np.unique(js)
        before = int(grams(self.service_kg[touched]).sum())
        np.add.at(self.service_kg, js, replicas * sv.co2_kg[js, ts])
        self.service_grams += int(grams(self.service_kg[touched]).sum()) - before

    def capacity_fit(self, ks: np.ndarray, ss: np.ndarray, free: np.ndarray | None = None
                     ) -> np.ndarray:
        """bool: option ``ks[r, 0]`` (one option per row) started at ``ss[r, c]`` finds its gang
        free in every slot of the run, on top of this load (or of ``free`` GPUs)."""
        b, S = self.problem.batch, self.problem.slots
        free = self.free_gpus() if free is None else free
        p = b.pool[ks[:, 0]].astype(np.int64)
        gang = b.gang[b.demand[ks[:, 0]]].astype(np.int64)
        ok = np.ones(ss.shape, dtype=bool)
        tight = np.flatnonzero(free.min(axis=1)[p] < gang)  # the other rows fit in every slot
        if len(tight):
            short = free[p[tight]] < gang[tight, None]
            cum = np.zeros((len(tight), S + 1), dtype=np.int64)
            np.cumsum(short, axis=1, out=cum[:, 1:])
            st = np.clip(ss[tight], 0, S)
            end = np.clip(ss[tight] + b.slots[ks[tight]].astype(np.int64), 0, S)
            rows = np.arange(len(tight))[:, None]
            ok[tight] = (cum[rows, end] - cum[rows, st]) == 0
        return ok

    def bandwidth_fit(self, ks: np.ndarray, ss: np.ndarray, rate: np.ndarray,
                      route_free: np.ndarray | None = None) -> np.ndarray:
        """bool: the data of option ``ks[r, 0]`` started at ``ss[r, c]`` finds ``rate`` quanta
        on every route link in every slot from its release to the start (``route_free``: the
        least bandwidth left per route and slot, [routes, S], if already known)."""
        b, S = self.problem.batch, self.problem.slots
        r = b.route[ks[:, 0]].astype(np.int64)
        ok = np.ones(ss.shape, dtype=bool)
        moving = np.flatnonzero(r >= 0)
        if not len(moving):
            return ok
        rel = b.release[b.demand[ks[moving, 0]]].astype(np.int64)
        # One running minimum per distinct (route, release), however many rows share it.
        key, row_of = np.unique(r[moving] * (S + 1) + rel, return_inverse=True)
        routes, rels = np.divmod(key, S + 1)
        least = self.route_free(routes) if route_free is None else route_free[routes]
        least = np.where(np.arange(S)[None, :] >= rels[:, None], least, np.iinfo(np.int64).max)
        least = np.minimum.accumulate(least, axis=1)  # least over rel..t
        idx = np.clip(ss[moving] - 1, 0, S - 1)
        ok[moving] = least[row_of.reshape(-1)[:, None], idx] >= rate[moving]
        return ok

    def all_route_free(self) -> np.ndarray:
        """[routes, S]: the least bandwidth left on any link of each route, slot by slot."""
        return self.route_free(np.arange(max(len(self.problem.routes), 1)))

    def feasible(self, ks: np.ndarray, ss: np.ndarray, co2_kg: np.ndarray, rate: np.ndarray,
                 free: np.ndarray | None = None, route_free: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(capacity, bandwidth, carbon) fit of options ``ks`` at starts ``ss`` (2-D, one
        option per row, starts along the row) alone on top of this load."""
        cap_ok = self.capacity_fit(ks, ss, free)
        bw_ok = self.bandwidth_fit(ks, ss, rate, route_free)
        if self.problem.carbon_cap_g is None:
            return cap_ok, bw_ok, np.ones(ss.shape, dtype=bool)
        return cap_ok, bw_ok, grams(co2_kg) <= self.grams_left()

    def fits(self, k: int, s: int, rate: int, co2_kg: float) -> bool:
        """Whether option ``k`` started at ``s`` (with that start's ``rate`` and ``co2_kg``) fits
        on top of this load: exact, for one start."""
        b, pr = self.problem.batch, self.problem
        i = int(b.demand[k])
        n = int(b.slots[k])
        p = int(b.pool[k])
        if (pr.avail[p, s:s + n] - self.gpus[p, s:s + n]).min() < b.gang[i]:
            return False
        if b.route[k] >= 0:
            rel = int(b.release[i])
            links = pr.routes[int(b.route[k])]
            if len(links) and (pr.bandwidth[links, rel:s] - self.link[links, rel:s]).min() < rate:
                return False
        return pr.carbon_cap_g is None or int(grams(co2_kg)) <= self.grams_left()

    @classmethod
    def of(cls, problem: TimedProblem, choice: TimedChoice) -> TimedLoad:
        """The load of a whole choice."""
        load = cls(problem)
        for i in np.flatnonzero(choice.option >= 0).tolist():
            load.add_batch(int(choice.option[i]), int(choice.start_slot[i]))
        for j in np.flatnonzero(choice.replicas.any(axis=1)).tolist():
            load.add_service(j, choice.replicas[j], choice.served[j])
        return load
