"""Plans that respect capacity: multiplier-guided construction and vectorized shift moves.

A plan is ``choice`` (int64 [D]): the option of each demand, or UNSERVED. While a must-serve demand
has no room yet it is UNSERVED too and the plan is incomplete; the search then prices it at a
penalty larger than any saving (``big_penalty``) until it is placed.
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.compile import Options

UNSERVED = -1


def segment_rows(start: np.ndarray, demands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The option indices of ``demands`` back to back, and each demand's count."""
    lo = start[demands]
    counts = start[demands + 1] - lo
    total = int(counts.sum())
    offsets = np.zeros(len(demands), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    rows = np.arange(total, dtype=np.int64) + np.repeat(lo - offsets, counts)
    return rows, counts


def segment_min2(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: position of the first minimum, the minimum and the second smallest value.

    Segments must be non-empty; the second value is inf for single-entry segments.
    """
    n = len(counts)
    seg = np.zeros(n, dtype=np.int64)
    np.cumsum(counts[:-1], out=seg[1:])
    low = np.minimum.reduceat(values, seg)
    at = np.flatnonzero(values == np.repeat(low, counts))
    owner = np.repeat(np.arange(n), counts)[at]
    first = np.ones(len(at), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    arg = at[first]
    rest = values.copy()
    rest[arg] = np.inf
    second = np.minimum.reduceat(rest, seg)
    return arg, low, second


def big_penalty(options: Options) -> float:
    """A price for an unplaced must-serve demand above any cost difference a plan can make."""
    spread = np.abs(options.cost).max(initial=0.0) + np.abs(options.penalty).max(initial=0.0)
    return 4.0 * (spread + 1.0) * max(options.n_demands, 1)


def demand_costs(options: Options, choice: np.ndarray, big: float) -> np.ndarray:
    """What each demand contributes: its option's cost, its penalty, or ``big`` if unplaced."""
    served = choice >= 0
    out = np.where(options.must_serve, big, options.penalty)
    out[served] = options.cost[choice[served]]
    return out


def loads(options: Options, choice: np.ndarray) -> np.ndarray:
    """Units each pool carries under ``choice`` (int64 [P])."""
    chosen = choice[choice >= 0]
    return np.bincount(options.pool[chosen], weights=options.units[chosen].astype(np.float64),
                       minlength=options.n_pools).round().astype(np.int64)


def objective(options: Options, choice: np.ndarray) -> float:
    """The true cost of a complete plan, summed exactly (math.fsum)."""
    served = choice >= 0
    return math.fsum(options.cost[choice[served]]) + math.fsum(options.penalty[~served])


def unplaced(options: Options, choice: np.ndarray) -> int:
    """Must-serve demands without an option in ``choice``."""
    return int(np.count_nonzero(options.must_serve & (choice < 0)))


def is_feasible(options: Options, choice: np.ndarray) -> bool:
    """Every option belongs to its demand, pools within capacity, every must-serve demand served."""
    if choice.shape != (options.n_demands,):
        return False
    served = choice >= 0
    d = np.flatnonzero(served)
    k = choice[served]
    if np.any((k < options.start[d]) | (k >= options.start[d + 1])):
        return False
    if np.any(loads(options, choice) > options.capacity):
        return False
    return not np.any(options.must_serve & ~served)


def construct(options: Options, rc: np.ndarray) -> np.ndarray:
    """Assign demands to their best reduced-cost option that still fits, most regret first.

    Rounds, vectorized: every open demand proposes its best fitting option (or unserved, when its
    penalty beats every fitting reduced cost); each pool accepts its proposals by decreasing regret
    while they fit. Must-serve demands that nothing fits stay UNSERVED (unplaced).
    """
    o = options
    remaining = o.capacity.astype(np.int64).copy()
    choice = np.full(o.n_demands, UNSERVED, dtype=np.int64)
    alt = np.where(o.must_serve, np.inf, o.penalty)
    open_ = np.flatnonzero(np.diff(o.start) > 0)
    while len(open_):
        rows, counts = segment_rows(o.start, open_)
        fits = o.units[rows] <= remaining[o.pool[rows]]
        value = np.where(fits, rc[rows], np.inf)
        arg, low, second = segment_min2(value, counts)
        with np.errstate(invalid="ignore"):
            regret = np.minimum(second, alt[open_]) - low
        propose = (low < alt[open_]) & np.isfinite(low)
        # Demands that take unserved (or that nothing fits) are decided now.
        open_, k, regret = open_[propose], rows[arg[propose]], regret[propose]
        if not len(open_):
            break
        must = o.must_serve[open_]
        regret = np.where(np.isfinite(regret), regret, np.inf)
        order = np.lexsort((-regret, ~must, o.pool[k]))
        accepted = order[_fits_in_order(o, k[order], remaining)]
        choice[open_[accepted]] = k[accepted]
        np.subtract.at(remaining, o.pool[k[accepted]], o.units[k[accepted]])
        keep = np.ones(len(open_), dtype=bool)
        keep[accepted] = False
        open_ = open_[keep]
    return choice


def shift_moves(options: Options, choice: np.ndarray, big: float, max_rounds: int = 50) -> tuple[np.ndarray, int]:
    """Move demands to cheaper alternatives that fit the spare capacity, until none is left.

    Each round every demand proposes its best improving alternative (another option that fits,
    or unserved); leaving needs no room and is applied at once, and each pool accepts the
    proposals for it by decreasing saving while they fit. Returns the new choice and the moves.
    """
    o = options
    choice = choice.copy()
    remaining = o.capacity - loads(o, choice)
    current = demand_costs(o, choice, big)
    alt = np.where(o.must_serve, np.inf, o.penalty)
    moves = 0
    candidates = np.flatnonzero(np.diff(o.start) > 0)
    for _ in range(max_rounds):
        if not len(candidates):
            break
        rows, counts = segment_rows(o.start, candidates)
        mine = rows == np.repeat(choice[candidates], counts)
        fits = (o.units[rows] <= remaining[o.pool[rows]]) & ~mine
        value = np.where(fits, o.cost[rows], np.inf)
        arg, low, _ = segment_min2(value, counts)
        cur = current[candidates]
        eps = 1e-9 * np.maximum(1.0, np.abs(cur))
        leave = (alt[candidates] <= low) & (alt[candidates] < cur - eps)
        move = ~leave & (low < cur - eps)
        gone = candidates[leave]
        if len(gone):
            was = choice[gone]
            served = was >= 0
            np.add.at(remaining, o.pool[was[served]], o.units[was[served]])
            choice[gone] = UNSERVED
            current[gone] = alt[gone]
            moves += len(gone)
        d, k, gain = candidates[move], rows[arg[move]], (cur - low)[move]
        if len(d):
            order = np.lexsort((-gain, o.pool[k]))
            accepted = order[_fits_in_order(o, k[order], remaining)]
            d, k = d[accepted], k[accepted]
            was = choice[d]
            served = was >= 0
            np.add.at(remaining, o.pool[was[served]], o.units[was[served]])
            np.subtract.at(remaining, o.pool[k], o.units[k])
            choice[d] = k
            current[d] = o.cost[k]
            moves += len(d)
        if not len(gone) and not len(d):
            break
    return choice, moves


def _fits_in_order(o: Options, k_sorted: np.ndarray, remaining: np.ndarray) -> np.ndarray:
    """For options sorted by pool: which ones fit when each pool takes them in order (prefix)."""
    p_sorted = o.pool[k_sorted]
    used = np.cumsum(o.units[k_sorted])
    first = np.searchsorted(p_sorted, np.arange(o.n_pools))
    head = first[p_sorted]  # position where each option's pool block starts
    before = np.where(head > 0, used[np.maximum(head - 1, 0)], 0)
    return used - before <= remaining[p_sorted]


def insert_unserved(options: Options, choice: np.ndarray, rc: np.ndarray, big: float,
                    max_options: int = 3, stop=None) -> tuple[np.ndarray, int]:
    """Serve demands that the relaxation serves and the plan does not, by making room for them.

    A candidate is an unserved demand whose best reduced cost ``rc`` beats its penalty (or an
    unplaced must-serve demand), most valuable first. For each of its ``max_options`` options
    of lowest reduced cost, the demands on that pool that can leave most cheaply per unit (to
    their cheapest alternative that fits elsewhere now, or unserved) are evicted until the
    option fits; the best option is applied when it lowers the true cost. One pass; ``stop()``
    ends it early. Returns the new choice and the number of demands inserted.
    """
    o = options
    choice = choice.copy()
    counts = np.diff(o.start)
    has = counts > 0
    if not has.any():
        return choice, 0
    remaining = o.capacity - loads(o, choice)
    alt = np.where(o.must_serve, np.inf, o.penalty)
    current = demand_costs(o, choice, big)
    worth = np.where(o.must_serve, big, o.penalty)  # what serving an unserved demand saves
    low = np.full(o.n_demands, np.inf)
    low[has] = np.minimum.reduceat(rc, o.start[:-1][has])
    wanted = np.flatnonzero((choice == UNSERVED) & (low < worth))
    wanted = wanted[np.argsort(low[wanted] - worth[wanted], kind="stable")]
    pool_now = np.where(choice >= 0, o.pool[np.maximum(choice, 0)], -1)
    inserted = 0
    for d in wanted.tolist():
        if stop is not None and stop():
            break
        ks = np.arange(o.start[d], o.start[d + 1])
        ks = ks[rc[ks] < worth[d]]
        best = None  # (saving, option, evicted demands, their new options)
        for k in ks[np.argsort(rc[ks], kind="stable")][:max_options].tolist():
            p = int(o.pool[k])
            saving = worth[d] - o.cost[k]
            need = int(o.units[k] - remaining[p])
            if saving <= 0:
                continue
            if need <= 0:
                moves = (saving, k, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            else:
                moves = _make_room(o, choice, p, need, remaining, alt, current, pool_now)
                if moves is None:
                    continue
                extra, evicted, to = moves
                moves = (saving - extra, k, evicted, to)
            if moves[0] > 1e-9 * max(1.0, abs(saving)) and (best is None or moves[0] > best[0]):
                best = moves
        if best is None:
            continue
        _, k, evicted, to = best
        for e, ke in zip(evicted.tolist(), to.tolist()):
            remaining[pool_now[e]] += o.units[choice[e]]
            choice[e] = ke
            if ke >= 0:
                remaining[o.pool[ke]] -= o.units[ke]
                pool_now[e], current[e] = o.pool[ke], o.cost[ke]
            else:
                pool_now[e], current[e] = -1, alt[e]
        remaining[o.pool[k]] -= o.units[k]
        choice[d], pool_now[d], current[d] = k, o.pool[k], o.cost[k]
        inserted += 1
    return choice, inserted


def _make_room(o: Options, choice: np.ndarray, p: int, need: int, remaining: np.ndarray,
               alt: np.ndarray, current: np.ndarray, pool_now: np.ndarray):
    """The cheapest evictions (by extra cost per unit freed) that free ``need`` units on pool
    ``p``, each evicted demand to its cheapest alternative that fits now (never on ``p``) or
    unserved: (extra cost, evicted demands, their new options), or None."""
    on = np.flatnonzero(pool_now == p)
    if not len(on):
        return None
    rows, counts = segment_rows(o.start, on)
    room = remaining.copy()
    room[p] = -1  # the evicted demands go elsewhere
    value = np.where(o.units[rows] <= room[o.pool[rows]], o.cost[rows], np.inf)
    arg, low, _ = segment_min2(value, counts)
    leave = alt[on] <= low
    extra = np.where(leave, alt[on], low) - current[on]
    units = o.units[choice[on]]
    movable = np.isfinite(extra)
    order = np.flatnonzero(movable)
    order = order[np.argsort(extra[order] / units[order], kind="stable")]
    freed = np.cumsum(units[order])
    m = int(np.searchsorted(freed, need)) + 1  # the shortest prefix freeing enough
    if m > len(order):
        return None
    pick = order[:m]
    to = np.where(leave[pick], UNSERVED, rows[arg[pick]])
    moved = to[to >= 0]
    arriving = np.bincount(o.pool[moved], weights=o.units[moved], minlength=o.n_pools)
    if np.any(arriving > np.maximum(room, 0)):
        return None  # the evicted demands would not fit together
    return float(extra[pick].sum()), on[pick], to
