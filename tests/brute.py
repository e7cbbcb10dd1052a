"""Brute force over every combination of compiled options: the engines' optimum on given `Options`.

It trusts compile_options; tests/reference.py is the reference written from the instance alone."""

from __future__ import annotations

import math

from scheduler.compile import Options


def brute_force(options: Options) -> float | None:
    """The optimal objective by enumeration (None if no plan serves every must-serve demand)."""
    best = math.inf
    remaining = options.capacity.astype(int).tolist()
    n = options.n_demands

    def place(i: int, total: float) -> None:
        nonlocal best
        if total >= best:
            return
        if i == n:
            best = total
            return
        for k in range(int(options.start[i]), int(options.start[i + 1])):
            p, u = int(options.pool[k]), int(options.units[k])
            if u <= remaining[p]:
                remaining[p] -= u
                place(i + 1, total + float(options.cost[k]))
                remaining[p] += u
        if not options.must_serve[i]:
            place(i + 1, total + float(options.penalty[i]))

    place(0, 0.0)
    return None if best == math.inf else best


def brute_force_policy(instance, options: Options) -> tuple[float, float] | None:
    """With `Instance.policy`: the lexicographic optimum (largest unserved share, cost) over every
    plan that meets each quota exactly, written from docs/policy.md (share 0 without fairness);
    None if no plan meets the rules."""
    policy = instance.policy
    n = options.n_demands
    work = [d.work_pflop or 0.0 for d in instance.demands]
    tags = {r.id: set(r.tags) for r in instance.regions}
    hub_of = [set(region.tags) for region, _ in instance.pools()]

    def member(q, d) -> bool:
        return ((q.sector is None or d.sector.value == q.sector)
                and (q.origin is None or d.origin == q.origin or q.origin in tags[d.origin]))

    members = [[member(q, d) for d in instance.demands] for q in policy.quotas]
    capacity = options.capacity.astype(int).tolist()
    key = (lambda d: d.sector.value) if policy.fairness == "sector" else (lambda d: d.origin)
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(instance.demands):
        groups.setdefault(key(d), []).append(i)

    def meets(choice: list[int]) -> bool:
        for q, inside in zip(policy.quotas, members, strict=True):
            amount = total = 0.0
            for i, k in enumerate(choice):
                if k < 0:
                    continue
                p = int(options.pool[k])
                if q.hub is not None and q.hub not in hub_of[p]:
                    continue
                size = work[i] if q.measure == "work" else int(options.units[k])
                total += size
                amount += size if inside[i] else 0.0
            if q.measure == "capacity":
                total = sum(c for c, hubs in zip(capacity, hub_of, strict=True)
                            if q.hub is None or q.hub in hubs)
            if q.max_share is not None and amount > q.max_share * total:
                return False
            if q.min_share is not None and amount < q.min_share * total:
                return False
        return True

    def share(choice: list[int]) -> float:
        if policy.fairness == "none":
            return 0.0
        shares = [sum(work[i] for i in rows if choice[i] < 0) / sum(work[i] for i in rows)
                  for rows in groups.values() if sum(work[i] for i in rows) > 0]
        return max(shares, default=0.0)

    best: tuple[float, float] | None = None
    remaining = list(capacity)
    choice = [-1] * n

    def place(i: int, total: float) -> None:
        nonlocal best
        if i == n:
            if meets(choice):
                value = (round(share(choice), 9), total)
                if best is None or value < best:
                    best = value
            return
        for k in range(int(options.start[i]), int(options.start[i + 1])):
            p, u = int(options.pool[k]), int(options.units[k])
            if u <= remaining[p]:
                remaining[p] -= u
                choice[i] = k
                place(i + 1, total + float(options.cost[k]))
                remaining[p] += u
        choice[i] = -1
        if not options.must_serve[i]:
            place(i + 1, total + float(options.penalty[i]))

    place(0, 0.0)
    return best
