"""The national-scale engine for horizon instances (docs/formulation.md §8.4-8.5).

1. Bound: the pool-slot, link-slot and carbon rows are relaxed (`timed_dual`); projected Polyak
   subgradient steps raise the Lagrangian, and the best value evaluated is the proven bound.
2. Plans: at the multipliers, demands are priced by reduced cost and placed by regret (and what
   leaving them out would cost), each at its best start that still fits every row (`Builder`);
   services cover their load slot by slot.
   After the dual phase the pool bound's packings (`timed_pools`) guide one more plan.
3. Improvement: `Relocate` moves a job to its cheapest fitting (pool, start) - in time within its
   window and across pools - or serves an unserved one; `Eject` frees room for a job by moving
   the jobs that block its best start; `Recover` re-covers a service's load slot by slot; once
   those stall, windows of a few pools and slots are re-solved exactly (`timed_window`).

The (demand, pool, start) triples are never stored: every pricing is a vectorized pass over
the allowed starts of a few options. See docs/large-engine.md, "Horizon instances".
"""

from __future__ import annotations

import dataclasses

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from models import OPTIMAL_GAP, Status
from scheduler.engines import EngineResult
from scheduler.engines.timed_dual import (
    DualPoint,
    Multipliers,
    PolyakAscent,
    Routes,
    StartPricer,
    TimedRelaxation,
    prefix,
)
from scheduler.engines.exact import available_cores
from scheduler.engines.timed_cells import cell_cover
from scheduler.engines.timed_pools import PoolBound, PoolPicks
from scheduler.engines.timed_window import WindowSearch
from scheduler.params import Progress, SolveParams
from scheduler.timed import TimedChoice, TimedProblem

HUGE = np.iinfo(np.int64).max // 4
RUIN_TRIES = 200  # ruin-and-recreate tries per search round once the rounds have stalled
RUIN_IDLE = 25  # such rounds in a row without a kept ruin before the search gives up
DUAL_SHARE = 0.75  # of the time limit, at most, for the subgradient steps (docs/large-engine.md)
BUILD_EVERY = 10  # a multiplier-guided plan after every this many dual steps
BUILD_SHARE = 0.25  # ... under a time limit only while the plans took at most this x the steps' time
FIRST_PLAN_SHARE = 0.25  # the dual phase's first plan at the latest after this share of it
LOSS_WEIGHT = 0.1  # the builder ranks demands by regret + this x (penalty - best reduced cost)
POOL_SHARE = 0.2  # of the time limit, at most, for the pool bound after the dual phase
POOL_DETERMINISTIC_S = 4.0  # CP-SAT's deterministic time for it, over all pools, at an iteration limit
PROGRESS_EVERY_S = 0.25
HINT_CHUNK = 4096  # jobs priced at a time while the hint is placed (a stop check between chunks)
GRAM_MARGIN = 1e-12  # emissions are rounded up from (1 + this) * grams: never under the verifier's


def _grams_int(grams: np.ndarray | float) -> np.ndarray:
    return np.ceil(np.asarray(grams, dtype=np.float64) * (1.0 + GRAM_MARGIN) - 1e-9).astype(np.int64)


