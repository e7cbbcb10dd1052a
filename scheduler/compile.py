"""Instance -> arrays of eligible (demand, pool) options, and the map back to a Plan.

`compile_options` applies the eligibility rules of docs/formulation.md (section 2) pool by pool,
vectorized over all demands, and keeps for each demand the rule its nearest miss failed. The
result, `Options`, is a flat CSR layout: the options of demand ``i`` are ``start[i]:start[i+1]``,
sorted by pool. Memory is linear in the number of options (20 bytes each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

import numpy as np

from models import PRECISION_FALLBACKS, QUANTUM_SLACK, RULES, Instance, Precision, Reason
from scheduler.network import RouteTable
from scheduler.params import Stopped

PRECISIONS: tuple[Precision, ...] = tuple(Precision)
ELIGIBLE = len(RULES)  # "first failed rule" of an option that passes every rule
_RULE = {reason: k for k, reason in enumerate(RULES)}


@dataclass(frozen=True, eq=False)
class Options:
    """The eligible options of an instance, their usage and cost, grouped by demand."""

    start: np.ndarray  # int64 [demands + 1]
    pool: np.ndarray  # int32 [options]: pool index (order of Instance.pools())
    units: np.ndarray  # int64 [options]: usage in quanta
    cost: np.ndarray  # float64 [options]: objective contribution c[d,p]
    penalty: np.ndarray  # float64 [demands]: pi[d]
    must_serve: np.ndarray  # bool [demands]
    capacity: np.ndarray  # int64 [pools]: cap[p] in quanta
    nearest_miss: np.ndarray  # int8 [demands]: rule index reached furthest; ELIGIBLE if any option
    quantum: float
    compiler: Compiler  # evaluates any (demand, pool) pair again, e.g. to itemize a plan

    @property
    def n_demands(self) -> int:
        return len(self.penalty)

    @property
    def n_pools(self) -> int:
        return len(self.capacity)

    @property
    def n_options(self) -> int:
        return len(self.pool)

    @cached_property
    def demand(self) -> np.ndarray:
        """int32 [options]: the demand of each option."""
        counts = np.diff(self.start)
        return np.repeat(np.arange(self.n_demands, dtype=np.int32), counts)

    def options_of(self, i: int) -> slice:
        return slice(int(self.start[i]), int(self.start[i + 1]))

    @property
    def stranded_must_serve(self) -> bool:
        """Whether some must-serve demand has no option at all (no plan can exist)."""
        return bool(np.any(self.must_serve & (np.diff(self.start) == 0)))


@dataclass(frozen=True, eq=False)
class _Pools:
    """Per-pool constants as arrays (index = position in Instance.pools())."""

    ids: list[str]
    region: np.ndarray
    gpu_count: np.ndarray
    memory: np.ndarray
    tflops: np.ndarray  # [pools, precisions], nan where unsupported
    power: np.ndarray
    price: np.ndarray
    accelerator: np.ndarray  # index into accelerator names
    pue: np.ndarray
    electricity: np.ndarray
    carbon: np.ndarray
    jurisdiction: np.ndarray  # index into jurisdiction names
    capacity: np.ndarray
    run_precision: np.ndarray  # [pools, precisions, strict] -> precision index or -1


@dataclass(frozen=True, eq=False)
class _Demands:
    """Per-demand fields as arrays (None becomes nan or inf as the rule needs)."""

    origin_row: np.ndarray  # row in the route table
    work: np.ndarray  # nan when served only through offers
    gang: np.ndarray
    precision: np.ndarray
    strict: np.ndarray
    min_memory: np.ndarray
    max_latency: np.ndarray  # inf when unbounded
    data_gb: np.ndarray
    deadline: np.ndarray  # inf when none
    max_cost: np.ndarray  # inf when none
    penalty: np.ndarray
    must_serve: np.ndarray
    accelerator_ok: np.ndarray | None  # bool [demands, accelerators]; None: no demand restricts
    jurisdiction_ok: np.ndarray | None  # bool [demands, jurisdictions]
    origin_ids: list[str] = field(default_factory=list)

    def take(self, rows: np.ndarray) -> _Demands:
        """The same fields for a subset of the demands."""
        sliced = {
            f.name: getattr(self, f.name)[rows]
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        return replace(self, **sliced)


def _pool_arrays(instance: Instance, accelerators: dict[str, int], jurisdictions: dict[str, int]) -> _Pools:
    pairs = instance.pools()
    region_index = {region.id: r for r, region in enumerate(instance.regions)}
    n = len(pairs)
    tflops = np.full((n, len(PRECISIONS)), np.nan)
    for k, (_, pool) in enumerate(pairs):
        for precision, value in pool.tflops_by_precision.items():
            tflops[k, PRECISIONS.index(precision)] = value
    run_precision = np.full((n, len(PRECISIONS), 2), -1, dtype=np.int8)
    for k in range(n):
        has = ~np.isnan(tflops[k])
        for j, precision in enumerate(PRECISIONS):
            if has[j]:
                run_precision[k, j, :] = j
                continue
            for fallback in PRECISION_FALLBACKS[precision]:
                if has[PRECISIONS.index(fallback)]:
                    run_precision[k, j, 0] = PRECISIONS.index(fallback)
                    break
    q = instance.gpu_hour_quantum
    gpu_count = np.array([p.gpu_count for _, p in pairs], dtype=np.int64)
    capacity = np.floor(gpu_count * instance.window_hours / q + QUANTUM_SLACK).astype(np.int64)
    return _Pools(
        ids=[p.id for _, p in pairs],
        region=np.array([region_index[r.id] for r, _ in pairs], dtype=np.int64),
        gpu_count=gpu_count,
        memory=np.array([p.memory_gb_per_gpu for _, p in pairs]),
        tflops=tflops,
        power=np.array([p.power_kw_per_gpu for _, p in pairs]),
        price=np.array([p.price_cny_per_gpu_hour for _, p in pairs]),
        accelerator=np.array([accelerators[p.accelerator] for _, p in pairs], dtype=np.int64),
        pue=np.array([r.pue for r, _ in pairs]),
        electricity=np.array([r.electricity_price_cny_per_kwh for r, _ in pairs]),
        carbon=np.array([r.carbon_g_co2_per_kwh for r, _ in pairs]),
        jurisdiction=np.array([jurisdictions[r.jurisdiction] for r, _ in pairs], dtype=np.int64),
        capacity=capacity,
        run_precision=run_precision,
    )


def _allow_matrix(lists: list[tuple[str, ...] | None], names: dict[str, int]) -> np.ndarray | None:
    if all(entry is None for entry in lists):
        return None
    ok = np.ones((len(lists), len(names)), dtype=bool)
    for i, entry in enumerate(lists):
        if entry is not None:
            ok[i] = False
            ok[i, [names[name] for name in entry]] = True
    return ok


def _demand_arrays(instance: Instance, demands: list[int]) -> _Demands:
    ds = [instance.demands[i] for i in demands]
    origin_ids = sorted({d.origin for d in ds})
    origin_row = {origin: k for k, origin in enumerate(origin_ids)}
    w = instance.weights

    def floats(values, missing: float) -> np.ndarray:
        return np.array([missing if v is None else v for v in values], dtype=np.float64)

    accelerators = _names(p.accelerator for _, p in instance.pools())
    jurisdictions = _names(r.jurisdiction for r in instance.regions)
    return _Demands(
        origin_row=np.array([origin_row[d.origin] for d in ds], dtype=np.int64),
        work=floats((d.work_pflop for d in ds), np.nan),
        gang=np.array([d.gang_size for d in ds], dtype=np.int64),
        precision=np.array([PRECISIONS.index(d.precision) for d in ds], dtype=np.int64),
        strict=np.array([d.strict_precision for d in ds], dtype=np.int64),
        min_memory=floats((d.min_memory_gb_per_gpu for d in ds), 0.0),
        max_latency=floats((d.max_latency_ms for d in ds), np.inf),
        data_gb=floats((d.data_gb for d in ds), 0.0),
        deadline=floats((d.deadline_hours for d in ds), np.inf),
        max_cost=floats((d.max_cost_cny for d in ds), np.inf),
        penalty=np.array([w.unserved * d.priority * d.unserved_penalty_cny for d in ds]),
        must_serve=np.array([d.must_serve for d in ds], dtype=bool),
        accelerator_ok=_allow_matrix([d.accelerators for d in ds], accelerators),
        jurisdiction_ok=_allow_matrix([d.jurisdictions for d in ds], jurisdictions),
        origin_ids=origin_ids,
    )


def _names(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out.setdefault(value, len(out))
    return out


@dataclass(frozen=True, eq=False)
class PoolColumn:
    """One pool's verdict on a set of demands: first failed rule, usage and cost terms."""

    rule: np.ndarray  # int8: first failed rule, ELIGIBLE if none
    run_precision: np.ndarray  # precision index, -1 if none
    units: np.ndarray  # int64 quanta (meaningful where eligible)
    compute: np.ndarray  # weighted contributions (CNY)
    energy: np.ndarray
    transfer: np.ndarray
    carbon: np.ndarray
    energy_kwh: np.ndarray
    co2_kg: np.ndarray
    latency_ms: np.ndarray

    @property
    def cost(self) -> np.ndarray:
        return self.compute + self.energy + self.transfer + self.carbon


