"""The national-scale engine: Lagrangian bound, multiplier-guided plan, CP-SAT neighbourhood search.

1. Bound: the pool capacities are relaxed with one multiplier per pool (`lagrangian`); a bundle
   method drives the multipliers to the LP optimum, and the best L(lam) is the proven bound.
2. Plan: demands take their best reduced-cost option that still fits, by regret (`primal`), then
   shift moves use whatever room is left.
3. Improvement: neighbourhoods of a few related pools (or of random / misplaced demands) are
   re-solved exactly by CP-SAT with everything else fixed (`lns`), as long as time allows.

Anytime: honours the time limit, the gap limit, the iteration limit and the stop event, and
reports progress whenever the plan or the bound improves. See docs/large-engine.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np

from models import OPTIMAL_GAP, Status
from scheduler.compile import Options
from scheduler.engines import EngineResult
from scheduler.engines.exact import available_cores, cost_scale, rounding_errors, scaled_costs
from scheduler.engines.exchange import MAX_DEMANDS as EXCHANGE_MAX_DEMANDS
from scheduler.engines.exchange import Exchanger, perturb
from scheduler.engines.lagrangian import CapacityRelaxation, DualAscent, smoothed_ascent
from scheduler.engines.lns import (
    Chooser,
    Neighbourhood,
    Problem,
    Solvers,
    SubSolve,
    residual_room,
    solve_subproblem,
)
from scheduler.engines.primal import (
    UNSERVED,
    big_penalty,
    construct,
    demand_costs,
    is_feasible,
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
CORE_SHARE = 0.25  # at most this share of the search time goes to (exclusive) core runs


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
    smoothed = smoothed_ascent(relax, smooth_deadline, stop=run.stopped)
    run.raise_bound(smoothed.bound, "lagrangian")
    # A first plan at the smoothed optimum: its multipliers sit inside the optimal face, where
    # the relaxed choices fit far better than at the bundle method's kinks (see docs).
    if not run.stopped():
        _build(run, relax.reduced_costs(smoothed.lam))
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
    if run.choice is not None:  # absent when stopped before the first construction
        details["construct_objective"] = run.objective if not run.missing else -1.0
    if hint_ok:
        hint = np.asarray(hint, dtype=np.int64)
        run.offer(hint if run.stopped() else shift_moves(o, hint, run.big)[0])

    # 3. CP-SAT neighbourhood search around the incumbent.
    if o.n_options and run.choice is not None and not run.done():
        _search(run, rc, dual.best.bound, workers, details)

    details["bound_method"] = run.bound_method
    if run.best_s is not None:
        details["time_to_best_s"] = run.best_s
    run.report("final", force=True)
    common = dict(first_solution_s=run.first_solution_s, cost_scale=run.scale,
                  rounding_bound_cny=run.rounding_bound, workers=workers, details=details)
    lb = run.lower_bound() if math.isfinite(run.bound) else None
    if run.choice is None or run.missing:
        return EngineResult(None, Status.UNKNOWN, lb, "no complete plan found", **common)
    gap = run.gap()  # with the rounding bound: the CP-SAT bounds subtract it
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    name = "OPTIMAL" if status == Status.OPTIMAL else (
        "STOPPED" if run.stopped() else "FEASIBLE")
    return EngineResult(run.choice, status, lb, name, **common)


def _build(run: _Run, rc: np.ndarray) -> None:
    """Construct a plan by the reduced costs ``rc``, improve it by shift moves and offer it."""
    built = construct(run.o, rc)
    if run.stopped():
        return
    built, _ = shift_moves(run.o, built, run.big)
    run.offer(built)


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


def _search(run: _Run, rc: np.ndarray, lagrangian_bound: float, workers: int,
            details: dict) -> None:
    """The LNS loop: up to ``workers`` sub-solves at once, on disjoint pools and demands."""
    o, params = run.o, run.params
    rng = np.random.default_rng(params.seed)
    scale = run.scale
    cost_int, pen_int = scaled_costs(o, scale)
    pb = Problem(o, scale, cost_int, pen_int)
    demand_error = rounding_errors(o, scale, cost_int, pen_int)
    run.rounding_bound = math.fsum(demand_error)
    chooser = Chooser(o, rng, rc, lagrangian_bound)
    chooser.refresh(run.choice)
    choice = run.choice.copy()
    load = loads(o, choice)
    costs = demand_costs(o, choice, run.big)
    deterministic = params.iteration_limit is not None
    limit = float(np.clip(params.time_limit_s / 100.0, 0.1, 1.0))
    locked_pools = np.zeros(o.n_pools, dtype=bool)
    locked_demands = np.zeros(o.n_demands, dtype=bool)
    solvers = Solvers()
    flying: dict = {}  # future -> (neighbourhood, strategy, its current choice, pools it locks)
    rounds = launched = improvements = exchanges = 0
    exclusive = False
    waiting = None  # a strategy drawn but not launched yet
    exchanger = Exchanger(o) if _exchange_fits(o) else None
    exchange_rng = np.random.default_rng(params.seed + 1)
    stale = False  # no exchange left for the incumbent and locks as they stand
    kicks = touched = 0  # touched: changes the exchange search made (a core bound needs none)
    core_work = total_work = 0.0  # CP-SAT deterministic time spent (core runs, all runs)
    touched_at_launch: dict[int, int] = {}
    if exchanger is not None:  # first to a local optimum of the exchanges, nothing locked
        while not (run.stopped() or run.out_of_time()):
            before = choice.copy()
            made = _improve(run, exchanger, choice, load, exchange_rng, passes=8)
            if not made:
                break
            exchanges += made
            moved = np.flatnonzero(before != choice)
            costs[moved] = o.cost[choice[moved]]
            run.offer(choice.copy())
        chooser.refresh(choice)

    def stopping() -> bool:
        if run.stopped() or run.out_of_time() or run.done():
            return True
        return params.iteration_limit is not None and launched >= params.iteration_limit

    def watch() -> None:
        while not watcher_done.wait(0.02):
            if run.stopped() or (not deterministic and run.out_of_time()):
                solvers.stop_all()
                return

    watcher_done = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def local_search() -> None:
        """One step of the exchange search on what no sub-solve holds: exchanges to a local
        optimum, then iterated kicks (random shifts and swaps, then exchanges), keeping a kicked
        plan unless it is clearly worse than the best."""
        nonlocal stale, exchanges, kicks, touched
        before = choice.copy()
        if not stale:
            made = _improve(run, exchanger, choice, load, exchange_rng, locked_pools,
                            locked_demands, passes=4)
            stale = not made
            exchanges += made
        else:
            kicks += 1
            before_load = load.copy()
            perturb(o, choice, load, exchange_rng, int(exchange_rng.integers(2, 6)),
                    locked_pools, locked_demands)
            exchanges += _improve(run, exchanger, choice, load, exchange_rng, locked_pools,
                                  locked_demands, passes=50)
            changed = np.flatnonzero(before != choice)
            after = math.fsum(costs) - math.fsum(costs[changed]) + math.fsum(o.cost[choice[changed]])
            if after > run.objective + KICK_THRESHOLD * max(abs(run.objective), 1.0):
                choice[:], load[:] = before, before_load
        if not np.array_equal(before, choice):
            touched += 1
            _moved(o, before, choice, costs, chooser)
            run.offer(choice.copy())

    try:
        while True:
            if exchanger is not None and not stopping() and not flying:
                for _ in range(EXCHANGE_STEPS if pool is None else 1):
                    local_search()
            # Launch sub-solves while there is a free worker (an exclusive one waits for all).
            while not stopping() and not exclusive and len(flying) < workers:
                nb = None
                for _attempt in range(8):
                    if waiting is None:
                        waiting = chooser.pick()
                    strategy = waiting
                    if strategy.name == "core" and core_work > CORE_SHARE * total_work:
                        waiting = None  # core runs have had their share of the time
                        continue
                    if strategy.name == "core" and flying:
                        break  # the core neighbourhood runs alone: let the others finish
                    waiting = None
                    nb = chooser.make(strategy, choice, locked_pools, locked_demands)
                    if nb is not None and len(nb.demands):
                        break
                    nb = None
                if waiting is not None:
                    break
                if nb is None:
                    if not flying:
                        launched += 1  # nothing to free now; still counts towards the limits
                        continue
                    break
                current = choice[nb.demands].copy()
                residual = residual_room(o, load, current)
                moving = nb.rows[nb.rows != np.repeat(current, nb.counts)]
                lock = np.unique(o.pool[moving])
                locked_pools[lock] = True
                locked_demands[nb.demands] = True
                exclusive = nb.exclusive
                touched_at_launch[id(nb)] = touched
                task = dict(seed=params.seed + launched, deterministic_limit=limit * (
                    5 if nb.exclusive else 1), wall_limit=run.deadline - time.perf_counter(),
                    solvers=solvers)
                launched += 1
                if pool is None:
                    sub = solve_subproblem(pb, nb, current, residual, **task)
                    flying[_Done(sub)] = (nb, strategy, current, lock)
                else:
                    future = pool.submit(solve_subproblem, pb, nb, current, residual, **task)
                    flying[future] = (nb, strategy, current, lock)
            if not flying:
                break
            if pool is None:
                done = list(flying)
            else:
                done = [f for f in flying if f.done()]
                if not done and exchanger is not None and not exclusive and not stopping():
                    local_search()  # the main thread searches while the workers solve
                    continue
                if not done:
                    done, _ = wait(list(flying), timeout=0.05, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: flying[f][0].demands[0]):
                nb, strategy, current, lock = flying.pop(future)
                stale = False  # pools and demands come free
                sub = future.result()
                rounds += 1
                locked_pools[lock] = False
                locked_demands[nb.demands] = False
                if nb.exclusive:
                    exclusive = False
                fixed = _fixed_cost(o, choice, nb) if sub.bound is not None else 0.0
                before = (run.objective, run.bound, run.missing)
                changed = _apply(run, nb, sub, current, choice, load, costs)
                improved = changed is not None and changed[1]
                if changed is not None:
                    chooser.touch(changed[0])
                    stale = False
                if sub.proven:
                    chooser.remember(nb)
                if improved:
                    improvements += 1
                    run.offer(choice.copy())
                    if improvements % 20 == 0:
                        chooser.refresh(choice)
                untouched = touched_at_launch.pop(id(nb), None) == touched
                total_work += sub.deterministic_time
                if nb.exclusive:
                    core_work += sub.deterministic_time
                if sub.bound is not None and untouched and (nb.whole or nb.excluded_bound is not None):
                    # Plans within the neighbourhood's options cost >= fixed + CP-SAT's bound;
                    # any other plan costs >= the excluded bound (reduced-cost argument).
                    inside = sub.bound / scale - math.fsum(demand_error[nb.demands])
                    value = fixed + inside - 1e-12 * (abs(fixed) + abs(inside))
                    if nb.excluded_bound is not None:
                        value = min(value, nb.excluded_bound)
                    run.raise_bound(value, "cp-sat" if nb.whole else "core")
                chooser.record(strategy, sub, _progress(before, run), limit)
    finally:
        solvers.stop_all()
        watcher_done.set()
        watcher.join()
        if pool is not None:
            pool.shutdown(wait=True)
    details["lns_rounds"] = rounds
    details["lns_improvements"] = improvements
    details["exchanges"] = exchanges
    details["kicks"] = kicks
    for s in chooser.strategies:
        details[f"lns_{s.name}_tries"] = s.tries
        details[f"lns_{s.name}_wins"] = s.wins
        details[f"lns_{s.name}_rows"] = int(s.rows)


def _improve(run: _Run, exchanger: Exchanger, choice: np.ndarray, load: np.ndarray,
             rng: np.random.Generator, locked_pools: np.ndarray | None = None,
             locked_demands: np.ndarray | None = None, passes: int = 10) -> int:
    """``exchanger.improve`` one pass at a time (the same moves, the same random draws), so
    that the stop request and the deadline are seen between passes (one pass: up to 0.5 s at
    3,000 demands)."""
    made = 0
    for _ in range(passes):
        if run.stopped() or run.out_of_time():
            break
        step = exchanger.improve(choice, load, rng, locked_pools, locked_demands, passes=1)
        made += step
        if not step:
            break
    return made


def _moved(o: Options, before: np.ndarray, choice: np.ndarray, costs: np.ndarray,
           chooser: Chooser) -> None:
    """Book-keeping after exchanges changed served demands' options."""
    moved = np.flatnonzero(before != choice)
    costs[moved] = o.cost[choice[moved]]
    chooser.touch(np.unique(o.pool[np.concatenate([before[moved], choice[moved]])]))


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


