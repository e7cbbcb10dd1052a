"""Hypothesis strategies for eastwest: random instances and plans for property-based tests.

    from hypothesis import given
    from scheduler.strategies import feasible_instances

    @given(feasible_instances(max_demands=6))
    def test_every_plan_verifies(instance): ...

Every strategy builds valid objects by construction (nothing is filtered away), takes keyword-only
``min_*`` / ``max_*`` arguments and checks them. Needs the ``strategies`` extra (Hypothesis).
"""

from __future__ import annotations

import numpy as np

try:
    from hypothesis import reject
    from hypothesis import strategies as st
    from hypothesis.errors import InvalidArgument
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "scheduler.strategies needs Hypothesis: pip install 'eastwest[strategies]'"
    ) from error

from models import MAX_SLOTS, TARIFF_PERIODS, Instance, Plan, Precision, Sector, SolveStats, Status

__all__ = ["feasible_instances", "instances", "plans", "policies", "timed_instances"]

ACCELERATORS = ("H800", "H20", "910B")
JURISDICTIONS = ("north", "east", "west")
SPEEDS = (100.0, 250.0, 500.0, 1000.0)  # dense TFLOPS values to draw from
QUANTA = (0.01, 0.1, 0.5, 1.0)


def _check_range(name: str, low: int, high: int, floor: int) -> None:
    if not isinstance(low, int) or not isinstance(high, int):
        raise InvalidArgument(f"min_{name} and max_{name} must be integers")
    if low < floor:
        raise InvalidArgument(f"min_{name}={low} must be at least {floor}")
    if high < low:
        raise InvalidArgument(f"max_{name}={high} must be at least min_{name}={low}")


def _money(high: float) -> st.SearchStrategy[float]:
    """Amounts with at most two decimals, so that examples read well when they fail."""
    return st.integers(0, int(high * 100)).map(lambda cents: cents / 100)


@st.composite
def _pool(draw, region: int, k: int, *, universal: bool) -> dict:
    precisions = draw(st.sets(st.sampled_from(list(Precision)), min_size=1, max_size=4))
    if universal:  # every precision used by feasible_instances' must-serve demands runs here
        precisions |= {Precision.BF16, Precision.FP32}
    return {
        "id": f"p{region}-{k}",
        "accelerator": draw(st.sampled_from(ACCELERATORS)),
        "gpu_count": draw(st.integers(1, 16)),
        "memory_gb_per_gpu": draw(st.sampled_from([24.0, 64.0, 96.0])),
        "tflops_by_precision": {p.value: draw(st.sampled_from(SPEEDS)) for p in sorted(precisions)},
        "power_kw_per_gpu": draw(_money(1.0)),
        "price_cny_per_gpu_hour": draw(_money(20.0)),
    }


@st.composite
def instances(
    draw,
    *,
    min_regions: int = 1,
    max_regions: int = 4,
    min_demands: int = 1,
    max_demands: int = 6,
    max_pools_per_region: int = 2,
    offers: bool = True,
    connected: bool = False,
) -> Instance:
    """Small valid instances that exercise every rule: latency, precision, memory, allow-lists,
    residency, deadlines, price caps, offers, must-serve demands and penalties."""
    _check_range("regions", min_regions, max_regions, 1)
    _check_range("demands", min_demands, max_demands, 1)
    _check_range("pools_per_region", 1, max_pools_per_region, 1)
    return draw(_instances(min_regions, max_regions, min_demands, max_demands,
                           max_pools_per_region, offers, connected, feasible=False))


@st.composite
def feasible_instances(
    draw,
    *,
    min_regions: int = 1,
    max_regions: int = 4,
    min_demands: int = 1,
    max_demands: int = 6,
    max_pools_per_region: int = 2,
) -> Instance:
    """Instances with a plan that serves every must-serve demand.

    Built around a witness: the network is connected, every pool runs BF16 and FP32, must-serve
    demands carry no restrictive rule and an offer on the first pool, which has room for all of
    them at once.
    """
    _check_range("regions", min_regions, max_regions, 1)
    _check_range("demands", min_demands, max_demands, 1)
    _check_range("pools_per_region", 1, max_pools_per_region, 1)
    return draw(_instances(min_regions, max_regions, min_demands, max_demands,
                           max_pools_per_region, True, True, feasible=True))


