"""CP-SAT large-neighbourhood search: free some demands, fix the rest, re-solve the free part.

A neighbourhood is a set S of demands and, for each, the options it may take (always including its
current one, so the incumbent stays feasible). With everything else fixed the sub-problem is

    x[k] in {0,1} for the allowed options k of d in S,   y[d] in {0,1} where d may be unserved
    sum_{k of d} x[k] + y[d] = 1                         for every d in S
    sum_{k on p} u[k] x[k] <= cap[p] - load_fixed[p]     for every pool p the options touch
    minimize  sum_k round(s c[k]) x[k] + sum_d round(s pi[d]) y[d]

where a must-serve demand that has no room yet may stay unserved at a price above any saving, so
the search also repairs incomplete plans. `Chooser` picks the neighbourhoods: a few related pools
with the demands on them, demands at random, demands far from their best reduced cost, or the
"core" of every option within a reduced-cost slack of its demand's best (which also proves bounds).
Their sizes adapt to how quickly the sub-problems solve.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from scheduler.compile import Options
from scheduler.engines.primal import UNSERVED, segment_rows

MIN_ROWS = 40
MAX_ROWS = 60_000
SAMPLE = 200_000  # demands looked at per neighbourhood by the sampling strategies
STRATEGIES = ("pools", "eject", "regret", "core")
CORE_MAX_OPTIONS = 5_000_000  # above this the core neighbourhood (a pass over all options) is off


@dataclass(frozen=True, eq=False)
class Neighbourhood:
    """Free demands and, back to back in the same order, the options each may take."""

    kind: str
    demands: np.ndarray  # int64 [n]
    rows: np.ndarray  # int64: allowed option indices
    counts: np.ndarray  # int64 [n]: allowed options per demand
    whole: bool = False  # every demand with every option: the sub-solve's bound is global
    # Core neighbourhoods: any plan using an alternative left out costs at least this.
    excluded_bound: float | None = None
    key: tuple | None = None  # pools of a complete pool neighbourhood (for the memo)
    exclusive: bool = False  # must run alone (its bound needs the whole incumbent fixed)


@dataclass(frozen=True, eq=False)
class SubSolve:
    """What CP-SAT returned for one neighbourhood."""

    status: str  # CP-SAT status name
    new: np.ndarray | None  # int64 [n]: option or UNSERVED per free demand
    proven: bool  # the sub-problem was solved to optimality
    bound: float | None  # CP-SAT's bound on the sub-objective, in scaled integer units
    deterministic_time: float
    wall_s: float


@dataclass
class Problem:
    """The data every sub-model needs, in CP-SAT's integer units."""

    options: Options
    scale: float
    cost_int: np.ndarray  # int64 [K]: round(s c)
    penalty_int: np.ndarray  # int64 [D]: round(s pi)


