"""The policy's quotas in a plan: their shares, which bind, their prices, and the quota that holds
an unserved demand back (docs/policy.md)."""

from __future__ import annotations

from scheduler.explain.context import Context
from scheduler.explain.model import QuotaState

LIMIT_SLACK = 1e-6
"""A share within this of its limit counts as at the limit."""

UNITS = {"pflop": "PFLOP", "gpu_hour": "GPU-hour"}


def rule_text(q) -> str:
    """A quota in words, e.g. 'finance from hub:jjj: at most 30% of the served work in hub:nm'."""
    who = " ".join(x for x in (q.sector, f"from {q.origin}" if q.origin else None) if x) or "all demands"
    limits = []
    if q.min_share is not None:
        limits.append(f"at least {q.min_share:.2%}")
    if q.max_share is not None:
        limits.append(f"at most {q.max_share:.2%}")
    what = "the served work" if q.measure.value == "work" else "the capacity"
    where = f"on the pools of {q.hub}" if q.hub else "nationally"
    return f"{who}: {' and '.join(limits)} of {what} {where}"


def quota_states(ctx: Context) -> list[QuotaState]:
    """Every quota's state in the plan, binding ones first (none without a policy or a report)."""
    from scheduler.policy import blocking_quota, quota_masks

    policy, report = ctx.instance.policy, ctx.plan.policy
    if policy is None or report is None or ctx.timed:
        return []
    prices = {(p.quota, p.bound): p for p in (ctx.prices.quotas if ctx.prices else ())}
    masks = quota_masks(ctx.instance)
    holding = {blocking_quota(ctx.instance, ctx.options, report, ctx.demand_index[u.demand], masks)
               for u in ctx.plan.unserved if u.reason.value == "quota"}
    out = []
    for q, use in zip(policy.quotas, report.quotas, strict=True):
        price = prices.get((q.id, "max")) or prices.get((q.id, "min"))
        at_limit = any(limit is not None and abs(use.share - limit) <= LIMIT_SLACK
                       for limit in (q.min_share, q.max_share))
        out.append(QuotaState(quota=q.id, rule=rule_text(q), share=use.share, min_share=q.min_share,
                              max_share=q.max_share, binding=bool(price or at_limit or q.id in holding),
                              cny_per_unit=price.cny_per_unit if price else None,
                              unit=price.unit if price else None))
    return sorted(out, key=lambda s: not s.binding)


def holding_quota(ctx: Context, i: int) -> tuple[QuotaState, str] | None:
    """The quota that keeps unserved demand ``i`` out, and the sentence saying so."""
    from scheduler.policy import blocking_quota

    qid = blocking_quota(ctx.instance, ctx.options, ctx.plan.policy, i)
    if qid is None:
        return None
    state = next(s for s in quota_states(ctx) if s.quota == qid)
    q = next(q for q in ctx.instance.policy.quotas if q.id == qid)
    use = next(u for u in ctx.plan.policy.quotas if u.quota == qid)
    d = ctx.instance.demands[i]
    if q.measure.value == "work":
        w = d.work_pflop or 0.0
        after = (use.amount + w) / (use.total + w)
        size = f"its {w:,.4g} PFLOP"
    else:
        o = ctx.options
        least = float(o.units[o.start[i]:o.start[i + 1]].min()) * o.quantum
        after = (use.amount + least) / use.total if use.total else 0.0
        size = f"its {least:,.4g} GPU-hours"
    price = (f"; the quota's shadow price is {state.cny_per_unit:,.4g} CNY per {UNITS[state.unit]}"
             if state.cny_per_unit else "")
    text = (f"unserved: its group is at quota '{qid}' ({rule_text(q)}): the group has {use.share:.2%} "
            f"and {size} would bring it to {after:.2%}{price}.")
    return state, text


def holding_in(ctx: Context, i: int, pool_id: str) -> str:
    """Why a demand is served above its penalty: the binding quotas whose row it is in (a minimum
    of its group, or a work share its pool's scope counts)."""
    from scheduler.policy import quota_masks

    masks = quota_masks(ctx.instance)
    p = ctx.pool_index[pool_id]
    states = {s.quota: s for s in quota_states(ctx)}
    rows = []
    for q, (group, scope) in zip(ctx.instance.policy.quotas, masks, strict=True):
        counted = scope[p] and (q.measure.value == "work" or group[i])
        if counted and states[q.id].binding:
            rows.append(f"'{q.id}' ({rule_text(q)})")
    if not rows:
        return "it costs more than its penalty, within the plan's gap"
    return "it costs more than its penalty and is served for the policy: binding quota " + ", ".join(rows)
