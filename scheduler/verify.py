"""The independent verifier: recompute a plan from the instance alone and list what is wrong.

This is a second implementation of `docs/formulation.md`, written apart from the engines. It uses
only the standard library and the data model (`models`), so a bug shared with the engines would
have to be written twice. `verify` never raises on a bad plan; every problem becomes a `Violation`.

Violation codes (``subject`` is a demand id, a pool id, or a plan field such as ``objective``):

* ``unknown_demand``, ``unknown_pool``, ``unknown_region``: the plan names an id the instance lacks
  (amount 1).
* ``pool_region_mismatch``: an assignment or pool-usage row puts a pool in a region that does not
  hold it (amount 1).
* ``duplicate_demand``: a demand listed more than once (amount: the extra entries).
* ``duplicate_pool``: a pool with more than one usage row (amount: the extra rows).
* ``missing_demand``: a demand neither assigned nor unserved (amount 1).
* ``missing_pool_usage``: a pool with load but no usage row (amount: its load in GPU-hours).
* ``must_serve_unserved``: a must-serve demand left unserved by a solved plan (amount 1).
* ``ineligible:<rule>``: an assignment that fails eligibility rule ``<rule>`` (one of
  `models.RULES`, the first it fails). Amount in the rule's unit: ``gang`` GPUs short,
  ``memory`` GB short, ``latency`` ms over, ``deadline`` hours over, ``price_cap`` CNY over;
  1 for the yes/no rules.
* ``over_capacity``: a pool loaded beyond its capacity (amount: the excess in GPU-hours).
* ``mismatch:<field>``: a reported figure that differs from its recomputation beyond
  ``1e-6 + 1e-9 * |value|``, or is null where a number is due, or a number where null is due
  (amount: the absolute difference, or the absolute value present / due; 1 for non-numeric
  fields). Fields: the `Assignment` figures (``precision``, ``gpu_hours``, ``latency_ms``,
  ``energy_kwh``, ``co2_kg``, ``compute_cny``, ``energy_cny``, ``transfer_cny``, ``carbon_cny``,
  ``cost_cny``), the `Unserved` ones (``penalty_cny``, ``work_pflop``), the `PoolUsage` ones
  (``accelerator``, ``used_gpu_hours``, ``capacity_gpu_hours``, ``utilization``), the
  `CostBreakdown` ones as ``costs.<field>``, and ``objective``, ``lower_bound``, ``gap``.
* ``assignment_without_solution``: an assignment in a plan whose status is infeasible or unknown
  (amount 1).
* ``lower_bound_above_objective``: the lower bound exceeds the recomputed objective (amount: by how
  much).
* ``optimal_gap_exceeded``: a plan reported ``optimal`` whose recomputed gap (from the recomputed
  objective and the reported lower bound, or with no bound at all) exceeds `models.OPTIMAL_GAP`
  (amount: the recomputed gap minus OPTIMAL_GAP; 1 when there is no bound).
* ``wrong_reason``: an unserved reason that contradicts the data (amount 1).
* ``instance_mismatch``: the plan names another instance (amount 1).

Readings where the spec leaves room:

* The recomputed objective sums every entry as listed (a duplicate counts twice); an assignment
  whose usage or route cannot be computed (unknown ids, ``no_offer``, no run precision,
  ``unreachable``) adds neither load nor cost.
* A pool without load may be left out of ``pools``; ``utilization`` is used / capacity (a
  fraction), unchecked for a pool of zero capacity.
* A set allow-list (``accelerators``, ``jurisdictions``) is one that is not null: empty allows
  nothing.
* In an infeasible or unknown plan, must-serve demands may be unserved (every demand is), and the
  breakdown's ``unserved_penalty_cny`` may be 0 or the sum of the penalties.
* An unserved ``work_pflop`` is checked only when given.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque

from models import (
    INTRA_REGION_LATENCY_MS,
    OPTIMAL_GAP,
    PRECISION_FALLBACKS,
    QUANTUM_SLACK,
    RULES,
    Demand,
    Instance,
    Plan,
    Reason,
    Status,
    Verification,
    Violation,
)

# Rule numbers, as indices into models.RULES.
_NO_OFFER, _GANG, _ACCELERATOR, _MEMORY, _PRECISION = 0, 1, 2, 3, 4
_JURISDICTION, _UNREACHABLE, _LATENCY, _DEADLINE, _WINDOW, _PRICE_CAP = 5, 6, 7, 8, 9, 10
_PASS = -1
_TERMS = ("compute", "energy", "transfer", "carbon", "energy_kwh", "co2_kg", "cost")
_CACHE_LIMIT = 20_000


def _tol(value: float) -> float:
    """The spec's tolerance for comparing a reported figure with its recomputation."""
    return 1e-6 + 1e-9 * abs(value)


