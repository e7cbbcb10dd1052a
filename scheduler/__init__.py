"""eastwest's engine: compile options, solve, verify, read and write files.

The public face of the library; everything a user needs is importable from here::

    from scheduler import read_instance, solve, SolveParams
    result = solve(read_instance("instances/china-2025.json"), SolveParams(time_limit_s=30))
    print(result.objective, result.lower_bound, result.gap)

Hypothesis strategies live in `scheduler.strategies` (they need the `test` extra).
"""

from scheduler.compile import Options, compile_options, rejections
from scheduler.generate import china_instance
from scheduler.gap import GapFormatError, convert_gap_file, gap_to_instance, read_gap
from scheduler.io import (
    InputError,
    read_instance,
    read_params,
    read_plan,
    write_instance,
    write_plan,
)
from scheduler.network import build_graph
from scheduler.params import Progress, Result, SolveParams
from scheduler.report import summary
from scheduler.solve import VerificationError, solve
from scheduler.verify import verify

__all__ = [
    "GapFormatError",
    "InputError",
    "Options",
    "Progress",
    "Result",
    "SolveParams",
    "VerificationError",
    "build_graph",
    "china_instance",
    "compile_options",
    "convert_gap_file",
    "gap_to_instance",
    "read_gap",
    "read_instance",
    "read_params",
    "read_plan",
    "rejections",
    "solve",
    "summary",
    "verify",
    "write_instance",
    "write_plan",
]
