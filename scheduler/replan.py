"""Re-planning a horizon instance after events: outages, capacity changes, new and cancelled work.

``replan(instance, plan, now_slot=..., events=..., migration_cost_cny=...)`` returns a verified
plan of the *modified* instance and the change against the old plan (docs/replan.md; the model
is docs/formulation.md §10). Three steps:

1. `apply_events`: the events become facts of a modified instance. An outage of a pool takes its
   GPUs out over the slot range (pool outages); an outage of a region takes out all its pools and
   the links that touch it; an outage of a link sets its bandwidth to 0 over the range. A
   capacity change holds from ``now_slot`` on. Added demands are appended, cancelled ones removed.
   The old plan's batch jobs become `models.Baseline` rows: pinned if they started before now
   (unless their pool lost the GPUs they hold: then they restart from now, progress lost), else
   free to move at their move cost: the migration cost, plus, for a job no event displaced, the
   disruption cost (by default the job's own cost in the old plan: such a job moves only when
   that saves more than its migration cost and its whole cost again, in practice only to make
   room for displaced or new work; an optional one is dropped only when that saves its penalty
   and the disruption cost, which is added to its penalty). A must-serve job an event displaces becomes optional with a
   high penalty (`FORCED_PENALTY_FACTOR`): the events may leave no room for it.
2. `Adjusted`: the compiled problem of the modified instance, narrowed for the engines: a pinned
   job keeps one option and one start; every other start lies at or after now; every option of a
   job of the old plan except its old (pool, start) costs the move cost more (the old option is
   split around the old start, so the engines see plain options). Services keep the old plan's
   replicas before now: those slots are taken out of the engines' problem (load 0, their GPUs and
   bandwidth set aside) and added back after the search, with their cost as a constant.
3. The old plan, narrowed the same way and completed greedily, is the warm start; the engine
   (exact, large or greedy, as for `solve`) searches from it; the choice is mapped back, itemized,
   and checked by the independent verifier against the modified instance.

The call keeps to its time limit as `solve` does: each phase is timed (`_Clock`), and the
search gets what the phases before it leave, less a reserve scaled from the old plan's check
(docs/replan.md, "Time").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models import (
    OPTIMAL_GAP,
    RULES,
    Baseline,
    Demand,
    Instance,
    Offer,
    Outage,
    Plan,
    Reason,
    Replanning,
    SolveStats,
    Status,
    Verification,
    relative_gap,
)
from scheduler.params import Progress, SolveParams
from scheduler.timed import BATCH_PER_DEMAND, BatchOptions, TimedChoice, TimedProblem
from scheduler.verify import verify

DEFAULT_MIGRATION_COST_CNY = 100.0
"""The move cost per job when none is given: about a tenth of a median batch job's cost in the
shipped week (docs/replan.md)."""

MAX_COST_CNY = 1e15
"""The largest migration or disruption cost accepted."""

FORCED_PENALTY_FACTOR = 10.0
"""A must-serve job an event displaces (its pool lost the GPUs it held, or its data's route is
cut) becomes optional, its unserved penalty raised to at least this many times what the old plan
paid for it: it is left out only when no room is left at any reasonable price."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# -- events --------------------------------------------------------------------------------------


class OutageEvent(_Frozen):
    """A region, pool or link (``SOURCE-TARGET``) out over slots ``[from_slot, to_slot)``."""

    target: str = Field(min_length=1)
    from_slot: int
    to_slot: int


class CapacityEvent(_Frozen):
    """A pool holds ``gpus`` GPUs from now on (before outages)."""

    pool: str = Field(min_length=1)
    gpus: int = Field(ge=0, le=10_000_000)


class Events(_Frozen):
    """What happened: combinable; each list may hold many."""

    outages: tuple[OutageEvent, ...] = ()
    capacity: tuple[CapacityEvent, ...] = ()
    add: tuple[Demand, ...] = ()
    add_offers: tuple[Offer, ...] = ()
    cancel: tuple[str, ...] = ()


class ReplanError(ValueError):
    """Events or a plan that cannot be used. ``where``: ``"events"`` (the command's arguments),
    ``"plan"``, ``"add"`` (the added demands) or ``"instance"``; each message names the object
    and the field."""

    def __init__(self, problems: list[str], where: str = "events"):
        self.problems = problems
        self.where = where
        super().__init__("\n".join(problems))


def parse_outage(text: str) -> OutageEvent:
    """``ID@FROM-TO`` as an `OutageEvent` (the id may itself hold ``@`` and ``-``)."""
    target, at, span = text.rpartition("@")
    start, dash, end = span.partition("-")
    try:
        if not (at and target and dash):
            raise ValueError
        return OutageEvent(target=target, from_slot=int(start), to_slot=int(end))
    except ValueError:
        raise ReplanError([f"--outage '{text}': expected ID@FROM-TO (slots, e.g. "
                           "horinger_cluster@24-48)"]) from None


def parse_capacity(text: str) -> CapacityEvent:
    """``POOL=GPUS`` as a `CapacityEvent`."""
    pool, eq, gpus = text.rpartition("=")
    try:
        if not (eq and pool):
            raise ValueError
        return CapacityEvent(pool=pool, gpus=int(gpus))
    except ValueError:
        raise ReplanError([f"--capacity '{text}': expected POOL=GPUS (a whole number of GPUs, "
                           "0 or more)"]) from None


# -- the modified instance -----------------------------------------------------------------------


@dataclass(frozen=True)
class Modified:
    """The modified instance, and what the events did to the old plan's jobs."""

    instance: Instance
    restarted: dict[str, str]  # demand -> why it restarts (its pool lost the GPUs it held)
    blocked: dict[str, str]  # demand -> the event that took its old slots, where one did
    cancelled: tuple[str, ...]
    added: tuple[str, ...]
    disruption: dict[str, float] = field(default_factory=dict)  # undisturbed job -> its disruption cost


def _links_of(instance: Instance, target: str) -> list[int]:
    """Link indices a ``SOURCE-TARGET`` id names (either direction), trying every dash."""
    regions = {r.id for r in instance.regions}
    out = []
    for k, link in enumerate(instance.links):
        if target in (f"{link.source}-{link.target}", f"{link.target}-{link.source}"):
            if link.source in regions and link.target in regions:
                out.append(k)
    return out


def _resolve(instance: Instance, event: OutageEvent) -> tuple[list[str], list[int]]:
    """The pools and links an outage takes out."""
    regions = {r.id: r for r in instance.regions}
    if event.target in regions:
        region = regions[event.target]
        links = [k for k, l in enumerate(instance.links) if event.target in (l.source, l.target)]
        return [p.id for p in region.pools], links
    if event.target in {p.id for _, p in instance.pools()}:
        return [event.target], []
    links = _links_of(instance, event.target)
    if links:
        return [], links
    raise ReplanError([f"--outage '{event.target}@{event.from_slot}-{event.to_slot}': field 'target' "
                       f"names no region, pool or link (SOURCE-TARGET) of the instance"])


