"""Instance -> arrays of eligible (demand, pool) options, and the map back to a Plan.

`compile_options` applies the eligibility rules of docs/formulation.md (section 2) pool by pool,
vectorized over all demands, and keeps for each demand the rule its nearest miss failed. The
result, `Options`, is a flat CSR layout: the options of demand ``i`` are ``start[i]:start[i+1]``,
sorted by pool. Memory is linear in the number of options (20 bytes each).

Before anything is solved, `compile_options` checks that the instance lies in the range the engines
represent (`RangeError`, docs/formulation.md section 7): usage and capacity in quanta, their sums in
one capacity row, and the precision of the integer cost scaling (`Options.scaling`).
"""

from __future__ import annotations

import math
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

MAX_QUANTA = 10**15
"""The most quanta one eligible option may use, and one pool may hold: integer and float arithmetic
on them stays exact (below 2**53), and the field bounds keep them below it at the default quantum."""

ROW_QUANTA_LIMIT = 4 * 10**18
"""The most quanta the eligible options of one pool may use together: CP-SAT refuses a linear row
whose activity could pass half of int64 (4.6e18)."""

OBJECTIVE_UNITS_LIMIT = 1e13
"""The largest objective of any plan in integer units: CP-SAT's LP works in float64 (16 digits)."""

OBJECTIVE_SUM_LIMIT = 1e18
"""The largest sum of all integer objective coefficients (CP-SAT refuses 4.6e18)."""

PRECISION_LIMIT = 1e-3
"""The largest rounding bound E the integer model may have, relative to a known plan's objective
(at least 1): beyond it the engines refuse the instance instead of reporting a bound that rounding
alone may have moved by more than 0.1%. E / objective is 6e-10 on the shipped China instance and 0
on every GAP problem (docs/formulation.md, section 7)."""


