"""Policy rules platforms rely on: quotas per sector and origin, and a fairness option
(docs/policy.md, docs/formulation.md section 12).

A `Quota` picks a group of demands (by sector and/or origin) and bounds its share of either the
served work or the capacity, nationally or in the pools of one hub. `Policy.fairness` makes the
solve lexicographic: first the largest unserved share among sectors (or origins), then cost.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, StringConstraints

from models.base import Frozen as _Frozen

if TYPE_CHECKING:
    from models.instance import Instance

QuotaId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$"),
]
Share = Annotated[float, Field(ge=0, le=1)]


class QuotaMeasure(StrEnum):
    """What a quota bounds the share of."""

    WORK = "work"  # PFLOP served of the group / PFLOP served of all demands (in scope)
    CAPACITY = "capacity"  # GPU-hours the group uses / GPU-hours of capacity (in scope)


class Fairness(StrEnum):
    """Which groups the fairness option levels (none: cost only)."""

    NONE = "none"
    SECTOR = "sector"
    ORIGIN = "origin"


class Quota(_Frozen):
    """A guaranteed minimum and/or a maximum share for the demands of one sector and/or origin."""

    id: QuotaId
    sector: str | None = Field(default=None, description="Only demands of this sector; null: any.")
    origin: str | None = Field(
        default=None, max_length=256,
        description="Only demands from this region id, or from every region with this tag "
        "(e.g. 'hub:jjj'); null: any origin.",
    )
    measure: QuotaMeasure = QuotaMeasure.WORK
    hub: str | None = Field(
        default=None, max_length=256,
        description="Count only pools in regions with this tag (e.g. 'hub:nm'); null: every pool (national).",
    )
    min_share: Share | None = Field(default=None, description="Guaranteed minimum share (hard).")
    max_share: Share | None = Field(default=None, description="Maximum share.")


class Policy(_Frozen):
    """Quotas and the fairness option of an instance (single window only)."""

    quotas: tuple[Quota, ...] = ()
    fairness: Fairness = Fairness.NONE


def policy_problems(inst: Instance) -> list[str]:
    """Every broken reference or contradiction in ``inst.policy``, naming the quota and field."""
    from models.instance import Sector

    policy = inst.policy
    if policy is None:
        return []
    out: list[str] = []
    regions = {r.id for r in inst.regions}
    tags = {t for r in inst.regions for t in r.tags}
    sectors = {s.value for s in Sector}
    for dup in [k for k, n in Counter(q.id for q in policy.quotas).items() if n > 1]:
        out.append(f"quota '{dup}': field 'id' is used by more than one quota")
    for q in policy.quotas:
        name = f"quota '{q.id}'"
        if q.sector is not None and q.sector not in sectors:
            out.append(f"{name}: field 'sector' names unknown sector '{q.sector}' "
                       f"(one of {', '.join(sorted(sectors))})")
        if q.origin is not None and q.origin not in regions and q.origin not in tags:
            out.append(f"{name}: field 'origin' names '{q.origin}', which is neither a region id nor a region tag")
        if q.hub is not None and q.hub not in tags:
            out.append(f"{name}: field 'hub' names '{q.hub}', which no region has as a tag")
        if q.min_share is None and q.max_share is None:
            out.append(f"{name}: fields 'min_share' and 'max_share' are both missing (give at least one)")
        if q.min_share is not None and q.max_share is not None and q.min_share > q.max_share:
            out.append(f"{name}: field 'min_share' ({q.min_share:g}) is above 'max_share' ({q.max_share:g})")
    if inst.horizon is not None:
        out.append("instance: field 'policy' is supported only without a horizon (one window): "
                   "no engine over a horizon enforces quotas or fairness yet")
    return out
