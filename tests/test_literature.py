"""Literature GAP instances (OR-Library gap1-gap12) solve to their published optima.

These read `../shared/benchmarks/gap` beside the repository and skip cleanly where it is absent
(a user's machine); CI has it. The full literature suites are in `benchmarks/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Status
from scheduler import SolveParams, gap_to_instance, read_gap, solve
from scheduler.gap import load_bks

GAP = Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "gap"
pytestmark = pytest.mark.skipif(not GAP.is_dir(), reason="../shared/benchmarks/gap not present")
FILES = [f"gap{k}.txt" for k in range(1, 13)]


def problems():
    if not GAP.is_dir():
        return []
    return [problem for name in FILES for problem in read_gap(GAP / "orlib" / name)]


@pytest.fixture(scope="module")
def best_known():
    return load_bks(GAP / "bks.csv")


@pytest.mark.parametrize("problem", problems(), ids=lambda p: p.name)
def test_orlibrary_problem_solves_to_its_proven_minimum(problem, best_known):
    """Every gap1-gap12 problem reaches the literature's minimum, and the engine proves it."""
    result = solve(gap_to_instance(problem), SolveParams(time_limit_s=120))
    assert result.plan.status == Status.OPTIMAL
    assert result.verification.objective == best_known[(problem.name, "min")].best_known
    assert result.lower_bound == pytest.approx(result.objective)


@pytest.mark.parametrize("problem", problems()[:5], ids=lambda p: p.name)
def test_maximization_optimum_is_recovered_from_the_converted_minimum(problem, best_known):
    """With --maximize, n*K - objective is OR-Library's published maximum (K = the largest cost)."""
    result = solve(gap_to_instance(problem, maximize=True), SolveParams(time_limit_s=120))
    assert result.plan.status == Status.OPTIMAL
    recovered = problem.n * int(problem.cost.max()) - result.objective
    assert recovered == best_known[(problem.name, "max")].best_known
