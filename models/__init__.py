"""eastwest's data model: facts in (`Instance`), decisions out (`Plan`). No solver code lives here."""

from models.horizon import BANDWIDTH_QUANTUM_GBPS, BEIJING, MAX_SLOTS, PERIOD_NAMES, TARIFF_PERIODS, Horizon, Outage
from models.instance import (
    AMOUNT_LIMIT,
    INTRA_REGION_LATENCY_MS,
    PRECISION_FALLBACKS,
    QUANTUM_SLACK,
    SCHEMA_VERSION,
    TIMED_SCHEMA_VERSION,
    AcceleratorPool,
    Demand,
    DemandKind,
    Instance,
    Link,
    ObjectiveWeights,
    Offer,
    Precision,
    Region,
    Sector,
)
from models.replan import Baseline, Replanning
from models.scenario import (
    OutageCase,
    Scenario,
    ScenarioSummary,
    Sweep,
    SweepGrid,
    SweepSummary,
    YearSummary,
)
from models.plan import (
    OPTIMAL_GAP,
    RULES,
    Assignment,
    CostBreakdown,
    LinkLoad,
    LinkPrice,
    Plan,
    PoolPrice,
    PoolUsage,
    Reason,
    ServicePlacement,
    ServicePlan,
    ShadowPrices,
    SolveStats,
    Status,
    Unserved,
    Verification,
    Violation,
    relative_gap,
)

__all__ = [
    "AMOUNT_LIMIT",
    "BANDWIDTH_QUANTUM_GBPS",
    "BEIJING",
    "INTRA_REGION_LATENCY_MS",
    "MAX_SLOTS",
    "OPTIMAL_GAP",
    "PERIOD_NAMES",
    "PRECISION_FALLBACKS",
    "QUANTUM_SLACK",
    "RULES",
    "SCHEMA_VERSION",
    "TARIFF_PERIODS",
    "TIMED_SCHEMA_VERSION",
    "AcceleratorPool",
    "CandidateBuild",
    "CandidateSet",
    "ExpansionParams",
    "ExpansionResult",
    "PoolTemplate",
    "Assignment",
    "Baseline",
    "CostBreakdown",
    "Demand",
    "DemandKind",
    "Horizon",
    "Instance",
    "Link",
    "LinkLoad",
    "LinkPrice",
    "ObjectiveWeights",
    "Offer",
    "Outage",
    "OutageCase",
    "Plan",
    "PoolPrice",
    "PoolUsage",
    "Precision",
    "Reason",
    "Region",
    "Replanning",
    "Scenario",
    "ScenarioSummary",
    "Sector",
    "ServicePlacement",
    "ServicePlan",
    "ShadowPrices",
    "SolveStats",
    "Status",
    "Sweep",
    "SweepGrid",
    "SweepSummary",
    "Unserved",
    "Verification",
    "Violation",
    "YearSummary",
    "relative_gap",
]

_EXPANSION = ("CandidateBuild", "CandidateSet", "ExpansionParams", "ExpansionResult", "PoolTemplate")


def __getattr__(name: str):
    """The expansion models, imported on first use (every command would pay ~50 ms for them)."""
    if name in _EXPANSION:
        import models.expansion

        return getattr(models.expansion, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