class Solvers:
    """The CP-SAT solves running now (their `SolveWrapper`s), so that a stop request can reach
    them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: set = set()
        self.stopped = False

    def add(self, solver) -> bool:
        """Registers ``solver``; False (and not registered) once a stop was requested."""
        with self.lock:
            if self.stopped:
                return False
            self.active.add(solver)
            return True

    def remove(self, solver) -> None:
        with self.lock:
            self.active.discard(solver)

    def stop_all(self) -> None:
        with self.lock:
            self.stopped = True
            for solver in self.active:
                solver.stop_search()


def residual_room(o: Options, load: np.ndarray, current: np.ndarray) -> np.ndarray:
    """cap - load + what the free demands use now: the room the sub-problem may fill."""
    freed = np.zeros(o.n_pools, dtype=np.int64)
    on = current >= 0
    np.add.at(freed, o.pool[current[on]], o.units[current[on]])
    return o.capacity - load + freed


def solve_subproblem(
    pb: Problem,
    nb: Neighbourhood,
    current: np.ndarray,
    residual: np.ndarray,
    *,
    seed: int,
    deterministic_limit: float,
    wall_limit: float,
    solvers: Solvers | None = None,
) -> SubSolve:
    """Build the sub-model of ``nb`` (free demands now at ``current``) and solve it with CP-SAT.

    The model is written straight into the proto and solved by CP-SAT's `SolveWrapper`: the
    high-level `cp_model` module is not needed (importing it costs about a second, most of it
    pandas, which a 10 s run cannot spare).
    """
    from ortools.sat.python import cp_model_helper as cmh

    o = pb.options
    started = time.perf_counter()
    demands, rows, counts = nb.demands, nb.rows, nb.counts
    n, r = len(demands), len(rows)
    owner = np.repeat(np.arange(n), counts)
    may_leave = ~o.must_serve[demands] | (current == UNSERVED)
    leave_ids = np.flatnonzero(may_leave)
    y_index = np.full(n, -1, dtype=np.int64)
    y_index[leave_ids] = r + np.arange(len(leave_ids))
    m = r + len(leave_ids)

    # Objective coefficients; an unplaced must-serve demand costs more than any saving elsewhere.
    cx = pb.cost_int[rows]
    cy = pb.penalty_int[demands[leave_ids]].copy()
    unplaced = o.must_serve[demands[leave_ids]]
    if unplaced.any():
        spread = np.abs(cx).sum() + np.abs(cy[~unplaced]).sum()
        cy[unplaced] = int(spread) + 1

    proto = cmh.CpModelProto()
    for _ in range(m):
        proto.variables.add().domain.extend((0, 1))
    # One alternative per free demand: an allowed option, or unserved where allowed.
    ends = np.cumsum(counts)
    for j in range(n):
        lits = proto.constraints.add().exactly_one.literals
        lits.extend(range(int(ends[j] - counts[j]), int(ends[j])))
        if y_index[j] >= 0:
            lits.append(int(y_index[j]))
    # Pool capacities: the room the fixed demands leave, on every pool the options touch.
    pools = o.pool[rows]
    units = o.units[rows]
    order = np.argsort(pools, kind="stable")
    touched, first = np.unique(pools[order], return_index=True)
    bounds = np.append(first, len(order))
    for t, p in enumerate(touched):
        ks = order[bounds[t]: bounds[t + 1]]
        if units[ks].sum() > residual[p]:
            lin = proto.constraints.add().linear
            lin.vars.extend(ks.tolist())
            lin.coeffs.extend(units[ks].tolist())
            lin.domain.extend((0, int(residual[p])))
    proto.objective.vars.extend(range(m))
    proto.objective.coeffs.extend(cx.tolist() + cy.tolist())
    # Hint: the incumbent.
    hint = np.zeros(m, dtype=np.int64)
    hint[np.flatnonzero(rows == np.repeat(current, counts))] = 1
    hint[y_index[(current == UNSERVED) & (y_index >= 0)]] = 1
    proto.solution_hint.vars.extend(range(m))
    proto.solution_hint.values.extend(hint.tolist())

    prm = cmh.SatParameters()
    prm.num_workers = 1
    prm.random_seed = seed
    prm.max_deterministic_time = deterministic_limit
    prm.max_time_in_seconds = max(wall_limit, 0.01)
    prm.catch_sigint_signal = False
    prm.linearization_level = 2
    solver = cmh.SolveWrapper()
    solver.set_parameters(prm)
    if solvers is not None and not solvers.add(solver):
        return SubSolve("STOPPED", None, False, None, 0.0, time.perf_counter() - started)
    try:
        response = solver.solve(proto)
    finally:
        if solvers is not None:
            solvers.remove(solver)
    code = response.status
    optimal = code == cmh.CpSolverStatus.OPTIMAL
    dt = response.deterministic_time
    wall = time.perf_counter() - started
    if not optimal and code != cmh.CpSolverStatus.FEASIBLE:
        return SubSolve(code.name, None, False, None, dt, wall)
    values = np.asarray(response.solution, dtype=np.int8)
    new = np.full(n, UNSERVED, dtype=np.int64)
    picked = np.flatnonzero(values[:r])
    new[owner[picked]] = rows[picked]
    return SubSolve(code.name, new, optimal, response.best_objective_bound, dt, wall)


@dataclass
class Strategy:
    """One kind of neighbourhood, with its adaptive size (in allowed options) and its record.

    ``rate`` is a moving average of the relative progress (objective decrease plus bound
    increase, over the objective) per unit of CP-SAT deterministic time; strategies are drawn in
    proportion to it, so the search spends its time where it has paid off lately.
    """

    name: str
    rows: float
    cap: float = MAX_ROWS
    tries: int = 0
    wins: int = 0
    rate: float = 1.0  # optimistic start: every strategy gets tried


@dataclass
class Chooser:
    """Picks neighbourhoods around the incumbent; sizes adapt to how the sub-solves go."""

    options: Options
    rng: np.random.Generator
    rc: np.ndarray  # float64 [K]: reduced costs under the best multipliers
    lagrangian_bound: float  # L at those multipliers (a valid bound)
    strategies: list[Strategy] = field(default_factory=list)
    affinity: np.ndarray | None = None  # [P, P]: demands on p with a near-equal option on q
    version: np.ndarray | None = None  # int64 [P]: bumped whenever a pool's demands change
    memo: dict = field(default_factory=dict)  # pools -> versions when last solved to optimality

    def __post_init__(self) -> None:
        o = self.options
        k = max(o.n_options, 1)
        start = float(min(max(4 * k / max(o.n_pools, 1), 300), 2000, k))
        cap = float(min(MAX_ROWS, max(k, MIN_ROWS)))
        names = [n for n in STRATEGIES if n != "core" or o.n_options <= CORE_MAX_OPTIONS]
        self.strategies = [Strategy(name, start, cap) for name in names]
        self.version = np.zeros(o.n_pools, dtype=np.int64)
        self._slacks()

    def _slacks(self) -> None:
        """Reduced-cost slack of every alternative: rc - (the demand's smallest rc or penalty)."""
        o = self.options
        has = np.diff(o.start) > 0
        self.alt = np.where(o.must_serve, np.inf, o.penalty)
        low = self.alt.copy()
        if has.any():
            low[has] = np.minimum(low[has], np.minimum.reduceat(self.rc, o.start[:-1][has]))
        self.low = low
        self.slack = self.rc - np.repeat(low, np.diff(o.start))
        self.alt_slack = self.alt - low  # inf for must-serve demands
        self.sorted_slack = None

    # -- bookkeeping ---------------------------------------------------------------------------
    def pick(self) -> Strategy:
        rates = np.array([s.rate for s in self.strategies])
        weights = rates + 0.05 * rates.max() + 1e-300
        return self.strategies[int(self.rng.choice(len(weights), p=weights / weights.sum()))]

    def record(self, s: Strategy, sub: SubSolve, progress: float, limit: float) -> None:
        """Update the strategy's rate and size after one sub-solve (``progress`` relative)."""
        s.tries += 1
        s.wins += progress > 0
        work = sub.deterministic_time + 0.002
        s.rate = 0.8 * s.rate + 0.2 * progress / work if s.tries > 1 else progress / work
        if sub.proven and sub.deterministic_time < 0.5 * limit:
            s.rows = min(s.rows * 1.15, s.cap)
        elif not sub.proven:
            s.rows = max(s.rows * 0.85, MIN_ROWS)

    def touch(self, pools: np.ndarray) -> None:
        self.version[pools] += 1

    def remember(self, nb: Neighbourhood) -> None:
        if nb.key is not None:
            self.memo[nb.key] = tuple(self.version[list(nb.key)])

    def clean(self, key: tuple) -> bool:
        return self.memo.get(key) == tuple(self.version[list(key)])

    def refresh(self, choice: np.ndarray, rc: np.ndarray | None = None,
                bound: float | None = None) -> None:
        """Recompute the pool affinities from the incumbent (and take new reduced costs)."""
        o = self.options
        if rc is not None:
            self.rc = rc
            self.lagrangian_bound = bound
            self._slacks()
        P = o.n_pools
        cur = choice[o.demand]
        k_idx = np.flatnonzero((cur >= 0) & (np.arange(o.n_options) != cur))
        if len(k_idx) > 4 * SAMPLE:
            k_idx = np.sort(self.rng.choice(k_idx, 4 * SAMPLE, replace=False))
        if not len(k_idx):
            self.affinity = np.ones((P, P))
            return
        here = cur[k_idx]
        delta = np.maximum(self.rc[k_idx] - self.rc[here], 0.0)
        scale = np.quantile(delta, 0.2) + 1e-12
        weight = np.exp(-delta / scale)
        pair = o.pool[here].astype(np.int64) * P + o.pool[k_idx]
        aff = np.bincount(pair, weights=weight, minlength=P * P).reshape(P, P)
        self.affinity = aff + aff.T + 1e-9

    # -- neighbourhoods ------------------------------------------------------------------------
    def make(self, s: Strategy, choice: np.ndarray, locked_pools: np.ndarray,
             locked_demands: np.ndarray) -> Neighbourhood | None:
        """A neighbourhood of about ``s.rows`` options that leaves locked pools and demands alone
        (another sub-solve holds them)."""
        o = self.options
        budget = int(s.rows)
        busy = locked_pools.any()
        if s.name == "core":
            return self._core(choice, budget)
        if budget >= o.n_options and not busy:
            demands = np.flatnonzero(np.diff(o.start) > 0)
            rows, counts = segment_rows(o.start, demands)
            return Neighbourhood("whole", demands, rows, counts, whole=True, exclusive=True)
        if s.name == "pools":
            return self._pools(choice, budget, locked_pools, locked_demands)
        if s.name == "regret":
            return self._regret(choice, budget, locked_pools, locked_demands)
        if s.name == "eject":
            return self._eject(choice, budget, locked_pools, locked_demands)
        return self._random(choice, budget, locked_pools, locked_demands)

    def _restrict(self, kind: str, demands: np.ndarray, allowed_pool: np.ndarray,
                  choice: np.ndarray, budget: int, key: tuple | None = None, extra: int = 0,
                  locked_pools: np.ndarray | None = None) -> Neighbourhood | None:
        """Allowed options: the current one, options on ``allowed_pool`` pools and each demand's
        ``extra`` best reduced costs on other unlocked pools; if that is over ``budget``, each
        demand keeps its best reduced costs."""
        o = self.options
        demands = np.unique(demands)
        if not len(demands):
            return None
        rows, counts = segment_rows(o.start, demands)
        own = rows == np.repeat(choice[demands], counts)
        keep = own | allowed_pool[o.pool[rows]]
        if extra:
            owner = np.repeat(np.arange(len(demands)), counts)
            free = ~keep if locked_pools is None else ~keep & ~locked_pools[o.pool[rows]]
            order = np.lexsort((np.where(free, self.rc[rows], np.inf), owner))
            seg = np.zeros(len(demands), dtype=np.int64)
            np.cumsum(counts[:-1], out=seg[1:])
            rank = np.empty(len(rows), dtype=np.int64)
            rank[order] = np.arange(len(rows)) - np.repeat(seg, counts)
            keep |= free & (rank < extra)
        if keep.sum() > budget:
            owner = np.repeat(np.arange(len(demands)), counts)
            extra = keep & ~own
            order = np.lexsort((np.where(extra, self.rc[rows], np.inf), owner))
            seg = np.zeros(len(demands), dtype=np.int64)
            np.cumsum(counts[:-1], out=seg[1:])
            rank = np.empty(len(rows), dtype=np.int64)
            rank[order] = np.arange(len(rows)) - np.repeat(seg, counts)
            per = max(1, (budget - len(demands)) // len(demands))
            keep = own | (extra & (rank < per))
            key = None
        owner = np.repeat(np.arange(len(demands)), counts)
        counts = np.bincount(owner[keep], minlength=len(demands))
        return Neighbourhood(kind, demands, rows[keep], counts, key=key)

    def _pools(self, choice, budget, locked_pools, locked_demands) -> Neighbourhood | None:
        """A few pools that share many near-indifferent demands, and the demands on them."""
        o = self.options
        P = o.n_pools
        if self.affinity is None:
            self.refresh(choice)
        served = choice >= 0
        on_pool = np.bincount(o.pool[choice[served]], minlength=P).astype(np.float64)
        free = ~locked_pools
        if not free.any():
            return None
        chosen = np.zeros(P, dtype=bool)
        for _attempt in range(4):
            chosen[:] = False
            weights = (on_pool + 1.0) * free
            seed = int(self.rng.choice(P, p=weights / weights.sum()))
            chosen[seed] = True
            size = on_pool[seed]
            while chosen.sum() < P:
                k = int(chosen.sum())
                link = self.affinity[chosen].sum(axis=0) * ~chosen * free
                if link.sum() <= 0:
                    break
                q = int(self.rng.choice(P, p=link / link.sum()))
                if k >= 2 and (size + on_pool[q]) * (k + 1) > budget:
                    break
                chosen[q] = True
                size += on_pool[q]
            key = tuple(np.flatnonzero(chosen).tolist())
            if not self.clean(key):
                break
        on = served & chosen[o.pool[np.maximum(choice, 0)]] & ~locked_demands
        complete = not (served & chosen[o.pool[np.maximum(choice, 0)]] & locked_demands).any()
        demands = np.flatnonzero(on)
        # Unserved demands (and unplaced must-serve ones) that could use these pools join in.
        idle = np.flatnonzero(~served & (np.diff(o.start) > 0) & ~locked_demands)
        if len(idle):
            if len(idle) > SAMPLE:
                idle = np.sort(self.rng.choice(idle, SAMPLE, replace=False))
                complete = False
            rows, counts = segment_rows(o.start, idle)
            seg = np.zeros(len(idle), dtype=np.int64)
            np.cumsum(counts[:-1], out=seg[1:])
            touch = np.add.reduceat(chosen[o.pool[rows]].astype(np.int64), seg)
            idle = idle[touch > 0]
            if len(idle) > max(budget // 4, 1):
                idle = self.rng.choice(idle, max(budget // 4, 1), replace=False)
                complete = False
            demands = np.concatenate([demands, idle])
        k = int(chosen.sum())
        if len(demands) * k > budget:
            demands = self._most_movable(demands, choice, chosen, max(budget // k, 2))
            complete = False
        return self._restrict("pools", demands, chosen, choice, budget,
                              key=key if complete else None)

    def _most_movable(self, demands, choice, chosen, count) -> np.ndarray:
        """The ``count`` demands whose best other option on ``chosen`` pools is nearest in
        reduced cost to their current one (with a little noise)."""
        o = self.options
        rows, counts = segment_rows(o.start, demands)
        cur = choice[demands]
        cur_rc = np.where(cur >= 0, self.rc[np.maximum(cur, 0)], self.alt[demands])
        other = np.where(chosen[o.pool[rows]] & (rows != np.repeat(cur, counts)), self.rc[rows], np.inf)
        seg = np.zeros(len(demands), dtype=np.int64)
        np.cumsum(counts[:-1], out=seg[1:])
        slack = np.abs(np.minimum.reduceat(other, seg) - cur_rc)
        finite = np.isfinite(slack)
        scale = float(np.median(slack[finite])) if finite.any() else 1.0
        key = np.where(finite, slack, np.inf) + self.rng.random(len(demands)) * (scale + 1e-12)
        return demands[np.argsort(key, kind="stable")[:count]]

    def _sample(self, locked_demands: np.ndarray) -> np.ndarray:
        o = self.options
        has = np.flatnonzero((np.diff(o.start) > 0) & ~locked_demands)
        if len(has) > SAMPLE:
            has = np.sort(self.rng.choice(has, SAMPLE, replace=False))
        return has

    def _how_many(self, budget: int, available: int) -> int:
        o = self.options
        avg = max(o.n_options / max(o.n_demands, 1), 1.0)
        return int(min(available, max(2, budget / min(avg, 6.0))))

    def _random(self, choice, budget, locked_pools, locked_demands) -> Neighbourhood | None:
        """Random demands with their options on unlocked pools (the best ones when many)."""
        has = self._sample(locked_demands)
        if not len(has):
            return None
        demands = self.rng.choice(has, self._how_many(budget, len(has)), replace=False)
        return self._restrict("random", demands, ~locked_pools, choice, budget)

    def _excess(self, demands: np.ndarray, choice: np.ndarray) -> np.ndarray:
        """Reduced cost of the current alternative minus the best one (0 = Lagrangian choice)."""
        cur = choice[demands]
        cur_rc = np.where(cur >= 0, self.rc[np.maximum(cur, 0)], self.alt[demands])
        excess = cur_rc - self.low[demands]
        finite = np.isfinite(excess)
        top = float(excess[finite].max(initial=0.0))
        return np.where(finite, excess, 10.0 * top + 1.0)

    def _eject(self, choice, budget, locked_pools, locked_demands) -> Neighbourhood | None:
        """A demand far above its best reduced cost, the pools where it would be cheaper, and
        the demands there that could most cheaply make room (moving anywhere unlocked)."""
        o = self.options
        sample = self._sample(locked_demands)
        if not len(sample):
            return None
        excess = self._excess(sample, choice)
        if excess.max(initial=0.0) <= 0:
            return None
        weight = excess ** 2
        seed = int(self.rng.choice(sample, p=weight / weight.sum()))
        lo, hi = o.start[seed], o.start[seed + 1]
        cur = choice[seed]
        cur_rc = self.rc[cur] if cur >= 0 else self.alt[seed]
        better = np.arange(lo, hi)[(self.rc[lo:hi] < cur_rc) & ~locked_pools[o.pool[lo:hi]]]
        if not len(better):
            return None
        better = better[np.argsort(self.rc[better], kind="stable")[:3]]
        target = np.zeros(o.n_pools, dtype=bool)
        target[o.pool[better]] = True
        served = choice >= 0
        there = np.flatnonzero(served & target[o.pool[np.maximum(choice, 0)]] & ~locked_demands)
        there = there[there != seed]
        per = 3
        if len(there) * per > budget:
            there = self._most_movable(there, choice, ~locked_pools, max(budget // per, 1))
        demands = np.concatenate([[seed], there])
        # Options: everything on the target pools, plus each demand's best others elsewhere.
        return self._restrict("eject", demands, target, choice, budget,
                              extra=per - 1, locked_pools=locked_pools)

    def _regret(self, choice, budget, locked_pools, locked_demands) -> Neighbourhood | None:
        """Demands sampled by how far their current choice is above their best reduced cost."""
        o = self.options
        sample = self._sample(locked_demands)
        if not len(sample):
            return None
        excess = self._excess(sample, choice)
        weight = excess + float(np.median(excess)) + 1e-12
        n = self._how_many(budget, len(sample))
        demands = self.rng.choice(sample, n, replace=False, p=weight / weight.sum())
        return self._restrict("regret", demands, ~locked_pools, choice, budget)

    def _core(self, choice: np.ndarray, budget: int) -> Neighbourhood | None:
        """Every demand with an alternative within reduced-cost slack delta of its best, where
        delta lets about ``budget`` options in; each may take any such option (or stay).

        Any plan that takes an alternative left out costs at least L + its slack (the relaxed
        problem with that alternative forced), which gives the neighbourhood's excluded bound.
        """
        o = self.options
        K = o.n_options
        if self.sorted_slack is None:
            self.sorted_slack = np.sort(self.slack)
        delta = np.inf if budget >= K else float(self.sorted_slack[budget])
        current = np.zeros(K, dtype=bool)
        served = choice >= 0
        current[choice[served]] = True
        allowed = (self.slack < delta) | current
        counts_all = np.diff(o.start)
        extra = np.bincount(o.demand, weights=allowed & ~current, minlength=o.n_demands) > 0
        extra |= served & (self.alt_slack < delta)
        demands = np.flatnonzero(extra | (~served & (counts_all > 0)))
        if not len(demands):
            return None
        rows, counts = segment_rows(o.start, demands)
        keep = allowed[rows]
        counts = np.bincount(np.repeat(np.arange(len(demands)), counts)[keep], minlength=len(demands))
        rows = rows[keep]
        out_option = self.slack[~allowed].min(initial=np.inf)
        out_unserved = self.alt_slack[served & (self.alt_slack >= delta)].min(initial=np.inf)
        least = min(out_option, out_unserved)
        excluded = self.lagrangian_bound + least if np.isfinite(least) else np.inf
        excluded -= 1e-12 * (abs(self.lagrangian_bound) + abs(least) if np.isfinite(least) else 0.0)
        whole = not np.isfinite(least) and len(demands) == int(np.count_nonzero(counts_all))
        return Neighbourhood("core", demands, rows, counts, whole=whole,
                             excluded_bound=excluded, exclusive=True)