@st.composite
def _instances(draw, min_regions, max_regions, min_demands, max_demands, max_pools,
               with_offers, connected, *, feasible: bool) -> Instance:
    n_regions = draw(st.integers(min_regions, max_regions))
    regions = []
    for r in range(n_regions):
        n_pools = draw(st.integers(1 if r == 0 else 0, max_pools))
        regions.append({
            "id": f"r{r}",
            "jurisdiction": draw(st.sampled_from(JURISDICTIONS)),
            "lat": 20.0 + r,
            "lon": 100.0 + r,
            "electricity_price_cny_per_kwh": draw(_money(1.0)),
            "pue": draw(st.sampled_from([1.1, 1.2, 1.5])),
            "carbon_g_co2_per_kwh": draw(st.sampled_from([100.0, 500.0, 700.0])),
            "pools": [draw(_pool(r, k, universal=feasible)) for k in range(n_pools)],
        })
    links = []
    for r in range(1, n_regions):
        parents = range(r)
        targets = draw(st.lists(st.sampled_from(parents), unique=True,
                                min_size=1 if connected else 0, max_size=2))
        for t in targets:
            links.append({
                "source": f"r{t}",
                "target": f"r{r}",
                "latency_ms": draw(st.integers(0, 20).map(float)),
                "bandwidth_gbps": 100.0,
                "transfer_cost_cny_per_gb": draw(_money(1.0)),
            })
    pools = [p for region in regions for p in region["pools"]]
    accelerators = sorted({p["accelerator"] for p in pools})
    jurisdictions = sorted({region["jurisdiction"] for region in regions})
    largest = max(p["gpu_count"] for p in pools)
    window = draw(st.sampled_from([1.0, 8.0, 24.0]))
    quantum = draw(st.sampled_from(QUANTA))

    demands, offers = [], []
    for i in range(draw(st.integers(min_demands, max_demands))):
        must = draw(st.booleans()) and draw(st.booleans())
        relaxed = feasible and must
        amounts = st.integers(1, 400).map(float)
        work = draw(st.none() | amounts) if with_offers else draw(amounts)
        demand = {
            "id": f"d{i}",
            "sector": draw(st.sampled_from(list(Sector))).value,
            "origin": f"r{draw(st.integers(0, n_regions - 1))}",
            "work_pflop": work,
            "unserved_penalty_cny": draw(_money(2000.0)),
            "priority": draw(st.sampled_from([1.0, 2.0, 5.0])),
            "must_serve": must,
            "data_gb": draw(st.sampled_from([0.0, 10.0, 100.0])),
        }
        if not relaxed:
            demand |= {
                "gang_size": draw(st.integers(1, largest)),
                "precision": draw(st.sampled_from(list(Precision))).value,
                "strict_precision": draw(st.booleans()),
                "min_memory_gb_per_gpu": draw(st.sampled_from([0.0, 32.0, 80.0])),
                "accelerators": draw(st.none() | st.lists(st.sampled_from(accelerators),
                                                          min_size=1, unique=True)),
                "jurisdictions": draw(st.none() | st.lists(st.sampled_from(jurisdictions),
                                                           min_size=1, unique=True)),
                "max_latency_ms": draw(st.none() | st.integers(1, 30).map(float)),
                "deadline_hours": draw(st.none() | st.sampled_from([1.0, 4.0, 24.0])),
                "max_cost_cny": draw(st.none() | _money(3000.0)),
            }
        offered = set()
        if relaxed:
            offered.add(0)
            offers.append({"demand": f"d{i}", "pool": pools[0]["id"],
                           "gpu_hours": float(draw(st.integers(1, 10))),
                           "price_cny": draw(_money(200.0))})
        if with_offers:
            for k in draw(st.lists(st.integers(0, len(pools) - 1), unique=True, max_size=2)):
                if k in offered:
                    continue
                offered.add(k)
                offers.append({"demand": f"d{i}", "pool": pools[k]["id"],
                               "gpu_hours": draw(st.integers(1, 40).map(lambda h: h / 4)),
                               "price_cny": draw(_money(500.0))})
        if demand["work_pflop"] is None and not offered:
            demand["work_pflop"] = 1.0
        demands.append(demand)

    if feasible:
        # Room on the first pool for every must-serve demand's offer, all at once.
        witness = sum(o["gpu_hours"] for o in offers if o["pool"] == pools[0]["id"]
                      and demands[int(o["demand"][1:])]["must_serve"])
        first = regions[0]["pools"][0]
        first["gpu_count"] = max(first["gpu_count"], int(np.ceil((witness + 1) / window)))
    weights = {"carbon_price_cny_per_t_co2": draw(st.sampled_from([0.0, 50.0]))}
    return Instance.model_validate({
        "name": "hypothesis",
        "window_hours": window,
        "gpu_hour_quantum": quantum,
        "regions": regions,
        "links": links,
        "demands": demands,
        "offers": offers,
        "weights": weights,
    })