class RangeMin:
    """Minimum of ``values[r, lo:hi]`` for many (r, lo, hi) at once (a sparse table), with
    row updates."""

    def __init__(self, values: np.ndarray):
        self.values = values  # int64 [R, S], shared with the owner and updated through it
        R, self.S = values.shape
        self.n_levels = max(1, int(self.S).bit_length())
        # levels[j, r, t] = min(values[r, t : t + 2^j]) (HUGE past the end): one 3-D table, so a
        # query is two gathers whatever the lengths.
        self.levels = np.full((self.n_levels, R, self.S), HUGE, dtype=np.int64)
        self.flat = self.levels.reshape(-1)
        self.log2 = np.zeros(self.S + 1, dtype=np.int64)
        self.log2[1:] = np.floor(np.log2(np.arange(1, self.S + 1))).astype(np.int64)
        self.dirty = np.ones(R, dtype=bool)
        self.any_dirty = True

    def update(self, rows) -> None:
        """Mark the rows ``rows`` changed; they are rebuilt, together, at the next query."""
        self.dirty[rows] = True
        self.any_dirty = True

    def _rebuild(self) -> None:
        rows = np.flatnonzero(self.dirty)
        self.dirty[:] = False
        self.any_dirty = False
        L = self.levels
        L[0, rows] = self.values[rows]
        for j in range(1, self.n_levels):
            half = 1 << (j - 1)
            width = self.S - (1 << j) + 1
            L[j, rows, :width] = np.minimum(L[j - 1, rows, :width], L[j - 1, rows, half: half + width])

    def query(self, r: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """min(values[r, lo:hi]) elementwise (broadcast); HUGE where the range is empty."""
        if self.any_dirty:
            self._rebuild()
        r, lo, hi = np.broadcast_arrays(r, lo, hi)
        length = hi - lo
        empty = length <= 0
        j = self.log2[np.clip(length, 0, self.S)]
        R, S = self.levels.shape[1:]
        base = (j * R + r) * S
        a = np.take(self.flat, base + np.clip(lo, 0, S - 1))
        b = np.take(self.flat, base + np.clip(hi - (1 << j), 0, S - 1))
        out = np.minimum(a, b)
        if np.any(empty):
            out[empty] = HUGE
        return out


_EXACT_SHIFT = 1074  # every finite float is an integer multiple of 2^-1074
_EXACT_ONE = 1 << _EXACT_SHIFT
_GRAM_FACTOR = 1.0 + GRAM_MARGIN
FIT_CACHE_CELLS = 1 << 23
"""(option, start) cells of the per-demand start tables kept for the search (about 35 bytes
each, 50 with a carbon cap or price); the demands past it are priced afresh at every look."""


def _exact(x: float) -> int:
    """A finite float as an exact integer multiple of 2^-1074."""
    n, d = x.as_integer_ratio()
    return n << (_EXACT_SHIFT + 1 - d.bit_length())


def _grams_one(grams: float) -> int:
    """`_grams_int` of one value, in plain floats (the same IEEE operations)."""
    return math.ceil(grams * _GRAM_FACTOR - 1e-9)


class ExactTotal:
    """The sum of a float array kept exactly while its elements change: `value()` equals
    ``math.fsum`` of the array (both are the correctly rounded exact sum), in O(1)."""

    def __init__(self, values: np.ndarray):
        self.values = values.reshape(-1)  # a view: the owner writes through `set`
        self.floats = self.values.tolist()
        self.parts: list[int | None] = [_exact(x) if math.isfinite(x) else None
                                        for x in self.values.tolist()]
        self.total = sum(x for x in self.parts if x is not None)
        self.nonfinite = sum(x is None for x in self.parts)

    def set(self, index: int, x: float) -> None:
        x = float(x)
        if x == self.floats[index]:
            return
        self.floats[index] = x
        old = self.parts[index]
        if old is None:
            self.nonfinite -= 1
        else:
            self.total -= old
        new = _exact(x) if math.isfinite(x) else None
        if new is None:
            self.nonfinite += 1
        else:
            self.total += new
        self.parts[index] = new
        self.values[index] = x

    def value(self) -> float:
        if self.nonfinite:
            return math.fsum(self.values)
        return self.total / _EXACT_ONE  # int / int is correctly rounded


@dataclasses.dataclass(eq=False)
class DemandStarts:
    """Everything about a batch demand's allowed starts that the room left does not change:
    the starts of its options (padded), their costs and rates, and the flat indices that read
    whether a start fits off the room of its pool and route rows (`PlanState.best_fit`)."""

    ks: np.ndarray  # int64 [m]: its options
    s: np.ndarray  # int64 [m, W]
    valid: np.ndarray  # bool [m, W]
    cost: np.ndarray  # float64 [m, W]
    rate: np.ndarray  # int64 [m, W]
    gang: np.ndarray  # int64 [m, 1]
    pools: np.ndarray  # int64 [m]
    short_a: np.ndarray  # int64 [m, W]: flat index p * S + s into the pool rows [m, S] ...
    short_b: np.ndarray  # ... and p * S + s + n (a window of one row: contiguous when flat)
    moving: np.ndarray  # bool [m]
    all_moving: bool
    rel: int
    route_links: np.ndarray | None  # int64: the links of the distinct routes, one after another
    route_seg: np.ndarray | None  # int64 [routes]: where each route's links begin
    room_at: np.ndarray | None  # int64 [moving, W]: flat index of (route, s - 1 - rel) into
    # the routes' room from rel on, [routes, S - rel]
    route_empty: np.ndarray | None  # bool [moving, W]: rel:s empty (never, for a move)
    moving_rate: np.ndarray | None  # int64 [moving, W]
    grams_f: np.ndarray | None = None  # float64 [m, W], filled when first needed
    grams: np.ndarray | None = None  # int64 [m, W]


class FitTables:
    """What every `PlanState` of one problem shares: per-demand start tables (`DemandStarts`,
    kept up to `FIT_CACHE_CELLS` cells), the service rows as plain lists, and each slot's
    order of the service rows by true cost per quantum."""

    def __init__(self, problem: TimedProblem, pricer: StartPricer, routes: Routes):
        self.pb, self.pr, self.routes = problem, pricer, routes
        sv = problem.services
        self.cells = 0
        self.demands: dict[int, DemandStarts] = {}
        self.sv_start = [int(x) for x in sv.start]
        self.sv_pool = [int(x) for x in sv.pool]
        self.sv_kappa = [int(x) for x in sv.kappa]
        self.sv_route = [int(x) for x in sv.route]
        self.sv_tau = [int(x) for x in sv.tau]
        self.sv_routed = [r >= 0 and t > 0 for r, t in zip(self.sv_route, self.sv_tau)]
        self.sv_transfer = [float(x) for x in sv.transfer_per_quantum]
        self.sv_gang = [int(x) for x in sv.gang]
        self.sv_penalty = [float(x) for x in sv.penalty_per_quantum]
        self.sv_owner = np.repeat(np.arange(len(sv.rows)), np.diff(sv.start))
        self.sv_pool_np = sv.pool.astype(np.int64)
        # Each row's route links, padded with the row of unlimited room (also at home).
        n_links = problem.bandwidth.shape[0]
        self.sv_padded = (routes.padded[np.maximum(sv.route, 0)] if routes.count
                          else np.zeros((len(sv.pool), 1), dtype=np.int64))
        self.sv_padded = np.where((sv.route >= 0)[:, None], self.sv_padded, n_links)
        self.rows_on_pool = [np.flatnonzero(sv.pool == p) for p in range(problem.avail.shape[0])]
        self.route_padded = [routes.padded[r] for r in range(routes.count)]
        self._true_order: np.ndarray | None = None

    def true_order(self) -> np.ndarray:
        """[S, J]: per slot, the service rows grouped by service (``sv.start``), each group by
        true cost per quantum (stable): `cover_service_slot`'s default order."""
        if self._true_order is None:
            sv = self.pb.services
            kappa = sv.kappa.astype(np.float64)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                unit = np.where(kappa > 0, sv.rent / kappa, np.inf) + sv.transfer_per_quantum[:, None]
            self._true_order = self.orders(unit)
        return self._true_order

    def orders(self, unit: np.ndarray) -> np.ndarray:
        """[S, J]: per slot, the rows grouped by service, each group by ``unit[J, t]`` (stable,
        as ``np.argsort(kind="stable")`` of the group's slice)."""
        S = self.pb.slots
        owner = np.broadcast_to(self.sv_owner, (S, len(self.sv_owner)))
        return np.lexsort((unit.T, owner), axis=-1)

    def demand(self, d: int) -> DemandStarts | None:
        """Demand ``d``'s start table (None without options); kept within the cell budget."""
        got = self.demands.get(d)
        if got is not None:
            return got
        b, pr, S = self.pb.batch, self.pr, self.pb.slots
        ks = np.arange(b.start[d], b.start[d + 1])
        if not len(ks):
            return None
        s, valid = pr.starts(ks)
        m, W = s.shape
        short_a = (np.arange(m)[:, None] * S + s).astype(np.int32)
        short_b = (short_a + pr.n[ks, None]).astype(np.int32)
        moving = pr.moves[ks]
        rate = pr.rate(ks, s)
        rel = int(b.release[d])
        route_links = route_seg = room_at = route_empty = moving_rate = None
        if np.any(moving) and self.routes.count:
            distinct, row = np.unique(pr.route[ks[moving]], return_inverse=True)
            lists = [self.routes.links[int(r)] if len(self.routes.links[int(r)])
                     else np.array([self.pb.bandwidth.shape[0]]) for r in distinct]
            route_links = np.concatenate(lists).astype(np.int64)
            route_seg = np.cumsum([0] + [len(x) for x in lists[:-1]]).astype(np.int64)
            sm = s[moving]
            room_at = (row.reshape(-1, 1) * max(S - rel, 1) + np.clip(sm - 1 - rel, 0, None)).astype(np.int32)
            route_empty = sm <= rel
            moving_rate = rate if moving.all() else rate[moving]
        out = DemandStarts(ks, s, valid, pr.cost(ks, s), rate, pr.gang[ks, None],
                           pr.pool[ks], short_a, short_b, moving, bool(moving.all()), rel,
                           route_links, route_seg, room_at, route_empty, moving_rate)
        if self.cells + s.size <= FIT_CACHE_CELLS:
            self.demands[d] = out
            self.cells += s.size
        return out

    @staticmethod
    def grams_of(t: DemandStarts, pr: StartPricer) -> tuple[np.ndarray, np.ndarray]:
        if t.grams is None:
            t.grams_f = pr.grams(t.ks, t.s)
            t.grams = _grams_int(t.grams_f)
        return t.grams_f, t.grams


def fit_tables(problem: TimedProblem, pricer: StartPricer, routes: Routes) -> FitTables:
    """The `FitTables` of ``pricer``'s problem (built once, kept on the pricer, shared by its
    plan states)."""
    got = pricer.fit_tables
    if got is None or got.pb is not problem or got.routes is not routes:
        got = FitTables(problem, pricer, routes)
        pricer.fit_tables = got
    return got


class PlanState:
    """A plan under construction or search: choices, the room left in every row, costs.

    The room of the pool-slot and link-slot rows is kept exactly; the least room of each
    route per slot and the range-minimum tables over it (for `fits`, which prices many options
    at once) are refreshed when asked for, after changes."""

    def __init__(self, problem: TimedProblem, pricer: StartPricer, routes: Routes):
        self.pb, self.pr, self.routes = problem, pricer, routes
        self.tab = fit_tables(problem, pricer, routes)
        b, sv = problem.batch, problem.services
        self.n_batch = len(b.rows)
        self.option = np.full(self.n_batch, -1, dtype=np.int64)
        self.start = np.full(self.n_batch, -1, dtype=np.int64)
        self.batch_cost = b.penalty.astype(np.float64).copy()
        self.batch_grams = np.zeros(self.n_batch, dtype=np.int64)
        self.batch_rate = np.zeros(self.n_batch, dtype=np.int64)
        J, S = len(sv.pool), problem.slots
        self.replicas = np.zeros((J, S), dtype=np.int64)
        self.served = np.zeros((J, S), dtype=np.int64)
        self.service_owner = self.tab.sv_owner
        self.service_cost = (sv.load * sv.penalty_per_quantum[:, None]).astype(np.float64)
        self._batch_total = ExactTotal(self.batch_cost)
        self._service_total = ExactTotal(self.service_cost)
        self.service_grams = np.zeros((J, S), dtype=np.int64)
        self.pool_free = problem.avail.astype(np.int64).copy()
        self.service_held = np.zeros(problem.avail.shape, dtype=np.int64)  # GPUs of replicas
        # The links' room, with one more row of unlimited room (the routes' padding).
        n_links = problem.bandwidth.shape[0]
        self._link_ext = np.full((n_links + 1, S), HUGE, dtype=np.int64)
        self._link_ext[:n_links] = problem.bandwidth
        self.link_free = self._link_ext[:n_links]
        self.carbon_free = HUGE if problem.carbon_cap_g is None else int(problem.carbon_cap_g)
        self.pool_min = RangeMin(self.pool_free)
        self._route_free = routes.minima(self.link_free)
        self._routes_stale = False
        self._route_min = RangeMin(self._route_free) if routes.count else None

    # -- views -------------------------------------------------------------------------------
    def objective(self) -> float:
        """math.fsum of the batch costs plus math.fsum of the service costs (kept exactly)."""
        return self._batch_total.value() + self._service_total.value()

    def unplaced(self) -> int:
        """Must-serve batch demands without a start."""
        return int(np.count_nonzero(self.pb.batch.must_serve & (self.option < 0)))

    def choice(self) -> TimedChoice:
        return TimedChoice(self.option.copy(), self.start.astype(np.int32),
                           self.replicas.copy(), self.served.copy())

    def _set_service_cost(self, i: int, t: int, value: float) -> None:
        self._service_total.set(i * self.pb.slots + t, value)

    # -- room --------------------------------------------------------------------------------
    @property
    def route_free(self) -> np.ndarray:
        """[routes, S]: the least room of each route's links, slot by slot."""
        if self._routes_stale:
            self._routes_stale = False
            if self.routes.count:
                self._route_free[:] = self._link_ext[self.routes.padded].min(axis=1)
                self._route_min.update(np.arange(self.routes.count))
        return self._route_free

    @property
    def route_min(self) -> RangeMin | None:
        if self._routes_stale:
            self.route_free  # noqa: B018 (refreshes the table's rows)
        return self._route_min

    def fits(self, ks: np.ndarray, s: np.ndarray, rate: np.ndarray, grams: np.ndarray) -> np.ndarray:
        """Whether each (option, start) fits the room left (broadcast over [m, W])."""
        pr = self.pr
        ks2 = ks[:, None]
        ok = self.pool_min.query(pr.pool[ks2], s, s + pr.n[ks2]) >= pr.gang[ks2]
        return ok & self.fits_links_and_carbon(ks, s, rate, grams)

    def fits_links_and_carbon(self, ks: np.ndarray, s: np.ndarray, rate: np.ndarray,
                              grams: np.ndarray) -> np.ndarray:
        """Whether each (option, start) fits the link-slot rows and the carbon cap."""
        pr = self.pr
        ok = np.ones(s.shape, dtype=bool)
        moving = pr.moves[ks]
        route_min = self.route_min
        if np.any(moving) and route_min is not None:
            sub = ks[moving]
            room = route_min.query(pr.route[sub, None], pr.rel[sub, None], s[moving])
            ok[moving] &= room >= rate[moving]
        if self.carbon_free < HUGE:
            ok &= grams <= self.carbon_free
        return ok

    def fits_one(self, k: int, s: int, rate: int, grams: int) -> bool:
        """Whether option ``k`` at start ``s`` fits the room left (plain slices: one start)."""
        pr = self.pr
        p, n = int(pr.pool[k]), int(pr.n[k])
        if int(self.pool_free[p, s: s + n].min()) < int(pr.gang[k]):
            return False
        if pr.moves[k] and self.routes.count:
            rel = int(pr.rel[k])
            if s > rel and int(self._link_ext[self.tab.route_padded[int(pr.route[k])], rel:s].min()) < rate:
                return False
        return not (self.carbon_free < HUGE and grams > self.carbon_free)

    def start_terms(self, d: int, k: int, s: int) -> tuple[float, int, int]:
        """(cost, rate, grams) of demand ``d``'s option ``k`` at start ``s``."""
        pr = self.pr
        t = self.tab.demands.get(d)
        if t is not None:
            i, w = k - int(t.ks[0]), s - int(pr.first[k])
            _gf, grams = FitTables.grams_of(t, pr)
            return float(t.cost[i, w]), int(t.rate[i, w]), int(grams[i, w])
        one, sm = np.array([k]), np.array([[s]])
        grams_f = pr.grams(one, sm)
        return (float(pr.cost(one, sm, grams_f)[0, 0]), int(pr.rate(one, sm)[0, 0]),
                int(_grams_int(grams_f)[0, 0]))

    # -- batch -------------------------------------------------------------------------------
    def place(self, d: int, k: int, s: int, cost: float, rate: int, grams: int) -> None:
        """Put batch demand ``d`` on option ``k`` at start ``s`` (it must be unserved now)."""
        pr = self.pr
        p, n, g = int(pr.pool[k]), int(pr.n[k]), int(pr.gang[k])
        self.pool_free[p, s: s + n] -= g
        self.pool_min.update(p)
        if rate and pr.moves[k]:
            self.link_free[self.routes.links[int(pr.route[k])], int(pr.rel[k]): s] -= rate
            self._routes_stale = True
        self.carbon_free -= grams if self.carbon_free < HUGE else 0
        self.option[d], self.start[d] = k, s
        self._batch_total.set(d, cost)
        self.batch_grams[d], self.batch_rate[d] = grams, rate

    def remove(self, d: int) -> None:
        """Make batch demand ``d`` unserved."""
        k = int(self.option[d])
        if k < 0:
            return
        pr = self.pr
        s = int(self.start[d])
        p, n, g = int(pr.pool[k]), int(pr.n[k]), int(pr.gang[k])
        self.pool_free[p, s: s + n] += g
        self.pool_min.update(p)
        rate = int(self.batch_rate[d])
        if rate and pr.moves[k]:
            self.link_free[self.routes.links[int(pr.route[k])], int(pr.rel[k]): s] += rate
            self._routes_stale = True
        if self.carbon_free < HUGE:
            self.carbon_free += int(self.batch_grams[d])
        self.option[d] = self.start[d] = -1
        self._batch_total.set(d, self.pb.batch.penalty[d])
        self.batch_grams[d] = self.batch_rate[d] = 0

    def best_fit(self, d: int, rc_extra=None) -> tuple[int, int, float, int, int, float]:
        """(option, start, true cost, rate, grams, ranking value) of demand ``d``'s cheapest
        start that fits now; option -1 when none fits. Ranked by true cost, or by the reduced
        cost when ``rc_extra`` (a `ReducedPrices`) is given; the first cheapest in (option,
        start) order.

        A start fits its pool when no slot of its run has less room than the gang (a prefix
        count of the short slots of each option's pool row), its route when the running
        minimum of the route's room from the release covers its rate."""
        t = self.tab.demand(d)
        if t is None:
            return -1, -1, math.inf, 0, 0, math.inf
        short = (np.take(self.pool_free, t.pools, axis=0) < t.gang).reshape(-1)
        count = np.zeros(len(short) + 1, dtype=np.int64)
        np.cumsum(short, out=count[1:])
        ok = np.take(count, t.short_b) == np.take(count, t.short_a)
        ok &= t.valid
        if t.route_links is not None:
            room = np.minimum.reduceat(np.take(self._link_ext, t.route_links, axis=0), t.route_seg,
                                       axis=0)[:, t.rel:]
            room = np.minimum.accumulate(room, axis=1)
            got = np.take(room, t.room_at)
            if t.route_empty.any():
                got[t.route_empty] = HUGE
            if t.all_moving:
                ok &= got >= t.moving_rate
            else:
                ok[t.moving] &= got >= t.moving_rate
        need_grams = self.carbon_free < HUGE or (rc_extra is not None and rc_extra.mult.carbon)
        if need_grams:
            grams_f, grams = FitTables.grams_of(t, self.pr)
            if self.carbon_free < HUGE:
                ok &= grams <= self.carbon_free
        else:
            grams_f = grams = None
        if rc_extra is None:
            rank = np.where(ok, t.cost, np.inf)
        else:
            extra = rc_extra.batch(t.ks, t.s, t.rate,
                                   grams_f if grams_f is not None else np.zeros(t.s.shape, dtype=np.int64))
            rank = np.where(ok, t.cost + extra, np.inf)
        at = int(np.argmin(rank))
        i, w = divmod(at, rank.shape[1])
        value = float(rank[i, w])
        if not math.isfinite(value):
            return -1, -1, math.inf, 0, 0, math.inf
        return (int(t.ks[i]), int(t.s[i, w]), float(t.cost[i, w]), int(t.rate[i, w]),
                int(grams[i, w]) if grams is not None else 0, value)

    def price_fitting(self, ks: np.ndarray, rc_extra=None):
        """Per option of ``ks``: (rank, start, cost, rate, grams) of its best fitting start."""
        pr = self.pr
        s, valid = pr.starts(ks)
        if self.carbon_free < HUGE or (rc_extra is not None and rc_extra.mult.carbon):
            grams_f = pr.grams(ks, s)
            grams = _grams_int(grams_f)
        else:  # no cap and no carbon multiplier: the grams matter nowhere
            grams_f = grams = np.zeros(s.shape, dtype=np.int64)
        cost = pr.cost(ks, s)
        rate = pr.rate(ks, s)
        ok = valid & self.fits(ks, s, rate, grams)
        rank = cost if rc_extra is None else cost + rc_extra.batch(ks, s, rate, grams_f)
        rank = np.where(ok, rank, np.inf)
        j = np.argmin(rank, axis=1)
        rows = np.arange(len(ks))
        return rank[rows, j], s[rows, j], cost[rows, j], rate[rows, j], grams[rows, j]

    def displacing_fit(self, d: int) -> tuple[int, int]:
        """(option, start) of demand ``d``'s cheapest start that fits once the services' replicas
        on its pool slots are taken away ((-1, -1) if none)."""
        pr, b = self.pr, self.pb.batch
        ks = np.arange(b.start[d], b.start[d + 1])
        if not len(ks):
            return -1, -1
        s, valid = pr.starts(ks)
        grams_f = pr.grams(ks, s)
        cost = pr.cost(ks, s, grams_f)
        ok = valid & self.fits_links_and_carbon(ks, s, pr.rate(ks, s), _grams_int(grams_f))
        for i, k in enumerate(ks):
            room = self.pool_free[pr.pool[k]] + self.service_held[pr.pool[k]]
            window = np.lib.stride_tricks.sliding_window_view(room, int(pr.n[k])).min(axis=1)
            ok[i] &= window[s[i]] >= pr.gang[k]
        cost = np.where(ok, cost, np.inf)
        flat = int(np.argmin(cost))
        if not math.isfinite(cost.ravel()[flat]):
            return -1, -1
        i, w = divmod(flat, cost.shape[1])
        return int(ks[i]), int(s[i, w])

    def service_slots_on(self, p: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """(service, slot) pairs holding replicas on pool ``p`` in slots lo..hi-1."""
        if not self.tab.sv_pool or not self.service_held[p, lo:hi].any():
            return []
        rows = self.tab.rows_on_pool[p]
        held = self.replicas[rows, lo:hi] > 0
        return sorted({(int(self.service_owner[rows[r]]), lo + int(t)) for r, t in zip(*np.nonzero(held))})

    # -- services ----------------------------------------------------------------------------
    def _link_slot(self, J: int, t: int, delta: int) -> None:
        """Add ``delta`` quanta to the room of service row J's route links in slot t."""
        self.link_free[self.routes.links[self.tab.sv_route[J]], t] += delta
        self._routes_stale = True

    def clear_service_slot(self, i: int, t: int) -> None:
        tab = self.tab
        lo, hi = tab.sv_start[i], tab.sv_start[i + 1]
        gang = tab.sv_gang[i]
        on = np.flatnonzero(self.replicas[lo:hi, t] + self.served[lo:hi, t]) + lo  # both >= 0
        for J in on.tolist():
            m, u = int(self.replicas[J, t]), int(self.served[J, t])
            p = tab.sv_pool[J]
            self.pool_free[p, t] += m * gang
            self.service_held[p, t] -= m * gang
            self.pool_min.update(p)
            if tab.sv_routed[J] and u:
                self._link_slot(J, t, tab.sv_tau[J] * u)
            if self.carbon_free < HUGE:
                self.carbon_free += int(self.service_grams[J, t])
            self.replicas[J, t] = self.served[J, t] = self.service_grams[J, t] = 0
        self._set_service_cost(i, t, float(self.pb.services.load[i, t]) * tab.sv_penalty[i])

    def cover_service_slot(self, i: int, t: int, rank: np.ndarray | None = None,
                           order: np.ndarray | None = None, prices=None) -> None:
        """Serve service ``i``'s load in slot ``t`` (cleared before) as `plan_cover` plans it:
        greedily, pools by ``rank`` (per-quantum cost; the true one by default; ``order``: the
        rows, global indices, already in that order), whole replicas where they pay for
        themselves against the penalty, within the room of every row; or by `cell_cover` at
        true costs or ``prices`` where that is cheaper."""
        placed, cost = self.plan_cover(i, t, rank, order, prices=prices)
        if placed is not None:
            self._apply_cover(i, t, placed, cost)

    def plan_cover(self, i: int, t: int, rank: np.ndarray | None = None,
                   order: np.ndarray | None = None, freed: bool = False, prices=None):
        """(placements [(row, replicas, served, grams)], cost) that `cover_service_slot` would
        make, without changing anything; ``freed``: in the room the cell would have once
        cleared (its own replicas given back). (None, None) when the load is nil.

        At true costs (no ``rank``, ``order``) or at ``prices`` (per replica and per quantum of
        the cell's rows, as lists: reduced costs), the cheaper at those costs of the greedy
        cover and `timed_cells.cell_cover`'s."""
        tab, sv = self.tab, self.pb.services
        lo, hi = tab.sv_start[i], tab.sv_start[i + 1]
        remaining = int(sv.load[i, t])
        if remaining <= 0 or hi <= lo:
            return None, None
        gang = tab.sv_gang[i]
        pen = tab.sv_penalty[i]
        true_costs = rank is None and order is None and prices is None
        if order is None:
            order = tab.true_order()[t, lo:hi] if rank is None else lo + np.argsort(rank, kind="stable")
        capped = self.carbon_free < HUGE
        carbon_free = self.carbon_free
        pool_room = self.pool_free[tab.sv_pool_np[order], t]
        col = None  # the links' room in slot t (with the cell's own traffic back, if freed)
        if freed:
            own_m = self.replicas[lo:hi, t]
            own = np.flatnonzero(own_m + self.served[lo:hi, t])
            if len(own):
                pool_room = pool_room + self.replicas[order, t] * gang
                if capped:
                    carbon_free += int(self.service_grams[lo + own, t].sum())
                col = self._links_room(i, t, freed=True)
        carbon_before = carbon_free if capped else None
        room_before = pool_room
        # A service's rows are on distinct pools: its own replicas leave the others' pools
        # alone, so each row's pool room is read once.
        pool_room = pool_room.tolist()
        rows = order.tolist()
        rooms = None  # the routes' room of the rows in slot t, read when first needed
        cost = 0.0
        placed = []
        kappa = tab.sv_kappa
        for at, J in enumerate(rows):
            if remaining <= 0:
                break
            k = kappa[J]
            if k <= 0 or (gang > 0 and pool_room[at] < gang):
                continue  # no replica fits: it would serve nothing
            rent, tr = float(sv.rent[J, t]), tab.sv_transfer[J]
            max_m = pool_room[at] // gang if gang > 0 else HUGE
            max_u = min(remaining, max_m * k)
            routed = tab.sv_routed[J]
            if routed:
                if rooms is None:
                    if col is None:
                        col = self._link_ext[:, t].copy()
                    rooms = col[tab.sv_padded[order]].min(axis=1).tolist()
                max_u = min(max_u, rooms[at] // tab.sv_tau[J])
            if max_u <= 0:
                continue
            full = max_u // k
            part = max_u - full * k
            use_full = full if rent + tr * k < pen * k else 0
            use_part = part if part and rent + tr * part < pen * part else 0
            if not use_full and not use_part:
                continue
            m = use_full + (1 if use_part else 0)
            u = use_full * k + use_part
            grams_per = float(sv.co2_kg[J, t]) * 1000.0
            if capped:
                while m > 0 and _grams_one(m * grams_per) > carbon_free:
                    m -= 1
                    u = min(u, m * k)
                if m <= 0:
                    continue
            grams = _grams_one(m * grams_per)
            placed.append((J, m, u, grams))
            if routed:
                col[self.routes.links[tab.sv_route[J]]] -= tab.sv_tau[J] * u
                rooms = None  # the links changed
            if capped:
                carbon_free -= grams
            cost += m * rent + tr * u
            remaining -= u
        cost += remaining * pen
        if (true_costs or prices is not None) and placed:
            room = np.empty(hi - lo, dtype=np.int64)  # replicas that fit, rows in their own order
            room[order - lo] = room_before // gang if gang > 0 else int(sv.load[i, t])
            if prices is None:
                rent, transfer, value = sv.rent[lo:hi, t].tolist(), tab.sv_transfer[lo:hi], cost
            else:
                rent, transfer = prices
                value = remaining * pen + sum(rent[J - lo] * m + transfer[J - lo] * u for J, m, u, _ in placed)
            better = self._cheapest_cover(i, t, freed, room.tolist(), rent, transfer, value, carbon_before)
            if better is not None:
                return better
        return placed, cost

    def _links_room(self, i: int, t: int, freed: bool) -> np.ndarray:
        """The links' room in slot ``t`` (a copy, with the row of unlimited room), with
        service ``i``'s own traffic then given back if ``freed``."""
        col = self._link_ext[:, t].copy()
        if freed:
            tab = self.tab
            for J in range(tab.sv_start[i], tab.sv_start[i + 1]):
                u = int(self.served[J, t])
                if u and tab.sv_routed[J]:
                    col[self.routes.links[tab.sv_route[J]]] += tab.sv_tau[J] * u
        return col

    def _cheapest_cover(self, i: int, t: int, freed: bool, room: list, rent: list, transfer: list,
                        greedy: float, carbon_free: int | None):
        """`timed_cells.cell_cover` of service ``i``'s slot ``t`` in ``room`` (replicas per
        row) at ``rent`` per replica and ``transfer`` per quantum, as `plan_cover`'s
        (placements, true cost) if it fits the links (the cell's own traffic given back if
        ``freed``) and the carbon left, and costs less than ``greedy`` at those prices; else
        None."""
        tab, sv = self.tab, self.pb.services
        lo, hi = tab.sv_start[i], tab.sv_start[i + 1]
        got = cell_cover(int(sv.load[i, t]), tab.sv_penalty[i], tab.sv_kappa[lo:hi], rent, transfer, room)
        if got is None or got[1] >= greedy - 1e-12 * max(abs(greedy), 1.0):
            return None
        rows = got[0]
        col = None
        placed = []
        for j, m, u in rows:
            J = lo + j
            if tab.sv_routed[J]:
                if col is None:
                    col = self._links_room(i, t, freed)
                links = self.routes.links[tab.sv_route[J]]
                col[links] -= tab.sv_tau[J] * u
                if len(links) and col[links].min() < 0:
                    return None
            grams = _grams_one(m * float(sv.co2_kg[J, t]) * 1000.0)
            if carbon_free is not None:
                carbon_free -= grams
                if carbon_free < 0:
                    return None
            placed.append((J, m, u, grams))
        served = sum(u for _, _, u in rows)
        cost = sum(float(sv.rent[J, t]) * m + tab.sv_transfer[J] * u for J, m, u, _ in placed)
        return placed, cost + (int(sv.load[i, t]) - served) * tab.sv_penalty[i]

    def _apply_cover(self, i: int, t: int, placed, cost: float) -> None:
        """Make the placements of `plan_cover` (the cell cleared)."""
        tab = self.tab
        gang = tab.sv_gang[i]
        capped = self.carbon_free < HUGE
        for J, m, u, grams in placed:
            p = tab.sv_pool[J]
            self.replicas[J, t], self.served[J, t] = m, u
            self.service_grams[J, t] = grams
            self.pool_free[p, t] -= m * gang
            self.service_held[p, t] += m * gang
            self.pool_min.update(p)
            if tab.sv_routed[J]:
                self._link_slot(J, t, -tab.sv_tau[J] * u)
            if capped:
                self.carbon_free -= grams
        self._set_service_cost(i, t, cost)

    def recover_slot(self, i: int, t: int) -> bool:
        """Cover service ``i``'s slot ``t`` again at true cost in the room it would have once
        cleared; made (True) only if it costs less. Otherwise the plan stays as it was (but for
        the grams of its replicas, recounted as `restore_service_slot` counts them)."""
        placed, cost = self.plan_cover(i, t, freed=True)
        if placed is None:
            return False
        current = float(self.service_cost[i, t])
        if cost < current - 1e-12 * max(abs(current), 1.0):
            self.clear_service_slot(i, t)
            self._apply_cover(i, t, placed, cost)
            return True
        if self.carbon_free < HUGE:
            sv, lo, hi = self.pb.services, self.tab.sv_start[i], self.tab.sv_start[i + 1]
            for J in (np.flatnonzero(self.replicas[lo:hi, t] + self.served[lo:hi, t]) + lo).tolist():
                m = int(self.replicas[J, t])
                grams = _grams_one(m * float(sv.co2_kg[J, t]) * 1000.0)
                self.carbon_free += int(self.service_grams[J, t]) - grams
                self.service_grams[J, t] = grams
        return False

    def service_slot_snapshot(self, i: int, t: int):
        lo, hi = self.tab.sv_start[i], self.tab.sv_start[i + 1]
        return (self.replicas[lo:hi, t].copy(), self.served[lo:hi, t].copy(), float(self.service_cost[i, t]))

    def restore_service_slot(self, i: int, t: int, snap) -> None:
        """Put back a snapshot of service ``i``'s slot ``t`` (the slot must be cleared and the
        room still there: it was freed by clearing it)."""
        tab, sv = self.tab, self.pb.services
        lo = tab.sv_start[i]
        gang = tab.sv_gang[i]
        replicas, served, cost = snap
        for jj in np.flatnonzero((replicas > 0) | (served > 0)).tolist():
            J = lo + jj
            m, u = int(replicas[jj]), int(served[jj])
            p = tab.sv_pool[J]
            self.pool_free[p, t] -= m * gang
            self.service_held[p, t] += m * gang
            self.pool_min.update(p)
            if tab.sv_routed[J] and u:
                self._link_slot(J, t, -tab.sv_tau[J] * u)
            grams = _grams_one(m * float(sv.co2_kg[J, t]) * 1000.0)
            if self.carbon_free < HUGE:
                self.carbon_free -= grams
            self.replicas[J, t], self.served[J, t], self.service_grams[J, t] = m, u, grams
        self._set_service_cost(i, t, cost)


class ReducedPrices:
    """The multiplier terms of a start's reduced cost (added to its true cost)."""

    def __init__(self, relax: TimedRelaxation, mult: Multipliers):
        self.pr = relax.pricer
        self.mult = mult
        self.mu_prefix = prefix(mult.pool)
        self.route_prefix = relax.routes.sums(prefix(mult.link))
        self.relax = relax

    def batch(self, ks: np.ndarray, s: np.ndarray, rate: np.ndarray, grams: np.ndarray) -> np.ndarray:
        pr = self.pr
        if self.mu_prefix.any():
            p = pr.pool[ks, None]
            out = pr.gang[ks, None] * (self.mu_prefix[p, s + pr.n[ks, None]] - self.mu_prefix[p, s])
        else:
            out = np.zeros(s.shape)
        if self.mult.carbon:
            out = out + self.mult.carbon * grams
        moving = pr.moves[ks]
        if np.any(moving) and self.route_prefix.any():
            r = pr.route[ks[moving], None]
            rel = pr.rel[ks[moving], None]
            out[moving] += rate[moving] * (self.route_prefix[r, s[moving]] - self.route_prefix[r, rel])
        return out

    def service(self, i: int, t: int) -> np.ndarray:
        sv = self.relax.problem.services
        rows = np.arange(sv.start[i], sv.start[i + 1])
        return self.relax.service_unit_costs(self.mult, rows)[:, t]


class Builder:
    """A plan at given multipliers: batch demands by regret (priced once, all together; the
    regret raised by `LOSS_WEIGHT` of what leaving the demand out costs), each at
    its proposed start if that still fits, else at its best reduced-cost start that does; then
    services slot by slot in the room left (services are flexible slot by slot, batch runs
    are not)."""

    def __init__(self, problem: TimedProblem, relax: TimedRelaxation, routes: Routes):
        self.pb, self.relax, self.routes = problem, relax, routes

    def build(self, mult: Multipliers, stopped: Callable[[], bool],
              services_first: bool = False) -> PlanState | None:
        pb, pr = self.pb, self.relax.pricer
        state = PlanState(pb, pr, self.routes)
        prices = ReducedPrices(self.relax, mult)
        if services_first and not self._cover_services(state, mult, stopped):
            return None
        b = pb.batch
        alt = self.relax.alt  # each demand's penalty; inf if it must be served
        open_ = np.flatnonzero(np.diff(b.start) > 0)
        while len(open_):
            if stopped():
                return None
            ks = _options_of(b.start, open_)
            rank = np.empty(len(ks))
            start = np.empty(len(ks), dtype=np.int64)
            for lo in range(0, len(ks), 1 << 14):
                part = ks[lo: lo + (1 << 14)]
                for sub in pr.chunks(part):
                    if stopped():
                        return None
                    r, s, _c, _rt, _g = state.price_fitting(sub, prices)
                    off = lo + int(np.searchsorted(part, sub[0]))
                    rank[off: off + len(sub)], start[off: off + len(sub)] = r, s
            owner = pr.owner[ks]
            seg = np.searchsorted(owner, open_)  # options of each open demand are contiguous
            best = np.minimum.reduceat(rank, seg)
            at = rank == np.repeat(best, np.diff(np.append(seg, len(ks))))
            pick_first = np.ones(int(at.sum()), dtype=bool)
            idx = np.flatnonzero(at)
            pick_first[1:] = owner[idx[1:]] != owner[idx[:-1]]
            chosen = np.full(len(open_), -1, dtype=np.int64)
            chosen[np.searchsorted(open_, owner[idx[pick_first]])] = idx[pick_first]
            masked = rank.copy()
            masked[chosen[chosen >= 0]] = np.inf
            penalty = alt[open_]
            second = np.minimum(np.minimum.reduceat(masked, seg), penalty)
            propose = np.isfinite(best) & (best <= penalty)
            regret = np.full(len(open_), -np.inf)
            regret[propose] = second[propose] - best[propose]
            # Ranked by regret plus `LOSS_WEIGHT` of what leaving the demand out would cost
            # (its penalty over its best start; must-serve demands come first anyway).
            optional = propose & np.isfinite(penalty)
            regret[optional] += LOSS_WEIGHT * (penalty[optional] - best[optional])
            order = np.lexsort((-regret, ~b.must_serve[open_]))
            order = order[propose[order]]
            if not len(order):
                break
            placed = 0
            for step, j in enumerate(order):
                if step % 256 == 255 and stopped():
                    return None
                d, row = int(open_[j]), int(chosen[j])
                k, s = int(ks[row]), int(start[row])
                cost, rate, grams = state.start_terms(d, k, s)
                if state.fits_one(k, s, rate, grams):
                    state.place(d, k, s, cost, rate, grams)
                    placed += 1
                else:  # its proposal no longer fits: its best start that still does
                    k, s, cost, rate_, grams_, rank_ = state.best_fit(d, prices)
                    if k >= 0 and rank_ <= alt[d]:
                        state.place(d, k, s, cost, rate_, grams_)
                        placed += 1
            break  # one pass: every demand was placed at its best fitting start, or none fits
        if not services_first and not self._cover_services(state, mult, stopped):
            return None
        return state

    def build_from(self, picks: PoolPicks, mult: Multipliers, stopped: Callable[[], bool]) -> PlanState | None:
        """A plan after the pools' packings (`timed_pools.PoolPicks`): each demand at the most
        profitable start a pool chose for it while that fits, then the other demands at their
        best fitting reduced-cost start, then the services, the rows the packings gave
        replicas first."""
        pb, pr = self.pb, self.relax.pricer
        b = pb.batch
        state = PlanState(pb, pr, self.routes)
        prices = ReducedPrices(self.relax, mult)
        alt = self.relax.alt  # each demand's penalty; inf if it must be served
        for step, j in enumerate(np.argsort(-picks.profit, kind="stable")):
            if step % 256 == 255 and stopped():
                return None
            k, s = int(picks.option[j]), int(picks.start[j])
            d = int(pr.owner[k])
            if state.option[d] >= 0:
                continue
            cost, rate, grams = state.start_terms(d, k, s)
            if state.fits_one(k, s, rate, grams):
                state.place(d, k, s, cost, rate, grams)
        rest = np.flatnonzero((state.option < 0) & (np.diff(b.start) > 0))
        # Must-serve first, then by penalty: what leaving the demand out would cost.
        for step, d in enumerate(rest[np.lexsort((-b.penalty[rest], ~b.must_serve[rest]))].tolist()):
            if step % 256 == 255 and stopped():
                return None
            k, s, cost, rate, grams, rank = state.best_fit(d, prices)
            if k >= 0 and rank <= alt[d]:
                state.place(d, k, s, cost, rate, grams)
        unit = None
        if len(pb.services.rows):  # rows with replicas in their pool's packing come first
            unit = self.relax.service_unit_costs(mult, np.arange(len(pb.services.pool)))
            finite = np.abs(unit[np.isfinite(unit)])
            ahead = 2.0 * float(finite.max(initial=0.0)) + 1.0
            unit = np.where(picks.replicas > 0, unit - ahead, unit)
        if not self._cover_services(state, mult, stopped, unit):
            return None
        return state

    def _cover_services(self, state: PlanState, mult: Multipliers, stopped, unit=None) -> bool:
        """Every service slot covered by reduced cost (or ``unit``'s order) in the room left;
        False when stopped."""
        sv = self.pb.services
        if len(sv.rows):
            reduced = None
            if unit is None:
                rows = np.arange(len(sv.pool))
                reduced = self.relax.service_prices(mult, rows)
                unit = self.relax.service_unit_costs(mult, rows, reduced)
            orders = state.tab.orders(unit)  # per slot, each service's rows by reduced cost
            bounds = state.tab.sv_start
            for t in range(self.pb.slots):
                row = orders[t]
                if reduced is not None:
                    per_replica, per_quantum = reduced[0][:, t].tolist(), reduced[1][:, t].tolist()
                for i in range(len(sv.rows)):
                    lo, hi = bounds[i], bounds[i + 1]
                    prices = None if reduced is None else (per_replica[lo:hi], per_quantum[lo:hi])
                    state.cover_service_slot(i, t, order=row[lo:hi], prices=prices)
                if stopped():
                    return False
        return True


def _options_of(start: np.ndarray, demands: np.ndarray) -> np.ndarray:
    lo = start[demands]
    counts = start[demands + 1] - lo
    offsets = np.zeros(len(demands), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    return np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(lo - offsets, counts)


class Relocate:
    """Each batch demand in turn leaves its place and takes its cheapest fitting (pool, start)
    - another start in its window, another pool - or stays unserved, whichever costs least."""

    name = "relocate"

    def run(self, state: PlanState, order: np.ndarray, stopped: Callable[[], bool]) -> int:
        b = state.pb.batch
        moves = 0
        for d in order:
            if stopped():
                break
            d = int(d)
            if b.start[d + 1] == b.start[d]:
                continue
            old = (int(state.option[d]), int(state.start[d]), float(state.batch_cost[d]),
                   int(state.batch_rate[d]), int(state.batch_grams[d]))
            state.remove(d)
            k, s, cost, rate, grams, _ = state.best_fit(d)
            stay_out = not b.must_serve[d] and b.penalty[d] <= cost
            current = old[2] if old[0] >= 0 else (math.inf if b.must_serve[d] else b.penalty[d])
            if k >= 0 and not stay_out and cost < current - 1e-12 * max(abs(current), 1.0):
                state.place(d, k, s, cost, rate, grams)
                moves += 1
            elif old[0] >= 0 and stay_out and b.penalty[d] < old[2] - 1e-12 * max(abs(old[2]), 1.0):
                moves += 1  # cheaper unserved
            elif old[0] >= 0:
                state.place(d, old[0], old[1], old[2], old[3], old[4])
        return moves


class Eject:
    """A demand that costs clearly more than its best start ignoring the room (or is unserved,
    or unplaced) takes one of its few cheapest starts: the jobs in its way on that pool move to
    their own cheapest fitting places (or out, if optional), and the services on those pool
    slots cover their load again with the room left. Kept only if the plan improves (fewer
    unplaced must-serve demands, then cost)."""

    name = "eject"
    MAX_BLOCKERS = 6
    TARGETS = 3

    def __init__(self, alone: np.ndarray):
        self.alone = alone  # float64 [batch]: each demand's cheapest start ignoring the room

    def candidates(self, state: PlanState) -> np.ndarray:
        b = state.pb.batch
        has = np.diff(b.start) > 0
        current = np.where(b.must_serve & (state.option < 0), np.inf, state.batch_cost)
        over = current > self.alone + 1e-9 * np.maximum(np.abs(self.alone), 1.0)
        return np.flatnonzero(has & over)

    def run(self, state: PlanState, candidates: np.ndarray, stopped: Callable[[], bool]) -> int:
        pr, b = state.pr, state.pb.batch
        moves = 0
        for d in candidates:
            if stopped():
                break
            d = int(d)
            table = state.tab.demand(d)
            if table is None:
                continue
            ks, s = table.ks, table.s
            cost = np.where(table.valid, table.cost, np.inf).ravel()
            for flat in np.argsort(cost, kind="stable")[: self.TARGETS]:
                if not math.isfinite(cost[flat]):
                    break
                if not (b.must_serve[d] and state.option[d] < 0) and (
                        cost[flat] >= state.batch_cost[d] - 1e-9 * max(abs(state.batch_cost[d]), 1.0)):
                    break  # no target is cheaper than where it stands
                i, w = divmod(int(flat), s.shape[1])
                if self._try(state, d, int(ks[i]), int(s[i, w])):
                    moves += 1
                    break
        return moves

    def _try(self, state: PlanState, d: int, k: int, st: int) -> bool:
        pr, b = state.pr, state.pb.batch
        p, n = int(pr.pool[k]), int(pr.n[k])
        served = np.flatnonzero(state.option >= 0)
        on_pool = served[pr.pool[state.option[served]] == p]
        ends = state.start[on_pool] + pr.n[state.option[on_pool]]
        blockers = on_pool[(state.start[on_pool] < st + n) & (ends > st) & (on_pool != d)]
        if len(blockers) > self.MAX_BLOCKERS:
            return False
        slots = state.service_slots_on(p, st, st + n)
        if not len(blockers) and not slots:
            return False
        jobs = [int(j) for j in blockers] + [d]
        before_missing = state.unplaced()
        before_cost = state.objective()
        saved = _placements(state, jobs)
        snaps: dict = {}
        self._clear(state, slots, snaps)
        for j in jobs:
            state.remove(j)
        cost, rate, grams = state.start_terms(d, k, st)
        if state.fits_one(k, st, rate, grams):
            state.place(d, k, st, cost, rate, grams)
            for j in jobs[:-1]:
                kk, ss, cc, rr, gg, _ = state.best_fit(j)
                if kk < 0 and b.must_serve[j]:  # take room from services instead
                    kk, ss = state.displacing_fit(j)
                    if kk >= 0:
                        self._clear(state, state.service_slots_on(int(pr.pool[kk]), ss, ss + int(pr.n[kk])), snaps)
                        kk, ss, cc, rr, gg, _ = state.best_fit(j)
                if kk >= 0 and (b.must_serve[j] or cc < b.penalty[j]):
                    state.place(j, kk, ss, cc, rr, gg)
            for i, t in snaps:
                state.cover_service_slot(i, t)
            after_missing = state.unplaced()
            after_cost = state.objective()
            if after_missing < before_missing or (after_missing == before_missing and
                                                  after_cost < before_cost - 1e-9 * max(abs(before_cost), 1.0)):
                return True
        _undo(state, jobs, snaps, saved, snaps)
        return False

    @staticmethod
    def _clear(state: PlanState, slots, snaps: dict) -> None:
        for i, t in slots:
            if (i, t) not in snaps:
                snaps[(i, t)] = state.service_slot_snapshot(i, t)
                state.clear_service_slot(i, t)


class Yield:
    """Batch jobs yield to a service: in a slot where a service leaves load unserved, the jobs
    running then on one of its pools (its cheapest rows per quantum first, up to `ROWS`) leave,
    the service covers its load again, and the jobs take their cheapest fitting places (other
    starts, other pools) or stay out if optional; the services those jobs then displace are not
    touched (they only take free room). Kept if the plan has no more unplaced must-serve jobs
    and costs less; else undone, and the next row is tried."""

    name = "yield"
    MAX_JOBS = 6
    ROWS = 4

    def run(self, state: PlanState, stopped: Callable[[], bool], budget: int) -> int:
        sv, pr = state.pb.services, state.pr
        if not len(sv.rows):
            return 0
        served = np.zeros(state.service_cost.shape, dtype=np.int64)
        np.add.at(served, state.service_owner, state.served)
        short = (sv.load - served) * sv.penalty_per_quantum[:, None]
        cells = np.flatnonzero(short.ravel() > 0)
        cells = cells[np.argsort(-short.ravel()[cells], kind="stable")][:budget]
        moves = 0
        for cell in cells:
            if stopped():
                break
            i, t = divmod(int(cell), state.pb.slots)
            lo, hi = int(sv.start[i]), int(sv.start[i + 1])
            if hi <= lo or int(state.served[lo:hi, t].sum()) >= int(sv.load[i, t]):
                continue  # no rows, or an earlier move covered it
            kappa = sv.kappa[lo:hi].astype(np.float64)
            unit = sv.rent[lo:hi, t] / np.maximum(kappa, 1.0) + sv.transfer_per_quantum[lo:hi]
            on = np.flatnonzero(state.option >= 0)
            on_pools = pr.pool[state.option[on]]
            for r in np.argsort(unit, kind="stable")[: self.ROWS].tolist():
                on_pool = on[on_pools == int(sv.pool[lo + r])]
                ends = state.start[on_pool] + pr.n[state.option[on_pool]]
                running = on_pool[(state.start[on_pool] <= t) & (ends > t)]
                if not len(running) or len(running) > self.MAX_JOBS:
                    continue
                if _ruin_and_recreate(state, [int(j) for j in running], [(i, t)], services_first=True):
                    moves += 1
                    break
        return moves


class Ruin:
    """Ruin and recreate a pool window: the jobs running on one pool in a few slots, and the
    services holding replicas there or short of load with a row there, all leave; then either
    the services cover their load first and the jobs take their cheapest fitting places, or the
    other way round (drawn at random), each job in a random order. Kept if the plan has no more
    unplaced must-serve jobs and costs less. Random pools and windows: a search for when the
    deterministic moves have stalled."""

    name = "ruin"
    MAX_JOBS = 12
    MAX_CELLS = 48
    WIDTHS = (1, 2, 3, 4, 6)

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    @staticmethod
    def pools(state: PlanState) -> np.ndarray:
        """The pools a ruin can draw: those running a job or holding a replica."""
        on = state.option[state.option >= 0]
        return np.union1d(state.pr.pool[on], np.flatnonzero(state.service_held.sum(axis=1) > 0))

    def windows(self, state: PlanState) -> int:
        """How many (pool, width, first slot) windows `run` can draw on ``state``."""
        S = state.pb.slots
        return len(self.pools(state)) * sum(max(S - w + 1, 1) for w in self.WIDTHS)

    def run(self, state: PlanState, stopped: Callable[[], bool], tries: int) -> int:
        pr, S = state.pr, state.pb.slots
        moves = 0
        for _ in range(tries):
            if stopped():
                break
            on = np.flatnonzero(state.option >= 0)
            pools = self.pools(state)
            if not len(pools):
                break
            p = int(pools[self.rng.integers(len(pools))])
            w = int(self.WIDTHS[self.rng.integers(len(self.WIDTHS))])
            lo = int(self.rng.integers(max(S - w + 1, 1)))
            hi = min(lo + w, S)
            on_pool = on[pr.pool[state.option[on]] == p]
            ends = state.start[on_pool] + pr.n[state.option[on_pool]]
            jobs = on_pool[(state.start[on_pool] < hi) & (ends > lo)]
            if len(jobs) > self.MAX_JOBS:
                jobs = self.rng.choice(jobs, self.MAX_JOBS, replace=False)
            cells = self._cells(state, p, lo, hi)
            if not len(jobs) and not cells:
                continue
            if _ruin_and_recreate(state, [int(j) for j in self.rng.permutation(jobs)], cells,
                                  services_first=bool(self.rng.integers(2))):
                moves += 1
        return moves

    def _cells(self, state: PlanState, p: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """(service, slot) cells of the window: replicas on pool ``p``, or load short with a row
        on ``p``."""
        sv = state.pb.services
        rows = state.tab.rows_on_pool[p]
        if not len(rows):
            return []
        cells = set(state.service_slots_on(p, lo, hi))
        owners = np.unique(state.service_owner[rows])
        for i in owners.tolist():
            a, b = state.tab.sv_start[i], state.tab.sv_start[i + 1]
            short = sv.load[i, lo:hi] - state.served[a:b, lo:hi].sum(axis=0)
            cells.update((i, lo + int(t)) for t in np.flatnonzero(short > 0))
        out = sorted(cells)
        if len(out) > self.MAX_CELLS:
            pick = np.sort(self.rng.choice(len(out), self.MAX_CELLS, replace=False))
            out = [out[int(x)] for x in pick]
        return out


class Recover:
    """Each service, slot by slot, gives up its replicas and covers its load again at true
    costs with the room now left; kept when it costs less."""

    name = "recover"

    def run(self, state: PlanState, stopped: Callable[[], bool]) -> int:
        sv = state.pb.services
        moves = 0
        for i in range(len(sv.rows)):
            if stopped():
                break
            for t in range(state.pb.slots):
                if sv.load[i, t] <= 0:
                    continue
                if state.recover_slot(i, t):
                    moves += 1
        return moves


class Clock:
    """Limits, the stop request and progress reports of one solve."""

    def __init__(self, params: SolveParams, on_progress, stop):
        self.params = params
        self.started = time.perf_counter()
        self.deadline = self.started + params.time_limit_s
        self.on_progress = on_progress
        if stop is None:
            self._stop = lambda: False
        elif callable(getattr(stop, "is_set", None)):
            self._stop = stop.is_set
        else:
            self._stop = stop
        self.last_report = -math.inf

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stopped(self) -> bool:
        return bool(self._stop())

    def out_of_time(self) -> bool:
        return time.perf_counter() >= self.deadline

    def halt(self) -> bool:
        return self.stopped() or self.out_of_time()

    def report(self, objective, bound, gap, message: str, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = self.elapsed()
        if not force and now - self.last_report < PROGRESS_EVERY_S and message != "solution":
            return
        self.last_report = now
        self.on_progress(Progress("large", now, objective, bound, gap, message))


class Incumbent:
    """The best plan so far and the best bound."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.state: PlanState | None = None
        self.choice: TimedChoice | None = None
        self.objective = math.inf
        self.missing = math.inf
        self.bound = -math.inf
        self.first_solution_s: float | None = None

    def gap(self) -> float | None:
        if self.choice is None or self.missing or not math.isfinite(self.bound):
            return None
        return max(0.0, self.objective - self.bound) / max(abs(self.objective), 1.0)

    def lower_bound(self) -> float | None:
        if not math.isfinite(self.bound):
            return None
        return min(self.bound, self.objective) if self.choice is not None and not self.missing else self.bound

    def offer(self, state: PlanState) -> bool:
        missing, value = state.unplaced(), state.objective()
        if missing > self.missing or (missing == self.missing and value >= self.objective):
            return False
        self.state, self.choice, self.missing, self.objective = state, state.choice(), missing, value
        if not missing:
            if self.first_solution_s is None:
                self.first_solution_s = self.clock.elapsed()
            self.clock.report(value, self.lower_bound(), self.gap(), "solution")
        return True

    def refresh(self) -> None:
        """Take the current search state's plan if it improved."""
        if self.state is not None:
            missing, value = self.state.unplaced(), self.state.objective()
            if missing < self.missing or (missing == self.missing and value < self.objective):
                self.choice, self.missing, self.objective = self.state.choice(), missing, value
                if not missing:
                    self.clock.report(value, self.lower_bound(), self.gap(), "solution")

    def raise_bound(self, value: float) -> None:
        if value > self.bound:
            self.bound = value
            self.clock.report(None if self.missing else self.objective, self.lower_bound(),
                              self.gap(), "bound")

    def done(self, gap_limit: float) -> bool:
        gap = self.gap()
        return gap is not None and gap <= max(gap_limit, OPTIMAL_GAP * 1e-3)


class Search:
    """Improvement rounds on the incumbent: relocate (time and pools), eject, services."""

    MAX_EJECTS = 2000  # eject tries per round

    def __init__(self, problem: TimedProblem, alone: np.ndarray, rng: np.random.Generator):
        self.pb = problem
        self.rng = rng
        self.relocate, self.recover, self.yield_ = Relocate(), Recover(), Yield()
        self.eject = Eject(alone)
        self.ruin = Ruin(rng)
        self.moves = {"relocate": 0, "eject": 0, "recover": 0, "yield": 0, "ruin": 0, "window": 0}
        self.rounds = 0

    def round(self, state: PlanState, stopped: Callable[[], bool]) -> int:
        """One round of every move; returns how many moves it made."""
        self.rounds += 1
        n = state.n_batch
        order = self.rng.permutation(n)
        made = 0
        m = self.relocate.run(state, order, stopped)
        self.moves["relocate"] += m
        made += m
        cand = self.eject.candidates(state)
        cand = cand[self.rng.permutation(len(cand))][: self.MAX_EJECTS]
        m = self.eject.run(state, cand, stopped)
        self.moves["eject"] += m
        made += m
        m = self.yield_.run(state, stopped, self.MAX_EJECTS)
        self.moves["yield"] += m
        made += m
        m = self.recover.run(state, stopped)
        self.moves["recover"] += m
        return made + m

    def shake(self, state: PlanState, stopped: Callable[[], bool]) -> int:
        """`RUIN_TRIES` ruin-and-recreate tries (`Ruin`), at most two per window it can draw
        (a small problem has few); returns how many were kept."""
        m = self.ruin.run(state, stopped, min(RUIN_TRIES, 2 * self.ruin.windows(state)))
        self.moves["ruin"] += m
        return m


def _hint_state(problem: TimedProblem, pricer: StartPricer, routes: Routes,
                hint: TimedChoice, stopped: Callable[[], bool]) -> PlanState | None:
    """The hint as a plan state, or None if it does not fit its rows or windows (or stopped).
    Placed all at once (the same state as placing it job by job with `PlanState.place` and
    `restore_service_slot`); the rows are checked once, at the end (no room may be negative)."""
    b, sv = problem.batch, problem.services
    S = problem.slots
    if len(hint.option) != len(b.rows) or hint.replicas.shape != (len(sv.pool), S):
        return None
    state = PlanState(problem, pricer, routes)
    option = np.asarray(hint.option, dtype=np.int64)
    start = np.asarray(hint.start_slot, dtype=np.int64)
    on = np.flatnonzero(option >= 0)
    k, s = option[on], start[on]
    if np.any(k < b.start[on]) or np.any(k >= b.start[on + 1]):
        return None
    if np.any(s < b.first[k]) or np.any(s > b.last[k]):
        return None
    cost = np.empty(len(on))
    rate = np.empty(len(on), dtype=np.int64)
    grams = np.empty(len(on), dtype=np.int64)
    for lo in range(0, len(on), HINT_CHUNK):
        if stopped():
            return None
        kk, ss = k[lo: lo + HINT_CHUNK], s[lo: lo + HINT_CHUNK, None]
        capped = pricer.capped[kk]
        if np.any(capped) and not np.all(
                pricer.raw_price(kk[capped], ss[capped]) <= b.max_price[kk[capped], None]):
            return None
        grams_f = pricer.grams(kk, ss)
        rate[lo: lo + HINT_CHUNK] = pricer.rate(kk, ss)[:, 0]
        grams[lo: lo + HINT_CHUNK] = _grams_int(grams_f)[:, 0]
        cost[lo: lo + HINT_CHUNK] = pricer.cost(kk, ss, grams_f)[:, 0]
    # The pool-slot rows: each run takes its gang from s to s + n (a difference array).
    p, n, g = pricer.pool[k], pricer.n[k], pricer.gang[k]
    diff = np.zeros((problem.avail.shape[0], S + 1), dtype=np.int64)
    np.add.at(diff, (p, s), g)
    np.add.at(diff, (p, s + n), -g)
    state.pool_free -= np.cumsum(diff, axis=1)[:, :S]
    # The link-slot rows: a moving job's rate on each link of its route from its release to s.
    mv = np.flatnonzero((rate != 0) & pricer.moves[k]) if routes.count else np.zeros(0, dtype=np.int64)
    if len(mv):
        r = pricer.route[k[mv]]
        lengths = np.array([len(x) for x in routes.links], dtype=np.int64)[r]
        links = np.concatenate([routes.links[int(x)] for x in r] + [np.zeros(0, dtype=np.int64)])
        rel = np.repeat(pricer.rel[k[mv]], lengths)
        end = np.repeat(s[mv], lengths)
        amount = np.repeat(rate[mv], lengths)
        keep = end > rel
        ldiff = np.zeros((problem.bandwidth.shape[0], S + 1), dtype=np.int64)
        np.add.at(ldiff, (links[keep], rel[keep]), amount[keep])
        np.add.at(ldiff, (links[keep], end[keep]), -amount[keep])
        state.link_free -= np.cumsum(ldiff, axis=1)[:, :S]
        state._routes_stale = True
    if state.carbon_free < HUGE:
        state.carbon_free -= int(grams.sum())
    state.option[on], state.start[on] = k, s
    state.batch_cost[on] = cost
    state._batch_total = ExactTotal(state.batch_cost)
    state.batch_grams[on], state.batch_rate[on] = grams, rate
    # The services, every (service, slot) cell at once.
    if len(sv.rows):
        if stopped():
            return None
        rep = np.asarray(hint.replicas, dtype=np.int64)
        srv = np.asarray(hint.served, dtype=np.int64)
        if np.any(rep < 0) or np.any(srv < 0) or np.any(srv > rep * sv.kappa[:, None]):
            return None
        owner = state.service_owner
        served = np.zeros(sv.load.shape, dtype=np.int64)
        np.add.at(served, owner, srv)
        if np.any(served > sv.load):
            return None
        # Each cell's cost as `restore_service_slot`'s caller sums it: per service, the rows'
        # rents and transfers summed over the rows (numpy's sum of each slot's column).
        cost_cells = np.empty(sv.load.shape)
        for i in range(len(sv.rows)):
            lo, hi = int(sv.start[i]), int(sv.start[i + 1])
            rent = np.ascontiguousarray((rep[lo:hi] * sv.rent[lo:hi]).T).sum(axis=1)
            tr = srv[lo:hi] * sv.transfer_per_quantum[lo:hi, None]
            move = np.ascontiguousarray(tr.T).sum(axis=1)
            short = (sv.load[i].astype(np.int64) - served[i]).astype(np.float64)
            cost_cells[i] = rent + move + short * float(sv.penalty_per_quantum[i])
        held = rep * sv.gang.astype(np.int64)[owner][:, None]
        pool_use = np.zeros(problem.avail.shape, dtype=np.int64)
        np.add.at(pool_use, state.tab.sv_pool_np, held)
        state.pool_free -= pool_use
        state.service_held += pool_use
        routed = np.flatnonzero(np.asarray(state.tab.sv_routed) & srv.any(axis=1))
        if len(routed):
            use = srv[routed] * sv.tau[routed, None].astype(np.int64)
            link_use = np.zeros(state.link_free.shape, dtype=np.int64)
            for J, row in zip(routed.tolist(), use):
                link_use[routes.links[state.tab.sv_route[J]]] += row
            state.link_free -= link_use
            state._routes_stale = True
        sgrams = _grams_int(rep * sv.co2_kg * 1000.0)
        state.replicas[:] = rep
        state.served[:] = srv
        state.service_grams[:] = np.where((rep > 0) | (srv > 0), sgrams, 0)
        if state.carbon_free < HUGE:
            state.carbon_free -= int(state.service_grams.sum())
        state.service_cost[:] = cost_cells
        state._service_total = ExactTotal(state.service_cost)
    state.pool_min.update(np.arange(state.pool_free.shape[0]))
    if np.any(state.pool_free < 0) or np.any(state.link_free < 0) or state.carbon_free < 0:
        return None
    return state


def solve_timed_large(
    problem: TimedProblem,
    params: SolveParams,
    *,
    hint: TimedChoice | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | Callable[[], bool] | None = None,
) -> EngineResult:
    """Plan ``problem`` within the limits of ``params``: a choice and a proven lower bound."""
    b = problem.batch
    if np.any(b.must_serve & (np.diff(b.start) == 0)):
        return EngineResult(None, Status.INFEASIBLE, None, "a must-serve demand has no option")
    clock = Clock(params, on_progress, stop)
    best = Incumbent(clock)
    details: dict[str, float | int | str] = {}
    pricer, routes = StartPricer(problem), Routes(problem)
    relax = TimedRelaxation(problem, pricer, routes)
    builder = Builder(problem, relax, routes)
    budget = params.iteration_limit
    deterministic = budget is not None
    dual_deadline = clock.started + DUAL_SHARE * params.time_limit_s
    dual_steps = budget if deterministic else 10**9

    if clock.stopped():
        return _result(best, clock, relax, None, details, stopped=True)
    if hint is not None:  # the warm start first (cheap): the plan to return if time is short
        state = _hint_state(problem, pricer, routes, hint, clock.stopped)
        if state is not None:
            best.offer(state)
    if best.choice is not None and not _price_starts(relax, clock.halt):
        # Out of time: the zero-multiplier pricing (every start) would only add a bound, which
        # the caller has (`solve_timed`) or computes (`replan`).
        details["skipped"] = "bound at zero multipliers (no time left)"
        result = _result(best, clock, relax, None, details, stopped=clock.stopped())
        return dataclasses.replace(result, duals=Multipliers.zeros(problem))
    ascent = PolyakAscent(relax)
    best.raise_bound(ascent.best.bound)
    search = Search(problem, ascent.at_zero.batch_low, np.random.default_rng(params.seed))
    if best.choice is None and not clock.halt():  # a plan at L(0) where no hint gave one
        _build_and_polish(builder, search, best, ascent.best, clock, rounds=0)
    built_at, build_every = 0, BUILD_EVERY
    # The phase's first plan comes after `BUILD_EVERY` steps, or at `FIRST_PLAN_SHARE` of the
    # phase where steps are slow (so that it still has time to finish).
    now = time.perf_counter()
    first_plan_by = now + FIRST_PLAN_SHARE * max(dual_deadline - now, 0.0)
    step_s = 0.0  # the last dual step's seconds: one evaluation does not read the clock
    steps_s = builds_s = 0.0  # the dual phase's seconds in steps and in plans
    while ascent.steps < dual_steps and not ascent.converged and not best.done(params.gap_limit):
        now = time.perf_counter()
        if clock.stopped() or (not deterministic and (now >= dual_deadline or now + step_s > clock.deadline)):
            break
        target = best.objective if best.choice is not None and not best.missing else None
        ascent.step(target)
        step_s = time.perf_counter() - now
        steps_s += step_s
        best.raise_bound(ascent.best.bound)
        # Plans get dearer to build than dual steps: fewer as the bound settles, and under a
        # time limit at most `BUILD_SHARE` of the time the steps had.
        due = ascent.steps - built_at >= build_every or (
            not built_at and not deterministic and time.perf_counter() >= first_plan_by)
        if due and (deterministic or builds_s <= BUILD_SHARE * steps_s):
            built_at = ascent.steps
            build_every *= 2
            now = time.perf_counter()
            _build_and_polish(builder, search, best, ascent.best, clock, rounds=0)
            builds_s += time.perf_counter() - now
    details["dual_steps"] = ascent.steps
    details["dual_evaluations"] = relax.evaluations
    picks = _pool_bound(problem, relax, ascent.best, best, params, clock, deterministic, details)
    # Last plans at the best multipliers (and after the pools' packings), then search rounds
    # on the incumbent until a limit.
    if ascent.steps > built_at and not clock.halt():
        _build_and_polish(builder, search, best, ascent.best, clock, rounds=1)
    if picks is not None and not clock.halt():
        offered = _build_and_polish(builder, search, best, ascent.best, clock, rounds=1, picks=picks)
        details["pool_plan"] = "kept" if offered else "dearer"
    rounds = budget if deterministic else 10**9
    spent, stalled, idle = 0, False, 0
    windows = WindowSearch(problem, np.random.default_rng(params.seed + 1)) if best.state is not None else None
    while best.state is not None and spent < rounds and not clock.halt() and not best.done(params.gap_limit):
        if stalled:  # the rounds found nothing: a window re-solved exactly, else random ruins
            windowed = _window_step(windows, search, best, params, clock, deterministic, stop)
            made = windowed or search.shake(best.state, clock.halt)
            idle = 0 if made else idle + 1
            if idle >= RUIN_IDLE:
                break
        else:
            made, windowed = search.round(best.state, clock.halt), 0
        stalled = not made or bool(windowed)  # after a window, more windows before rounds
        spent += 1
        best.refresh()
    if windows is not None:
        details["window_tries"] = windows.tries
    result = _result(best, clock, relax, search, details, stopped=clock.stopped())
    return dataclasses.replace(result, duals=ascent.best.multipliers)  # the shadow prices


def _pool_bound(problem: TimedProblem, relax: TimedRelaxation, point: DualPoint, best: Incumbent,
                params: SolveParams, clock: Clock, deterministic: bool, details: dict) -> PoolPicks | None:
    """Raise the bound with the pool-slot rows kept whole (`timed_pools`), at the ascent's best
    multipliers, within `POOL_SHARE` of the time limit: under a time limit only while at least
    as much again is left for the search (where the dual phase ended early). Returns what the
    pools' packings chose (a guide for a plan), None where it did not run."""
    if clock.halt() or best.done(params.gap_limit):
        return None
    seconds = POOL_SHARE * params.time_limit_s
    if not deterministic and clock.deadline - time.perf_counter() < 2 * seconds:
        details["pool_bound"] = "skipped (the search's time)"
        return None
    pools = PoolBound(problem, relax)
    workers = 1 if deterministic else (params.workers or min(available_cores(), 2))
    found = pools.bound(point, seconds, workers, POOL_DETERMINISTIC_S if deterministic else None,
                        clock.halt)
    details["pool_bound_from"] = point.bound
    if found is None:
        details["pool_bound"] = "skipped (too many profitable starts)"
        return None
    value, raised = found
    details["pool_bound"] = value
    details["pools_raised"] = raised
    details["pools_solved"] = pools.solved
    best.raise_bound(value)
    return pools.picks


def _window_step(windows: WindowSearch | None, search: Search, best: Incumbent, params: SolveParams,
                 clock: Clock, deterministic: bool, stop) -> int:
    """One `WindowSearch` step on the incumbent; 1 if it gave a cheaper plan (now the incumbent)."""
    if windows is None or best.state is None or clock.halt():
        return 0
    event = stop if isinstance(stop, threading.Event) else None
    choice = windows.step(best.state, params, clock.deadline, deterministic, event)
    if choice is None:
        return 0
    state = _hint_state(best.state.pb, best.state.pr, best.state.routes, choice, clock.halt)
    if state is None or not best.offer(state):
        return 0
    search.moves["window"] += 1
    return 1


def _price_starts(relax: TimedRelaxation, halt: Callable[[], bool]) -> bool:
    """Fill the relaxation's kept start costs chunk by chunk (what its first evaluation, L(0),
    spends most of its time on), checking ``halt`` between chunks; False if it halted. The
    evaluation then reads the same costs: nothing changes but when the clock is read."""
    for index, ks in enumerate(relax.chunks()):  # the evaluation's chunks, in its order
        if halt():
            return False
        relax.chunk_costs(index, ks)
    return not halt()


def _build_and_polish(builder: Builder, search: Search, best: Incumbent, point: DualPoint,
                      clock: Clock, rounds: int, picks: PoolPicks | None = None) -> bool:
    """A plan at ``point``'s multipliers (after ``picks`` if given), polished by up to
    ``rounds`` search rounds and offered; True if it became the incumbent."""
    if picks is None:
        state = builder.build(point.multipliers, clock.halt)
    else:
        state = builder.build_from(picks, point.multipliers, clock.halt)
    if state is None:
        return False
    for _ in range(rounds):
        if clock.halt() or not search.round(state, clock.halt):
            break
    return best.offer(state)


def _result(best: Incumbent, clock: Clock, relax: TimedRelaxation, search: Search | None,
            details: dict, stopped: bool) -> EngineResult:
    details["evaluations"] = relax.evaluations
    details["search_rounds"] = search.rounds if search is not None else 0
    for name, count in (search.moves if search is not None else {}).items():
        details[f"{name}_moves"] = count
    lb = best.lower_bound()
    clock.report(None if best.choice is None or best.missing else best.objective, lb, best.gap(),
                 "final", force=True)
    if best.choice is None or best.missing:
        return EngineResult(None, Status.UNKNOWN, lb, "STOPPED" if stopped else "no complete plan found",
                            first_solution_s=best.first_solution_s, details=details)
    gap = best.gap()
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    name = "OPTIMAL" if status == Status.OPTIMAL else ("STOPPED" if stopped else "FEASIBLE")
    return EngineResult(best.choice, status, lb, name, first_solution_s=best.first_solution_s,
                        details=details)


def _ruin_and_recreate(state: PlanState, jobs: list[int], cells: list[tuple[int, int]],
                       services_first: bool) -> bool:
    """``jobs`` and the service ``cells`` leave; the cells cover their load again and the jobs
    take their cheapest fitting places (or stay out if optional), in that order or the other
    way round. Kept (True) if the plan has no more unplaced must-serve jobs and costs less;
    else undone."""
    b = state.pb.batch
    before = (state.unplaced(), state.objective())
    saved = _placements(state, jobs)
    snaps = {}
    for i, t in cells:
        snaps[(i, t)] = state.service_slot_snapshot(i, t)
        state.clear_service_slot(i, t)
    for j in jobs:
        state.remove(j)
    if services_first:
        for i, t in cells:
            state.cover_service_slot(i, t)
    for j in jobs:
        kk, ss, cc, rr, gg, _ = state.best_fit(j)
        if kk >= 0 and (b.must_serve[j] or cc < b.penalty[j]):
            state.place(j, kk, ss, cc, rr, gg)
    if not services_first:
        for i, t in cells:
            state.cover_service_slot(i, t)
    after = (state.unplaced(), state.objective())
    if after[0] <= before[0] and after[1] < before[1] - 1e-9 * max(abs(before[1]), 1.0):
        return True
    _undo(state, jobs, cells, saved, snaps)
    return False


def _placements(state: PlanState, jobs: list[int]) -> dict:
    """Each job's placement (option, start, cost, rate, grams), as `_undo` puts it back."""
    return {j: (int(state.option[j]), int(state.start[j]), float(state.batch_cost[j]),
                int(state.batch_rate[j]), int(state.batch_grams[j])) for j in jobs}


def _undo(state, jobs, cells, saved: dict, snaps: dict) -> None:
    """Put back what a rejected move changed: take ``jobs`` and the service ``cells`` out again,
    then the ``saved`` placements and the ``snaps`` of the service cells back in."""
    for j in jobs:
        state.remove(j)
    for i, t in cells:
        state.clear_service_slot(i, t)
    for j, (kk, ss, cc, rr, gg) in saved.items():
        if kk >= 0:
            state.place(j, kk, ss, cc, rr, gg)
    for (i, t), snap in snaps.items():
        state.restore_service_slot(i, t, snap)