class RangeError(ValueError):
    """An instance outside the range the engines represent; each problem names object and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20]
        more = len(problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n(and {more} more)" if more else ""))


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
    compiler: Compiler | None  # evaluates any (demand, pool) pair again, e.g. to itemize a plan

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
    def policy(self):
        """The instance's `Policy` (quotas, fairness), or None (also for options built without
        an instance)."""
        return None if self.compiler is None else self.compiler.instance.policy

    @property
    def stranded_must_serve(self) -> bool:
        """Whether some must-serve demand has no option at all (no plan can exist)."""
        return bool(np.any(self.must_serve & (np.diff(self.start) == 0)))

    @cached_property
    def scaling(self) -> Scaling:
        """The integer cost scaling both engines use (docs/formulation.md, section 4)."""
        return integer_scaling(self)


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
    capacity: np.ndarray  # int64 quanta, clipped to MAX_QUANTA + 1 (see capacity_quanta)
    capacity_quanta: np.ndarray  # float64: the exact count, checked against MAX_QUANTA
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
    capacity_quanta = np.floor(gpu_count * instance.window_hours / q + QUANTUM_SLACK)
    capacity = np.minimum(capacity_quanta, MAX_QUANTA + 1).astype(np.int64)
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
        capacity_quanta=capacity_quanta,
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
    units: np.ndarray  # int64 quanta (meaningful where eligible), clipped to MAX_QUANTA + 1
    quanta: np.ndarray  # float64: the exact count, checked against MAX_QUANTA where eligible
    compute: np.ndarray  # weighted contributions (CNY)
    energy: np.ndarray
    transfer: np.ndarray
    carbon: np.ndarray
    energy_kwh: np.ndarray
    co2_kg: np.ndarray
    latency_ms: np.ndarray
    compute_raw: np.ndarray | None = None  # unweighted (CNY): the timed price cap needs them
    transfer_raw: np.ndarray | None = None
    offered: np.ndarray | None = None  # bool: usage and compute price come from an offer

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

    def column(self, p: int, rows: np.ndarray | None = None, *,
               rules: tuple[Reason, ...] = RULES) -> PoolColumn:
        """Evaluate every rule and cost of pool ``p`` for the compiler's demands (or ``rows``).

        ``rules`` (default all of `models.RULES`) are the ones checked: the timed compiler checks
        the window and the price cap per start itself, and services skip the batch-only rules.
        """
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
        # nan where the demand has no work figure or the pool no run precision (those options fail
        # rule 1 or 5 and count one quantum); the field bounds keep every other figure finite.
        raw = np.where(offered, offer_hours, D.work * 1000.0 / (tflops * 3600.0))
        quanta = np.maximum(1.0, np.nan_to_num(np.ceil(raw / q - QUANTUM_SLACK), nan=1.0))
        units = np.minimum(quanta, MAX_QUANTA + 1).astype(np.int64)
        usage = quanta * q
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
            Reason.WINDOW: np.zeros(n, dtype=bool),  # one window: checked by the timed compiler
            Reason.PRICE_CAP: price > D.max_cost,
        }
        rule = np.full(n, ELIGIBLE, dtype=np.int8)
        for reason in reversed(rules):
            rule[failed[reason]] = _RULE[reason]
        return PoolColumn(
            rule=rule,
            run_precision=run,
            units=units,
            quanta=quanta,
            compute=w.compute * compute_raw,
            energy=w.energy * energy_raw,
            transfer=w.transfer * transfer_raw,
            carbon=co2_kg / 1000.0 * w.carbon_price_cny_per_t_co2,
            energy_kwh=energy_kwh,
            co2_kg=co2_kg,
            latency_ms=latency,
            compute_raw=compute_raw,
            transfer_raw=transfer_raw,
            offered=offered,
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
    options = Options(
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
    check_range(options)
    return options


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


# -- the representable range (docs/formulation.md, section 7) -----------------------------------


def check_range(options: Options) -> None:
    """Raise RangeError if the instance lies outside what the engines represent."""
    problems = capacity_problems(options) + usage_problems(options) + row_problems(options)
    if not problems:
        problems = precision_problems(options)
    if problems:
        raise RangeError(problems)


def capacity_problems(options: Options) -> list[str]:
    """Pools whose capacity in quanta passes MAX_QUANTA."""
    compiler = options.compiler
    inst, pools = compiler.instance, compiler.pools
    out = []
    for p in np.flatnonzero(pools.capacity_quanta > MAX_QUANTA):
        out.append(
            f"pool '{pools.ids[p]}': field 'gpu_count' ({int(pools.gpu_count[p])}) x window_hours "
            f"({inst.window_hours:g}) / gpu_hour_quantum ({inst.gpu_hour_quantum:g}) is "
            f"{pools.capacity_quanta[p]:.3g} quanta; the engines represent at most "
            f"{MAX_QUANTA:.0e} quanta per pool (raise the instance's 'gpu_hour_quantum')"
        )
    return out


def usage_problems(options: Options) -> list[str]:
    """Demands with an eligible option whose usage in quanta passes MAX_QUANTA (the worst pool)."""
    over = np.flatnonzero(options.units > MAX_QUANTA)
    if not len(over):
        return []
    compiler = options.compiler
    inst = compiler.instance
    worst: dict[int, tuple[float, int]] = {}  # demand -> (quanta, pool)
    demand, pool = options.demand[over], options.pool[over]
    for p in np.unique(pool):
        rows = demand[pool == p].astype(np.int64)
        quanta = compiler.column(int(p), rows).quanta
        for i, value in zip(rows.tolist(), quanta.tolist(), strict=True):
            if value > worst.get(i, (-1.0, 0))[0]:
                worst[i] = (value, int(p))
    offered = {(o.demand, o.pool) for o in inst.offers}
    out = []
    for i in sorted(worst):
        value, p = worst[i]
        d, pool_id = inst.demands[compiler.demand_index[i]], compiler.pools.ids[p]
        limit = f"the engines represent at most {MAX_QUANTA:.0e} quanta per option"
        if (d.id, pool_id) in offered:
            hours = next(o.gpu_hours for o in inst.offers if (o.demand, o.pool) == (d.id, pool_id))
            out.append(f"offer ({d.id} on {pool_id}): field 'gpu_hours' ({hours:g}) is {value:.3g} "
                       f"quanta; {limit} (raise the instance's 'gpu_hour_quantum')")
        else:
            out.append(f"demand '{d.id}': field 'work_pflop' ({d.work_pflop:g}) makes its usage on "
                       f"pool '{pool_id}' {value:.3g} quanta; {limit} (check the field, or raise "
                       "the instance's 'gpu_hour_quantum')")
    return out


def row_problems(options: Options) -> list[str]:
    """Pools whose eligible options together pass ROW_QUANTA_LIMIT quanta (one CP-SAT row)."""
    total = np.bincount(options.pool, weights=options.units.astype(np.float64),
                        minlength=options.n_pools)
    count = np.bincount(options.pool, minlength=options.n_pools)
    ids = options.compiler.pools.ids
    return [
        f"pool '{ids[p]}': its {int(count[p]):,} eligible options use {total[p]:.3g} quanta "
        f"together; one capacity row of the integer model holds at most {ROW_QUANTA_LIMIT:.0e} "
        "(raise the instance's 'gpu_hour_quantum')"
        for p in np.flatnonzero(total > ROW_QUANTA_LIMIT)
    ]


def precision_problems(options: Options) -> list[str]:
    """A known plan shows the integer cost scaling too coarse: E above PRECISION_LIMIT of its
    objective. Without a known complete plan there is no yardstick, and nothing is refused."""
    sc = options.scaling
    if sc.upper_bound is None or sc.rounding_bound <= PRECISION_LIMIT * max(sc.reference, 1.0):
        return []
    share = sc.rounding_bound / max(sc.reference, 1.0)
    return [
        f"{_dearest_alternative(options)} sets the integer cost scale to {sc.scale:g} units per "
        f"CNY, so rounding may move a plan's objective by up to {sc.rounding_bound:.3g} CNY, "
        f"{share:.3%} of a known plan's objective ({sc.reference:.6g} CNY); the engines accept at "
        f"most {PRECISION_LIMIT:.2%} (the costs span too many orders of magnitude: check the field)"
    ]


def _dearest_alternative(options: Options) -> str:
    """The kept alternative that weighs most in the scale: the demand (and pool) and its field."""
    sc = options.scaling
    compiler = options.compiler
    inst = compiler.instance
    cost = np.where(sc.kept, options.cost, -np.inf)
    pen = np.where(sc.unserved_kept, options.penalty, -np.inf)
    k = int(np.argmax(cost)) if options.n_options else -1
    i = int(np.argmax(pen))
    if k < 0 or pen[i] >= cost[k]:
        d = inst.demands[compiler.demand_index[i]]
        return (f"demand '{d.id}': field 'unserved_penalty_cny' ({d.unserved_penalty_cny:g}, "
                f"penalty {options.penalty[i]:.3g} CNY)")
    i, p = int(options.demand[k]), int(options.pool[k])
    d, (region, pool) = inst.demands[compiler.demand_index[i]], inst.pools()[p]
    col = compiler.column(p, np.array([i]))
    terms = {"compute": col.compute[0], "energy": col.energy[0], "transfer": col.transfer[0],
             "carbon": col.carbon[0]}
    term = max(terms, key=terms.get)
    offered = any((o.demand, o.pool) == (d.id, pool.id) for o in inst.offers)
    field = {
        "compute": f"offer ({d.id} on {pool.id}) field 'price_cny'" if offered
        else f"pool '{pool.id}' field 'price_cny_per_gpu_hour' ({pool.price_cny_per_gpu_hour:g})",
        "energy": f"region '{region.id}' field 'electricity_price_cny_per_kwh' "
                  f"({region.electricity_price_cny_per_kwh:g})",
        "transfer": f"demand '{d.id}' field 'data_gb' ({d.data_gb:g})",
        "carbon": "weights field 'carbon_price_cny_per_t_co2' "
                  f"({inst.weights.carbon_price_cny_per_t_co2:g})",
    }[term]
    return (f"demand '{d.id}' on pool '{pool.id}': cost {options.cost[k]:.3g} CNY ({term} term, "
            f"{field})")


# -- integer scaling (docs/formulation.md, section 4) --------------------------------------------


@dataclass(frozen=True, eq=False)
class Scaling:
    """How the engines turn costs into CP-SAT's integers, and how far the rounding may move a plan."""

    scale: float  # integer units per CNY (a power of ten)
    integral: bool  # every kept cost and penalty is whole at scale 1: E = 0, objectives whole
    kept: np.ndarray  # bool [options]: may be in an optimal plan (the others are dominated)
    unserved_kept: np.ndarray  # bool [demands]: leaving the demand unserved may be optimal
    cost_int: np.ndarray  # int64 [options]: round(s c) where kept; a never-preferred value elsewhere
    penalty_int: np.ndarray  # int64 [demands]: round(s pi) where kept; likewise
    errors: np.ndarray  # float64 [demands]: e[d] over the kept alternatives
    rounding_bound: float  # E = sum of e[d]
    reference: float  # a known plan's objective, or (without one) the least any plan can cost
    upper_bound: float | None  # the known complete plan's objective, when it pruned options


