"""A stronger bound for horizons: the pool-slot rows kept whole, one pool at a time (docs/large-engine.md,
"Pool bound").

The Lagrangian of `timed_dual` relaxes every pool-slot row; its best value is an LP bound, and
where pools hold a few GPUs and jobs come in gangs of 1-32, whole jobs and replicas cannot fill
them as fractions do. Here the other rows are relaxed instead: each batch demand's
``sum x + y = 1`` with a price ``sigma[d]`` and each service cell's ``sum u <= L`` with a price
``w[c] >= 0`` (links and the carbon cap keep the multipliers of the ascent). What is left splits
by pool: on pool p, choose whole jobs (at most one start each) and whole replicas per slot within
its GPUs, for the greatest profit ``Z_p``. For any such prices

    L' = sum_d sigma_d + sum_c (pi_c - w_c) L_c - sum_p Z_p - lam.bandwidth - nu.cap

is a lower bound on every plan's cost (optional demands: sigma_d <= penalty). At the prices the
ascent's multipliers mu give (sigma the demands' least reduced costs, w each cell's marginal
saving), the LP bound of each ``Z_p`` is ``mu_p.avail_p`` plus its services' envelope pieces
above w, and L' with those LP bounds is exactly L(mu): CP-SAT's proven bound on each whole
``Z_p``, where it is lower, raises the bound by the difference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from scheduler.engines.timed_dual import (DualPoint, Multipliers, ServiceShape, TimedRelaxation, flow_prices,
                                         prefix)
from scheduler.timed import TimedProblem

__all__ = ["PoolBound", "PoolColumns", "PoolPicks", "PoolPrices", "ReplicaRows"]

SCALE = 1000.0
"""Profits enter CP-SAT in 1/SCALE CNY, rounded up (the model's optimum can only rise)."""
MAX_COLUMNS = 3_000_000
"""The most profitable (demand, start) pairs collected over all pools; beyond, no pool bound."""
MAX_POOL_VARIABLES = 20_000
"""A pool's model with more variables is left at its LP bound."""
MAX_OBJECTIVE_UNITS = float(2**53)
"""The largest sum of a pool model's objective coefficients (units of 1/SCALE CNY)."""
SAFETY = 1e-9
"""Relative margin taken off the new bound (float error of the profits and of the sums)."""


class PoolColumns(NamedTuple):
    """The profitable (demand, pool, start) triples, one array entry each."""

    pool: np.ndarray  # int64
    demand: np.ndarray  # int64
    start: np.ndarray  # int64: start slot
    slots: np.ndarray  # int64: slots the run holds
    gang: np.ndarray  # int64: GPUs it holds in each of them
    profit: np.ndarray  # float64: sigma - its start's cost without mu
    option: np.ndarray  # int64: index into BatchOptions


class ReplicaRows(NamedTuple):
    """The (service row, slot) pairs where whole replicas gain, one array entry each."""

    pool: np.ndarray  # int64
    slot: np.ndarray  # int64
    gang: np.ndarray  # int64: GPUs per replica
    count: np.ndarray  # int64: full replicas (ceil(L / kappa) - 1, 0 where a full one loses)
    full_gain: np.ndarray  # float64: gain of each full replica
    rest_gain: np.ndarray  # float64: gain of the last one
    row: np.ndarray  # int64: index into ServiceOptions


@dataclass(frozen=True, eq=False)
class PoolPrices:
    """The prices of the decomposition, derived from one `DualPoint` of the capacity relaxation."""

    sigma: np.ndarray  # float64 [batch]: price of each batch demand's row
    threshold: np.ndarray  # float64 [services, S]: w of each service cell
    lp_pool: np.ndarray  # float64 [pools]: LP bound of each pool's greatest profit
    base: float  # sum sigma + sum (pi - w) L - lam.bandwidth - nu.cap
    columns: PoolColumns
    replicas: ReplicaRows


@dataclass(frozen=True, eq=False)
class PoolPicks:
    """What the pools' best packings chose (their CP-SAT solutions): a guide for a plan."""

    option: np.ndarray  # int64 [picks]: the option (demand and pool) of each chosen start
    start: np.ndarray  # int64 [picks]: its start slot
    profit: np.ndarray  # float64 [picks]: its profit at the decomposition's prices
    replicas: np.ndarray  # int64 [J, S]: replicas each service row got from its pool's packing


class PoolBound:
    """L' of the module's docstring at the multipliers of a `DualPoint`, one pool at a time."""

    def __init__(self, problem: TimedProblem, relax: TimedRelaxation):
        self.pb = problem
        self.relax = relax
        self.solved = 0  # pools whose whole problem CP-SAT solved to optimality
        self.picks: PoolPicks | None = None  # the pools' packings of the last `bound`

    def prices(self, point: DualPoint) -> PoolPrices | None:
        """The decomposition's prices at ``point``, or None where they are not all finite or
        there are too many profitable starts."""
        pb, relax = self.pb, self.relax
        mult = point.multipliers
        sigma = np.minimum(point.batch_low, relax.alt)
        if not np.all(np.isfinite(sigma)):
            return None
        columns = self._columns(mult, sigma)
        if columns is None:
            return None
        threshold, pieces_above, replicas = self._services(mult)
        lp_pool = (mult.pool * relax.avail).sum(axis=1) + pieces_above
        sv = pb.services
        cells = 0.0
        if len(sv.rows):
            cells = math.fsum(((sv.penalty_per_quantum[:, None] - threshold) * sv.load).ravel())
        cap = float(relax.cap_g) if relax.cap_g is not None else 0.0
        base = (math.fsum(sigma) + cells - math.fsum((mult.link * relax.bandwidth).ravel())
                - mult.carbon * cap)
        return PoolPrices(sigma, threshold, lp_pool, base, columns, replicas)

    def bound(self, point: DualPoint, seconds: float, workers: int, deterministic_s: float | None,
              halt: Callable[[], bool]) -> tuple[float, int] | None:
        """(L' minus its float margin, pools raised) at ``point``'s multipliers, CP-SAT given
        ``seconds`` over all pools (the dearest LP bounds first); None if the prices are out
        of reach. Pools left unsolved keep their LP bound, so L' is never below L(point)."""
        from ortools.sat.python import cp_model

        started = time.perf_counter()
        prices = self.prices(point)
        if prices is None:
            return None
        pool_of, by_pool = prices.columns.pool, {}
        order_cols = np.argsort(pool_of, kind="stable")
        cuts = np.searchsorted(pool_of[order_cols], np.arange(self.pb.n_pools + 1))
        rep_pool = prices.replicas.pool
        order_rep = np.argsort(rep_pool, kind="stable")
        rep_cuts = np.searchsorted(rep_pool[order_rep], np.arange(self.pb.n_pools + 1))
        for p in range(self.pb.n_pools):
            by_pool[p] = (order_cols[cuts[p]:cuts[p + 1]], order_rep[rep_cuts[p]:rep_cuts[p + 1]])
        upper = prices.lp_pool.copy()  # what each Z_p is at most
        magnitude = float(np.abs(prices.lp_pool).sum())
        pending = [int(p) for p in np.argsort(-prices.lp_pool, kind="stable") if prices.lp_pool[p] > 0]
        raised: set[int] = set()  # pools whose bound fell below their LP bound
        chosen: dict[int, np.ndarray] = {}  # pool -> columns its best packing chose
        J = len(self.pb.services.pool)
        replicas = np.zeros((J, self.pb.slots), dtype=np.int64)
        # Two passes: every pool at a short limit, then the unsolved ones share what is left.
        for share in (0.25, 1.0):
            todo, pending = pending, []
            for rank, p in enumerate(todo):
                left = seconds - (time.perf_counter() - started)
                if left <= 0.01 or halt():
                    break
                built = self._model(p, prices, *by_pool[p])
                if built is None:
                    continue
                model, terms, x, counts = built
                solver = cp_model.CpSolver()
                solver.parameters.max_time_in_seconds = max(share * left / (len(todo) - rank), 0.01)
                solver.parameters.num_workers = workers
                solver.parameters.random_seed = 0
                if deterministic_s is not None:
                    solver.parameters.max_deterministic_time = share * deterministic_s / len(todo)
                code = solver.solve(model)
                if code == cp_model.OPTIMAL:
                    self.solved += 1
                else:
                    pending.append(p)
                if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                    cols, reps = by_pool[p]
                    chosen[p] = cols[np.array([solver.boolean_value(v) for v in x], dtype=bool)]
                    rows, slots = prices.replicas.row[reps], prices.replicas.slot[reps]
                    replicas[rows, slots] = [sum(solver.value(v) for v in vs) for vs in counts]
                    proven = max(solver.best_objective_bound / SCALE, 0.0)
                    magnitude += terms / SCALE
                    if proven < upper[p]:
                        upper[p] = proven
                        raised.add(p)
            if not pending:
                break
        picked = np.concatenate([chosen[p] for p in sorted(chosen)] + [np.zeros(0, dtype=np.int64)])
        cols = prices.columns
        self.picks = PoolPicks(cols.option[picked], cols.start[picked], cols.profit[picked], replicas)
        value = prices.base - math.fsum(upper)
        margin = SAFETY * (abs(prices.base) + magnitude + float(np.abs(prices.sigma).sum()))
        return value - margin - (point.value - point.bound), len(raised)

    # -- the pools' columns ----------------------------------------------------------------------
    def _columns(self, mult: Multipliers, sigma: np.ndarray):
        """Every (option, start) whose profit sigma - (cost without mu) is positive."""
        relax, pr = self.relax, self.relax.pricer
        route_prefix = relax.routes.sums(prefix(mult.link))
        parts, count = [], 0
        for index, ks in enumerate(relax.chunks()):
            static = relax.chunk_costs(index, ks)
            s, _ = pr.starts(ks)
            cost = static.cost.copy()  # inf where a start is not allowed
            if mult.carbon:
                grams = static.grams if static.grams is not None else pr.grams(ks, s)
                cost += mult.carbon * grams
            if len(static.moving) and route_prefix.any():
                cost[static.moving] += flow_prices(static, route_prefix)
            profit = sigma[pr.owner[ks], None] - cost
            row, col = np.nonzero(profit > -1e-9 * (np.abs(cost) + 1.0))
            count += len(row)
            if count > MAX_COLUMNS:
                return None
            k = ks[row]
            parts.append((pr.pool[k], pr.owner[k], s[row, col], pr.n[k], pr.gang[k],
                          np.maximum(profit[row, col], 0.0), k))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return PoolColumns(empty, empty, empty, empty, empty, np.zeros(0), empty)
        return PoolColumns(*(np.concatenate([p[i] for p in parts]) for i in range(len(PoolColumns._fields))))

    def _services(self, mult: Multipliers):
        """(w [services, S], envelope pieces above w per pool, whole-replica gains per row and
        slot) of the service cells at ``mult``."""
        pb, relax = self.pb, self.relax
        sv, S, P = pb.services, pb.slots, pb.n_pools
        empty = ReplicaRows(*(np.zeros(0, dtype=np.int64),) * 4, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
        if not len(sv.rows):
            return np.zeros((0, S)), np.zeros(P), empty
        J = len(sv.pool)
        per_replica, per_quantum = relax.service_prices(mult, np.arange(J))
        owner = relax.service_owner
        sh = ServiceShape(sv.kappa, sv.start, sv.load, sv.penalty_per_quantum)  # the envelopes' pieces
        kap, full, rest = sh.kap.astype(np.float64), sh.full.astype(np.float64), sh.rem.astype(np.float64)
        load = full + rest  # [J, S]
        usable = sh.usable & (load > 0)
        gain = sh.penalty_row - per_quantum
        slope_a = gain - per_replica / kap
        slope_b = gain - per_replica / sh.rem_div
        on_a = sh.long_a & (slope_a > 0)
        on_b = sh.rem_usable & (slope_b > 0)
        # Each cell's marginal saving: the slope of the piece that fills its load (0 if none).
        rows_a, t_a = np.nonzero(on_a)
        rows_b, t_b = np.nonzero(on_b)
        row = np.concatenate([rows_a, rows_b])
        slot = np.concatenate([t_a, t_b])
        slope = np.concatenate([slope_a[on_a], slope_b[on_b]])
        length = np.concatenate([full[on_a], rest[on_b]])
        cell = owner[row] * S + slot
        order = np.lexsort((-slope, cell))
        cell_o, slope_o, length_o = cell[order], slope[order], length[order]
        threshold = np.zeros(len(sv.rows) * S)
        if len(cell_o):
            first = np.ones(len(cell_o), dtype=bool)
            first[1:] = cell_o[1:] != cell_o[:-1]
            seg = np.cumsum(first) - 1
            heads = np.flatnonzero(first)
            through = np.cumsum(length_o)
            through -= (through - length_o)[heads][seg]  # the length up to and with each piece
            fills = through >= sv.load.ravel()[cell_o]
            # the first piece of each cell that fills its load
            fill_rank = np.where(fills, np.arange(len(cell_o)), len(cell_o))
            first_fill = np.minimum.reduceat(fill_rank, heads)
            has = first_fill < len(cell_o)
            threshold[cell_o[heads[has]]] = slope_o[first_fill[has]]
        threshold = threshold.reshape(len(sv.rows), S)
        w = threshold[owner]  # [J, S]
        above = (np.where(on_a, full * np.maximum(slope_a - w, 0.0), 0.0)
                 + np.where(on_b, rest * np.maximum(slope_b - w, 0.0), 0.0))
        pieces_above = np.zeros(P)
        np.add.at(pieces_above, sv.pool.astype(np.int64), above.sum(axis=1))
        # Whole replicas on the pool, priced without mu: ceil(L / kappa) - 1 full ones, one last.
        gang = sv.gang[owner].astype(np.float64)[:, None]
        rent = per_replica - gang * mult.pool[sv.pool.astype(np.int64)]
        q = gain - w
        count = np.ceil(load / kap)
        last = load - (count - 1) * kap
        full_gain = q * kap - rent
        rest_gain = q * last - rent
        keep = usable & (q > 0) & ((full_gain > 0) | (rest_gain > 0))
        r, t = np.nonzero(keep)
        replicas = ReplicaRows(sv.pool.astype(np.int64)[r], t, gang[r, 0].astype(np.int64),
                               np.where(full_gain[r, t] > 0, count[r, t] - 1, 0).astype(np.int64),
                               np.maximum(full_gain[r, t], 0.0), np.maximum(rest_gain[r, t], 0.0), r)
        return threshold, pieces_above, replicas

    def _model(self, p: int, prices: PoolPrices, cols: np.ndarray, reps: np.ndarray):
        """CP-SAT's model of pool p's greatest profit, the sum of its rounded profits, its
        columns' variables and, per replica row, the variables whose sum is its replicas."""
        from ortools.sat.python import cp_model

        n_vars = len(cols) + 2 * len(reps)
        if n_vars == 0 or n_vars > MAX_POOL_VARIABLES:
            return None
        c = PoolColumns(*(a[cols] for a in prices.columns))
        demand, start, slots, gang, profit = c.demand, c.start, c.slots, c.gang, c.profit
        r = ReplicaRows(*(a[reps] for a in prices.replicas))
        r_slot, r_gang, r_count, r_full, r_rest = r.slot, r.gang, r.count, r.full_gain, r.rest_gain
        # CP-SAT's objective is int64: a pool whose rounded profits could sum past 2^53 (huge
        # penalties or prices) keeps its LP bound.
        most = float(profit.sum() + (r_full * r_count).sum() + r_rest.sum()) * SCALE + n_vars
        if not math.isfinite(most) or most > MAX_OBJECTIVE_UNITS:
            return None
        S = self.pb.slots
        model = cp_model.CpModel()
        x = [model.new_bool_var("") for _ in range(len(cols))]
        coef = (np.ceil(profit * SCALE) + 1).astype(np.int64).tolist()  # +1: a tie goes to the job
        usage: list[list] = [[] for _ in range(S)]
        weights: list[list] = [[] for _ in range(S)]
        for v, s0, n, g in zip(x, start.tolist(), slots.tolist(), gang.tolist()):
            for t in range(s0, min(s0 + n, S)):
                usage[t].append(v)
                weights[t].append(g)
        order = np.argsort(demand, kind="stable")
        cut = np.flatnonzero(np.diff(demand[order])) + 1
        for group in np.split(order, cut):
            if len(group) > 1:
                model.add_at_most_one([x[i] for i in group])
        objective_vars, objective_coef = list(x), coef
        total = float(sum(coef))
        counts: list[list] = []
        for t, g, n_full, gf, gr in zip(r_slot.tolist(), r_gang.tolist(), r_count.tolist(),
                                        r_full.tolist(), r_rest.tolist()):
            counts.append([])
            for upper, gain in ((n_full, gf), (int(gr > 0), gr)):  # full replicas, the last one
                if upper <= 0:
                    continue
                v = model.new_int_var(0, upper, "")
                c = math.ceil(gain * SCALE)
                counts[-1].append(v)
                objective_vars.append(v)
                objective_coef.append(c)
                usage[t].append(v)
                weights[t].append(g)
                total += c * upper
        avail = self.pb.avail[p]
        for t in range(S):
            if usage[t] and sum(weights[t]) > avail[t]:
                model.add(cp_model.LinearExpr.weighted_sum(usage[t], weights[t]) <= int(avail[t]))
        model.maximize(cp_model.LinearExpr.weighted_sum(objective_vars, objective_coef))
        return model, total, x, counts
