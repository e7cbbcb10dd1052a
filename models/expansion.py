"""Capacity expansion: candidate builds in, a build schedule with its proven bound out.

A `CandidateBuild` is a pool that could be built in a region, in whole steps of GPUs, at a capital
cost per GPU annualized with the capital recovery factor. `plan_expansion` (scheduler/expansion.py)
chooses how many steps to build in each year together with the placement of every year's demands;
docs/expansion.md has the model and the bound. All money in an `ExpansionResult` is in CNY per
year, summed over the years planned.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field, model_validator

from models.base import Frozen as _Frozen
from models.instance import Id, Name, NonNegative, Positive, Precision, Speed
from models.plan import Status

HOURS_PER_YEAR = 8760.0
"""A year of operation: a window's operating cost is scaled to a year by HOURS_PER_YEAR / window_hours."""


class PoolTemplate(_Frozen):
    """The accelerators of a build: the fields of `models.AcceleratorPool` that do not depend on
    how many GPUs are built. The price is the operating cost per GPU-hour used other than
    electricity (staff, maintenance, network): capital is charged separately."""

    accelerator: Name = Field(min_length=1, description="Accelerator model, e.g. 'H20'.")
    memory_gb_per_gpu: Positive
    tflops_by_precision: dict[Precision, Speed] = Field(
        min_length=1, description="Dense TFLOPS per GPU at each supported precision."
    )
    power_kw_per_gpu: NonNegative = Field(description="Board power per GPU, before PUE.")
    price_cny_per_gpu_hour: NonNegative = Field(
        description="Operating cost per GPU-hour used, electricity excluded (capital excluded)."
    )


class CandidateBuild(_Frozen):
    """A pool that may be built in a region, in steps of ``gpus_per_step`` GPUs."""

    id: Id = Field(description="The pool id the build gets in each year's instance.")
    region: Id
    pool: PoolTemplate
    gpus_per_step: int = Field(ge=1, le=1_000_000)
    capital_cny_per_gpu: Positive = Field(
        description="Purchase and installation cost per GPU (server share and facility share)."
    )
    lifetime_years: int = Field(ge=1, le=50, description="Years over which the capital is recovered.")
    discount_rate: float = Field(ge=0, le=1, description="Yearly rate of the capital recovery factor.")
    pue: float | None = Field(
        default=None, ge=1, le=10,
        description="The build's own PUE; null: the region's. Applied through the pool's power.",
    )
    max_steps_per_year: int = Field(ge=0, le=100_000, description="Most steps built in one year.")
    max_steps_total: int | None = Field(
        default=None, ge=0, le=10_000_000, description="Most steps built over all years; null: no limit."
    )
    lead_time_years: int = Field(
        default=0, ge=0, le=50, description="A step built in year y is usable from year y + lead."
    )
    source: Name = Field(default="", description="Where the cost figures come from.")

    @property
    def capital_recovery_factor(self) -> float:
        """r (1 + r)^n / ((1 + r)^n - 1), and 1 / n when r = 0: the share of the capital paid per year."""
        r, n = self.discount_rate, self.lifetime_years
        if r == 0:
            return 1.0 / n
        growth = (1.0 + r) ** n
        return r * growth / (growth - 1.0)

    @property
    def annual_capital_cny_per_gpu(self) -> float:
        return self.capital_cny_per_gpu * self.capital_recovery_factor


class CandidateSet(_Frozen):
    """A candidates file: the builds `eastwest expand` may choose from."""

    schema_version: Literal[1] = 1
    name: Name = "candidates"
    description: Name = ""
    candidates: tuple[CandidateBuild, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> CandidateSet:
        twice = [key for key, count in Counter(c.id for c in self.candidates).items() if count > 1]
        if twice:
            raise ValueError(f"candidate '{twice[0]}': field 'id' is used by more than one candidate")
        return self


class ExpansionParams(_Frozen):
    """What steers `plan_expansion`."""

    time_limit_s: float = Field(default=120.0, gt=0, le=7 * 24 * 3600,
                                description="For the whole run: bound, builds, yearly solves, savings.")
    year_time_limit_s: float = Field(default=10.0, gt=0, le=24 * 3600,
                                     description="Each year's solve (scheduler.solve) at most this.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    workers: int = Field(default=0, ge=0, le=256)
    lp_max_options: int = Field(
        default=400_000, ge=0,
        description="Solve the LP relaxation (GLOP) up to this many options over all years; above "
        "it the bound comes from the bundle method alone.",
    )
    savings: bool = Field(default=True, description="Re-solve without each build to price it.")


class Build(_Frozen):
    """Steps of one candidate built in one year, and what they save."""

    candidate: Id
    region: Id
    accelerator: Name
    year: int
    steps: int = Field(ge=1)
    gpus: int = Field(ge=1)
    usable_from_year: int
    capital_cny: float = Field(description="Annualized capital of these GPUs over the years planned.")
    saving_cny: float | None = Field(
        default=None,
        description="Objective without this build minus the objective with it (both re-solved; "
        "capital included): what the build saves; negative: it costs more than it saves.",
    )
    operating_saving_cny: float | None = Field(
        default=None, description="The same, capital left out: operating cost and penalties saved."
    )


class YearSummary(_Frozen):
    """One year's placement with the builds usable that year."""

    year: int
    growth_factor: float = Field(description="The demands' work relative to the first year.")
    status: Status
    demands: int
    served: int
    unserved: int
    work_pflop: float
    served_work_pflop: float
    built_gpus: dict[str, int] = Field(description="GPUs of each candidate usable this year.")
    built_gpu_hours_used: dict[str, float] = Field(description="GPU-hours of the window used on each.")
    operating_cny: float = Field(description="The year's plan objective, scaled to a year.")
    capital_cny: float = Field(description="Annualized capital of the GPUs usable this year.")
    plan_objective_cny: float | None = Field(description="The plan's objective in its window.")
    plan_lower_bound_cny: float | None = Field(description="Its proven bound (these builds fixed).")
    plan_file: str | None = None


class ExpansionResult(_Frozen):
    """A build schedule, each year's placement, the total cost and its proven lower bound."""

    schema_version: Literal[1] = 1
    instance: Name
    years: tuple[int, ...]
    window_hours: float
    annualization: float = Field(description="HOURS_PER_YEAR / window_hours: window cost -> a year.")
    status: Status
    objective_cny: float | None = Field(description="Capital plus operating plus penalties, all years.")
    lower_bound_cny: float | None = Field(description="Proven lower bound over every schedule and placement.")
    gap: float | None
    capital_cny: float
    operating_cny: float | None
    steps: dict[str, tuple[int, ...]] = Field(description="Steps of each candidate built in each year.")
    builds: tuple[Build, ...]
    year_summaries: tuple[YearSummary, ...]
    bound_method: str
    stats: dict[str, float | int | str] = {}
