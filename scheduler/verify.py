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
* With ``Instance.policy`` (formulation §12, one window; ``subject`` the quota id):
  ``quota_above_max`` / ``quota_below_min`` (amount: PFLOP or GPU-hours beyond the share, past a
  tolerance of 1e-6 + 1e-9 x the work of all demands, or x the scope's capacity);
  ``mismatch:policy.quotas.amount|total|share``, ``mismatch:policy.fairness.by_group.<group>``,
  ``mismatch:policy.fairness.largest_unserved_share``; ``mismatch:policy``,
  ``mismatch:policy.quotas``, ``mismatch:policy.fairness``, ``mismatch:policy.fairness.groups``
  (1: a report or row missing, extra or of the wrong kind); ``share_bound_above_share`` (the
  fairness bound above the plan's largest unserved share). The reason ``quota`` is accepted where
  serving the demand on an eligible option of a maximum quota's scope, cheaper than its penalty,
  would pass that maximum by more than half the tolerance.

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

Over a horizon (formulation §8; ``subject`` may also be ``pool@slot``, ``source-target@slot``,
``demand@slot`` or ``demand/pool@slot``), every code above keeps its meaning except
``over_capacity``, which the per-slot rows replace, and these are added:

* ``ineligible:window`` (slots short: earliest start + run slots - deadline slot), and
  ``ineligible:price_cap`` at the start the plan chose; services by rules 2 to 8 only.
* ``missing_start`` (1); ``early_start`` (slots before release + 1 if the data moves, else
  release; in a re-planned instance also before ``replanning.now_slot``, pinned jobs aside);
  ``moved_pinned`` (1: a job pinned by ``replanning`` not at its pool and start, or unserved);
  ``late_finish`` (slots past the deadline slot); ``mismatch:end_slot`` (slots off
  start + n).
* ``invalid_route`` (1: none where data moves, or not a simple path from the origin to the pool's
  region over links); ``route_not_shortest`` (ms over the least latency);
  ``route_not_cheapest`` (CNY/GB over the tie-break's transfer cost, at the least latency).
* ``over_gpus`` (``pool@slot``: GPUs held beyond those available after outages);
  ``over_bandwidth`` (``source-target@slot``: Gbps beyond the link's capacity, in quanta);
  ``over_carbon_cap`` (grams beyond the cap, each choice rounded up).
* ``over_replicas`` (``demand/pool@slot``: PFLOP/h served beyond kappa x replicas);
  ``over_load`` (``demand@slot``: PFLOP/h served beyond the load in quanta);
  ``load_not_in_quanta`` (PFLOP/h off the nearest quantum); ``negative_replicas``,
  ``negative_served`` (by their size); ``wrong_slot_count`` (values missing or extra in a
  placement's replicas or served load); ``duplicate_placement`` (extra placements on one pool).
* ``wrong_kind`` (1): a service in ``assignments`` or ``unserved``, or a batch demand in
  ``services`` (the entry still counts towards ``duplicate_demand``).
* ``unknown_link``, ``duplicate_link`` (extra rows), ``missing_link_load`` (a link with traffic
  but no row; amount: its peak in Gbps).
* ``mismatch:<field>`` for the placement figures, ``unserved_pflop_per_hour``,
  ``unserved_pflop``, the rows' ``gpus_by_slot``, ``available_by_slot``, ``load_gbps``,
  ``bandwidth_gbps``, ``peak_utilization``, ``costs.energy_by_period_kwh.<period>`` and
  ``costs.energy_by_period_cny.<period>``, and ``schema_version`` (2). A per-slot figure is off
  by its largest difference, or, with the wrong number of values (null: none), by how many are
  missing or extra.

Readings over a horizon: ``used_gpu_hours`` is the batch usage plus the services' replica-hours
(what is billed), ``capacity_gpu_hours`` the available GPUs summed over the slots times the slot
length; a run or flow past the horizon's end counts only its slots inside it; an invalid route
loads no link; an assignment without a start adds no GPUs, energy or cost; a period missing from
the breakdown counts as 0; ``bandwidth`` is an accepted reason where an eligible option moves
data, ``carbon_cap`` where a cap is set (both where ``capacity`` is). A service's unserved load
is counted in quanta, ``(Lq - served) * Q`` per slot (never below 0); a service with no load in
any slot has ``tau = 0``. Against the carbon cap each assignment and each placement (all its
slots together) is rounded up to whole grams, so plans rounded per replica and slot, which weigh
more, pass too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque

from models import (
    BANDWIDTH_QUANTUM_GBPS,
    INTRA_REGION_LATENCY_MS,
    OPTIMAL_GAP,
    PERIOD_NAMES,
    PRECISION_FALLBACKS,
    QUANTUM_SLACK,
    RULES,
    QuotaMeasure,
    TIMED_SCHEMA_VERSION,
    Demand,
    DemandKind,
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
        "carbon", "cost", "price", "compute_raw", "transfer_raw", "offered",
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
        self.compute_raw = compute_raw
        self.transfer_raw = transfer_raw
        self.offered = offer is not None
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
        self.quota_figures: list[tuple] | None = None  # per quota (formulation §12), when solved

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
    if instance.timed:
        return _verify_timed(c, plan, solved, seen)
    window = instance.window_hours
    capacity = [math.floor(p.gpu_count * window / q + QUANTUM_SLACK) for p in c.pools]
    if instance.policy is not None and solved:  # the quota figures first: reasons read them
        c.quota_figures = _quota_figures(c, plan, capacity)
    load, terms = _check_assignments(c, plan, solved, seen)
    penalties = _check_unserved(c, plan, solved, seen)
    _check_coverage(c, seen)

    for p in c.pools:
        if load[p.index] > capacity[p.index]:
            excess = (load[p.index] - capacity[p.index]) * q
            c.flag(
                "over_capacity", p.id, excess,
                f"load {load[p.index]} quanta on capacity {capacity[p.index]}: "
                f"over by {excess!r} GPU-hours",
            )
    _check_pool_rows(c, plan, load, capacity)
    _check_policy(c, plan, solved, capacity)
    return _check_totals(c, plan, solved, terms, penalties)


def _check_coverage(c: _Checker, seen: Counter) -> None:
    """Every demand listed exactly once."""
    for demand_id, count in seen.items():
        if count > 1:
            c.flag(
                "duplicate_demand", demand_id, count - 1,
                f"'{demand_id}' is listed {count} times",
            )
    for d in c.inst.demands:
        if d.id not in seen:
            c.flag("missing_demand", d.id, 1, f"'{d.id}' is neither assigned nor unserved")


def _check_totals(c: _Checker, plan: Plan, solved: bool, terms: dict, penalties: list,
                  periods: tuple | None = None, migration: list | None = None) -> Verification:
    """The cost breakdown, objective, lower bound and gap; the verdict."""
    migration = migration or []
    objective = math.fsum(terms["cost"] + penalties + migration) if solved else None
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
    c.figure("costs.migration_cny", "costs", br.migration_cny, math.fsum(migration))
    if periods is not None:
        for field, reported, expected in (
            ("energy_by_period_kwh", br.energy_by_period_kwh, periods[0]),
            ("energy_by_period_cny", br.energy_by_period_cny, periods[1]),
        ):
            for key in sorted(set(reported) | set(expected)):
                total = math.fsum(expected.get(key, ()))
                c.figure(f"costs.{field}.{key}", "costs", reported.get(key, 0.0), total)

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
        d, p = _assignment_ids(c, a, solved, seen, plan.status)
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


def _assignment_ids(c: _Checker, a, solved: bool, seen: Counter, status: Status):
    """An assignment's demand and pool, with its ids and status checked: (demand, pool), each
    None when unknown."""
    seen[a.demand] += 1
    if not solved:
        c.flag(
            "assignment_without_solution", a.demand, 1,
            f"status {status} but '{a.demand}' is assigned",
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
    return d, p


def _check_unserved(c: _Checker, plan: Plan, solved: bool, seen: Counter,
                    timed: _Timed | None = None) -> list[float]:
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
        if timed is not None and d.kind == DemandKind.SERVICE:
            c.flag("wrong_kind", d.id, 1, f"service '{d.id}' is listed as unserved, not in services")
            continue
        if solved and d.must_serve:
            c.flag("must_serve_unserved", d.id, 1, f"must-serve demand '{d.id}' is unserved")
        pi = c.penalty(d)
        penalties.append(pi)
        c.figure("penalty_cny", d.id, u.penalty_cny, pi)
        if u.work_pflop is not None:
            c.figure("work_pflop", d.id, u.work_pflop, d.work_pflop)
        if timed is None:
            _check_reason(c, d, u.reason, pi, solved, plan)
        else:
            timed.check_reason(d, u.reason, pi, solved)

    return penalties


def _check_reason(c: _Checker, d: Demand, reason: Reason, pi: float, solved: bool,
                  plan: Plan | None = None) -> None:
    """An unserved reason must agree with the demand's options (formulation §5, §12)."""
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
            if plan is not None and _quota_blocks(c, plan, d, pi):
                allowed.add(Reason.QUOTA)
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


# --- instances with a horizon (formulation §8) -------------------------------------------------


def _ceil_quanta(value: float) -> int:
    """Whole quanta, rounded up with the spec's slack (0 stays 0)."""
    return max(0, math.ceil(value - QUANTUM_SLACK))


def _expand(profile, slots: int) -> list:
    """A profile's value in every slot: one per slot of a day (repeated) or one per slot."""
    return [profile[t % len(profile)] for t in range(slots)]


def _prefix(values: list[float]) -> list[float]:
    out = [0.0]
    for v in values:
        out.append(out[-1] + v)
    return out


class _Run:
    """A batch demand on one pool over a horizon: slots, window and the per-start figures."""

    __slots__ = ("f", "n", "moves", "release", "deadline", "earliest", "kwh_full", "kwh_last")

    def __init__(self, tm: _Timed, d: Demand, p: _Pool, f: _Figures):
        h = tm.h
        self.f = f
        self.n = max(1, math.ceil(f.runtime / h - QUANTUM_SLACK))
        self.moves = d.data_gb > 0 and p.region != d.origin
        self.release = d.release_slot or 0
        self.deadline = tm.slots if d.deadline_slot is None else d.deadline_slot
        self.earliest = self.release + (1 if self.moves else 0)
        base = tm.baseline.get(d.id)
        if base is None or not base.pinned:  # re-planning (§10): nothing new starts before now
            self.earliest = max(self.earliest, tm.now)
        draw = d.gang_size * p.power * p.pue
        self.kwh_full = draw * h
        self.kwh_last = draw * (f.runtime - (self.n - 1) * h)

    def kwh(self, k: int) -> float:
        """Energy in the k-th slot of the run."""
        return self.kwh_last if k == self.n - 1 else self.kwh_full

    def starts(self) -> range:
        """The allowed starts (empty: the `window` rule rejects the pool)."""
        return range(self.earliest, self.deadline - self.n + 1)


class _Timed:
    """The horizon's arrays and everything the time rules add up, filled as the plan is read."""

    def __init__(self, c: _Checker):
        inst = c.inst
        self.c = c
        self.slots = S = inst.horizon.slots
        self.h = inst.horizon.slot_hours
        self.price: dict[str, list[float]] = {}
        self.carbon: dict[str, list[float]] = {}
        self.period: dict[str, list[str]] = {}
        for r in inst.regions:
            by_slot = r.electricity_price_by_slot_cny_per_kwh
            self.price[r.id] = (_expand(by_slot, S) if by_slot is not None
                                else [r.electricity_price_cny_per_kwh] * S)
            by_slot = r.carbon_by_slot_g_co2_per_kwh
            self.carbon[r.id] = (_expand(by_slot, S) if by_slot is not None
                                 else [r.carbon_g_co2_per_kwh] * S)
            codes = _expand(r.tariff_periods, S) if r.tariff_periods else ["F"] * S
            self.period[r.id] = [PERIOD_NAMES[code] for code in codes]
        self._prefixes: dict[str, tuple] = {}
        self._extremes: dict[tuple, tuple] = {}  # (region, from, to): price and carbon extremes
        self.avail: list[list[int]] = []
        for region, pool in inst.pools():
            avail = [pool.gpu_count] * S
            for outage in pool.outages:
                for t in range(outage.start_slot, min(outage.end_slot, S)):
                    avail[t] -= outage.gpus
            self.avail.append(avail)
        self.links = inst.links
        self.link_index = {frozenset((k.source, k.target)): i for i, k in enumerate(inst.links)}
        self.bandwidth = [
            _expand(k.bandwidth_by_slot_gbps, S) if k.bandwidth_by_slot_gbps is not None
            else [k.bandwidth_gbps] * S for k in inst.links
        ]
        self.link_cap = [[math.floor(bw / BANDWIDTH_QUANTUM_GBPS + QUANTUM_SLACK) for bw in row]
                         for row in self.bandwidth]
        # What the plan adds up.
        self.gpus = [[0] * S for _ in c.pools]
        self.units = [0] * len(c.pools)  # batch usage in quanta
        self.rented = [[] for _ in c.pools]  # services' GPU-hours
        self.link_q = [[0] * S for _ in inst.links]
        rp = inst.replanning  # re-planning (§10): the reference plan's jobs and their move costs
        self.now = rp.now_slot if rp is not None else 0
        self.baseline = {b.demand: b for b in rp.baseline} if rp is not None else {}
        self.migration: list[float] = []
        self.placed: set[str] = set()
        self.grams: list[int] = []
        self.terms: dict[str, list[float]] = {name: [] for name in _TERMS}
        self.kwh_by_period: dict[str, list[float]] = defaultdict(list)
        self.cny_by_period: dict[str, list[float]] = defaultdict(list)

    # -- shared pieces --

    def prefixes(self, region: str) -> tuple[list[float], list[float]]:
        table = self._prefixes.get(region)
        if table is None:
            table = self._prefixes[region] = (_prefix(self.price[region]),
                                              _prefix(self.carbon[region]))
        return table

    def route_links(self, subject: str, d: Demand, p: _Pool, route, required: bool):
        """Check a plan's route (§8.4); return its link indices, or None if it is no path."""
        c = self.c
        table = c.routes(d.origin)
        if not route:
            if required:
                c.flag("invalid_route", subject, 1,
                       f"'{d.id}' on '{p.id}' moves data but names no route")
                return None
            return []
        ends_ok = route[0] == d.origin and route[-1] == p.region
        links = []
        latency = cost = 0.0
        for a, b in zip(route, route[1:]):
            k = self.link_index.get(frozenset((a, b)))
            if k is None:
                ends_ok = False
                break
            links.append(k)
            latency += self.links[k].latency_ms
            cost += self.links[k].transfer_cost_cny_per_gb
        if not ends_ok or len(set(route)) != len(route):
            c.flag("invalid_route", subject, 1,
                   f"route {'-'.join(route)} is no path from '{d.origin}' to '{p.region}'")
            return None
        if len(route) > 1:
            best_latency, best_cost = table[p.region]
            if latency > best_latency + _tol(best_latency):
                c.flag("route_not_shortest", subject, latency - best_latency,
                       f"route {'-'.join(route)} takes {latency!r} ms, the shortest {best_latency!r}")
            elif cost > best_cost + _tol(best_cost):
                c.flag("route_not_cheapest", subject, cost - best_cost,
                       f"route {'-'.join(route)} costs {cost!r} CNY/GB, the tie-break {best_cost!r}")
        return links

    def add_energy(self, region: str, t: int, kwh: float, priced: bool) -> tuple[float, float]:
        """Energy drawn in one slot: (raw energy cost, grams); booked by tariff period."""
        raw = kwh * self.price[region][t] if priced else 0.0
        label = self.period[region][t]
        self.kwh_by_period[label].append(kwh)
        self.cny_by_period[label].append(self.c.w.energy * raw)
        return raw, kwh * self.carbon[region][t]

    def book(self, figures: dict) -> None:
        for name in _TERMS:
            self.terms[name].append(figures[name])
        self.grams.append(_ceil_quanta(1000 * figures["co2_kg"]))  # formulation §8.6

    def series(self, field: str, subject: str, reported, expected: list) -> None:
        """A per-slot figure: the right number of values, each within the tolerance."""
        c = self.c
        if reported is None or len(reported) != len(expected):
            have = 0 if reported is None else len(reported)
            c.flag(f"mismatch:{field}", subject, abs(len(expected) - have),
                   f"{field} has {have} values, expected {len(expected)}")
            return
        worst, slot = 0.0, None
        for t, (got, due) in enumerate(zip(reported, expected)):
            if not _close(got, due) and abs(got - due) > worst:
                worst, slot = abs(got - due), t
        if slot is not None:
            c.flag(f"mismatch:{field}", subject, worst,
                   f"{field}[{slot}] is {reported[slot]!r}, recomputed {expected[slot]!r}")

    # -- batch demands --

    def check_assignment(self, a, d: Demand, p: _Pool, solved: bool) -> None:
        c = self.c
        routes = c.routes(d.origin)
        offer = c.offers.get((d.id, p.id))
        precision, f = None, None
        if d.work_pflop is None and offer is None:
            rule, amount = _NO_OFFER, 1.0
        else:
            rule, amount, precision = _static_rule(d, p, routes)
            if precision is None:
                precision = _run_precision(d, p.tflops)
            if p.region in routes and (offer is not None or precision is not None):
                f = _Figures(d, p, offer, precision, routes[p.region][1], c.q, c.w)
        run = _Run(self, d, p, f) if f is not None else None
        s = a.start_slot
        if rule == _PASS and f is not None:
            if d.deadline_hours is not None and f.runtime > d.deadline_hours:
                rule, amount = _DEADLINE, f.runtime - d.deadline_hours
            elif not run.starts():
                rule, amount = _WINDOW, float(run.earliest + run.n - run.deadline)
            elif s is not None and d.max_cost_cny is not None and 0 <= s <= self.slots - run.n:
                price = f.compute_raw + self.energy_raw(run, p, s) + f.transfer_raw
                if price > d.max_cost_cny:
                    rule, amount = _PRICE_CAP, price - d.max_cost_cny
        if rule != _PASS:
            name = RULES[rule].value
            c.flag(f"ineligible:{name}", d.id, amount,
                   f"'{d.id}' on '{p.id}' fails rule {name} by {amount!r}")
        if precision is not None and a.precision != precision:
            c.flag("mismatch:precision", d.id, 1, f"precision is {a.precision}, runs at {precision}")
        if f is None:
            return
        c.figure("latency_ms", d.id, a.latency_ms, routes[p.region][0])
        c.figure("gpu_hours", d.id, a.gpu_hours, f.usage)
        self.units[p.index] += f.units
        links = self.route_links(d.id, d, p, a.route, run.moves)
        if s is None:
            c.flag("missing_start", d.id, 1, f"'{d.id}' has no start_slot")
            return
        if s < run.earliest:
            why = " (its data moves first)" if run.moves else ""
            c.flag("early_start", d.id, run.earliest - s,
                   f"'{d.id}' starts in slot {s}, before slot {run.earliest}{why}")
        if s + run.n > run.deadline:
            c.flag("late_finish", d.id, s + run.n - run.deadline,
                   f"'{d.id}' runs to slot {s + run.n}, past its deadline slot {run.deadline}")
        if a.end_slot != s + run.n:
            c.flag("mismatch:end_slot", d.id, abs((a.end_slot or 0) - (s + run.n)),
                   f"end_slot is {a.end_slot!r}; {run.n} slots from {s} end at {s + run.n}")
        # Held GPUs, and the energy of each slot run (only slots inside the horizon count).
        energy_raw = grams = kwh_total = 0.0
        for k in range(run.n):
            t = s + k
            if t >= self.slots:
                break
            self.gpus[p.index][t] += d.gang_size
            raw, g = self.add_energy(p.region, t, run.kwh(k), not f.offered)
            energy_raw += raw
            grams += g
            kwh_total += run.kwh(k)
        # The data flow in slots rel .. s-1 on every link of the route.
        if run.moves and links and s > run.release:
            rate = _ceil_quanta(8 * d.data_gb / ((s - run.release) * self.h * 3600)
                                / BANDWIDTH_QUANTUM_GBPS)
            for t in range(run.release, min(s, self.slots)):
                for k in links:
                    self.link_q[k][t] += rate
        co2_kg = grams / 1000
        figures = {
            "compute": f.compute, "transfer": f.transfer, "energy": c.w.energy * energy_raw,
            "carbon": co2_kg / 1000 * c.w.carbon_price_cny_per_t_co2,
            "energy_kwh": kwh_total, "co2_kg": co2_kg,
        }
        figures["cost"] = (figures["compute"] + figures["energy"] + figures["transfer"]
                           + figures["carbon"])
        for field in ("energy_kwh", "co2_kg"):
            c.figure(field, d.id, getattr(a, field), figures[field])
        for name in ("compute", "energy", "transfer", "carbon", "cost"):
            c.figure(f"{name}_cny", d.id, getattr(a, f"{name}_cny"), figures[name])
        self.book(figures)
        self.check_moves(a, d, p)

    def energy_raw(self, run: _Run, p: _Pool, s: int) -> float:
        """Raw energy cost of the run started at `s` (offers: 0), by prefix sums."""
        if run.f.offered:
            return 0.0
        price = self.prefixes(p.region)[0]
        last = s + run.n - 1
        return run.kwh_full * (price[last] - price[s]) + run.kwh_last * (price[last + 1] - price[last])

    def run_grams(self, run: _Run, p: _Pool, s: int) -> float:
        carbon = self.prefixes(p.region)[1]
        last = s + run.n - 1
        return (run.kwh_full * (carbon[last] - carbon[s])
                + run.kwh_last * (carbon[last + 1] - carbon[last]))

    def scan(self, d: Demand) -> tuple[int, float | None, bool]:
        """Nearest miss, cheapest allowed (pool, start) cost, and whether an eligible option
        moves data (the timed twin of `_Checker.scan`).

        The same as pricing every start of every pool, in less time: a pool whose bounds show
        that all its starts pass the price cap (or that none does) settles the nearest miss and
        `moves` without pricing its starts, and then counts for the cheapest cost only if its
        lower bound does not exceed the cheapest found so far; pools are priced from the lowest
        bound up (`bounds`)."""
        c = self.c
        routes = c.routes(d.origin)
        worst, cheapest, moves = _NO_OFFER if d.work_pflop is None else _PASS, None, False
        offered = {o.pool: o for o in c.offers_by_demand.get(d.id, ())}
        w = c.w
        if d.work_pflop is None and len(offered) == len(c.pools):
            worst = _PASS
        settled, unsettled = [], []
        for p in c.pools:
            offer = offered.get(p.id)
            if d.work_pflop is None and offer is None:
                continue
            rule, _, precision = _static_rule(d, p, routes)
            if rule != _PASS:
                worst = max(worst, rule)
                continue
            f = _Figures(d, p, offer, precision, routes[p.region][1], c.q, w)
            if d.deadline_hours is not None and f.runtime > d.deadline_hours:
                worst = max(worst, _DEADLINE)
                continue
            run = _Run(self, d, p, f)
            starts = run.starts()
            if not starts:
                worst = max(worst, _WINDOW)
                continue
            low, capped = self.bounds(d, p, f, run, starts)
            if capped == "none":  # every start over the price cap
                worst = max(worst, _PRICE_CAP)
            elif capped == "all":  # every start within it (or no cap)
                moves = moves or run.moves
                settled.append((low, p.index, p, f, run, starts))
            else:
                unsettled.append((low, p.index, p, f, run, starts))
        for _, _, p, f, run, starts in unsettled:
            best = self.cheapest_start(d, p, f, run, starts)
            if best is None:
                worst = max(worst, _PRICE_CAP)
                continue
            moves = moves or run.moves
            if cheapest is None or best < cheapest:
                cheapest = best
        settled.sort(key=lambda item: item[:2])
        for low, _, p, f, run, starts in settled:
            if cheapest is not None and low > cheapest:
                break  # this pool and every later one cost more than the cheapest
            best = self.cheapest_start(d, p, f, run, starts)
            if cheapest is None or best < cheapest:
                cheapest = best
        return worst, cheapest, moves

    def bounds(self, d: Demand, p: _Pool, f: _Figures, run: _Run, starts: range):
        """(a lower bound on every start's cost, "all" / "none" / "some": which starts the
        price cap lets through as far as bounds tell). Every slot of a run is priced at the
        window's lowest (highest) price and carbon intensity; each bound keeps a margin of
        1e-9 of the terms' size for the rounding of the prefix sums that `cheapest_start`
        prices with. Weights are never negative (the instance's rules)."""
        w = self.c.w
        lo, hi = starts.start, starts.stop - 1 + run.n  # the slots a run in the window can use
        kwh = run.kwh_full * (run.n - 1) + run.kwh_last
        key = (p.region, lo, hi)
        extremes = self._extremes.get(key)
        if extremes is None:
            price, carbon = self.price[p.region][lo:hi], self.carbon[p.region][lo:hi]
            extremes = self._extremes[key] = (min(price), max(price), min(carbon),
                                              max(map(abs, carbon)))
        low_price, high_price, low_carbon, carbon_size = extremes
        cheap, dear = (0.0, 0.0) if f.offered else (kwh * low_price, kwh * high_price)
        grams = kwh * low_carbon
        base = self.baseline.get(d.id)
        move = 0.0 if base is None or base.pinned else self.move_cost(d, p, -1)
        if move and p.id == base.pool and base.start_slot in starts:
            move = 0.0
        fixed = f.compute + f.transfer
        size = (abs(fixed) + w.energy * max(abs(cheap), abs(dear))
                + kwh * carbon_size / 1e6 * w.carbon_price_cny_per_t_co2 + move)
        margin = 1e-9 * size + 1e-9
        low = fixed + w.energy * cheap + grams / 1e6 * w.carbon_price_cny_per_t_co2 + move - margin
        cap = d.max_cost_cny
        if cap is None:
            return low, "all"
        fixed_raw = f.compute_raw + f.transfer_raw
        margin = 1e-9 * (abs(fixed_raw) + max(abs(cheap), abs(dear))) + 1e-9
        if fixed_raw + cheap - margin > cap:
            return low, "none"
        if fixed_raw + dear + margin <= cap:
            return low, "all"
        return low, "some"

    def cheapest_start(self, d: Demand, p: _Pool, f: _Figures, run: _Run, starts: range) -> float | None:
        """The least cost over ``starts`` of ``d`` on ``p`` within its price cap (None if the
        cap rejects them all): each start priced as `energy_raw`, `run_grams` and `move_cost`
        do, term for term, in one list rather than calls (the hot loop of the reasons)."""
        w = self.c.w
        P, C = self.prefixes(p.region)
        kf, kl, m = run.kwh_full, run.kwh_last, run.n - 1
        fixed, we, cp = f.compute + f.transfer, w.energy, w.carbon_price_cny_per_t_co2
        base = self.baseline.get(d.id)
        move = 0.0 if base is None or base.pinned else self.move_cost(d, p, -1)
        own = move and p.id == base.pool and base.start_slot in starts  # its spot: no move cost
        cap = d.max_cost_cny
        if cap is None and f.offered:
            costs = [fixed + (kf * (C[s + m] - C[s]) + kl * (C[s + m + 1] - C[s + m])) / 1e6 * cp + move
                     for s in starts]
        elif cap is None:
            costs = [fixed + we * (kf * (P[s + m] - P[s]) + kl * (P[s + m + 1] - P[s + m]))
                     + (kf * (C[s + m] - C[s]) + kl * (C[s + m + 1] - C[s + m])) / 1e6 * cp + move
                     for s in starts]
        else:
            raw, tr = f.compute_raw, f.transfer_raw
            energies = ([0.0] * len(starts) if f.offered else
                        [kf * (P[s + m] - P[s]) + kl * (P[s + m + 1] - P[s + m]) for s in starts])
            costs = [fixed + we * e
                     + (kf * (C[s + m] - C[s]) + kl * (C[s + m + 1] - C[s + m])) / 1e6 * cp + move
                     for s, e in zip(starts, energies, strict=True) if not raw + e + tr > cap]
        best = min(costs) if costs else None
        if own:
            s = base.start_slot
            e = 0.0 if f.offered else kf * (P[s + m] - P[s]) + kl * (P[s + m + 1] - P[s + m])
            if cap is None or not f.compute_raw + e + f.transfer_raw > cap:
                grams = kf * (C[s + m] - C[s]) + kl * (C[s + m + 1] - C[s + m])
                there = fixed + we * e + grams / 1e6 * cp + 0.0
                best = there if best is None else min(best, there)
        return best

    def move_cost(self, d: Demand, p: _Pool, s: int) -> float:
        """§10: what running ``d`` on ``p`` from ``s`` costs beyond the reference plan's spot."""
        base = self.baseline.get(d.id)
        if base is None or base.pinned or (p.id == base.pool and s == base.start_slot):
            return 0.0
        old = self.c.pool_by_id.get(base.pool)
        moved_region = old is not None and old.region != p.region
        return base.move_cost_cny + (base.retransfer_cny if moved_region else 0.0)

    def check_moves(self, a, d: Demand, p: _Pool) -> None:
        """§10: a pinned job keeps its pool and start; any other move pays its migration cost."""
        base = self.baseline.get(d.id)
        if base is None:
            return
        self.placed.add(d.id)
        if base.pinned and (p.id != base.pool or a.start_slot != base.start_slot):
            self.c.flag("moved_pinned", d.id, 1,
                        f"'{d.id}' started on '{base.pool}' in slot {base.start_slot}, before now "
                        f"(slot {self.now}), but runs on '{p.id}' from slot {a.start_slot}")
        elif a.start_slot is not None:
            cost = self.move_cost(d, p, a.start_slot)
            if cost:
                self.migration.append(cost)

    def check_pinned_served(self, solved: bool) -> None:
        for base in self.baseline.values():
            if solved and base.pinned and base.demand not in self.placed:
                self.c.flag("moved_pinned", base.demand, 1,
                            f"'{base.demand}' started before now (slot {self.now}) but is not assigned")

    def check_reason(self, d: Demand, reason: Reason, pi: float, solved: bool) -> None:
        """An unserved batch demand's reason must agree with its options over the horizon."""
        c = self.c
        worst, cheapest, moves = self.scan(d)
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
                if moves:
                    allowed.add(Reason.BANDWIDTH)
                if c.inst.carbon_cap_t_co2 is not None:
                    allowed.add(Reason.CARBON_CAP)
        if reason not in allowed:
            expected = " or ".join(sorted(r.value for r in allowed))
            detail = f"; cheapest option {cheapest!r}, penalty {pi!r}" if cheapest is not None else ""
            c.flag("wrong_reason", d.id, 1, f"reason is {reason}, expected {expected}{detail}")

    # -- services --

    def check_service(self, sp, d: Demand, solved: bool) -> float:
        """One service's placements and unserved load; returns its penalty."""
        c = self.c
        S, Q, h = self.slots, c.inst.load_quantum_pflop_per_hour, self.h
        routes = c.routes(d.origin)
        lq = [_ceil_quanta(v / Q) for v in _expand(d.load_pflop_per_hour, S)]
        peak = max(lq)
        traffic = d.traffic_gbps or 0.0
        tau = _ceil_quanta(traffic / peak / BANDWIDTH_QUANTUM_GBPS) if peak else 0
        gb_per_quantum = traffic * h * 3600 / 8 / peak if peak else 0.0
        served = [0] * S
        placed: Counter[str] = Counter()
        for pl in sp.placements:
            placed[pl.pool] += 1
            if not solved:
                c.flag("assignment_without_solution", d.id, 1,
                       f"status unsolved but '{d.id}' is placed on '{pl.pool}'")
            p = c.pool_by_id.get(pl.pool)
            if p is None:
                c.flag("unknown_pool", d.id, 1, f"placement names unknown pool '{pl.pool}'")
            if pl.region not in c.regions:
                c.flag("unknown_region", d.id, 1, f"placement names unknown region '{pl.region}'")
            elif p is not None and p.region != pl.region:
                c.flag("pool_region_mismatch", d.id, 1,
                       f"pool '{p.id}' is in '{p.region}', not '{pl.region}'")
            if p is None:
                continue
            rule, amount, precision = _static_rule(d, p, routes)
            if rule != _PASS:
                name = RULES[rule].value
                c.flag(f"ineligible:{name}", d.id, amount,
                       f"'{d.id}' on '{p.id}' fails rule {name} by {amount!r}")
            if precision is None:
                precision = _run_precision(d, p.tflops)
            if precision is not None and pl.precision != precision:
                c.flag("mismatch:precision", d.id, 1,
                       f"precision on '{p.id}' is {pl.precision}, runs at {precision}")
            if precision is None or p.region not in routes:
                continue  # no capacity per replica or no route to recompute from
            self.place(pl, d, p, precision, routes, served, tau, gb_per_quantum)
        for pool_id, count in placed.items():
            if count > 1:
                c.flag("duplicate_placement", d.id, count - 1,
                       f"'{d.id}' has {count} placements on '{pool_id}'")
        for t in range(S):
            if served[t] > lq[t]:
                c.flag("over_load", f"{d.id}@{t}", (served[t] - lq[t]) * Q,
                       f"'{d.id}' serves {served[t]} quanta in slot {t}, its load is {lq[t]}")
        left = [max(0, lq[t] - served[t]) * Q for t in range(S)]
        self.series("unserved_pflop_per_hour", d.id, sp.unserved_pflop_per_hour, left)
        undone = math.fsum(left) * h
        c.figure("unserved_pflop", d.id, sp.unserved_pflop, undone)
        w = c.w
        penalty = w.unserved * d.priority * (d.unserved_penalty_cny_per_pflop or 0.0) * undone
        c.figure("penalty_cny", d.id, sp.penalty_cny, penalty)
        return penalty

    def place(self, pl, d: Demand, p: _Pool, precision, routes: dict, served: list,
              tau: int, gb_per_quantum: float) -> None:
        """One placement: replicas, served quanta, GPUs, traffic and figures, slot by slot."""
        c = self.c
        S, Q, h, w = self.slots, c.inst.load_quantum_pflop_per_hour, self.h, c.w
        kappa = math.floor(d.gang_size * p.tflops[precision] * 3.6 / Q + QUANTUM_SLACK)
        c.figure("latency_ms", d.id, pl.latency_ms, routes[p.region][0])
        links = self.route_links(d.id, d, p, pl.route, p.region != d.origin)
        for field in ("replicas", "served_pflop_per_hour"):
            have = len(getattr(pl, field))
            if have != S:
                c.flag("wrong_slot_count", d.id, abs(have - S),
                       f"{field} on '{p.id}' has {have} values, the horizon {S}")
        gpu_hours = energy_raw = grams = kwh_total = quanta = 0.0
        replicas, loads = pl.replicas, pl.served_pflop_per_hour
        # A slot with no replicas and nothing served adds nothing and breaks no rule: skipped.
        busy = [t for t in range(S) if (replicas[t] if t < len(replicas) else 0)
                or (loads[t] if t < len(loads) else 0.0)]
        for t in busy:
            where = f"{d.id}/{p.id}@{t}"
            m = replicas[t] if t < len(replicas) else 0
            v = loads[t] if t < len(loads) else 0.0
            if m < 0:
                c.flag("negative_replicas", where, -m, f"{m} replicas of '{d.id}' in slot {t}")
                m = 0
            u = round(v / Q)
            if abs(v - u * Q) > _tol(v):
                c.flag("load_not_in_quanta", where, abs(v - u * Q),
                       f"served {v!r} PFLOP/h is not a whole number of {Q!r} quanta")
            if u < 0:
                c.flag("negative_served", where, -u * Q, f"served {v!r} PFLOP/h in slot {t}")
                u = 0
            if u > kappa * m:
                c.flag("over_replicas", where, (u - kappa * m) * Q,
                       f"{u} quanta served by {m} replicas of {kappa} quanta each")
            served[t] += u
            quanta += u
            if links and tau:
                for k in links:
                    self.link_q[k][t] += tau * u
            if m:
                self.gpus[p.index][t] += d.gang_size * m
                hours = d.gang_size * h * m
                gpu_hours += hours
                kwh = hours * p.power * p.pue
                kwh_total += kwh
                raw, g = self.add_energy(p.region, t, kwh, True)
                energy_raw += raw
                grams += g
        self.rented[p.index].append(gpu_hours)
        transfer_raw = quanta * gb_per_quantum * routes[p.region][1] if p.region != d.origin else 0.0
        co2_kg = grams / 1000
        figures = {
            "compute": w.compute * gpu_hours * p.price, "energy": w.energy * energy_raw,
            "transfer": w.transfer * transfer_raw,
            "carbon": co2_kg / 1000 * w.carbon_price_cny_per_t_co2,
            "energy_kwh": kwh_total, "co2_kg": co2_kg,
        }
        figures["cost"] = (figures["compute"] + figures["energy"] + figures["transfer"]
                           + figures["carbon"])
        c.figure("gpu_hours", d.id, pl.gpu_hours, gpu_hours)
        for field in ("energy_kwh", "co2_kg"):
            c.figure(field, d.id, getattr(pl, field), figures[field])
        for name in ("compute", "energy", "transfer", "carbon", "cost"):
            c.figure(f"{name}_cny", d.id, getattr(pl, f"{name}_cny"), figures[name])
        self.book(figures)

    # -- rows: pools, links, the carbon cap --

    def check_pools(self, plan: Plan) -> None:
        c, h = self.c, self.h
        for p in c.pools:
            for t, (held, avail) in enumerate(zip(self.gpus[p.index], self.avail[p.index])):
                if held > avail:
                    c.flag("over_gpus", f"{p.id}@{t}", held - avail,
                           f"'{p.id}' holds {held} GPUs in slot {t}, {avail} available")
        used = [self.units[p.index] * c.q + math.fsum(self.rented[p.index]) for p in c.pools]
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
                c.flag("pool_region_mismatch", p.id, 1,
                       f"pool '{p.id}' is in '{p.region}', not '{row.region}'")
            if row.accelerator != p.accelerator:
                c.flag("mismatch:accelerator", p.id, 1,
                       f"accelerator is '{row.accelerator}', pool has '{p.accelerator}'")
            cap = sum(self.avail[p.index]) * h
            c.figure("used_gpu_hours", p.id, row.used_gpu_hours, used[p.index])
            c.figure("capacity_gpu_hours", p.id, row.capacity_gpu_hours, cap)
            if cap > 0:
                c.figure("utilization", p.id, row.utilization, used[p.index] / cap)
            self.series("gpus_by_slot", p.id, row.gpus_by_slot, self.gpus[p.index])
            self.series("available_by_slot", p.id, row.available_by_slot, self.avail[p.index])
        for pool_id, count in rows.items():
            if count > 1:
                c.flag("duplicate_pool", pool_id, count - 1, f"pool '{pool_id}' has {count} usage rows")
        for p in c.pools:
            if (used[p.index] or any(self.gpus[p.index])) and p.id not in rows:
                c.flag("missing_pool_usage", p.id, used[p.index],
                       f"pool '{p.id}' has load but no usage row")

    def check_links(self, plan: Plan) -> None:
        c, quantum = self.c, BANDWIDTH_QUANTUM_GBPS
        for k, link in enumerate(self.links):
            name = f"{link.source}-{link.target}"
            for t, (q, cap) in enumerate(zip(self.link_q[k], self.link_cap[k])):
                if q > cap:
                    c.flag("over_bandwidth", f"{name}@{t}", (q - cap) * quantum,
                           f"link {name} carries {q} quanta in slot {t}, capacity {cap}")
        rows: Counter[int] = Counter()
        for row in plan.links:
            name = f"{row.source}-{row.target}"
            k = self.link_index.get(frozenset((row.source, row.target)))
            if k is None:
                c.flag("unknown_link", name, 1, f"load row names no link {name}")
                continue
            rows[k] += 1
            load = [q * quantum for q in self.link_q[k]]
            bandwidth = self.bandwidth[k]
            self.series("load_gbps", name, row.load_gbps, load)
            self.series("bandwidth_gbps", name, row.bandwidth_gbps, bandwidth)
            peak = max((x / bw for x, bw in zip(load, bandwidth) if bw > 0), default=0.0)
            c.figure("peak_utilization", name, row.peak_utilization, peak)
        for k, count in rows.items():
            if count > 1:
                link = self.links[k]
                c.flag("duplicate_link", f"{link.source}-{link.target}", count - 1,
                       f"link {link.source}-{link.target} has {count} load rows")
        for k, link in enumerate(self.links):
            if any(self.link_q[k]) and k not in rows:
                c.flag("missing_link_load", f"{link.source}-{link.target}",
                       max(self.link_q[k]) * quantum,
                       f"link {link.source}-{link.target} carries traffic but has no load row")

    def check_carbon(self) -> None:
        cap = self.c.inst.carbon_cap_t_co2
        if cap is None:
            return
        total, limit = sum(self.grams), cap * 1e6
        if total > limit + _tol(limit):
            self.c.flag("over_carbon_cap", "carbon_cap_t_co2", total - limit,
                        f"the plan emits {total} g (each choice rounded up), the cap is {limit!r} g")


def _verify_timed(c: _Checker, plan: Plan, solved: bool, seen: Counter) -> Verification:
    """formulation §8: batch jobs in time, services slot by slot, pool, link and carbon rows."""
    tm = _Timed(c)
    if plan.schema_version != TIMED_SCHEMA_VERSION:
        c.flag("mismatch:schema_version", "schema_version", 1,
               f"a plan over a horizon has schema_version {TIMED_SCHEMA_VERSION}, "
               f"not {plan.schema_version}")
    for a in plan.assignments:
        d, p = _assignment_ids(c, a, solved, seen, plan.status)
        if d is None or p is None:
            continue
        if d.kind == DemandKind.SERVICE:
            c.flag("wrong_kind", d.id, 1, f"service '{d.id}' is listed as an assignment")
            continue
        tm.check_assignment(a, d, p, solved)
    penalties = _check_unserved(c, plan, solved, seen, tm)
    for sp in plan.services:
        seen[sp.demand] += 1
        d = c.demands.get(sp.demand)
        if d is None:
            c.flag("unknown_demand", sp.demand, 1,
                   f"service plan names unknown demand '{sp.demand}'")
        elif d.kind != DemandKind.SERVICE:
            c.flag("wrong_kind", d.id, 1, f"batch demand '{d.id}' is listed as a service")
        else:
            penalties.append(tm.check_service(sp, d, solved))
    _check_coverage(c, seen)
    tm.check_pools(plan)
    tm.check_links(plan)
    tm.check_carbon()
    tm.check_pinned_served(solved)
    return _check_totals(c, plan, solved, tm.terms, penalties,
                         (tm.kwh_by_period, tm.cny_by_period), tm.migration)


# --- policy: quotas and fairness (formulation §12) ----------------------------------------------


def _members(c: _Checker, quota) -> set[str]:
    """The ids of the demands a quota's sector and origin pick."""
    out = set()
    for d in c.inst.demands:
        if quota.sector is not None and d.sector.value != quota.sector:
            continue
        if quota.origin is not None and d.origin != quota.origin and quota.origin not in c.regions[d.origin].tags:
            continue
        out.add(d.id)
    return out


def _scope(c: _Checker, quota) -> set[str]:
    """The ids of the pools a quota counts."""
    return {p.id for p in c.pools if quota.hub is None or quota.hub in c.regions[p.region].tags}


def _served_units(c: _Checker, plan: Plan) -> list[tuple[Demand, _Pool, int]]:
    """Each assignment with a known demand, pool and usage: (demand, pool, quanta)."""
    out = []
    for a in plan.assignments:
        d, p = c.demands.get(a.demand), c.pool_by_id.get(a.pool)
        if d is None or p is None:
            continue
        f = _option(d, p, c.offers.get((d.id, p.id)), c.routes(d.origin), c.q, c.w)[3]
        if f is not None:
            out.append((d, p, f.units))
    return out


def _quota_figures(c: _Checker, plan: Plan, capacity: list[int]) -> list[tuple]:
    """Per quota: (quota, amount, total, tolerance), recomputed from the assignments."""
    served = _served_units(c, plan)
    all_work = math.fsum(d.work_pflop or 0.0 for d in c.inst.demands)
    out = []
    for quota in c.inst.policy.quotas:
        members, scope = _members(c, quota), _scope(c, quota)
        inside = [(d, p, u) for d, p, u in served if p.id in scope]
        if quota.measure == QuotaMeasure.WORK:
            amount = math.fsum(d.work_pflop or 0.0 for d, _, _ in inside if d.id in members)
            total = math.fsum(d.work_pflop or 0.0 for d, _, _ in inside)
            tol = 1e-6 + 1e-9 * all_work
        else:
            amount = sum(u for d, _, u in inside if d.id in members) * c.q
            total = sum(capacity[p.index] for p in c.pools if p.id in scope) * c.q
            tol = 1e-6 + 1e-9 * total
        out.append((quota, amount, total, tol))
    return out


def _check_policy(c: _Checker, plan: Plan, solved: bool, capacity: list[int]) -> None:
    """Every quota met (within its tolerance), and the plan's policy figures as recomputed."""
    if c.inst.policy is None:
        if plan.policy is not None:
            c.flag("mismatch:policy", "policy", 1, "the plan reports policy figures; the instance has no policy")
        return
    if not solved:
        return
    figures = c.quota_figures
    for quota, amount, total, tol in figures:
        if quota.max_share is not None and amount - quota.max_share * total > tol:
            excess = amount - quota.max_share * total
            c.flag("quota_above_max", quota.id, excess,
                   f"quota '{quota.id}': {amount!r} of {total!r} ({quota.measure}) is above the "
                   f"maximum share {quota.max_share!r} by {excess!r}")
        if quota.min_share is not None and quota.min_share * total - amount > tol:
            short = quota.min_share * total - amount
            c.flag("quota_below_min", quota.id, short,
                   f"quota '{quota.id}': {amount!r} of {total!r} ({quota.measure}) is below the "
                   f"minimum share {quota.min_share!r} by {short!r}")
    report = plan.policy
    if report is None:
        c.flag("mismatch:policy", "policy", 1, "the instance has a policy; the plan reports no policy figures")
        return
    reported = {u.quota: u for u in report.quotas}
    for quota, amount, total, _ in figures:
        u = reported.pop(quota.id, None)
        if u is None:
            c.flag("mismatch:policy.quotas", quota.id, 1, f"quota '{quota.id}' is missing from the plan's policy")
            continue
        c.figure("policy.quotas.amount", quota.id, u.amount, amount)
        c.figure("policy.quotas.total", quota.id, u.total, total)
        c.figure("policy.quotas.share", quota.id, u.share, amount / total if total > 0 else 0.0)
    for extra in reported:
        c.flag("mismatch:policy.quotas", extra, 1, f"the plan reports unknown quota '{extra}'")
    _check_fairness(c, plan)


def _check_fairness(c: _Checker, plan: Plan) -> None:
    """Each group's unserved share and the largest, as recomputed; a bound not above it."""
    kind = c.inst.policy.fairness.value
    fair = plan.policy.fairness
    if kind == "none":
        if fair is not None:
            c.flag("mismatch:policy.fairness", "policy", 1, "fairness figures for an instance without fairness")
        return
    if fair is None:
        c.flag("mismatch:policy.fairness", "policy", 1, "the instance asks for fairness; the plan reports none")
        return
    served = {a.demand for a in plan.assignments}
    work: dict[str, list[float]] = defaultdict(list)
    unserved: dict[str, list[float]] = defaultdict(list)
    for d in c.inst.demands:
        key = d.sector.value if kind == "sector" else d.origin
        work[key].append(d.work_pflop or 0.0)
        if d.id not in served:
            unserved[key].append(d.work_pflop or 0.0)
    shares = {key: math.fsum(unserved[key]) / math.fsum(values)
              for key, values in work.items() if math.fsum(values) > 0}
    if fair.groups != kind:
        c.flag("mismatch:policy.fairness.groups", "policy", 1, f"groups are {fair.groups}, the instance levels {kind}")
    for key in sorted(set(shares) | set(fair.by_group)):
        c.figure(f"policy.fairness.by_group.{key}", "policy", fair.by_group.get(key), shares.get(key))
    largest = max(shares.values(), default=0.0)
    c.figure("policy.fairness.largest_unserved_share", "policy", fair.largest_unserved_share, largest)
    lb = fair.share_lower_bound
    if lb is not None and lb - largest > _tol(largest):
        c.flag("share_bound_above_share", "policy", lb - largest,
               f"share lower bound {lb!r} above the plan's largest unserved share {largest!r}")


def _quota_blocks(c: _Checker, plan: Plan, d: Demand, pi: float) -> bool:
    """Whether serving ``d`` on an eligible pool of a maximum quota's scope, cheaper than its
    penalty, would pass that quota (the reason ``quota``)."""
    figures = c.quota_figures
    if c.inst.policy is None or figures is None:
        return False
    routes = c.routes(d.origin)
    for quota, amount, total, tol in figures:
        if quota.max_share is None or d.id not in _members(c, quota):
            continue
        scope = _scope(c, quota)
        least = None
        for p in c.pools:
            if p.id not in scope:
                continue
            rule, _, _, f = _option(d, p, c.offers.get((d.id, p.id)), routes, c.q, c.w)
            if rule == _PASS and f is not None and f.cost < pi + _tol(pi):
                least = f.units if least is None else min(least, f.units)
        if least is None:
            continue
        # The plan's writer says `quota` beyond the tolerance; half of it absorbs summation order.
        if quota.measure == QuotaMeasure.WORK:
            w = d.work_pflop or 0.0
            if w > 0 and amount + w - quota.max_share * (total + w) > tol / 2:
                return True
        elif amount + least * c.q - quota.max_share * total > tol / 2:
            return True
    return False
