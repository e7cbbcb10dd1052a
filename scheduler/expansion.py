"""Capacity expansion: which candidate pools to build, where and when, with the placement of every
year's demands, and a proven lower bound (docs/expansion.md; docs/formulation.md, section 11).

Everything is kept in the units of one planning window (the instances' `window_hours` W): a GPU's
annualized capital is charged W / 8760 of a year per window, so that the placement costs the
compiler gives are used unchanged; results are scaled to a year by f = 8760 / W when reported.

The pieces: `ExpansionProblem` (each year's options, compiled with every candidate pool at its
largest possible size), `ExpansionRelaxation` (the Lagrangian of all capacity rows, reusing
`CapacityRelaxation` per year, plus the build subproblem solved exactly), `ExpansionLP` (the LP
relaxation in GLOP: multipliers, and fractional builds to round), a local search over the builds,
and `assess`, which solves each year with `scheduler.solve` (plans checked by the verifier).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from models import AMOUNT_LIMIT, OPTIMAL_GAP, AcceleratorPool, Instance, Status, relative_gap
from models.expansion import (
    HOURS_PER_YEAR,
    Build,
    CandidateBuild,
    ExpansionParams,
    ExpansionResult,
    YearSummary,
)
from scheduler.compile import Options, compile_options
from scheduler.engines import StopWatcher
from scheduler.engines.lagrangian import BOUND_SAFETY, CapacityRelaxation, DualAscent, Evaluation
from scheduler.params import Result, SolveParams

MAX_POOL_GPUS = 10_000_000
"""The most GPUs one pool may hold (`AcceleratorPool.gpu_count`)."""


class ExpansionInputError(ValueError):
    """Years, instances or candidates that cannot be planned; each problem names object and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# -- the years' instances ------------------------------------------------------------------------


def grow(instance: Instance, factor: float) -> Instance:
    """The simple built-in growth model: every demand's work, its unserved penalty, and its
    offers' GPU-hours and prices multiplied by ``factor``; nothing else changes."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ExpansionInputError([f"growth: factor {factor!r} must be positive"])
    largest = max((d.work_pflop or 0.0 for d in instance.demands), default=0.0)
    if largest * factor > AMOUNT_LIMIT:
        raise ExpansionInputError([f"growth: factor {factor:g} takes a demand's 'work_pflop' past "
                                   f"{AMOUNT_LIMIT:g}"])
    demands = tuple(d.model_copy(update={
        "work_pflop": None if d.work_pflop is None else d.work_pflop * factor,
        "unserved_penalty_cny": d.unserved_penalty_cny * factor,
    }) for d in instance.demands)
    offers = tuple(o.model_copy(update={"gpu_hours": o.gpu_hours * factor,
                                        "price_cny": o.price_cny * factor})
                   for o in instance.offers)
    return instance.model_copy(update={"demands": demands, "offers": offers})


def growth_years(instance: Instance, years: Sequence[int], growth: float) -> list[tuple[int, Instance]]:
    """Each year's instance under uniform growth: year k (from 0) has (1 + growth)^k of the work."""
    if growth <= -1:
        raise ExpansionInputError([f"growth: {growth:g} is -100% or less"])
    return [(year, grow(instance, (1.0 + growth) ** k).model_copy(
        update={"name": f"{instance.name}-{year}"})) for k, year in enumerate(years)]


def with_pools(instance: Instance, candidates: Sequence[CandidateBuild], gpus: Sequence[int]) -> Instance:
    """``instance`` with each candidate that has GPUs added as a pool of its region.

    A build-specific PUE is applied through the pool's power: power x PUE_build / PUE_region
    gives the energy (and carbon) the build's own PUE would.
    """
    regions = {r.id: r for r in instance.regions}
    added: dict[str, list[AcceleratorPool]] = {}
    for c, count in zip(candidates, gpus, strict=True):
        if count <= 0:
            continue
        region = regions[c.region]
        power = c.pool.power_kw_per_gpu
        if c.pue is not None:
            power = power * c.pue / region.pue
        added.setdefault(c.region, []).append(AcceleratorPool(
            id=c.id, gpu_count=int(count), **c.pool.model_dump(exclude={"power_kw_per_gpu"}),
            power_kw_per_gpu=power))
    new_regions = tuple(r.model_copy(update={"pools": r.pools + tuple(added[r.id])}) if r.id in added
                        else r for r in instance.regions)
    return instance.model_copy(update={"regions": new_regions})


# -- the problem ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class YearModel:
    """One year: its instance, and the options with every candidate at its largest size."""

    year: int
    instance: Instance
    options: Options
    candidate_pool: np.ndarray  # int64 [C]: pool index of each candidate, -1 if never buildable


