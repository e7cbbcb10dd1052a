"""Why a demand is served where it is, or why not: the binding rule with its amounts.

The eligibility verdicts come from `compile.Compiler.column` (rules 1-9, and all of them in one
window) and, on a horizon, the window and price-cap checks of `timed` (the options the compiled
problem keeps); the plan's unserved reason is the one `decode` / `timed_decode` recorded.
"""

from __future__ import annotations

import math

import numpy as np

from models import QUANTUM_SLACK, RULES, DemandKind, Reason, Status
from scheduler.compile import ELIGIBLE, Compiler
from scheduler.explain.context import Context
from scheduler.explain.model import DemandExplanation, Option, Rejection

MAX_OPTIONS = 10
"""Options listed per demand, cheapest with prices first."""


def explain_demand(ctx: Context, demand_id: str) -> DemandExplanation:
    i = ctx.demand(demand_id)
    d = ctx.instance.demands[i]
    rejected = tuple(rejections(ctx, i))
    if d.kind == DemandKind.SERVICE:
        return _service(ctx, i, rejected)
    options = _options(ctx, i)
    a = ctx.assignment.get(d.id)
    penalty = float(ctx.unserved[d.id].penalty_cny) if d.id in ctx.unserved else _penalty(ctx, i)
    ranked = sorted(options, key=lambda o: (o.priced_cny, o.cost_cny))
    common = dict(demand=d.id, penalty_cny=penalty, options=tuple(ranked[:MAX_OPTIONS]),
                  rejected=rejected, prices_saved=ctx.prices_saved)
    if a is None:
        reason = ctx.unserved[d.id].reason if d.id in ctx.unserved else None
        held = None
        if reason == Reason.QUOTA:
            from scheduler.explain.quota import holding_quota

            held = holding_quota(ctx, i)
        if held is not None:
            return DemandExplanation(served=False, reason=reason, answer=held[1], quota=held[0], **common)
        answer = _unserved_answer(ctx, i, reason, options, rejected, penalty)
        return DemandExplanation(served=False, reason=reason, answer=answer, **common)
    chosen = next((o for o in options if o.pool == a.pool and o.start_slot == a.start_slot), None)
    if chosen is None:  # on a horizon the listed option is the best start by prices: add the plan's
        chosen = _option_at(ctx, i, a.pool, a.start_slot)
        options.append(chosen)
        ranked = sorted(options, key=lambda o: (o.priced_cny, o.cost_cny))
        common["options"] = tuple(ranked[:MAX_OPTIONS])
    others = [o for o in options if o.pool != chosen.pool]
    by_cost = sorted(others, key=lambda o: o.cost_cny)
    next_best = by_cost[0] if by_cost else None
    if next_best is not None and (d.must_serve or next_best.cost_cny < penalty):
        extra = next_best.cost_cny - chosen.cost_cny
    else:
        next_best, extra = None, (None if d.must_serve else penalty - chosen.cost_cny)
    answer = _served_answer(ctx, i, chosen, others, next_best, extra, penalty)
    if ctx.instance.policy is not None and not d.must_serve and chosen.cost_cny > penalty + 1e-9:
        from scheduler.explain.quota import holding_in

        answer = answer[:-1] + "; " + holding_in(ctx, i, chosen.pool) + "."
    return DemandExplanation(served=True, reason=None, answer=answer, chosen=chosen, next_best=next_best,
                             extra_cny=extra, **common)


def _penalty(ctx: Context, i: int) -> float:
    d = ctx.instance.demands[i]
    return float(ctx.instance.weights.unserved * d.priority * d.unserved_penalty_cny)


# -- eligible options at their true and priced costs ---------------------------------------------


def _options(ctx: Context, i: int) -> list[Option]:
    if not ctx.timed:
        o = ctx.options
        ks = np.arange(o.start[i], o.start[i + 1])
        return [_window_option(ctx, i, int(k)) for k in ks]
    b = ctx.problem.batch
    bi = ctx.batch_position[i]
    ks = np.arange(b.start[bi], b.start[bi + 1], dtype=np.int64)
    if not len(ks):
        return []
    m = ctx.mult
    _, starts = ctx.problem.best_starts(m.pool, m.link, m.carbon * 1000.0, options=ks)
    return [_timed_option(ctx, i, int(k), int(s)) for k, s in zip(ks, starts, strict=True) if s >= 0]


