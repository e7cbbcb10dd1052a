"""Pools, regions and links: use over time, what fills them, and what more of them is worth."""

from __future__ import annotations

from collections import Counter

import numpy as np

from models import BANDWIDTH_QUANTUM_GBPS
from scheduler.explain.context import Context, UnknownName
from scheduler.explain.model import LinkExplanation, Overview, PoolExplanation, RegionExplanation, Share

TOP = 5
"""Demands and sectors listed per pool."""


def explain_pool(ctx: Context, pool_id: str) -> PoolExplanation:
    p = ctx.pool(pool_id)
    region, pool = ctx.pairs[p]
    usage = ctx.usage.get(pool.id)
    used = usage.used_gpu_hours if usage else 0.0
    capacity = usage.capacity_gpu_hours if usage else pool.gpu_count * ctx.instance.window_hours
    sector = {d.id: d.sector.value for d in ctx.instance.demands}
    by_demand: Counter[str] = Counter()
    for a in ctx.plan.assignments:
        if a.pool == pool.id:
            by_demand[a.demand] += a.gpu_hours
    for s in ctx.plan.services:
        for place in s.placements:
            if place.pool == pool.id:
                by_demand[s.demand] += place.gpu_hours
    total = sum(by_demand.values()) or 1.0
    by_sector: Counter[str] = Counter()
    for name, hours in by_demand.items():
        by_sector[sector[name]] += hours
    price = _price(ctx, pool.id)
    fields = dict(region=region.id, pool=pool.id, accelerator=pool.accelerator, gpus=pool.gpu_count,
                  used_gpu_hours=used, capacity_gpu_hours=capacity,
                  utilization=used / capacity if capacity else 0.0,
                  top_demands=_shares(by_demand, total), top_sectors=_shares(by_sector, total),
                  price_cny_per_gpu_hour=price.cny_per_gpu_hour if price else 0.0,
                  prices_saved=ctx.prices_saved)
    if ctx.timed and usage is not None and usage.gpus_by_slot is not None:
        gpus = np.asarray(usage.gpus_by_slot, dtype=np.float64)
        avail = np.asarray(usage.available_by_slot or [pool.gpu_count] * len(gpus), dtype=np.float64)
        share = np.divide(gpus, avail, out=np.zeros_like(gpus), where=avail > 0)
        by_slot = np.asarray(price.by_slot_cny_per_gpu_hour if price and price.by_slot_cny_per_gpu_hour
                             else np.zeros(len(gpus)))
        fields.update(peak_utilization=float(share.max(initial=0.0)), full_slots=int((gpus >= avail).sum()),
                      utilization_by_slot=tuple(share.round(4).tolist()),
                      price_by_slot_cny_per_gpu_hour=tuple(by_slot.tolist()),
                      priced_slots=int((by_slot > 0).sum()))
    return PoolExplanation(answer=_pool_answer(ctx, fields), **fields)


def _shares(counter: Counter, total: float) -> tuple[Share, ...]:
    return tuple(Share(name=name, gpu_hours=hours, share=hours / total) for name, hours in counter.most_common(TOP))


def _price(ctx: Context, pool_id: str):
    if ctx.prices is None:
        return None
    return next((x for x in ctx.prices.pools if x.pool == pool_id), None)


