"""solve(instance, params) -> Result: compile -> engine -> plan -> verify. Pure: the instance is
never changed, and every plan is checked by the independent verifier before it is returned."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable

from models import Instance, SolveStats, Status
from scheduler.compile import Options, compile_options
from scheduler.decode import build_plan
from scheduler.engines import EngineResult
from scheduler.engines.exact import solve_exact
from scheduler.engines.greedy import greedy
from scheduler.engines.primal import objective
from scheduler.params import Progress, Result, SolveParams, Stopped
from scheduler.verify import verify

EXACT_MAX_OPTIONS = 600
"""`engine="auto"` runs the exact engine up to this many options, the large-scale engine above.

Measured on 2 cores with 10 s per problem: plain CP-SAT proves the OR-Library problems (up to 600
options) and the 5-agent x 100-job Yagiura problems best; from 1,000 options on (10 x 100, 5 x 200)
the large engine ends as close or closer to the best-known values, and on China-network instances
(tens of thousands of options and up) it is far ahead (docs/benchmarks.md)."""

RESERVE_SAMPLE = 1000
"""Instances above this many demands measure the time itemizing, verifying and serializing the
plan will take on a sample of the demands (`post_reserve`), at least this many."""

RESERVE_MARGIN = 2.0
"""The measured time per demand is scaled by this much: at 100,000 demands the whole plan took
1.2-1.9 times the sample's time per demand (2 cores, shared), and the machine may be busier later."""

FALLBACK_SECONDS_PER_DEMAND = 80e-6
"""The reserve per demand for instances too small to sample (measured: 40-70 us on 2 cores)."""


class VerificationError(RuntimeError):
    """An engine returned a plan the independent verifier rejects: a bug, never bad input."""

    def __init__(self, result: Result):
        self.result = result
        shown = "; ".join(v.message for v in result.verification.violations[:5])
        super().__init__(f"the plan failed verification ({shown})")


def pick_engine(options: Options, requested: str) -> str:
    """The engine to run: as requested, or for "auto" by the number of options. An instance with
    a policy (quotas, fairness) runs the exact engine, the one that enforces it."""
    policy = options.policy is not None
    if requested != "auto":
        if policy and requested != "exact":
            from scheduler.compile import RangeError

            raise RangeError([f"instance: field 'policy': engine '{requested}' does not enforce "
                              "quotas or fairness; use engine 'exact' (or 'auto', which picks it)"])
        return requested
    if policy:
        return "exact"
    return "exact" if options.n_options <= EXACT_MAX_OPTIONS else "large"


