"""Planning ahead: growth scenarios over years, sweeps over many scenarios, and their results.

A `Scenario` names a base instance and says how each later year differs from it: demand growth
per sector, GPUs already planned, the carbon price and price changes. A `Sweep` runs one scenario
over a grid of variants (growth x carbon price x outage x seed). `ScenarioSummary` and
`SweepSummary` are what the commands write: the figures of every year solved. How a year's
instance is derived is in docs/scenarios.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StringConstraints, Tag, model_validator

from models.base import Frozen as _Frozen
from models.instance import AMOUNT_LIMIT, Id, Name, NonNegative, Sector

Year = Annotated[int, Field(ge=1900, le=2200)]
Rate = Annotated[float, Field(ge=-1, le=100, description="Change per year: 0.4 is +40%, -1 is -100%.")]
RatePath = Annotated[
    Annotated[Rate, Tag("rate")] | Annotated[dict[Year, Rate], Tag("by_year")],
    Discriminator(lambda v: "by_year" if isinstance(v, dict) else "rate"),
]
"""One rate for every year, or a rate per year (years not listed take the default). In a
validation error's location the branch shows as 'rate' or 'by_year'."""
PATH_TAGS = ("rate", "by_year")
Fraction = Annotated[float, Field(ge=0, lt=1)]

SCENARIO_SCHEMA_VERSION = 1


def _check_years(name: str, years: list[int], base_year: int) -> list[str]:
    """Changes are from one year to the next, so they start after the base year (years after
    the last one solved are allowed: they change nothing)."""
    return [f"field '{name}': year {y} is not after base_year {base_year}" for y in years if y <= base_year]


class ExpansionSpec(_Frozen):
    """Candidate builds for the scenario to choose with the expansion optimizer (docs/expansion.md):
    the years are then planned together, builds and placements, with one proven bound."""

    candidates: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="The candidates file (docs/schema/candidates.schema.json); a relative path is "
        "relative to the scenario file.")
    time_limit_s: float = Field(default=240.0, gt=0, le=7 * 24 * 3600,
                                description="For the whole expansion run: bound, builds, yearly solves, savings.")
    year_time_limit_s: float = Field(
        default=10.0, gt=0, le=24 * 3600,
        description="Each yearly solve at most this; the CLI's --time-limit overrides it.")
    savings: bool = Field(default=True, description="Re-solve without each build to price it.")
    lp_max_options: int = Field(
        default=2_000_000, ge=0,
        description="Solve the LP relaxation (GLOP) up to this many options over all years; above it "
        "the bound comes from the bundle method alone, much weaker (docs/scenarios.md).")


class Scenario(_Frozen):
    """How demand, capacity and prices change over the years, from a base instance."""

    schema_version: Literal[1] = SCENARIO_SCHEMA_VERSION
    name: Name = "scenario"
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    base_instance: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="The instance of base_year; a relative path is relative to this file.")
    base_year: Year = Field(default=2025, description="The year the base instance describes.")
    years: tuple[Year, ...] = Field(
        min_length=1, max_length=200, description="Years to solve, increasing, from base_year on.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="Picks which demands are copied when a sector grows by a fraction.")
    demand_scaling: Literal["copies", "work"] = Field(
        default="copies",
        description="copies: more demands like the base ones (whole copies, then a seeded choice, "
        "the last one cut to size); work: every demand's work scaled by the sector's factor.")
    growth: dict[Sector, RatePath] = Field(
        default_factory=dict,
        description="Demand growth per year by sector; sectors and years not given take the "
        "sourced defaults of scheduler/data/growth.json.")
    planned_capacity: dict[Year, dict[Id, Annotated[int, Field(ge=0, le=10_000_000)]]] = Field(
        default_factory=dict,
        description="GPUs added to a pool (by pool id) in a year; they stay in later years.")
    carbon_price_cny_per_t_co2: dict[Year, NonNegative] = Field(
        default_factory=dict,
        description="The carbon price from a year on (a step path); before the first year listed, "
        "the base instance's.")
    electricity_price_change: RatePath = Field(
        default=0.0, description="Change per year of every region's electricity price.")
    accelerator_price_change: RatePath = Field(
        default=0.0, description="Change per year of every pool's price per GPU-hour.")
    time_limit_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="Per year solved; the CLI's --time-limit overrides it.")
    solve: dict[str, Any] = Field(
        default_factory=dict,
        description="Further solve parameters (the fields of docs/schema/params.schema.json).")
    expansion: ExpansionSpec | None = Field(
        default=None,
        description="Candidate builds to choose over the years (needs consecutive years and a base "
        "instance without a horizon); null: only the planned capacity.")

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        problems = []
        years = list(self.years)
        for a, b in zip(years, years[1:]):
            if b <= a:
                problems.append(f"field 'years': {b} follows {a}; years must increase")
        if years and years[0] < self.base_year:
            problems.append(f"field 'years': {years[0]} is before base_year {self.base_year}")
        for sector, path in self.growth.items():
            if isinstance(path, dict):
                problems += _check_years(f"growth.{sector.value}", list(path), self.base_year)
        for field in ("electricity_price_change", "accelerator_price_change"):
            path = getattr(self, field)
            if isinstance(path, dict):
                problems += _check_years(field, list(path), self.base_year)
        problems += _check_years("planned_capacity", list(self.planned_capacity), self.base_year)
        if self.expansion is not None and any(b != a + 1 for a, b in zip(years, years[1:])):
            problems.append("field 'years': with 'expansion' the years must be consecutive (builds "
                            "are chosen year by year)")
        if problems:
            raise ValueError("\n".join(f"scenario: {p}" for p in problems))
        return self