def _pool_answer(ctx: Context, f: dict) -> str:
    head = (f"{f['pool']} ({f['gpus']:,} x {f['accelerator']} in {f['region']}) is {f['utilization']:.1%} used: "
            f"{f['used_gpu_hours']:,.1f} of {f['capacity_gpu_hours']:,.1f} GPU-h")
    if f.get("peak_utilization") is not None:
        head += f", {f['full_slots']} slots full, peak {f['peak_utilization']:.0%}"
    price = f["price_cny_per_gpu_hour"]
    if not ctx.timed:
        value = (f"Its shadow price is {price:,.4g} CNY per GPU-hour: one more GPU-hour would lower the "
                 "optimum by about that much (by at most that, plus the plan's gap)" if price > 0 else
                 "Its shadow price is 0: more capacity here would not lower the cost (the bound would not move)")
        return f"{head}. {value}."
    by_slot = np.asarray(f.get("price_by_slot_cny_per_gpu_hour") or ())
    if not by_slot.any():
        return (f"{head}. Its shadow price is 0 in every slot: more GPUs here would not lower the cost "
                "(the bound would not move).")
    t = int(np.argmax(by_slot))
    whole = float(by_slot.sum()) * ctx.instance.horizon.slot_hours
    return (f"{head}. Its shadow price is positive in {f['priced_slots']} of {len(by_slot)} slots, highest "
            f"{by_slot[t]:,.4g} CNY per GPU-hour in slot {t}; one more GPU over the whole horizon would "
            f"lower the optimum by about {whole:,.2f} CNY (at most that, plus the plan's gap).")


def explain_region(ctx: Context, region_id: str) -> RegionExplanation:
    region = next((r for r in ctx.instance.regions if r.id == region_id), None)
    if region is None:
        raise UnknownName(f"region '{region_id}': no such region in instance '{ctx.instance.name}' "
                          "(option --region)")
    pools = tuple(explain_pool(ctx, pool.id) for pool in region.pools)
    used = sum(x.used_gpu_hours for x in pools)
    capacity = sum(x.capacity_gpu_hours for x in pools)
    if not pools:
        answer = f"{region.id} has no accelerator pool: it only relays traffic."
    else:
        dearest = max(pools, key=lambda x: x.price_cny_per_gpu_hour)
        answer = (f"{region.id} ({region.name or region.jurisdiction}): {len(pools)} pool{'s' if len(pools) > 1 else ''}, "
                  f"{used / capacity if capacity else 0:.1%} used ({used:,.1f} of {capacity:,.1f} GPU-h); "
                  + (f"capacity is worth most on {dearest.pool}, {dearest.price_cny_per_gpu_hour:,.4g} CNY per "
                     "GPU-hour" + (" (mean over the slots)" if ctx.timed else "")
                     if dearest.price_cny_per_gpu_hour > 0 else "every pool's shadow price is 0") + ".")
    return RegionExplanation(region=region.id, used_gpu_hours=used, capacity_gpu_hours=capacity,
                             utilization=used / capacity if capacity else 0.0, pools=pools, answer=answer,
                             prices_saved=ctx.prices_saved)


def find_link(ctx: Context, text: str) -> int:
    """The index of the link named ``A-B`` (either order; region ids may hold '-' themselves)."""
    links = {frozenset((link.source, link.target)): k for k, link in enumerate(ctx.instance.links)}
    for cut in range(1, len(text)):
        if text[cut] == "-":
            pair = frozenset((text[:cut], text[cut + 1:]))
            if pair in links:
                return links[pair]
    raise UnknownName(f"link '{text}': no link between two regions named so in instance "
                      f"'{ctx.instance.name}' (option --link, written SOURCE-TARGET)")