def _close(reported: float, expected: float) -> bool:
    return abs(reported - expected) <= _tol(expected)


def _gap(objective: float, lower_bound: float | None) -> float | None:
    """formulation §5: (objective - lower_bound) / max(|objective|, 1), never below 0."""
    if lower_bound is None:
        return None
    return max(0.0, objective - lower_bound) / max(abs(objective), 1.0)


class _Pool:
    """One pool with its region's constants, flattened for the hot loop."""

    __slots__ = (
        "index", "id", "region", "accelerator", "gpu_count", "memory", "tflops", "power",
        "price", "pue", "electricity", "carbon", "jurisdiction",
    )

    def __init__(self, index, region, pool):
        self.index = index
        self.id = pool.id
        self.region = region.id
        self.accelerator = pool.accelerator
        self.gpu_count = pool.gpu_count
        self.memory = pool.memory_gb_per_gpu
        self.tflops = pool.tflops_by_precision
        self.power = pool.power_kw_per_gpu
        self.price = pool.price_cny_per_gpu_hour
        self.pue = region.pue
        self.electricity = region.electricity_price_cny_per_kwh
        self.carbon = region.carbon_g_co2_per_kwh
        self.jurisdiction = region.jurisdiction


def _routes_from(origin: str, adjacency: dict) -> dict[str, tuple[float, float]]:
    """Lexicographic (latency, transfer cost) distances from `origin`, by label correcting.

    A FIFO queue of regions whose label improved; each pops and relaxes its links until no label
    improves (Bellman-Ford order). Unreachable regions are absent from the result.
    """
    label: dict[str, tuple[float, float]] = {origin: (0.0, 0.0)}
    queue = deque([origin])
    queued = {origin}
    while queue:
        u = queue.popleft()
        queued.discard(u)
        lat_u, cost_u = label[u]
        for v, lat, cost in adjacency.get(u, ()):
            candidate = (lat_u + lat, cost_u + cost)
            old = label.get(v)
            if old is None or candidate < old:
                label[v] = candidate
                if v not in queued:
                    queued.add(v)
                    queue.append(v)
    label[origin] = (INTRA_REGION_LATENCY_MS, 0.0)
    return label


def _run_precision(d: Demand, tflops: dict):
    """The precision `d` runs at on a pool with these TFLOPS, or None (rule `precision`)."""
    if d.precision in tflops:
        return d.precision
    if d.strict_precision:
        return None
    for fallback in PRECISION_FALLBACKS[d.precision]:
        if fallback in tflops:
            return fallback
    return None


def _static_rule(d: Demand, p: _Pool, routes: dict):
    """Rules 2 to 8 (those that do not depend on usage): (rule or _PASS, amount, run precision)."""
    if p.gpu_count < d.gang_size:
        return _GANG, float(d.gang_size - p.gpu_count), None
    if d.accelerators is not None and p.accelerator not in d.accelerators:
        return _ACCELERATOR, 1.0, None
    if p.memory < d.min_memory_gb_per_gpu:
        return _MEMORY, d.min_memory_gb_per_gpu - p.memory, None
    precision = _run_precision(d, p.tflops)
    if precision is None:
        return _PRECISION, 1.0, None
    if d.jurisdictions is not None and p.jurisdiction not in d.jurisdictions:
        return _JURISDICTION, 1.0, precision
    route = routes.get(p.region)
    if route is None:
        return _UNREACHABLE, 1.0, precision
    if d.max_latency_ms is not None and route[0] > d.max_latency_ms:
        return _LATENCY, route[0] - d.max_latency_ms, precision
    return _PASS, 0.0, precision


