"""The decisions: a plan, its costs and statistics, and the verifier's findings.

Every money figure in a plan is an objective contribution in CNY: the raw cost times its weight in
`Instance.weights` (with the default weights of 1, the two are the same).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from models.base import Frozen as _Frozen
from models.instance import SCHEMA_VERSION, Id, Precision


def _unless(value) -> bool:
    """Leave a time figure out of a plan while it is unset (plans without a horizon stay as they were)."""
    return value is None or value == () or value == {}

Number = float | int | str


OPTIMAL_GAP = 1e-6
"""A plan reported `optimal` has a relative gap (see `relative_gap`) of at most this: its proven
lower bound, rounding included, is within one part in a million of its objective."""


class Status(StrEnum):
    """How a solve ended."""

    OPTIMAL = "optimal"  # proven optimal: gap at most OPTIMAL_GAP, rounding bound included
    FEASIBLE = "feasible"  # a plan that meets every hard rule, not proven optimal
    INFEASIBLE = "infeasible"  # proven: the must-serve demands cannot all be served
    UNKNOWN = "unknown"  # no plan found in time, infeasibility not proven


class Reason(StrEnum):
    """Why an option was rejected, or why a demand is unserved.

    The eligibility rules are checked in the order listed, from `no_offer` to `price_cap`; an
    option keeps the first rule it fails.
    """

    NO_OFFER = "no_offer"  # the demand has no work figure and no offer on this pool
    GANG = "gang"  # the pool has fewer GPUs than the gang
    ACCELERATOR = "accelerator"  # the accelerator model is not on the allow-list
    MEMORY = "memory"  # GPU memory below the demand's minimum
    PRECISION = "precision"  # strict precision the pool lacks, or no usable fallback
    JURISDICTION = "jurisdiction"  # the region is outside the residency allow-list
    UNREACHABLE = "unreachable"  # no network path from the origin
    LATENCY = "latency"  # one-way latency to the origin above the bound
    DEADLINE = "deadline"  # run time (GPU-hours / gang) longer than the demand's deadline
    WINDOW = "window"  # run time, in whole slots, longer than the release-to-deadline window
    PRICE_CAP = "price_cap"  # the option costs more than the demand's cap
    # Reasons for an unserved demand that had options:
    CAPACITY = "capacity"  # eligible pools exist, but their capacity went to other demands
    BANDWIDTH = "bandwidth"  # eligible remote pools exist, but the links could not carry the data
    CARBON_CAP = "carbon_cap"  # eligible pools exist, but serving the demand would pass the carbon cap
    UNECONOMIC = "uneconomic"  # every option costs at least the unserved penalty
    QUOTA = "quota"  # serving it would pass a maximum quota of its sector or origin (Instance.policy)
    NOT_SOLVED = "not_solved"  # no plan was found (status infeasible or unknown)


RULES: tuple[Reason, ...] = (
    Reason.NO_OFFER,
    Reason.GANG,
    Reason.ACCELERATOR,
    Reason.MEMORY,
    Reason.PRECISION,
    Reason.JURISDICTION,
    Reason.UNREACHABLE,
    Reason.LATENCY,
    Reason.DEADLINE,
    Reason.WINDOW,
    Reason.PRICE_CAP,
)
"""The eligibility rules, in the order they are checked."""


Cny = Annotated[float, Field(description="CNY, objective contribution")]


class Assignment(_Frozen):
    """One demand placed on one pool."""

    demand: Id
    region: Id
    pool: Id
    precision: Precision = Field(description="Precision the demand runs at on this pool.")
    gpu_hours: float = Field(ge=0, description="Capacity used, in whole quanta.")
    latency_ms: float = Field(ge=0, description="One-way latency to the demand's origin.")
    energy_kwh: float = Field(ge=0)
    co2_kg: float = Field(ge=0)
    compute_cny: Cny
    energy_cny: Cny
    transfer_cny: Cny
    carbon_cny: Cny
    cost_cny: Cny = Field(description="Sum of the four terms above.")
    start_slot: int | None = Field(default=None, ge=0, exclude_if=_unless, description="Horizon: first slot run.")
    end_slot: int | None = Field(
        default=None, ge=1, exclude_if=_unless, description="Horizon: the slot after the last one run."
    )
    route: tuple[Id, ...] | None = Field(
        default=None, exclude_if=_unless,
        description="Horizon: the regions the data crosses, origin first, when it moves.",
    )


class ServicePlacement(_Frozen):
    """A service's replicas on one pool, slot by slot."""

    region: Id
    pool: Id
    precision: Precision
    latency_ms: float = Field(ge=0)
    route: tuple[Id, ...] = Field(description="Regions from the origin to this pool's region.")
    replicas: tuple[int, ...] = Field(description="Replicas (of gang_size GPUs) in each slot.")
    served_pflop_per_hour: tuple[float, ...] = Field(description="Load served here in each slot.")
    gpu_hours: float = Field(ge=0)
    energy_kwh: float = Field(ge=0)
    co2_kg: float = Field(ge=0)
    compute_cny: Cny
    energy_cny: Cny
    transfer_cny: Cny
    carbon_cny: Cny
    cost_cny: Cny = Field(description="Sum of the four terms above.")


