"""Quotas and fairness on compiled options: the integer rows the exact engine adds, and the plan's
policy figures (docs/formulation.md section 12, docs/policy.md).

Work shares are rows ``sum_k (g_k - s) w_k x_k <= 0`` (or >= 0 for a minimum) over the options in
the quota's scope, scaled by a power of ten S and rounded outwards (floor for <=, ceil for >=):
every plan that meets the rule exactly meets the integer row (so the engine's bound stays valid),
and every plan of the integer row meets the rule within n / S <= the verifier's tolerance.
Capacity shares are exact: usage and capacity are whole quanta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models import Fairness, FairnessReport, Instance, PolicyReport, QuotaMeasure, QuotaUse

FAIR_UNITS = 10**9
"""Integer units per whole unserved share in the fairness rows (stage 1 minimizes in these)."""


@dataclass(frozen=True)
class Row:
    """One integer row over options: ``sum coeffs . x[ks]`` <= rhs (sense '<=') or >= rhs."""

    quota: str
    bound: str  # "max" or "min"
    ks: np.ndarray
    coeffs: np.ndarray
    sense: str
    rhs: int


def demand_work(instance: Instance) -> np.ndarray:
    """Each demand's work in PFLOP (0 for a demand served only through offers)."""
    return np.array([d.work_pflop or 0.0 for d in instance.demands])


def work_tolerance(instance: Instance) -> float:
    """The slack of a work-share rule: 1e-6 + 1e-9 x the work of all demands (PFLOP)."""
    return 1e-6 + 1e-9 * math.fsum(d.work_pflop or 0.0 for d in instance.demands)


def work_scale(options) -> float:
    """The power of ten S that scales the work rows: n / S is at most the work tolerance."""
    n = max(options.n_demands, 1)
    return 10.0 ** math.ceil(math.log10(n / work_tolerance(options.compiler.instance)))


def in_group(instance: Instance, quota) -> np.ndarray:
    """bool [demands]: the demands the quota's sector and origin pick."""
    tags = {r.id: set(r.tags) for r in instance.regions}
    return np.array([
        (quota.sector is None or d.sector.value == quota.sector)
        and (quota.origin is None or d.origin == quota.origin or quota.origin in tags[d.origin])
        for d in instance.demands
    ], dtype=bool)


def in_scope(instance: Instance, quota) -> np.ndarray:
    """bool [pools]: the pools the quota counts (those of its hub, or all)."""
    return np.array([quota.hub is None or quota.hub in region.tags for region, _ in instance.pools()],
                    dtype=bool)


def quota_rows(options) -> list[Row]:
    """The integer rows of every quota of the instance's policy (none without one)."""
    from scheduler.compile import ROW_QUANTA_LIMIT, RangeError

    inst = options.compiler.instance
    if inst.policy is None:
        return []
    rows: list[Row] = []
    work = demand_work(inst)
    scale = work_scale(options)
    for q in inst.policy.quotas:
        group = in_group(inst, q)[options.demand]
        scope = in_scope(inst, q)
        ks = np.flatnonzero(scope[options.pool])
        for bound, share in (("max", q.max_share), ("min", q.min_share)):
            if share is None:
                continue
            if q.measure == QuotaMeasure.WORK:
                raw = (group[ks].astype(np.float64) - share) * work[options.demand[ks]] * scale
                coeffs = np.floor(raw) if bound == "max" else np.ceil(raw)
                rhs = 0
                keep = coeffs != 0
                row_ks, row_coeffs = ks[keep], coeffs[keep]
                if np.abs(row_coeffs).sum() > ROW_QUANTA_LIMIT:
                    raise RangeError([f"quota '{q.id}': field 'measure' (work): its row needs "
                                      f"{np.abs(row_coeffs).sum():.3g} integer units, above "
                                      f"{ROW_QUANTA_LIMIT:.0e} (the work figures span too many orders of magnitude)"])
                row_coeffs = row_coeffs.astype(np.int64)
            else:
                cap = int(options.capacity[scope].sum())
                target = share * cap
                rhs = math.floor(target + 1e-9) if bound == "max" else math.ceil(target - 1e-9)
                mine = ks[group[ks]]
                row_ks, row_coeffs = mine, options.units[mine].astype(np.int64)
            rows.append(Row(q.id, bound, row_ks, row_coeffs, "<=" if bound == "max" else ">=", int(rhs)))
    return rows