class OutageCase(_Frozen):
    """GPUs out for the whole of every year: a share of each named region's or pool's GPUs."""

    name: Id = "none"
    regions: dict[Id, Fraction] = Field(default_factory=dict, description="Region id: share of its pools' GPUs out.")
    pools: dict[Id, Fraction] = Field(default_factory=dict, description="Pool id: share of its GPUs out.")


class SweepGrid(_Frozen):
    """The axes of a sweep; every combination is one variant of the scenario."""

    growth_scale: tuple[Annotated[float, Field(ge=0, le=100)], ...] = Field(
        default=(1.0,), min_length=1, description="Multiplies every growth rate of the scenario.")
    carbon_price_cny_per_t_co2: tuple[NonNegative | None, ...] = Field(
        default=(None,), min_length=1,
        description="A constant carbon price for every year; null keeps the scenario's path.")
    outages: tuple[OutageCase, ...] = Field(default=(OutageCase(),), min_length=1)
    seeds: tuple[Annotated[int, Field(ge=0, le=2**31 - 1)], ...] | None = Field(
        default=None, min_length=1,
        description="Seeds of the demand copies and of the solves; null: the scenario's seed.")


class Sweep(_Frozen):
    """Many variants of one scenario, each year of each variant one solve."""

    schema_version: Literal[1] = SCENARIO_SCHEMA_VERSION
    name: Name = "sweep"
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    scenario: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="The scenario file; a relative path is relative to this file.")
    years: tuple[Year, ...] | None = Field(
        default=None, min_length=1, description="The scenario's years to solve (default: all).")
    grid: SweepGrid = SweepGrid()
    solve: dict[str, Any] = Field(
        default_factory=dict,
        description="Solve parameters over the scenario's (docs/schema/params.schema.json); workers "
        "is always 1. Set iteration_limit (large engine) or deterministic_time_limit_s (exact "
        "engine) so that results do not depend on the machine's speed.")
    plans: bool = Field(default=False, description="Also write every plan.")

    @model_validator(mode="after")
    def _check(self) -> Sweep:
        names = [case.name for case in self.grid.outages]
        problems = [f"sweep: field 'grid.outages': name '{n}' is used more than once"
                    for n in sorted({n for n in names if names.count(n) > 1})]
        if self.years is not None and list(self.years) != sorted(set(self.years)):
            problems.append("sweep: field 'years': years must increase")
        if self.points > 10_000:
            problems.append(f"sweep: field 'grid': {self.points:,} variants; at most 10,000")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def points(self) -> int:
        """The number of variants in the grid."""
        g = self.grid
        return (len(g.growth_scale) * len(g.carbon_price_cny_per_t_co2) * len(g.outages)
                * len(g.seeds or (0,)))


# ---------------------------------------------------------------------------------------------
# Results: what `eastwest scenario` and `eastwest sweep` write.

Figure = Annotated[float, Field(ge=-AMOUNT_LIMIT * 1e3, le=AMOUNT_LIMIT * 1e3)]


class SectorFigures(_Frozen):
    """Demand and what was served, for one sector in one year (work in PFLOP)."""

    sector: Sector
    demands: int = Field(ge=0)
    served_demands: int = Field(ge=0, description="Batch jobs placed, services with any load served.")
    demand_pflop: float = Field(ge=0, description="Batch work plus service load over the horizon.")
    served_pflop: float = Field(ge=0)
    unserved_pflop: float = Field(ge=0)
    served_share: float | None = Field(ge=0, le=1, description="served_pflop / demand_pflop.")
    penalty_cny: float = Field(ge=0, description="Unserved penalties of the sector.")


