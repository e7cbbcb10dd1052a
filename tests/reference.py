"""A reference written from docs/formulation.md alone, in plain Python loops: the network (§1), the
eligibility rules, usage and cost of every option (§2) and the optimum by enumeration (§3).

It reads only the `Instance` (never `scheduler`), so a wrong rule, unit or cost in the compiler or
the engines cannot hide behind it. Routes use Floyd-Warshall on (latency, transfer) pairs, a
different algorithm from both the engines' and the verifier's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from models import INTRA_REGION_LATENCY_MS, PRECISION_FALLBACKS, QUANTUM_SLACK, Instance


@dataclass(frozen=True)
class RefOption:
    """One eligible (demand, pool) option: usage in quanta and objective cost."""

    demand: str
    pool: str
    units: int
    cost: float


def routes(instance: Instance) -> dict[tuple[str, str], tuple[float, float]]:
    """(latency, transfer) of the lexicographically shortest route between every reachable pair."""
    ids = [r.id for r in instance.regions]
    best: dict[tuple[str, str], tuple[float, float]] = {(a, a): (0.0, 0.0) for a in ids}
    for link in instance.links:
        pair = (link.latency_ms, link.transfer_cost_cny_per_gb)
        for a, b in ((link.source, link.target), (link.target, link.source)):
            if (a, b) not in best or pair < best[(a, b)]:
                best[(a, b)] = pair
    for k in ids:
        for a in ids:
            if (a, k) not in best:
                continue
            for b in ids:
                if (k, b) not in best:
                    continue
                via = (best[(a, k)][0] + best[(k, b)][0], best[(a, k)][1] + best[(k, b)][1])
                if (a, b) not in best or via < best[(a, b)]:
                    best[(a, b)] = via
    for a in ids:
        best[(a, a)] = (INTRA_REGION_LATENCY_MS, 0.0)
    return best


def run_precision(demand, pool):
    """The precision the demand runs at on the pool, or None."""
    if demand.precision in pool.tflops_by_precision:
        return demand.precision
    if demand.strict_precision:
        return None
    for fallback in PRECISION_FALLBACKS[demand.precision]:
        if fallback in pool.tflops_by_precision:
            return fallback
    return None


def options(instance: Instance) -> list[RefOption]:
    """Every eligible option, in the order of the demands, then of the pools."""
    table = routes(instance)
    q = instance.gpu_hour_quantum
    w = instance.weights
    offers = {(o.demand, o.pool): o for o in instance.offers}
    out = []
    for d in instance.demands:
        for region in instance.regions:
            for p in region.pools:
                offer = offers.get((d.id, p.id))
                if d.work_pflop is None and offer is None:
                    continue
                if p.gpu_count < d.gang_size:
                    continue
                if d.accelerators is not None and p.accelerator not in d.accelerators:
                    continue
                if p.memory_gb_per_gpu < d.min_memory_gb_per_gpu:
                    continue
                precision = run_precision(d, p)
                if precision is None:
                    continue
                if d.jurisdictions is not None and region.jurisdiction not in d.jurisdictions:
                    continue
                if (d.origin, region.id) not in table:
                    continue
                latency, transfer = table[(d.origin, region.id)]
                if d.max_latency_ms is not None and latency > d.max_latency_ms:
                    continue
                if offer is not None:
                    raw = offer.gpu_hours
                else:
                    raw = d.work_pflop * 1000 / (p.tflops_by_precision[precision] * 3600)
                units = max(1, math.ceil(raw / q - QUANTUM_SLACK))
                usage = units * q
                if d.deadline_hours is not None and usage / d.gang_size > d.deadline_hours:
                    continue
                compute_raw = offer.price_cny if offer is not None else usage * p.price_cny_per_gpu_hour
                energy_kwh = usage * p.power_kw_per_gpu * region.pue
                energy_raw = 0.0 if offer is not None else energy_kwh * region.electricity_price_cny_per_kwh
                co2_kg = energy_kwh * region.carbon_g_co2_per_kwh / 1000
                transfer_raw = d.data_gb * transfer
                if d.max_cost_cny is not None and compute_raw + energy_raw + transfer_raw > d.max_cost_cny:
                    continue
                cost = (w.compute * compute_raw + w.energy * energy_raw + w.transfer * transfer_raw
                        + co2_kg / 1000 * w.carbon_price_cny_per_t_co2)
                out.append(RefOption(d.id, p.id, units, cost))
    return out


def capacity(instance: Instance) -> dict[str, int]:
    """Pool capacity in quanta."""
    q = instance.gpu_hour_quantum
    return {p.id: math.floor(p.gpu_count * instance.window_hours / q + QUANTUM_SLACK)
            for _, p in instance.pools()}


def penalty(instance: Instance, demand) -> float:
    return instance.weights.unserved * demand.priority * demand.unserved_penalty_cny


def optimum(instance: Instance) -> float | None:
    """The optimal objective by enumerating every plan (None: the must-serve demands cannot all be
    served). Exponential: for a handful of demands only."""
    by_demand: dict[str, list[RefOption]] = {d.id: [] for d in instance.demands}
    for option in options(instance):
        by_demand[option.demand].append(option)
    alternatives = []
    for d in instance.demands:
        mine: list[RefOption | None] = list(by_demand[d.id])
        if not d.must_serve:
            mine.append(None)
        alternatives.append(mine)
    cap = capacity(instance)
    pen = [penalty(instance, d) for d in instance.demands]
    best = None
    for combo in itertools.product(*alternatives):
        load = dict.fromkeys(cap, 0)
        for option in combo:
            if option is not None:
                load[option.pool] += option.units
        if any(load[p] > cap[p] for p in cap):
            continue
        total = math.fsum(pen[i] if option is None else option.cost
                          for i, option in enumerate(combo))
        if best is None or total < best:
            best = total
    return best


def plan_objective(instance: Instance, plan) -> float:
    """A plan's objective from the reference's options; raises if the plan breaks a hard rule."""
    table = {(o.demand, o.pool): o for o in options(instance)}
    cap = capacity(instance)
    load = dict.fromkeys(cap, 0)
    demands = {d.id: d for d in instance.demands}
    listed = [a.demand for a in plan.assignments] + [u.demand for u in plan.unserved]
    if sorted(listed) != sorted(demands):
        raise ValueError("the plan does not list every demand exactly once")
    total = []
    for a in plan.assignments:
        option = table.get((a.demand, a.pool))
        if option is None:
            raise ValueError(f"{a.demand} on {a.pool} is not eligible")
        load[a.pool] += option.units
        total.append(option.cost)
    for u in plan.unserved:
        if demands[u.demand].must_serve:
            raise ValueError(f"must-serve {u.demand} is unserved")
        total.append(penalty(instance, demands[u.demand]))
    if any(load[p] > cap[p] for p in cap):
        raise ValueError("a pool is over capacity")
    return math.fsum(total)


def lp_value(instance: Instance) -> float:
    """The LP relaxation's optimum over the reference's options (GLOP, the LP solver of OR-Tools,
    not eastwest's): the Lagrangian capacity dual can never exceed it."""
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    demand_rows = {d.id: [] for d in instance.demands}
    pool_rows: dict[str, list] = {p.id: [] for _, p in instance.pools()}
    objective = []
    for k, option in enumerate(options(instance)):
        x = solver.NumVar(0.0, 1.0, f"x{k}")
        demand_rows[option.demand].append(x)
        pool_rows[option.pool].append((option.units, x))
        objective.append((option.cost, x))
    for d in instance.demands:
        alternatives = demand_rows[d.id]
        if not d.must_serve:
            y = solver.NumVar(0.0, 1.0, f"y{d.id}")
            alternatives = [*alternatives, y]
            objective.append((penalty(instance, d), y))
        solver.Add(solver.Sum(alternatives) == 1)
    cap = capacity(instance)
    for pool, row in pool_rows.items():
        if row:
            solver.Add(solver.Sum([u * x for u, x in row]) <= cap[pool])
    solver.Minimize(solver.Sum([c * x for c, x in objective]))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        raise RuntimeError("the LP relaxation did not solve to optimality")
    return solver.Objective().Value()
