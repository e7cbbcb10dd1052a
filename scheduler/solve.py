"""solve(instance, params) -> Result: compile -> engine -> plan -> verify. Pure: the instance is
never changed, and every plan is checked by the independent verifier before it is returned."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from models import Instance, SolveStats, Status
from scheduler.compile import Options, compile_options
from scheduler.decode import build_plan
from scheduler.engines import EngineResult
from scheduler.engines.exact import solve_exact
from scheduler.engines.greedy import greedy
from scheduler.params import Progress, Result, SolveParams
from scheduler.verify import verify

EXACT_MAX_OPTIONS = 600
"""`engine="auto"` runs the exact engine up to this many options, the large-scale engine above.

Measured on 2 cores with 10 s per problem: plain CP-SAT proves the OR-Library problems (up to 600
options) and the 5-agent x 100-job Yagiura problems best; from 1,000 options on (10 x 100, 5 x 200)
the large engine ends as close or closer to the best-known values, and on China-network instances
(tens of thousands of options and up) it is far ahead (docs/benchmarks.md)."""

POST_SECONDS_PER_DEMAND = 25e-6
"""Time set aside per demand for itemizing and verifying the plan (measured: about 20 us)."""


class VerificationError(RuntimeError):
    """An engine returned a plan the independent verifier rejects: a bug, never bad input."""

    def __init__(self, result: Result):
        self.result = result
        shown = "; ".join(v.message for v in result.verification.violations[:5])
        super().__init__(f"the plan failed verification ({shown})")


def pick_engine(options: Options, requested: str) -> str:
    """The engine to run: as requested, or for "auto" by the number of options."""
    if requested != "auto":
        return requested
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
    the search early with the best plan so far. Raises VerificationError if the plan fails the
    verifier (a bug in eastwest).
    """
    params = params or SolveParams()
    started = time.perf_counter()
    options = compile_options(instance)
    engine = pick_engine(options, params.engine)
    hint, complete = greedy(options)
    prepared = time.perf_counter()
    # Leave time for itemizing and verifying the plan, so the whole solve keeps to the limit.
    remaining = params.time_limit_s - (prepared - started) - POST_SECONDS_PER_DEMAND * options.n_demands
    budget = params.model_copy(update={"time_limit_s": max(remaining, 0.1)})
    if engine == "exact":
        outcome = solve_exact(options, budget, hint=hint, on_progress=on_progress, stop=stop)
    else:
        from scheduler.engines.large import solve_large

        outcome = solve_large(options, budget, hint=hint, on_progress=on_progress, stop=stop)
    outcome = _fall_back_to_hint(outcome, hint, complete)
    searched = time.perf_counter()
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
    plan = build_plan(
        instance,
        options,
        outcome.choice,
        status=outcome.status,
        lower_bound=outcome.lower_bound,
        stats=stats,
    )
    itemized = time.perf_counter()
    verification = verify(instance, plan)
    finished = time.perf_counter()
    phases = {
        "compile_s": prepared - started,
        "search_s": searched - prepared,
        "plan_s": itemized - searched,
        "verify_s": finished - itemized,
    }
    stats = stats.model_copy(
        update={"wall_time_s": finished - started, "details": {**stats.details, **phases}}
    )
    result = Result(plan=plan.model_copy(update={"stats": stats}), verification=verification)
    if not verification.ok:
        raise VerificationError(result)
    return result


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
    )