class ExpansionProblem:
    """The years, the candidates and what each step of each candidate costs and holds."""

    def __init__(self, years: Sequence[tuple[int, Instance]], candidates: Sequence[CandidateBuild]):
        self.candidates = tuple(candidates)
        problems = check_input(years, self.candidates)
        if problems:
            raise ExpansionInputError(problems)
        self.years = [year for year, _ in years]
        self.Y, self.C = len(self.years), len(self.candidates)
        first = years[0][1]
        self.window_hours = first.window_hours
        self.annualization = HOURS_PER_YEAR / self.window_hours
        quantum = first.gpu_hour_quantum
        g = np.array([c.gpus_per_step for c in self.candidates], dtype=np.float64)
        # Quanta one step holds, rounded up (a step of g GPUs holds floor(B g W / q + 1e-9) quanta
        # when B steps are built, at most B times this), so the relaxation never undercounts.
        self.step_quanta = g * self.window_hours / quantum * (1 + 1e-12) + 1e-9
        self.step_capital = np.array([c.annual_capital_cny_per_gpu for c in self.candidates]) * g / (
            self.annualization)  # per step usable in one year, in window units
        # lead[c]: years between building and using; usable[c, y'] whether a step built in year y'
        # is usable in some year planned; limit[c, y'] its most steps.
        self.lead = np.array([c.lead_time_years for c in self.candidates], dtype=np.int64)
        year_arr = np.array(self.years)
        self.usable = (year_arr[None, :] + self.lead[:, None]) <= year_arr[-1]
        self.limit = np.where(self.usable, np.array([c.max_steps_per_year for c in self.candidates])[:, None], 0)
        self.total = np.array([self.limit[k].sum() if c.max_steps_total is None
                               else min(c.max_steps_total, self.limit[k].sum())
                               for k, c in enumerate(self.candidates)], dtype=np.int64)
        # uses[c, y', y]: a step built in year y' is usable in year y
        self.uses = (year_arr[None, :, None] + self.lead[:, None, None]) <= year_arr[None, None, :]
        self.max_gpus = self.total * g.astype(np.int64)
        too_big = [f"candidate '{c.id}': field 'gpus_per_step' ({c.gpus_per_step}) x the steps it may "
                   f"build ({int(self.total[k])}) is {int(self.max_gpus[k]):,} GPUs; one pool holds at "
                   f"most {MAX_POOL_GPUS:,}" for k, c in enumerate(self.candidates)
                   if self.max_gpus[k] > MAX_POOL_GPUS]
        if too_big:
            raise ExpansionInputError(too_big)
        self.base = [inst for _, inst in years]
        self.models = [self._year_model(year, inst) for year, inst in years]

    def _year_model(self, year: int, instance: Instance) -> YearModel:
        widest = with_pools(instance, self.candidates, self.max_gpus.tolist())
        options = compile_options(widest)
        ids = {pool.id: k for k, (_, pool) in enumerate(widest.pools())}
        pools = np.array([ids.get(c.id, -1) if self.max_gpus[k] > 0 else -1
                          for k, c in enumerate(self.candidates)], dtype=np.int64)
        return YearModel(year, widest, options, pools)

    def available(self, steps: np.ndarray) -> np.ndarray:
        """B[c, y]: steps usable in year y (int64 [C, Y]) for the steps built ``steps[c, y']``."""
        return np.einsum("cs,csy->cy", steps, self.uses.astype(np.int64))

    def capital(self, steps: np.ndarray) -> float:
        """Capital of a schedule over all years, in window units."""
        return math.fsum((self.step_capital[:, None] * self.available(steps)).ravel().tolist())

    def feasible_steps(self, steps: np.ndarray) -> bool:
        return bool(np.all(steps >= 0) and np.all(steps <= self.limit)
                    and np.all(steps.sum(axis=1) <= self.total))

    def instance(self, y: int, steps: np.ndarray) -> Instance:
        """Year ``y``'s instance with the GPUs of ``steps`` usable that year."""
        gpus = self.available(steps)[:, y] * np.array([c.gpus_per_step for c in self.candidates])
        return with_pools(self.base[y], self.candidates, gpus.tolist())


def check_input(years: Sequence[tuple[int, Instance]], candidates: Sequence[CandidateBuild]) -> list[str]:
    """Every problem with the years, their instances and the candidates."""
    out: list[str] = []
    if not years:
        return ["years: none given"]
    if not candidates:
        out.append("candidates: none given")
    numbers = [year for year, _ in years]
    for k in range(1, len(numbers)):
        if numbers[k] != numbers[k - 1] + 1:
            out.append(f"years: year {numbers[k]} follows {numbers[k - 1]}; the years must be "
                       "consecutive and increasing")
            break
    first = years[0][1]
    for year, inst in years:
        if inst.timed:
            out.append(f"year {year}: instance '{inst.name}': field 'horizon': expansion planning "
                       "over instances with a horizon (schema version 2) is not supported yet; use a "
                       "single-window instance")
        if inst.window_hours != first.window_hours:
            out.append(f"year {year}: instance '{inst.name}': field 'window_hours' "
                       f"({inst.window_hours:g}) differs from the first year's ({first.window_hours:g})")
        if inst.gpu_hour_quantum != first.gpu_hour_quantum:
            out.append(f"year {year}: instance '{inst.name}': field 'gpu_hour_quantum' differs from "
                       "the first year's")
    regions = {r.id for r in first.regions}
    pools = {p.id for _, p in first.pools()}
    for c in candidates:
        if c.region not in regions:
            out.append(f"candidate '{c.id}': field 'region' names unknown region '{c.region}'")
        if c.id in pools:
            out.append(f"candidate '{c.id}': field 'id' is already a pool of the instance")
    return out