def _event_problems(instance: Instance, now: int, events: Events) -> list[str]:
    """Ranges, overlaps, unknown ids: every problem with the events, each naming the event."""
    S = instance.horizon.slots
    out = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for e in events.outages:
        name = f"--outage '{e.target}@{e.from_slot}-{e.to_slot}'"
        if e.from_slot < 0 or e.from_slot >= S:
            out.append(f"{name}: field 'from_slot' {e.from_slot} is outside the horizon (0 to {S - 1})")
        elif e.to_slot <= e.from_slot:
            out.append(f"{name}: field 'to_slot' {e.to_slot} is not after 'from_slot' {e.from_slot} "
                       "(a reversed or empty range)")
        elif e.to_slot > S:
            out.append(f"{name}: field 'to_slot' {e.to_slot} is after the horizon's end ({S} slots)")
        elif e.to_slot <= now:
            out.append(f"{name}: field 'to_slot' {e.to_slot} is not after now (slot {now}): the past "
                       "cannot change")
        else:
            for a, b in spans.get(e.target, []):
                if e.from_slot < b and a < e.to_slot:
                    out.append(f"{name}: field 'from_slot': the range overlaps {e.target}@{a}-{b} "
                               "(give one outage per range)")
            spans.setdefault(e.target, []).append((e.from_slot, e.to_slot))
    pools = {p.id for _, p in instance.pools()}
    seen = set()
    for e in events.capacity:
        if e.pool not in pools:
            out.append(f"--capacity '{e.pool}={e.gpus}': field 'pool' names unknown pool '{e.pool}'")
        if e.pool in seen:
            out.append(f"--capacity '{e.pool}={e.gpus}': field 'pool' is changed more than once")
        seen.add(e.pool)
    ids = {d.id for d in instance.demands}
    for d in events.cancel:
        if d not in ids:
            out.append(f"--cancel '{d}': field 'demand' names unknown demand '{d}'")
    return out


def _available(pool, S: int) -> np.ndarray:
    avail = np.full(S, pool.gpu_count, dtype=np.int64)
    for o in pool.outages:
        avail[o.start_slot:o.end_slot] -= o.gpus
    return avail


def _outage_runs(extra: np.ndarray, kind: str) -> list[Outage]:
    """Outages (one per run of equal values) that take ``extra[t]`` GPUs out in each slot."""
    out = []
    t, S = 0, len(extra)
    while t < S:
        if extra[t] <= 0:
            t += 1
            continue
        end = t
        while end < S and extra[end] == extra[t]:
            end += 1
        out.append(Outage(start_slot=t, end_slot=end, gpus=int(extra[t]), kind=kind))
        t = end
    return out


def check_inputs(instance: Instance, plan: Plan, now_slot: int,
                 migration_cost_cny: float = DEFAULT_MIGRATION_COST_CNY,
                 disruption_cost_cny: float | None = None) -> None:
    """The bad-input rules on the instance, ``now`` and the old plan, the plan checked by the
    independent verifier against the instance (it must belong to it). Raises `ReplanError`."""
    if instance.horizon is None:
        raise ReplanError(["instance: re-planning needs a horizon ('horizon', schema version 2); "
                           "without one there is no 'now' to re-plan from"], "instance")
    S = instance.horizon.slots
    if not 0 <= now_slot < S:
        raise ReplanError([f"--now: slot {now_slot} is outside the horizon (0 to {S - 1})"])
    if not 0 <= migration_cost_cny <= MAX_COST_CNY:
        raise ReplanError([f"--migration-cost: {migration_cost_cny:g} CNY is not between 0 and 1e15"])
    if disruption_cost_cny is not None and not 0 <= disruption_cost_cny <= MAX_COST_CNY:
        raise ReplanError([f"--disruption-cost: {disruption_cost_cny:g} CNY is not between 0 and 1e15"])
    if plan.status not in (Status.OPTIMAL, Status.FEASIBLE):
        raise ReplanError([f"plan: field 'status' is {plan.status.value}: there is no plan to re-plan"],
                          "plan")
    checked = verify(instance, plan)
    if not checked.ok:
        shown = [f"plan: {v.code} ({v.subject}): {v.message}" for v in checked.violations[:5]]
        more = len(checked.violations) - len(shown)
        raise ReplanError(["plan: does not belong to the instance (the verifier rejects it)"] + shown
                          + ([f"(and {more} more)"] if more else []), "plan")


