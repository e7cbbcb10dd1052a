"""The exact engine: one CP-SAT model of the whole problem, solved to proven optimality or the limit.

    x[k] in {0,1}   option k = (d, p) is chosen          y[d] in {0,1}   demand d is unserved
    sum_{k of d} x[k] + y[d] = 1            for every demand (no y[d] if must-serve)
    sum_{k on p} units[k] x[k] <= cap[p]    for every pool
    minimize  sum_k round(s c[k]) x[k] + sum_d round(s pi[d]) y[d]

Costs are scaled by a power of ten ``s`` and rounded (docs/formulation.md, section 4); the proven
bound is mapped back as ``bound / s - E`` where E is the largest total rounding error of any plan
of kept alternatives. Dominated alternatives and options that exceed their pool's capacity are left
out of the model (their x is 0). The plan is optimal when its relative gap is at most OPTIMAL_GAP.

With `Instance.policy` (docs/formulation.md section 12) nothing is left out but options too big for
their pool, the quota rows of `scheduler.policy` are added, and fairness solves twice: first the
largest unserved share, then the cost with that share held.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from models import OPTIMAL_GAP, Status, relative_gap
from scheduler.compile import OBJECTIVE_UNITS_LIMIT, Options
from scheduler.engines import EngineResult, StopWatcher
from scheduler.engines.primal import objective
from scheduler.params import Progress, SolveParams

__all__ = ["OBJECTIVE_UNITS_LIMIT", "cost_scale", "rounding_bound", "rounding_errors",
           "scaled_costs", "solve_exact"]
FULL_PORTFOLIO = 8  # from this many workers on, CP-SAT's own portfolio includes its LP workers
SMALL_PORTFOLIO = ("max_lp", "default_lp", "reduced_costs", "quick_restart", "pseudo_costs",
                   "lb_tree_search", "core")
"""Subsolvers for 2-7 workers: the LP-heavy ones first, since they prove the bound."""


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure(parameters, params: SolveParams) -> int:
    """Set seed, workers, gap and deterministic-time limits on CP-SAT's parameters (the wall-clock
    limit is set by the caller); return the number of workers used.

    Workers default to the available cores (at most 16): more workers than cores starve CP-SAT's
    LP workers, which prove the bounds here. Below 8 workers CP-SAT's default portfolio leaves the
    LP workers out, so small worker counts get an explicit LP-first portfolio.
    """
    workers = params.workers or min(available_cores(), 16)
    parameters.random_seed = params.seed
    parameters.num_workers = workers
    parameters.relative_gap_limit = params.gap_limit
    if params.deterministic_time_limit_s is not None:
        parameters.max_deterministic_time = params.deterministic_time_limit_s
    parameters.catch_sigint_signal = False  # Ctrl-C belongs to the caller (it sets `stop`)
    if workers == 1:
        parameters.linearization_level = 2
    elif workers < FULL_PORTFOLIO:
        parameters.subsolvers.extend(SMALL_PORTFOLIO[:workers])
    return workers


def cost_scale(options: Options) -> float:
    """The power of ten that keeps the largest objective of a plan of kept alternatives under 1e13
    integer units (`Options.scaling`); integer data get scale 1, which is exact."""
    return options.scaling.scale


def scaled_costs(options: Options, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Option costs and demand penalties in CP-SAT's integer units: round(s c), round(s pi).

    Dominated alternatives (never in an optimal plan) get a value above every plan of kept ones.
    """
    sc = options.scaling
    if scale == sc.scale:
        return sc.cost_int, sc.penalty_int
    kept, unserved = sc.kept, sc.unserved_kept
    cost_int = sc.cost_int.copy()
    pen_int = sc.penalty_int.copy()
    cost_int[kept] = np.round(options.cost[kept] * scale).astype(np.int64)
    pen_int[unserved] = np.round(options.penalty[unserved] * scale).astype(np.int64)
    return cost_int, pen_int


def rounding_errors(options: Options, scale: float, cost_int: np.ndarray,
                    pen_int: np.ndarray) -> np.ndarray:
    """Per demand: the largest |c - round(s c)/s| among its kept alternatives (formulation
    section 4); dominated alternatives are in no optimal plan, so their rounding does not count."""
    sc = options.scaling
    err = np.where(sc.kept, np.abs(options.cost - cost_int / scale), 0.0)
    worst = np.where(sc.unserved_kept, np.abs(options.penalty - pen_int / scale), 0.0)
    has = np.diff(options.start) > 0
    if has.any():
        worst[has] = np.maximum(worst[has], np.maximum.reduceat(err, options.start[:-1][has]))
    return worst