class _Figures:
    """An option's usage and cost, computed literally as in the spec."""

    __slots__ = (
        "units", "usage", "runtime", "energy_kwh", "co2_kg", "compute", "energy", "transfer",
        "carbon", "cost", "price",
    )

    def __init__(self, d, p, offer, precision, transfer, q, w):
        if offer is not None:
            raw = offer.gpu_hours
        else:
            raw = d.work_pflop * 1000 / (p.tflops[precision] * 3600)
        self.units = max(1, math.ceil(raw / q - QUANTUM_SLACK))
        usage = self.units * q
        self.usage = usage
        self.runtime = usage / d.gang_size
        if offer is not None:
            compute_raw = offer.price_cny
        else:
            compute_raw = usage * p.price
        energy_kwh = usage * p.power * p.pue
        energy_raw = 0.0 if offer is not None else energy_kwh * p.electricity
        co2_kg = energy_kwh * p.carbon / 1000
        transfer_raw = d.data_gb * transfer
        self.price = compute_raw + energy_raw + transfer_raw
        self.energy_kwh = energy_kwh
        self.co2_kg = co2_kg
        self.compute = w.compute * compute_raw
        self.energy = w.energy * energy_raw
        self.transfer = w.transfer * transfer_raw
        self.carbon = co2_kg / 1000 * w.carbon_price_cny_per_t_co2
        self.cost = self.compute + self.energy + self.transfer + self.carbon


def _usage_rule(d: Demand, f: _Figures):
    """Rules 9 and 10 (deadline, price cap): (rule or _PASS, amount)."""
    if d.deadline_hours is not None and f.runtime > d.deadline_hours:
        return _DEADLINE, f.runtime - d.deadline_hours
    if d.max_cost_cny is not None and f.price > d.max_cost_cny:
        return _PRICE_CAP, f.price - d.max_cost_cny
    return _PASS, 0.0


def _option(d: Demand, p: _Pool, offer, routes: dict, q: float, w):
    """One option in full: (first failed rule or _PASS, amount, run precision, figures or None).

    The figures exist whenever usage and transfer can be computed, even for an ineligible option.
    """
    if d.work_pflop is None and offer is None:
        return _NO_OFFER, 1.0, None, None
    rule, amount, precision = _static_rule(d, p, routes)
    if precision is None:
        precision = _run_precision(d, p.tflops)
    route = routes.get(p.region)
    if route is None or (offer is None and precision is None):
        return rule, amount, precision, None
    f = _Figures(d, p, offer, precision, route[1], q, w)
    if rule == _PASS:
        rule, amount = _usage_rule(d, f)
    return rule, amount, precision, f