class ServicePlan(_Frozen):
    """How one service is served: its placements and the load left unserved."""

    demand: Id
    placements: tuple[ServicePlacement, ...] = ()
    unserved_pflop_per_hour: tuple[float, ...] = Field(description="Load not served in each slot.")
    unserved_pflop: float = Field(ge=0, description="Work left undone over the horizon.")
    penalty_cny: Cny = Field(
        description="weights.unserved x priority x unserved_penalty_cny_per_pflop x unserved_pflop"
    )


class LinkLoad(_Frozen):
    """Traffic on one link in each slot (data of batch jobs and services' traffic)."""

    source: Id
    target: Id
    load_gbps: tuple[float, ...]
    bandwidth_gbps: tuple[float, ...]
    peak_utilization: float = Field(ge=0)


class Unserved(_Frozen):
    """A demand left unserved, why, and what that costs."""

    demand: Id
    reason: Reason
    penalty_cny: Cny = Field(description="weights.unserved x priority x unserved_penalty_cny")
    work_pflop: float | None = Field(default=None, description="The work left undone.")


class PoolUsage(_Frozen):
    """Capacity used in one pool."""

    region: Id
    pool: Id
    accelerator: str
    used_gpu_hours: float = Field(ge=0)
    capacity_gpu_hours: float = Field(ge=0)
    utilization: float = Field(ge=0)
    gpus_by_slot: tuple[int, ...] | None = Field(
        default=None, exclude_if=_unless, description="Horizon: GPUs in use in each slot."
    )
    available_by_slot: tuple[int, ...] | None = Field(
        default=None, exclude_if=_unless, description="Horizon: GPUs not out (outages) in each slot."
    )


class CostBreakdown(_Frozen):
    """The objective split into its terms (each already weighted), with physical totals."""

    compute_cny: Cny = 0.0
    energy_cny: Cny = 0.0
    transfer_cny: Cny = 0.0
    carbon_cny: Cny = 0.0
    unserved_penalty_cny: Cny = 0.0
    migration_cny: Cny = Field(
        default=0.0, exclude_if=lambda v: v == 0.0,
        description="Re-planning: moving jobs of the reference plan (Instance.replanning).",
    )
    energy_kwh: float = 0.0
    co2_t: float = 0.0
    energy_by_period_kwh: dict[str, float] = Field(
        default_factory=dict, exclude_if=_unless,
        description="Horizon: energy by tariff period (critical, peak, flat, valley, deep_valley).",
    )
    energy_by_period_cny: dict[str, float] = Field(
        default_factory=dict, exclude_if=_unless, description="Horizon: energy cost by tariff period."
    )


class SolveStats(_Frozen):
    """How the plan was found."""

    engine: str
    solver_status: str = Field(description="The engine's own final status text.")
    wall_time_s: float = Field(ge=0)
    time_limit_s: float | None = None
    seed: int = 0
    workers: int = 1
    demands: int = 0
    pools: int = 0
    options: int = Field(default=0, description="Eligible (demand, pool) pairs.")
    cost_scale: float | None = Field(
        default=None, description="Integer units per CNY in the integer model, if one was used."
    )
    rounding_bound_cny: float = Field(
        default=0.0, ge=0, description="Most the integer rounding can move any plan's objective."
    )
    first_solution_s: float | None = None
    details: dict[str, Number] = Field(default_factory=dict)


class PoolPrice(_Frozen):
    """The shadow price of one pool's capacity: what one more GPU-hour would save."""

    region: Id
    pool: Id
    cny_per_gpu_hour: float = Field(
        ge=0, description="The multiplier of the pool's capacity row, per GPU-hour (on a horizon: "
        "its mean over the slots, what one more GPU over the whole horizon saves per hour).",
    )
    by_slot_cny_per_gpu_hour: tuple[float, ...] | None = Field(
        default=None, exclude_if=_unless, description="Horizon: the multiplier of each slot's row, per GPU-hour.",
    )