def _window_option(ctx: Context, i: int, k: int) -> Option:
    o = ctx.options
    p = int(o.pool[k])
    region, pool = ctx.pairs[p]
    hours = float(o.units[k]) * o.quantum
    capacity = float(ctx.lam[p] * o.units[k])
    usage = ctx.usage.get(pool.id)
    free = (usage.capacity_gpu_hours - usage.used_gpu_hours) if usage else 0.0
    a = ctx.assignment.get(ctx.instance.demands[i].id)
    if a is not None and a.pool == pool.id:
        free += a.gpu_hours
    cost = float(o.cost[k])
    return Option(region=region.id, pool=pool.id, gpu_hours=hours, cost_cny=cost, capacity_cny=capacity,
                  priced_cny=cost + capacity, fits=bool(free + 1e-9 >= hours))


def _timed_option(ctx: Context, i: int, k: int, s: int) -> Option:
    pb, m = ctx.problem, ctx.mult
    b = pb.batch
    bi = ctx.batch_position[i]
    p = int(b.pool[k])
    n = int(b.slots[k])
    gang = int(b.gang[bi])
    region, pool = ctx.pairs[p]
    ks, ss = np.array([k]), np.array([s])
    cost, co2, rate, _ = pb.evaluate(ks, ss)
    capacity = float(gang * m.pool[p, s:s + n].sum())
    carbon = float(m.carbon * 1000.0 * co2[0])
    bandwidth = 0.0
    if b.route[k] >= 0 and rate[0] > 0:
        links = pb.routes[int(b.route[k])]
        rel = int(b.release[bi])
        bandwidth = float(rate[0] * m.link[links, rel:s].sum())
    # Whether it fits in what the plan leaves free (its own use given back when it is the plan's).
    load = ctx.load
    own = ctx.choice.option[bi] == k and ctx.choice.start_slot[bi] == s
    fits = True if own else bool(load.fits(k, s, int(rate[0]), float(co2[0])))
    hours = float(b.units[k]) * ctx.instance.gpu_hour_quantum
    total = float(cost[0]) + capacity + bandwidth + carbon
    return Option(region=region.id, pool=pool.id, start_slot=s, gpu_hours=hours, cost_cny=float(cost[0]),
                  capacity_cny=capacity, bandwidth_cny=bandwidth, carbon_cny=carbon, priced_cny=total,
                  fits=fits)


def _option_at(ctx: Context, i: int, pool_id: str, start: int | None) -> Option:
    k = ctx.option_of(i, pool_id)
    if k is None:
        raise ValueError(f"demand '{ctx.instance.demands[i].id}': the plan's pool '{pool_id}' is not an "
                         "eligible option (the plan does not belong to the instance)")
    if not ctx.timed:
        return _window_option(ctx, i, k)
    return _timed_option(ctx, i, k, int(start))


# -- the rules ---------------------------------------------------------------------------------


def rejections(ctx: Context, i: int) -> list[Rejection]:
    """Every pool the demand may not use, with the first rule it fails and the amounts."""
    from scheduler.timed import BATCH_RULES, SERVICE_RULES

    inst = ctx.instance
    d = inst.demands[i]
    compiler = Compiler(inst, [i])
    service = d.kind == DemandKind.SERVICE
    rules = (SERVICE_RULES if service else BATCH_RULES) if ctx.timed else RULES
    out = []
    for p, (region, pool) in enumerate(ctx.pairs):
        col = compiler.column(p, rules=rules)
        rule = int(col.rule[0])
        if rule != ELIGIBLE:
            out.append(_rule_rejection(ctx, d, RULES[rule], region, pool, col, compiler, p))
        elif ctx.timed and not service and ctx.option_of(i, pool.id) is None:
            out.append(_time_rejection(ctx, d, region, pool, col, p))
    return out