def apply_events(instance: Instance, plan: Plan, now_slot: int, events: Events = Events(),
                 migration_cost_cny: float = DEFAULT_MIGRATION_COST_CNY, resend_cost: bool = True,
                 *, checked: bool = False, disruption_cost_cny: float | None = None) -> Modified:
    """The modified instance of a re-plan (module text, step 1); ``resend_cost`` False leaves
    out the cost of sending data again (`Baseline.retransfer_cny` 0); ``checked`` True skips
    `check_inputs` (the caller ran it); ``disruption_cost_cny``: added to the move cost of each
    job no event displaced (None: the job's own cost in the old plan; 0: none). Raises
    `ReplanError`."""
    if not checked:
        check_inputs(instance, plan, now_slot, migration_cost_cny, disruption_cost_cny)
    S = instance.horizon.slots
    problems = _event_problems(instance, now_slot, events)
    if problems:
        raise ReplanError(problems)
    now = now_slot

    # -- GPUs and bandwidth per slot after the events ------------------------------------------
    pairs = instance.pools()
    pool_of = {p.id: (r, p) for r, p in pairs}
    counts = {p.id: p.gpu_count for _, p in pairs}
    before = {p.id: _available(p, S) for _, p in pairs}
    after = {pid: a.copy() for pid, a in before.items()}
    why_out: dict[str, list[tuple[int, int, str]]] = {}
    for e in events.capacity:
        _, pool = pool_of[e.pool]
        change = e.gpus - pool.gpu_count
        if change < 0:
            after[e.pool][now:] = np.maximum(after[e.pool][now:] + change, 0)
            why_out.setdefault(e.pool, []).append((now, S, f"--capacity {e.pool}={e.gpus}"))
        elif change > 0:
            counts[e.pool] = e.gpus
            after[e.pool][now:] += change
    bandwidth_zero: dict[int, list[tuple[int, int]]] = {}
    for e in events.outages:
        pools, links = _resolve(instance, e)
        lo = max(e.from_slot, now)
        for pid in pools:
            after[pid][lo:e.to_slot] = 0
            why_out.setdefault(pid, []).append((lo, e.to_slot, f"--outage {e.target}@{e.from_slot}-{e.to_slot}"))
        for k in links:
            bandwidth_zero.setdefault(k, []).append((lo, e.to_slot))

    # -- the old plan's jobs: pinned, restarted or free to move --------------------------------
    cancelled = set(events.cancel)
    demands = {d.id: d for d in instance.demands}
    room = {pid: after[pid].copy() for pid in after}
    started = sorted((a for a in plan.assignments if a.start_slot < now and a.demand not in cancelled),
                     key=lambda a: (a.start_slot, a.demand))
    restarted: dict[str, str] = {}
    baseline: list[Baseline] = []
    for a in started:
        d = demands[a.demand]
        lo, hi = now, min(a.end_slot, S)
        if hi > lo and room[a.pool][lo:hi].min() < d.gang_size:
            slot = lo + int(np.argmax(room[a.pool][lo:hi] < d.gang_size))
            cause = next((w for f, t, w in why_out.get(a.pool, []) if f <= slot < t), "an event")
            restarted[a.demand] = (f"'{a.pool}' lost the GPUs it held in slot {slot} ({cause}): "
                                   "restarted from now, progress lost")
            continue
        room[a.pool][lo:hi] -= d.gang_size
        baseline.append(Baseline(demand=a.demand, pool=a.pool, start_slot=a.start_slot, pinned=True))
    blocked: dict[str, str] = {}
    disruption: dict[str, float] = {}
    link_index = {frozenset((l.source, l.target)): k for k, l in enumerate(instance.links)}
    later = sorted((a for a in plan.assignments if a.start_slot >= now and a.demand not in cancelled),
                   key=lambda a: (a.start_slot, a.demand))
    for a in later:
        d = demands[a.demand]
        retransfer = 0.0
        release = d.release_slot or 0
        if resend_cost and a.route and a.start_slot > release and release < now:
            retransfer = a.transfer_cny * min(1.0, (now - release) / (a.start_slot - release))
        for lo, hi, what in _route_outages(link_index, a.route or (), bandwidth_zero):
            if lo < a.start_slot and hi > max(now, release):
                blocked[a.demand] = f"its data's route is cut ({what})"
        hi = min(a.end_slot, S)
        span = room[a.pool][a.start_slot:hi]
        if a.demand not in blocked and len(span) and span.min() < d.gang_size:
            slot = a.start_slot + int(np.argmax(span < d.gang_size))
            cause = next((w for f, t, w in why_out.get(a.pool, []) if f <= slot < t), "an event")
            blocked[a.demand] = f"'{a.pool}' lost the GPUs it held in slot {slot} ({cause})"
        elif a.demand not in blocked:
            span -= d.gang_size
        if a.demand not in blocked:  # its spot still fits: moving it disrupts work nothing forced
            disruption[a.demand] = a.cost_cny if disruption_cost_cny is None else disruption_cost_cny
        baseline.append(Baseline(demand=a.demand, pool=a.pool, start_slot=a.start_slot,
                                 move_cost_cny=migration_cost_cny + disruption.get(a.demand, 0.0),
                                 retransfer_cny=retransfer))

    # -- regions, links, demands ---------------------------------------------------------------
    regions = []
    for region in instance.regions:
        pools = []
        for pool in region.pools:
            count = counts[pool.id]
            grown = count - pool.gpu_count  # GPUs added from now on: out before now
            extra = (before[pool.id] + np.where(np.arange(S) >= now, grown, 0)) - after[pool.id]
            outages = list(pool.outages)
            if grown > 0 and now > 0:
                outages.append(Outage(start_slot=0, end_slot=now, gpus=grown, kind="reserved"))
            outages.extend(_outage_runs(extra, "outage"))
            pools.append(pool.model_copy(update={"gpu_count": count, "outages": tuple(outages)}))
        regions.append(region.model_copy(update={"pools": tuple(pools)}))
    links = list(instance.links)
    for k, spans in bandwidth_zero.items():
        link = links[k]
        profile = list(instance.horizon.expand(link.bandwidth_by_slot_gbps)
                       if link.bandwidth_by_slot_gbps is not None else [link.bandwidth_gbps] * S)
        for lo, hi in spans:
            profile[lo:hi] = [0.0] * (hi - lo)
        links[k] = link.model_copy(update={"bandwidth_by_slot_gbps": tuple(profile)})
    kept = []
    assigned = {a.demand: a for a in plan.assignments}
    for d in instance.demands:
        if d.id in cancelled:
            continue
        hit = d.must_serve and (d.id in restarted or d.id in blocked)
        if hit:  # optional from now, and dear to drop (module text)
            floor = FORCED_PENALTY_FACTOR * assigned[d.id].cost_cny
            d = d.model_copy(update={"must_serve": False,
                                     "unserved_penalty_cny": max(d.unserved_penalty_cny, floor)})
        if d.id in restarted:
            d = d.model_copy(update={"release_slot": now})
        weight = instance.weights.unserved * d.priority
        if d.id in disruption and not d.must_serve and weight > 0:  # dropping it disrupts it too
            d = d.model_copy(update={"unserved_penalty_cny": d.unserved_penalty_cny
                                     + disruption[d.id] / weight})
        kept.append(d)
    clash = [d.id for d in events.add if d.id in demands]
    if clash:
        raise ReplanError([f"demand '{i}': field 'id' is already used by the instance" for i in clash[:20]],
                          "add")
    offers = tuple(o for o in instance.offers if o.demand not in cancelled) + events.add_offers
    data = instance.model_dump(exclude={"regions", "links", "demands", "offers", "replanning"})
    try:
        grown = Instance.model_validate({**data, "regions": regions, "links": links,
                                         "demands": kept + list(events.add), "offers": offers})
    except ValidationError as error:
        raise ReplanError([_message(e) for e in error.errors()][:20], "add") from None
    modified = grown.model_copy(update={"replanning": Replanning(now_slot=now, baseline=tuple(baseline))})
    return Modified(modified, restarted, blocked, tuple(sorted(cancelled)), tuple(d.id for d in events.add),
                    disruption)


def _route_outages(index: dict[frozenset, int], route: tuple[str, ...], cut: dict[int, list[tuple[int, int]]]):
    """(from, to, link) for each cut span of a link along ``route`` (``index``: link of each
    pair of regions)."""
    if not cut:
        return
    for pair in zip(route, route[1:]):
        k = index.get(frozenset(pair))
        for lo, hi in cut.get(k, ()):
            yield lo, hi, f"link {pair[0]}-{pair[1]} out in slots {lo}-{hi - 1}"


def _message(error: dict) -> str:
    where = ".".join(str(x) for x in error.get("loc", ()))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