def explain_link(ctx: Context, text: str) -> LinkExplanation:
    k = find_link(ctx, text)
    link = ctx.instance.links[k]
    fields = dict(source=link.source, target=link.target, latency_ms=link.latency_ms,
                  bandwidth_gbps=link.bandwidth_gbps, prices_saved=ctx.prices_saved)
    name = f"{link.source}-{link.target}"
    if not ctx.timed:
        return LinkExplanation(answer=(
            f"{name}: {link.latency_ms:g} ms, {link.transfer_cost_cny_per_gb:g} CNY per GB. In one window "
            "the model has no bandwidth rows (data moves at a cost per GB), so more bandwidth here is "
            "worth nothing to this plan."), **fields)
    pb = ctx.problem
    load = ctx.load.link[k] * BANDWIDTH_QUANTUM_GBPS
    bandwidth = pb.bandwidth[k] * BANDWIDTH_QUANTUM_GBPS
    share = np.divide(load, bandwidth, out=np.zeros_like(load), where=bandwidth > 0)
    price = next((x for x in (ctx.prices.links if ctx.prices else ())
                  if {x.source, x.target} == {link.source, link.target}), None)
    by_slot = np.asarray(price.by_slot_cny_per_gbps_hour) if price else np.zeros(pb.slots)
    head = (f"{name}: {link.latency_ms:g} ms; carries up to {load.max(initial=0.0):,.3f} Gbps "
            f"(peak {share.max(initial=0.0):.0%} of its bandwidth), {int((share >= 1 - 1e-9).sum())} slots full")
    if by_slot.any():
        t = int(np.argmax(by_slot))
        value = (f"More bandwidth is worth up to {by_slot[t]:,.4g} CNY per Gbps-hour (slot {t}), positive in "
                 f"{int((by_slot > 0).sum())} slots: one more Gbps over the whole horizon would lower the "
                 f"optimum by about {float(by_slot.sum()) * pb.slot_hours:,.2f} CNY")
    else:
        value = "Its shadow price is 0 in every slot: more bandwidth would not lower the cost"
    return LinkExplanation(load_gbps=tuple(load.round(6).tolist()), peak_utilization=float(share.max(initial=0.0)),
                           price_by_slot_cny_per_gbps_hour=tuple(by_slot.tolist()),
                           answer=f"{head}. {value}.", **fields)


def overview(ctx: Context) -> Overview:
    reasons = Counter(u.reason.value for u in ctx.plan.unserved)
    prices = ctx.prices
    pools = sorted(prices.pools if prices else (), key=lambda x: -x.cny_per_gpu_hour)
    dearest = tuple(explain_pool(ctx, x.pool) for x in pools[:TOP] if x.cny_per_gpu_hour > 0)
    links = sorted(prices.links if prices else (), key=lambda x: -max(x.by_slot_cny_per_gbps_hour, default=0))
    dear_links = tuple(explain_link(ctx, f"{x.source}-{x.target}") for x in links[:TOP])
    served = len(ctx.plan.assignments)
    parts = [f"{served:,} of {sum(1 for d in ctx.instance.demands if d.kind.value == 'batch'):,} batch demands served"]
    if reasons:
        parts.append("unserved by reason: " + ", ".join(f"{k} {v:,}" for k, v in reasons.most_common()))
    if dearest:
        parts.append("capacity is worth most on " + ", ".join(
            f"{x.pool} ({x.price_cny_per_gpu_hour:,.4g} CNY/GPU-h)" for x in dearest[:3]))
    else:
        parts.append("every pool's shadow price is 0")
    if prices is not None:
        parts.append(f"the prices prove a bound of {prices.bound_cny:,.2f} CNY" + (
            f" against the plan's {ctx.plan.objective:,.2f}" if ctx.plan.objective is not None else ""))
    from scheduler.explain.quota import UNITS, quota_states

    quotas = tuple(quota_states(ctx))
    binding = [q for q in quotas if q.binding]
    if binding:
        parts.append("binding quotas: " + ", ".join(
            f"{q.quota} ({q.rule}: {q.share:.2%}" + (f", {q.cny_per_unit:,.4g} CNY per {UNITS[q.unit]}"
                                                    if q.cny_per_unit else "") + ")" for q in binding))
    elif quotas:
        parts.append("no quota binds")
    fair = ctx.plan.policy.fairness if ctx.plan.policy else None
    if fair is not None:
        parts.append(f"largest unserved share among {fair.groups}s: {fair.largest_unserved_share:.2%}"
                     + (f" (proven at least {fair.share_lower_bound:.2%})" if fair.share_lower_bound is not None else ""))
    return Overview(instance=ctx.instance.name, objective=ctx.plan.objective,
                    quotas=quotas, largest_unserved_share=fair.largest_unserved_share if fair else None,
                    bound_cny=prices.bound_cny if prices else None, method=prices.method if prices else None,
                    unserved_by_reason=dict(reasons), dearest_pools=dearest, dearest_links=dear_links,
                    carbon_cny_per_t_co2=prices.carbon_cny_per_t_co2 if prices else None,
                    answer="; ".join(parts) + ".", prices_saved=ctx.prices_saved)