class _Checker:
    """The instance, indexed once, and the violations found so far."""

    def __init__(self, instance: Instance):
        self.inst = instance
        self.q = instance.gpu_hour_quantum
        self.w = instance.weights
        self.demands = {d.id: d for d in instance.demands}
        self.regions = {r.id: r for r in instance.regions}
        self.pools: list[_Pool] = []
        for region in instance.regions:
            for pool in region.pools:
                self.pools.append(_Pool(len(self.pools), region, pool))
        self.pool_by_id = {p.id: p for p in self.pools}
        self.offers = {(o.demand, o.pool): o for o in instance.offers}
        self.offers_by_demand: dict[str, list] = defaultdict(list)
        for o in instance.offers:
            self.offers_by_demand[o.demand].append(o)
        self.adjacency: dict[str, list] = defaultdict(list)
        for link in instance.links:
            lat, cost = link.latency_ms, link.transfer_cost_cny_per_gb
            self.adjacency[link.source].append((link.target, lat, cost))
            self.adjacency[link.target].append((link.source, lat, cost))
        self._routes: dict[str, dict] = {}
        self._static_cache: dict[tuple, tuple] = {}
        self.out: list[Violation] = []

    def flag(self, code: str, subject: str, amount: float, message: str) -> None:
        self.out.append(
            Violation(code=code, subject=subject, amount=float(amount), message=message)
        )

    def figure(self, field: str, subject: str, reported, expected) -> None:
        """Flag a numeric figure that is missing, unexpected, or off by more than the tolerance."""
        if reported is None and expected is None:
            return
        if reported is None:
            self.flag(
                f"mismatch:{field}", subject, abs(expected),
                f"{field} is null, expected {expected!r}",
            )
        elif expected is None:
            self.flag(
                f"mismatch:{field}", subject, abs(reported),
                f"{field} is {reported!r}, expected null",
            )
        elif not _close(reported, expected):
            self.flag(
                f"mismatch:{field}", subject, abs(reported - expected),
                f"{field} is {reported!r}, recomputed {expected!r}",
            )

    def routes(self, origin: str) -> dict:
        table = self._routes.get(origin)
        if table is None:
            table = self._routes[origin] = _routes_from(origin, self.adjacency)
        return table

    def _static_table(self, d: Demand, routes: dict) -> tuple:
        """Rules 2 to 8 for every pool, shared by demands alike in what those rules read.

        Returns (per pool: rule or _PASS, the largest rule failed, the passing pools with their
        run precision and transfer price).
        """
        key = (
            d.origin, d.gang_size, d.accelerators, d.min_memory_gb_per_gpu, d.precision,
            d.strict_precision, d.jurisdictions, d.max_latency_ms,
        )
        table = self._static_cache.get(key)
        if table is None:
            if len(self._static_cache) >= _CACHE_LIMIT:
                self._static_cache.clear()
            rules, passing = [], []
            for p in self.pools:
                rule, _, precision = _static_rule(d, p, routes)
                rules.append(rule)
                if rule == _PASS:
                    passing.append((p, precision, routes[p.region][1]))
            table = self._static_cache[key] = (rules, max(rules), passing)
        return table

    def scan(self, d: Demand) -> tuple[int, float | None]:
        """The demand's nearest miss (largest first-failed rule) and its cheapest eligible cost."""
        routes = self.routes(d.origin)
        rules, worst, passing = self._static_table(d, routes)
        offers = self.offers_by_demand.get(d.id, ())
        if d.work_pflop is None:  # only offered pools pass rule 1
            worst = _NO_OFFER if len(offers) < len(self.pools) else _PASS
            by_pool = {o.pool: o for o in offers}
            passing = [item for item in passing if item[0].id in by_pool]
            for o in offers:
                worst = max(worst, rules[self.pool_by_id[o.pool].index])
        cheapest = None
        for p, precision, transfer in passing:
            offer = self.offers.get((d.id, p.id)) if offers else None
            f = _Figures(d, p, offer, precision, transfer, self.q, self.w)
            rule = _usage_rule(d, f)[0]
            if rule == _PASS:
                if cheapest is None or f.cost < cheapest:
                    cheapest = f.cost
            elif rule > worst:
                worst = rule
        return worst, cheapest

    def penalty(self, d: Demand) -> float:
        return self.w.unserved * d.priority * d.unserved_penalty_cny