# -- the problem the engines solve --------------------------------------------------------------


class Adjusted:
    """The compiled problem narrowed for the engines (module text, step 2), and the way back.

    ``src[k']`` is the option of the compiled problem that adjusted option ``k'`` restricts;
    ``extra[k']`` its move cost; ``old[i]`` the adjusted option holding job ``i``'s old (pool,
    start), -1 if none; ``offset`` the cost of the services' slots before now, held fixed.
    """

    def __init__(self, problem: TimedProblem, instance: Instance, plan: Plan):
        self.real = problem
        rp = instance.replanning
        self.now = now = rp.now_slot
        b = problem.batch
        ids = [instance.demands[int(r)].id for r in b.rows]
        pairs = instance.pools()
        pool_index = {p.id: k for k, (_, p) in enumerate(pairs)}
        region_index = {r.id: k for k, r in enumerate(instance.regions)}
        region_of = np.array([region_index[r.id] for r, _ in pairs], dtype=np.int64)
        nb = b.n_demands
        base_pool = np.full(nb, -1, dtype=np.int64)
        base_start = np.full(nb, -1, dtype=np.int64)
        pinned = np.zeros(nb, dtype=bool)
        move = np.zeros(nb)
        retransfer = np.zeros(nb)
        by_id = {base.demand: base for base in rp.baseline}
        for i, demand in enumerate(ids):
            base = by_id.get(demand)
            if base is not None:
                base_pool[i], base_start[i], pinned[i] = pool_index[base.pool], base.start_slot, base.pinned
                move[i], retransfer[i] = base.move_cost_cny, base.retransfer_cny
        dem = b.demand
        has = base_pool[dem] >= 0
        is_old = has & (b.pool == base_pool[dem])
        other_region = has & (region_of[b.pool] != region_of[np.maximum(base_pool[dem], 0)])
        extra = np.where(has & ~pinned[dem], move[dem] + np.where(other_region, retransfer[dem], 0.0), 0.0)
        first = np.where(pinned[dem], b.first, np.maximum(b.first, now)).astype(np.int64)
        last = b.last.astype(np.int64)
        s_old = base_start[dem]
        inside = is_old & (first <= s_old) & (s_old <= last)
        k_all = np.arange(b.n_options, dtype=np.int64)
        # Pieces: (option, first, last, extra, holds the old spot).
        plain = ~inside & ~pinned[dem]
        split = inside & ~pinned[dem]
        pin = is_old & pinned[dem]
        pieces = [
            (k_all[plain], first[plain], last[plain], extra[plain], np.zeros(plain.sum(), bool)),
            (k_all[split], s_old[split], s_old[split], np.zeros(split.sum()), np.ones(split.sum(), bool)),
            (k_all[split], first[split], s_old[split] - 1, extra[split], np.zeros(split.sum(), bool)),
            (k_all[split], s_old[split] + 1, last[split], extra[split], np.zeros(split.sum(), bool)),
            (k_all[pin], s_old[pin], s_old[pin], np.zeros(pin.sum()), np.ones(pin.sum(), bool)),
        ]
        src, lo, hi, ex, holds = (np.concatenate(col) for col in zip(*pieces, strict=True))
        keep = lo <= hi
        src, lo, hi, ex, holds = src[keep], lo[keep], hi[keep], ex[keep], holds[keep]
        order = np.argsort(dem[src], kind="stable")
        src, lo, hi, ex, holds = src[order], lo[order], hi[order], ex[order], holds[order]
        self.src, self.extra = src, ex
        start = np.zeros(nb + 1, dtype=np.int64)
        np.cumsum(np.bincount(dem[src], minlength=nb), out=start[1:])
        self.old = np.full(nb, -1, dtype=np.int64)
        self.old[dem[src[holds]]] = np.flatnonzero(holds)
        self.pinned = pinned
        had = np.diff(b.start) > 0
        lost = had & (np.diff(start) == 0)
        window = RULES.index(Reason.WINDOW)
        # A job with no option whose window closes by now fails the window rule first on every
        # pool, whatever rule its original options stopped at (the verifier reads it so).
        deadline = np.array([instance.demands[int(r)].deadline_slot or problem.slots for r in b.rows],
                            dtype=np.int64)
        lost |= ~had & ~pinned & (deadline <= now) & (b.nearest_miss > window)
        updates = {f.name: getattr(b, f.name)[src] for f in fields(BatchOptions)
                   if f.name not in BATCH_PER_DEMAND and isinstance(getattr(b, f.name), np.ndarray)}
        updates.update(
            first=lo.astype(b.first.dtype), last=hi.astype(b.last.dtype),
            fixed_cost=b.fixed_cost[src] + ex, start=start, must_serve=b.must_serve | pinned,
            nearest_miss=np.where(lost, np.int8(window), b.nearest_miss).astype(b.nearest_miss.dtype),
        )
        batch = replace(b, **updates)
        self.old_services = _old_service_arrays(problem, instance, plan)
        self.past_replicas, self.past_served, self.offset, services, avail, bandwidth, cap = \
            self._fix_service_past(problem)
        self.problem = replace(problem, batch=batch, services=services, avail=avail,
                               bandwidth=bandwidth, carbon_cap_g=cap)
        self.priced = np.zeros(batch.n_demands, dtype=bool)  # jobs the warm start has priced

    def _fix_service_past(self, pr: TimedProblem):
        """The old plan's service replicas before now, held fixed: their arrays, their cost, and
        the problem's services, GPUs, bandwidth and carbon cap without them."""
        sv, now = pr.services, self.now
        replicas, served = (a.copy() for a in self.old_services)
        replicas[:, now:] = 0
        served[:, now:] = 0
        if now == 0 or not sv.n_services:
            return replicas, served, 0.0, sv, pr.avail, pr.bandwidth, pr.carbon_cap_g
        total = np.zeros(sv.load.shape, dtype=np.int64)
        np.add.at(total, sv.service, served)
        total[:, :now] = np.minimum(total[:, :now], sv.load[:, :now])
        left = sv.load[:, :now] - total[:, :now]
        offset = math.fsum((sv.rent[:, :now] * replicas[:, :now]).ravel().tolist()
                           + (sv.transfer_per_quantum[:, None] * served[:, :now]).ravel().tolist()
                           + (sv.penalty_per_quantum[:, None] * left).ravel().tolist())
        load = sv.load.copy()
        load[:, :now] = 0
        avail = pr.avail.copy()
        np.add.at(avail, sv.pool.astype(np.int64), -(sv.gang[sv.service][:, None] * replicas))
        bandwidth = pr.bandwidth.copy()
        for j in np.flatnonzero((sv.route >= 0) & (sv.tau > 0)).tolist():
            for link in pr.routes[int(sv.route[j])].tolist():
                bandwidth[link] -= sv.tau[j] * served[j]
        cap = pr.carbon_cap_g
        if cap is not None:
            grams = np.ceil((replicas * sv.co2_kg).sum(axis=1) * 1000.0 - 1e-9).astype(np.int64)
            cap = int(cap - np.maximum(grams, 0).sum())
        return (replicas, served, offset, replace(sv, load=load), np.maximum(avail, 0),
                np.maximum(bandwidth, 0), cap)

    def back(self, choice: TimedChoice | None) -> TimedChoice | None:
        """An engine's choice as a choice of the compiled problem, with the fixed past added."""
        if choice is None:
            return None
        option = choice.option.copy()
        served = option >= 0
        option[served] = self.src[option[served]]
        return TimedChoice(option=option, start_slot=choice.start_slot,
                           replicas=choice.replicas + self.past_replicas,
                           served=choice.served + self.past_served)

    def migration(self, choice: TimedChoice | None) -> float:
        """The move costs an engine's choice pays."""
        if choice is None:
            return 0.0
        return math.fsum(self.extra[choice.option[choice.option >= 0]].tolist())

    def warm_start(self, stopped: Callable[[], bool] | None, price_all: bool = True):
        """The old plan on the narrowed problem, completed greedily: (choice, complete, greedy).

        Order: pinned jobs; the must-serve jobs' old spots, then the other must-serve jobs at
        their cheapest fitting start; the optional jobs' old spots; the services (their old
        replicas from now on where they fit, else covered afresh); the other optional jobs.
        ``price_all`` False prices the candidate starts of only the jobs that need a new spot
        (the greedy's ``cheapest`` is then infinite for the others; ``priced`` marks the jobs
        priced, whose ``cheapest`` `simple_bound` reuses)."""
        from scheduler.engines.timed_greedy import TimedGreedy

        pr = self.problem
        b, sv = pr.batch, pr.services
        g = TimedGreedy(pr, stopped, jobs=None if price_all else np.zeros(0, dtype=np.int64))
        self.priced = np.full(b.n_demands, price_all)
        has_old = self.old >= 0

        def keep_old(demands: np.ndarray) -> None:
            demands = demands[np.argsort(b.first[self.old[demands]], kind="stable")]
            ks = self.old[demands]
            _, co2, rate, _ = pr.evaluate(ks, b.first[ks].astype(np.int64))
            for i, k, r, c in zip(demands.tolist(), ks.tolist(), rate.tolist(), co2.tolist(), strict=True):
                s = int(b.first[k])
                if g.load.fits(k, s, int(r), float(c)):
                    g.load.add_batch(k, s, int(r), float(c))
                    g.option[i], g.start[i] = k, s

        def place_rest(demands: np.ndarray) -> None:
            rest = demands[g.option[demands] < 0]
            if not price_all:
                g.candidates.price(rest)
                self.priced[rest] = True
            savings = b.penalty[rest] - g.cheapest[rest]
            for i in rest[np.argsort(-savings, kind="stable")].tolist():
                g.place(i)

        keep_old(np.flatnonzero(has_old & self.pinned))
        must = b.must_serve & ~self.pinned
        keep_old(np.flatnonzero(has_old & must))
        place_rest(np.flatnonzero(must))
        keep_old(np.flatnonzero(has_old & ~b.must_serve))
        real = self.real.services
        for d in range(sv.n_services):
            js = np.arange(int(sv.start[d]), int(sv.start[d + 1]))
            old = self._old_future(d, real)
            if old is None or not self._fits_service(g.load, js, *old):
                g.cover(d)
                continue
            reps, srv = old
            jj, tt = np.nonzero(reps)
            g.load.add_service_slots(js[jj], tt, reps[jj, tt], srv[jj, tt])
            g.replicas[js] += reps
            g.served[js] += srv
        place_rest(np.flatnonzero(~b.must_serve))
        complete = not np.any(b.must_serve & (g.option < 0))
        choice = TimedChoice(g.option.copy(), g.start.astype(np.int32), g.replicas.copy(), g.served.copy())
        return choice, complete, g

    def simple_bound(self, greedy) -> float | None:
        """`timed_lower_bound` of the narrowed problem without pricing every start again: the
        jobs the warm start ``greedy`` priced (``priced``) keep their cheapest start; a job whose
        old spot costs no more than the fixed cost of each of its other options (a start costs
        its option's fixed cost plus energy terms that are never negative: with the move and
        disruption costs in those fixed costs this is the common case) counts its old spot's
        cost, which is its cheapest start if that fits alone and below it otherwise (still a
        bound); only the other jobs are priced."""
        from scheduler.engines.timed_greedy import Candidates, timed_lower_bound

        pr = self.problem
        b = pr.batch
        cheapest = greedy.cheapest.copy()
        todo = ~self.priced
        kept = np.flatnonzero(todo & (self.old >= 0))
        if len(kept):
            k = self.old[kept]
            cost, _, _, allowed = pr.evaluate(k, b.first[k].astype(np.int64), co2=False)
            cost = np.where(allowed, cost, np.inf)
            others = b.fixed_cost.astype(np.float64)
            others[self.old[self.old >= 0]] = np.inf
            has = np.diff(b.start) > 0
            floor = np.full(b.n_demands, np.inf)
            floor[has] = np.minimum.reduceat(others, b.start[:-1][has])
            sure = cost <= floor[kept]
            cheapest[kept[sure]] = cost[sure]
            todo[kept[sure]] = False
        rest = np.flatnonzero(todo)
        if len(rest):
            cheapest[rest] = Candidates(pr, keep=1, jobs=rest).cost[rest, 0]
        return timed_lower_bound(pr, cheapest)

    def _old_future(self, d: int, real):
        """The old plan's replicas and served quanta of service ``d`` from now on, or None."""
        lo, hi = int(real.start[d]), int(real.start[d + 1])
        if hi == lo:
            return None
        reps = self.old_services[0][lo:hi].copy()
        srv = self.old_services[1][lo:hi].copy()
        reps[:, :self.now] = 0
        srv[:, :self.now] = 0
        return (reps, srv) if reps.any() else None

    def _fits_service(self, load, js: np.ndarray, reps: np.ndarray, srv: np.ndarray) -> bool:
        pr, sv = self.problem, self.problem.services
        if np.any(srv.sum(axis=0) > sv.load[int(sv.service[js[0]])]):
            return False
        need = np.zeros_like(pr.avail)
        np.add.at(need, sv.pool[js].astype(np.int64), sv.gang[sv.service[js]][:, None] * reps)
        if np.any(load.gpus + need > pr.avail):
            return False
        link = np.zeros_like(pr.bandwidth)
        for r, j in enumerate(js.tolist()):
            if sv.route[j] >= 0 and sv.tau[j] > 0:
                link[pr.routes[int(sv.route[j])]] += sv.tau[j] * srv[r]
        return not np.any(load.link + link > pr.bandwidth)


