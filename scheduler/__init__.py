"""eastwest's engine: compile options, solve, verify, read and write files.

The public face of the library; everything a user needs is importable from here::

    from scheduler import read_instance, solve, SolveParams
    result = solve(read_instance("instances/china-2025.json"), SolveParams(time_limit_s=30))
    print(result.objective, result.lower_bound, result.gap)

Hypothesis strategies live in `scheduler.strategies` (they need the `test` extra).

The names are imported on first use (PEP 562), so that ``import scheduler.cli`` stays light and
the command can install its signal handlers before numpy, pydantic and OR-Tools load.
"""

from __future__ import annotations

import importlib
import sys
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

_SOURCES = {
    "Options": "scheduler.compile",
    "compile_options": "scheduler.compile",
    "rejections": "scheduler.compile",
    "china_instance": "scheduler.generate",
    "explain": "scheduler.explain",
    "GapFormatError": "scheduler.gap",
    "convert_gap_file": "scheduler.gap",
    "gap_to_instance": "scheduler.gap",
    "read_gap": "scheduler.gap",
    "InputError": "scheduler.io",
    "read_instance": "scheduler.io",
    "read_params": "scheduler.io",
    "read_plan": "scheduler.io",
    "write_instance": "scheduler.io",
    "html_report": "scheduler.html_report",
    "write_html_report": "scheduler.html_report",
    "scenario_report": "scheduler.scenario_report",
    "write_scenario_report": "scheduler.scenario_report",
    "write_plan": "scheduler.io",
    "build_graph": "scheduler.network",
    "Progress": "scheduler.params",
    "Result": "scheduler.params",
    "SolveParams": "scheduler.params",
    "Stopped": "scheduler.params",
    "CapacityEvent": "scheduler.replan",
    "Change": "scheduler.replan",
    "Events": "scheduler.replan",
    "OutageEvent": "scheduler.replan",
    "PlanChange": "scheduler.replan",
    "ReplanError": "scheduler.replan",
    "ReplanResult": "scheduler.replan",
    "replan": "scheduler.replan",
    "summary": "scheduler.report",
    "VerificationError": "scheduler.solve",
    "solve": "scheduler.solve",
    "verify": "scheduler.verify",
}

__all__ = sorted(_SOURCES)

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from scheduler.compile import Options, compile_options, rejections
    from scheduler.explain import explain
    from scheduler.gap import GapFormatError, convert_gap_file, gap_to_instance, read_gap
    from scheduler.generate import china_instance
    from scheduler.html_report import html_report, write_html_report
    from scheduler.scenario_report import scenario_report, write_scenario_report
    from scheduler.io import (
        InputError,
        read_instance,
        read_params,
        read_plan,
        write_instance,
        write_plan,
    )
    from scheduler.network import build_graph
    from scheduler.params import Progress, Result, SolveParams, Stopped
    from scheduler.replan import (
        CapacityEvent,
        Change,
        Events,
        OutageEvent,
        PlanChange,
        ReplanError,
        ReplanResult,
        replan,
    )
    from scheduler.report import summary
    from scheduler.solve import VerificationError, solve
    from scheduler.verify import verify


class _Package(types.ModuleType):
    """`solve`, `verify` and `explain` are both functions here and submodules: importing a submodule sets
    the package's attribute to the module, so put the function of the same name there instead
    (as the eager ``from scheduler.solve import solve`` used to)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _SOURCES.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    """Import a public name from its module on first use, and keep it."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'scheduler' has no attribute '{name}'")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
