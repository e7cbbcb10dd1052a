"""Explanations of a plan: why a demand is (not) served, what fills a pool, region or link, and
what more capacity there is worth (the shadow prices saved with the plan, docs/explain.md)::

    from scheduler import read_instance, read_plan
    from scheduler.explain import explain, render
    answer = explain(read_instance("instance.json"), read_plan("plan.json"), demand="job-17")
    print(render(answer))
"""

from __future__ import annotations

from models import Instance, Plan
from scheduler.explain.capacity import explain_link, explain_pool, explain_region, overview
from scheduler.explain.context import Context, UnknownName
from scheduler.explain.demand import explain_demand
from scheduler.explain.model import (
    DemandExplanation,
    Explanation,
    LinkExplanation,
    Option,
    Overview,
    PoolExplanation,
    RegionExplanation,
    Rejection,
    Share,
)
from scheduler.explain.prices import timed_prices, window_prices

__all__ = [
    "DemandExplanation",
    "Explanation",
    "LinkExplanation",
    "Option",
    "Overview",
    "PoolExplanation",
    "RegionExplanation",
    "Rejection",
    "Share",
    "UnknownName",
    "explain",
    "render",
    "timed_prices",
    "window_prices",
]


def explain(instance: Instance, plan: Plan, *, demand: str | None = None, pool: str | None = None,
            region: str | None = None, link: str | None = None) -> Explanation:
    """The explanation of one demand, pool, region or link (``link`` as ``"A-B"``), or of the whole
    plan when none is named. The plan should be one the verifier accepts for ``instance``; ids the
    instance lacks raise `UnknownName`. Plans without saved shadow prices get them computed now
    (``prices_saved`` is then False)."""
    if sum(x is not None for x in (demand, pool, region, link)) > 1:
        raise ValueError("name at most one of demand, pool, region, link")
    ctx = Context(instance, plan)
    if demand is not None:
        return explain_demand(ctx, demand)
    if pool is not None:
        return explain_pool(ctx, pool)
    if region is not None:
        return explain_region(ctx, region)
    if link is not None:
        return explain_link(ctx, link)
    return overview(ctx)


def render(answer: Explanation, width: int = 80) -> str:
    """The explanation as text for a terminal: the answer, then its tables."""
    from scheduler.explain.text import render_text

    return render_text(answer, width)