def _rule_rejection(ctx, d, reason: Reason, region, pool, col, compiler, p) -> Rejection:
    q = ctx.instance.gpu_hour_quantum
    value = limit = None
    if reason == Reason.NO_OFFER:
        detail = "no work figure (work_pflop) and no offer on this pool"
    elif reason == Reason.GANG:
        value, limit = pool.gpu_count, d.gang_size
        detail = f"the pool has {pool.gpu_count} GPU{'s' if pool.gpu_count > 1 else ''}, fewer than the gang of {d.gang_size}"
    elif reason == Reason.ACCELERATOR:
        detail = f"{pool.accelerator} is not in its list ({', '.join(d.accelerators or ())})"
    elif reason == Reason.MEMORY:
        value, limit = pool.memory_gb_per_gpu, d.min_memory_gb_per_gpu
        detail = f"{value:g} GB per GPU, below its {limit:g} GB"
    elif reason == Reason.PRECISION:
        has = ", ".join(sorted(x.value for x in pool.tflops_by_precision))
        detail = (f"{d.precision.value} is strict and the pool has {has}" if d.strict_precision
                  else f"neither {d.precision.value} nor a fallback of it on the pool ({has})")
    elif reason == Reason.JURISDICTION:
        detail = f"{region.id} is in {region.jurisdiction}, not in {', '.join(d.jurisdictions or ())}"
    elif reason == Reason.UNREACHABLE:
        detail = f"no network path from {d.origin} to {region.id}"
    elif reason == Reason.LATENCY:
        value, limit = float(col.latency_ms[0]), d.max_latency_ms
        detail = f"{value:g} ms from {d.origin}, above its {limit:g} ms"
    elif reason == Reason.DEADLINE:
        value, limit = float(col.quanta[0]) * q / d.gang_size, d.deadline_hours
        detail = f"the run takes {value:,.2f} h, longer than its {limit:g} h"
    else:  # PRICE_CAP (one window)
        value, limit = _window_price(col, compiler, p), d.max_cost_cny
        detail = f"the option's price is {value:,.2f} CNY, above its cap of {limit:,.2f}"
    return Rejection(region=region.id, pool=pool.id, rule=reason, detail=detail, value=value, limit=limit)


def _window_price(col, compiler, p) -> float:
    energy = 0.0 if col.offered[0] else float(col.energy_kwh[0] * compiler.pools.electricity[p])
    return float(col.compute_raw[0] + col.transfer_raw[0]) + energy


def _time_rejection(ctx, d, region, pool, col, p) -> Rejection:
    """A horizon pool that passes rules 1-9: the window holds no run (window) or no start is
    within the price cap (price_cap); the figures as `timed._compile_batch` computes them."""
    h = ctx.instance.horizon
    pb = ctx.problem
    hours, S = h.slot_hours, h.slots
    release = d.release_slot or 0
    deadline = S if d.deadline_slot is None else d.deadline_slot
    runtime = float(col.quanta[0]) * ctx.instance.gpu_hour_quantum / d.gang_size
    n = max(1, math.ceil(runtime / hours - QUANTUM_SLACK))
    moves = d.data_gb > 0 and d.origin != region.id
    first, last = release + int(moves), deadline - n
    if first > last:
        need = n + int(moves)
        return Rejection(region=region.id, pool=pool.id, rule=Reason.WINDOW, value=need,
                         limit=deadline - release,
                         detail=f"needs {need} slots ({n} to run" + (", 1 to move its data" if moves else "")
                         + f"), its window holds {deadline - release}")
    per_slot_kwh = d.gang_size * pool.power_kw_per_gpu * region.pue
    kwh_full, kwh_last = per_slot_kwh * hours, per_slot_kwh * (runtime - (n - 1) * hours)
    raw = pb.raw_price[p]
    cum = np.concatenate([[0.0], np.cumsum(raw)])
    starts = np.arange(first, last + 1)
    energy = kwh_full * (cum[starts + n - 1] - cum[starts]) + kwh_last * raw[starts + n - 1]
    fixed = float(col.compute_raw[0] + col.transfer_raw[0])
    cheapest = fixed + (0.0 if col.offered[0] else float(energy.min()))
    return Rejection(region=region.id, pool=pool.id, rule=Reason.PRICE_CAP, value=cheapest,
                     limit=d.max_cost_cny,
                     detail=f"its cheapest start costs {cheapest:,.2f} CNY, above its cap of {d.max_cost_cny:,.2f}")


