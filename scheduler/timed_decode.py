"""A timed engine's choice -> a `Plan` (schema version 2) with every figure of formulation §8.

Batch jobs become assignments with their start, end and route; services become `ServicePlan`s
with one placement per pool used; pools report the GPUs held and available in each slot, links
their load, and the cost breakdown splits the energy by tariff period. Energy and carbon are
summed slot by slot over each run (not through prefix sums), as the verifier recomputes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models import (
    BANDWIDTH_QUANTUM_GBPS,
    PERIOD_NAMES,
    RULES,
    TARIFF_PERIODS,
    TIMED_SCHEMA_VERSION,
    Assignment,
    CostBreakdown,
    Instance,
    LinkLoad,
    Plan,
    PoolUsage,
    Reason,
    ServicePlacement,
    ServicePlan,
    SolveStats,
    Status,
    Unserved,
    relative_gap,
)
from scheduler.compile import ELIGIBLE, PRECISIONS
from scheduler.timed import TimedChoice, TimedLoad, TimedProblem, _profile


def batch_figures(problem: TimedProblem, ks: np.ndarray, ss: np.ndarray) -> dict[str, np.ndarray]:
    """Per chosen (option, start): weighted energy cost, kg CO2, weighted carbon cost, total
    cost, and the kWh and weighted energy cost drawn in each slot ([n, S])."""
    b = problem.batch
    ks = np.asarray(ks, dtype=np.int64)
    ss = np.asarray(ss, dtype=np.int64)
    S = problem.slots
    p = b.pool[ks].astype(np.int64)
    n = b.slots[ks].astype(np.int64)
    kwh_slot = np.zeros((len(ks), S))
    rows = np.arange(len(ks))
    for j in range(int(n.max()) if len(ks) else 0):
        active = j < n
        drawn = np.where(j < n - 1, b.kwh_full[ks], b.kwh_last[ks])
        kwh_slot[rows[active], ss[active] + j] = drawn[active]
    raw = (kwh_slot * problem.raw_price[p]).sum(axis=1)
    energy_slot = np.where(b.priced_energy[ks][:, None],
                           problem.energy_weight * kwh_slot * problem.raw_price[p], 0.0)
    energy = np.where(b.priced_energy[ks], problem.energy_weight * raw, 0.0)
    co2 = (kwh_slot * problem.carbon[p]).sum(axis=1) / 1000.0
    carbon = co2 / 1000.0 * problem.carbon_price_per_t
    cost = b.compute[ks] + energy + b.transfer[ks] + carbon
    return {"energy": energy, "co2": co2, "carbon": carbon, "cost": cost,
            "kwh_slot": kwh_slot, "energy_slot": energy_slot}


def service_figures(problem: TimedProblem, choice: TimedChoice) -> dict[str, np.ndarray]:
    """Per service option: compute, energy, transfer and carbon cost, kWh, kg CO2 and GPU-hours
    of its replicas over the horizon; and per service the unserved quanta per slot."""
    sv = problem.services
    m = choice.replicas.astype(np.float64)
    gang = sv.gang[sv.service].astype(np.float64) if sv.n_options else np.zeros(0)
    p = sv.pool.astype(np.int64)
    kwh_slot = m * sv.kwh[:, None]
    energy_slot = problem.energy_weight * kwh_slot * problem.raw_price[p]
    co2 = (m * sv.co2_kg).sum(axis=1)
    served_total = np.zeros(sv.load.shape, dtype=np.int64)
    if sv.n_options:
        np.add.at(served_total, sv.service, choice.served)
    return {
        "compute": m.sum(axis=1) * sv.compute,
        "energy": energy_slot.sum(axis=1),
        "transfer": choice.served.sum(axis=1) * sv.transfer_per_quantum,
        "co2": co2,
        "carbon": co2 / 1000.0 * problem.carbon_price_per_t,
        "kwh": kwh_slot.sum(axis=1),
        "gpu_hours": m.sum(axis=1) * gang * problem.slot_hours,
        "kwh_slot": kwh_slot,
        "energy_slot": energy_slot,
        "unserved": sv.load - served_total,
    }


def choice_objective(problem: TimedProblem, choice: TimedChoice) -> float:
    """The objective of a choice, as its plan will report it (§8.4)."""
    b, sv = problem.batch, problem.services
    served = choice.option >= 0
    batch = batch_figures(problem, choice.option[served], choice.start_slot[served])
    figures = service_figures(problem, choice)
    parts = batch["cost"].tolist() + b.penalty[~served].tolist()
    for key in ("compute", "energy", "transfer", "carbon"):
        parts.extend(figures[key].tolist())
    parts.extend((figures["unserved"].sum(axis=1) * sv.penalty_per_quantum).tolist())
    return math.fsum(parts)


def choice_load(problem: TimedProblem, choice: TimedChoice) -> TimedLoad:
    """`TimedLoad.of(problem, choice)`, the batch jobs added all at once (difference arrays
    over the slots) instead of one `add_batch` each: the same GPUs, link quanta and grams."""
    from scheduler.timed import grams

    load = TimedLoad(problem)
    b, S = problem.batch, problem.slots
    jobs = np.flatnonzero(choice.option >= 0)
    if len(jobs):
        k = choice.option[jobs].astype(np.int64)
        s = choice.start_slot[jobs].astype(np.int64)
        _, co2, rate, _ = problem.evaluate(k, s)
        n = b.slots[k].astype(np.int64)
        gang = b.gang[b.demand[k]].astype(np.int64)
        p = b.pool[k].astype(np.int64)
        diff = np.zeros((problem.n_pools, S + 1), dtype=np.int64)
        np.add.at(diff, (p, np.clip(s, 0, S)), gang)
        np.add.at(diff, (p, np.clip(s + n, 0, S)), -gang)
        load.gpus += np.cumsum(diff, axis=1)[:, :S].astype(load.gpus.dtype)
        rel = b.release[b.demand[k]].astype(np.int64)
        route = b.route[k].astype(np.int64)
        moving = np.flatnonzero((route >= 0) & (s > rel) & (rate != 0))
        if len(moving):
            lengths = np.array([len(problem.routes[r]) for r in route[moving].tolist()], dtype=np.int64)
            links = (np.concatenate([problem.routes[r] for r in route[moving].tolist()]).astype(np.int64)
                     if lengths.sum() else np.zeros(0, dtype=np.int64))
            job = np.repeat(moving, lengths)
            flow = np.zeros((problem.n_links, S + 1), dtype=np.int64)
            np.add.at(flow, (links, np.clip(rel[job], 0, S)), rate[job])
            np.add.at(flow, (links, np.clip(s[job], 0, S)), -rate[job])
            load.link += np.cumsum(flow, axis=1)[:, :S].astype(load.link.dtype)
        load.batch_grams = int(grams(co2).sum())
    for j in np.flatnonzero(choice.replicas.any(axis=1)).tolist():
        load.add_service(j, choice.replicas[j], choice.served[j])
    return load


def unserved_reason(problem: TimedProblem, load: TimedLoad | None, i: int) -> Reason:
    """Why batch demand ``i`` is unserved: its nearest miss if it has no option, `not_solved`
    without a plan (``load`` None), `uneconomic` if no allowed start costs less than its
    penalty; else what the plan left short for the starts that do: `carbon_cap` where GPUs and
    links would have held one, `bandwidth` where the GPUs would have, otherwise `capacity`."""
    b = problem.batch
    if b.nearest_miss[i] != ELIGIBLE:
        return RULES[int(b.nearest_miss[i])]
    if load is None:
        return Reason.NOT_SOLVED
    ks = np.arange(b.start[i], b.start[i + 1], dtype=np.int64)
    width = int((b.last[ks] - b.first[ks]).max()) + 1
    ss = b.first[ks].astype(np.int64)[:, None] + np.arange(width, dtype=np.int64)[None, :]
    kk = np.broadcast_to(ks[:, None], ss.shape)
    cost, co2, rate, allowed = problem.evaluate(kk, ss)
    cheaper = allowed & (cost < b.penalty[i])
    if not cheaper.any():
        return Reason.UNECONOMIC
    cap_ok, bw_ok, co2_ok = load.feasible(kk, ss, co2, rate)
    room = cheaper & cap_ok & bw_ok
    if room.any():
        blocked = problem.carbon_cap_g is not None and not (room & co2_ok).any()
        return Reason.CARBON_CAP if blocked else Reason.CAPACITY
    return Reason.BANDWIDTH if (cheaper & cap_ok).any() else Reason.CAPACITY


def unserved_reasons(problem: TimedProblem, load: TimedLoad | None, jobs: np.ndarray) -> dict[int, Reason]:
    """`unserved_reason` of each of ``jobs``, their starts priced many jobs at a time (at most
    `CHUNK_ELEMENTS` (option, start) pairs) against the load's free GPUs and bandwidth, read
    once: the same reasons."""
    from scheduler.timed import CHUNK_ELEMENTS

    b = problem.batch
    jobs = np.asarray(jobs, dtype=np.int64)
    out = {i: RULES[int(b.nearest_miss[i])] for i in jobs.tolist() if b.nearest_miss[i] != ELIGIBLE}
    open_jobs = np.array([i for i in jobs.tolist() if i not in out], dtype=np.int64)
    if load is None:
        return {**out, **{i: Reason.NOT_SOLVED for i in open_jobs.tolist()}}
    if not len(open_jobs):
        return out
    free, route_free = load.free_gpus(), load.all_route_free()
    spans = (b.last - b.first + 1).astype(np.int64)
    count = (b.start[open_jobs + 1] - b.start[open_jobs]).astype(np.int64)
    width = np.array([int(spans[b.start[i]:b.start[i + 1]].max()) for i in open_jobs.tolist()], dtype=np.int64)
    order = np.argsort(width, kind="stable")  # jobs of like width together: little padding
    open_jobs, count, width = open_jobs[order], count[order], width[order]
    lo = 0
    while lo < len(open_jobs):
        hi, size = lo, 0
        while hi < len(open_jobs) and (hi == lo or size + count[hi] * width[hi] <= CHUNK_ELEMENTS):
            size += count[hi] * width[hi]
            hi += 1
        chunk = open_jobs[lo:hi]
        ks = np.concatenate([np.arange(b.start[i], b.start[i + 1], dtype=np.int64) for i in chunk.tolist()])
        w = int(width[lo:hi].max())
        ss = b.first[ks].astype(np.int64)[:, None] + np.arange(w, dtype=np.int64)[None, :]
        kk = np.broadcast_to(ks[:, None], ss.shape)
        cost, co2, rate, allowed = problem.evaluate(kk, ss)
        cheaper = allowed & (cost < b.penalty[b.demand[ks]][:, None])
        cap_ok, bw_ok, co2_ok = load.feasible(kk, ss, co2, rate, free, route_free)
        room = cheaper & cap_ok & bw_ok
        heads = np.concatenate([[0], np.cumsum(count[lo:hi])[:-1]])  # each job's first row

        def per_job(rows: np.ndarray) -> list[bool]:
            return np.logical_or.reduceat(rows.any(axis=1), heads).tolist()

        capped = problem.carbon_cap_g is not None
        for i, some, roomy, green, fits in zip(chunk.tolist(), per_job(cheaper), per_job(room),
                                                per_job(room & co2_ok), per_job(cheaper & cap_ok), strict=True):
            if not some:
                out[i] = Reason.UNECONOMIC
            elif roomy:
                out[i] = Reason.CARBON_CAP if capped and not green else Reason.CAPACITY
            else:
                out[i] = Reason.BANDWIDTH if fits else Reason.CAPACITY
        lo = hi
    return out


def build_timed_plan(
    instance: Instance,
    problem: TimedProblem,
    choice: TimedChoice | None,
    *,
    status: Status,
    lower_bound: float | None,
    stats: SolveStats,
    reasons: Callable[[int], Reason] | None = None,
) -> Plan:
    """Itemize ``choice`` into a Plan; with ``choice`` None (status infeasible or unknown) every
    batch job is unserved and every service serves nothing. ``reasons``: batch job -> its
    unserved reason, when the caller reads them from another problem (`unserved_reason` on
    this one otherwise)."""
    b, sv = problem.batch, problem.services
    S, h = problem.slots, problem.slot_hours
    w = instance.weights
    q = instance.gpu_hour_quantum
    Q = instance.load_quantum_pflop_per_hour
    pairs = instance.pools()
    solved = choice is not None
    if choice is None:
        choice = TimedChoice(
            option=np.full(b.n_demands, -1, dtype=np.int64),
            start_slot=np.full(b.n_demands, -1, dtype=np.int32),
            replicas=np.zeros((sv.n_options, S), dtype=np.int64),
            served=np.zeros((sv.n_options, S), dtype=np.int64),
        )
    load = choice_load(problem, choice)
    kwh_ps = np.zeros((problem.n_pools, S))  # kWh drawn per (pool, slot)
    cny_ps = np.zeros((problem.n_pools, S))  # weighted energy cost per (pool, slot)

    # -- batch jobs --------------------------------------------------------------------------
    served = np.flatnonzero(choice.option >= 0)
    ks = choice.option[served].astype(np.int64)
    ss = choice.start_slot[served].astype(np.int64)
    fig = batch_figures(problem, ks, ss)
    np.add.at(kwh_ps, b.pool[ks].astype(np.int64), fig["kwh_slot"])
    np.add.at(cny_ps, b.pool[ks].astype(np.int64), fig["energy_slot"])
    used_gpu_hours = np.zeros(problem.n_pools)
    np.add.at(used_gpu_hours, b.pool[ks].astype(np.int64), b.units[ks] * q)
    assignments = []
    for row, (i, k, s) in enumerate(zip(served.tolist(), ks.tolist(), ss.tolist(), strict=True)):
        region, pool = pairs[int(b.pool[k])]
        terms = (float(b.compute[k]), float(fig["energy"][row]), float(b.transfer[k]),
                 float(fig["carbon"][row]))
        assignments.append(Assignment(
            demand=instance.demands[int(b.rows[i])].id,
            region=region.id,
            pool=pool.id,
            precision=PRECISIONS[int(b.precision[k])],
            gpu_hours=float(b.units[k]) * q,
            latency_ms=float(b.latency_ms[k]),
            energy_kwh=float(b.energy_kwh[k]),
            co2_kg=float(fig["co2"][row]),
            compute_cny=terms[0],
            energy_cny=terms[1],
            transfer_cny=terms[2],
            carbon_cny=terms[3],
            cost_cny=terms[0] + terms[1] + terms[2] + terms[3],
            start_slot=s,
            end_slot=s + int(b.slots[k]),
            route=problem.route_regions[int(b.route[k])] if b.route[k] >= 0 else None,
        ))
    unserved = []
    left_out = np.flatnonzero(choice.option < 0)
    found = unserved_reasons(problem, load if solved else None, left_out) if reasons is None else {}
    for i in left_out.tolist():
        d = instance.demands[int(b.rows[i])]
        why = reasons(i) if reasons is not None else found[i]
        unserved.append(Unserved(demand=d.id, reason=why,
                                 penalty_cny=float(b.penalty[i]), work_pflop=d.work_pflop))

    # -- services ----------------------------------------------------------------------------
    sfig = service_figures(problem, choice)
    if sv.n_options:
        np.add.at(kwh_ps, sv.pool.astype(np.int64), sfig["kwh_slot"])
        np.add.at(cny_ps, sv.pool.astype(np.int64), sfig["energy_slot"])
        np.add.at(used_gpu_hours, sv.pool.astype(np.int64), sfig["gpu_hours"])
    services = []
    service_costs: list[float] = []
    for d in range(sv.n_services):
        demand = instance.demands[int(sv.rows[d])]
        placements = []
        for j in range(int(sv.start[d]), int(sv.start[d + 1])):
            if not choice.replicas[j].any():
                continue
            region, pool = pairs[int(sv.pool[j])]
            terms = (float(sfig["compute"][j]), float(sfig["energy"][j]),
                     float(sfig["transfer"][j]), float(sfig["carbon"][j]))
            placements.append(ServicePlacement(
                region=region.id,
                pool=pool.id,
                precision=PRECISIONS[int(sv.precision[j])],
                latency_ms=float(sv.latency_ms[j]),
                route=problem.route_regions[int(sv.path[j])],
                replicas=tuple(int(m) for m in choice.replicas[j]),
                served_pflop_per_hour=tuple(float(u) * Q for u in choice.served[j]),
                gpu_hours=float(sfig["gpu_hours"][j]),
                energy_kwh=float(sfig["kwh"][j]),
                co2_kg=float(sfig["co2"][j]),
                compute_cny=terms[0],
                energy_cny=terms[1],
                transfer_cny=terms[2],
                carbon_cny=terms[3],
                cost_cny=terms[0] + terms[1] + terms[2] + terms[3],
            ))
        left = sfig["unserved"][d]
        unserved_pflop = float(left.sum()) * Q * h
        pi_load = w.unserved * demand.priority * (demand.unserved_penalty_cny_per_pflop or 0.0)
        penalty = pi_load * unserved_pflop
        services.append(ServicePlan(
            demand=demand.id,
            placements=tuple(placements),
            unserved_pflop_per_hour=tuple(float(x) * Q for x in left),
            unserved_pflop=unserved_pflop,
            penalty_cny=penalty,
        ))
        service_costs.extend(pl.cost_cny for pl in placements)
        service_costs.append(penalty)

    # -- pools and links ---------------------------------------------------------------------
    pools = []
    for p, (region, pool) in enumerate(pairs):
        capacity = float(problem.avail[p].sum()) * h
        pools.append(PoolUsage(
            region=region.id,
            pool=pool.id,
            accelerator=pool.accelerator,
            used_gpu_hours=float(used_gpu_hours[p]),
            capacity_gpu_hours=capacity,
            utilization=float(used_gpu_hours[p] / capacity) if capacity else 0.0,
            gpus_by_slot=tuple(int(g) for g in load.gpus[p]),
            available_by_slot=tuple(int(a) for a in problem.avail[p]),
        ))
    links = []
    for k, link in enumerate(instance.links):
        gbps = _profile(instance.horizon, link.bandwidth_by_slot_gbps, link.bandwidth_gbps)
        flow = load.link[k] * BANDWIDTH_QUANTUM_GBPS
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(gbps > 0, flow / np.where(gbps > 0, gbps, 1.0), 0.0)
        links.append(LinkLoad(
            source=link.source,
            target=link.target,
            load_gbps=tuple(float(x) for x in flow),
            bandwidth_gbps=tuple(float(x) for x in gbps),
            peak_utilization=float(share.max()) if S else 0.0,
        ))

    # -- totals ------------------------------------------------------------------------------
    placements_all = [pl for s_plan in services for pl in s_plan.placements]
    priced = assignments + placements_all
    by_kwh, by_cny = {}, {}
    for code, name in PERIOD_NAMES.items():
        mask = problem.period == TARIFF_PERIODS.index(code)
        kwh, cny = math.fsum(kwh_ps[mask].tolist()), math.fsum(cny_ps[mask].tolist())
        if kwh or cny:
            by_kwh[name], by_cny[name] = kwh, cny
    penalties = [u.penalty_cny for u in unserved] + [s_plan.penalty_cny for s_plan in services]
    costs = CostBreakdown(
        compute_cny=math.fsum(a.compute_cny for a in priced),
        energy_cny=math.fsum(a.energy_cny for a in priced),
        transfer_cny=math.fsum(a.transfer_cny for a in priced),
        carbon_cny=math.fsum(a.carbon_cny for a in priced),
        unserved_penalty_cny=math.fsum(penalties) if solved else 0.0,
        energy_kwh=math.fsum(a.energy_kwh for a in priced),
        co2_t=math.fsum(a.co2_kg for a in priced) / 1000.0,
        energy_by_period_kwh=by_kwh,
        energy_by_period_cny=by_cny,
    )
    objective = None
    if solved:
        objective = math.fsum([a.cost_cny for a in assignments] + [u.penalty_cny for u in unserved]
                              + service_costs)
    else:
        lower_bound = None
    return Plan(
        schema_version=TIMED_SCHEMA_VERSION,
        instance=instance.name,
        status=status,
        objective=objective,
        lower_bound=lower_bound,
        gap=relative_gap(objective, lower_bound),
        costs=costs,
        assignments=tuple(assignments),
        unserved=tuple(unserved),
        pools=tuple(pools),
        services=tuple(services),
        links=tuple(links),
        stats=stats,
    )