# -- the bound -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Rows:
    """What `DualAscent` reads of its relaxation's options: the rows and a cost scale."""

    n_pools: int
    cost: np.ndarray


class ExpansionRelaxation:
    """L(lam) for multipliers on every capacity row of every year (docs/expansion.md):

        L(lam) = sum_y L_y(lam_y) + sum_c min_b sum_y' b[c,y'] w[c,y'],
        w[c,y'] = sum_{y usable from y'} (a_c - lam[c,y] k_c)

    L_y is `CapacityRelaxation` on year y's options with the candidate pools' capacity 0 (their
    capacity is the build variables' k_c B[c,y]); the build subproblem is solved exactly by
    `best_builds`. Every lam >= 0 gives a valid bound.
    """

    def __init__(self, problem: ExpansionProblem):
        self.problem = problem
        self.years: list[CapacityRelaxation] = []
        self.offsets = [0]
        for m in problem.models:
            cap = m.options.capacity.copy()
            cap[m.candidate_pool[m.candidate_pool >= 0]] = 0
            self.years.append(CapacityRelaxation(replace(m.options, capacity=cap)))
            self.offsets.append(self.offsets[-1] + m.options.n_pools)
        self.rows = self.offsets[-1]
        # row[c, y]: the candidate's capacity row in year y, -1 if it has none
        self.row = np.full((problem.C, problem.Y), -1, dtype=np.int64)
        for y, m in enumerate(problem.models):
            has = m.candidate_pool >= 0
            self.row[has, y] = self.offsets[y] + m.candidate_pool[has]
        self.options = _Rows(self.rows, np.concatenate([m.options.cost for m in problem.models]))
        self.units_f = np.concatenate([r.units_f for r in self.years])
        self.evaluations = 0

    def build_prices(self, lam: np.ndarray) -> np.ndarray:
        """a_c - lam[c,y] k_c for every candidate and year (float64 [C, Y]); 0 where no row."""
        p = self.problem
        price = np.where(self.row >= 0, lam[np.maximum(self.row, 0)], 0.0)
        return np.where(self.row >= 0, p.step_capital[:, None] - price * p.step_quanta[:, None], 0.0)

    def best_builds(self, lam: np.ndarray) -> np.ndarray:
        """The steps minimizing sum b[c,y'] w[c,y'] within the limits: per candidate, its most
        negative coefficients first, each filled to its year's limit until the total is used."""
        p = self.problem
        w = np.einsum("cy,csy->cs", self.build_prices(lam), p.uses.astype(np.float64))
        steps = np.zeros((p.C, p.Y), dtype=np.int64)
        for c in range(p.C):
            left = int(p.total[c])
            for s in np.argsort(w[c], kind="stable"):
                if w[c, s] >= 0 or left <= 0:
                    break
                steps[c, s] = min(int(p.limit[c, s]), left)
                left -= steps[c, s]
        return steps

    def evaluate(self, lam: np.ndarray) -> Evaluation:
        """L(lam) with its bound (safety margin taken), load and the supergradient's capacity."""
        p = self.problem
        lam = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)
        self.evaluations += 1
        parts = [r.evaluate(lam[self.offsets[y]:self.offsets[y + 1]]) for y, r in enumerate(self.years)]
        steps = self.best_builds(lam)
        B = p.available(steps).astype(np.float64)
        capital = p.step_capital[:, None] * B
        has = self.row >= 0
        priced = np.where(has, lam[np.maximum(self.row, 0)], 0.0) * p.step_quanta[:, None] * B
        build_value = math.fsum(capital.ravel().tolist()) - math.fsum(priced.ravel().tolist())
        value = math.fsum([e.value for e in parts]) + build_value
        margin = math.fsum([e.value - e.bound for e in parts]) + BOUND_SAFETY * (
            float(np.abs(capital).sum()) + float(np.abs(priced).sum()))
        capacity = np.concatenate([e.capacity for e in parts])
        capacity[self.row[has]] = (p.step_quanta[:, None] * B)[has]
        load = np.concatenate([e.load for e in parts])
        best = np.concatenate([e.best for e in parts])
        return Evaluation(lam, value, value - margin - 1e-300, best, load, capacity)


