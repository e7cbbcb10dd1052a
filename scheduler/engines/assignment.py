"""Lagrangian relaxation of the assignment rows: one exact 0-1 knapsack per pool.

With one multiplier mu[d] per demand (free in sign) on its row "one option or unserved", the
problem falls apart into one knapsack per pool over the pool's options, with integer weights (the
options' quanta) and profits mu[d(k)] - c[k]:

    L(mu) = sum_d mu[d] + sum_{d optional} min(0, pi[d] - mu[d]) - sum_p KP_p(mu) + const

where KP_p(mu) = max { sum_k (mu[d(k)] - c[k]) x[k] : sum_k u[k] x[k] <= cap[p], x binary } over
the options k of pool p. Every mu gives a lower bound on the true (integer) problem; the best one
equals the column-generation bound and is at least the capacity relaxation's (LP) value, which it
starts from: mu[d] = min_k (c[k] + lam[p(k)] u[k]) (capped at pi[d]). The knapsacks are solved
exactly, small ones by a numpy dynamic programme over the capacity in quanta, larger ones by
OR-Tools' branch and bound on profits rounded up, so this is only used where the capacities are
small (GAP-like instances, `fits`). See docs/large-engine.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.compile import Options

MAX_CAPACITY = 100_000  # largest pool capacity (quanta) the knapsack programme takes
MAX_DP_CELLS = 50_000_000  # largest sum over pools of options x capacity (the worst evaluation)
MAX_OPTIONS = 200_000
MAX_POOL_CELLS = 3_000_000  # largest options x capacity of one pool (Yagiura n <= 900: <= 2.2M)
EPS = 2.0 ** -52
DP_CELLS = 100_000  # knapsacks up to this many items x capacity take the dynamic programme


def fits(o: Options) -> bool:
    """Whether the knapsack relaxation is cheap enough to try: small capacities in quanta, few
    options, and no pool whose knapsack (options x capacity) is large."""
    if o.n_options == 0 or o.n_options > MAX_OPTIONS or o.n_pools < 2:
        return False
    cap = o.capacity
    if int(cap.max()) > MAX_CAPACITY:
        return False
    per_pool = np.bincount(o.pool, minlength=o.n_pools).astype(np.float64)
    cells = per_pool * cap
    return float(cells.max()) <= MAX_POOL_CELLS and float(cells.sum()) <= MAX_DP_CELLS


@dataclass(frozen=True, eq=False)
class Evaluation:
    """L(mu) at one mu: its value, a proven bound, and a subgradient."""

    mu: np.ndarray  # float64 [D]
    value: float
    bound: float  # value less the rounding margin: a valid lower bound on the optimum
    subgradient: np.ndarray  # float64 [D]: 1 - (options taken) - (unserved taken)
    taken: np.ndarray  # bool [options]: the knapsacks' choice


class AssignmentRelaxation:
    """Evaluates L(mu) by one exact knapsack per pool."""

    def __init__(self, options: Options):
        o = options
        self.options = o
        self.demand = o.demand.astype(np.int64)
        self.cost = o.cost.astype(np.float64)
        counts = np.diff(o.start)
        self.has = counts > 0
        self.optional = ~o.must_serve & self.has
        lone = ~self.has & ~o.must_serve
        self.constant_terms = o.penalty[lone].astype(np.float64)
        self.constant = math.fsum(self.constant_terms)
        cap = o.capacity.astype(np.int64)
        self.cap = cap
        order = np.argsort(o.pool, kind="stable")
        usable = o.units[order] <= cap[o.pool[order]]  # heavier options never fit their pool
        order = order[usable]
        bounds = np.searchsorted(o.pool[order], np.arange(o.n_pools + 1))
        self.rows = [order[bounds[p]:bounds[p + 1]] for p in range(o.n_pools)]
        self.weight = o.units.astype(np.int64)
        self.evaluations = 0
        self._solver = None

    def _solve(self, profit: np.ndarray, weight: np.ndarray, cap: int) -> tuple[float, np.ndarray]:
        """An upper bound on the knapsack's optimum (exact up to far below 1e-9) and its items:
        OR-Tools' branch and bound on profits rounded up to integers (so the value can only
        over-estimate: the bound stays valid)."""
        total = math.fsum(profit)
        if int(weight.sum()) <= cap:
            return total, np.ones(len(profit), dtype=bool)
        if len(profit) * (cap + 1) <= DP_CELLS:
            return _knapsack(profit, weight, cap)
        if self._solver is None:
            from ortools.algorithms.python import knapsack_solver

            self._solver = knapsack_solver.KnapsackSolver(
                knapsack_solver.SolverType.KNAPSACK_MULTIDIMENSION_BRANCH_AND_BOUND_SOLVER, "kp")
        scale = 2.0 ** 40 / max(total, 1e-300)
        whole = np.floor(profit * scale).astype(np.int64) + 1  # >= profit * scale, exactly
        s = self._solver
        s.init(whole.tolist(), [weight.tolist()], [int(cap)])
        best = s.solve()
        pick = np.fromiter((s.best_solution_contains(i) for i in range(len(profit))), dtype=bool,
                           count=len(profit))
        return float(best) / scale * (1.0 + 4.0 * EPS), pick

    def start(self, lam: np.ndarray) -> np.ndarray:
        """The multipliers at which L is at least the capacity relaxation's L(lam)."""
        o = self.options
        rc = self.cost + np.asarray(lam, dtype=np.float64)[o.pool] * o.units
        mu = np.zeros(o.n_demands)
        if o.n_options:
            low = np.minimum.reduceat(rc, o.start[:-1][self.has])
            mu[self.has] = low
        mu = np.where(self.optional, np.minimum(mu, o.penalty), mu)
        return mu

    def evaluate(self, mu: np.ndarray) -> Evaluation:
        """L(mu), exact up to a float margin that is taken off ``bound``."""
        o = self.options
        self.evaluations += 1
        mu = np.where(self.has, np.asarray(mu, dtype=np.float64), 0.0)
        profit = mu[self.demand] - self.cost
        taken = np.zeros(o.n_options, dtype=bool)
        packed: list[float] = []
        scale = float(np.abs(mu).sum()) + float(np.abs(self.constant_terms).sum())
        worst_items = 1
        for p in range(o.n_pools):
            rows = self.rows[p]
            if not len(rows):
                continue
            rows = rows[profit[rows] > 0.0]
            if not len(rows):
                continue
            value, pick = self._solve(profit[rows], self.weight[rows], int(self.cap[p]))
            taken[rows[pick]] = True
            packed.append(value)
            # The true optimum of this knapsack exceeds the computed one by at most the rounding
            # of its sums: a few ulps times the items times the profits' magnitudes.
            scale += float((np.abs(mu[self.demand[rows]]) + np.abs(self.cost[rows])).sum())
            worst_items = max(worst_items, len(rows))
        unserved = self.optional & (o.penalty < mu)
        alt = np.where(unserved, o.penalty - mu, 0.0)
        value = math.fsum(mu) + math.fsum(alt) - math.fsum(packed) + self.constant
        scale += float(np.abs(alt).sum()) + float(np.abs(packed).sum())
        margin = max(1e-12, 8.0 * EPS * (worst_items + o.n_pools + 2)) * scale
        g = 1.0 - np.bincount(self.demand[taken], minlength=o.n_demands) - unserved
        g = np.where(self.has, g, 0.0)
        return Evaluation(mu, value, value - margin - 1e-300, g.astype(np.float64), taken)