class HubFigures(_Frozen):
    """Capacity and its use, for one hub (or region, where regions name no hub) in one year."""

    hub: str
    pools: int = Field(ge=0)
    gpus: int = Field(ge=0, description="GPUs in the year's instance (planned additions and outages applied).")
    used_gpu_hours: float = Field(ge=0)
    capacity_gpu_hours: float = Field(ge=0)
    utilization: float | None = Field(ge=0)


class YearSettings(_Frozen):
    """What the year's instance changed against the base instance."""

    demand_factor: dict[Sector, float] = Field(description="Demand of the year / demand of the base year.")
    gpus_added: int = Field(ge=0, description="GPUs planned up to this year.")
    gpus_out: int = Field(default=0, ge=0, description="GPUs taken out by a sweep's outage case.")
    gpus_built: int = Field(default=0, ge=0, description="GPUs of builds chosen by the expansion "
                            "optimizer usable this year (the scenario's 'expansion').")
    carbon_price_cny_per_t_co2: float = Field(ge=0)
    electricity_price_factor: float = Field(ge=0)
    accelerator_price_factor: float = Field(ge=0)


class YearSummary(_Frozen):
    """One year solved: the plan's status and bound, and its figures by sector and hub."""

    year: Year
    instance: str
    status: str
    objective: float | None
    lower_bound: float | None
    gap: float | None
    verified: bool = Field(description="The independent verifier (scheduler/verify.py) passed the plan.")
    violations: int = Field(ge=0)
    engine: str
    wall_time_s: float = Field(ge=0)
    settings: YearSettings
    demands: int = Field(ge=0)
    gpus: int = Field(ge=0)
    demand_pflop: float = Field(ge=0)
    served_pflop: float = Field(ge=0)
    unserved_pflop: float = Field(ge=0)
    operating_cost_cny: float = Field(description="Compute, energy, transfer and carbon (objective terms).")
    unserved_penalty_cny: float
    cost_per_pflop_cny: float | None = Field(description="operating_cost_cny / served_pflop.")
    co2_t: float = Field(ge=0)
    energy_kwh: float = Field(ge=0)
    sectors: tuple[SectorFigures, ...]
    hubs: tuple[HubFigures, ...]
    plan_file: str | None = Field(default=None, description="The plan, relative to the summary.")
    instance_file: str | None = Field(default=None, description="The year's instance, if written.")


class ScenarioBuild(_Frozen):
    """Steps of one candidate built in one year (a scenario with 'expansion')."""

    candidate: str
    region: str
    accelerator: str
    year: Year
    usable_from_year: int
    gpus: int = Field(ge=1)
    capital_cny: float = Field(description="Annualized capital of these GPUs over the years planned.")
    saving_cny: float | None = Field(
        default=None, description="Objective re-solved without the build minus with it (capital included).")


class ScenarioExpansion(_Frozen):
    """The builds chosen and the expansion's total with its proven bound; money in CNY per year,
    summed over the years (the full result: expansion.json, docs/schema/expansion.schema.json)."""

    candidates_file: str
    result_file: str = "expansion.json"
    status: str
    objective_cny: float | None = Field(description="Capital plus operating plus penalties, all years.")
    lower_bound_cny: float | None
    gap: float | None
    capital_cny: float
    operating_cny: float | None
    bound_method: str
    wall_time_s: float = Field(ge=0)
    builds: tuple[ScenarioBuild, ...]


class ScenarioSummary(_Frozen):
    """`eastwest scenario`'s summary.json: the years done so far, in order."""

    kind: Literal["eastwest-scenario"] = "eastwest-scenario"
    schema_version: Literal[1] = SCENARIO_SCHEMA_VERSION
    name: str
    scenario_file: str
    base_instance: str
    base_year: Year
    years_planned: tuple[Year, ...]
    complete: bool = Field(description="False while running, or when interrupted.")
    years: tuple[YearSummary, ...]
    expansion: ScenarioExpansion | None = Field(default=None, description="The builds chosen (with 'expansion').")


class SweepPoint(_Frozen):
    """One variant of a sweep and its years."""

    id: str
    growth_scale: float
    carbon_price_cny_per_t_co2: float | None
    outage: str
    seed: int
    years: tuple[YearSummary, ...]


class SweepSummary(_Frozen):
    """`eastwest sweep`'s summary.json: every variant, the years finished of each."""

    kind: Literal["eastwest-sweep"] = "eastwest-sweep"
    schema_version: Literal[1] = SCENARIO_SCHEMA_VERSION
    name: str
    sweep_file: str
    scenario_file: str
    backend: str
    solves: int = Field(ge=0, description="Solves in the sweep (variants x years).")
    finished: int = Field(ge=0)
    complete: bool
    points: tuple[SweepPoint, ...]