class LinkPrice(_Frozen):
    """The shadow price of one link's bandwidth (horizon), slot by slot."""

    source: Id
    target: Id
    by_slot_cny_per_gbps_hour: tuple[float, ...] = Field(
        description="What one more Gbps for one hour of the slot would save.",
    )


class QuotaPrice(_Frozen):
    """The shadow price of one quota row (Instance.policy): what relaxing it by one unit would save."""

    quota: Id
    bound: Literal["max", "min"]
    cny_per_unit: float = Field(ge=0, description="Per PFLOP (work quotas) or GPU-hour (capacity quotas).")
    unit: Literal["pflop", "gpu_hour"]


class ShadowPrices(_Frozen):
    """Multipliers of the capacity rows at a proven Lagrangian bound (docs/formulation.md §9).

    With prices u, any capacity change d (in the rows' units) gives the bound
    opt(cap + d) >= bound_cny - u . d: the optimum falls by at most u . d, plus the gap."""

    method: str = Field(description="Where the multipliers come from (engine, or computed after the solve).")
    bound_cny: float = Field(description="The Lagrangian bound L(u) these multipliers prove.")
    pools: tuple[PoolPrice, ...] = ()
    links: tuple[LinkPrice, ...] = Field(
        default=(), exclude_if=_unless, description="Horizon: links with a positive price in some slot.",
    )
    carbon_cny_per_t_co2: float | None = Field(
        default=None, exclude_if=_unless, description="Horizon with a carbon cap: the cap's multiplier.",
    )
    quotas: tuple[QuotaPrice, ...] = Field(
        default=(), exclude_if=_unless, description="Policy: quota rows with a positive price.",
    )


class QuotaUse(_Frozen):
    """One quota's figure in the plan (docs/policy.md): the group's amount over the total."""

    quota: Id
    amount: float = Field(ge=0, description="The group's served work (PFLOP) or GPU-hours used, in scope.")
    total: float = Field(ge=0, description="All served work in scope (PFLOP), or the scope's capacity (GPU-hours).")
    share: float = Field(ge=0, description="amount / total (0 when total is 0).")


class FairnessReport(_Frozen):
    """The unserved share of every group the fairness option levels."""

    groups: Literal["sector", "origin"]
    largest_unserved_share: float = Field(ge=0, le=1)
    share_lower_bound: float | None = Field(
        default=None, description="Proven lower bound on the largest unserved share of any plan (stage 1).",
    )
    by_group: dict[str, float] = Field(description="Unserved work / work of each group with work.")


class PolicyReport(_Frozen):
    """The plan's quota figures and fairness, for instances with a policy."""

    quotas: tuple[QuotaUse, ...] = ()
    fairness: FairnessReport | None = Field(default=None, exclude_if=_unless)


class Plan(_Frozen):
    """The optimizer's answer: who runs where, what it costs, and how far from optimal it may be."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    instance: str = Field(description="Name of the instance this plan answers.")
    status: Status
    objective: float | None = Field(description="Total cost including unserved penalties.")
    lower_bound: float | None = Field(description="Proven lower bound on the optimal objective.")
    gap: float | None = Field(description="(objective - lower_bound) / max(|objective|, 1)")
    costs: CostBreakdown = CostBreakdown()
    assignments: tuple[Assignment, ...] = ()
    unserved: tuple[Unserved, ...] = ()
    pools: tuple[PoolUsage, ...] = ()
    services: tuple[ServicePlan, ...] = Field(default=(), exclude_if=_unless)
    links: tuple[LinkLoad, ...] = Field(default=(), exclude_if=_unless)
    stats: SolveStats
    shadow_prices: ShadowPrices | None = Field(
        default=None, exclude_if=_unless,
        description="Multipliers of the capacity rows at a proven bound (see `ShadowPrices`).",
    )
    policy: PolicyReport | None = Field(
        default=None, exclude_if=_unless, description="Quota figures and fairness (Instance.policy).",
    )


def relative_gap(objective: float | None, lower_bound: float | None) -> float | None:
    """(objective - lower_bound) / max(|objective|, 1), never negative; None if either is missing."""
    if objective is None or lower_bound is None:
        return None
    return max(0.0, objective - lower_bound) / max(abs(objective), 1.0)


class Violation(_Frozen):
    """One way a plan breaks the instance's rules or misreports a figure."""

    code: str
    subject: str = Field(description="The demand, pool or field concerned.")
    amount: float = Field(description="By how much (in the unit of the rule).")
    message: str


class Verification(_Frozen):
    """What the independent verifier found."""

    ok: bool
    objective: float | None = Field(description="The objective recomputed from the instance.")
    violations: tuple[Violation, ...] = ()