SHARES = (0.0, 0.2, 0.25, 0.5, 0.75, 1.0)


@st.composite
def policies(draw, instance: Instance, *, min_quotas: int = 0, max_quotas: int = 2,
             fairness: bool = True) -> Instance:
    """``instance`` (one window) with hub tags on its regions and a valid `Instance.policy`:
    ``min_quotas`` to ``max_quotas`` quotas on sectors and origins present, by work or capacity,
    national or per hub, and (when ``fairness``) any fairness option."""
    _check_range("quotas", min_quotas, max_quotas, 0)
    if instance.timed:
        raise InvalidArgument("policies() takes instances without a horizon")
    data = instance.model_dump()
    hubs = ("hub:a", "hub:b")
    for region in data["regions"]:
        region["tags"] = [draw(st.sampled_from(hubs))]
    tags = sorted({region["tags"][0] for region in data["regions"]})
    sectors = sorted({d.sector.value for d in instance.demands})
    origins = sorted({d.origin for d in instance.demands})
    quotas = []
    for k in range(draw(st.integers(min_quotas, max_quotas))):
        low = draw(st.none() | st.sampled_from(SHARES))
        high = draw(st.sampled_from(SHARES) if low is None else st.none() | st.sampled_from(SHARES))
        if low is not None and high is not None and low > high:
            low, high = high, low
        quotas.append({
            "id": f"q{k}",
            "sector": draw(st.none() | st.sampled_from(sectors)),
            "origin": draw(st.none() | st.sampled_from(origins + tags)),
            "measure": draw(st.sampled_from(["work", "capacity"])),
            "hub": draw(st.none() | st.sampled_from(tags)),
            "min_share": low,
            "max_share": high,
        })
    level = draw(st.sampled_from(["none", "sector", "origin"])) if fairness else "none"
    data["policy"] = {"quotas": quotas, "fairness": level}
    return Instance.model_validate(data)


