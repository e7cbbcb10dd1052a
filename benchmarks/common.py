"""Shared pieces of the benchmark suites: the protocol header, number formatting, aligned markdown
tables and atomic result files. Standard library only (numpy and OR-Tools only for their versions).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository root (benchmarks/ sits directly under it)."""

SHARED = REPO.parent / "shared"
"""The shared data folder next to the repository (``../shared`` from the root)."""

DEFAULT_OUT = REPO / "benchmarks" / "results"

GB = 1e9
"""Memory is reported in decimal gigabytes (10^9 bytes); targets use the same unit."""


# --------------------------------------------------------------------------------------------------
# Protocol


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str:
    """Short HEAD commit, with ``-dirty (N changed/untracked files)`` when the tree differs."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown (not a git checkout)"
    status = _git("status", "--porcelain")
    changed = [line for line in (status or "").splitlines() if line.strip()]
    if changed:
        return f"{head}-dirty ({len(changed)} changed or untracked files)"
    return head


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    """Physical memory from /proc/meminfo, in GB."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) * 1024 / GB:.1f} GB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    """Python, OR-Tools and numpy versions."""
    found = {"python": platform.python_version()}
    for name, module in (("ortools", "ortools"), ("numpy", "numpy")):
        try:
            found[name] = __import__(module).__version__
        except ImportError:
            found[name] = "not installed"
    return found


def protocol(suite: str, **fields: object) -> dict[str, object]:
    """The protocol record that heads every result file: the suite's own fields plus the machine,
    the software versions, the commit and the date."""
    v = versions()
    return {
        "suite": suite,
        **fields,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "machine": f"{platform.platform()}; CPU {cpu_model()}; memory {memory_total()}",
        "python": v["python"],
        "ortools": v["ortools"],
        "numpy": v["numpy"],
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join(["python", *[_quote(a) for a in sys.argv]]),
    }


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_=.,/:" for c in arg) else repr(arg)


PROTOCOL_LABELS = (
    ("suite", "Suite"),
    ("instances", "Instances"),
    ("time_limits", "Time limit(s)"),
    ("seeds", "Seeds"),
    ("workers", "Workers"),
    ("cpu_count", "Cores (os.cpu_count)"),
    ("usable_cores", "Cores usable (affinity)"),
    ("machine", "Machine"),
    ("python", "Python"),
    ("ortools", "OR-Tools"),
    ("numpy", "numpy"),
    ("git_commit", "Git commit"),
    ("date", "Date"),
    ("command", "Command"),
)


def protocol_markdown(record: dict[str, object], extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The protocol as a markdown bullet list (``- Label: value``)."""
    lines = ["## Protocol", ""]
    for key, label in (*PROTOCOL_LABELS, *extra):
        if key in record:
            lines.append(f"- {label}: {record[key]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Timing a solve

BEST_TIME_KEYS = ("time_to_best_s", "best_solution_s")
"""Keys of `SolveStats.details` read as the engine's own time to its best plan (its own clock)."""


def engine_best_s(details: dict) -> float | None:
    """The engine's reported time to its best plan, if it reports one (negative means none)."""
    for key in BEST_TIME_KEYS:
        value = details.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


class Incumbents:
    """An ``on_progress`` hook: wall seconds from its creation (just before ``solve()``) to the
    first and to the last improving incumbent the engine reports."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.best: float | None = None
        self.value: float | None = None

    def __call__(self, progress) -> None:
        if progress.objective is None:
            return
        now = time.perf_counter() - self.started
        if self.first is None:
            self.first = now
        if self.value is None or progress.objective < self.value - 1e-9 * max(1.0, abs(self.value)):
            self.value, self.best = progress.objective, now

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


TIMES_NOTE = (
    "first s / best s: wall seconds from the start of `solve()` to the first and to the last "
    "improving incumbent the engine reports through `on_progress` (the greedy hint is not "
    "reported as one). engine best s: the engine's own `time_to_best_s` in `stats.details`, on "
    "its own clock (from the engine's start), when it reports one."
)


# --------------------------------------------------------------------------------------------------
# Formatting


def fmt_num(value: float | None, digits: int = 2) -> str:
    """A number with thousands separators, or '-' for None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def fmt_pct(value: float | None, digits: int = 3) -> str:
    """A fraction as a percentage (0.0012 -> '0.120%')."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.{digits}f}%"


def fmt_s(value: float | None) -> str:
    """Seconds, 2 decimals under 100 s."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def fmt_gb(value_bytes: float | None) -> str:
    """Bytes as decimal GB."""
    if value_bytes is None:
        return "-"
    return f"{value_bytes / GB:.2f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator; None when either is missing; inf for x/0 with x > 0; 1 for 0/0."""
    if numerator is None or denominator is None:
        return None
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


def fmt_ratio(value: float | None, digits: int = 3) -> str:
    """A ratio such as '0.042x'; 'inf' when the denominator was 0."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}x"


def mean(values: list[float]) -> float | None:
    """The arithmetic mean, None for no values."""
    return math.fsum(values) / len(values) if values else None


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """An aligned markdown table; columns in ``right`` are right-aligned (numbers)."""
    right = set() if right is None else right
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    widths = [max(3, len(h), *(len(r[k]) for r in cells)) for k, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if k in right else v.ljust(w)
                 for k, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    rule = ["-" * (w - 1) + ":" if k in right else "-" * w for k, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *map(line, cells)])


# --------------------------------------------------------------------------------------------------
# Files


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: object) -> None:
    """Atomic, indented JSON (non-finite floats become null)."""
    write_atomic(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def stamp() -> str:
    """A UTC timestamp for result file names."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