def _apply(run: _Run, nb: Neighbourhood, sub: SubSolve, old: np.ndarray, choice: np.ndarray,
           load: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """Take the sub-solution if it places more must-serve demands or costs no more.

    Returns the pools whose demands changed and whether the plan strictly improved, or None.
    """
    if sub.new is None:
        return None
    o = run.o
    new = sub.new
    if np.array_equal(old, new):
        return None
    must = o.must_serve[nb.demands]
    old_missing = int(np.count_nonzero(must & (old < 0)))
    new_missing = int(np.count_nonzero(must & (new < 0)))
    new_costs = np.where(new >= 0, o.cost[np.maximum(new, 0)],
                         np.where(must, run.big, o.penalty[nb.demands]))
    before = math.fsum(costs[nb.demands])
    after = math.fsum(new_costs)
    if new_missing > old_missing or (new_missing == old_missing and after > before):
        return None
    strictly = new_missing < old_missing or after < before
    moved = old != new
    was, now = old[moved], new[moved]
    np.subtract.at(load, o.pool[was[was >= 0]], o.units[was[was >= 0]])
    np.add.at(load, o.pool[now[now >= 0]], o.units[now[now >= 0]])
    choice[nb.demands] = new
    costs[nb.demands] = new_costs
    pools = np.unique(np.concatenate([o.pool[was[was >= 0]], o.pool[now[now >= 0]]]))
    return pools, strictly