def fairness_groups(instance: Instance) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per group with work (sector or origin): its name, its demands and their integer weights
    round(FAIR_UNITS x work / group's work); [] when fairness is off."""
    policy = instance.policy
    if policy is None or policy.fairness == Fairness.NONE:
        return []
    work = demand_work(instance)
    keys = [d.sector.value if policy.fairness == Fairness.SECTOR else d.origin for d in instance.demands]
    out = []
    for name in sorted(set(keys)):
        rows = np.array([i for i, k in enumerate(keys) if k == name], dtype=np.int64)
        total = math.fsum(work[rows])
        if total <= 0:
            continue
        out.append((name, rows, np.round(work[rows] / total * FAIR_UNITS).astype(np.int64)))
    return out


def share_bound(units_bound: float, instance: Instance) -> float:
    """A proven lower bound on the true largest unserved share from one on the integer rows: each
    row rounds its weights by at most 1/2 a unit per demand."""
    groups = fairness_groups(instance)
    slack = max((len(rows) for _, rows, _ in groups), default=0) * 0.5
    return max(0.0, (units_bound - slack) / FAIR_UNITS)


def policy_report(instance: Instance, options, choice: np.ndarray | None,
                  share_lower_bound: float | None = None) -> PolicyReport | None:
    """The plan's figure for every quota and, with fairness, every group's unserved share."""
    policy = instance.policy
    if policy is None or choice is None:
        return None
    work = demand_work(instance)
    served = choice >= 0
    pool = np.full(len(choice), -1, dtype=np.int64)
    pool[served] = options.pool[choice[served]]
    units = np.zeros(len(choice), dtype=np.int64)
    units[served] = options.units[choice[served]]
    q_hours = instance.gpu_hour_quantum
    uses = []
    for q in policy.quotas:
        group = in_group(instance, q)
        scope = in_scope(instance, q)
        counted = served & np.where(pool >= 0, scope[np.maximum(pool, 0)], False)
        if q.measure == QuotaMeasure.WORK:
            amount = math.fsum(work[counted & group])
            total = math.fsum(work[counted])
        else:
            amount = float(units[counted & group].sum()) * q_hours
            total = float(options.capacity[scope].sum()) * q_hours
        uses.append(QuotaUse(quota=q.id, amount=amount, total=total,
                             share=amount / total if total > 0 else 0.0))
    fairness = None
    if policy.fairness != Fairness.NONE:
        by_group = {}
        for name, rows, _ in fairness_groups(instance):
            by_group[name] = math.fsum(work[rows][~served[rows]]) / math.fsum(work[rows])
        fairness = FairnessReport(groups=policy.fairness.value,
                                  largest_unserved_share=max(by_group.values(), default=0.0),
                                  share_lower_bound=share_lower_bound, by_group=by_group)
    return PolicyReport(quotas=tuple(uses), fairness=fairness)


def quota_masks(instance: Instance) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per quota: its group (bool per demand) and scope (bool per pool)."""
    quotas = instance.policy.quotas if instance.policy is not None else ()
    return [(in_group(instance, q), in_scope(instance, q)) for q in quotas]


def blocking_quota(instance: Instance, options, report: PolicyReport | None, i: int,
                   masks: list | None = None) -> str | None:
    """The first maximum quota that demand ``i`` (unserved, with an option cheaper than its
    penalty in the quota's scope) would pass if it were served: the quota's id, or None.
    ``masks``: `quota_masks` of the instance, when the caller asks for many demands."""
    if report is None or instance.policy is None:
        return None
    masks = quota_masks(instance) if masks is None else masks
    d = instance.demands[i]
    ks = np.arange(options.start[i], options.start[i + 1])
    paying = ks[options.cost[ks] < options.penalty[i]]
    tol = work_tolerance(instance)
    for q, use, (group, scope) in zip(instance.policy.quotas, report.quotas, masks, strict=True):
        if q.max_share is None or not group[i]:
            continue
        mine = paying[scope[options.pool[paying]]]
        if not len(mine):
            continue
        if q.measure == QuotaMeasure.WORK:
            w = d.work_pflop or 0.0
            excess = use.amount + w - q.max_share * (use.total + w)
            if w > 0 and excess > tol:
                return q.id
        else:
            extra = float(options.units[mine].min()) * instance.gpu_hour_quantum
            if use.amount + extra - q.max_share * use.total > 1e-6 + 1e-9 * use.total:
                return q.id
    return None


def _rows_as_le(options) -> list[tuple[Row, np.ndarray, float, float]]:
    """Each quota row as ``sum a . x[ks] <= b`` in its unit (PFLOP or quanta): (row, a, b, unit
    scale to the reported unit). Work rows keep the engine's outward rounding, so they relax the
    rule exactly as the engine's rows do."""
    inst = options.compiler.instance
    scale = work_scale(options)
    by_id = {q.id: q for q in inst.policy.quotas}
    out = []
    for row in quota_rows(options):
        work = by_id[row.quota].measure == QuotaMeasure.WORK
        a = row.coeffs.astype(np.float64) / (scale if work else 1.0)
        b = float(row.rhs)
        if row.sense == ">=":
            a, b = -a, -b
        out.append((row, a, b, 1.0 if work else 1.0 / inst.gpu_hour_quantum))
    return out


def policy_prices(instance: Instance, options, seconds: float = 2.0):
    """Shadow prices of a single-window instance with a policy: the duals of the LP relaxation
    (GLOP) on the capacity and quota rows, and the Lagrangian bound they prove, evaluated again
    at those multipliers (docs/formulation.md section 12). None when no bound exists."""
    from ortools.linear_solver import pywraplp

    from models import PoolPrice, QuotaPrice, ShadowPrices

    if options.stranded_must_serve:
        return None
    usable = options.units <= options.capacity[options.pool]
    rows = _rows_as_le(options)
    lp = pywraplp.Solver.CreateSolver("GLOP")
    lp.SetTimeLimit(int(seconds * 1000))
    x = {int(k): lp.NumVar(0.0, 1.0, "") for k in np.flatnonzero(usable)}
    objective = lp.Objective()
    for k, var in x.items():
        objective.SetCoefficient(var, float(options.cost[k]))
    for i in range(options.n_demands):
        ks = [k for k in range(int(options.start[i]), int(options.start[i + 1])) if k in x]
        if options.must_serve[i] and not ks:
            return None
        row = lp.Constraint(1.0, 1.0)
        for k in ks:
            row.SetCoefficient(x[k], 1.0)
        if not options.must_serve[i]:
            y = lp.NumVar(0.0, 1.0, "")
            row.SetCoefficient(y, 1.0)
            objective.SetCoefficient(y, float(options.penalty[i]))
    caps = []
    for p in range(options.n_pools):
        cap = lp.Constraint(-lp.infinity(), float(options.capacity[p]))
        caps.append(cap)
    for k, var in x.items():
        caps[int(options.pool[k])].SetCoefficient(var, float(options.units[k]))
    quota_cons = []
    for row, a, b, _ in rows:
        con = lp.Constraint(-lp.infinity(), b)
        for k, coeff in zip(row.ks.tolist(), a.tolist(), strict=True):
            if k in x:
                con.SetCoefficient(x[k], coeff)
        quota_cons.append(con)
    objective.SetMinimization()
    if lp.Solve() not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None
    lam = np.maximum(np.array([-c.dual_value() for c in caps]), 0.0)
    mu = np.maximum(np.array([-c.dual_value() for c in quota_cons]), 0.0)
    lam[lam <= 1e-9 * max(float(lam.max(initial=0.0)), 1.0)] = 0.0
    mu[mu <= 1e-12] = 0.0
    bound = lagrangian_bound(options, usable, rows, lam, mu)
    pools = tuple(PoolPrice(region=region.id, pool=pool.id, cny_per_gpu_hour=float(lam[p] / options.quantum))
                  for p, (region, pool) in enumerate(instance.pools()))
    quotas = tuple(QuotaPrice(quota=row.quota, bound=row.bound, cny_per_unit=float(m * unit),
                              unit="pflop" if unit == 1.0 else "gpu_hour")
                   for (row, _, _, unit), m in zip(rows, mu, strict=True) if m > 0)
    return ShadowPrices(method="after the solve: LP relaxation duals (GLOP) on the capacity and quota rows",
                        bound_cny=float(bound), pools=pools, quotas=quotas)


def lagrangian_bound(options, usable: np.ndarray, rows, lam: np.ndarray, mu: np.ndarray) -> float:
    """L(lam, mu): each demand's cheapest alternative at the priced costs, less the priced
    right-hand sides; a lower bound on every plan for any lam, mu >= 0."""
    priced = options.cost + lam[options.pool] * options.units
    for (row, a, _, _), m in zip(rows, mu, strict=True):
        if m > 0:
            np.add.at(priced, row.ks, m * a)
    priced = np.where(usable, priced, np.inf)
    best = np.where(options.must_serve, np.inf, options.penalty)
    has = np.diff(options.start) > 0
    if has.any():
        cheapest = np.minimum.reduceat(priced, options.start[:-1][has])
        best[has] = np.minimum(best[has], cheapest)
    if not np.all(np.isfinite(best)):
        return -math.inf
    rhs = math.fsum(float(m) * b for (_, _, b, _), m in zip(rows, mu, strict=True))
    return math.fsum(best.tolist()) - float(lam @ options.capacity.astype(np.float64)) - rhs


def repair(options, choice: np.ndarray) -> np.ndarray | None:
    """A plan that meets every quota row, from ``choice`` (the greedy plan, which knows no quotas):
    in each maximum row it breaks, the served options with the largest coefficients are dropped
    until the row holds (never a must-serve demand's). None when that fails, or a minimum row is
    unmet: the engine then starts without a complete first plan."""
    rows = quota_rows(options)
    choice = choice.copy()
    for _ in range(2 * len(rows) + 2):
        broken = False
        for row in rows:
            chosen = np.isin(row.ks, choice[choice >= 0])
            activity = int(row.coeffs[chosen].sum())
            if row.sense == ">=":
                if activity < row.rhs:
                    return None
                continue
            if activity <= row.rhs:
                continue
            broken = True
            ks, coeffs = row.ks[chosen], row.coeffs[chosen]
            droppable = (coeffs > 0) & ~options.must_serve[options.demand[ks]]
            ks, coeffs = ks[droppable], coeffs[droppable]
            order = np.argsort(-coeffs, kind="stable")
            need = np.searchsorted(np.cumsum(coeffs[order]), activity - row.rhs) + 1
            if need > len(order):
                return None
            choice[options.demand[ks[order[:need]]]] = -1
        if not broken:
            return choice
    return None
