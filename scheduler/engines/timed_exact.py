"""The exact engine for horizons: one CP-SAT model of docs/formulation.md §8.4, time-indexed.

    x[d,p,s] in {0,1}   batch demand d runs on pool p from slot s       y[d] in {0,1}   d unserved
    m[j,t] >= 0         replicas of placement j = (service, pool) in slot t
    u[j,t] >= 0         load quanta it serves          v[e,t] >= 0   load quanta of service e unserved
    g[j] >= 0           whole grams placement j emits over the horizon (under a carbon cap)

    sum_{p,s} x[d,p,s] + y[d] = 1                                   every batch demand (no y if must-serve)
    sum_{running (d,s)} gang x + sum_j gang m[j,t] <= avail[p,t]    every pool p, slot t
    sum_{flows before s} rate x + sum_j tau u[j,t] <= bw[l,t]       every link l, slot t
    sum ceil(grams) x + sum_j g[j] <= cap_g,  g[j] >= sum_t w[j,t] m[j,t]    if there is a cap
    u[j,t] <= kappa[j] m[j,t]       sum_{j of e} u[j,t] + v[e,t] = Lq[e,t]
    minimize  sum round(s c) x + round(s pi) y + round(s rent) m + round(s transfer) u + round(s pen) v

Costs are scaled by a power of ten ``s`` and rounded as in §4; the proven bound is ``bound / s - E``
with E the largest total rounding error of a plan of kept alternatives. Left out (0 in some optimal
plan): starts that cannot fit their pool, link or the carbon cap on their own, starts of optional
demands that cost at least the penalty, replicas beyond what the slot's load needs, and pools where
a served quantum costs at least the penalty in transfer alone.

A placement's emissions are rounded up once over all its slots (§8.1, as the verifier reads it).
Its weights w (grams per replica and slot, floats) enter the integer row in units of 1/D gram
rounded down, which admits every plan of §8.4 (so the bound holds); if the plan found then breaks
the cap by such a margin, the model is solved again with the weights rounded up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import OPTIMAL_GAP, QUANTUM_SLACK, Status, relative_gap
from scheduler.compile import OBJECTIVE_SUM_LIMIT, OBJECTIVE_UNITS_LIMIT, RangeError
from scheduler.engines import EngineResult, StopWatcher
from scheduler.engines.exact import configure
from scheduler.params import Progress, SolveParams
from scheduler.timed import TimedChoice, TimedProblem

__all__ = ["MAX_VARIABLES", "BatchColumns", "check_model_size", "TimedScaling", "batch_columns", "choice_grams",
           "choice_objective", "model_size", "placement_grams", "replica_bounds", "solve_timed_exact",
           "timed_scaling"]

MAX_VARIABLES = 2_000_000
"""The most variables (start booleans, unserved booleans, replica and load integers) the exact
model may have; larger problems are refused so that ``engine="auto"`` picks the large engine."""


def model_size(problem: TimedProblem) -> int:
    """The number of variables the exact model would have at most, counted without building it."""
    b = problem.batch
    starts = int((b.last.astype(np.int64) - b.first + 1).sum()) if len(b.first) else 0
    services = problem.services
    return starts + len(b.rows) + problem.slots * (2 * len(services.pool) + len(services.rows))


# -- the columns: one per allowed (batch demand, pool, start) -------------------------------------


@dataclass(frozen=True, eq=False)
class BatchColumns:
    """The (option, start) pairs that get a boolean, grouped by batch demand (``start_of``)."""

    option: np.ndarray  # int64 [C]: index into BatchOptions
    start: np.ndarray  # int64 [C]: start slot
    cost: np.ndarray  # float64 [C]: c[d,p,s]
    grams: np.ndarray  # int64 [C]: emissions in whole grams, rounded up
    rate: np.ndarray  # int64 [C]: bandwidth quanta on every route link while the data moves
    start_of: np.ndarray  # int64 [batch + 1]: the columns of batch demand b are start_of[b]:start_of[b+1]


def check_model_size(problem: TimedProblem) -> None:
    """Raise RangeError (exit 2 in the CLI) when the model would pass MAX_VARIABLES."""
    size = model_size(problem)
    if size > MAX_VARIABLES:
        raise RangeError([f"instance: the exact engine takes at most {MAX_VARIABLES:,} variables and "
                          f"this horizon needs {size:,}; use engine 'large' or 'auto'"])


def grams_up(co2_kg: np.ndarray) -> np.ndarray:
    """Emissions in whole grams, rounded up (§8.1), with the usual slack against float noise."""
    return np.maximum(np.ceil(np.asarray(co2_kg, dtype=np.float64) * 1000.0 - QUANTUM_SLACK), 0).astype(np.int64)


def batch_columns(problem: TimedProblem) -> BatchColumns:
    """Every allowed start that can be in an optimal plan: it fits its pool in every slot of its
    run, its rate fits every route link while the data moves, its emissions fit the cap, and (for an
    optional demand) it costs less than the penalty."""
    b = problem.batch
    width = (b.last.astype(np.int64) - b.first + 1)
    k = np.repeat(np.arange(len(b.pool), dtype=np.int64), width)
    s = b.first[k].astype(np.int64) + np.arange(len(k)) - np.repeat(np.cumsum(width) - width, width)
    cost, co2, rate, ok = problem.evaluate(k, s)
    grams = grams_up(co2)
    demand = b.demand[k]
    gang = b.gang[demand].astype(np.int64)
    # The pool holds the gang in every slot of the run.
    n = b.slots[k].astype(np.int64)
    p = b.pool[k].astype(np.int64)
    for length in np.unique(n).tolist():
        at = np.flatnonzero(n == length)
        fewest = np.lib.stride_tricks.sliding_window_view(problem.avail, length, axis=1).min(axis=2)
        ok[at] &= fewest[p[at], s[at]] >= gang[at]
    # The rate fits the narrowest route link in every slot the data moves (release .. s-1).
    route = b.route[k].astype(np.int64)
    release = b.release[demand].astype(np.int64)
    moving = np.flatnonzero((route >= 0) & (rate > 0))
    if len(moving):
        pairs, which = np.unique(np.stack([route[moving], release[moving]], axis=1), axis=0, return_inverse=True)
        which = which.ravel()
        for g, (r, rel) in enumerate(pairs.tolist()):
            at = moving[which == g]
            narrowest = np.minimum.accumulate(problem.bandwidth[problem.routes[r], rel:].min(axis=0))
            ok[at] &= rate[at] <= narrowest[np.maximum(s[at] - rel - 1, 0)]
    if problem.carbon_cap_g is not None:
        ok &= grams <= problem.carbon_cap_g
    ok &= b.must_serve[demand] | (cost < b.penalty[demand])
    keep = np.flatnonzero(ok)  # still grouped by demand: options are, and starts within them
    start_of = np.zeros(len(b.rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(demand[keep], minlength=len(b.rows)), out=start_of[1:])
    return BatchColumns(k[keep], s[keep], cost[keep], grams[keep], rate[keep], start_of)


def replica_bounds(problem: TimedProblem) -> tuple[np.ndarray, np.ndarray]:
    """(m_max, u_max) [J, S]: the replicas and served quanta some optimal plan stays within.

    Replicas beyond ceil(load / kappa) serve nothing more and rent costs never fall below zero; a
    pool where transfer alone costs at least the penalty serves nothing in some optimal plan.
    """
    sv = problem.services
    n_options = len(sv.pool)
    if n_options == 0:
        zero = np.zeros((0, problem.slots), dtype=np.int64)
        return zero, zero
    service = np.repeat(np.arange(len(sv.rows)), np.diff(sv.start))
    load = sv.load[service]  # [J, S]
    kappa = sv.kappa[:, None]
    needed = np.where(kappa > 0, -(-load // np.maximum(kappa, 1)), 0)
    room = problem.avail[sv.pool] // sv.gang[service][:, None]
    m_max = np.minimum(needed, room)
    u_max = np.minimum(load, kappa * m_max)
    for j in range(n_options):
        if sv.route[j] >= 0 and sv.tau[j] > 0:
            narrowest = problem.bandwidth[problem.routes[int(sv.route[j])]].min(axis=0)
            u_max[j] = np.minimum(u_max[j], narrowest // sv.tau[j])
    useless = sv.transfer_per_quantum >= sv.penalty_per_quantum[service]
    u_max[useless] = 0
    m_max = np.where(kappa > 0, np.minimum(m_max, -(-u_max // np.maximum(kappa, 1))), 0)
    return m_max.astype(np.int64), u_max.astype(np.int64)


# -- integer scaling (§4, with the services' integer variables) -----------------------------------


@dataclass(frozen=True, eq=False)
class TimedScaling:
    """The objective coefficients in CP-SAT's integers, and the rounding bound E."""

    scale: float
    cost_int: np.ndarray  # int64 [C]
    penalty_int: np.ndarray  # int64 [batch]
    rent_int: np.ndarray  # int64 [J, S]
    transfer_int: np.ndarray  # int64 [J]
    load_penalty_int: np.ndarray  # int64 [services]
    rounding_bound: float


