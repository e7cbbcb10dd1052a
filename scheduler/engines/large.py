"""The national-scale engine: Lagrangian bound, multiplier-guided plan, CP-SAT neighbourhood search.

1. Bound: the pool capacities are relaxed with one multiplier per pool (`lagrangian`); a bundle
   method drives the multipliers to the LP optimum, and the best L(lam) is the proven bound.
2. Plan: demands take their best reduced-cost option that still fits, by regret (`primal`), then
   shift moves use whatever room is left.
3. Improvement: neighbourhoods of a few related pools (or of random / misplaced demands) are
   re-solved exactly by CP-SAT with everything else fixed (`lns`), as long as time allows; on
   GAP-like instances beside cyclic exchanges (`exchange`) and a tabu search through plans
   that may overfill pools (`tabu`).

Anytime: honours the time limit, the gap limit, the iteration limit and the stop event, and
reports progress whenever the plan or the bound improves. See docs/large-engine.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from models import OPTIMAL_GAP, Status
from scheduler.compile import Options
from scheduler.engines import EngineResult
from scheduler.engines.exact import available_cores, cost_scale, rounding_errors, scaled_costs
from scheduler.engines import assignment, tabu
from scheduler.engines.exchange import MAX_DEMANDS as EXCHANGE_MAX_DEMANDS
from scheduler.engines.exchange import Exchanger, perturb
from scheduler.engines.lagrangian import CapacityRelaxation, DualAscent, smoothed_ascent
from scheduler.engines.lns import (
    Chooser,
    Neighbourhood,
    Problem,
    Solvers,
    Strategy,
    SubSolve,
    residual_room,
    solve_subproblem,
)
from scheduler.engines.primal import (
    big_penalty,
    construct,
    demand_costs,
    insert_unserved,
    loads,
    objective,
    shift_moves,
    unplaced,
)
from scheduler.params import Progress, SolveParams

MAX_DEFAULT_WORKERS = 8  # workers default to the available cores, at most this many
DUAL_SHARE = 0.3  # at most this share of the time goes to the first bound
PROGRESS_EVERY_S = 0.25
KICK_THRESHOLD = 1e-4  # a kicked plan is kept unless it costs this much (relative) over the best
EXCHANGE_STEPS = 5  # exchange-search steps per sub-solve with one worker
RAISED_MAX_OPTIONS = 1_000_000  # above this, plans are built at the dual optima only
STAGE_PLANS = 2  # ... and at this many smoothing stages before the last, up to:
STAGE_PLANS_MAX_OPTIONS = 10_000_000  # (1-2 s a plan at 3 million options)
INSERT_SHARE = 0.05  # of the time limit, at most, for making room in the best first plan
DETERMINISTIC_SUB_LIMIT = 1.0  # CP-SAT deterministic time per sub-solve, at most (and with an iteration limit)
CORE_SHARE = 0.25  # at most this share of the search time goes to (exclusive) core runs
ASSIGNMENT_SHARE = 0.15  # at most this share of the time goes to the knapsack (assignment) bound
ASSIGNMENT_STEPS = 5_000  # its subgradient steps at most (a time limit alone)
ASSIGNMENT_DETERMINISTIC_STEPS = 60  # ... with an iteration limit (the clock then never binds)
REPAIR_EVERY = 0  # a plan from the knapsacks' choice every this many steps (0: off, see docs)
TABU = True  # GAP-like instances: a tabu search (`tabu`) beside the neighbourhood search
TABU_CHUNK = 40  # tabu moves between looks at the other search (inline: per sub-solve)


class _Run:
    """The state of one solve: incumbent, bound, counters and the clock."""

    def __init__(self, options: Options, params: SolveParams, on_progress, stop):
        self.o = options
        self.params = params
        self.started = time.perf_counter()
        self.deadline = self.started + params.time_limit_s
        self.on_progress = on_progress
        self.stop_event = stop
        self.choice: np.ndarray | None = None
        self.objective = math.inf
        self.missing = 0  # unplaced must-serve demands of the incumbent
        self.bound = -math.inf
        self.bound_method = "none"
        self.first_solution_s: float | None = None
        self.best_s: float | None = None
        self.last_report = -math.inf
        self.reported = (None, None)
        scale = cost_scale(options)
        self.integer_data = options.scaling.integral  # scale 1 alone does not mean whole costs
        self.scale = scale
        self.big = big_penalty(options)
        self.rounding_bound = 0.0  # E of the sub-models' integer costs (formulation section 4)

    # -- clock and limits ----------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return time.perf_counter() >= self.deadline

    def stopped(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def gap(self) -> float | None:
        if self.choice is None or self.missing or not math.isfinite(self.bound):
            return None
        return max(0.0, self.objective - self.lower_bound()) / max(abs(self.objective), 1.0)

    def lower_bound(self) -> float:
        lb = self.bound
        if self.integer_data and math.isfinite(lb):
            lb = math.ceil(lb)  # every plan costs a whole number: round the bound up
        if self.choice is not None and not self.missing:
            lb = min(lb, self.objective)
        return lb

    def done(self) -> bool:
        gap = self.gap()
        return gap is not None and (gap <= self.params.gap_limit or self.proven())

    def proven(self) -> bool:
        """Whether the bound meets the incumbent (the search may stop): its relative gap, the
        rounding bound included, is at most 1e-9 (0 with integer data), so at most OPTIMAL_GAP."""
        if self.choice is None or self.missing or not math.isfinite(self.bound):
            return False
        lb = math.ceil(self.bound) if self.integer_data else self.bound
        return lb >= self.objective - (0.0 if self.integer_data else 1e-9 * max(1.0, abs(self.objective)))

    # -- incumbent and bound -------------------------------------------------------------------
    def offer(self, choice: np.ndarray) -> bool:
        """Keep ``choice`` if it beats the incumbent (fewer unplaced, then cheaper)."""
        missing = unplaced(self.o, choice)
        value = objective(self.o, choice) if not missing else math.inf
        better = self.choice is None or missing < self.missing or (
            missing == self.missing and value < self.objective)
        if not better:
            return False
        self.choice, self.missing, self.objective = choice, missing, value
        if not missing:
            now = self.elapsed()
            if self.first_solution_s is None:
                self.first_solution_s = now
            self.best_s = now
        self.report("solution")
        return True

    def raise_bound(self, value: float, method: str) -> None:
        if value > self.bound:
            self.bound = value
            self.bound_method = method
            self.report("bound")

    def report(self, message: str, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = self.elapsed()
        objective_ = None if (self.choice is None or self.missing) else self.objective
        bound = self.lower_bound() if math.isfinite(self.bound) else None
        if (objective_, bound) == self.reported and not force:
            return
        if not force and now - self.last_report < PROGRESS_EVERY_S:
            return
        self.last_report = now
        self.reported = (objective_, bound)
        self.on_progress(Progress("large", now, objective_, bound, self.gap(), message))


def solve_large(
    options: Options,
    params: SolveParams,
    *,
    hint: np.ndarray | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> EngineResult:
    """Plan ``options`` within ``params.time_limit_s``: a verified-ready choice and a proven bound."""
    o = options
    workers = params.workers or min(available_cores(), MAX_DEFAULT_WORKERS)
    if o.stranded_must_serve:
        return EngineResult(None, Status.INFEASIBLE, None, "a must-serve demand has no option",
                            workers=workers)
    run = _Run(o, params, on_progress, stop)
    details: dict[str, float | int | str] = {}

    # 1. Lower bound: drive the capacity multipliers towards the LP optimum, first on the smoothed
    #    dual (fast far from the optimum), then with the bundle method (exact near it).
    relax = CapacityRelaxation(o)
    deterministic = params.iteration_limit is not None
    dual_deadline = run.deadline if deterministic else run.started + DUAL_SHARE * params.time_limit_s
    smooth_deadline = run.started + (0.8 if not deterministic else 1.0) * (dual_deadline - run.started)
    stages: list = []
    smoothed = smoothed_ascent(relax, smooth_deadline, stop=run.stopped, on_stage=stages.append)
    run.raise_bound(smoothed.bound, "lagrangian")
    # A first plan at the smoothed optimum: its multipliers sit inside the optimal face, where
    # the relaxed choices fit far better than at the bundle method's kinks (see docs).
    if not run.stopped():
        _build(run, relax.reduced_costs(smoothed.lam))
    # Where the raised multipliers are skipped, plans at the stages before the last instead:
    # near convergence the construction gets worse, not better (docs, section 2).
    if RAISED_MAX_OPTIONS < o.n_options <= STAGE_PLANS_MAX_OPTIONS:
        began = run.elapsed()
        for e in [e for e in stages if e is not smoothed][-STAGE_PLANS:][::-1]:
            if run.stopped() or time.perf_counter() >= dual_deadline:
                break
            _build(run, relax.reduced_costs(e.lam))
        details["stage_plans_s"] = run.elapsed() - began
    dual = DualAscent(relax, lam0=smoothed.lam)
    dual.delta = 1e-2 * dual.scale
    dual.run(max_steps=10 * o.n_pools + 200, deadline=dual_deadline, stop=run.stopped)
    run.raise_bound(dual.best.bound, "lagrangian")
    details["dual_evaluations"] = relax.evaluations
    details["dual_converged"] = int(dual.converged)
    if math.isfinite(dual.best.bound):  # absent when stopped before the first evaluation
        details["lagrangian_bound"] = dual.best.bound
    details["dual_s"] = run.elapsed()

    # 2. First plans: the multiplier-guided construction (at the best multipliers and at a few
    #    raised ones, which steer demands away from tight pools) and the caller's hint.
    rc = relax.reduced_costs(dual.best.lam)
    hint_ok = hint is not None and len(hint) == o.n_demands and _hint_is_valid(o, hint)
    if hint_ok and (run.stopped() or run.out_of_time()):
        run.offer(np.asarray(hint, dtype=np.int64))  # no time to construct (seconds at 1M)
        hint_ok = False
    for factor, shift in _construction_multipliers(o):
        if run.stopped() or (run.choice is not None and not run.missing and run.out_of_time()):
            break
        lam = dual.best.lam * factor + shift * dual.scale
        _build(run, rc if factor == 1.0 and shift == 0.0 else relax.reduced_costs(lam))
    if run.choice is not None and not run.stopped():
        _make_room(run, rc)
    if run.choice is not None:  # absent when stopped before the first construction
        details["construct_objective"] = run.objective if not run.missing else -1.0
    if hint_ok:
        hint = np.asarray(hint, dtype=np.int64)
        run.offer(hint if run.stopped() else shift_moves(o, hint, run.big)[0])

    # 2b. GAP-like instances (small capacities in quanta): the Lagrangian relaxation of the
    #     assignment rows, one exact knapsack per pool, from the capacity duals (never below them).
    if assignment.fits(o) and run.choice is not None and not run.missing and not run.done() \
            and not run.stopped():
        _assignment_bound(run, dual.best.lam, deterministic, details)

    # 3. CP-SAT neighbourhood search around the incumbent.
    if o.n_options and run.choice is not None and not run.done():
        _Search(run, rc, dual.best.bound, workers, dual.best.lam).run_until_done(details)

    details["bound_method"] = run.bound_method
    if run.best_s is not None:
        details["time_to_best_s"] = run.best_s
    run.report("final", force=True)
    common = dict(first_solution_s=run.first_solution_s, cost_scale=run.scale,
                  rounding_bound_cny=run.rounding_bound, workers=workers, details=details,
                  duals=dual.best.lam)
    lb = run.lower_bound() if math.isfinite(run.bound) else None
    if run.choice is None or run.missing:
        return EngineResult(None, Status.UNKNOWN, lb, "no complete plan found", **common)
    gap = run.gap()  # with the rounding bound: the CP-SAT bounds subtract it
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    name = "OPTIMAL" if status == Status.OPTIMAL else (
        "STOPPED" if run.stopped() else "FEASIBLE")
    return EngineResult(run.choice, status, lb, name, **common)


def _assignment_bound(run: _Run, lam: np.ndarray, deterministic: bool, details: dict) -> None:
    """Raise the bound by subgradient ascent on the assignment relaxation (`assignment`)."""
    started = run.elapsed()
    relax = assignment.AssignmentRelaxation(run.o)
    if deterministic:
        deadline, steps = run.deadline, ASSIGNMENT_DETERMINISTIC_STEPS
    else:
        deadline = min(run.deadline, run.started + ASSIGNMENT_SHARE * run.params.time_limit_s)
        steps = ASSIGNMENT_STEPS

    def stop() -> bool:
        return run.stopped() or run.done()

    run_rc = CapacityRelaxation(run.o).reduced_costs(lam)
    repairs = [0, 0]

    def repair(step: int, e: assignment.Evaluation) -> None:
        """Lagrangian heuristic: the knapsacks' choice first (it fits; a demand taken twice
        keeps its cheapest), the other demands by regret on the capacity reduced costs."""
        if step % REPAIR_EVERY or run.stopped():
            return
        before = run.objective
        _build(run, np.where(e.taken, run.o.cost - run.big, run_rc))
        repairs[0] += 1
        repairs[1] += run.objective < before

    result = assignment.subgradient_ascent(
        relax, relax.start(lam), run.objective, deadline, steps, stop=stop,
        on_bound=lambda value: run.raise_bound(value, "knapsack"),
        on_evaluation=repair if REPAIR_EVERY else None)
    details["knapsack_repairs"] = repairs[0]
    details["knapsack_repair_wins"] = repairs[1]
    details["knapsack_bound"] = result.best.bound
    details["knapsack_steps"] = result.iterations
    details["knapsack_s"] = run.elapsed() - started


def _build(run: _Run, rc: np.ndarray) -> None:
    """Construct a plan by the reduced costs ``rc``, improve it by shift moves and offer it."""
    built = construct(run.o, rc)
    if run.stopped():
        return
    built, _ = shift_moves(run.o, built, run.big)
    run.offer(built)


def _make_room(run: _Run, rc: np.ndarray) -> None:
    """Serve, in the best plan, demands that the relaxation at ``rc`` serves and the plan leaves
    out (`insert_unserved`), within INSERT_SHARE of the limit; on an iteration limit the clock
    is not read, so that the path stays deterministic."""
    ends = time.perf_counter() + INSERT_SHARE * run.params.time_limit_s
    clock = run.params.iteration_limit is None
    built, inserted = insert_unserved(
        run.o, run.choice, rc, run.big,
        stop=lambda: run.stopped() or (clock and (run.out_of_time() or time.perf_counter() > ends)))
    if inserted:
        run.offer(shift_moves(run.o, built, run.big)[0])


def _construction_multipliers(o: Options) -> list[tuple[float, float]]:
    """(factor, shift) pairs: construct at lam * factor + shift * (median cost per unit)."""
    variants = [(1.0, 0.0), (1.0, 0.01), (1.0, 0.05), (1.02, 0.0), (1.05, 0.01), (1.0, 0.1)]
    if o.n_options > RAISED_MAX_OPTIONS:
        return variants[:1]  # at national scale raised multipliers build plans 0.3-29% worse
    return variants


def _hint_is_valid(o: Options, hint: np.ndarray) -> bool:
    """A hint can start the search if its options belong to their demands and fit the pools."""
    hint = np.asarray(hint, dtype=np.int64)
    served = hint >= 0
    d = np.flatnonzero(served)
    k = hint[served]
    if np.any((k < o.start[d]) | (k >= o.start[d + 1])):
        return False
    return bool(np.all(loads(o, hint) <= o.capacity))


@dataclass
class _Counters:
    """What the search has done so far (reported in ``details``)."""

    launched: int = 0  # neighbourhoods launched, or draws that found none: the iteration count
    rounds: int = 0  # sub-solves finished
    improvements: int = 0  # sub-solves that strictly improved the plan
    exchanges: int = 0  # improving exchanges applied
    kicks: int = 0  # perturbations of the exchange search
    touched: int = 0  # changes the exchange search made (a core bound needs none meanwhile)
    tabu_plans: int = 0  # plans taken from the tabu search
    core_work: float = 0.0  # CP-SAT deterministic time spent in core runs
    total_work: float = 0.0  # ... in all runs


@dataclass
class _InFlight:
    """A launched sub-solve: its neighbourhood, strategy, the free demands' options at launch,
    the pools it locks and the exchange changes made before it."""

    nb: Neighbourhood
    strategy: Strategy
    current: np.ndarray
    lock: np.ndarray
    touched: int
    generation: int  # plans adopted from the tabu search before it (older results are dropped)


class _Search:
    """The neighbourhood search around the incumbent, and all its state.

    It works on a copy of the incumbent (``choice``, with its pool ``load`` and per-demand
    ``costs``) and offers every improvement to the run. Three kinds of move change the plan:
    exchanges (`exchange_step`, `descend`) and kicks (`kick`) on GAP-sized instances, and CP-SAT
    sub-solves of neighbourhoods (`launch`, `finish`); whole and core sub-solves also raise the
    bound (`raise_bound`). Demands and pools held by a sub-solve in flight are locked.
    """

    def __init__(self, run: _Run, rc: np.ndarray, lagrangian_bound: float, workers: int,
                 lam: np.ndarray | None = None):
        o, params = run.o, run.params
        self.run, self.o, self.params, self.workers = run, o, params, workers
        cost_int, pen_int = scaled_costs(o, run.scale)
        self.problem = Problem(o, run.scale, cost_int, pen_int)
        self.demand_error = rounding_errors(o, run.scale, cost_int, pen_int)
        run.rounding_bound = math.fsum(self.demand_error)
        self.chooser = Chooser(o, np.random.default_rng(params.seed), rc, lagrangian_bound)
        self.chooser.refresh(run.choice)
        self.choice = run.choice.copy()
        self.load = loads(o, self.choice)
        self.costs = demand_costs(o, self.choice, run.big)
        self.deterministic = params.iteration_limit is not None
        # Each sub-solve's deterministic limit: a share of the time limit, or with an iteration
        # limit a fixed one, so that the path does not hang on the budget solve() leaves after
        # timing its own steps.
        self.limit = DETERMINISTIC_SUB_LIMIT if self.deterministic else float(
            np.clip(params.time_limit_s / 100.0, 0.1, DETERMINISTIC_SUB_LIMIT))
        self.locked_pools = np.zeros(o.n_pools, dtype=bool)
        self.locked_demands = np.zeros(o.n_demands, dtype=bool)
        self.solvers = Solvers()
        self.flying: dict = {}  # future -> _InFlight
        self.exclusive = False  # an exclusive sub-solve is in flight
        self.waiting: Strategy | None = None  # a strategy drawn but not launched yet
        self.exchanger = Exchanger(o) if _exchange_fits(o) else None
        self.exchange_rng = np.random.default_rng(params.seed + 1)
        self.stale = False  # no exchange left for the plan and locks as they stand
        self.count = _Counters()
        self.executor: ThreadPoolExecutor | None = None
        # The tabu search: inline in chunks with one worker, else in a thread of its own (one
        # worker fewer for CP-SAT).
        self.tabu = tabu.Companion(o, self.choice, params.seed + 2, lam) if (
            TABU and not run.missing and tabu.applies(o)) else None
        self.threaded_tabu = self.tabu is not None and workers > 1
        self.solve_workers = workers - 1 if self.threaded_tabu else workers
        self.generation = 0

    # -- driver --------------------------------------------------------------------------------
    def run_until_done(self, details: dict) -> None:
        """Search until a limit: exchange steps while nothing is in flight, launches while a
        worker is free, and the sub-solves' results as they finish."""
        if self.exchanger is not None:
            self.descend()
        with self._threads():
            while True:
                self._tabu_step()
                if self.exchanger is not None and not self.stopping() and not self.flying:
                    for _ in range(EXCHANGE_STEPS if self.executor is None else 1):
                        self.exchange_step()
                self.launch()
                if not self.flying:
                    break
                for future in self._finished():
                    self.finish(self.flying.pop(future), future.result())
        self._tabu_step(move=False)
        self._report(details)
        if self.tabu is not None:
            details.update(self.tabu.details())

    def stopping(self) -> bool:
        """Whether no more sub-solves may be launched."""
        run, limit = self.run, self.params.iteration_limit
        if run.stopped() or run.out_of_time() or run.done():
            return True
        return limit is not None and self.count.launched >= limit

    @contextmanager
    def _threads(self):
        """The worker pool (with more than one worker) and a watcher that stops the running
        CP-SAT solves at the time limit (not on an iteration budget) or on the stop event."""
        watcher_done = threading.Event()

        def watch() -> None:
            while not watcher_done.wait(0.02):
                if self.run.stopped() or (not self.deterministic and self.run.out_of_time()):
                    self.solvers.stop_all()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        self.executor = ThreadPoolExecutor(max_workers=self.workers) if self.workers > 1 else None
        if self.threaded_tabu:
            self.tabu.start(TABU_CHUNK, self.run.deadline, self.run.stopped)
        try:
            yield
        finally:
            if self.threaded_tabu:
                self.tabu.halt()
            self.solvers.stop_all()
            watcher_done.set()
            watcher.join()
            if self.executor is not None:
                self.executor.shutdown(wait=True)

    def _finished(self) -> list:
        """The finished sub-solves, in order of their first demand. With workers, when none has
        finished the main thread makes an exchange step instead (or waits briefly)."""
        if self.executor is None:
            done = list(self.flying)
        else:
            done = [f for f in self.flying if f.done()]
            if not done and self.exchanger is not None and not self.exclusive \
                    and not self.threaded_tabu and not self.stopping():
                self.exchange_step()  # the main thread searches while the workers solve
                return []
            if not done:
                done, _ = wait(list(self.flying), timeout=0.05, return_when=FIRST_COMPLETED)
        return sorted(done, key=lambda f: self.flying[f].nb.demands[0])

    def _report(self, details: dict) -> None:
        c = self.count
        details["lns_rounds"] = c.rounds
        details["lns_improvements"] = c.improvements
        details["exchanges"] = c.exchanges
        details["kicks"] = c.kicks
        if self.tabu is not None:
            details["tabu_plans"] = c.tabu_plans
        for s in self.chooser.strategies:
            details[f"lns_{s.name}_tries"] = s.tries
            details[f"lns_{s.name}_wins"] = s.wins
            details[f"lns_{s.name}_rows"] = int(s.rows)

    # -- the tabu search ------------------------------------------------------------------------
    def _tabu_step(self, move: bool = True) -> None:
        """With one worker: a chunk of tabu moves (``move``). Either way, a better plan the tabu
        found is offered to the run and, if taken, becomes the plan this search works on."""
        if self.tabu is None:
            return
        if move and not self.threaded_tabu and not self.stopping():
            self.tabu.chunk(TABU_CHUNK, self.run.deadline, self.run.stopped)
        found = self.tabu.take()
        if found is None or not self.run.offer(found.copy()):
            return
        o = self.o
        self.choice = found
        self.load = loads(o, found)
        self.costs = demand_costs(o, found, self.run.big)
        self.generation += 1  # sub-solves in flight were built on the old plan: drop them
        self.count.touched += 1  # ... and no core bound from them
        self.count.tabu_plans += 1
        self.stale = False
        self.chooser.touch(np.arange(o.n_pools))

    def _offer(self) -> None:
        """Offer this search's plan to the run, and to the tabu search if the run took it."""
        if self.run.offer(self.choice.copy()) and self.tabu is not None:
            self.tabu.suggest(self.choice, self.run.objective)

    # -- exchanges and kicks -------------------------------------------------------------------
    def descend(self) -> None:
        """Exchanges to a first local optimum, nothing locked, before any sub-solve."""
        o, run = self.o, self.run
        while not (run.stopped() or run.out_of_time()):
            before = self.choice.copy()
            made = self._exchange(passes=8, locked=False)
            if not made:
                break
            self.count.exchanges += made
            moved = np.flatnonzero(before != self.choice)
            self.costs[moved] = o.cost[self.choice[moved]]
            self._offer()
        self.chooser.refresh(self.choice)

    def exchange_step(self) -> None:
        """One step of the exchange search on what no sub-solve holds: exchanges towards a local
        optimum, or, once there is none left, a kick; any change is offered to the run."""
        before = self.choice.copy()
        if not self.stale:
            made = self._exchange(passes=4)
            self.stale = not made
            self.count.exchanges += made
        else:
            self.kick()
        if not np.array_equal(before, self.choice):
            self.count.touched += 1
            moved = np.flatnonzero(before != self.choice)
            self.costs[moved] = self.o.cost[self.choice[moved]]
            self.chooser.touch(np.unique(self.o.pool[np.concatenate(
                [before[moved], self.choice[moved]])]))
            self._offer()

    def kick(self) -> None:
        """Iterated local search: 2-5 random feasible shifts or swaps, then exchanges; the kicked
        plan is undone if it costs clearly more (KICK_THRESHOLD) than the best."""
        o, run, choice, load = self.o, self.run, self.choice, self.load
        self.count.kicks += 1
        before, before_load = choice.copy(), load.copy()
        rng = self.exchange_rng
        perturb(o, choice, load, rng, int(rng.integers(2, 6)), self.locked_pools,
                self.locked_demands)
        self.count.exchanges += self._exchange(passes=50)
        changed = np.flatnonzero(before != choice)
        costs = self.costs
        after = math.fsum(costs) - math.fsum(costs[changed]) + math.fsum(o.cost[choice[changed]])
        if after > run.objective + KICK_THRESHOLD * max(abs(run.objective), 1.0):
            choice[:], load[:] = before, before_load

    def _exchange(self, passes: int, locked: bool = True) -> int:
        """``Exchanger.improve`` one pass at a time (the same moves, the same random draws), so
        that the stop request and the deadline are seen between passes (one pass: up to 0.5 s at
        3,000 demands). Returns how many exchanges were made."""
        run = self.run
        pools, demands = (self.locked_pools, self.locked_demands) if locked else (None, None)
        made = 0
        for _ in range(passes):
            if run.stopped() or run.out_of_time():
                break
            step = self.exchanger.improve(self.choice, self.load, self.exchange_rng, pools,
                                          demands, passes=1)
            made += step
            if not step:
                break
        return made

    # -- CP-SAT neighbourhoods -----------------------------------------------------------------
    def launch(self) -> None:
        """Launch sub-solves while a worker is free (an exclusive one waits for all)."""
        while not self.stopping() and not self.exclusive and len(self.flying) < self.solve_workers:
            drawn = self._draw()
            if self.waiting is not None:
                return  # a core run waits for the sub-solves in flight to finish
            if drawn is None:
                if self.flying:
                    return
                self.count.launched += 1  # nothing to free now; still counts towards the limits
                continue
            self._start(*drawn)

    def _draw(self) -> tuple[Strategy, Neighbourhood] | None:
        """Up to 8 draws of a strategy and its neighbourhood. A core draw is dropped once core
        runs have had their share of the time, and kept in ``waiting`` while others fly."""
        for _attempt in range(8):
            if self.waiting is None:
                self.waiting = self.chooser.pick()
            strategy = self.waiting
            if strategy.name == "core":
                if self.count.core_work > CORE_SHARE * self.count.total_work:
                    self.waiting = None
                    continue
                if self.flying:
                    return None  # the core neighbourhood runs alone
            self.waiting = None
            nb = self.chooser.make(strategy, self.choice, self.locked_pools, self.locked_demands)
            if nb is not None and len(nb.demands):
                return strategy, nb
        return None

    def _start(self, strategy: Strategy, nb: Neighbourhood) -> None:
        """Lock the neighbourhood's demands and the pools its new options touch, and solve it
        (inline with one worker, in the pool otherwise)."""
        o, c = self.o, self.count
        current = self.choice[nb.demands].copy()
        residual = residual_room(o, self.load, current)
        moving = nb.rows[nb.rows != np.repeat(current, nb.counts)]
        lock = np.unique(o.pool[moving])
        self.locked_pools[lock] = True
        self.locked_demands[nb.demands] = True
        self.exclusive = nb.exclusive
        flight = _InFlight(nb, strategy, current, lock, c.touched, self.generation)
        task = dict(seed=self.params.seed + c.launched,
                    deterministic_limit=self.limit * (5 if nb.exclusive else 1),
                    wall_limit=self.run.deadline - time.perf_counter(), solvers=self.solvers)
        c.launched += 1
        if self.executor is None:
            sub = solve_subproblem(self.problem, nb, current, residual, **task)
            self.flying[_Done(sub)] = flight
        else:
            future = self.executor.submit(solve_subproblem, self.problem, nb, current, residual,
                                          **task)
            self.flying[future] = flight

    def finish(self, flight: _InFlight, sub: SubSolve) -> None:
        """Unlock a finished sub-solve, take its plan if it is no worse, raise the bound from it
        and let the chooser learn from it."""
        nb, c, chooser, run = flight.nb, self.count, self.chooser, self.run
        self.stale = False  # pools and demands come free
        c.rounds += 1
        self.locked_pools[flight.lock] = False
        self.locked_demands[nb.demands] = False
        if nb.exclusive:
            self.exclusive = False
        before = (run.objective, run.bound, run.missing)
        changed = self._take(flight, sub)
        if changed is not None:
            chooser.touch(changed[0])
        if sub.proven:
            chooser.remember(nb)
        if changed is not None and changed[1]:
            c.improvements += 1
            self._offer()
            if c.improvements % 20 == 0:
                chooser.refresh(self.choice)
        c.total_work += sub.deterministic_time
        if nb.exclusive:
            c.core_work += sub.deterministic_time
        if flight.touched == c.touched:  # nothing outside the neighbourhood changed meanwhile
            self.raise_bound(nb, sub)
        chooser.record(flight.strategy, sub, _progress(before, run), self.limit)

    def _take(self, flight: _InFlight, sub: SubSolve) -> tuple[np.ndarray, bool] | None:
        """Take the sub-solution if it places more must-serve demands or costs no more.

        Returns the pools whose demands changed and whether the plan strictly improved, or None.
        """
        if sub.new is None or flight.generation != self.generation:
            return None  # no plan, or one for demands the tabu's plan has moved since
        o, nb, old, new = self.o, flight.nb, flight.current, sub.new
        if np.array_equal(old, new):
            return None
        must = o.must_serve[nb.demands]
        old_missing = int(np.count_nonzero(must & (old < 0)))
        new_missing = int(np.count_nonzero(must & (new < 0)))
        new_costs = np.where(new >= 0, o.cost[np.maximum(new, 0)],
                             np.where(must, self.run.big, o.penalty[nb.demands]))
        before = math.fsum(self.costs[nb.demands])
        after = math.fsum(new_costs)
        if new_missing > old_missing or (new_missing == old_missing and after > before):
            return None
        strictly = new_missing < old_missing or after < before
        moved = old != new
        was, now = old[moved], new[moved]
        np.subtract.at(self.load, o.pool[was[was >= 0]], o.units[was[was >= 0]])
        np.add.at(self.load, o.pool[now[now >= 0]], o.units[now[now >= 0]])
        self.choice[nb.demands] = new
        self.costs[nb.demands] = new_costs
        pools = np.unique(np.concatenate([o.pool[was[was >= 0]], o.pool[now[now >= 0]]]))
        return pools, strictly

    # -- bounds --------------------------------------------------------------------------------
    def raise_bound(self, nb: Neighbourhood, sub: SubSolve) -> None:
        """A global bound from a whole or core sub-solve: plans within the neighbourhood's
        options cost at least the fixed demands' cost plus CP-SAT's bound (less the rounding
        error); any other plan costs at least the excluded bound (reduced-cost argument)."""
        if sub.bound is None or not (nb.whole or nb.excluded_bound is not None):
            return
        fixed = _fixed_cost(self.o, self.choice, nb)  # the demands outside nb, unchanged by it
        inside = sub.bound / self.run.scale - math.fsum(self.demand_error[nb.demands])
        value = fixed + inside - 1e-12 * (abs(fixed) + abs(inside))
        if nb.excluded_bound is not None:
            value = min(value, nb.excluded_bound)
        self.run.raise_bound(value, "cp-sat" if nb.whole else "core")