def _old_service_arrays(problem: TimedProblem, instance: Instance, plan: Plan):
    """The old plan's service replicas and served quanta on the compiled problem's options."""
    sv = problem.services
    Q = instance.load_quantum_pflop_per_hour
    replicas = np.zeros((sv.n_options, problem.slots), dtype=np.int64)
    served = np.zeros_like(replicas)
    row_of = {instance.demands[int(r)].id: k for k, r in enumerate(sv.rows)}
    pool_index = {p.id: k for k, (_, p) in enumerate(instance.pools())}
    j_of = {(int(sv.service[j]), int(sv.pool[j])): j for j in range(sv.n_options)}
    for sp in plan.services:
        d = row_of.get(sp.demand)
        for pl in sp.placements if d is not None else ():
            j = j_of.get((d, pool_index.get(pl.pool, -1)))
            if j is not None:
                replicas[j] = pl.replicas
                served[j] = np.rint(np.array(pl.served_pflop_per_hour) / Q).astype(np.int64)
    return replicas, np.minimum(served, replicas * sv.kappa[:, None])


# -- the change ----------------------------------------------------------------------------------


class Change(_Frozen):
    """One demand whose fate differs between the old plan and the new one."""

    demand: str
    kind: str = Field(description="restarted, moved, retimed, newly_unserved, newly_served, "
                      "added_unserved (an added demand left unserved), cancelled")
    old_pool: str | None = None
    old_start: int | None = None
    new_pool: str | None = None
    new_start: int | None = None
    cost_delta_cny: float = Field(description="The demand's new cost (with its move cost) less its old.")
    reason: str