def rounding_bound(options: Options, scale: float, cost_int: np.ndarray, pen_int: np.ndarray) -> float:
    """E: the sum over demands of the largest rounding error among its kept alternatives."""
    return float(math.fsum(rounding_errors(options, scale, cost_int, pen_int)))


def solve_exact(
    options: Options,
    params: SolveParams,
    *,
    hint: np.ndarray | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> EngineResult:
    """Solve the whole problem with CP-SAT within ``params.time_limit_s``."""
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    n, starts = options.n_demands, options.start
    if options.stranded_must_serve:
        return EngineResult(None, Status.INFEASIBLE, None, "a must-serve demand has no option")

    sc = options.scaling
    scale = sc.scale
    cost_int, pen_int = sc.cost_int, sc.penalty_int
    error = sc.rounding_bound

    # Only kept options that fit their pool get a variable: the others are 0 in an optimal plan.
    usable = sc.kept & (options.units <= options.capacity[options.pool])
    model = cp_model.CpModel()
    x: dict[int, cp_model.IntVar] = {int(k): model.new_bool_var("") for k in np.flatnonzero(usable)}
    var_of = [x.get(k) for k in range(options.n_options)]
    objective_vars = list(x.values())
    objective_coeffs = cost_int[list(x)].tolist()
    constant = 0
    # One alternative per demand: a usable option, or (where it may be optimal) unserved.
    unserved: dict[int, cp_model.IntVar] = {}
    for i in range(n):
        lo, hi = int(starts[i]), int(starts[i + 1])
        alternatives = [var for var in var_of[lo:hi] if var is not None]
        if sc.unserved_kept[i]:
            if not alternatives:
                constant += int(pen_int[i])
                continue
            unserved[i] = model.new_bool_var("")
            alternatives.append(unserved[i])
            objective_vars.append(unserved[i])
            objective_coeffs.append(int(pen_int[i]))
        if not alternatives:  # a must-serve demand whose options all exceed their pools
            return EngineResult(None, Status.INFEASIBLE, None, "a must-serve demand fits no pool",
                                cost_scale=scale, rounding_bound_cny=error)
        model.add_exactly_one(alternatives)
    # Pool capacities, in quanta (skipped where every usable option together fits).
    ks_usable = np.flatnonzero(usable)
    by_pool = ks_usable[np.argsort(options.pool[ks_usable], kind="stable")]
    cuts = np.searchsorted(options.pool[by_pool], np.arange(options.n_pools + 1))
    for p in range(options.n_pools):
        ks = by_pool[cuts[p] : cuts[p + 1]]
        if options.units[ks].sum() > options.capacity[p]:
            model.add(
                cp_model.LinearExpr.weighted_sum([x[int(k)] for k in ks], options.units[ks].tolist())
                <= int(options.capacity[p])
            )
    cost_expr = cp_model.LinearExpr.weighted_sum(objective_vars, objective_coeffs) + constant
    share_var = _add_policy(model, options, x, var_of) if options.policy is not None else None
    model.minimize(cost_expr)
    if hint is not None:
        chosen = set(int(k) for k in hint if k >= 0)
        for k, var in x.items():
            model.add_hint(var, k in chosen)
        for i, var in unserved.items():
            model.add_hint(var, bool(hint[i] < 0))

    solver = cp_model.CpSolver()
    remaining = params.time_limit_s - (time.perf_counter() - started)
    solver.parameters.max_time_in_seconds = max(remaining, 0.1)
    workers = configure(solver.parameters, params)
    first: list[float] = []

    def report(objective: float | None, bound: float | None, message: str) -> None:
        if on_progress is None:
            return
        lb = None if bound is None else bound / scale - error
        gap = None
        if objective is not None and lb is not None:
            gap = max(0.0, objective - lb) / max(abs(objective), 1.0)
        on_progress(Progress("exact", time.perf_counter() - started, objective, lb, gap, message))

    class Callback(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            if not first:
                first.append(time.perf_counter() - started)
            report(self.objective_value / scale, self.best_objective_bound, "solution")

    solver.best_bound_callback = lambda bound: report(None, bound, "bound")
    watcher = StopWatcher(stop, solver.stop_search)
    fair: dict[str, float | int | str] = {}
    stage1 = None  # fairness: stage 1's plan (x values), kept should stage 2 find none in time
    try:
        if share_var is not None:  # fairness, stage 1: the largest unserved share first
            model.minimize(share_var)
            solver.parameters.max_time_in_seconds = max(remaining / 2, 0.05)
            code = solver.solve(model)
            fair["fairness_stage1_status"] = solver.status_name(code)
            if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                from scheduler.policy import share_bound

                best = int(solver.value(share_var))
                fair["fairness_share_bound"] = share_bound(solver.best_objective_bound, options.compiler.instance)
                fair["fairness_stage1_units"] = best
                values = [solver.value(var) for var in x.values()]
                stage1 = np.asarray(values, dtype=np.int64)
                model.clear_hints()
                for var, value in zip(x.values(), values, strict=True):
                    model.add_hint(var, value)
                model.add(share_var <= best)  # stage 2: cost, the share held at stage 1's
                model.minimize(cost_expr)
                left = params.time_limit_s - (time.perf_counter() - started)
                if stop is not None and stop.is_set():
                    left = 0.1  # stopped in stage 1: stage 2 only takes up its plan
                solver.parameters.max_time_in_seconds = max(left, 0.1)
                code = solver.solve(model, Callback())
        else:
            code = solver.solve(model, Callback())
    finally:
        watcher.close()

    name = solver.status_name(code)
    details = {"variables": len(objective_vars), "conflicts": solver.num_conflicts,
               "branches": solver.num_branches, "cp_sat_wall_s": solver.wall_time, **fair}
    common = dict(solver_status=name, first_solution_s=first[0] if first else None,
                  cost_scale=scale, rounding_bound_cny=error, workers=workers, details=details)
    if code == cp_model.INFEASIBLE:
        return EngineResult(None, Status.INFEASIBLE, None, **common)
    if code == cp_model.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {model.validate()}")
    if share_var is not None and "fairness_stage1_units" not in fair:
        return EngineResult(None, Status.UNKNOWN, None, **common)  # stage 1 found no plan
    bound = solver.best_objective_bound / scale - error
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE) and stage1 is None:
        return EngineResult(None, Status.UNKNOWN, bound, **common)
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        values = np.asarray(solver.response_proto.solution, dtype=np.int64)[: len(x)]
    else:  # stage 2 found nothing: stage 1's plan is in its model, so its bound holds for it
        values = stage1
        details["fairness_stage2"] = "no plan in time: stage 1's kept"
    chosen = np.fromiter(x, dtype=np.int64, count=len(x))[values.astype(bool)]
    choice = np.full(n, -1, dtype=np.int64)
    choice[np.searchsorted(starts, chosen, side="right") - 1] = chosen
    # Optimal means a relative gap of at most OPTIMAL_GAP against the true objective, with the
    # rounding bound in the lower bound: a closed integer gap is not enough when E is large.
    gap = relative_gap(objective(options, choice), bound)
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    if share_var is not None and fair.get("fairness_stage1_status") != "OPTIMAL":
        status = Status.FEASIBLE  # the cost bound holds for plans as fair as stage 1's, not the fairest
    return EngineResult(choice, status, bound, **common)


def _add_policy(model, options: Options, x: dict, var_of: list):
    """The quota rows of the instance's policy and, with fairness, the rows of the largest unserved
    share (returned as the variable stage 1 minimizes; None without fairness)."""
    from ortools.sat.python import cp_model

    from scheduler.policy import FAIR_UNITS, fairness_groups, quota_rows

    for row in quota_rows(options):
        pairs = [(x[int(k)], int(c)) for k, c in zip(row.ks, row.coeffs, strict=True) if int(k) in x]
        expr = cp_model.LinearExpr.weighted_sum([v for v, _ in pairs], [c for _, c in pairs])
        model.add(expr <= row.rhs if row.sense == "<=" else expr >= row.rhs)
    groups = fairness_groups(options.compiler.instance)
    if not groups:
        return None
    share = model.new_int_var(0, FAIR_UNITS + 1_000_000, "largest_unserved_share")
    starts = options.start
    for _, rows, weights in groups:
        terms, coeffs = [], []
        for i, w in zip(rows.tolist(), weights.tolist(), strict=True):
            for var in var_of[int(starts[i]):int(starts[i + 1])]:
                if var is not None:
                    terms.append(var)
                    coeffs.append(-int(w))
        # unserved weight = sum of weights - served weight <= share
        model.add(cp_model.LinearExpr.weighted_sum(terms, coeffs) + int(weights.sum()) <= share)
    return share
