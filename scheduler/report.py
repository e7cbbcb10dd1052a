"""Readable summaries of a plan: aligned text tables with totals."""

from __future__ import annotations

from collections import defaultdict

from models import Instance, Plan, Verification


def table(headers: list[str], rows: list[list[str]], *, total: list[str] | None = None) -> str:
    """An aligned text table; the first column is left-aligned, the others right-aligned."""
    body = rows + ([total] if total else [])
    widths = [max(len(str(r[c])) for r in [headers, *body]) for c in range(len(headers))]

    def line(row: list[str]) -> str:
        cells = [
            str(v).ljust(widths[c]) if c == 0 else str(v).rjust(widths[c]) for c, v in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule, *(line(r) for r in rows)]
    if total:
        out += [rule, line(total)]
    return "\n".join(out)


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def sector_table(instance: Instance, plan: Plan) -> str:
    """Served and unserved demands and work by sector."""
    sector = {d.id: d.sector.value for d in instance.demands}
    work = {d.id: d.work_pflop or 0.0 for d in instance.demands}
    counts: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for a in plan.assignments:
        row = counts[sector[a.demand]]
        row[0] += 1
        row[2] += work[a.demand]
        row[4] += a.cost_cny
    for u in plan.unserved:
        row = counts[sector[u.demand]]
        row[1] += 1
        row[3] += work[u.demand]
    rows, totals = [], [0, 0, 0.0, 0.0, 0.0]
    for name in sorted(counts):
        row = counts[name]
        totals = [t + v for t, v in zip(totals, row, strict=True)]
        rows.append(_sector_row(name, row))
    return table(
        ["sector", "served", "unserved", "served work", "cost CNY"],
        rows,
        total=_sector_row("total", totals),
    )


def _sector_row(name: str, row: list[float]) -> list[str]:
    served, unserved, served_work, unserved_work, cost = row
    share = served_work / (served_work + unserved_work) if served_work + unserved_work else None
    return [name, f"{int(served):,}", f"{int(unserved):,}", percent(share), money(cost)]


def region_table(instance: Instance, plan: Plan) -> str:
    """Capacity used by region (regions without pools are left out)."""
    used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for usage in plan.pools:
        used[usage.region][0] += usage.used_gpu_hours
        used[usage.region][1] += usage.capacity_gpu_hours
    rows = []
    total = [0.0, 0.0]
    for region in instance.regions:
        if region.id not in used:
            continue
        u, c = used[region.id]
        total = [total[0] + u, total[1] + c]
        rows.append([region.id, f"{u:,.0f}", f"{c:,.0f}", percent(u / c if c else None)])
    return table(
        ["region", "used GPU-h", "capacity GPU-h", "utilization"],
        rows,
        total=["total", f"{total[0]:,.0f}", f"{total[1]:,.0f}",
               percent(total[0] / total[1] if total[1] else None)],
    )


def cost_table(plan: Plan) -> str:
    """The objective split into its terms."""
    c = plan.costs
    rows = [
        ["compute", money(c.compute_cny)],
        ["energy", money(c.energy_cny)],
        ["transfer", money(c.transfer_cny)],
        ["carbon", money(c.carbon_cny)],
        ["unserved penalty", money(c.unserved_penalty_cny)],
    ]
    return table(["cost term", "CNY"], rows, total=["objective", money(plan.objective)])


def headline(plan: Plan, verification: Verification | None = None) -> str:
    """Status, objective, bound, gap and how the plan was found."""
    s = plan.stats
    checked = ""
    if verification is not None:
        checked = "  verified" if verification.ok else f"  VERIFICATION FAILED ({len(verification.violations)})"
    return (
        f"status {plan.status.value}  objective {money(plan.objective)}  "
        f"lower bound {money(plan.lower_bound)}  gap {percent(plan.gap, 3)}{checked}\n"
        f"engine {s.engine}  {s.wall_time_s:.1f} s  {s.demands:,} demands  {s.pools:,} pools  "
        f"{s.options:,} options  energy {plan.costs.energy_kwh:,.0f} kWh  CO2 {plan.costs.co2_t:,.1f} t"
    )


def summary(instance: Instance, plan: Plan, verification: Verification | None = None) -> str:
    """Everything an operator reads after a solve."""
    parts = [headline(plan, verification), sector_table(instance, plan)]
    if plan.objective is not None:
        parts += [region_table(instance, plan), cost_table(plan)]
    return "\n\n".join(parts)