class PlanChange(_Frozen):
    """What the re-plan changed, each entry with its reason, and what it cost."""

    now_slot: int
    changes: tuple[Change, ...]
    cost_before_cny: float = Field(description="The old plan's objective (on the old instance).")
    cost_after_cny: float = Field(description="The new plan's objective, migration included.")
    cost_delta_cny: float
    migration_cny: float = Field(description="The move costs the new plan pays, its disruption costs included.")
    disruption_cny: float = Field(
        default=0.0, description="The disruption costs the new plan pays: on the moves (in "
        "migration_cny) and drops (in the unserved penalties) of jobs no event displaced.")
    pinned: int = Field(description="Jobs that started before now and stay where they are.")
    planned_on_lost_capacity: int = Field(
        description="Jobs of the old plan whose pool lost GPUs in slots they held (restarted or blocked).")

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)


def plan_change(old_plan: Plan, new_plan: Plan, modified: Modified) -> PlanChange:
    """The change from ``old_plan`` to ``new_plan``, each entry with its reason."""
    old = {a.demand: a for a in old_plan.assignments}
    new = {a.demand: a for a in new_plan.assignments}
    old_unserved = {u.demand: u for u in old_plan.unserved}
    new_unserved = {u.demand: u for u in new_plan.unserved}
    rp = modified.instance.replanning
    bases = {b.demand: b for b in rp.baseline}
    regions = {p.id: r.id for r, p in modified.instance.pools()}
    added = set(modified.added)
    out: list[Change] = []
    for demand in modified.cancelled:
        a = old.get(demand)
        if a is not None:
            saved = a.cost_cny
        else:
            saved = old_unserved[demand].penalty_cny if demand in old_unserved else 0.0
        out.append(Change(demand=demand, kind="cancelled", old_pool=a.pool if a else None,
                          old_start=a.start_slot if a else None, cost_delta_cny=-saved,
                          reason="cancelled"))
    for demand, a in new.items():
        was = old.get(demand)
        if was is None:
            before = old_unserved[demand].penalty_cny if demand in old_unserved else 0.0
            why = "added" if demand in added else "room or price changed: now worth serving"
            out.append(Change(demand=demand, kind="newly_served", new_pool=a.pool, new_start=a.start_slot,
                              cost_delta_cny=a.cost_cny - before, reason=why))
            continue
        if (was.pool, was.start_slot) == (a.pool, a.start_slot):
            continue
        base = bases.get(demand)
        move = 0.0
        if base is not None and not base.pinned:
            move = base.move_cost_cny + (base.retransfer_cny if regions[a.pool] != regions[was.pool] else 0.0)
        delta = a.cost_cny + move - was.cost_cny
        if demand in modified.restarted:
            kind, why = "restarted", modified.restarted[demand]
        else:
            kind = "moved" if a.pool != was.pool else "retimed"
            if demand in modified.blocked:
                why = modified.blocked[demand]
            elif delta < 0:
                why = f"cheaper by {-delta:,.2f} CNY with its move cost" + (
                    " (disruption cost included)" if modified.disruption.get(demand) else "")
            else:
                why = "made room for other work (the plan as a whole costs less)"
        out.append(Change(demand=demand, kind=kind, old_pool=was.pool, old_start=was.start_slot,
                          new_pool=a.pool, new_start=a.start_slot, cost_delta_cny=delta, reason=why))
    for demand, u in new_unserved.items():
        was = old.get(demand)
        if was is None and demand not in added:
            continue
        why = u.reason.value
        kind = "added_unserved" if was is None else "newly_unserved"
        if demand in modified.restarted:
            why = f"{modified.restarted[demand]}; no room to restart ({u.reason.value})"
        elif demand in modified.blocked:
            why = f"{modified.blocked[demand]}; then {u.reason.value}"
        out.append(Change(demand=demand, kind=kind, old_pool=was.pool if was else None,
                          old_start=was.start_slot if was else None,
                          cost_delta_cny=u.penalty_cny - (was.cost_cny if was else 0.0), reason=why))
    order = {"restarted": 0, "moved": 1, "retimed": 2, "newly_unserved": 3, "newly_served": 4,
             "added_unserved": 5, "cancelled": 6}
    out.sort(key=lambda c: (order[c.kind], c.demand))
    before, after = old_plan.objective or 0.0, new_plan.objective or 0.0
    disruption = math.fsum(modified.disruption.get(c.demand, 0.0) for c in out
                           if c.kind in ("moved", "retimed", "newly_unserved"))
    return PlanChange(
        now_slot=rp.now_slot, changes=tuple(out), cost_before_cny=before, cost_after_cny=after,
        cost_delta_cny=after - before, migration_cny=new_plan.costs.migration_cny,
        disruption_cny=disruption, pinned=sum(1 for b in rp.baseline if b.pinned),
        planned_on_lost_capacity=len(modified.restarted) + len(modified.blocked))