def integer_scaling(options: Options) -> Scaling:
    """Leave dominated alternatives out of the scale, then pick the power of ten.

    First only options of optional demands that cost at least the penalty are dropped. If the
    rounding bound then still exceeds OPTIMAL_GAP of the least possible objective, the greedy plan
    (when complete) also drops every alternative dearer than its objective.
    """
    from models import OPTIMAL_GAP

    if options.policy is not None:
        # Quotas and fairness make dearer alternatives useful (a minimum share may need a demand
        # served above its penalty, a maximum one a cheap option left out): nothing is dropped.
        every = np.ones(options.n_options, dtype=bool)
        return _scaled(options, every, ~options.must_serve, _least_objective(options, every), None)
    # Kept: options of must-serve demands, and options cheaper than their demand's penalty.
    kept = options.must_serve[options.demand] | (options.cost < options.penalty[options.demand])
    unserved_kept = ~options.must_serve
    first = _scaled(options, kept, unserved_kept, _least_objective(options, kept), None)
    if first.rounding_bound <= OPTIMAL_GAP * max(first.reference, 1.0):
        return first
    from scheduler.engines.greedy import greedy
    from scheduler.engines.primal import objective

    choice, complete = greedy(options)
    if not complete:
        return first
    upper = objective(options, choice)
    kept = kept & (options.cost <= upper)
    unserved_kept = unserved_kept & (options.penalty <= upper)
    return _scaled(options, kept, unserved_kept, upper, upper)


