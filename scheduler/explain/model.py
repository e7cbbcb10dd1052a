"""What `explain` answers, as frozen models (the CLI prints them as text or JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models import Reason


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Option(_Frozen):
    """One way to serve a batch demand (a pool and, on a horizon, a start), at its true cost and at
    its cost with the capacity it takes priced at the shadow prices."""

    region: str
    pool: str
    start_slot: int | None = None
    gpu_hours: float
    cost_cny: float = Field(description="The objective contribution of this option.")
    capacity_cny: float = Field(description="Shadow price x the GPU-hours (GPU-slots) it holds.")
    bandwidth_cny: float = Field(0.0, description="Horizon: link prices x the bandwidth its data takes.")
    carbon_cny: float = Field(0.0, description="Horizon with a cap: the cap's price x its emissions.")
    priced_cny: float = Field(description="cost + capacity + bandwidth + carbon: its reduced cost.")
    fits: bool | None = Field(None, description="Whether it fits in what the plan leaves free.")


class Rejection(_Frozen):
    """A pool the demand may not use: the first eligibility rule it fails, with the amounts."""

    region: str
    pool: str
    rule: Reason
    detail: str
    value: float | None = Field(None, description="The pool's figure for the rule (ms, GB, h, slots, CNY, GPUs).")
    limit: float | None = Field(None, description="The demand's bound it misses.")


class QuotaState(_Frozen):
    """One quota of the instance's policy in the plan: its share, limits, and whether it binds."""

    quota: str
    rule: str = Field(description="The rule in words: group, measure, scope and limits.")
    share: float
    min_share: float | None = None
    max_share: float | None = None
    binding: bool = Field(description="At a limit: a positive shadow price, a share at the limit, "
                          "or an unserved demand it holds back.")
    cny_per_unit: float | None = Field(None, description="The shadow price of its binding row.")
    unit: str | None = None


class DemandExplanation(_Frozen):
    """Why a demand is served where it is, or why it is not served."""

    kind: Literal["demand"] = "demand"
    demand: str
    served: bool
    reason: Reason | None = Field(description="The plan's reason when unserved.")
    answer: str = Field(description="The rule that binds, with the amounts, in one paragraph.")
    penalty_cny: float
    chosen: Option | None = None
    next_best: Option | None = Field(None, description="The cheapest other option (served demands).")
    extra_cny: float | None = Field(None, description="next_best.cost - chosen.cost; the penalty minus "
                                    "chosen.cost where leaving it unserved is the next best.")
    options: tuple[Option, ...] = Field((), description="Eligible options, cheapest with prices first (at most 10).")
    rejected: tuple[Rejection, ...] = ()
    quota: QuotaState | None = Field(None, description="The quota that holds it back (reason 'quota').")
    prices_saved: bool = Field(description="The shadow prices came with the plan (else computed now).")


class Share(_Frozen):
    """What fills a pool: a demand or a sector and the GPU-hours it holds there."""

    name: str
    gpu_hours: float
    share: float = Field(description="Of the GPU-hours used.")


class PoolExplanation(_Frozen):
    """A pool's use over time, what fills it, and the value of more of it."""

    kind: Literal["pool"] = "pool"
    region: str
    pool: str
    accelerator: str
    gpus: int
    used_gpu_hours: float
    capacity_gpu_hours: float
    utilization: float
    peak_utilization: float | None = Field(None, description="Horizon: the busiest slot's share in use.")
    full_slots: int | None = Field(None, description="Horizon: slots with every available GPU in use.")
    utilization_by_slot: tuple[float, ...] | None = None
    top_demands: tuple[Share, ...] = ()
    top_sectors: tuple[Share, ...] = ()
    price_cny_per_gpu_hour: float = Field(description="What one more GPU-hour would save (mean over slots).")
    price_by_slot_cny_per_gpu_hour: tuple[float, ...] | None = None
    priced_slots: int | None = Field(None, description="Horizon: slots with a positive price.")
    answer: str
    prices_saved: bool


class RegionExplanation(_Frozen):
    """A region's pools, each explained."""

    kind: Literal["region"] = "region"
    region: str
    used_gpu_hours: float
    capacity_gpu_hours: float
    utilization: float
    pools: tuple[PoolExplanation, ...]
    answer: str
    prices_saved: bool


class LinkExplanation(_Frozen):
    """A link's load and the value of more bandwidth on it."""

    kind: Literal["link"] = "link"
    source: str
    target: str
    latency_ms: float
    bandwidth_gbps: float
    load_gbps: tuple[float, ...] = ()
    peak_utilization: float | None = None
    price_by_slot_cny_per_gbps_hour: tuple[float, ...] = ()
    answer: str
    prices_saved: bool


class Overview(_Frozen):
    """The whole plan: unserved demands by reason, and where capacity is worth most."""

    kind: Literal["overview"] = "overview"
    instance: str
    objective: float | None
    bound_cny: float | None = Field(description="The bound the shadow prices prove.")
    method: str | None
    unserved_by_reason: dict[str, int]
    dearest_pools: tuple[PoolExplanation, ...] = Field(description="Pools with the highest prices (at most 5).")
    dearest_links: tuple[LinkExplanation, ...] = ()
    carbon_cny_per_t_co2: float | None = None
    quotas: tuple[QuotaState, ...] = Field((), description="Policy: every quota, binding ones first.")
    largest_unserved_share: float | None = Field(None, description="Policy with fairness: the plan's.")
    answer: str
    prices_saved: bool


Explanation = DemandExplanation | PoolExplanation | RegionExplanation | LinkExplanation | Overview
