"""A fast feasible plan for a horizon instance, and the simple lower bound beside it.

Batch jobs are placed one at a time, must-serve first (fewest options first), then the services,
then the optional jobs by how much serving them saves over their penalty. Each job takes its
cheapest (pool, start) that fits the GPUs, the bandwidth and the carbon cap left (an optional job
only below its penalty): first the cheapest start over all of them is tried as it is (one exact
check), and only if it does not fit are all its starts priced against what is left.

A service is covered slot by slot: in each slot its pools are tried from the cheapest cost per
served quantum (rent / kappa + transfer) up, each taking as much of the load left as its free GPUs
and its route's bandwidth allow, while a full replica costs less than the penalty it saves; the
last, partial replica only if its rent and transfer are below the penalty of the load it serves.

`timed_lower_bound` is each demand's cheapest alternative with every coupling row dropped
(formulation §8.5 at zero multipliers): a batch job's cheapest start or its penalty, a service's
load priced at the cheapest fractional replica in each slot or left unserved.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from models import OPTIMAL_GAP, Status, relative_gap
from scheduler.engines import EngineResult
from scheduler.params import Stopped
from scheduler.timed import TimedChoice, TimedLoad, TimedProblem, grams

UNSERVED = -1
STOP_CHECK_EVERY = 256  # demands between two looks at the stop request


def timed_lower_bound(problem: TimedProblem, cheapest: np.ndarray | None = None) -> float | None:
    """Σ over demands of the cheapest alternative with every coupling row dropped (§8.5 at zero
    multipliers), a job's starts limited to those that fit alone (no plan uses another); None
    when a must-serve job has none (no plan exists). ``cheapest``: `Candidates` column 0."""
    b, sv = problem.batch, problem.services
    cheapest = Candidates(problem, keep=1).cost[:, 0] if cheapest is None else cheapest
    batch = np.where(b.must_serve, cheapest, np.minimum(cheapest, b.penalty))
    if not np.all(np.isfinite(batch)):
        return None
    parts = [math.fsum(batch.tolist())]
    for d in range(sv.n_services):
        js = slice(int(sv.start[d]), int(sv.start[d + 1]))
        per_quantum = np.full(problem.slots, sv.penalty_per_quantum[d])
        if js.stop > js.start:
            per_quantum = np.minimum(per_quantum, problem.service_quantum_cost(js).min(axis=0))
        parts.append(math.fsum((sv.load[d] * per_quantum).tolist()))
    return math.fsum(parts)


CANDIDATES = 8
"""Cheapest starts kept per batch job before the greedy runs; a job tries them in order and prices
all its starts again only if none of them fits what is left."""


class Candidates:
    """Each batch job's `CANDIDATES` cheapest (option, start) pairs that fit alone: within the
    GPUs its pool has in every slot of the run and the bandwidth its route has while the data
    moves, and (optional jobs) below the penalty. Rows sorted by cost, inf-padded.

    Priced in chunks of jobs (at most `CHUNK_ELEMENTS` pairs at a time). Column 0 is also a
    lower bound per job: a plan can only use starts that fit alone. ``jobs``: price only these
    (the others keep no candidate, `price` adds more later); every job when None.
    """

    def __init__(self, problem: TimedProblem, keep: int = CANDIDATES,
                 stop: Callable[[], bool] | None = None, jobs: np.ndarray | None = None):
        b = problem.batch
        nb = b.n_demands
        self.problem, self.keep, self.stop = problem, keep, stop
        self.cost = np.full((nb, keep), np.inf)
        self.option = np.full((nb, keep), UNSERVED, dtype=np.int64)
        self.start = np.full((nb, keep), UNSERVED, dtype=np.int64)
        self.rate = np.zeros((nb, keep), dtype=np.int64)
        self.co2 = np.zeros((nb, keep))
        self._empty: tuple | None = None
        self.price(np.arange(nb) if jobs is None else jobs)

    def price(self, jobs: np.ndarray) -> None:
        """Find the candidates of ``jobs`` (increasing job indices)."""
        from scheduler.timed import CHUNK_ELEMENTS

        problem, stop = self.problem, self.stop
        b = problem.batch
        jobs = np.asarray(jobs, dtype=np.int64)
        if not len(jobs):
            return
        if self._empty is None:
            empty = TimedLoad(problem)
            self._empty = (empty, empty.free_gpus(), empty.all_route_free())
        empty, free, route_free = self._empty
        counts = np.diff(b.start)
        width = np.zeros(b.n_demands, dtype=np.int64)
        has = counts > 0
        if b.n_options:
            width[has] = np.maximum.reduceat((b.last - b.first + 1).astype(np.int64), b.start[:-1][has])
        counts, width = counts[jobs], width[jobs]
        lo, n = 0, len(jobs)
        while lo < n:
            hi, size = lo, 0
            while hi < n and (hi == lo or size + counts[hi] * width[hi] <= CHUNK_ELEMENTS):
                size += counts[hi] * width[hi]
                hi += 1
            if stop is not None and stop():
                raise Stopped("stopped while building the first plan")
            self._price(problem, empty, free, route_free, jobs[lo:hi], self.keep)
            lo = hi

    def _price(self, problem, empty, free, route_free, jobs, keep) -> None:
        b = problem.batch
        lo, hi = int(jobs[0]), int(jobs[-1]) + 1
        if hi - lo == len(jobs):  # consecutive jobs: their options are one range
            ks = np.arange(b.start[lo], b.start[hi], dtype=np.int64)
        else:
            ks = np.concatenate([np.arange(b.start[i], b.start[i + 1], dtype=np.int64)
                                 for i in jobs.tolist()])
        if not len(ks):
            return
        w = int((b.last[ks] - b.first[ks]).max()) + 1
        ss = b.first[ks].astype(np.int64)[:, None] + np.arange(w, dtype=np.int64)[None, :]
        kk = np.broadcast_to(ks[:, None], ss.shape)
        # Priced only inside each option's own range (the grid is as wide as the widest).
        inside = ss <= b.last[ks][:, None]
        cost = np.full(ss.shape, np.inf)
        co2 = np.zeros(ss.shape)
        rate = np.zeros(ss.shape, dtype=np.int64)
        ok = np.zeros(ss.shape, dtype=bool)
        cost[inside], co2[inside], rate[inside], ok[inside] = problem.evaluate(
            kk[inside], ss[inside], co2=problem.carbon_cap_g is not None)
        demand = b.demand[ks]
        ok &= b.must_serve[demand][:, None] | (cost < b.penalty[demand][:, None])
        cap_ok, bw_ok, co2_ok = empty.feasible(kk, ss, co2, rate, free, route_free)
        ok &= cap_ok & bw_ok & co2_ok
        cost = np.where(ok, cost, np.inf)
        # Lay each job's options side by side: [jobs, most options x w].
        local = ks - b.start[demand]
        most = int((b.start[jobs + 1] - b.start[jobs]).max())
        nj = len(jobs)
        grid = np.full((nj, most * w), np.inf)
        cols = local[:, None] * w + np.arange(w)[None, :]
        grid[np.searchsorted(jobs, demand)[:, None], cols] = cost
        m = min(keep, grid.shape[1])
        part = np.argpartition(grid, m - 1, axis=1)[:, :m] if grid.shape[1] > m else \
            np.broadcast_to(np.arange(grid.shape[1]), (nj, grid.shape[1]))
        rows = np.arange(nj)[:, None]
        order = np.argsort(grid[rows, part], axis=1, kind="stable")
        pick = part[rows, order]  # [jobs, m] columns, cheapest first
        best = grid[rows, pick]
        opt_local, off = np.divmod(pick, w)
        valid = np.isfinite(best)
        k_of = np.where(valid, b.start[jobs, None] + opt_local, 0)
        row_of = np.searchsorted(ks, k_of)  # the row of that option in this chunk
        self.cost[jobs, :m] = best
        self.option[jobs, :m] = np.where(valid, k_of, UNSERVED)
        self.start[jobs, :m] = np.where(valid, ss[row_of, off], UNSERVED)
        self.rate[jobs, :m] = np.where(valid, rate[row_of, off], 0)
        self.co2[jobs, :m] = np.where(valid, co2[row_of, off], 0.0)


class TimedGreedy:
    """The greedy construction; `run` returns the choice and whether every must-serve job fit."""

    def __init__(self, problem: TimedProblem, stop: Callable[[], bool] | None = None,
                 jobs: np.ndarray | None = None):
        """``jobs``: the jobs whose candidates are priced now (all when None); `place` finds no
        start for a job not priced (see `Candidates.price`)."""
        self.problem = problem
        self.stop = stop
        self.load = TimedLoad(problem)
        b, sv = problem.batch, problem.services
        self.option = np.full(b.n_demands, UNSERVED, dtype=np.int64)
        self.start = np.full(b.n_demands, UNSERVED, dtype=np.int64)
        self.replicas = np.zeros((sv.n_options, problem.slots), dtype=np.int64)
        self.served = np.zeros((sv.n_options, problem.slots), dtype=np.int64)
        self.candidates = Candidates(problem, stop=stop, jobs=jobs)
        self.cheapest = self.candidates.cost[:, 0]
        self._checked = 0

    def _check_stop(self) -> None:
        self._checked += 1
        if self.stop is not None and self._checked % STOP_CHECK_EVERY == 0 and self.stop():
            raise Stopped("stopped while building the first plan")

    def run(self) -> tuple[TimedChoice, bool]:
        b = self.problem.batch
        counts = np.diff(b.start)
        savings = b.penalty - self.cheapest
        must = np.flatnonzero(b.must_serve)
        optional = np.flatnonzero(~b.must_serve)
        complete = True
        for i in must[np.lexsort((-savings[must], counts[must]))].tolist():
            self._check_stop()
            complete &= self.place(i)
        for d in range(self.problem.services.n_services):
            self._check_stop()
            self.cover(d)
        for i in optional[np.argsort(-savings[optional], kind="stable")].tolist():
            self._check_stop()
            self.place(i)
        choice = TimedChoice(option=self.option, start_slot=self.start.astype(np.int32),
                             replicas=self.replicas, served=self.served)
        return choice, complete

    # -- batch ------------------------------------------------------------------------------

    def place(self, i: int) -> bool:
        """Place batch demand ``i`` on its cheapest fitting (option, start); whether it was."""
        b, c = self.problem.batch, self.candidates
        if not np.isfinite(c.cost[i, 0]):
            return False  # no start fits even alone (or, optional, none below the penalty)
        for m in range(c.cost.shape[1]):
            if not np.isfinite(c.cost[i, m]):
                return False  # every start that fits alone was tried
            k, s, rate, co2 = int(c.option[i, m]), int(c.start[i, m]), int(c.rate[i, m]), float(c.co2[i, m])
            if self.load.fits(k, s, rate, co2):
                break
        else:
            found = self._cheapest_fitting(i)
            if found is None:
                return False
            k, s, rate, co2 = found
        self.load.add_batch(k, s, rate, co2)
        self.option[i], self.start[i] = k, s
        return True

    def _cheapest_fitting(self, i: int) -> tuple[int, int, int, float] | None:
        """Every allowed start of every option of ``i`` against the load left: the cheapest that
        fits (below the penalty unless must-serve), or None. GPUs are checked first, and only
        the starts that find them are priced."""
        b, pr, load = self.problem.batch, self.problem, self.load
        ks = np.arange(b.start[i], b.start[i + 1], dtype=np.int64)
        width = int((b.last[ks] - b.first[ks]).max()) + 1
        ss = b.first[ks].astype(np.int64)[:, None] + np.arange(width, dtype=np.int64)[None, :]
        kk = np.broadcast_to(ks[:, None], ss.shape)
        room = (ss <= b.last[ks][:, None]) & load.capacity_fit(kk, ss)
        if not room.any():
            return None
        rows, cols = np.nonzero(room)
        k1, s1 = ks[rows], ss[rows, cols]
        cost, co2, rate, ok = pr.evaluate(k1, s1, co2=pr.carbon_cap_g is not None)
        if not b.must_serve[i]:
            ok &= cost < b.penalty[i]
        if not ok.any():
            return None
        ok[ok] = load.bandwidth_fit(k1[ok][:, None], s1[ok][:, None], rate[ok][:, None])[:, 0]
        if pr.carbon_cap_g is not None:
            ok &= grams(co2) <= load.grams_left()
        if not ok.any():
            return None
        m = int(np.argmin(np.where(ok, cost, np.inf)))
        return int(k1[m]), int(s1[m]), int(rate[m]), float(co2[m])

    # -- services ---------------------------------------------------------------------------

    def cover(self, d: int) -> None:
        """Serve service ``d`` slot by slot from its cheapest pools up (see the module text)."""
        pr, sv, load = self.problem, self.problem.services, self.load
        lo, hi = int(sv.start[d]), int(sv.start[d + 1])
        if lo == hi:
            return
        S = pr.slots
        t = np.arange(S)
        per_quantum = pr.service_quantum_cost(slice(lo, hi))  # [nj, S]
        ranks = np.argsort(per_quantum, axis=0, kind="stable")
        pen = float(sv.penalty_per_quantum[d])
        gang = int(sv.gang[d])
        left = sv.load[d].copy()
        for rank in range(hi - lo):
            if not left.any():
                break
            local = ranks[rank]
            js = lo + local
            worth = per_quantum[local, t] < pen
            if not worth.any():
                break  # the cheaper ranks were not worth it either
            p = sv.pool[js].astype(np.int64)
            kappa = sv.kappa[js]
            fit_replicas = np.maximum(pr.avail[p, t] - load.gpus[p, t], 0) // gang
            most = np.minimum(left, kappa * fit_replicas)
            tau = sv.tau[js]
            carries = (sv.route[js] >= 0) & (tau > 0)
            if carries.any():
                least = load.route_free(sv.route[js])[t, t]  # route of each slot's option
                most = np.where(carries, np.minimum(most, np.maximum(least, 0) // np.maximum(tau, 1)),
                                most)
            full = np.where(worth, most // kappa, 0)
            rest = most - full * kappa
            rent = sv.rent[js, t]
            tpq = sv.transfer_per_quantum[js]
            partial = worth & (rest > 0) & (rent + rest * tpq < rest * pen)
            replicas = full + partial
            served = full * kappa + np.where(partial, rest, 0)
            if pr.carbon_cap_g is not None:
                replicas, served = self._within_cap(js, t, replicas, served)
            use = np.flatnonzero(replicas > 0)
            if not len(use):
                continue
            load.add_service_slots(js[use], t[use], replicas[use], served[use])
            self.replicas[js[use], t[use]] += replicas[use]
            self.served[js[use], t[use]] += served[use]
            left -= served

    def _within_cap(self, js, t, replicas, served):
        """Keep the earliest slots whose replicas' emissions, each rounded up to whole grams,
        fit in the carbon left (an upper bound on what the placements add)."""
        sv = self.problem.services
        g = np.ceil(replicas * sv.co2_kg[js, t] * 1000.0).astype(np.int64)
        fits = np.cumsum(g) <= self.load.grams_left()
        return np.where(fits, replicas, 0), np.where(fits, served, 0)


def timed_greedy(problem: TimedProblem, *, stop: Callable[[], bool] | None = None
                 ) -> tuple[TimedChoice, bool]:
    """The greedy choice and whether every must-serve job fit (see the module text)."""
    return TimedGreedy(problem, stop).run()


def solve_timed_greedy(problem: TimedProblem, hint: TimedChoice | None = None,
                       complete: bool | None = None, bound: float | None = None) -> EngineResult:
    """The greedy plan as an engine result, with the lower bound of `timed_lower_bound`.

    Status: optimal when the gap to that bound is within OPTIMAL_GAP, feasible otherwise;
    infeasible when a must-serve job has no option at all, unknown when the greedy could not fit
    every must-serve job.
    """
    from scheduler.timed_decode import choice_objective

    if hint is None or complete is None:
        greedy = TimedGreedy(problem)
        hint, complete = greedy.run()
        bound = timed_lower_bound(problem, greedy.cheapest)
    elif bound is None:
        bound = timed_lower_bound(problem)
    b = problem.batch
    if np.any(b.must_serve & (np.diff(b.start) == 0)):
        return EngineResult(None, Status.INFEASIBLE, None, "a must-serve job has no option",
                            workers=1)
    if not complete:
        return EngineResult(None, Status.UNKNOWN, bound, "greedy: a must-serve job did not fit",
                            workers=1)
    value = choice_objective(problem, hint)
    gap = relative_gap(value, bound)
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    return EngineResult(hint, status, bound, f"greedy ({status.value})", workers=1)