def _binding(ctx: Context, i: int, rejected: tuple[Rejection, ...]) -> Reason | None:
    """The rule the demand's nearest miss fails (None when some pool is eligible)."""
    if ctx.timed:
        pb = ctx.problem
        d = ctx.instance.demands[i]
        if d.kind == DemandKind.SERVICE:
            rows, pos = pb.services, ctx.service_position[i]
            has = rows.start[pos + 1] > rows.start[pos]
        else:
            rows, pos = pb.batch, ctx.batch_position[i]
            has = rows.start[pos + 1] > rows.start[pos]
        miss = int(rows.nearest_miss[pos])
    else:
        o = ctx.options
        has, miss = o.start[i + 1] > o.start[i], int(o.nearest_miss[i])
    if has or miss == ELIGIBLE:
        return None
    return RULES[miss]


def rule_answer(ctx: Context, i: int, reason: Reason, rejected: tuple[Rejection, ...]) -> str:
    """The sentence for an eligibility rule that rules out every pool, with the closest amount."""
    d = ctx.instance.demands[i]
    hit = [r for r in rejected if r.rule == reason]
    if not hit:
        return f"every pool fails rule '{reason.value}'"
    earlier = "every pool that passes the rules before it"

    def best(key, reverse=False):
        r = sorted(hit, key=lambda r: key(r.value), reverse=reverse)[0]
        return r, f"{r.pool} in {r.region}"

    if reason == Reason.NO_OFFER:
        return "it has no work figure (work_pflop) and no offer on any pool: nothing says how long it runs"
    if reason == Reason.GANG:
        r, where = best(lambda v: -v)
        return (f"its gang of {d.gang_size} GPUs fits none of the pools that pass the rules before it: "
                f"the largest, {where}, has {r.value:g} GPUs")
    if reason == Reason.ACCELERATOR:
        have = sorted({ctx.pairs[ctx.pool_index[r.pool]][1].accelerator for r in hit})
        return (f"it allows only {', '.join(d.accelerators or ())}; {earlier} has "
                f"{', '.join(have)}")
    if reason == Reason.MEMORY:
        r, where = best(lambda v: -v)
        return (f"it needs {d.min_memory_gb_per_gpu:g} GB per GPU; the most on {earlier} is "
                f"{r.value:g} GB ({where})")
    if reason == Reason.PRECISION:
        kind = "strictly" if d.strict_precision else "or a fallback of it"
        return f"it needs {d.precision.value} {kind}; none of the {len(hit)} pools that pass the rules before it has that"
    if reason == Reason.JURISDICTION:
        places = sorted({ctx.pairs[ctx.pool_index[r.pool]][0].jurisdiction for r in hit})
        return (f"its data must stay in {', '.join(d.jurisdictions or ())}; {earlier} lies in "
                f"{', '.join(places)}")
    if reason == Reason.UNREACHABLE:
        regions = sorted({r.region for r in hit})
        return f"no network path joins its origin {d.origin} to {', '.join(regions)}, where the pools that pass the rules before it are"
    if reason == Reason.LATENCY:
        r, where = best(lambda v: v)
        return (f"no pool within {d.max_latency_ms:g} ms of {d.origin} passes the rules before it: the "
                f"nearest that does, {where}, is {r.value:g} ms away")
    if reason == Reason.DEADLINE:
        r, where = best(lambda v: v)
        return f"it must finish within {d.deadline_hours:g} h; its fastest run, on {where}, takes {r.value:,.2f} h"
    if reason == Reason.WINDOW:
        r, where = best(lambda v: v)
        return (f"its window from slot {d.release_slot or 0} to its deadline holds {r.limit:g} slots; its "
                f"shortest run, on {where}, needs {r.value:g} (with one slot to move its data when remote)")
    r, where = best(lambda v: v)
    return (f"its price cap is {d.max_cost_cny:,.2f} CNY; its cheapest option, on {where}, costs "
            f"{r.value:,.2f} CNY, {r.value - d.max_cost_cny:,.2f} more")


# -- answers -------------------------------------------------------------------------------------


def _unit(ctx: Context) -> str:
    return "GPU-hour" + (" (in the slots it would run)" if ctx.timed else "")