# -- the re-plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplanResult:
    """The new plan, the verifier's verdict on it (against ``instance``, the modified instance),
    and the change against the old plan."""

    plan: Plan
    verification: Verification
    instance: Instance
    change: PlanChange

    @property
    def objective(self) -> float | None:
        return self.plan.objective

    @property
    def gap(self) -> float | None:
        return self.plan.gap


POST_PER_VERIFY = 3.0
"""Seconds set aside after the search (itemizing and verifying the new plan, the change, and
writing the plan) per second the verifier took on the old plan, times the growth in demands:
on the replan suite (2 cores, shared) those steps took 1.5 to 3.3 times the old plan's check
(docs/replan.md, "Time")."""


class _Clock:
    """The re-plan's clock: the phases' seconds (``phases``), the limit, and the one "late:"
    progress message that says up front that the fixed phases leave no time for the search."""

    def __init__(self, params: SolveParams, on_progress: Callable[[Progress], None] | None,
                 old_demands: int):
        self.started = self.mark = time.perf_counter()
        self.limit = params.time_limit_s
        self.on_progress = on_progress
        self.old_demands = max(old_demands, 1)
        self.phases: dict[str, float] = {}
        self.told = False

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.phases[name] = now - self.mark
        self.mark = now
        return self.phases[name]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def reserve(self, demands: int, slots: int) -> float:
        """Seconds for itemizing, verifying and writing the new plan: the old plan's check
        scaled (`POST_PER_VERIFY`), or, without one, `solve`'s rate per demand and day."""
        from scheduler.solve import FALLBACK_SECONDS_PER_DEMAND

        checked = self.phases.get("verify_old_s")
        if checked is None:
            return FALLBACK_SECONDS_PER_DEMAND * demands * slots / 24 + 0.02
        return POST_PER_VERIFY * checked * max(1.0, demands / self.old_demands) + 0.02

    def late(self, message: str) -> None:
        """Say once, through ``on_progress``, that the plan will be late."""
        if not self.told and self.on_progress is not None:
            self.on_progress(Progress("replan", self.elapsed(), None, None, None, "late: " + message))
        self.told = True


