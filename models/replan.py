"""Re-planning facts: the plan an instance is re-planned from, as data the verifier can check.

A re-planned instance (`Instance.replanning`) says when the new plan takes over (``now_slot``)
and where each batch job of the reference plan ran. Two rules follow (docs/formulation.md §10):
a job that started before ``now_slot`` (``pinned``) keeps its pool and start; any other batch job
starts at ``now_slot`` or later. The objective gains a migration term: a job of the reference
plan that runs at another pool or start pays its ``move_cost_cny``, plus ``retransfer_cny`` when
the new pool lies in another region than the old one.
"""

from __future__ import annotations

from pydantic import Field

from models.base import Frozen as _Frozen
from models.horizon import MAX_SLOTS
from models.instance import Id, NonNegative


class Baseline(_Frozen):
    """Where a batch job of the reference plan runs, and what running it elsewhere costs."""

    demand: Id
    pool: Id
    start_slot: int = Field(ge=0, lt=MAX_SLOTS)
    pinned: bool = Field(
        default=False, description="Started before now_slot: it must keep this pool and start."
    )
    move_cost_cny: NonNegative = Field(
        default=0.0, description="Objective cost when the job runs at another pool or start."
    )
    retransfer_cny: NonNegative = Field(
        default=0.0,
        description="Added when the new pool is in another region: the data sent to the old "
        "region before now_slot is sent again.",
    )


class Replanning(_Frozen):
    """The reference plan of a re-planned instance."""

    now_slot: int = Field(ge=0, lt=MAX_SLOTS, description="First slot the new plan may change.")
    baseline: tuple[Baseline, ...] = ()


def replanning_problems(inst) -> list[str]:
    """Every rule `Instance.replanning` breaks, each naming the object and the field."""
    rp = inst.replanning
    if rp is None:
        return []
    out: list[str] = []
    if inst.horizon is None:
        return ["instance: field 'replanning' needs a horizon"]
    if rp.now_slot >= inst.horizon.slots:
        out.append(f"replanning: field 'now_slot' is {rp.now_slot}, at or after the horizon's end "
                   f"({inst.horizon.slots} slots)")
    batch = {d.id for d in inst.demands if d.kind == "batch"}
    pools = {p.id for _, p in inst.pools()}
    seen: set[str] = set()
    for k, b in enumerate(rp.baseline):
        name = f"replanning baseline {k} ({b.demand})"
        if b.demand not in batch:
            out.append(f"{name}: field 'demand' names no batch demand of the instance")
        if b.demand in seen:
            out.append(f"{name}: field 'demand' is listed more than once")
        seen.add(b.demand)
        if b.pool not in pools:
            out.append(f"{name}: field 'pool' names unknown pool '{b.pool}'")
        if b.pinned and b.start_slot >= rp.now_slot:
            out.append(f"{name}: field 'pinned' is set but 'start_slot' {b.start_slot} is not before "
                       f"now_slot {rp.now_slot}")
        if not b.pinned and b.start_slot < rp.now_slot:
            out.append(f"{name}: field 'start_slot' {b.start_slot} is before now_slot {rp.now_slot}, "
                       "so the job has started: set 'pinned'")
        if len(out) > 1000:
            break
    return out