def _round(values: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    scaled = np.round(np.asarray(values, dtype=np.float64) * scale).astype(np.int64)
    return scaled, np.abs(values - scaled / scale)


def timed_scaling(problem: TimedProblem, columns: BatchColumns, m_max: np.ndarray,
                  u_max: np.ndarray) -> TimedScaling:
    """Pick the power of ten as §4 does over the kept coefficients (times the most each variable
    takes in some optimal plan), round, and bound the rounding error of such a plan."""
    b, sv = problem.batch, problem.services
    optional = ~b.must_serve
    service = np.repeat(np.arange(len(sv.rows)), np.diff(sv.start))
    used = u_max > 0  # [J, S]
    transfer_top = np.zeros(sv.load.shape)
    if len(sv.pool):
        np.maximum.at(transfer_top, service, np.where(used, sv.transfer_per_quantum[:, None], 0.0))
    load_pen = sv.penalty_per_quantum[:, None] * sv.load
    # The dearest plan of kept alternatives, and the sum of every coefficient times its range.
    dearest = np.where(optional, b.penalty, 0.0)
    has = np.diff(columns.start_of) > 0
    if has.any():
        dearest[has] = np.maximum(dearest[has], np.maximum.reduceat(columns.cost, columns.start_of[:-1][has]))
    rent_part = math.fsum((sv.rent * m_max).ravel())
    worst = (math.fsum(dearest) + rent_part
             + math.fsum((np.maximum(transfer_top, sv.penalty_per_quantum[:, None]) * sv.load).ravel()))
    total = (math.fsum(columns.cost) + math.fsum(b.penalty[optional]) + rent_part
             + math.fsum((sv.transfer_per_quantum[:, None] * u_max).ravel()) + math.fsum(load_pen.ravel()))
    coefficients = [columns.cost, b.penalty[optional], sv.rent[m_max > 0],
                    sv.transfer_per_quantum[used.any(axis=1)], sv.penalty_per_quantum]
    whole = all(bool(np.all(c == np.round(c))) for c in coefficients)
    if whole and total <= OBJECTIVE_SUM_LIMIT:
        scale = 1.0
    else:
        exponent = min(math.floor(math.log10(OBJECTIVE_UNITS_LIMIT) - math.log10(max(worst, 1e-300))),
                       math.floor(math.log10(OBJECTIVE_SUM_LIMIT) - math.log10(max(total, 1e-300))), 9)
        scale = 10.0**exponent
    cost_int, cost_err = _round(columns.cost, scale)
    penalty_int, penalty_err = _round(b.penalty, scale)
    rent_int, rent_err = _round(sv.rent, scale)
    transfer_int, transfer_err = _round(sv.transfer_per_quantum, scale)
    load_penalty_int, load_penalty_err = _round(sv.penalty_per_quantum, scale)
    # Batch: each demand takes one alternative, so its error is at most its worst kept one's.
    worst_err = np.where(optional, penalty_err, 0.0)
    if has.any():
        worst_err[has] = np.maximum(worst_err[has], np.maximum.reduceat(cost_err, columns.start_of[:-1][has]))
    # Services: every replica may be off by its rent's error; each load quantum is served
    # somewhere or unserved, and is off by at most the larger of those errors.
    quantum_err = np.zeros(sv.load.shape)
    if len(sv.pool):
        np.maximum.at(quantum_err, service, np.where(used, transfer_err[:, None], 0.0))
    quantum_err = np.maximum(quantum_err, load_penalty_err[:, None])
    error = (math.fsum(worst_err) + math.fsum((rent_err * m_max).ravel())
             + math.fsum((quantum_err * sv.load).ravel()))
    return TimedScaling(scale, cost_int, penalty_int, rent_int, transfer_int, load_penalty_int, error)


# -- the objective of a choice, in floating point ------------------------------------------------


def choice_objective(problem: TimedProblem, choice: TimedChoice) -> float:
    """Σ start costs + penalties of unserved batch demands + replica rents, transfer and penalties of
    unserved load: the true objective, never read back from the integer model."""
    b, sv = problem.batch, problem.services
    served_batch = choice.option >= 0
    cost = problem.evaluate(choice.option[served_batch], choice.start_slot[served_batch])[0]
    terms = cost.tolist() + b.penalty[~served_batch].tolist()
    if len(sv.rows):
        served = np.zeros(sv.load.shape, dtype=np.int64)
        service = np.repeat(np.arange(len(sv.rows)), np.diff(sv.start))
        np.add.at(served, service, choice.served)
        terms.extend((sv.rent * choice.replicas).ravel().tolist())
        terms.extend((sv.transfer_per_quantum[:, None] * choice.served).ravel().tolist())
        terms.extend((sv.penalty_per_quantum[:, None] * (sv.load - served)).ravel().tolist())
    return math.fsum(terms)


# -- the engine ----------------------------------------------------------------------------------


class _Rows:
    """Terms of the capacity rows, collected per (resource, slot) before the rows are written."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.row: list[np.ndarray] = []
        self.var: list[np.ndarray] = []
        self.coeff: list[np.ndarray] = []
        self.top: list[np.ndarray] = []

    def add(self, row: np.ndarray, var: np.ndarray, coeff: np.ndarray, top: np.ndarray) -> None:
        """Terms coeff * var (var at most ``top``) on the rows with flat index ``row``."""
        self.row.append(row.astype(np.int64))
        self.var.append(var.astype(np.int64))
        self.coeff.append(coeff.astype(np.int64))
        self.top.append(top.astype(np.int64))

    def write(self, model, variables: list, capacity: np.ndarray) -> int:
        """One row per (resource, slot) whose terms could pass its capacity; returns rows written."""
        from ortools.sat.python import cp_model

        if not self.row:
            return 0
        row, var, coeff, top = (np.concatenate(a) for a in (self.row, self.var, self.coeff, self.top))
        keep = coeff > 0
        row, var, coeff, top = row[keep], var[keep], coeff[keep], top[keep]
        order = np.argsort(row, kind="stable")
        row, var, coeff, top = row[order], var[order], coeff[order], top[order]
        most = np.bincount(row, weights=(coeff * top).astype(np.float64), minlength=capacity.size)
        bounds = np.searchsorted(row, np.arange(capacity.size + 1))
        flat = capacity.ravel()
        written = 0
        for r in np.flatnonzero(most > flat):
            lo, hi = bounds[r], bounds[r + 1]
            expr = cp_model.LinearExpr.weighted_sum([variables[i] for i in var[lo:hi]], coeff[lo:hi].tolist())
            model.add_linear_constraint(expr, 0, int(flat[r]))
            written += 1
        return written


CARBON_UNITS_LIMIT = 1e18
"""The largest activity of a placement's grams row (CP-SAT refuses a row that could pass 4.6e18)."""


def placement_grams(problem: TimedProblem, replicas: np.ndarray) -> np.ndarray:
    """int64 [J]: each placement's emissions over the horizon in whole grams, rounded up once (§8.1)."""
    if not len(replicas):
        return np.zeros(0, dtype=np.int64)
    return grams_up((replicas * problem.services.co2_kg).sum(axis=1))


def choice_grams(problem: TimedProblem, choice: TimedChoice) -> int:
    """What a choice weighs against the carbon cap: each start and each placement rounded up."""
    served = choice.option >= 0
    co2 = problem.evaluate(choice.option[served], choice.start_slot[served])[1]
    return int(grams_up(co2).sum()) + int(placement_grams(problem, choice.replicas).sum())


@dataclass(eq=False)
class _Model:
    """A built CP-SAT model and where its variables are (flat indices into ``variables``)."""

    model: object
    variables: list
    x: np.ndarray  # [C]
    y_of: np.ndarray  # [batch], -1 for must-serve
    m_of: np.ndarray  # [J * S], -1 where absent
    u_of: np.ndarray  # [J * S]
    v_of: np.ndarray  # [services * S]
    g_of: np.ndarray  # [J]: a placement's grams, -1 where it emits nothing or there is no cap
    pool_rows: int = 0
    link_rows: int = 0


def _build(problem: TimedProblem, columns: BatchColumns, m_max: np.ndarray, u_max: np.ndarray,
           sc: TimedScaling, *, outer_grams: bool) -> _Model:
    """The CP-SAT model of §8.4. A placement's grams ``g[j] = ceil(sum_t m[j,t] w[j,t])`` (w: grams
    of a replica in slot t) are written with the weights in units of ``1/D`` gram: rounded down
    (``outer_grams`` False: a relaxation, every plan of §8.4 stays feasible) or up (True: every
    plan of the model keeps the cap; used only where the relaxed plan does not)."""
    from ortools.sat.python import cp_model

    b, sv = problem.batch, problem.services
    n_batch, n_options, S = len(b.rows), len(sv.pool), problem.slots
    model = cp_model.CpModel()
    variables: list = []  # every variable, by flat index (the rows refer to these)
    objective_coeffs: list[int] = []

    def new_vars(upper: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        first = len(variables)
        for ub in upper.tolist():
            variables.append(model.new_bool_var("") if ub == 1 else model.new_int_var(0, ub, ""))
        objective_coeffs.extend(np.asarray(coeffs, dtype=np.int64).tolist())
        return np.arange(first, len(variables), dtype=np.int64)

    # x[d,p,s]: one boolean per kept column.
    n_columns = len(columns.option)
    x = new_vars(np.ones(n_columns, dtype=np.int64), sc.cost_int)
    # y[d]: one boolean per optional batch demand.
    optional = np.flatnonzero(~b.must_serve)
    y_of = np.full(n_batch, -1, dtype=np.int64)
    y_of[optional] = new_vars(np.ones(len(optional), dtype=np.int64), sc.penalty_int[optional])
    # m[j,t] and u[j,t]: replicas and served quanta where some optimal plan may use them.
    live = np.flatnonzero((u_max > 0).ravel())
    m_of = np.full(n_options * S, -1, dtype=np.int64)
    u_of = np.full(n_options * S, -1, dtype=np.int64)
    m_of[live] = new_vars(m_max.ravel()[live], sc.rent_int.ravel()[live])
    u_of[live] = new_vars(u_max.ravel()[live], np.repeat(sc.transfer_int, S)[live])
    # v[e,t]: unserved load quanta of service e in slot t.
    n_services = len(sv.rows)
    loaded = np.flatnonzero((sv.load > 0).ravel())
    v_of = np.full(n_services * S, -1, dtype=np.int64)
    v_of[loaded] = new_vars(sv.load.ravel()[loaded], np.repeat(sc.load_penalty_int, S)[loaded])
    # g[j]: whole grams of placement j over the horizon (only under a carbon cap).
    g_of = np.full(n_options, -1, dtype=np.int64)
    g_top = np.zeros(n_options, dtype=np.int64)
    weights = np.zeros((n_options, S))
    if problem.carbon_cap_g is not None and n_options:
        weights = np.where(m_max > 0, sv.co2_kg * 1000.0, 0.0)
        emitting = np.flatnonzero((weights * m_max).sum(axis=1) > 0)
        g_top[emitting] = np.ceil((weights * m_max).sum(axis=1)[emitting]).astype(np.int64) + 1
        g_of[emitting] = new_vars(g_top[emitting], np.zeros(len(emitting), dtype=np.int64))

    # One alternative per batch demand: a start on some pool, or (if optional) unserved.
    for d in range(n_batch):
        alternatives = [variables[i] for i in x[columns.start_of[d] : columns.start_of[d + 1]]]
        if y_of[d] >= 0:
            alternatives.append(variables[y_of[d]])
        model.add_exactly_one(alternatives)

    # Replicas serve at most kappa quanta each: u[j,t] <= kappa[j] m[j,t].
    for i in live.tolist():
        model.add(variables[u_of[i]] <= int(sv.kappa[i // S]) * variables[m_of[i]])

    # Served plus unserved load is the slot's load: sum_j u[j,t] + v[e,t] = Lq[e,t].
    for i in loaded.tolist():
        e, t = divmod(i, S)
        terms = [variables[u_of[j * S + t]] for j in range(int(sv.start[e]), int(sv.start[e + 1]))
                 if u_of[j * S + t] >= 0]
        model.add(sum(terms) + variables[v_of[i]] == int(sv.load[e, t]))

    # Pool-slot GPUs: gang of every job running in slot t, plus gang of every replica.
    col_demand = np.repeat(np.arange(n_batch), np.diff(columns.start_of))
    col_slots = b.slots[columns.option].astype(np.int64)
    col_pool = b.pool[columns.option].astype(np.int64)
    col_gang = b.gang[col_demand].astype(np.int64)
    pool_rows = _Rows(problem.avail.shape)
    held = np.repeat(np.arange(n_columns), col_slots)
    offset = np.arange(len(held)) - np.repeat(np.cumsum(col_slots) - col_slots, col_slots)
    pool_rows.add(col_pool[held] * S + columns.start[held] + offset, x[held], col_gang[held],
                  np.ones(len(held), dtype=np.int64))
    if len(live):
        j_live, t_live = live // S, live % S
        pool_rows.add(sv.pool[j_live].astype(np.int64) * S + t_live, m_of[live],
                      sv.gang[sv.service[j_live]].astype(np.int64), m_max.ravel()[live])
    written_pool = pool_rows.write(model, variables, problem.avail)

    # Link-slot bandwidth: each moving job's rate on its route's links in slots rel..s-1, plus
    # tau per served quantum of every service placed away from its origin.
    link_rows = _Rows(problem.bandwidth.shape)
    route_of = b.route[columns.option].astype(np.int64)
    for c in np.flatnonzero((route_of >= 0) & (columns.rate > 0)).tolist():
        rel, s = int(b.release[col_demand[c]]), int(columns.start[c])
        links = np.asarray(problem.routes[route_of[c]], dtype=np.int64)
        slots = np.arange(rel, s, dtype=np.int64)
        rows = (links[:, None] * S + slots[None, :]).ravel()
        link_rows.add(rows, np.full(len(rows), x[c]), np.full(len(rows), columns.rate[c]),
                      np.ones(len(rows), dtype=np.int64))
    for i in live.tolist():
        j, t = divmod(i, S)
        if sv.route[j] < 0 or sv.tau[j] == 0:
            continue
        links = np.asarray(problem.routes[int(sv.route[j])], dtype=np.int64)
        link_rows.add(links * S + t, np.full(len(links), u_of[i]), np.full(len(links), sv.tau[j]),
                      np.full(len(links), u_max.ravel()[i]))
    written_link = link_rows.write(model, variables, problem.bandwidth)

    # Carbon cap, in whole grams: each start rounded up, and each placement over the horizon
    # rounded up once, D g[j] >= sum_t W[j,t] m[j,t] - 1 with W = floor(D w) (or ceil, and no -1).
    if problem.carbon_cap_g is not None:
        for j in np.flatnonzero(g_of >= 0).tolist():
            ts = np.flatnonzero(m_of[j * S : (j + 1) * S] >= 0)
            most = float((weights[j] * m_max[j]).sum())
            unit = 10.0 ** max(0, min(9, math.floor(math.log10(CARBON_UNITS_LIMIT / (2 * most + 2)))))
            scaled = np.ceil(weights[j, ts] * unit) if outer_grams else np.floor(weights[j, ts] * unit)
            terms = [variables[m_of[j * S + t]] for t in ts.tolist()]
            expr = cp_model.LinearExpr.weighted_sum([variables[g_of[j]], *terms],
                                                    [int(unit), *(-scaled.astype(np.int64)).tolist()])
            model.add(expr >= (0 if outer_grams else -1))
        index = np.concatenate([x, g_of[g_of >= 0]])
        coeffs = np.concatenate([columns.grams, np.ones(int((g_of >= 0).sum()), dtype=np.int64)])
        tops = np.concatenate([np.ones(n_columns, dtype=np.int64), g_top[g_of >= 0]])
        if float((coeffs * tops).sum()) > problem.carbon_cap_g:
            model.add_linear_constraint(
                cp_model.LinearExpr.weighted_sum([variables[i] for i in index], coeffs.tolist()),
                0, int(problem.carbon_cap_g))

    # Objective: the scaled costs of every alternative.
    model.minimize(cp_model.LinearExpr.weighted_sum(variables, objective_coeffs))
    return _Model(model, variables, x, y_of, m_of, u_of, v_of, g_of, written_pool, written_link)


def solve_timed_exact(
    problem: TimedProblem,
    params: SolveParams,
    *,
    hint: TimedChoice | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> EngineResult:
    """Solve the time-expanded problem with CP-SAT within ``params.time_limit_s``.

    Raises RangeError (a ValueError; exit 2 in the CLI) when the model would pass MAX_VARIABLES
    (the large engine's job).
    """
    from ortools.sat.python import cp_model

    started = time.perf_counter()
    check_model_size(problem)
    b = problem.batch
    columns = batch_columns(problem)
    m_max, u_max = replica_bounds(problem)
    sc = timed_scaling(problem, columns, m_max, u_max)
    scale, error = sc.scale, sc.rounding_bound
    common_scale = dict(cost_scale=scale, rounding_bound_cny=error)
    stranded = b.must_serve & (np.diff(columns.start_of) == 0)
    if stranded.any():
        return EngineResult(None, Status.INFEASIBLE, None, "a must-serve demand has no start that fits",
                            **common_scale)

    built = _build(problem, columns, m_max, u_max, sc, outer_grams=False)
    if hint is not None:
        _add_hint(built, problem, columns, hint, m_max, u_max)
    progress = _Reporter(on_progress, started, scale, error)
    code, solver, workers = _run(built, params, started, progress, stop)
    name = solver.status_name(code)
    details = {"variables": len(built.variables), "columns": len(columns.option),
               "pool_rows": built.pool_rows, "link_rows": built.link_rows,
               "conflicts": solver.num_conflicts, "branches": solver.num_branches,
               "cp_sat_wall_s": solver.wall_time}
    common = dict(solver_status=name, first_solution_s=progress.first, workers=workers, details=details,
                  **common_scale)
    if code == cp_model.INFEASIBLE:
        return EngineResult(None, Status.INFEASIBLE, None, **common)
    if code == cp_model.MODEL_INVALID:
        raise RuntimeError(f"CP-SAT rejected the model: {built.model.validate()}")
    # The relaxed model's bound holds for §8.4: its grams rows admit every plan of §8.4.
    bound = solver.best_objective_bound / scale - error
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return EngineResult(None, Status.UNKNOWN, bound, **common)
    choice = _read_choice(problem, columns, built, np.asarray(solver.response_proto.solution, dtype=np.int64))
    cap = problem.carbon_cap_g
    if cap is not None and choice_grams(problem, choice) > cap:
        # The relaxed grams let a placement sit within 1/D gram below a whole gram: solve again
        # with the weights rounded up, which every plan keeps (rare: float-noise margins only).
        details["outer_grams"] = 1
        outer = _build(problem, columns, m_max, u_max, sc, outer_grams=True)
        code, solver, _ = _run(outer, params, started, progress, stop)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return EngineResult(None, Status.UNKNOWN, bound, **common)
        choice = _read_choice(problem, columns, outer, np.asarray(solver.response_proto.solution, dtype=np.int64))
    # Optimal means a relative gap of at most OPTIMAL_GAP against the true objective (§4).
    gap = relative_gap(choice_objective(problem, choice), bound)
    status = Status.OPTIMAL if gap is not None and gap <= OPTIMAL_GAP else Status.FEASIBLE
    return EngineResult(choice, status, bound, **common)


def _run(built: _Model, params: SolveParams, started: float, progress: _Reporter,
         stop: threading.Event | None):
    """Solve a built model within what is left of the time limit: (status code, solver, workers)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    remaining = params.time_limit_s - (time.perf_counter() - started)
    solver.parameters.max_time_in_seconds = max(remaining, 0.1)
    workers = configure(solver.parameters, params)
    solver.best_bound_callback = lambda bound: progress.report(None, bound, "bound")
    with StopWatcher(stop, solver.stop_search):
        code = solver.solve(built.model, _solution_callback(progress))
    return code, solver, workers


def _read_choice(problem: TimedProblem, columns: BatchColumns, built: _Model, values: np.ndarray) -> TimedChoice:
    """The solver's values as a TimedChoice (variables were created in index order)."""
    n_batch = len(problem.batch.rows)
    option = np.full(n_batch, -1, dtype=np.int64)
    start = np.full(n_batch, -1, dtype=np.int32)
    chosen = np.flatnonzero(values[built.x] > 0)
    owner = np.searchsorted(columns.start_of, chosen, side="right") - 1
    option[owner] = columns.option[chosen]
    start[owner] = columns.start[chosen]
    shape = (len(problem.services.pool), problem.slots)

    def read(where: np.ndarray) -> np.ndarray:
        if not where.size:
            return np.zeros(shape, dtype=np.int64)
        return np.where(where >= 0, values[np.maximum(where, 0)], 0).reshape(shape).astype(np.int64)

    return TimedChoice(option, start, read(built.m_of), read(built.u_of))


def _add_hint(built: _Model, problem: TimedProblem, columns: BatchColumns, hint: TimedChoice,
              m_max: np.ndarray, u_max: np.ndarray) -> None:
    """Hint every variable from a known choice (values clipped to the variables' ranges)."""
    model, variables, sv, S = built.model, built.variables, problem.services, problem.slots
    col_demand = np.repeat(np.arange(len(problem.batch.rows)), np.diff(columns.start_of))
    picked = (hint.option[col_demand] == columns.option) & (hint.start_slot[col_demand] == columns.start)
    for i, on in zip(built.x.tolist(), picked.tolist(), strict=True):
        model.add_hint(variables[i], on)
    for d, i in enumerate(built.y_of.tolist()):
        if i >= 0:
            model.add_hint(variables[i], bool(hint.option[d] < 0))
    replicas = np.clip(hint.replicas, 0, m_max)
    served = np.clip(np.minimum(hint.served, replicas * sv.kappa[:, None]), 0, u_max)
    for i in np.flatnonzero(built.m_of >= 0).tolist():
        model.add_hint(variables[built.m_of[i]], int(replicas.ravel()[i]))
        model.add_hint(variables[built.u_of[i]], int(served.ravel()[i]))
    for i in np.flatnonzero(built.v_of >= 0).tolist():
        e, t = divmod(i, S)
        total = int(served[int(sv.start[e]) : int(sv.start[e + 1]), t].sum())
        model.add_hint(variables[built.v_of[i]], max(int(sv.load[e, t]) - total, 0))
    grams = placement_grams(problem, replicas)
    for j in np.flatnonzero(built.g_of >= 0).tolist():
        model.add_hint(variables[built.g_of[j]], int(grams[j]))


class _Reporter:
    """Sends incumbents and bounds, mapped back to CNY, to ``on_progress``; notes the first solution."""

    def __init__(self, on_progress, started: float, scale: float, error: float):
        self.on_progress, self.started, self.scale, self.error = on_progress, started, scale, error
        self.first: float | None = None

    def report(self, objective: float | None, bound: float | None, message: str) -> None:
        if message == "solution" and self.first is None:
            self.first = time.perf_counter() - self.started
        if self.on_progress is None:
            return
        lb = None if bound is None else bound / self.scale - self.error
        gap = None
        if objective is not None and lb is not None:
            gap = max(0.0, objective - lb) / max(abs(objective), 1.0)
        self.on_progress(Progress("exact", time.perf_counter() - self.started, objective, lb, gap, message))


def _solution_callback(progress: _Reporter):
    """A CP-SAT solution callback that reports each incumbent (and the bound at that moment)."""
    from ortools.sat.python import cp_model

    class SolutionCallback(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            progress.report(self.objective_value / progress.scale, self.best_objective_bound, "solution")

    return SolutionCallback()
