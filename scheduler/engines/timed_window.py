"""Exact re-optimization of a window of a horizon plan: a few pools over a few slots, by CP-SAT.

The large engine's moves change one job or one service cell at a time (a ruin, a dozen). Where
batch runs and service load compete for the same pool-slots, the better plan often moves many
of them together. A `Window` is a set of pools and a slot range; `WindowProblem` frees

* the batch jobs on those pools whose run meets the slots, and the optional jobs now unserved
  that have an option there (each free job may take any start on those pools), and
* every service cell (service, slot) in the slots, for the services with a row on those pools
  (all of their rows in those slots),

holds everything else where it is, and states what is freed as a `TimedProblem` of its own:
the room the rest leaves (GPUs, bandwidth, carbon), the freed jobs' options on the window's
pools, the freed cells' load. Its objective differs from the whole plan's by a constant, so the
exact engine (`timed_exact`) solves it with the current plan as hint, and a better sub-plan,
merged back (`WindowProblem.merge`), is a better plan. See docs/large-engine.md, "Windows".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields, replace

import numpy as np

from models import Status
from scheduler.engines.timed_exact import solve_timed_exact
from scheduler.params import SolveParams
from scheduler.timed import (BATCH_PER_DEMAND, SERVICE_PER_SERVICE, BatchOptions, ServiceOptions, TimedChoice,
                             TimedLoad, TimedProblem)

__all__ = ["Window", "WindowProblem", "WindowSearch"]


@dataclass(frozen=True)
class Window:
    """Pools (a bool mask over the problem's pools) and the slots ``first <= t < end``;
    ``centre``: the pool it was drawn around (-1: none), the last to go when it shrinks."""

    pools: np.ndarray
    first: int
    end: int
    centre: int = -1


def _subset(options, per_item: frozenset, items: np.ndarray, rows: np.ndarray, kind, **extra):
    """``options`` restricted to ``items`` (indices of its demands or services) and ``rows`` (of
    its options, grouped by item as before), with ``extra`` fields replaced."""
    owner = options.demand if kind is BatchOptions else options.service
    index = np.full(len(options.rows), -1, dtype=np.int64)
    index[items] = np.arange(len(items))
    start = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(np.bincount(index[owner[rows]], minlength=len(items)), out=start[1:])
    updates = {}
    for f in fields(kind):
        value = getattr(options, f.name)
        if f.name in extra or f.name == "start" or not isinstance(value, np.ndarray):
            continue
        updates[f.name] = value[items] if f.name in per_item else value[rows]
    return replace(options, start=start, **updates, **extra)


class WindowProblem:
    """What a window frees of a plan, as a problem of its own (see the module's docstring)."""

    def __init__(self, problem: TimedProblem, choice: TimedChoice, window: Window,
                 pool_free: np.ndarray, link_free: np.ndarray, carbon_free: int | None):
        """``pool_free``, ``link_free``, ``carbon_free``: the room the whole plan leaves."""
        b, sv, S = problem.batch, problem.services, problem.slots
        self.base, self.whole = choice, problem
        on = choice.option >= 0
        placed = np.flatnonzero(on)
        k, start = choice.option[placed], choice.start_slot[placed].astype(np.int64)
        meets = np.zeros(b.n_demands, dtype=bool)
        meets[placed] = (start < window.end) & (start + b.slots[k] > window.first) & window.pools[b.pool[k]]
        reaches = np.zeros(b.n_demands, dtype=bool)
        reaches[b.demand[window.pools[b.pool]]] = True
        self.jobs = np.flatnonzero(reaches & (meets | (~on & ~b.must_serve)))
        free_job = np.zeros(b.n_demands, dtype=bool)
        free_job[self.jobs] = True
        self.options = np.flatnonzero(free_job[b.demand] & window.pools[b.pool])
        touched = np.zeros(sv.n_services, dtype=bool)
        touched[sv.service[window.pools[sv.pool]]] = True
        self.services = np.flatnonzero(touched)
        self.rows = np.flatnonzero(touched[sv.service])  # every row of those services
        cells = np.zeros(S, dtype=bool)
        cells[window.first:window.end] = True
        self.cells = cells
        # What is freed, as a choice of the whole problem: its use goes back into the room.
        freed = TimedChoice(np.where(free_job, choice.option, -1),
                            np.where(free_job, choice.start_slot, -1).astype(np.int32),
                            np.where(cells[None, :], choice.replicas, 0) * touched[sv.service][:, None],
                            np.where(cells[None, :], choice.served, 0) * touched[sv.service][:, None])
        self.freed = freed
        load = TimedLoad.of(problem, freed)
        cap = None if carbon_free is None else int(carbon_free) + load.grams_used
        batch = _subset(b, BATCH_PER_DEMAND, self.jobs, self.options, BatchOptions)
        services = _subset(sv, SERVICE_PER_SERVICE, self.services, self.rows, ServiceOptions,
                           load=np.where(cells[None, :], sv.load[self.services], 0))
        self.problem = replace(problem, batch=batch, services=services,
                               avail=pool_free + load.gpus, bandwidth=link_free + load.link,
                               carbon_cap_g=cap)
        position = np.full(b.n_options, -1, dtype=np.int64)
        position[self.options] = np.arange(len(self.options))
        hint_option = np.full(len(self.jobs), -1, dtype=np.int64)
        was = on[self.jobs]
        hint_option[was] = position[choice.option[self.jobs[was]]]
        self.hint = TimedChoice(hint_option, np.where(hint_option >= 0, choice.start_slot[self.jobs], -1)
                                .astype(np.int32), freed.replicas[self.rows], freed.served[self.rows])

    def size(self) -> int:
        """About the sub-model's variables: the freed jobs' starts and unserved flags, and two
        per (service row, slot) and one per (service, slot) where the freed load is not zero."""
        b, sv = self.problem.batch, self.problem.services
        starts = int((b.last.astype(np.int64) - b.first + 1).sum()) + len(b.rows)
        loaded = sv.load > 0
        return starts + int(2 * (np.diff(sv.start) * loaded.sum(axis=1)).sum() + loaded.sum())

    def holds_everything(self) -> bool:
        """Whether every job and every service cell of the plan is free in this window."""
        problem = self.whole
        return (len(self.jobs) == problem.batch.n_demands and self.cells.all()
                and len(self.services) == problem.services.n_services)

    def merge(self, sub: TimedChoice) -> TimedChoice:
        """The whole plan with the freed part replaced by ``sub`` (a choice of `problem`)."""
        base = self.base
        option, start = base.option.copy(), base.start_slot.copy()
        option[self.jobs] = np.where(sub.option >= 0, self.options[np.maximum(sub.option, 0)], -1)
        start[self.jobs] = np.where(sub.option >= 0, sub.start_slot, -1)
        replicas = base.replicas - self.freed.replicas
        served = base.served - self.freed.served
        replicas[self.rows] += sub.replicas
        served[self.rows] += sub.served
        return TimedChoice(option, start, replicas, served)


class WindowSearch:
    """Random windows around pools that share demands, each solved by CP-SAT from the plan.

    A window is a random pool with up to ``MAX_POOLS - 1`` of the pools that appear most often
    beside it among the demands' options, over ``SLOTS`` slots at a random offset; it shrinks
    (fewer pools, then fewer slots) until the sub-model has at most ``MAX_VARIABLES`` variables.
    """

    MAX_POOLS = 8
    SLOTS = 8
    MAX_VARIABLES = 12_000
    SECONDS = 2.0  # CP-SAT's wall-clock limit per window
    DETERMINISTIC_SECONDS = 1.0  # its deterministic limit under an iteration limit

    def __init__(self, problem: TimedProblem, rng: np.random.Generator):
        self.pb = problem
        self.rng = rng
        self.tries = 0
        self.exhausted = False  # a window held the whole problem and CP-SAT proved it optimal
        self.beside = self._beside(problem)

    @staticmethod
    def _beside(problem: TimedProblem) -> np.ndarray:
        """[P, P]: the number of demands with options on both pools (batch and services)."""
        P = problem.n_pools
        together = np.zeros((P, P))
        for owner, pool in ((problem.batch.demand, problem.batch.pool),
                            (problem.services.service, problem.services.pool)):
            if not len(pool):
                continue
            n = int(owner.max()) + 1
            for lo in range(0, n, 8192):  # a dense block of demands at a time
                at = (owner >= lo) & (owner < lo + 8192)
                block = np.zeros((min(8192, n - lo), P), dtype=np.float32)
                block[owner[at] - lo, pool[at]] = 1.0
                together += block.T @ block
        return together

    def draw(self) -> Window:
        P, S = self.pb.n_pools, self.pb.slots
        first_pool = int(self.rng.integers(P))
        near = self.beside[first_pool] + self.rng.random(P) * 0.5  # random ties
        near[first_pool] = np.inf
        order = np.argsort(-near, kind="stable")
        count = int(self.rng.integers(max(1, min(self.MAX_POOLS, P) // 2), min(self.MAX_POOLS, P) + 1))
        width = min(self.SLOTS, S)
        first = int(self.rng.integers(0, S - width + 1))
        mask = np.zeros(P, dtype=bool)
        mask[order[:count]] = True
        return Window(mask, first, first + width, first_pool)

    def problem_of(self, state) -> WindowProblem | None:
        """A window of ``state``'s plan whose sub-model is small enough, or None."""
        window = self.draw()
        order = np.flatnonzero(window.pools)
        near = self.beside[window.centre][order]
        near[order == window.centre] = np.inf  # the centre first, then the pools beside it
        pools = order[np.argsort(-near, kind="stable")]
        carbon = None if self.pb.carbon_cap_g is None else state.carbon_free
        choice = state.choice()
        first, end = window.first, window.end
        count = len(pools)
        while count >= 1 and end > first:
            mask = np.zeros(self.pb.n_pools, dtype=bool)
            mask[pools[:count]] = True
            wp = WindowProblem(self.pb, choice, Window(mask, first, end), state.pool_free,
                               state.link_free, carbon)
            if len(wp.jobs) + len(wp.services) == 0:
                return None
            if wp.size() <= self.MAX_VARIABLES:
                return wp
            if count > 1:
                count = max(1, count // 2)
            else:
                end = first + (end - first) // 2
        return None

    def step(self, state, params: SolveParams, deadline: float, deterministic: bool,
             stop: threading.Event | None) -> TimedChoice | None:
        """One window solved from ``state``'s plan: the better whole choice, or None."""
        left = deadline - time.perf_counter()
        if left < 0.2 or self.exhausted:
            return None
        self.tries += 1
        wp = self.problem_of(state)
        if wp is None:
            return None
        sub_params = SolveParams(
            time_limit_s=left if deterministic else min(self.SECONDS, left),
            workers=1 if deterministic else params.workers, seed=int(self.rng.integers(2**31 - 1)),
            deterministic_time_limit_s=self.DETERMINISTIC_SECONDS if deterministic else None,
            gap_limit=0.0)
        result = solve_timed_exact(wp.problem, sub_params, hint=wp.hint, stop=stop)
        self.exhausted = result.status == Status.OPTIMAL and wp.holds_everything()
        if result.choice is None:
            return None
        return wp.merge(result.choice)
