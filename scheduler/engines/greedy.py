"""A greedy construction: the baseline a user would write, and the exact engine's first hint.

Demands are taken most-constrained first (must-serve, then fewest options), then by how much
serving them saves over their penalty; each takes its cheapest option that still fits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scheduler.compile import Options
from scheduler.params import Stopped

UNSERVED = -1
STOP_CHECK_EVERY = 1024  # demands between two looks at the stop request (about 10 ms)


def greedy_order(options: Options) -> np.ndarray:
    """Must-serve first (fewest options first), then the rest by savings, largest first."""
    counts = np.diff(options.start)
    best = np.full(options.n_demands, np.inf)
    has = counts > 0
    best[has] = np.minimum.reduceat(options.cost, options.start[:-1][has])
    savings = options.penalty - best
    must = options.must_serve
    return np.lexsort((-savings, np.where(must, counts, 0), ~must))


def greedy(
    options: Options, order: np.ndarray | None = None, *, stop: Callable[[], bool] | None = None
) -> tuple[np.ndarray, bool]:
    """A choice per demand (option index or UNSERVED) and whether every must-serve demand fit.

    ``stop()`` is asked every few milliseconds; when it says yes, `Stopped` is raised.
    """
    remaining = options.capacity.astype(np.int64).copy()
    choice = np.full(options.n_demands, UNSERVED, dtype=np.int64)
    complete = True
    start, pool, units, cost = options.start, options.pool, options.units, options.cost
    for n, i in enumerate(greedy_order(options) if order is None else order):
        if stop is not None and n % STOP_CHECK_EVERY == 0 and stop():
            raise Stopped("stopped while building the first plan")
        lo, hi = int(start[i]), int(start[i + 1])
        if lo == hi:
            complete = complete and not options.must_serve[i]
            continue
        fits = units[lo:hi] <= remaining[pool[lo:hi]]
        if not fits.any():
            complete = complete and not options.must_serve[i]
            continue
        k = lo + int(np.argmin(np.where(fits, cost[lo:hi], np.inf)))
        if options.must_serve[i] or cost[k] < options.penalty[i]:
            choice[i] = k
            remaining[pool[k]] -= units[k]
    return choice, complete