def _knapsack(profit: np.ndarray, weight: np.ndarray, cap: int) -> tuple[float, np.ndarray]:
    """max profit . x subject to weight . x <= cap, x binary (profits > 0, 0 <= weights <= cap):
    the value and the chosen items (bool)."""
    n = len(profit)
    total = int(weight.sum())
    if total <= cap:
        return math.fsum(profit), np.ones(n, dtype=bool)
    cap = min(cap, total)
    dp = np.zeros(cap + 1)
    keep = np.zeros((n, cap + 1), dtype=bool)
    for i in range(n):
        w, v = int(weight[i]), float(profit[i])
        if w == 0:
            dp += v
            keep[i] = True
            continue
        candidate = dp[:-w] + v
        better = candidate > dp[w:]
        keep[i, w:] = better
        dp[w:] = np.where(better, candidate, dp[w:])
    pick = np.zeros(n, dtype=bool)
    c = cap
    for i in range(n - 1, -1, -1):
        if keep[i, c]:
            pick[i] = True
            c -= int(weight[i])
    return float(dp[cap]), pick


@dataclass
class AscentResult:
    best: Evaluation
    iterations: int
    start_bound: float


def subgradient_ascent(relax: AssignmentRelaxation, mu0: np.ndarray, target: float,
                       deadline: float, max_iterations: int,
                       stop: Callable[[], bool] = lambda: False,
                       on_bound: Callable[[float], None] | None = None,
                       patience: int = 25,
                       on_evaluation: Callable[[int, Evaluation], None] | None = None
                       ) -> AscentResult:
    """Deflected subgradient ascent with Polyak steps towards ``target`` (an incumbent's cost).

    The step size factor halves after ``patience`` steps without a new best and the iterate
    returns to the best; deterministic for given inputs when the deadline does not bind.
    ``on_evaluation(step, evaluation)`` sees every evaluation (e.g. to build plans from it).
    """
    current = relax.evaluate(mu0)
    best = current
    start = current.bound
    if on_bound is not None:
        on_bound(best.bound)
    alpha = 1.0
    direction = np.zeros_like(mu0, dtype=np.float64)
    quiet = 0
    iterations = 0
    while iterations < max_iterations and not stop() and time.perf_counter() < deadline:
        g = current.subgradient
        direction = g + 0.5 * direction if float(direction @ g) < 0 else g.copy()
        norm = float(direction @ direction)
        if norm == 0.0:
            break  # the relaxed choice is a plan: L(mu) is the optimum
        gap = target - current.value
        if not math.isfinite(gap) or gap <= 0:
            gap = 1e-3 * max(1.0, abs(current.value))
        step = alpha * gap / norm
        trial = relax.evaluate(current.mu + step * direction)
        iterations += 1
        current = trial
        if on_evaluation is not None:
            on_evaluation(iterations, trial)
        if trial.value > best.value + 1e-12 * max(1.0, abs(best.value)):
            best = trial
            quiet = 0
            if on_bound is not None:
                on_bound(best.bound)
        else:
            quiet += 1
            if quiet >= patience:
                alpha *= 0.5
                quiet = 0
                current = best
                direction = np.zeros_like(direction)
                if alpha < 1e-4:
                    break
    return AscentResult(best, iterations, start)
