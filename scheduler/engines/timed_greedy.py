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
from scheduler.timed import TimedChoice, TimedLoad, TimedProblem

UNSERVED = -1
STOP_CHECK_EVERY = 256  # demands between two looks at the stop request


def cheapest_per_demand(problem: TimedProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each batch demand's cheapest (option, start) with no coupling row: (cost, option, start);
    cost inf and -1 where a demand has no option."""
    b = problem.batch
    cost_k, start_k = problem.best_starts()
    cost = np.full(b.n_demands, np.inf)
    option = np.full(b.n_demands, UNSERVED, dtype=np.int64)
    start = np.full(b.n_demands, UNSERVED, dtype=np.int64)
    has = np.diff(b.start) > 0
    if b.n_options:
        seg = b.start[:-1][has]
        cost[has] = np.minimum.reduceat(cost_k, seg)
        # The first option reaching its demand's minimum.
        hit = cost_k == cost[b.demand]
        first_hit = np.full(b.n_demands, b.n_options, dtype=np.int64)
        np.minimum.at(first_hit, b.demand[hit], np.flatnonzero(hit))
        option[has] = first_hit[has]
        start[has] = start_k[option[has]]
    return cost, option, start


def timed_lower_bound(problem: TimedProblem, cheapest: np.ndarray | None = None) -> float | None:
    """Σ over demands of the cheapest alternative with every coupling row dropped (§8.5 at zero
    multipliers); None when a must-serve job has no option (no plan exists)."""
    b, sv = problem.batch, problem.services
    cheapest = cheapest_per_demand(problem)[0] if cheapest is None else cheapest
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


class TimedGreedy:
    """The greedy construction; `run` returns the choice and whether every must-serve job fit."""

    def __init__(self, problem: TimedProblem, stop: Callable[[], bool] | None = None):
        self.problem = problem
        self.stop = stop
        self.load = TimedLoad(problem)
        b, sv = problem.batch, problem.services
        self.option = np.full(b.n_demands, UNSERVED, dtype=np.int64)
        self.start = np.full(b.n_demands, UNSERVED, dtype=np.int64)
        self.replicas = np.zeros((sv.n_options, problem.slots), dtype=np.int64)
        self.served = np.zeros((sv.n_options, problem.slots), dtype=np.int64)
        self.cheapest, self.best_option, self.best_start = cheapest_per_demand(problem)
        self.best_co2 = np.zeros(b.n_demands)
        self.best_rate = np.zeros(b.n_demands, dtype=np.int64)
        has = self.best_option >= 0
        if has.any():
            _, co2, rate, _ = problem.evaluate(self.best_option[has], self.best_start[has])
            self.best_co2[has], self.best_rate[has] = co2, rate
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
        b = self.problem.batch
        k = int(self.best_option[i])
        if k < 0:
            return False
        must = bool(b.must_serve[i])
        if not must and self.cheapest[i] >= b.penalty[i]:
            return False
        s = int(self.best_start[i])
        rate, co2 = int(self.best_rate[i]), float(self.best_co2[i])
        if not self.load.fits(k, s, rate, co2):
            found = self._cheapest_fitting(i)
            if found is None:
                return False
            k, s, rate, co2 = found
        self.load.add_batch(k, s, rate, co2)
        self.option[i], self.start[i] = k, s
        return True

    def _cheapest_fitting(self, i: int) -> tuple[int, int, int, float] | None:
        """Every allowed start of every option of ``i`` against the load left: the cheapest that
        fits (below the penalty unless must-serve), or None."""
        b, pr = self.problem.batch, self.problem
        ks = np.arange(b.start[i], b.start[i + 1], dtype=np.int64)
        width = int((b.last[ks] - b.first[ks]).max()) + 1
        ss = b.first[ks].astype(np.int64)[:, None] + np.arange(width, dtype=np.int64)[None, :]
        kk = np.broadcast_to(ks[:, None], ss.shape)
        cost, co2, rate, ok = pr.evaluate(kk, ss)
        if not b.must_serve[i]:
            ok = ok & (cost < b.penalty[i])
        if not ok.any():
            return None
        cap_ok, bw_ok, co2_ok = self.load.feasible(kk, ss, co2, rate)
        ok &= cap_ok & bw_ok & co2_ok
        if not ok.any():
            return None
        flat = int(np.argmin(np.where(ok, cost, np.inf)))
        r, c = divmod(flat, width)
        return int(ks[r]), int(ss[r, c]), int(rate[r, c]), float(co2[r, c])

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
                       complete: bool | None = None) -> EngineResult:
    """The greedy plan as an engine result, with the lower bound of `timed_lower_bound`.

    Status: optimal when the gap to that bound is within OPTIMAL_GAP, feasible otherwise;
    infeasible when a must-serve job has no option at all, unknown when the greedy could not fit
    every must-serve job.
    """
    from scheduler.timed_decode import choice_objective

    if hint is None or complete is None:
        hint, complete = timed_greedy(problem)
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