class Compiler:
    """Evaluates the eligibility rules and costs of (demand, pool) pairs, vectorized over demands."""

    def __init__(self, instance: Instance, demands: list[int] | None = None):
        self.instance = instance
        self.demand_index = list(range(len(instance.demands))) if demands is None else demands
        self.accelerators = _names(p.accelerator for _, p in instance.pools())
        self.jurisdictions = _names(r.jurisdiction for r in instance.regions)
        self.pools = _pool_arrays(instance, self.accelerators, self.jurisdictions)
        self.demands = _demand_arrays(instance, self.demand_index)
        self.routes = RouteTable(instance, self.demands.origin_ids)
        position = {d: k for k, d in enumerate(self.demand_index)}
        pool_position = {pool_id: k for k, pool_id in enumerate(self.pools.ids)}
        demand_position = {instance.demands[d].id: k for d, k in position.items()}
        self.offers: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        by_pool: dict[int, list[tuple[int, float, float]]] = {}
        for offer in instance.offers:
            k = demand_position.get(offer.demand)
            if k is not None:
                by_pool.setdefault(pool_position[offer.pool], []).append(
                    (k, offer.gpu_hours, offer.price_cny)
                )
        for p, rows in by_pool.items():
            rows.sort()
            self.offers[p] = (
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows]),
                np.array([r[2] for r in rows]),
            )

    def column(self, p: int, rows: np.ndarray | None = None) -> PoolColumn:
        """Evaluate every rule and cost of pool ``p`` for the compiler's demands (or ``rows``)."""
        inst, P, D = self.instance, self.pools, self.demands
        n = len(D.work)
        q = inst.gpu_hour_quantum
        w = inst.weights
        region = P.region[p]
        offered = np.zeros(n, dtype=bool)
        offer_hours = np.full(n, np.nan)
        offer_price = np.zeros(n)
        if p in self.offers:
            idx, hours, price = self.offers[p]
            offered[idx] = True
            offer_hours[idx] = hours
            offer_price[idx] = price
        if rows is not None:
            D, offered, offer_hours, offer_price = (
                D.take(rows), offered[rows], offer_hours[rows], offer_price[rows]
            )
            n = len(rows)

        run = P.run_precision[p][D.precision, D.strict]
        tflops = P.tflops[p][np.maximum(run, 0)]
        with np.errstate(invalid="ignore", divide="ignore"):
            raw = np.where(offered, offer_hours, D.work * 1000.0 / (tflops * 3600.0))
            units = np.ceil(raw / q - QUANTUM_SLACK)
        units = np.maximum(1, np.nan_to_num(units, nan=1.0, posinf=1.0)).astype(np.int64)
        usage = units * q
        runtime = usage / D.gang
        latency = self.routes.latency_ms[D.origin_row, region]
        per_gb = self.routes.transfer_cny_per_gb[D.origin_row, region]
        compute_raw = np.where(offered, offer_price, usage * P.price[p])
        energy_kwh = usage * P.power[p] * P.pue[p]
        energy_raw = np.where(offered, 0.0, energy_kwh * P.electricity[p])
        with np.errstate(invalid="ignore"):
            transfer_raw = np.where(D.data_gb > 0, D.data_gb * per_gb, 0.0)
        co2_kg = energy_kwh * P.carbon[p] / 1000.0
        price = compute_raw + energy_raw + transfer_raw

        failed = {
            Reason.NO_OFFER: np.isnan(D.work) & ~offered,
            Reason.GANG: D.gang > P.gpu_count[p],
            Reason.ACCELERATOR: _disallowed(D.accelerator_ok, P.accelerator[p], n),
            Reason.MEMORY: D.min_memory > P.memory[p],
            Reason.PRECISION: run < 0,
            Reason.JURISDICTION: _disallowed(D.jurisdiction_ok, P.jurisdiction[p], n),
            Reason.UNREACHABLE: np.isinf(latency),
            Reason.LATENCY: latency > D.max_latency,
            Reason.DEADLINE: runtime > D.deadline,
            Reason.PRICE_CAP: price > D.max_cost,
        }
        rule = np.full(n, ELIGIBLE, dtype=np.int8)
        for reason in reversed(RULES):
            rule[failed[reason]] = _RULE[reason]
        return PoolColumn(
            rule=rule,
            run_precision=run,
            units=units,
            compute=w.compute * compute_raw,
            energy=w.energy * energy_raw,
            transfer=w.transfer * transfer_raw,
            carbon=co2_kg / 1000.0 * w.carbon_price_cny_per_t_co2,
            energy_kwh=energy_kwh,
            co2_kg=co2_kg,
            latency_ms=latency,
        )


