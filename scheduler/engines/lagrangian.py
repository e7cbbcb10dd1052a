"""Lagrangian relaxation of the pool capacities, and a bundle method that maximizes it.

With one multiplier lam[p] >= 0 per pool, the capacity rows move into the objective and every
demand then picks its alternative on its own:

    L(lam) = sum_d min( min_{k of d} (c[k] + lam[p(k)] u[k]),  pi[d] unless must-serve )
             - sum_p lam[p] cap[p]

Every lam >= 0 gives a valid lower bound (weak duality); the best one equals the LP relaxation's
value. Two methods maximize the concave, piecewise-linear L: `smoothed_ascent` (projected Newton on
a log-sum-exp smoothing whose temperature falls stage by stage: fast and robust far from the
optimum) and `DualAscent` (a box-step bundle method whose cutting-plane model GLOP maximizes:
exact at the end). Only exact evaluations of L are ever reported as bounds. See
docs/large-engine.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.compile import Options

BOUND_SAFETY = 1e-12
"""Relative margin taken off every Lagrangian value before it is reported as a bound: float
rounding in the sums is at most a few units of 2**-53 times the sum of absolute terms, so a
margin of 1e-12 times that sum can never be eaten by rounding."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    """L(lam) at one lam: its value, the relaxed choice behind it, and a supergradient."""

    lam: np.ndarray  # float64 [P], >= 0
    value: float  # L(lam) as computed (math.fsum of the per-demand minima)
    bound: float  # value - safety margin: a valid lower bound on the optimum
    best: np.ndarray  # int64 [D]: option minimizing the reduced cost, -1 for unserved
    load: np.ndarray  # float64 [P]: units the relaxed choice puts on each pool
    capacity: np.ndarray  # float64 [P]

    @property
    def subgradient(self) -> np.ndarray:
        """load - cap: a supergradient of L at lam."""
        return self.load - self.capacity


class CapacityRelaxation:
    """Evaluates L(lam) vectorized over all options (memory: a few arrays of one float per option)."""

    def __init__(self, options: Options):
        self.options = options
        counts = np.diff(options.start)
        self.has = counts > 0
        self.seg = options.start[:-1][self.has]
        self.units_f = options.units.astype(np.float64)
        self.capacity = options.capacity.astype(np.float64)
        self.alt = np.where(options.must_serve, np.inf, options.penalty)[self.has]
        self.demands_with = np.flatnonzero(self.has)
        # Optional demands without any option are always unserved: a constant of the bound.
        lone = ~self.has & ~options.must_serve
        self.constant_terms = options.penalty[lone]
        self.constant = math.fsum(self.constant_terms)
        self.evaluations = 0

    def reduced_costs(self, lam: np.ndarray, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """c[k] + lam[p(k)] u[k] for every option (or the options ``rows``)."""
        o = self.options
        if rows is None:
            rc = lam[o.pool]
            rc *= self.units_f
            rc += o.cost
            return rc
        rc = lam[o.pool[rows]]
        rc *= self.units_f[rows]
        rc += o.cost[rows]
        return rc

    def evaluate(self, lam: np.ndarray) -> Evaluation:
        """L(lam), the relaxed choice (ties: the first option, serving before unserved)."""
        o = self.options
        lam = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)
        self.evaluations += 1
        best = np.full(o.n_demands, -1, dtype=np.int64)
        if len(self.seg):
            rc = self.reduced_costs(lam)
            low = np.minimum.reduceat(rc, self.seg)
            counts = np.diff(o.start)[self.has]
            at_min = rc == np.repeat(low, counts)
            del rc
            idx = np.flatnonzero(at_min)
            del at_min
            first = np.ones(len(idx), dtype=bool)
            dem = o.demand[idx]
            first[1:] = dem[1:] != dem[:-1]
            idx = idx[first]
            serve = low <= self.alt
            best[self.demands_with[serve]] = idx[serve]
            terms = np.where(serve, low, self.alt)
        else:
            terms = np.zeros(0)
        chosen = best[best >= 0]
        load = np.bincount(o.pool[chosen], weights=self.units_f[chosen], minlength=o.n_pools)
        priced = lam * self.capacity
        value = math.fsum(terms) + self.constant - math.fsum(priced)
        # Margin: per-term rounding of c + lam*u and of lam*cap, far below 1e-12 of the magnitude.
        scale = (
            float(np.abs(terms).sum())
            + float(np.abs(self.constant_terms).sum())
            + float((lam * load).sum())
            + float(priced.sum())
        )
        bound = value - BOUND_SAFETY * scale - 1e-300
        return Evaluation(lam, value, bound, best, load, self.capacity)


NULL_PATIENCE = 3
"""Null steps in a row after which the bundle method halves its box."""


class DualAscent:
    """Box-step bundle method for max_{lam >= 0} L(lam).

    The cutting-plane model  L(lam) <= min_j ( L(lam_j) + g_j . (lam - lam_j) )  is maximized by
    GLOP inside a box of half-width ``delta`` around the stability centre; a trial that gains at
    least a tenth of the predicted increase moves the centre (serious step), otherwise its cut
    just sharpens the model (null step); `NULL_PATIENCE` null steps in a row halve the box.
    """

    def __init__(self, relax: CapacityRelaxation, lam0: np.ndarray | None = None,
                 max_cuts: int | None = None):
        from ortools.linear_solver import pywraplp

        o = relax.options
        self.relax = relax
        self.P = o.n_pools
        per_unit = o.cost / np.maximum(relax.units_f, 1.0)
        self.scale = float(np.median(np.abs(per_unit))) if len(per_unit) else 1.0
        self.scale = max(self.scale, 1e-9)
        self.delta = self.scale
        self.max_cuts = max_cuts or 3 * self.P + 30
        self._pywraplp = pywraplp
        self._build()
        lam0 = np.zeros(self.P) if lam0 is None else np.maximum(lam0, 0.0)
        first = relax.evaluate(lam0)
        self.center = first
        self.best = first
        self.cuts: list[tuple[float, np.ndarray]] = []
        self._add_cut(first)
        self.converged = False
        self.serious = 0
        self.null = 0
        self.nulls_in_row = 0

    def _build(self) -> None:
        pywraplp = self._pywraplp
        self.solver = pywraplp.Solver.CreateSolver("GLOP")
        inf = self.solver.infinity()
        self.lam_vars = [self.solver.NumVar(0.0, inf, f"lam{p}") for p in range(self.P)]
        self.theta = self.solver.NumVar(-inf, inf, "theta")
        objective = self.solver.Objective()
        objective.SetCoefficient(self.theta, 1.0)
        objective.SetMaximization()
        self.rows = []
        self.solved = False

    def _add_cut(self, e: Evaluation) -> None:
        g = e.subgradient
        # theta - g . lam <= L(lam_j) - g . lam_j
        rhs = e.value - float(g @ e.lam)
        self.cuts.append((rhs, g))
        self._add_row(rhs, g)

    def _add_row(self, rhs: float, g: np.ndarray) -> None:
        row = self.solver.Constraint(-self.solver.infinity(), rhs)
        row.SetCoefficient(self.theta, 1.0)
        for p in np.flatnonzero(g):
            row.SetCoefficient(self.lam_vars[p], -float(g[p]))
        self.rows.append(row)

    def _compress(self) -> None:
        """Keep the cuts that are tight at the last master solution, plus the newest ones."""
        keep = []
        if self.solved:
            keep = [j for j, row in enumerate(self.rows) if abs(row.dual_value()) > 1e-12]
        keep = sorted(set(keep) | set(range(max(0, len(self.cuts) - self.P), len(self.cuts))))
        self.cuts = [self.cuts[j] for j in keep]
        self._build()
        for rhs, g in self.cuts:
            self._add_row(rhs, g)

    def step(self) -> Evaluation | None:
        """One trial point; returns its evaluation, or None once the model predicts no ascent."""
        c = self.center.lam
        for p, var in enumerate(self.lam_vars):
            var.SetBounds(max(0.0, c[p] - self.delta), c[p] + self.delta)
        status = self.solver.Solve()
        self.solved = status == self._pywraplp.Solver.OPTIMAL
        if not self.solved:
            self._compress()
            self.delta *= 0.5
            if self.delta < 1e-9 * self.scale:
                self.converged = True
            return None
        predicted = self.theta.solution_value() - self.center.value
        tolerance = 1e-10 * max(1.0, abs(self.center.value))
        trial = np.array([var.solution_value() for var in self.lam_vars])
        at_edge = np.abs(trial - c).max(initial=0.0) >= 0.999 * self.delta
        if predicted <= tolerance:
            if at_edge:  # the box was the limit: grow it
                self.delta *= 2.0
                return None
            self.converged = True
            return None
        e = self.relax.evaluate(trial)
        if len(self.rows) > self.max_cuts:
            self._compress()
        self._add_cut(e)
        gain = e.value - self.center.value
        if gain >= 0.1 * predicted:
            self.center = e
            self.serious += 1
            self.nulls_in_row = 0
            if gain >= 0.5 * predicted and at_edge:
                self.delta *= 2.0
        else:
            self.null += 1
            self.nulls_in_row += 1
            # The new cut sharpens the model; only a run of null steps shrinks the box (shrinking
            # on every failed step collapsed it far from the optimum: 0.3% short at 100,000
            # demands, reported as converged).
            if self.nulls_in_row >= NULL_PATIENCE:
                self.nulls_in_row = 0
                self.delta *= 0.5
                if self.delta < 1e-9 * self.scale:
                    self.converged = True
        if e.value > self.best.value:
            self.best = e
        return e

    def run(self, max_steps: int, deadline: float, stop: Callable[[], bool] = lambda: False,
            relative_tolerance: float = 1e-9) -> Evaluation:
        """Steps until converged, ``max_steps`` trials, the deadline or ``stop()``."""
        quiet = 0
        for _ in range(max_steps):
            if self.converged or time.perf_counter() >= deadline or stop():
                break
            before = self.best.value
            self.step()
            gained = self.best.value - before
            quiet = quiet + 1 if gained <= relative_tolerance * max(1.0, abs(before)) else 0
            if quiet >= 8 * self.P + 50:
                break
        return self.best


class SmoothedDual:
    """L_tau(lam) = sum_d -tau log( sum_{alternatives a of d} exp(-rc_a / tau) ) - lam . cap.

    A smooth concave under-estimate of L (softmin <= min), within tau * sum_d log(#alternatives)
    of it; its gradient is the expected load under the softmax weights minus capacity, and its
    Hessian is -1/tau times the sum over demands of the covariance of their load vectors.
    """

    CHUNK = 65_536  # demands per block when the Hessian is accumulated

    def __init__(self, relax: CapacityRelaxation):
        self.relax = relax
        o = relax.options
        self.counts = np.diff(o.start)[relax.has]
        self.P = o.n_pools
        self.evaluations = 0

    def value(self, lam: np.ndarray, tau: float, hessian: bool = True, gradient: bool = True):
        """(L_tau, gradient or None, Hessian or None) at lam (the Hessian needs the gradient)."""
        r, o = self.relax, self.relax.options
        self.evaluations += 1
        if not len(r.seg):
            return r.constant - float(lam @ r.capacity), -r.capacity.copy(), (
                np.zeros((self.P, self.P)) if hessian else None)
        rc = r.reduced_costs(lam)
        low = np.minimum(np.minimum.reduceat(rc, r.seg), r.alt)
        rc -= np.repeat(low, self.counts)
        rc *= -1.0 / tau
        np.exp(rc, out=rc)  # rc now holds the unnormalized weights z (the best one is 1)
        z_alt = np.exp(-(r.alt - low) / tau)
        total = np.add.reduceat(rc, r.seg) + z_alt
        value = math.fsum(low - tau * np.log(total)) + r.constant - math.fsum(lam * r.capacity)
        if not (gradient or hessian):
            return value, None, None
        rc /= np.repeat(total, self.counts)  # weights w
        rc *= r.units_f  # w * u
        g = np.bincount(o.pool, weights=rc, minlength=self.P) - r.capacity
        if not hessian:
            return value, g, None
        # Only demands whose weights are spread (the largest, 1 / total, below 1) have a
        # non-zero covariance.
        spread = np.flatnonzero(total > 1.0 + 1e-12)
        H = np.zeros((self.P, self.P))
        for lo in range(0, len(spread), self.CHUNK):
            part = spread[lo: lo + self.CHUNK]
            rows = _rows_of(o.start, r.demands_with[part])
            owner = np.repeat(np.arange(len(part)), self.counts[part])
            A = np.zeros((len(part), self.P))
            A[owner, o.pool[rows]] = rc[rows]
            H += A.T @ A
            H[np.diag_indices(self.P)] -= np.bincount(
                o.pool[rows], weights=rc[rows] * r.units_f[rows], minlength=self.P)
        H /= tau
        return value, g, H


def _rows_of(start: np.ndarray, demands: np.ndarray) -> np.ndarray:
    lo = start[demands]
    counts = start[demands + 1] - lo
    offsets = np.zeros(len(demands), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    return np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(lo - offsets, counts)


def smoothed_ascent(relax: CapacityRelaxation, deadline: float,
                    stop: Callable[[], bool] = lambda: False, lam0: np.ndarray | None = None,
                    newton_steps: int = 12, cooling: float = 4.0,
                    relative_tolerance: float = 1e-7,
                    on_stage: Callable[[Evaluation], None] | None = None) -> Evaluation:
    """Maximize L_tau by projected Newton steps (Armijo backtracking) for falling tau.

    Starts at tau = a tenth of the median option cost and divides it by ``cooling`` after each
    stage; stops when a stage raises the exact L by less than ``relative_tolerance``, at the
    deadline or on ``stop()``. Returns the best exact evaluation of L seen; ``on_stage`` gets
    the exact evaluation at the end of every stage.
    """
    o = relax.options
    smooth = SmoothedDual(relax)
    lam = np.zeros(o.n_pools) if lam0 is None else np.maximum(lam0, 0.0)
    tau = max(float(np.median(np.abs(o.cost))) * 0.1 if o.n_options else 1.0, 1e-9)
    best = relax.evaluate(lam)
    previous = -math.inf
    accepted = 1.0  # the last step length the line search accepted
    while not (stop() or time.perf_counter() >= deadline):
        for _ in range(newton_steps):
            if stop() or time.perf_counter() >= deadline:
                break
            value, g, H = smooth.value(lam, tau)
            free = ~((lam <= 0.0) & (g < 0.0))  # at the bound and pushing out: held at zero
            Hf = H[np.ix_(free, free)]
            ridge = 1e-10 * max(float(np.abs(np.diag(Hf)).max(initial=0.0)), 1e-300)
            step = np.zeros(o.n_pools)
            try:
                step[free] = np.linalg.solve(Hf - ridge * np.eye(int(free.sum())), -g[free])
            except np.linalg.LinAlgError:
                break
            # A (numerically) singular Hessian along an ascent direction, e.g. L growing linearly
            # because a must-serve demand fits no pool, gives an infinite step: stop the stage
            # (an infinite multiplier would turn the reduced costs into inf - inf).
            if not np.all(np.isfinite(step)) or not g @ step > 0.0:
                break
            # Far from quadratic (the smoothed kinks), the Newton step overshoots by a fairly
            # steady factor: backtracking starts at three times the last accepted step length.
            a = min(1.0, 3.0 * accepted)
            while a > 1e-8:
                trial = np.maximum(lam + a * step, 0.0)
                trial_value = smooth.value(trial, tau, hessian=False, gradient=False)[0]
                if trial_value >= value + 1e-4 * float(g @ (trial - lam)):
                    break
                a *= 0.3
            if a <= 1e-8:
                break
            lam, accepted = trial, a
            if trial_value - value <= 1e-12 * abs(value):
                break
        exact = relax.evaluate(lam)
        if on_stage is not None:
            on_stage(exact)
        if exact.value > best.value:
            best = exact
        if best.value - previous <= relative_tolerance * max(abs(best.value), 1.0):
            break
        previous = best.value
        tau /= cooling
    return best