def _price_of(ctx: Context, o: Option) -> float:
    """The shadow price per GPU-hour the option meets (on a horizon: the mean over its run)."""
    return o.capacity_cny / o.gpu_hours if o.gpu_hours > 0 else 0.0


def _unserved_answer(ctx: Context, i: int, reason: Reason | None, options: list[Option],
                     rejected: tuple[Rejection, ...], penalty: float) -> str:
    d = ctx.instance.demands[i]
    binding = _binding(ctx, i, rejected)
    if binding is not None:
        return "unserved: " + rule_answer(ctx, i, binding, rejected) + "."
    if reason == Reason.NOT_SOLVED or ctx.plan.status in (Status.INFEASIBLE, Status.UNKNOWN):
        return f"unserved: no plan was found (status {ctx.plan.status.value}), so no demand is served."
    cheapest = min(options, key=lambda o: o.cost_cny)
    if reason == Reason.UNECONOMIC or cheapest.cost_cny >= penalty:
        return (f"unserved: every option costs more than its penalty of {penalty:,.2f} CNY: the cheapest, "
                f"{cheapest.pool} in {cheapest.region}{_at(cheapest)}, costs {cheapest.cost_cny:,.2f} CNY, "
                f"{cheapest.cost_cny - penalty:,.2f} more.")
    paying = sorted((o for o in options if o.cost_cny < penalty), key=lambda o: o.priced_cny)
    best = paying[0]
    priced = (f"the shadow price of its capacity, {_price_of(ctx, best):,.4g} CNY per {_unit(ctx)}, adds "
              f"{best.capacity_cny:,.2f} CNY")
    extra = []
    if best.bandwidth_cny > 0:
        extra.append(f"the links' prices add {best.bandwidth_cny:,.2f}")
    if best.carbon_cny > 0:
        extra.append(f"the carbon cap's price adds {best.carbon_cny:,.2f}")
    verdict = (f"so with capacity priced it costs {best.priced_cny:,.2f} CNY against its penalty of {penalty:,.2f}"
               + (" (the prices say it is not worth the room it takes)" if best.priced_cny >= penalty - 1e-9
                  else " (the prices would serve it: the integer plan has no room for it whole, within the gap)"))
    where = f"{best.pool} in {best.region}{_at(best)}"
    if reason == Reason.BANDWIDTH:
        head = (f"unserved: the data ({d.data_gb:,.1f} GB) cannot cross the links in time: the eligible "
                f"pools that would pay off are remote and their routes are full before each start "
                f"that has GPUs free. Best with prices: {where}, cost {best.cost_cny:,.2f} CNY")
    elif reason == Reason.CARBON_CAP:
        cap = ctx.instance.carbon_cap_t_co2
        head = (f"unserved: serving it would pass the carbon cap of {cap:,.3f} t CO2 (the plan emits "
                f"{ctx.plan.costs.co2_t:,.3f} t); the cap's shadow price is "
                f"{(ctx.prices.carbon_cny_per_t_co2 if ctx.prices else 0.0) or 0.0:,.2f} CNY per t. "
                f"Best with prices: {where}, cost {best.cost_cny:,.2f} CNY")
    else:
        full = sum(1 for o in paying if not o.fits)
        fit = len(paying) - full
        count = (f"none of the {len(paying)} options cheaper than its penalty fits" if not fit else
                 f"{fit} of the {len(paying)} options cheaper than its penalty would fit alone")
        head = (f"unserved: eligible pools are full in the hours it could run ({count} in what the plan "
                f"leaves free). Best with prices: {where}, cost {best.cost_cny:,.2f} CNY")
    return head + "; " + "; ".join([priced, *extra]) + "; " + verdict + "."


def _at(o: Option) -> str:
    return "" if o.start_slot is None else f" from slot {o.start_slot}"