def _exchange_fits(o: Options) -> bool:
    """The exchange search keeps dense demand x pool tables: only for GAP-sized instances."""
    return 2 <= o.n_demands <= EXCHANGE_MAX_DEMANDS and o.n_demands * o.n_pools <= 5_000_000


def _progress(before: tuple[float, float, int], run: _Run) -> float:
    """Relative progress of one round: objective decrease plus bound increase (or placements)."""
    objective_, bound, missing = before
    if missing > run.missing:
        return 1.0
    if not math.isfinite(objective_) or not math.isfinite(run.objective):
        return 0.0
    scale = max(abs(run.objective), 1.0)
    gained = (objective_ - run.objective) + (max(run.bound, bound) - bound if math.isfinite(bound) else 0.0)
    return max(gained, 0.0) / scale


class _Done:
    """A finished sub-solve that looks like a future (the one-worker path runs inline)."""

    def __init__(self, sub: SubSolve):
        self.sub = sub

    def result(self) -> SubSolve:
        return self.sub


def _fixed_cost(o: Options, choice: np.ndarray, nb: Neighbourhood) -> float:
    """What the demands outside the neighbourhood cost as they stand."""
    outside = np.ones(o.n_demands, dtype=bool)
    outside[nb.demands] = False
    picked = choice[outside]
    served = picked >= 0
    return math.fsum(o.cost[picked[served]]) + math.fsum(o.penalty[outside][~served])