def replan(
    instance: Instance,
    plan: Plan,
    *,
    now_slot: int,
    events: Events = Events(),
    migration_cost_cny: float = DEFAULT_MIGRATION_COST_CNY,
    disruption_cost_cny: float | None = None,
    resend_cost: bool = True,
    params: SolveParams | None = None,
    warm_start: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplanResult:
    """Re-plan ``plan`` of ``instance`` from ``now_slot`` after ``events`` (module text).

    ``disruption_cost_cny``: the extra move cost of a job no event displaced (None: the job's own
    cost in the old plan; 0: none; see `apply_events`). ``resend_cost`` False charges no re-sent
    data; ``warm_start`` False
    starts the engine from the plain greedy plan instead of the old plan (the benchmarks' "from
    scratch" baseline). The whole call keeps to ``params.time_limit_s`` as `solve` does: the
    search gets what the measured phases before it leave, less the time set aside for
    itemizing and verifying (`POST_PER_VERIFY`); a "late:" progress message says so up front
    when nothing is left. The seconds of each phase are in the plan's ``stats.details``
    (docs/replan.md). Raises `ReplanError` for unusable events or a plan the verifier rejects,
    and `solve.VerificationError` if the new plan fails the verifier (a bug).
    """
    from scheduler.solve import no_gc

    params = params or SolveParams()
    clock = _Clock(params, on_progress, len(instance.demands))
    with no_gc():  # the instances and plans fill the heap: a full collection walks it all
        check_inputs(instance, plan, now_slot, migration_cost_cny, disruption_cost_cny)
        checked = clock.lap("verify_old_s")
        grown = len(instance.demands) + len(events.add) - len(set(events.cancel))
        reserve = clock.reserve(grown, instance.horizon.slots)
        if checked + reserve > clock.limit:
            clock.late(f"verifying the old plan took {checked:.1f} s and itemizing and verifying the "
                       f"new one need about {reserve:.1f} s, of the {clock.limit:g} s limit")
        modified = apply_events(instance, plan, now_slot, events, migration_cost_cny, resend_cost,
                                checked=True, disruption_cost_cny=disruption_cost_cny)
        clock.lap("apply_events_s")
        new_plan, verification = solve_replanned(modified.instance, plan, params, clock=clock,
                                                 warm_start=warm_start, on_progress=on_progress,
                                                 stop=stop)
        change = plan_change(plan, new_plan, modified)
        clock.lap("change_s")
    stats = new_plan.stats
    stats = stats.model_copy(update={"wall_time_s": clock.elapsed(),
                                     "details": {**stats.details, **clock.phases}})
    return ReplanResult(new_plan.model_copy(update={"stats": stats}), verification, modified.instance, change)


def solve_replanned(
    instance: Instance,
    plan: Plan,
    params: SolveParams,
    *,
    clock: _Clock | None = None,
    warm_start: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[Plan, Verification]:
    """Solve a modified instance (with `Instance.replanning`) from the old ``plan`` as the warm
    start: compile, narrow (`Adjusted`), search, map back, itemize, verify. ``clock``: the
    re-plan's, with the phases so far (a fresh one otherwise)."""
    from scheduler.engines.timed_exact import choice_objective
    from scheduler.engines.timed_greedy import timed_lower_bound
    from scheduler.solve import VerificationError, no_gc, pick_timed_engine, run_timed_engine, timed_engine
    from scheduler.timed import compile_timed
    from scheduler.timed_decode import build_timed_plan

    clock = clock or _Clock(params, on_progress, len(instance.demands))
    stopped = stop.is_set if stop is not None else None
    real = compile_timed(instance, stop=stopped)
    clock.lap("compile_s")
    adjusted = Adjusted(real, instance, plan)
    problem = adjusted.problem
    clock.lap("adjust_s")
    # The large engine's bound starts from the same relaxation at zero multipliers and raises
    # it: with it the warm start prices only the jobs that need a new spot, and no simple bound.
    engine_bound = (pick_timed_engine(problem, params.engine) == "large"
                    and timed_engine("large") is not None)
    complete = priced_all = False
    if warm_start:
        hint, complete, greedy = adjusted.warm_start(stopped, price_all=not engine_bound)
        priced_all = not engine_bound
    warm = complete
    if not complete:
        from scheduler.engines.timed_greedy import TimedGreedy

        greedy = TimedGreedy(problem, stopped)
        hint, complete = greedy.run()
        priced_all = True
    simple_bound = timed_lower_bound(problem, greedy.cheapest) if priced_all else None
    clock.lap("warm_start_s")
    prepared = clock.elapsed()
    if on_progress is not None:
        on_progress(Progress("replan", prepared, choice_objective(problem, hint) + adjusted.offset
                             if complete else None, None, None, "first plan"))
    # The search gets what the measured phases leave, less the time set aside after it.
    reserve = clock.reserve(len(instance.demands), problem.slots)
    remaining = params.time_limit_s - prepared - reserve
    if remaining < 0:
        clock.late(f"verifying the old plan, applying the events, compiling and the warm start took "
                   f"{prepared:.1f} s and itemizing and verifying the new plan need about "
                   f"{reserve:.1f} s, of the {params.time_limit_s:g} s limit")
    budget = params.model_copy(update={"time_limit_s": max(remaining, 0.05)})
    if remaining <= 0 and complete and params.iteration_limit is None and not (stop and stop.is_set()):
        # No time for the search: the warm start is the plan, with the simple bound (an engine
        # given the floor budget would only replay the warm start and return it).
        from scheduler.engines.timed_greedy import solve_timed_greedy

        if simple_bound is None:
            simple_bound = adjusted.simple_bound(greedy)
        engine = pick_timed_engine(problem, params.engine)
        outcome = replace(solve_timed_greedy(problem, hint, complete, simple_bound),
                          lower_bound=None,  # the simple bound, kept as such
                          solver_status="no time left: the warm start, not searched",
                          details={"skipped": "search (no time left)"})
    else:
        engine, outcome = run_timed_engine(problem, budget, hint, complete, simple_bound,
                                           on_progress=on_progress, stop=stop)
    if outcome.choice is not None and outcome.lower_bound is None and simple_bound is None:
        simple_bound = adjusted.simple_bound(greedy)  # stopped before the engine had a bound
    clock.lap("search_s")
    bound = None
    if outcome.choice is not None:
        found = [x for x in (outcome.lower_bound, simple_bound) if x is not None]
        bound = max(found) + adjusted.offset if found else None
    migration = adjusted.migration(outcome.choice)
    stats = SolveStats(
        engine=engine, solver_status=outcome.solver_status, wall_time_s=clock.elapsed(),
        time_limit_s=params.time_limit_s, seed=params.seed, workers=outcome.workers,
        demands=len(instance.demands), pools=problem.n_pools,
        options=problem.batch.n_options + problem.services.n_options, cost_scale=outcome.cost_scale,
        rounding_bound_cny=outcome.rounding_bound_cny, first_solution_s=outcome.first_solution_s,
        details={**outcome.details, "warm_start": int(warm), "prepare_s": prepared,
                 "reserve_s": reserve, "search_budget_s": budget.time_limit_s,
                 **({"simple_bound": simple_bound + adjusted.offset} if simple_bound is not None else {}),
                 **({"engine_bound": outcome.lower_bound + adjusted.offset}
                    if outcome.lower_bound is not None else {})},
    )
    with no_gc():
        new = build_timed_plan(instance, real, adjusted.back(outcome.choice), status=outcome.status,
                               lower_bound=None, stats=stats, reasons=_reasons(adjusted, outcome.choice))
        new = _with_migration(new, migration, bound, outcome.choice is not None)
        clock.lap("itemize_s")
        verification = verify(instance, new)
        clock.lap("verify_new_s")
    stats = stats.model_copy(update={"wall_time_s": clock.elapsed(),
                                     "details": {**stats.details, **clock.phases}})
    new = new.model_copy(update={"stats": stats})
    if not verification.ok:
        from scheduler.params import Result

        raise VerificationError(Result(plan=new, verification=verification))
    return new, verification


def _reasons(adjusted: Adjusted, choice: TimedChoice | None) -> Callable[[int], Reason]:
    """Unserved reasons read from the narrowed problem (batch job -> reason): a job whose every
    start lies before now fails the window rule, and move costs count towards `uneconomic`."""
    from scheduler.timed_decode import choice_load, unserved_reasons

    pr = adjusted.problem
    if choice is None:
        return unserved_reasons(pr, None, np.arange(pr.batch.n_demands)).__getitem__
    return unserved_reasons(pr, choice_load(pr, choice), np.flatnonzero(choice.option < 0)).__getitem__


def _with_migration(plan: Plan, migration: float, bound: float | None, solved: bool) -> Plan:
    """The itemized plan with its move costs in the objective, and the bound and gap to match."""
    if not solved:
        return plan
    objective = plan.objective + migration
    if bound is not None and objective < bound <= objective + 1e-9 * max(abs(objective), 1.0):
        bound = objective  # float noise between the engine's sums and the itemized ones
    gap = relative_gap(objective, bound)
    status = plan.status
    if status == Status.OPTIMAL and (gap is None or gap > OPTIMAL_GAP):
        status = Status.FEASIBLE
    costs = plan.costs.model_copy(update={"migration_cny": migration})
    return plan.model_copy(update={"objective": objective, "lower_bound": bound, "gap": gap,
                                   "status": status, "costs": costs})


def change_report(result: ReplanResult, *, limit: int = 20, width: int | None = None) -> str:
    """The terminal view of a re-plan: totals, counts by kind, and the first changes."""
    from scheduler.report import money, percent, table

    ch, plan = result.change, result.plan
    kinds = ("restarted", "moved", "retimed", "newly_unserved", "newly_served", "added_unserved",
             "cancelled")
    totals = table(["re-plan from slot " + str(ch.now_slot), "value"], [
        ["status", plan.status.value],
        ["cost before (old plan)", money(ch.cost_before_cny)],
        ["cost after (with migration)", money(ch.cost_after_cny)],
        ["change", money(ch.cost_delta_cny)],
        ["of which migration", money(ch.migration_cny)],
        ["disruption (undisturbed jobs moved or dropped)", money(ch.disruption_cny)],
        ["lower bound", money(plan.lower_bound)],
        ["gap", percent(plan.gap, 2)],
        ["jobs pinned (started before now)", str(ch.pinned)],
        ["jobs planned on lost capacity", str(ch.planned_on_lost_capacity)],
    ] + [[kind.replace("_", " "), str(ch.count(kind))] for kind in kinds])
    rows = [[c.demand, c.kind.replace("_", " "),
             "-" if c.old_pool is None else f"{c.old_pool}@{c.old_start}",
             "-" if c.new_pool is None else f"{c.new_pool}@{c.new_start}",
             money(c.cost_delta_cny), c.reason] for c in ch.changes[:limit]]
    out = totals
    if rows:
        out += "\n\n" + table(["demand", "change", "old", "new", "cost delta", "reason"], rows,
                              max_width=width, names=(5,))
    if len(ch.changes) > limit:
        out += f"\n... and {len(ch.changes) - limit} more changes"
    return out