def verify(instance: Instance, plan: Plan) -> Verification:
    """Recompute `plan` from `instance` per docs/formulation.md and report every violation."""
    c = _Checker(instance)
    q = c.q
    solved = plan.status in (Status.OPTIMAL, Status.FEASIBLE)
    if plan.instance != instance.name:
        c.flag(
            "instance_mismatch", "instance", 1,
            f"plan answers '{plan.instance}', not '{instance.name}'",
        )

    seen: Counter[str] = Counter()
    load, terms = _check_assignments(c, plan, solved, seen)
    penalties = _check_unserved(c, plan, solved, seen)

    for demand_id, count in seen.items():
        if count > 1:
            c.flag(
                "duplicate_demand", demand_id, count - 1,
                f"'{demand_id}' is listed {count} times",
            )
    for d in instance.demands:
        if d.id not in seen:
            c.flag("missing_demand", d.id, 1, f"'{d.id}' is neither assigned nor unserved")

    window = instance.window_hours
    capacity = [math.floor(p.gpu_count * window / q + QUANTUM_SLACK) for p in c.pools]
    for p in c.pools:
        if load[p.index] > capacity[p.index]:
            excess = (load[p.index] - capacity[p.index]) * q
            c.flag(
                "over_capacity", p.id, excess,
                f"load {load[p.index]} quanta on capacity {capacity[p.index]}: "
                f"over by {excess!r} GPU-hours",
            )
    _check_pool_rows(c, plan, load, capacity)

    objective = math.fsum(terms["cost"] + penalties) if solved else None
    expected_penalty = math.fsum(penalties)
    if not solved and plan.costs.unserved_penalty_cny == 0.0:
        expected_penalty = 0.0  # an unsolved plan may leave its breakdown empty
    br = plan.costs
    c.figure("costs.compute_cny", "costs", br.compute_cny, math.fsum(terms["compute"]))
    c.figure("costs.energy_cny", "costs", br.energy_cny, math.fsum(terms["energy"]))
    c.figure("costs.transfer_cny", "costs", br.transfer_cny, math.fsum(terms["transfer"]))
    c.figure("costs.carbon_cny", "costs", br.carbon_cny, math.fsum(terms["carbon"]))
    c.figure("costs.unserved_penalty_cny", "costs", br.unserved_penalty_cny, expected_penalty)
    c.figure("costs.energy_kwh", "costs", br.energy_kwh, math.fsum(terms["energy_kwh"]))
    c.figure("costs.co2_t", "costs", br.co2_t, math.fsum(terms["co2_kg"]) / 1000)

    c.figure("objective", "objective", plan.objective, objective)
    if solved:
        lb = plan.lower_bound
        if lb is not None and lb - objective > _tol(objective):
            c.flag(
                "lower_bound_above_objective", "lower_bound", lb - objective,
                f"lower bound {lb!r} above the objective {objective!r}",
            )
        gap = _gap(objective, lb)
        c.figure("gap", "gap", plan.gap, gap)
        if plan.status == Status.OPTIMAL and (gap is None or gap > OPTIMAL_GAP):
            excess = 1.0 if gap is None else gap - OPTIMAL_GAP
            shown = "no lower bound" if gap is None else f"gap {gap!r}"
            c.flag(
                "optimal_gap_exceeded", "status", excess,
                f"status optimal with {shown}, above OPTIMAL_GAP {OPTIMAL_GAP!r}",
            )
    else:
        c.figure("lower_bound", "lower_bound", plan.lower_bound, None)
        c.figure("gap", "gap", plan.gap, None)

    return Verification(ok=not c.out, objective=objective, violations=tuple(c.out))


def _check_assignments(c: _Checker, plan: Plan, solved: bool, seen: Counter) -> tuple:
    """Each assignment: known ids, eligibility, figures. Returns the load in quanta per pool and
    the recomputed terms (lists per `_TERMS` name)."""
    q = c.q
    load = [0] * len(c.pools)
    terms: dict[str, list[float]] = {name: [] for name in _TERMS}
    for a in plan.assignments:
        seen[a.demand] += 1
        if not solved:
            c.flag(
                "assignment_without_solution", a.demand, 1,
                f"status {plan.status} but '{a.demand}' is assigned",
            )
        d = c.demands.get(a.demand)
        p = c.pool_by_id.get(a.pool)
        if d is None:
            c.flag("unknown_demand", a.demand, 1, f"assignment names unknown demand '{a.demand}'")
        if p is None:
            c.flag("unknown_pool", a.demand, 1, f"assignment names unknown pool '{a.pool}'")
        if a.region not in c.regions:
            c.flag("unknown_region", a.demand, 1, f"assignment names unknown region '{a.region}'")
        elif p is not None and p.region != a.region:
            c.flag(
                "pool_region_mismatch", a.demand, 1,
                f"pool '{p.id}' is in '{p.region}', not '{a.region}'",
            )
        if d is None or p is None:
            continue
        routes = c.routes(d.origin)
        rule, amount, precision, f = _option(d, p, c.offers.get((d.id, p.id)), routes, q, c.w)
        if rule != _PASS:
            name = RULES[rule].value
            c.flag(
                f"ineligible:{name}", d.id, amount,
                f"'{d.id}' on '{p.id}' fails rule {name} by {amount!r}",
            )
        if precision is not None and a.precision != precision:
            c.flag(
                "mismatch:precision", d.id, 1,
                f"precision is {a.precision}, runs at {precision}",
            )
        if f is None:  # no usage or route to recompute from
            continue
        load[p.index] += f.units
        c.figure("latency_ms", d.id, a.latency_ms, routes[p.region][0])
        c.figure("gpu_hours", d.id, a.gpu_hours, f.usage)
        c.figure("energy_kwh", d.id, a.energy_kwh, f.energy_kwh)
        c.figure("co2_kg", d.id, a.co2_kg, f.co2_kg)
        c.figure("compute_cny", d.id, a.compute_cny, f.compute)
        c.figure("energy_cny", d.id, a.energy_cny, f.energy)
        c.figure("transfer_cny", d.id, a.transfer_cny, f.transfer)
        c.figure("carbon_cny", d.id, a.carbon_cny, f.carbon)
        c.figure("cost_cny", d.id, a.cost_cny, f.cost)
        for name in _TERMS:
            terms[name].append(getattr(f, name))

    return load, terms