@st.composite
def timed_instances(
    draw,
    *,
    min_regions: int = 1,
    max_regions: int = 3,
    min_demands: int = 1,
    max_demands: int = 6,
    min_slots: int = 1,
    max_slots: int = 8,
    max_pools_per_region: int = 2,
    services: bool = True,
    offers: bool = True,
    carbon_cap: bool = True,
    connected: bool = False,
) -> Instance:
    """Small valid instances with a horizon (formulation §8): prices, tariff periods and carbon by
    slot, outages, bandwidth by slot, batch jobs with release and deadline slots and data to move,
    services with a load profile and traffic, and a carbon cap. Profiles have one value per slot.
    Demands ask for a precision some pool has; with ``connected`` every region is reachable.
    Nothing guarantees a plan that serves every must-serve job."""
    _check_range("regions", min_regions, max_regions, 1)
    _check_range("demands", min_demands, max_demands, 1)
    _check_range("slots", min_slots, max_slots, 1)
    _check_range("pools_per_region", 1, max_pools_per_region, 1)
    if max_slots > MAX_SLOTS:
        raise InvalidArgument(f"max_slots={max_slots} must be at most MAX_SLOTS={MAX_SLOTS}")
    slots = draw(st.integers(min_slots, max_slots))
    hours = draw(st.sampled_from([0.5, 1.0, 2.0]))

    def profile(values: st.SearchStrategy) -> st.SearchStrategy:
        return st.lists(values, min_size=slots, max_size=slots)

    regions = []
    for r in range(draw(st.integers(min_regions, max_regions))):
        pools = []
        for k in range(draw(st.integers(1 if r == 0 else 0, max_pools_per_region))):
            row = draw(_pool(r, k, universal=False))
            budget = row["gpu_count"]  # outages never take out more GPUs than the pool has
            outages = []
            for _ in range(draw(st.integers(0, 2))):
                if budget == 0:
                    break
                start = draw(st.integers(0, slots - 1))
                gpus = draw(st.integers(1, budget))
                budget -= gpus
                outages.append({"start_slot": start, "end_slot": draw(st.integers(start + 1, slots)),
                                "gpus": gpus, "kind": draw(st.sampled_from(["maintenance", "outage"]))})
            pools.append(row | {"outages": outages})
        region = {
            "id": f"r{r}", "jurisdiction": draw(st.sampled_from(JURISDICTIONS)),
            "lat": 20.0 + r, "lon": 100.0 + r, "pue": draw(st.sampled_from([1.1, 1.2, 1.5])),
            "electricity_price_cny_per_kwh": draw(_money(1.0)),
            "carbon_g_co2_per_kwh": draw(st.sampled_from([100.0, 500.0, 700.0])),
            "pools": pools,
        }
        if draw(st.booleans()):
            region["electricity_price_by_slot_cny_per_kwh"] = draw(profile(_money(1.5)))
            region["tariff_periods"] = "".join(draw(profile(st.sampled_from(TARIFF_PERIODS))))
        if draw(st.booleans()):
            region["carbon_by_slot_g_co2_per_kwh"] = draw(profile(st.sampled_from([50.0, 300.0, 800.0])))
        regions.append(region)
    links = []
    for r in range(1, len(regions)):
        parents = st.lists(st.integers(0, r - 1), unique=True, min_size=1 if connected else 0,
                           max_size=2)
        for t in draw(parents):
            row = {"source": f"r{t}", "target": f"r{r}",
                   "latency_ms": draw(st.integers(0, 20).map(float)),
                   "bandwidth_gbps": draw(st.sampled_from([0.01, 0.1, 1.0, 10.0])),
                   "transfer_cost_cny_per_gb": draw(_money(1.0))}
            if draw(st.booleans()):
                row["bandwidth_by_slot_gbps"] = draw(profile(st.sampled_from([0.0, 0.05, 1.0, 10.0])))
            links.append(row)
    pools = [p for region in regions for p in region["pools"]]
    largest = max(p["gpu_count"] for p in pools)
    precisions = sorted({name for p in pools for name in p["tflops_by_precision"]})
    origins = st.integers(0, len(regions) - 1).map(lambda k: f"r{k}")
    demands, offer_rows = [], []
    for i in range(draw(st.integers(min_demands, max_demands))):
        common = {"id": f"d{i}", "origin": draw(origins),
                  "sector": draw(st.sampled_from(list(Sector))).value,
                  "gang_size": draw(st.integers(1, largest)),
                  "precision": draw(st.sampled_from(precisions)),
                  "strict_precision": draw(st.booleans()) and draw(st.booleans()),
                  "priority": draw(st.sampled_from([1.0, 2.0])),
                  "max_latency_ms": draw(st.none() | st.integers(1, 30).map(float))}
        if services and draw(st.booleans()) and draw(st.booleans()):
            demands.append(common | {
                "kind": "service",
                "load_pflop_per_hour": draw(profile(st.integers(0, 40).map(lambda x: x / 4))),
                "traffic_gbps": draw(st.sampled_from([0.0, 0.01, 0.5])),
                "unserved_penalty_cny_per_pflop": draw(_money(50.0)),
            })
            continue
        release = draw(st.integers(0, slots - 1))
        demand = common | {
            "work_pflop": draw(st.integers(1, 400).map(float)),
            "data_gb": draw(st.sampled_from([0.0, 1.0, 100.0])),
            "must_serve": draw(st.integers(0, 7)) == 0,
            "unserved_penalty_cny": draw(_money(2000.0)),
            "release_slot": release,
            "deadline_slot": draw(st.integers(release + 1, slots)),
            "deadline_hours": draw(st.none() | st.sampled_from([1.0, 4.0, 24.0])),
            "max_cost_cny": draw(st.none() | _money(3000.0)),
        }
        if offers:
            for k in draw(st.lists(st.integers(0, len(pools) - 1), unique=True, max_size=2)):
                offer_rows.append({"demand": f"d{i}", "pool": pools[k]["id"],
                                   "gpu_hours": draw(st.integers(1, 40).map(lambda h: h / 4)),
                                   "price_cny": draw(_money(500.0))})
        demands.append(demand)
    data = {
        "schema_version": 2, "name": "hypothesis-timed",
        "horizon": {"slots": slots, "slot_hours": hours},
        "gpu_hour_quantum": draw(st.sampled_from(QUANTA)),
        "load_quantum_pflop_per_hour": draw(st.sampled_from([0.01, 0.1, 0.5])),
        "regions": regions, "links": links, "demands": demands, "offers": offer_rows,
        "weights": {"carbon_price_cny_per_t_co2": draw(st.sampled_from([0.0, 50.0]))},
    }
    if carbon_cap and draw(st.booleans()):
        data["carbon_cap_t_co2"] = draw(st.sampled_from([0.0, 0.001, 0.1, 10.0]))
    return Instance.model_validate(data)


