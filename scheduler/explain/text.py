"""Explanations as text: the answer wrapped to the width, then a table or two."""

from __future__ import annotations

import textwrap

from scheduler.explain.model import (
    DemandExplanation,
    LinkExplanation,
    Overview,
    PoolExplanation,
    RegionExplanation,
)
from scheduler.report import table


def render_text(answer, width: int = 80) -> str:
    lines = [textwrap.fill(answer.answer, width=width)]
    if isinstance(answer, DemandExplanation):
        lines += _demand(answer, width)
    elif isinstance(answer, PoolExplanation):
        lines += _pool(answer, width)
    elif isinstance(answer, RegionExplanation):
        rows = [[x.pool, x.accelerator, f"{x.utilization:.1%}", f"{x.price_cny_per_gpu_hour:,.4g}"]
                for x in answer.pools]
        lines += ["", table(["pool", "accelerator", "used", "CNY per GPU-h"], rows, max_width=width)]
    elif isinstance(answer, LinkExplanation):
        pass
    elif isinstance(answer, Overview):
        if answer.dearest_pools:
            rows = [[x.pool, x.region, f"{x.utilization:.1%}", f"{x.price_cny_per_gpu_hour:,.4g}"]
                    for x in answer.dearest_pools]
            lines += ["", table(["pool", "region", "used", "CNY per GPU-h"], rows, max_width=width)]
        if answer.dearest_links:
            rows = [[f"{x.source}-{x.target}", f"{x.peak_utilization or 0:.0%}",
                     f"{max(x.price_by_slot_cny_per_gbps_hour, default=0):,.4g}"] for x in answer.dearest_links]
            lines += ["", table(["link", "peak", "CNY per Gbps-h (max)"], rows, max_width=width)]
        if answer.method:
            lines += ["", textwrap.fill(f"shadow prices: {answer.method}", width=width)]
    if not answer.prices_saved:
        lines += ["", "note: the plan has no saved shadow prices; they were computed now from the instance"]
    return "\n".join(lines)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _demand(answer: DemandExplanation, width: int) -> list[str]:
    out = []
    if answer.options:
        timed = any(o.start_slot is not None for o in answer.options)
        headers = ["pool", "region", *(["start"] if timed else []), "GPU-h", "cost", "capacity",
                   *(["links", "carbon"] if timed else []), "priced", "fits"]
        rows = []
        for o in answer.options:
            mark = " *" if answer.chosen is not None and o.pool == answer.chosen.pool and o.start_slot == answer.chosen.start_slot else ""
            rows.append([o.pool + mark, o.region, *([str(o.start_slot)] if timed else []), f"{o.gpu_hours:,.2f}",
                         _money(o.cost_cny), _money(o.capacity_cny),
                         *([_money(o.bandwidth_cny), _money(o.carbon_cny)] if timed else []),
                         _money(o.priced_cny), {True: "yes", False: "no", None: "-"}[o.fits]])
        out += ["", "eligible options (CNY; priced = cost + shadow prices of what it takes; * the plan's):",
                table(headers, rows, max_width=width)]
    if answer.rejected:
        rows = [[r.pool, r.rule.value, r.detail] for r in answer.rejected[:15]]
        out += ["", table(["pool", "rejected by", "amounts"], rows, max_width=width, names=(0, 2))]
        if len(answer.rejected) > 15:
            out.append(f"... and {len(answer.rejected) - 15} more pools")
    return out


def _pool(answer: PoolExplanation, width: int) -> list[str]:
    out = []
    if answer.top_demands:
        rows = [[x.name, f"{x.gpu_hours:,.1f}", f"{x.share:.1%}"] for x in answer.top_demands]
        out += ["", table(["demand", "GPU-h", "share"], rows, max_width=width)]
    if answer.top_sectors:
        rows = [[x.name, f"{x.gpu_hours:,.1f}", f"{x.share:.1%}"] for x in answer.top_sectors]
        out += ["", table(["sector", "GPU-h", "share"], rows, max_width=width)]
    return out
