"""An engine's choice (one option or none per demand) -> a `Plan` with every figure itemized."""

from __future__ import annotations

import math

import numpy as np

from models import (
    RULES,
    Assignment,
    CostBreakdown,
    Instance,
    Plan,
    PoolUsage,
    Reason,
    SolveStats,
    Status,
    Unserved,
    relative_gap,
)
from scheduler.compile import ELIGIBLE, PRECISIONS, Options

UNSERVED = -1


def unserved_reason(options: Options, i: int, solved: bool) -> Reason:
    """Why demand ``i`` is unserved (docs/formulation.md, section 5)."""
    if options.nearest_miss[i] != ELIGIBLE:
        return RULES[int(options.nearest_miss[i])]
    if not solved:
        return Reason.NOT_SOLVED
    cheapest = options.cost[options.options_of(i)].min()
    return Reason.UNECONOMIC if cheapest >= options.penalty[i] else Reason.CAPACITY


def build_plan(
    instance: Instance,
    options: Options,
    choice: np.ndarray | None,
    *,
    status: Status,
    lower_bound: float | None,
    stats: SolveStats,
    share_lower_bound: float | None = None,
) -> Plan:
    """Itemize ``choice`` (option index per demand, or UNSERVED) into a Plan.

    With ``choice`` None (status infeasible or unknown) every demand is listed as unserved.
    """
    n = options.n_demands
    solved = choice is not None
    if choice is None:
        choice = np.full(n, UNSERVED, dtype=np.int64)
    served = choice >= 0
    rows_of_pool: dict[int, np.ndarray] = {}
    chosen_pool = np.full(n, -1, dtype=np.int64)
    chosen_pool[served] = options.pool[choice[served]]
    order = np.argsort(chosen_pool, kind="stable")
    bounds = np.searchsorted(chosen_pool[order], np.arange(options.n_pools + 1))
    for p in range(options.n_pools):
        rows = order[bounds[p] : bounds[p + 1]]
        if len(rows):
            rows_of_pool[p] = rows

    pairs = instance.pools()
    by_demand: dict[int, Assignment] = {}
    used_units = np.zeros(options.n_pools, dtype=np.int64)
    q = instance.gpu_hour_quantum
    for p, rows in rows_of_pool.items():
        region, pool = pairs[p]
        col = options.compiler.column(p, rows)
        used_units[p] = int(col.units.sum())
        for k, i in enumerate(rows.tolist()):
            terms = (col.compute[k], col.energy[k], col.transfer[k], col.carbon[k])
            by_demand[i] = Assignment(
                demand=instance.demands[i].id,
                region=region.id,
                pool=pool.id,
                precision=PRECISIONS[int(col.run_precision[k])],
                gpu_hours=float(col.units[k]) * q,
                latency_ms=float(col.latency_ms[k]),
                energy_kwh=float(col.energy_kwh[k]),
                co2_kg=float(col.co2_kg[k]),
                compute_cny=float(terms[0]),
                energy_cny=float(terms[1]),
                transfer_cny=float(terms[2]),
                carbon_cny=float(terms[3]),
                cost_cny=float(terms[0] + terms[1] + terms[2] + terms[3]),
            )
    assignments = [by_demand[i] for i in sorted(by_demand)]
    from scheduler.policy import blocking_quota, policy_report, quota_masks

    report = policy_report(instance, options, choice if solved else None, share_lower_bound)
    masks = quota_masks(instance)

    def reason(i: int) -> Reason:
        why = unserved_reason(options, i, solved)
        if why == Reason.CAPACITY and blocking_quota(instance, options, report, i, masks) is not None:
            return Reason.QUOTA
        return why

    unserved = [
        Unserved(
            demand=d.id,
            reason=reason(i),
            penalty_cny=float(options.penalty[i]),
            work_pflop=d.work_pflop,
        )
        for i, d in enumerate(instance.demands)
        if not served[i]
    ]
    pools = [
        PoolUsage(
            region=region.id,
            pool=pool.id,
            accelerator=pool.accelerator,
            used_gpu_hours=float(used_units[p]) * q,
            capacity_gpu_hours=float(options.capacity[p]) * q,
            utilization=float(used_units[p] / options.capacity[p]) if options.capacity[p] else 0.0,
        )
        for p, (region, pool) in enumerate(pairs)
    ]
    costs = CostBreakdown(
        compute_cny=math.fsum(a.compute_cny for a in assignments),
        energy_cny=math.fsum(a.energy_cny for a in assignments),
        transfer_cny=math.fsum(a.transfer_cny for a in assignments),
        carbon_cny=math.fsum(a.carbon_cny for a in assignments),
        unserved_penalty_cny=math.fsum(u.penalty_cny for u in unserved) if solved else 0.0,
        energy_kwh=math.fsum(a.energy_kwh for a in assignments),
        co2_t=math.fsum(a.co2_kg for a in assignments) / 1000.0,
    )
    objective = None
    if solved:
        objective = math.fsum(
            [a.cost_cny for a in assignments] + [u.penalty_cny for u in unserved]
        )
    else:
        lower_bound = None
    return Plan(
        instance=instance.name,
        status=status,
        objective=objective,
        lower_bound=lower_bound,
        gap=relative_gap(objective, lower_bound),
        costs=costs,
        assignments=tuple(assignments),
        unserved=tuple(unserved),
        pools=tuple(pools),
        stats=stats,
        policy=report,
    )
