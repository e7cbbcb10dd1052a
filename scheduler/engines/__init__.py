"""One module per way of solving; each returns an `EngineResult` in the project's own terms."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


class StopWatcher:
    """Calls ``action`` (a solver's stop or interrupt) once ``stop`` is set, polling it every 50 ms
    on a thread of its own until closed; a context manager. With no ``stop`` it does nothing."""

    def __init__(self, stop: threading.Event | None, action: Callable[[], object]):
        self.done = threading.Event()
        self.thread = None
        if stop is not None:
            self.thread = threading.Thread(target=self._watch, args=(stop, action), daemon=True)
            self.thread.start()

    def _watch(self, stop: threading.Event, action: Callable[[], object]) -> None:
        while not self.done.wait(0.05):
            if stop.is_set():
                action()
                return

    def close(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def __enter__(self) -> StopWatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