@st.composite
def plans(draw, instance: Instance) -> Plan:
    """Plans for ``instance`` that list every demand once, respect eligibility and capacity, and
    carry correctly itemized figures: demands take a random eligible option that still fits, or
    stay unserved (must-serve demands are placed first and only left out if nothing fits).

    Over a horizon, batch jobs take a random allowed (pool, start) that fits the GPUs,
    bandwidth and carbon left, and services random replicas and served load per pool and slot
    within the same limits."""
    from scheduler.compile import compile_options
    from scheduler.decode import build_plan

    if not isinstance(instance, Instance):
        raise InvalidArgument(f"plans() needs an Instance, not {type(instance).__name__}")
    if instance.timed:
        return _timed_plan(draw, instance)
    options = compile_options(instance)
    remaining = options.capacity.copy()
    choice = np.full(options.n_demands, -1, dtype=np.int64)
    must = [i for i in range(options.n_demands) if options.must_serve[i]]
    rest = [i for i in range(options.n_demands) if not options.must_serve[i]]
    for i in draw(st.permutations(must)) + draw(st.permutations(rest)):
        span = range(int(options.start[i]), int(options.start[i + 1]))
        fitting = [k for k in span if options.units[k] <= remaining[options.pool[k]]]
        if not fitting:
            continue
        if not options.must_serve[i] and draw(st.booleans()):
            continue
        k = draw(st.sampled_from(fitting))
        choice[i] = k
        remaining[options.pool[k]] -= options.units[k]
    stats = SolveStats(engine="hypothesis", solver_status="drawn", wall_time_s=0.0)
    return build_plan(instance, options, choice, status=Status.FEASIBLE, lower_bound=None,
                      stats=stats)


def _timed_plan(draw, instance: Instance) -> Plan:
    """`plans` for an instance with a horizon."""
    from scheduler.timed import TimedChoice, TimedLoad, compile_timed, grams
    from scheduler.timed_decode import build_timed_plan

    try:
        problem = compile_timed(instance)
    except ValueError:  # a must-serve job with no allowed start: no plan is valid, solve refuses it
        reject()
    b, sv, S = problem.batch, problem.services, problem.slots
    load = TimedLoad(problem)
    option = np.full(b.n_demands, -1, dtype=np.int64)
    start = np.full(b.n_demands, -1, dtype=np.int32)
    must = [i for i in range(b.n_demands) if b.must_serve[i]]
    rest = [i for i in range(b.n_demands) if not b.must_serve[i]]
    for i in draw(st.permutations(must)) + draw(st.permutations(rest)):
        if not b.must_serve[i] and draw(st.booleans()):
            continue
        fitting = []
        for k in range(int(b.start[i]), int(b.start[i + 1])):
            starts, _, co2, rate = problem.start_costs(k)
            fitting += [(k, int(t), int(r), float(c)) for t, c, r in zip(starts, co2, rate, strict=True)
                        if load.fits(k, int(t), int(r), float(c))]
        if fitting:
            k, t, r, c = draw(st.sampled_from(fitting))
            load.add_batch(k, t, r, c)
            option[i], start[i] = k, t
    replicas = np.zeros((sv.n_options, S), dtype=np.int64)
    served = np.zeros((sv.n_options, S), dtype=np.int64)
    for j in draw(st.permutations(range(sv.n_options))):
        d = int(sv.service[j])
        mine = slice(int(sv.start[d]), int(sv.start[d + 1]))
        for t in range(S):
            room = int(load.free_gpus()[sv.pool[j], t]) // int(sv.gang[d])
            if room <= 0 or not draw(st.booleans()):
                continue
            m = draw(st.integers(1, min(room, 3)))
            top = min(m * int(sv.kappa[j]), int(sv.load[d, t] - served[mine, t].sum()))
            if sv.route[j] >= 0 and sv.tau[j] > 0:
                top = min(top, int(load.route_free(np.array([sv.route[j]]))[0, t]) // int(sv.tau[j]))
            u = draw(st.integers(0, max(top, 0)))
            kg = float(load.service_kg[j])
            extra = int(grams(kg + m * float(sv.co2_kg[j, t]))) - int(grams(kg))
            if extra > load.grams_left():
                continue
            load.add_service_slots(np.array([j]), np.array([t]), np.array([m]), np.array([u]))
            replicas[j, t] += m
            served[j, t] += u
    choice = TimedChoice(option=option, start_slot=start, replicas=replicas, served=served)
    stats = SolveStats(engine="hypothesis", solver_status="drawn", wall_time_s=0.0)
    return build_timed_plan(instance, problem, choice, status=Status.FEASIBLE, lower_bound=None,
                            stats=stats)