def solve(
    instance: Instance,
    params: SolveParams | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """Find a minimum-cost plan for ``instance`` and verify it.

    ``on_progress`` receives incumbents and bounds while the engine runs; setting ``stop`` ends
    the search early with the best plan so far, or raises `Stopped` if it is set before the
    first (greedy) plan exists. The whole call keeps to ``params.time_limit_s``: the time for
    itemizing and verifying the plan is measured up front and left over. Raises
    VerificationError if the plan fails the verifier (a bug in eastwest).
    """
    params = params or SolveParams()
    if instance.timed:
        return solve_timed(instance, params, on_progress=on_progress, stop=stop)
    started = time.perf_counter()
    stopped = stop.is_set if stop is not None else None

    def tell(message: str, objective: float | None = None) -> None:
        if on_progress is not None:
            on_progress(Progress("solve", time.perf_counter() - started, objective, None, None,
                                 message))

    options = compile_options(instance, stop=stopped)
    compiled = time.perf_counter()
    tell("compiled")
    engine = pick_engine(options, params.engine)
    hint, complete = greedy(options, stop=stopped)
    first_plan = hint if complete else None
    if instance.policy is not None and complete:  # the greedy plan knows no quotas: repair it
        from scheduler.policy import repair

        repaired = repair(options, hint)
        complete = repaired is not None
        hint = hint if repaired is None else repaired
    hinted = time.perf_counter()
    tell("first plan", objective(options, hint) if complete else None)
    reserve = post_reserve(instance, options)
    prepared = time.perf_counter()
    # Leave the measured time for itemizing and verifying, so the whole solve keeps to the limit.
    shadow_s = _shadow_seconds(params, needed=engine == "exact")
    remaining = params.time_limit_s - (prepared - started) - reserve - shadow_s
    if remaining < 0:
        tell(f"late: compiling took {prepared - started:.1f} s and itemizing and verifying the "
             f"plan need about {reserve:.1f} s, of the {params.time_limit_s:g} s limit")
    budget = params.model_copy(update={"time_limit_s": max(remaining, 0.05)})
    if stop is not None and stop.is_set():
        outcome = EngineResult(None, Status.UNKNOWN, None, "STOPPED before the search",
                               workers=0)
    elif engine == "exact":
        if instance.policy is not None and options.n_options > EXACT_MAX_OPTIONS and first_plan is not None:
            hint, complete, budget = _policy_hint(options, budget, first_plan, hint, complete, stop)
        outcome = solve_exact(options, budget, hint=hint, on_progress=on_progress, stop=stop)
    else:
        from scheduler.engines.large import solve_large

        outcome = solve_large(options, budget, hint=hint, on_progress=on_progress, stop=stop)
    outcome = _fall_back_to_hint(outcome, hint, complete)
    searched = time.perf_counter()
    shadow = None
    if outcome.choice is not None:
        from scheduler.explain.prices import window_prices

        if instance.policy is not None:  # the quota rows get their prices too
            from scheduler.policy import policy_prices

            shadow = policy_prices(instance, options, seconds=max(shadow_s, 0.05))
        else:
            shadow = window_prices(instance, options, outcome.duals, seconds=max(shadow_s, 0.05))
    if instance.policy is not None and shadow is not None:
        outcome = _with_price_bound(outcome, options, shadow.bound_cny)
    priced = time.perf_counter()
    stats = SolveStats(
        engine=engine,
        solver_status=outcome.solver_status,
        wall_time_s=searched - started,
        time_limit_s=params.time_limit_s,
        seed=params.seed,
        workers=outcome.workers,
        demands=options.n_demands,
        pools=options.n_pools,
        options=options.n_options,
        cost_scale=outcome.cost_scale,
        rounding_bound_cny=outcome.rounding_bound_cny,
        first_solution_s=outcome.first_solution_s,
        details=outcome.details,
    )
    with no_gc():
        plan = build_plan(
            instance,
            options,
            outcome.choice,
            status=outcome.status,
            lower_bound=outcome.lower_bound,
            stats=stats,
            share_lower_bound=outcome.details.get("fairness_share_bound"),
        )
        itemized = time.perf_counter()
        verification = verify(instance, plan)
    finished = time.perf_counter()
    phases = {
        "compile_s": compiled - started,
        "hint_s": hinted - compiled,
        "reserve_s": reserve,
        "reserve_measure_s": prepared - hinted,
        "search_s": searched - prepared,
        "shadow_s": priced - searched,
        "plan_s": itemized - priced,
        "verify_s": finished - itemized,
    }
    stats = stats.model_copy(
        update={"wall_time_s": finished - started, "details": {**stats.details, **phases}}
    )
    result = Result(plan=plan.model_copy(update={"stats": stats, "shadow_prices": shadow}),
                    verification=verification)
    if not verification.ok:
        raise VerificationError(result)
    return result


def _shadow_seconds(params: SolveParams, needed: bool) -> float:
    """Seconds left over for the shadow prices after the search: none when the engine brings its
    multipliers, else a tenth of the limit, at most the module's cap (docs/explain.md)."""
    from scheduler.explain.prices import WINDOW_SECONDS

    return min(WINDOW_SECONDS, 0.1 * params.time_limit_s) if needed else 0.0


def post_reserve(instance: Instance, options: Options) -> float:
    """Seconds to set aside for itemizing, verifying and serializing the plan.

    Measured: the same three steps run on a plan for a sample of the demands (the first
    ``max(RESERVE_SAMPLE, n / 50)``), and the time per demand is scaled up to all of them, with
    ``RESERVE_MARGIN``. Small instances get ``FALLBACK_SECONDS_PER_DEMAND`` (a few ms in all).
    """
    n = options.n_demands
    if n <= 2 * RESERVE_SAMPLE:
        return FALLBACK_SECONDS_PER_DEMAND * n + 0.02
    k = max(RESERVE_SAMPLE, n // 50)
    demands = instance.demands[:k]
    ids = {d.id for d in demands}
    sample = instance.model_copy(update={
        "demands": demands, "offers": tuple(o for o in instance.offers if o.demand in ids)})
    sample_options = compile_options(sample)
    choice, _ = greedy(sample_options)
    stats = SolveStats(engine="sample", solver_status="sample", wall_time_s=0.0)
    with no_gc():
        begun = time.perf_counter()
        plan = build_plan(sample, sample_options, choice, status=Status.FEASIBLE,
                          lower_bound=None, stats=stats)
        verify(sample, plan)
        plan.model_dump_json(indent=1)
        per_demand = (time.perf_counter() - begun) / k
    return RESERVE_MARGIN * per_demand * n + 0.02


@contextlib.contextmanager
def no_gc():
    """The cyclic garbage collector off for a while: itemizing and verifying create millions of
    objects (and no cycles), and each full collection walks the whole heap, which made that
    step superlinear in the size (and its sample a poor guide to it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()



POLICY_HINT_SHARE = 1 / 3
"""With a policy above EXACT_MAX_OPTIONS, the share of the search time the large engine gets to
find a plan without the quotas, which is then repaired into CP-SAT's hint (docs/policy.md)."""


def _policy_hint(options: Options, budget: SolveParams, first_plan, hint, complete: bool,
                 stop: threading.Event | None):
    """A better hint for a large instance with a policy: the large engine's plan (which knows no
    quotas) repaired to meet them, when it beats the repaired greedy plan. Returns the hint,
    whether it is complete, and the budget left for CP-SAT."""
    from scheduler.engines.large import solve_large
    from scheduler.policy import repair

    begun = time.perf_counter()
    share = budget.model_copy(update={"time_limit_s": budget.time_limit_s * POLICY_HINT_SHARE})
    found = solve_large(options, share, hint=first_plan, stop=stop)
    if found.choice is not None:
        repaired = repair(options, found.choice)
        if repaired is not None and (not complete or objective(options, repaired) < objective(options, hint)):
            hint, complete = repaired, True
    left = budget.time_limit_s - (time.perf_counter() - begun)
    return hint, complete, budget.model_copy(update={"time_limit_s": max(left, 0.05)})


def _with_price_bound(outcome: EngineResult, options: Options, bound: float) -> EngineResult:
    """The better of the engine's bound and the Lagrangian bound of the policy's LP duals (both
    valid; the latter cut to the plan's objective where it passes it by float noise only)."""
    import dataclasses

    from models import OPTIMAL_GAP, relative_gap

    if outcome.choice is None or (outcome.lower_bound is not None and outcome.lower_bound >= bound):
        return outcome
    value = objective(options, outcome.choice)
    if bound > value:
        if bound > value + 1e-9 * max(abs(value), 1.0):
            return outcome  # not a bound on this plan: keep the engine's
        bound = value
    status = outcome.status
    fair = "fairness_stage1_status" in outcome.details
    gap = relative_gap(value, bound)
    if status == Status.FEASIBLE and not fair and gap is not None and gap <= OPTIMAL_GAP:
        status = Status.OPTIMAL
    details = {**outcome.details, "price_bound": bound}
    return dataclasses.replace(outcome, lower_bound=bound, status=status, details=details)


def _fall_back_to_hint(outcome: EngineResult, hint, complete: bool) -> EngineResult:
    """An engine that found nothing in time still leaves the greedy plan, if it serves every
    must-serve demand."""
    if outcome.status != Status.UNKNOWN or not complete:
        return outcome
    return EngineResult(
        choice=hint,
        status=Status.FEASIBLE,
        lower_bound=outcome.lower_bound,
        solver_status=f"{outcome.solver_status} (greedy plan kept)",
        first_solution_s=outcome.first_solution_s,
        cost_scale=outcome.cost_scale,
        rounding_bound_cny=outcome.rounding_bound_cny,
        workers=outcome.workers,
        details=outcome.details,
        duals=outcome.duals,
    )


# -- instances with a horizon (formulation §8) ----------------------------------------------------

TIMED_EXACT_MAX_STARTS = 20_000
"""`engine="auto"` runs the exact timed engine up to this many (batch option, start) pairs plus
(service option, slot) pairs, the large timed engine above."""

TIMED_ENGINES = {"exact": ("scheduler.engines.timed_exact", "solve_timed_exact"),
                 "large": ("scheduler.engines.timed_large", "solve_timed_large")}
"""The timed engines' seam: ``solve_timed_<name>(problem, params, *, hint, on_progress, stop)``
returns an `EngineResult` whose ``choice`` is a `TimedChoice` (or None)."""


def timed_size(problem) -> int:
    """(batch option, start) pairs plus (service option, slot) pairs of a timed problem."""
    b = problem.batch
    return int((b.last - b.first + 1).sum()) + problem.services.n_options * problem.slots


def pick_timed_engine(problem, requested: str) -> str:
    """The timed engine to run: as requested, or for "auto" by `timed_size`."""
    if requested != "auto":
        return requested
    return "exact" if timed_size(problem) <= TIMED_EXACT_MAX_STARTS else "large"


def timed_engine(name: str):
    """The engine function, or None while its module is not in this tree (the greedy plan and
    its simple bound stand in)."""
    import importlib
    import importlib.util

    module, function = TIMED_ENGINES[name]
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(importlib.import_module(module), function)


def solve_timed(
    instance: Instance,
    params: SolveParams,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> Result:
    """`solve` for an instance with a horizon: compile_timed -> greedy -> engine -> plan -> verify.

    Same contract as `solve`: ``stop`` ends the search with the best plan so far (or raises
    `Stopped` before the greedy plan exists); the time for itemizing and verifying is left over
    from ``params.time_limit_s``.
    """
    from scheduler.engines.timed_greedy import TimedGreedy, timed_lower_bound
    from scheduler.timed import compile_timed, earliest_starts
    from scheduler.timed_decode import build_timed_plan, choice_objective

    started = time.perf_counter()
    stopped = stop.is_set if stop is not None else None

    def tell(message: str, value: float | None = None) -> None:
        if on_progress is not None:
            on_progress(Progress("solve", time.perf_counter() - started, value, None, None,
                                 message))

    problem = compile_timed(instance, stop=stopped)
    if not params.time_shifting:
        problem = earliest_starts(problem)
    compiled = time.perf_counter()
    tell("compiled")
    engine = pick_timed_engine(problem, params.engine)
    if engine == "exact" and timed_engine(engine) is not None:
        from scheduler.engines.timed_exact import check_model_size

        check_model_size(problem)  # refuse before spending time on a first plan
    greedy = TimedGreedy(problem, stopped)
    hint, complete = greedy.run()
    simple_bound = timed_lower_bound(problem, greedy.cheapest)
    hinted = time.perf_counter()
    tell("first plan", choice_objective(problem, hint) if complete else None)
    reserve = FALLBACK_SECONDS_PER_DEMAND * len(instance.demands) * problem.slots / 24 + 0.02
    shadow_s = _shadow_seconds(params, needed=engine != "large")
    remaining = params.time_limit_s - (hinted - started) - reserve - shadow_s
    if remaining < 0:
        tell(f"late: compiling took {hinted - started:.1f} s and itemizing and verifying the "
             f"plan need about {reserve:.1f} s, of the {params.time_limit_s:g} s limit")
    budget = params.model_copy(update={"time_limit_s": max(remaining, 0.05)})
    engine, outcome = run_timed_engine(problem, budget, hint, complete, simple_bound,
                                       on_progress=on_progress, stop=stop)
    bound = _timed_bound(outcome, simple_bound, problem)
    searched = time.perf_counter()
    shadow = None
    if outcome.choice is not None:
        from scheduler.explain.prices import timed_prices

        shadow = timed_prices(instance, problem, outcome.duals, choice_objective(problem, outcome.choice),
                              seconds=max(shadow_s, 0.05))
    priced = time.perf_counter()
    stats = SolveStats(
        engine=engine,
        solver_status=outcome.solver_status,
        wall_time_s=searched - started,
        time_limit_s=params.time_limit_s,
        seed=params.seed,
        workers=outcome.workers,
        demands=len(instance.demands),
        pools=problem.n_pools,
        options=problem.batch.n_options + problem.services.n_options,
        cost_scale=outcome.cost_scale,
        rounding_bound_cny=outcome.rounding_bound_cny,
        first_solution_s=outcome.first_solution_s,
        details=outcome.details,
    )
    with no_gc():
        plan = build_timed_plan(instance, problem, outcome.choice, status=outcome.status,
                                lower_bound=bound, stats=stats)
        itemized = time.perf_counter()
        verification = verify(instance, plan)
    finished = time.perf_counter()
    phases = {
        "compile_s": compiled - started,
        "hint_s": hinted - compiled,
        "reserve_s": reserve,
        "search_s": searched - hinted,
        "shadow_s": priced - searched,
        "plan_s": itemized - priced,
        "verify_s": finished - itemized,
    }
    stats = stats.model_copy(
        update={"wall_time_s": finished - started, "details": {**stats.details, **phases}}
    )
    result = Result(plan=plan.model_copy(update={"stats": stats, "shadow_prices": shadow}),
                    verification=verification)
    if not verification.ok:
        raise VerificationError(result)
    return result


def run_timed_engine(problem, budget: SolveParams, hint, complete: bool, simple_bound: float | None,
                     *, on_progress=None, stop: threading.Event | None = None) -> tuple[str, EngineResult]:
    """The timed engine `budget.engine` picks, run from ``hint`` (when ``complete``): its name
    and result, the hint kept when it finds nothing (the greedy plan and its simple bound stand
    in while the engine's module is absent)."""
    from scheduler.engines.timed_greedy import solve_timed_greedy

    engine = pick_timed_engine(problem, budget.engine)
    run = timed_engine(engine)
    if stop is not None and stop.is_set():
        outcome = EngineResult(None, Status.UNKNOWN, None, "STOPPED before the search", workers=0)
    elif run is None:
        engine = "greedy"
        outcome = solve_timed_greedy(problem, hint, complete, simple_bound)
    else:
        outcome = run(problem, budget, hint=hint if complete else None, on_progress=on_progress,
                      stop=stop)
    return engine, _fall_back_to_hint(outcome, hint, complete)


def _timed_bound(outcome: EngineResult, simple: float | None, problem) -> float | None:
    """The better of the engine's bound and the simple one (both valid); a simple bound above
    the plan's objective only by float noise (prefix sums against slot-by-slot sums) is cut to
    the objective."""
    from scheduler.timed_decode import choice_objective

    if outcome.choice is None:
        return None
    bounds = [x for x in (outcome.lower_bound, simple) if x is not None]
    if not bounds:
        return None
    bound = max(bounds)
    value = choice_objective(problem, outcome.choice)
    if value < bound <= value + 1e-9 * max(abs(value), 1.0):
        bound = value
    return bound
