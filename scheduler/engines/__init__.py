"""One module per way of solving; each returns an `EngineResult` in the project's own terms."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models import Status


@dataclass(frozen=True)
class EngineResult:
    """A choice per demand (option index or -1), its status, and a proven lower bound."""

    choice: np.ndarray | None
    status: Status
    lower_bound: float | None
    solver_status: str
    first_solution_s: float | None = None
    cost_scale: float | None = None
    rounding_bound_cny: float = 0.0
    workers: int = 1
    details: dict[str, float | int | str] = field(default_factory=dict)
    duals: object | None = None  # the multipliers at the engine's Lagrangian bound, if it has one