def _check_unserved(c: _Checker, plan: Plan, solved: bool, seen: Counter) -> list[float]:
    """Each unserved entry: known demand, must-serve, penalty, reason. Returns the penalties."""
    penalties: list[float] = []
    for u in plan.unserved:
        seen[u.demand] += 1
        d = c.demands.get(u.demand)
        if d is None:
            c.flag(
                "unknown_demand", u.demand, 1,
                f"unserved entry names unknown demand '{u.demand}'",
            )
            continue
        if solved and d.must_serve:
            c.flag("must_serve_unserved", d.id, 1, f"must-serve demand '{d.id}' is unserved")
        pi = c.penalty(d)
        penalties.append(pi)
        c.figure("penalty_cny", d.id, u.penalty_cny, pi)
        if u.work_pflop is not None:
            c.figure("work_pflop", d.id, u.work_pflop, d.work_pflop)
        _check_reason(c, d, u.reason, pi, solved)

    return penalties


def _check_reason(c: _Checker, d: Demand, reason: Reason, pi: float, solved: bool) -> None:
    """An unserved reason must agree with the demand's options (formulation §5)."""
    worst, cheapest = c.scan(d)
    if cheapest is None:
        allowed = {RULES[worst]}
    elif not solved:
        allowed = {Reason.NOT_SOLVED}
    else:
        allowed = set()
        if cheapest >= pi - _tol(pi):
            allowed.add(Reason.UNECONOMIC)
        if cheapest <= pi + _tol(pi):
            allowed.add(Reason.CAPACITY)
    if reason not in allowed:
        expected = " or ".join(sorted(r.value for r in allowed))
        detail = f"; cheapest option {cheapest!r}, penalty {pi!r}" if cheapest is not None else ""
        c.flag("wrong_reason", d.id, 1, f"reason is {reason}, expected {expected}{detail}")


def _check_pool_rows(c: _Checker, plan: Plan, load: list[int], capacity: list[int]) -> None:
    """Each usage row must match its pool; a pool with load must have a row."""
    q = c.q
    rows: Counter[str] = Counter()
    for row in plan.pools:
        rows[row.pool] += 1
        p = c.pool_by_id.get(row.pool)
        if p is None:
            c.flag("unknown_pool", row.pool, 1, f"usage row names unknown pool '{row.pool}'")
            continue
        if row.region not in c.regions:
            c.flag("unknown_region", p.id, 1, f"usage row names unknown region '{row.region}'")
        elif row.region != p.region:
            c.flag(
                "pool_region_mismatch", p.id, 1,
                f"pool '{p.id}' is in '{p.region}', not '{row.region}'",
            )
        if row.accelerator != p.accelerator:
            c.flag(
                "mismatch:accelerator", p.id, 1,
                f"accelerator is '{row.accelerator}', pool has '{p.accelerator}'",
            )
        used = load[p.index] * q
        cap = capacity[p.index] * q
        c.figure("used_gpu_hours", p.id, row.used_gpu_hours, used)
        c.figure("capacity_gpu_hours", p.id, row.capacity_gpu_hours, cap)
        if cap > 0:
            c.figure("utilization", p.id, row.utilization, used / cap)
    for pool_id, count in rows.items():
        if count > 1:
            c.flag("duplicate_pool", pool_id, count - 1, f"pool '{pool_id}' has {count} usage rows")
    for p in c.pools:
        if load[p.index] and p.id not in rows:
            c.flag(
                "missing_pool_usage", p.id, load[p.index] * q,
                f"pool '{p.id}' has load but no usage row",
            )