def _least_objective(options: Options, kept: np.ndarray) -> float:
    """A lower bound on every plan's objective: each demand's cheapest alternative."""
    least = np.where(options.must_serve, 0.0, options.penalty)
    has = np.diff(options.start) > 0
    if has.any():
        cheapest = np.minimum.reduceat(np.where(kept, options.cost, np.inf), options.start[:-1][has])
        finite = np.isfinite(cheapest)
        rows = np.flatnonzero(has)[finite]
        least[rows] = np.where(options.must_serve[rows], cheapest[finite],
                               np.minimum(least[rows], cheapest[finite]))
    return math.fsum(least)


def _scaled(options: Options, kept: np.ndarray, unserved_kept: np.ndarray, reference: float,
            upper: float | None) -> Scaling:
    n = options.n_demands
    has = np.diff(options.start) > 0
    seg = options.start[:-1][has]
    kept_cost, kept_pen = options.cost[kept], options.penalty[unserved_kept]
    dearest = np.where(unserved_kept, options.penalty, 0.0)
    if has.any():
        top = np.maximum.reduceat(np.where(kept, options.cost, 0.0), seg)
        dearest[has] = np.maximum(dearest[has], top)
    worst = math.fsum(dearest)
    total = math.fsum(kept_cost) + math.fsum(kept_pen)
    whole = bool(np.all(kept_cost == np.round(kept_cost)) and np.all(kept_pen == np.round(kept_pen)))
    integral = whole and total <= OBJECTIVE_SUM_LIMIT
    if integral:
        scale = 1.0
    else:
        # In logarithms: a worst objective of 5e-324 must not overflow 1e13 / worst.
        exponent = min(math.floor(math.log10(OBJECTIVE_UNITS_LIMIT) - math.log10(max(worst, 1e-300))),
                       math.floor(math.log10(OBJECTIVE_SUM_LIMIT) - math.log10(max(total, 1e-300))),
                       9)
        scale = 10.0**exponent
    pen_int = np.zeros(n, dtype=np.int64)
    pen_int[unserved_kept] = np.round(kept_pen * scale).astype(np.int64)
    never = math.ceil(scale * worst) + n + 1  # above every plan of kept alternatives
    pen_int[~unserved_kept] = never
    cost_int = np.where(unserved_kept[options.demand], pen_int[options.demand] + 1, never)
    cost_int[kept] = np.round(kept_cost * scale).astype(np.int64)
    err = np.zeros(options.n_options)
    err[kept] = np.abs(kept_cost - cost_int[kept] / scale)
    errors = np.zeros(n)
    errors[unserved_kept] = np.abs(kept_pen - pen_int[unserved_kept] / scale)
    if has.any():
        errors[has] = np.maximum(errors[has], np.maximum.reduceat(err, seg))
    return Scaling(scale=scale, integral=integral, kept=kept, unserved_kept=unserved_kept,
                   cost_int=cost_int.astype(np.int64), penalty_int=pen_int, errors=errors,
                   rounding_bound=math.fsum(errors), reference=reference, upper_bound=upper)
