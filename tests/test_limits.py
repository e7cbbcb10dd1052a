"""The time limit holds for the whole command: limit x 1.05 + 1 s, measured from outside.

Why this is not timing luck: the command does not hope to be fast enough, it budgets. Its
clock starts before the heavy imports; the time spent reading counts against the limit; solve()
measures up front what itemizing and verifying the plan will take (on a sample, with margin),
and the engine stops at the deadline that leaves. What is left to chance is only the part the
rule's 1 s covers (interpreter start, a last sub-solve winding down, writing a file of a few
MB), which is a small fraction of a second at these sizes; a loaded machine slows the budgeted
phases, not the budget. The sizes and limits are small so that the test stays cheap (about 15 s
of solving), but every limit is at least 3 s: starting the interpreter and importing the
solver alone take about 1 s on a 2-core machine (more on a loaded one), and a limit below that
is the documented "late" case (a `note:`), not the rule this test checks; and the engine is the large one at every size (forced); at 3,000 demands (the most
the exchange search takes) one exchange pass takes up to 0.5 s, and the search would run on
far past the limit if the deadline were not kept.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import Plan
from scheduler.generate import china_instance
from scheduler.io import write_instance

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("limits")
    out = {}
    for demands in (300, 1500, 3000):
        out[demands] = folder / f"china-{demands}.json"
        write_instance(china_instance(demands=demands, seed=5), out[demands])
    return out


@pytest.mark.parametrize("demands,limit", [(300, 3), (1500, 3), (3000, 3), (3000, 5)])
def test_the_command_keeps_to_the_time_limit(instances, tmp_path, demands, limit):
    """`eastwest solve --time-limit L` ends within L x 1.05 + 1 s, interpreter start included."""
    plan_path = tmp_path / "plan.json"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scheduler", "solve", str(instances[demands]), "-o",
         str(plan_path), "--time-limit", str(limit), "--engine", "large", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stderr, done.stderr
    plan = Plan.model_validate_json(plan_path.read_text())
    assert took <= limit * 1.05 + 1.0, (took, plan.stats.details)