class ExpansionLP:
    """The LP relaxation in GLOP: assignments in [0, 1] per option, unserved in [0, 1] per optional
    demand, builds in [0, limit], every capacity row of every year. Its duals are multipliers for
    `ExpansionRelaxation` (the bound is L at them, exact whatever GLOP's tolerance); with the builds
    fixed it prices a schedule for the local search."""

    def __init__(self, problem: ExpansionProblem, relax: ExpansionRelaxation):
        from ortools.linear_solver import pywraplp

        self.problem, self.relax = problem, relax
        self._pywraplp = pywraplp
        s = pywraplp.Solver.CreateSolver("GLOP")
        self.solver = s
        inf = s.infinity()
        objective = s.Objective()
        self.capacity_rows: list = []
        self.b = [[s.NumVar(0.0, float(problem.limit[c, y]), f"b{c}_{y}") if problem.limit[c, y] > 0
                   else None for y in range(problem.Y)] for c in range(problem.C)]
        for c in range(problem.C):
            for y in range(problem.Y):
                if self.b[c][y] is not None:
                    objective.SetCoefficient(self.b[c][y], float(
                        problem.step_capital[c] * problem.uses[c, y].sum()))
            if problem.total[c] < problem.limit[c].sum():
                row = s.Constraint(-inf, float(problem.total[c]))
                for var in self.b[c]:
                    if var is not None:
                        row.SetCoefficient(var, 1.0)
        self.constant = 0.0
        for y, m in enumerate(problem.models):
            o = m.options
            kept = o.must_serve[o.demand] | (o.cost < o.penalty[o.demand])
            rows = [s.Constraint(-inf, float(cap)) for cap in o.capacity]
            for c in range(problem.C):
                p = m.candidate_pool[c]
                if p >= 0:
                    rows[p].SetBounds(-inf, 0.0)
                    for s_year in range(problem.Y):
                        if problem.uses[c, s_year, y] and self.b[c][s_year] is not None:
                            rows[p].SetCoefficient(self.b[c][s_year], -float(problem.step_quanta[c]))
            self.capacity_rows.append(rows)
            for i in range(o.n_demands):
                ks = [k for k in range(int(o.start[i]), int(o.start[i + 1])) if kept[k]]
                if not ks and not o.must_serve[i]:
                    self.constant += float(o.penalty[i])
                    continue
                row = s.Constraint(1.0, 1.0)
                if not o.must_serve[i]:
                    var = s.NumVar(0.0, 1.0, "")
                    row.SetCoefficient(var, 1.0)
                    objective.SetCoefficient(var, float(o.penalty[i]))
                for k in ks:
                    var = s.NumVar(0.0, 1.0, "")
                    row.SetCoefficient(var, 1.0)
                    rows[int(o.pool[k])].SetCoefficient(var, float(o.units[k]))
                    objective.SetCoefficient(var, float(o.cost[k]))
        objective.SetMinimization()
        self.cache: dict[bytes, float | None] = {}

    def solve(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """GLOP within ``seconds``; a set ``stop`` interrupts it (then False)."""
        self.solver.SetTimeLimit(max(1, int(seconds * 1000)))
        with StopWatcher(stop, self.solver.InterruptSolve):
            solved = self.solver.Solve() == self._pywraplp.Solver.OPTIMAL
        return solved and not (stop is not None and stop.is_set())

    def multipliers(self) -> np.ndarray:
        """lam from the capacity rows' duals (GLOP's are <= 0 on <= rows of a minimization)."""
        return np.concatenate([np.maximum(0.0, -np.array([row.dual_value() for row in rows]))
                               for rows in self.capacity_rows])

    def builds(self) -> np.ndarray:
        return np.array([[0.0 if var is None else var.solution_value() for var in row] for row in self.b])

    def value_with(self, steps: np.ndarray, seconds: float,
                   stop: threading.Event | None = None) -> float | None:
        """The LP's value with the builds fixed to ``steps`` (window units), None if infeasible
        (or interrupted by ``stop``: then not remembered)."""
        key = steps.tobytes()
        if key not in self.cache:
            for c, row in enumerate(self.b):
                for y, var in enumerate(row):
                    if var is not None:
                        var.SetBounds(float(steps[c, y]), float(steps[c, y]))
            ok = self.solve(seconds, stop)
            if stop is not None and stop.is_set():
                return None
            self.cache[key] = self.solver.Objective().Value() + self.constant if ok else None
        return self.cache[key]


# -- the schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Expansion:
    """What `plan_expansion` returns: the result, and each year's instance and verified plan."""

    result: ExpansionResult
    instances: tuple[Instance, ...]
    plans: tuple[Result, ...]


def local_search(problem: ExpansionProblem, start: np.ndarray, price: Callable[[np.ndarray], float | None],
                 deadline: float, stopped: Callable[[], bool] = lambda: False) -> np.ndarray:
    """From ``start``, move one step up or down in one candidate and year while that lowers
    ``price`` (capital plus placement, window units); the best move each round, until no move
    gains, the deadline or ``stopped()`` (the best schedule so far)."""
    best, best_value = start, price(start)
    while time.perf_counter() < deadline and not stopped():
        improved = False
        moves = [(c, y, d) for c in range(problem.C) for y in range(problem.Y) for d in (-1, 1)
                 if problem.limit[c, y] > 0]
        round_best, round_value = None, best_value
        for c, y, d in moves:
            if time.perf_counter() >= deadline or stopped():
                break
            trial = best.copy()
            trial[c, y] += d
            if not problem.feasible_steps(trial):
                continue
            value = price(trial)
            if value is not None and (round_value is None or value < round_value - 1e-9 * max(1.0, abs(round_value))):
                round_best, round_value, improved = trial, value, True
        if improved:  # the round's best move, also when the round was cut short
            best, best_value = round_best, round_value
        if not improved or stopped():
            break
    return best


def _rounded(problem: ExpansionProblem, fractional: np.ndarray) -> np.ndarray:
    """Whole steps for LP builds (within the limits): ``fractional`` rounded however the caller
    did it, then cut back to each candidate's total, latest year first."""
    steps = np.minimum(fractional.astype(np.int64), problem.limit)
    steps = np.maximum(steps, 0)
    for c in range(problem.C):  # over the total: drop steps, latest year first
        for y in reversed(range(problem.Y)):
            over = int(steps[c].sum() - problem.total[c])
            if over <= 0:
                break
            steps[c, y] -= min(over, int(steps[c, y]))
    return steps


def plan_expansion(
    years: Sequence[tuple[int, Instance]],
    candidates: Sequence[CandidateBuild],
    params: ExpansionParams | None = None,
    *,
    on_progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> Expansion:
    """Choose the builds and every year's placement to minimize capital plus operating cost plus
    unserved penalties over the years; report the schedule, each year's verified plan, the
    proven lower bound and the gap. Raises ExpansionInputError for input that cannot be planned.

    A set ``stop`` (Ctrl-C in the CLI) ends the search for builds at once: the best schedule so
    far is solved year by year at `STOPPED_YEAR_S` each, without the builds' savings, and the
    result says ``stats["interrupted"] = 1``; its bound stays proven."""
    params = params or ExpansionParams()
    stop = stop if stop is not None else threading.Event()
    started = time.perf_counter()
    deadline = started + params.time_limit_s

    def tell(text: str) -> None:
        if on_progress is not None:
            on_progress(f"{time.perf_counter() - started:6.1f} s  {text}")

    problem = ExpansionProblem(years, candidates)
    tell(f"compiled {problem.Y} years, {sum(m.options.n_options for m in problem.models):,} options")
    relax = ExpansionRelaxation(problem)
    best = relax.evaluate(np.zeros(relax.rows))
    stats: dict[str, float | int | str] = {}
    n_options = sum(m.options.n_options for m in problem.models)
    lp = None
    fractional = None
    method = "lagrangian (bundle method from lam = 0)"
    reserve = _assess_reserve(problem, params)
    if n_options <= params.lp_max_options:
        lp_started = time.perf_counter()
        lp = ExpansionLP(problem, relax)
        ok = lp.solve(max(1.0, (deadline - time.perf_counter() - reserve) * 0.5), stop)
        stats["lp_s"] = time.perf_counter() - lp_started
        if ok:
            fractional = lp.builds()
            stats["lp_value_cny"] = (lp.solver.Objective().Value() + lp.constant) * problem.annualization
            at_duals = relax.evaluate(lp.multipliers())
            if at_duals.value > best.value:
                best = at_duals
            method = "lagrangian at the LP relaxation's duals (GLOP), polished by the bundle method"
        tell(f"LP relaxation {'solved' if ok else 'not solved'}; bound {best.bound * problem.annualization:,.0f}")
    ascent = DualAscent(relax, lam0=best.lam)
    ascent_deadline = min(deadline - reserve, time.perf_counter() + max(1.0, 0.1 * params.time_limit_s))
    polished = ascent.run(max_steps=500, deadline=ascent_deadline, stop=stop.is_set)
    if polished.value > best.value:
        best = polished
    stats["dual_evaluations"] = relax.evaluations
    tell(f"bound {best.bound * problem.annualization:,.0f}")

    if fractional is None:
        fractional = relax.best_builds(best.lam).astype(np.float64)
    starts = [_rounded(problem, np.floor(fractional + 1e-7)), _rounded(problem, np.floor(fractional + 0.5)),
              _rounded(problem, np.ceil(fractional - 1e-7)), np.zeros((problem.C, problem.Y), dtype=np.int64)]
    search_deadline = max(time.perf_counter() + 1.0, deadline - reserve)
    enumerated = _enumerate(problem, params, search_deadline, stop)
    if enumerated is not None:
        steps, lower = enumerated
        if lower > best.bound:
            best = replace(best, bound=lower)
            method = ("every schedule enumerated, each year solved by scheduler.solve: the least of "
                      "capital plus the years' proven bounds")
    elif lp is not None:
        def price(steps: np.ndarray) -> float | None:
            return lp.value_with(steps, max(1.0, search_deadline - time.perf_counter()), stop)
    else:
        price = _greedy_price(problem)
    if enumerated is None:
        priced = [(price(s), k) for k, s in enumerate(starts)]
        priced = [(v, k) for v, k in priced if v is not None]
        start = starts[min(priced)[1]] if priced else starts[-1]
        steps = local_search(problem, start, price, search_deadline, stop.is_set)
        stats["schedules_priced"] = len(lp.cache) if lp is not None else 0
    tell(f"builds chosen: {int(steps.sum())} steps; solving each year")
    if stop.is_set():
        tell("interrupted: solving each year with the builds so far, without their savings")
    assessed = assess(problem, steps, params, deadline=deadline, on_progress=tell, stop=stop)
    bound = best.bound * problem.annualization
    result = assessed.result
    gap = relative_gap(result.objective_cny, bound)
    status = result.status
    if status == Status.FEASIBLE and gap is not None and gap <= OPTIMAL_GAP:
        status = Status.OPTIMAL
    stats.update(result.stats)
    stats["wall_time_s"] = time.perf_counter() - started
    stats["time_limit_s"] = params.time_limit_s
    if stop.is_set():
        stats["interrupted"] = 1
    final = result.model_copy(update={"lower_bound_cny": bound, "gap": gap, "status": status,
                                      "bound_method": method, "stats": stats})
    return replace(assessed, result=final)


ENUMERATE_MAX_SCHEDULES = 4096
"""Problems with at most this many schedules (and `ENUMERATE_MAX_OPTIONS` options) are solved by
enumeration: every year solved once for each distinct set of usable builds."""

ENUMERATE_MAX_OPTIONS = 2000


def _enumerate(problem: ExpansionProblem, params: ExpansionParams, deadline: float,
               stop: threading.Event) -> tuple[np.ndarray, float] | None:
    """The best schedule and a bound (window units) by enumerating every schedule, when few: the
    bound is the least over schedules of capital plus each year's proven bound with those builds
    (valid: every schedule's cost is at least that). None when too many or out of time; when
    ``stop`` is set, the best schedule fully priced so far with bound -inf (none)."""
    sizes = [int(problem.limit[c, y]) + 1 for c in range(problem.C) for y in range(problem.Y)]
    if (math.prod(sizes) > ENUMERATE_MAX_SCHEDULES
            or sum(m.options.n_options for m in problem.models) > ENUMERATE_MAX_OPTIONS):
        return None
    years: dict[tuple[int, tuple[int, ...]], tuple[float, float] | None] = {}
    best: tuple[float, np.ndarray] | None = None
    lower = math.inf
    for flat in itertools.product(*(range(n) for n in sizes)):
        if stop.is_set():
            return None if best is None else (best[1], -math.inf)
        if time.perf_counter() >= deadline:
            return None
        steps = np.array(flat, dtype=np.int64).reshape(problem.C, problem.Y)
        if not problem.feasible_steps(steps):
            continue
        B = problem.available(steps)
        value = bound = problem.capital(steps)
        for y in range(problem.Y):
            key = (y, tuple(B[:, y].tolist()))
            if key not in years:
                _, res = _solve_year(problem, y, steps, params, params.year_time_limit_s, stop)
                if stop.is_set():  # cut short: it prices nothing
                    return None if best is None else (best[1], -math.inf)
                plan = res.plan
                years[key] = None if plan.objective is None or plan.lower_bound is None else (
                    plan.objective, plan.lower_bound)
            if years[key] is None:
                value = bound = math.inf  # infeasible or unknown: no bound from it
                break
            value += years[key][0]
            bound += years[key][1]
        lower = min(lower, bound)
        if best is None or value < best[0]:
            best = (value, steps)
    if best is None or not math.isfinite(lower):
        return None
    return best[1], lower - BOUND_SAFETY * abs(lower) - 1e-300


def _assess_reserve(problem: ExpansionProblem, params: ExpansionParams) -> float:
    """Seconds kept for the yearly solves (and the savings' re-solves, a few)."""
    solves = problem.Y * (1 + (min(problem.C, 4) if params.savings else 0))
    return min(params.time_limit_s * 0.6, solves * params.year_time_limit_s)


def _greedy_price(problem: ExpansionProblem) -> Callable[[np.ndarray], float | None]:
    """Capital plus each year's greedy placement (window units): the local search's yardstick
    when the LP is too large."""
    from scheduler.engines.greedy import greedy
    from scheduler.engines.primal import objective

    cache: dict[bytes, float | None] = {}

    def price(steps: np.ndarray) -> float | None:
        key = steps.tobytes()
        if key not in cache:
            B = problem.available(steps)
            total = problem.capital(steps)
            for y, m in enumerate(problem.models):
                cap = m.options.capacity.copy()
                has = m.candidate_pool >= 0
                cap[m.candidate_pool[has]] = np.floor(
                    B[has, y] * problem.step_quanta[has] - 1e-6).astype(np.int64)
                options = replace(m.options, capacity=cap)
                choice, complete = greedy(options)
                if not complete:
                    cache[key] = None
                    return None
                total += objective(options, choice)
            cache[key] = total
        return cache[key]

    return price


STOPPED_YEAR_S = 1.0
"""Each year's solve once `plan_expansion` is stopped: its first plan and a little search."""


def _solve_year(problem: ExpansionProblem, y: int, steps: np.ndarray, params: ExpansionParams,
                seconds: float, stop: threading.Event) -> tuple[Instance, Result]:
    """Year y with the builds of ``steps`` by `scheduler.solve`. A ``stop`` set while it runs
    ends its search with the best plan so far; one already set is not passed on (the year is
    then solved at `STOPPED_YEAR_S`), and a year cut short before its first plan is solved
    again so."""
    from scheduler.solve import solve

    instance = problem.instance(y, steps)
    already = stop.is_set()
    if already:
        seconds = min(seconds, STOPPED_YEAR_S)
    solve_params = SolveParams(time_limit_s=max(seconds, 0.5), seed=params.seed, workers=params.workers)
    result = solve(instance, solve_params, stop=None if already else stop)
    if not already and stop.is_set() and result.objective is None:
        result = solve(instance, solve_params.model_copy(update={"time_limit_s": STOPPED_YEAR_S}))
    return instance, result


def assess(problem: ExpansionProblem, steps: np.ndarray, params: ExpansionParams, *,
           deadline: float | None = None, on_progress: Callable[[str], None] | None = None,
           stop: threading.Event | None = None) -> Expansion:
    """Solve every year with the builds of ``steps`` (each plan verified), and price each build
    by solving the years it serves again without it. No lower bound (the caller's). Once
    ``stop`` is set: each year at `STOPPED_YEAR_S` (`_solve_year`), no savings."""
    steps = np.asarray(steps, dtype=np.int64)
    if not problem.feasible_steps(steps):
        raise ExpansionInputError(["steps: outside the candidates' limits"])
    f = problem.annualization
    deadline = deadline if deadline is not None else time.perf_counter() + params.time_limit_s
    stop = stop if stop is not None else threading.Event()

    def seconds(pending: int) -> float:
        return min(params.year_time_limit_s, max(0.5, (deadline - time.perf_counter()) / max(pending, 1)))

    builds_list = [(c, y) for c in range(problem.C) for y in range(problem.Y) if steps[c, y] > 0]
    pending_savings = sum(int(problem.uses[c, y].sum()) for c, y in builds_list) if params.savings else 0
    instances, results = [], []
    for y in range(problem.Y):
        if on_progress is not None:
            on_progress(f"solving {problem.years[y]}")
        inst, res = _solve_year(problem, y, steps, params, seconds(problem.Y - y + pending_savings), stop)
        instances.append(inst)
        results.append(res)
    operating = [None if r.objective is None else r.objective * f for r in results]
    capital = problem.capital(steps) * f
    known = all(v is not None for v in operating)
    total = (math.fsum(operating) + capital) if known else None
    builds = []
    for c, y in builds_list:
        cand = problem.candidates[c]
        k = int(steps[c, y])
        one = np.zeros_like(steps)
        one[c, y] = k
        saving = operating_saving = None
        if params.savings and known and not stop.is_set():
            without = steps.copy()
            without[c, y] = 0
            changed = 0.0
            for y2 in np.flatnonzero(problem.uses[c, y]):
                pending_savings -= 1
                if on_progress is not None:
                    on_progress(f"pricing {cand.id} {problem.years[y]}: re-solving {problem.years[y2]}")
                _, res = _solve_year(problem, int(y2), without, params, seconds(pending_savings + 1), stop)
                if stop.is_set():  # a re-solve cut short prices nothing: this saving stays unknown
                    break
                changed += (math.inf if res.objective is None else res.objective * f) - operating[y2]
            else:
                operating_saving = changed
                saving = changed - problem.capital(one) * f
        builds.append(Build(candidate=cand.id, region=cand.region, accelerator=cand.pool.accelerator,
                            year=problem.years[y], steps=k, gpus=k * cand.gpus_per_step,
                            usable_from_year=problem.years[y] + cand.lead_time_years,
                            capital_cny=problem.capital(one) * f, saving_cny=saving,
                            operating_saving_cny=operating_saving))
    B = problem.available(steps)
    summaries = [_summary(problem, y, steps, B, instances[y], results[y]) for y in range(problem.Y)]
    statuses = [r.plan.status for r in results]
    status = next((s for s in (Status.INFEASIBLE, Status.UNKNOWN) if s in statuses), Status.FEASIBLE)
    result = ExpansionResult(
        instance=problem.base[0].name.removesuffix(f"-{problem.years[0]}"),
        years=tuple(problem.years), window_hours=problem.window_hours, annualization=f,
        status=status, objective_cny=total, lower_bound_cny=None, gap=None, capital_cny=capital,
        operating_cny=math.fsum(operating) if known else None,
        steps={c.id: tuple(int(v) for v in steps[k]) for k, c in enumerate(problem.candidates)},
        builds=tuple(builds), year_summaries=tuple(summaries), bound_method="none",
        stats={"year_solves_s": math.fsum(r.plan.stats.wall_time_s for r in results)},
    )
    return Expansion(result, tuple(instances), tuple(results))


def _summary(problem: ExpansionProblem, y: int, steps: np.ndarray, B: np.ndarray, instance: Instance,
             result: Result) -> YearSummary:
    plan, f = result.plan, problem.annualization
    unserved = {u.demand for u in plan.unserved}
    work = {d.id: d.work_pflop or 0.0 for d in instance.demands}
    used = {u.pool: u.used_gpu_hours for u in plan.pools}
    built = {c.id: int(B[k, y]) * c.gpus_per_step for k, c in enumerate(problem.candidates)}
    capital = math.fsum(float(problem.step_capital[k] * B[k, y]) for k in range(problem.C)) * f
    return YearSummary(
        year=problem.years[y],
        growth_factor=(sum(work.values()) / max(sum(d.work_pflop or 0.0 for d in problem.base[0].demands), 1e-300)),
        status=plan.status, demands=len(instance.demands),
        served=len(instance.demands) - len(unserved), unserved=len(unserved),
        work_pflop=math.fsum(work.values()),
        served_work_pflop=math.fsum(v for k, v in work.items() if k not in unserved),
        built_gpus=built,
        built_gpu_hours_used={c: used.get(c, 0.0) for c, n in built.items() if n > 0},
        operating_cny=(plan.objective or 0.0) * f, capital_cny=capital,
        plan_objective_cny=plan.objective, plan_lower_bound_cny=plan.lower_bound,
    )


# -- the command -----------------------------------------------------------------------------------


def parse_years(text: str) -> list[int]:
    """'2026-2030' -> [2026, ..., 2030]; '2026' -> [2026]."""
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise ExpansionInputError([f"--years: '{text}' is not YEAR or FIRST-LAST"]) from None
    if b < a:
        raise ExpansionInputError([f"--years: '{text}' runs backwards ({b} is before {a})"])
    if b - a > 50:
        raise ExpansionInputError([f"--years: '{text}' spans more than 50 years"])
    return list(range(a, b + 1))


def read_candidates(path):
    """Read and validate a candidates file (JSON, or YAML with the safe loader)."""
    from models.expansion import CandidateSet
    from scheduler.io import InputError, _read

    try:
        return _read(path, CandidateSet)
    except InputError as error:
        raise InputError(path, [p.replace("instance: ", "candidates file: ", 1) if p.startswith("instance: ")
                                else p for p in error.problems]) from None


def expansion_table(result: ExpansionResult) -> str:
    """What to build where and when, and each year's placement, as text tables."""
    from scheduler.report import money, percent, table

    builds = [[b.candidate, b.region, b.accelerator, str(b.year), str(b.usable_from_year), f"{b.gpus:,}",
               money(b.capital_cny), money(b.saving_cny)] for b in result.builds]
    out = ["builds (capital: annualized, over the years planned; saving: re-solved without the build)",
           table(["candidate", "region", "accelerator", "built", "usable", "GPUs", "capital CNY",
                  "saving CNY"], builds) if builds else "(nothing to build)", ""]
    years = [[str(s.year), f"{s.growth_factor:.2f}", f"{s.served:,}", f"{s.unserved:,}",
              percent(s.served_work_pflop / s.work_pflop if s.work_pflop else None),
              f"{sum(s.built_gpus.values()):,}", money(s.capital_cny), money(s.operating_cny), s.status.value]
             for s in result.year_summaries]
    out += [table(["year", "growth", "served", "unserved", "work served", "built GPUs", "capital CNY/yr",
                   "operating CNY/yr", "plan"], years), ""]
    out.append(f"objective {money(result.objective_cny)} CNY  (capital {money(result.capital_cny)}, "
               f"operating and penalties {money(result.operating_cny)})")
    out.append(f"bound     {money(result.lower_bound_cny)} CNY  gap {percent(result.gap, 3)}  "
               f"status {result.status.value}  ({result.stats.get('wall_time_s', 0):.1f} s)")
    return "\n".join(out)


def run_expand_command(args, *, say, warn, progress: bool, stop: threading.Event | None = None) -> int:
    """`eastwest expand`: read, plan, write DIR/expansion.json and DIR/<year>.{instance,plan}.json.
    A set ``stop`` ends the search (`plan_expansion`); what it then gives is written, exit 130."""
    from pathlib import Path

    from scheduler.io import InputError, check_writable, read_instance, write_instance, write_plan, write_text

    try:
        years = parse_years(args.years)
    except ExpansionInputError as error:
        raise InputError("arguments", error.problems) from None
    if not -1 < args.growth <= 10:
        raise InputError("arguments", [f"--growth: {args.growth:g} must be above -1 and at most 10"])
    instance = read_instance(args.instance)
    candidates = read_candidates(args.candidates)
    overrides = {"time_limit_s": args.time_limit, "year_time_limit_s": args.year_time_limit}
    try:
        params = ExpansionParams(**{k: v for k, v in overrides.items() if v is not None},
                                 savings=not args.no_savings)
    except ValueError as error:
        raise InputError("arguments", [str(error).splitlines()[0]]) from None
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, ["exists and is not a folder"])
    if not out.parent.is_dir():
        raise InputError(out, [f"the folder '{out.parent}' does not exist"])
    out.mkdir(exist_ok=True)
    protect = (args.instance, args.candidates)
    for name in ("expansion.json", *(f"{y}.{kind}.json" for y in years for kind in ("instance", "plan"))):
        check_writable(out / name, protect=protect)
    try:
        per_year = growth_years(instance, years, args.growth)
        run = plan_expansion(per_year, candidates.candidates, params,
                             on_progress=(lambda text: warn(f"expand: {text}")) if progress else None,
                             stop=stop)
    except ExpansionInputError as error:
        where = args.candidates if all(p.startswith("candidate") for p in error.problems) else args.instance
        raise InputError(where, error.problems) from None
    summaries = []
    for summary, inst, res in zip(run.result.year_summaries, run.instances, run.plans, strict=True):
        write_instance(inst, out / f"{summary.year}.instance.json", protect=protect)
        write_plan(res.plan, out / f"{summary.year}.plan.json", protect=protect)
        summaries.append(summary.model_copy(update={"plan_file": f"{summary.year}.plan.json"}))
    result = run.result.model_copy(update={"year_summaries": tuple(summaries)})
    write_text(result.model_dump_json(indent=1), out / "expansion.json", protect=protect)
    if not args.quiet:
        say(expansion_table(result))
        say(f"\nwritten to {out}/: expansion.json, <year>.instance.json, <year>.plan.json")
    if result.stats.get("interrupted"):
        warn(f"interrupted: the builds found so far, each year solved briefly, are kept in {out}/")
        return 130
    return 3 if result.status in (Status.INFEASIBLE, Status.UNKNOWN) else 0