def _served_answer(ctx: Context, i: int, chosen: Option, others: list[Option], next_best: Option | None,
                   extra: float | None, penalty: float) -> str:
    parts = [f"served on {chosen.pool} in {chosen.region}{_at(chosen)} for {chosen.cost_cny:,.2f} CNY"
             f" ({chosen.gpu_hours:,.2f} GPU-h; with its capacity priced {chosen.priced_cny:,.2f})"]
    cheaper = sorted((o for o in others if o.cost_cny < chosen.cost_cny - 1e-9), key=lambda o: o.cost_cny)
    if not cheaper:
        parts.append("it is the cheapest eligible pool")
    else:
        c = cheaper[0]
        why = "does not fit in what the plan leaves free" if c.fits is False else (
            f"costs {c.priced_cny:,.2f} with its capacity priced" if c.priced_cny >= chosen.priced_cny - 1e-9
            else "has room, but the integer plan is within its gap, not proven optimal")
        parts.append(f"{c.pool} would be {chosen.cost_cny - c.cost_cny:,.2f} CNY cheaper but {why}")
    if ctx.timed and chosen.start_slot is not None:
        parts.append(_start_answer(ctx, i, chosen))
    if next_best is not None:
        parts.append(f"next best: {next_best.pool} in {next_best.region}{_at(next_best)} at "
                     f"{next_best.cost_cny:,.2f} CNY ({extra:+,.2f}; with capacity priced "
                     f"{next_best.priced_cny - chosen.priced_cny:+,.2f})")
    elif extra is not None:
        parts.append(f"next best: leaving it unserved, penalty {penalty:,.2f} CNY ({extra:+,.2f})")
    return "; ".join(parts) + "."


def _start_answer(ctx: Context, i: int, chosen: Option) -> str:
    """Why this start: the cheapest start on the same pool, and what holds it back."""
    pb = ctx.problem
    k = ctx.option_of(i, chosen.pool)
    starts, cost, co2, rate = pb.start_costs(k)
    j = int(np.argmin(cost))
    s, c = int(starts[j]), float(cost[j])
    if s == chosen.start_slot or c >= chosen.cost_cny - 1e-9:
        return f"slot {chosen.start_slot} is its cheapest start on this pool"
    alt = _timed_option(ctx, i, k, s)
    why = "the pool's GPUs are taken in those slots" if not alt.fits else (
        f"with capacity priced it costs {alt.priced_cny:,.2f}")
    return f"starting at slot {s} would save {chosen.cost_cny - c:,.2f} CNY (energy) but {why}"


def _service(ctx: Context, i: int, rejected: tuple[Rejection, ...]) -> DemandExplanation:
    """A service: its placements, its unserved load, and the price per load quantum it meets."""
    d = ctx.instance.demands[i]
    sp = next((s for s in ctx.plan.services if s.demand == d.id), None)
    served = sp is not None and any(sum(p.replicas) for p in sp.placements)
    binding = _binding(ctx, i, rejected)
    if binding is not None:
        answer = "unserved: " + rule_answer(ctx, i, binding, rejected) + "."
    else:
        pb, m = ctx.problem, ctx.mult
        sv = pb.services
        j0 = ctx.service_position[i]
        js = np.arange(sv.start[j0], sv.start[j0 + 1])
        unserved = np.asarray(sp.unserved_pflop_per_hour) if sp else np.zeros(pb.slots)
        per_q = float(sv.penalty_per_quantum[j0])
        q = ctx.instance.load_quantum_pflop_per_hour * pb.slot_hours
        placed = ", ".join(f"{p.pool} ({sum(p.replicas)} replica-slots)" for p in (sp.placements if sp else ()))
        answer = f"served on {placed or 'no pool'}"
        short = np.flatnonzero(unserved > 0)
        if len(short) and len(js):
            gang = sv.gang[j0]
            unit = (sv.rent[js] + gang * m.pool[sv.pool[js]]) / np.maximum(sv.kappa[js], 1)[:, None]
            unit += sv.transfer_per_quantum[js][:, None]
            best = unit[:, short].min(axis=0)
            answer += (f"; {float(unserved.sum() * pb.slot_hours):,.2f} PFLOP of its load is unserved in "
                       f"{len(short)} slots: there its cheapest pool, with capacity priced, costs "
                       f"{float(best.mean()) / q:,.4g} CNY per PFLOP against its penalty of {per_q / q:,.4g}")
        elif not len(short):
            answer += "; all of its load is served"
        answer += "."
    penalty = float(sp.penalty_cny) if sp else 0.0
    return DemandExplanation(demand=d.id, served=served, reason=binding, answer=answer, penalty_cny=penalty,
                             rejected=rejected, prices_saved=ctx.prices_saved)