def _disallowed(ok: np.ndarray | None, column: int, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if ok is None else ~ok[:, column]


def compile_options(instance: Instance, *, stop: Callable[[], bool] | None = None) -> Options:
    """Every eligible (demand, pool) option with its usage and cost, and each demand's nearest miss.

    ``stop()`` is asked before each pool; when it says yes, `Stopped` is raised.
    """
    compiler = Compiler(instance)
    n = len(instance.demands)
    nearest = np.full(n, -1, dtype=np.int8)
    demands_parts, pools_parts, units_parts, cost_parts = [], [], [], []
    for p in range(len(compiler.pools.ids)):
        if stop is not None and stop():
            raise Stopped("stopped while compiling the options")
        column = compiler.column(p)
        eligible = column.rule == ELIGIBLE
        np.maximum(nearest, column.rule, out=nearest)
        chosen = np.flatnonzero(eligible)
        demands_parts.append(chosen.astype(np.int32))
        pools_parts.append(np.full(len(chosen), p, dtype=np.int32))
        units_parts.append(column.units[chosen])
        cost_parts.append(column.cost[chosen])
    demand = np.concatenate(demands_parts)
    order = np.argsort(demand, kind="stable")  # pool order within a demand is kept
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(demand, minlength=n), out=start[1:])
    return Options(
        start=start,
        pool=np.concatenate(pools_parts)[order],
        units=np.concatenate(units_parts)[order],
        cost=np.concatenate(cost_parts)[order],
        penalty=compiler.demands.penalty,
        must_serve=compiler.demands.must_serve,
        capacity=compiler.pools.capacity,
        nearest_miss=nearest,
        quantum=instance.gpu_hour_quantum,
        compiler=compiler,
    )


def rejections(instance: Instance, demand_id: str) -> list[tuple[str, str, Reason | None]]:
    """For one demand: (region, pool, first failed rule or None if eligible) for every pool."""
    position = {d.id: k for k, d in enumerate(instance.demands)}
    if demand_id not in position:
        raise KeyError(f"no demand '{demand_id}' in instance '{instance.name}'")
    compiler = Compiler(instance, [position[demand_id]])
    out = []
    for p, (region, pool) in enumerate(instance.pools()):
        rule = int(compiler.column(p).rule[0])
        out.append((region.id, pool.id, None if rule == ELIGIBLE else RULES[rule]))
    return out
