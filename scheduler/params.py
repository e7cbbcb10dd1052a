"""Solve parameters, progress reports and the result of a solve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models import Plan, Verification


class SolveParams(BaseModel):
    """Everything that steers a solve; load one from JSON with ``SolveParams.model_validate_json``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    time_limit_s: float = Field(default=60.0, gt=0, le=7 * 24 * 3600)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    workers: int = Field(
        default=0, ge=0, le=256, description="Parallel workers; 0: the engine's default."
    )
    engine: Literal["auto", "exact", "large"] = "auto"
    gap_limit: float = Field(
        default=0.0, ge=0, le=1, description="Stop once the relative gap is at most this."
    )
    iteration_limit: int | None = Field(
        default=None,
        ge=1,
        description="Large engine: stop after this many improvement rounds. A budget counted in "
        "work, not seconds: with one worker the plan then does not depend on the machine's speed.",
    )
    deterministic_time_limit_s: float | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        description="Exact engine: CP-SAT's deterministic-time limit (its work counter, in its "
        "own seconds), on top of time_limit_s. With one worker the result then does not depend on "
        "the machine's speed (as long as time_limit_s is not reached first).",
    )
    time_shifting: bool = Field(
        default=True,
        description="Horizon instances: False holds every batch job to its earliest allowed start "
        "(its release, one slot later when its data moves), to measure what shifting saves.",
    )


class Stopped(Exception):
    """`solve()` was stopped (its ``stop`` event set) before any plan existed: while compiling
    the options or building the first (greedy) plan."""


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running solve: the incumbent, the proven bound and the gap.

    ``message`` says what happened: "compiled" and "first plan" (from `solve` itself, engine
    "solve"), "solution", "bound" and "final" (from the engines), or "late: ..." when the time
    limit is below what compiling, itemizing and verifying need (the text says how much).
    """

    engine: str
    elapsed_s: float
    objective: float | None
    bound: float | None
    gap: float | None
    message: str = ""


@dataclass(frozen=True)
class Result:
    """A plan, and the independent verifier's verdict on it."""

    plan: Plan
    verification: Verification

    @property
    def objective(self) -> float | None:
        return self.plan.objective

    @property
    def lower_bound(self) -> float | None:
        return self.plan.lower_bound

    @property
    def gap(self) -> float | None:
        return self.plan.gap

    @property
    def status(self) -> str:
        return self.plan.status.value
