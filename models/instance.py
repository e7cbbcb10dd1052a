"""The problem facts: regions, accelerator pools, links, demands, offers and the instance.

Every model is frozen and forbids unknown fields; numbers must be finite. Units are part of the
field names. Cross-references (a demand's origin, an offer's pool, a link's ends) are checked when
an `Instance` is built, and every message names the object and the field at fault.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from models.base import Frozen as _Frozen
from models.horizon import MAX_SLOTS, Horizon, Outage, TariffPeriods, time_problems

SCHEMA_VERSION = 1
"""The version of a file without a horizon (one planning window)."""

TIMED_SCHEMA_VERSION = 2
"""The version of a file with a horizon in slots (`Instance.horizon`)."""

INTRA_REGION_LATENCY_MS = 1.0
"""One-way latency between a region and itself (the 1 ms "city circle" of the national network)."""

QUANTUM_SLACK = 1e-9
"""Slack when usage is rounded up to whole quanta: ``ceil(raw / quantum - QUANTUM_SLACK)``."""

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$"),
]
"""Identifiers: letters, digits and ``_ . : / @ + -``, starting with a letter or digit."""

AMOUNT_LIMIT = 1e15
"""The largest value of any amount (money, energy, data, work, time, multipliers): more than the
GDP of China in CNY, a zettabyte in GB. The bounds keep every product the compiler forms finite in
float64 (docs/formulation.md, section 7)."""

MIN_TFLOPS = 1e-6
"""The slowest accelerator a pool may list, in TFLOPS (a megaflop per second)."""

MIN_QUANTUM = 1e-6
"""The smallest usage quantum, in GPU-hours (3.6 ms of one GPU)."""

Name = Annotated[str, StringConstraints(max_length=256)]
NonNegative = Annotated[float, Field(ge=0, le=AMOUNT_LIMIT)]
Positive = Annotated[float, Field(gt=0, le=AMOUNT_LIMIT)]
Speed = Annotated[float, Field(ge=MIN_TFLOPS, le=AMOUNT_LIMIT)]
Profile = Annotated[tuple[NonNegative, ...], Field(min_length=1, max_length=MAX_SLOTS)]
"""Values per slot: one per slot of a day (repeated daily) or one per slot of the horizon."""


def _unless(value) -> bool:
    """Leave a time field out of a file while it is unset (files without a horizon stay as they were)."""
    return value is None or value == ()


class Precision(StrEnum):
    """Numeric formats an accelerator can run a workload at."""

    FP64 = "fp64"
    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


PRECISION_FALLBACKS: dict[Precision, tuple[Precision, ...]] = {
    Precision.FP64: (),
    Precision.FP32: (Precision.FP64,),
    Precision.TF32: (Precision.FP32,),
    Precision.BF16: (Precision.FP32,),
    Precision.FP16: (Precision.BF16, Precision.FP32),
    Precision.FP8: (Precision.BF16, Precision.FP16, Precision.FP32),
    Precision.INT8: (Precision.FP8, Precision.FP16, Precision.BF16, Precision.FP32),
    Precision.INT4: (Precision.INT8, Precision.FP8, Precision.FP16, Precision.BF16, Precision.FP32),
}
"""Where a pool lacks a demand's precision, the demand runs at the first of these the pool has
(unless the demand's precision is strict). FP8 without FP8 hardware runs at BF16 speed."""


class Sector(StrEnum):
    """Who is asking for compute."""

    AUTONOMOUS_DRIVING = "autonomous_driving"
    MEDICAL_IMAGING = "medical_imaging"
    LLM_TRAINING = "llm_training"
    LLM_INFERENCE = "llm_inference"
    FINANCE = "finance"
    SMART_CITY = "smart_city"
    INDUSTRIAL_MANUFACTURING = "industrial_manufacturing"
    EDUCATION = "education"
    AGRICULTURE = "agriculture"
    OTHER = "other"


class AcceleratorPool(_Frozen):
    """Identical accelerators in one region, rented by the GPU-hour."""

    id: Id
    accelerator: Name = Field(min_length=1, description="Accelerator model, e.g. 'H800'.")
    gpu_count: int = Field(ge=1, le=10_000_000)
    memory_gb_per_gpu: Positive
    tflops_by_precision: dict[Precision, Speed] = Field(
        min_length=1, description="Dense TFLOPS per GPU at each supported precision."
    )
    power_kw_per_gpu: NonNegative = Field(description="Board power per GPU, before PUE.")
    price_cny_per_gpu_hour: NonNegative
    outages: tuple[Outage, ...] = Field(
        default=(), exclude_if=_unless,
        description="GPUs unavailable over slot ranges (maintenance, outages, reserved blocks).",
    )


class Region(_Frozen):
    """A province or data-centre cluster: a node of the network that may hold capacity."""

    id: Id
    name: Name = ""
    jurisdiction: Name = Field(min_length=1, description="Legal area for data residency, e.g. a province.")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    electricity_price_cny_per_kwh: NonNegative
    pue: float = Field(ge=1, le=10, description="Power usage effectiveness of the facility.")
    carbon_g_co2_per_kwh: NonNegative = Field(le=5000)
    pools: tuple[AcceleratorPool, ...] = ()
    tags: tuple[Name, ...] = ()
    electricity_price_by_slot_cny_per_kwh: Profile | None = Field(
        default=None, exclude_if=_unless,
        description="Price per slot (time-of-use); replaces electricity_price_cny_per_kwh.",
    )
    tariff_periods: TariffPeriods | None = Field(
        default=None, exclude_if=_unless,
        description="Tariff period of each slot, one letter per slot of a day or of the horizon: "
        "C critical peak, P peak, F flat, V valley, D deep valley (for reports).",
    )
    carbon_by_slot_g_co2_per_kwh: Profile | None = Field(
        default=None, exclude_if=_unless, description="Grid intensity per slot; replaces carbon_g_co2_per_kwh."
    )


class Link(_Frozen):
    """An undirected network link between two regions."""

    source: Id
    target: Id
    latency_ms: NonNegative = Field(description="One-way latency.")
    bandwidth_gbps: Positive
    transfer_cost_cny_per_gb: NonNegative
    bandwidth_by_slot_gbps: Profile | None = Field(
        default=None, exclude_if=_unless, description="Bandwidth per slot; replaces bandwidth_gbps."
    )


class DemandKind(StrEnum):
    """A batch job runs once, uninterrupted; a service serves a load over every slot."""

    BATCH = "batch"
    SERVICE = "service"


class Demand(_Frozen):
    """One workload request: what it needs, where its data is, and what leaving it unserved costs."""

    id: Id
    kind: DemandKind = Field(default=DemandKind.BATCH, exclude_if=lambda v: v == DemandKind.BATCH)
    sector: Sector = Sector.OTHER
    origin: Id = Field(description="Region where the demand's data and users are.")
    work_pflop: Positive | None = Field(
        default=None, description="Work in PFLOP at dense peak; None: served only through offers."
    )
    gang_size: int = Field(default=1, ge=1, description="GPUs that must sit in one pool.")
    precision: Precision = Precision.BF16
    strict_precision: bool = Field(default=False, description="Refuse pools without `precision`.")
    min_memory_gb_per_gpu: NonNegative = 0.0
    accelerators: tuple[Name, ...] | None = Field(
        default=None, min_length=1, description="Allow-list of models; null allows any."
    )
    max_latency_ms: Positive | None = Field(default=None, description="One-way, to the origin.")
    data_gb: NonNegative = 0.0
    jurisdictions: tuple[Name, ...] | None = Field(
        default=None, min_length=1, description="Residency allow-list; null allows any."
    )
    deadline_hours: Positive | None = Field(default=None, description="Longest allowed run time.")
    priority: Positive = Field(default=1.0, description="Multiplies the unserved penalty.")
    must_serve: bool = False
    unserved_penalty_cny: NonNegative = 0.0
    max_cost_cny: NonNegative | None = Field(default=None, description="Cap on the option's cost.")
    release_slot: int | None = Field(
        default=None, ge=0, lt=MAX_SLOTS, exclude_if=_unless,
        description="Batch: first slot the job may start in (default 0).",
    )
    deadline_slot: int | None = Field(
        default=None, ge=1, le=MAX_SLOTS, exclude_if=_unless,
        description="Batch: the job must end by the start of this slot (default: the horizon's end).",
    )
    load_pflop_per_hour: Profile | None = Field(
        default=None, exclude_if=_unless,
        description="Service: work per hour to serve in each slot, at the demand's precision.",
    )
    traffic_gbps: NonNegative | None = Field(
        default=None, exclude_if=_unless,
        description="Service: traffic between the serving pools and the origin at full load.",
    )
    unserved_penalty_cny_per_pflop: NonNegative | None = Field(
        default=None, exclude_if=_unless, description="Service: cost of each PFLOP of load not served."
    )


class Offer(_Frozen):
    """A quoted usage and price for one demand on one pool; replaces the derived compute and energy
    figures (transfer and carbon still follow the data)."""

    demand: Id
    pool: Id
    gpu_hours: Positive
    price_cny: NonNegative


class ObjectiveWeights(_Frozen):
    """Multipliers of the cost terms, and the carbon price."""

    compute: NonNegative = 1.0
    energy: NonNegative = 1.0
    transfer: NonNegative = 1.0
    unserved: NonNegative = 1.0
    carbon_price_cny_per_t_co2: NonNegative = 0.0


from models.replan import Replanning, replanning_problems  # noqa: E402 (it reads Id above)
from models.policy import Policy, policy_problems  # noqa: E402


def _window_optional(schema: dict) -> None:
    """In the JSON Schema, `window_hours` may be left out (a horizon gives it)."""
    schema["required"] = [name for name in schema.get("required", []) if name != "window_hours"]


class Instance(_Frozen):
    """Everything the optimizer needs for one planning window."""

    model_config = ConfigDict(json_schema_extra=_window_optional)

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    name: Name = "instance"
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    window_hours: float = Field(gt=0, le=100_000, description="Given by the horizon when there is one.")
    horizon: Horizon | None = Field(
        default=None, exclude_if=_unless, description="Slots of the window (schema version 2)."
    )
    gpu_hour_quantum: float = Field(
        default=0.01, ge=MIN_QUANTUM, le=1_000,
        description="Usage is counted in whole quanta of GPU-hours.",
    )
    regions: tuple[Region, ...]
    links: tuple[Link, ...] = ()
    demands: tuple[Demand, ...]
    offers: tuple[Offer, ...] = ()
    weights: ObjectiveWeights = ObjectiveWeights()
    carbon_cap_t_co2: NonNegative | None = Field(
        default=None, exclude_if=_unless, description="Most tCO2 the plan may emit (needs a horizon)."
    )
    load_quantum_pflop_per_hour: float = Field(
        default=0.01, ge=1e-9, le=1e6, exclude_if=lambda v: v == 0.01,
        description="Served service load is counted in whole quanta of this size.",
    )
    replanning: Replanning | None = Field(
        default=None, exclude_if=_unless,
        description="Re-planned from a reference plan: jobs pinned before now_slot, migration costs.",
    )
    policy: Policy | None = Field(
        default=None, exclude_if=_unless,
        description="Quotas per sector and origin, and the fairness option (docs/policy.md).",
    )

    @model_validator(mode="before")
    @classmethod
    def _window_from_horizon(cls, data):
        if isinstance(data, dict) and data.get("window_hours") is None and isinstance(data.get("horizon"), dict):
            horizon = data["horizon"]
            try:
                hours = int(horizon["slots"]) * float(horizon.get("slot_hours", 1.0))
            except (KeyError, TypeError, ValueError):
                return data  # the horizon's own validation names the field
            data = {**data, "window_hours": hours}
        return data

    @model_validator(mode="before")
    @classmethod
    def _empty_policy(cls, data):
        """A policy without quotas or fairness is no policy (it would only cost the engines)."""
        if isinstance(data, dict) and data.get("policy") is not None:
            policy = data["policy"]
            quotas = policy.get("quotas") if isinstance(policy, dict) else getattr(policy, "quotas", None)
            fairness = policy.get("fairness", "none") if isinstance(policy, dict) else getattr(policy, "fairness", None)
            if not quotas and fairness in ("none", None):
                data = {**data, "policy": None}
        return data

    @property
    def timed(self) -> bool:
        """Whether the instance has a horizon in slots (the time-expanded model applies)."""
        return self.horizon is not None

    @model_validator(mode="after")
    def _check_references(self) -> Instance:
        problems = _reference_problems(self)
        if not problems:
            problems = time_problems(self)
        if not problems:
            problems = replanning_problems(self)
        if not problems:
            problems = policy_problems(self)
        if problems:
            shown = problems[:20]
            more = len(problems) - len(shown)
            tail = f"\n(and {more} more)" if more else ""
            raise ValueError("\n".join(shown) + tail)
        return self

    def pools(self) -> list[tuple[Region, AcceleratorPool]]:
        """Every (region, pool) pair, in file order."""
        return [(region, pool) for region in self.regions for pool in region.pools]


def _duplicates(ids: list[str]) -> list[str]:
    return [key for key, count in Counter(ids).items() if count > 1]


def _reference_problems(inst: Instance) -> list[str]:
    """Every broken reference or contradiction, as a message naming the object and the field."""
    out: list[str] = []
    if not inst.regions:
        out.append("instance: field 'regions' is empty")
    if not inst.demands:
        out.append("instance: field 'demands' is empty")
    region_ids = [r.id for r in inst.regions]
    for dup in _duplicates(region_ids):
        out.append(f"region '{dup}': field 'id' is used by more than one region")
    pools = [(r, p) for r in inst.regions for p in r.pools]
    if inst.regions and not pools:
        out.append("instance: no region has an accelerator pool")
    for dup in _duplicates([p.id for _, p in pools]):
        out.append(f"pool '{dup}': field 'id' is used by more than one pool")
    for dup in _duplicates([d.id for d in inst.demands]):
        out.append(f"demand '{dup}': field 'id' is used by more than one demand")

    regions = set(region_ids)
    pairs: set[frozenset[str]] = set()
    for k, link in enumerate(inst.links):
        name = f"link {k} ({link.source}-{link.target})"
        for field in ("source", "target"):
            if getattr(link, field) not in regions:
                out.append(f"{name}: field '{field}' names unknown region '{getattr(link, field)}'")
        if link.source == link.target:
            out.append(f"{name}: field 'target' equals 'source' (a link needs two regions)")
        pair = frozenset((link.source, link.target))
        if pair in pairs and link.source != link.target:
            out.append(f"{name}: field 'target': a link between these regions is already given")
        pairs.add(pair)

    accelerators = {p.accelerator for _, p in pools}
    jurisdictions = {r.jurisdiction for r in inst.regions}
    largest_pool = max((p.gpu_count for _, p in pools), default=0)
    pool_ids = {p.id for _, p in pools}
    offered: set[str] = set()
    seen_offers: set[tuple[str, str]] = set()
    demand_ids = {d.id for d in inst.demands}
    for k, offer in enumerate(inst.offers):
        name = f"offer {k} ({offer.demand} on {offer.pool})"
        if offer.demand not in demand_ids:
            out.append(f"{name}: field 'demand' names unknown demand '{offer.demand}'")
        if offer.pool not in pool_ids:
            out.append(f"{name}: field 'pool' names unknown pool '{offer.pool}'")
        if (offer.demand, offer.pool) in seen_offers:
            out.append(f"{name}: field 'pool': this demand already has an offer on this pool")
        seen_offers.add((offer.demand, offer.pool))
        offered.add(offer.demand)

    for d in inst.demands:
        name = f"demand '{d.id}'"
        if d.origin not in regions:
            out.append(f"{name}: field 'origin' names unknown region '{d.origin}'")
        if pools and d.gang_size > largest_pool:
            out.append(
                f"{name}: field 'gang_size' is {d.gang_size} but the largest pool has "
                f"{largest_pool} GPUs"
            )
        for acc in d.accelerators or ():
            if acc not in accelerators:
                out.append(f"{name}: field 'accelerators' names '{acc}', which no pool has")
        for jur in d.jurisdictions or ():
            if jur not in jurisdictions:
                out.append(f"{name}: field 'jurisdictions' names '{jur}', which no region has")
        if d.work_pflop is None and d.id not in offered and d.kind == DemandKind.BATCH:
            out.append(f"{name}: field 'work_pflop' is missing and the demand has no offers")
        if len(out) > 1000:
            break
    return out
