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
