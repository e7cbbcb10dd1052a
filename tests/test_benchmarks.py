"""Smoke runs of both benchmark suites, as a user runs them: `benchmarks/run.py` in a subprocess.

They check the plumbing (exit code, protocol lines, a row per solver, objectives from the
verifier), never a time or a target: those are measured, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"
GAP_DIR = REPO.parent / "shared" / "benchmarks" / "gap"

PROTOCOL_LINES = (
    "- Suite: ", "- Instances: ", "- Time limit(s): ", "- Seeds: ", "- Workers: ",
    "- Cores (os.cpu_count): ", "- Machine: ", "- Python: ", "- OR-Tools: ", "- numpy: ",
    "- Git commit: ", "- Date: ",
)


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def _rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Table rows whose cells include ``first_cell`` (cells stripped)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if first_cell in cells:
                rows.append(cells)
    return rows


@pytest.mark.slow
def test_gap_smoke(tmp_path: Path) -> None:
    """`gap --smoke --baseline`: the five gap1 problems, both solvers, verified objectives."""
    if not GAP_DIR.is_dir():
        pytest.skip(f"GAP literature files not present at {GAP_DIR}")
    done = _run("gap", "--smoke", "--baseline", "--workers", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    text = _only(tmp_path, "gap-*.md").read_text()
    for line in PROTOCOL_LINES:
        assert line in text, f"protocol line {line!r} missing"
    assert "- Suite: gap" in text
    # One per-problem row per solver for every gap1 problem (gap1-1 .. gap1-5).
    for k in range(1, 6):
        solvers = {row[4] for row in _rows(text, f"gap1-{k}")}
        assert solvers == {"eastwest", "cp-sat"}, (k, solvers)

    data = json.loads(_only(tmp_path, "gap-*.json").read_text())
    assert data["protocol"]["suite"] == "gap"
    names = [p["instance"] for p in data["problems"]]
    assert names == [f"gap1-{k}" for k in range(1, 6)]
    for problem in data["problems"]:
        for label, solved in problem["solvers"].items():
            assert solved["verified"] is True, (problem["instance"], label, solved)
            # The reported objective is the verifier's, and the gap to BKS is computed from it.
            assert solved["objective"] is not None
            bks = problem["bks"]
            assert solved["bks_gap"] == pytest.approx((solved["objective"] - bks) / bks)


def test_gap_skips_cleanly_without_data(tmp_path: Path) -> None:
    """With the shared folder absent the suite says 'skipped' and exits 0 (checked by copying
    the runner next to a repository root that has no ../shared)."""
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    for name in ("run.py", "common.py", "gap_suite.py", "scale_suite.py"):
        (root / "benchmarks" / name).write_text((REPO / "benchmarks" / name).read_text())
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "run.py"), "gap", "--smoke", "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" in done.stdout


@pytest.mark.slow
def test_scale_smoke(tmp_path: Path) -> None:
    """`scale --smoke`: 1,000 demands, eastwest, plain CP-SAT and greedy, each in a child."""
    done = _run("scale", "--smoke", "--time-limits", "4", "--workers", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    text = _only(tmp_path, "scale-*.md").read_text()
    for line in PROTOCOL_LINES:
        assert line in text, f"protocol line {line!r} missing"
    assert "- Suite: scale" in text
    for solver in ("eastwest", "cp-sat", "greedy"):
        assert len(_rows(text, solver)) == 1, f"no single row for {solver}"

    data = json.loads(_only(tmp_path, "scale-*.json").read_text())
    (size,) = data["sizes"]
    assert size["size"] == 1000
    assert set(size["solvers"]) == {"eastwest", "cp-sat", "greedy"}
    for solver, record in size["solvers"].items():
        assert record["outcome"] == "ok", (solver, record)
        assert record["verified"] is True, (solver, record)
        assert record["objective"] is not None
        assert record["peak_rss_bytes"] > 0
        assert record["generation_s"] >= 0
    assert size["solvers"]["greedy"]["lower_bound"] is None
    comparison = size["comparison"]
    ew, cp = size["solvers"]["eastwest"], size["solvers"]["cp-sat"]
    expected = ew["objective"] / cp["objective"]
    assert comparison["objective_ratio_vs_cpsat"] == pytest.approx(expected)


@pytest.mark.slow
def test_time_smoke(tmp_path: Path) -> None:
    """`time --smoke`: 200 demands x 24 slots, all four solvers in children, each plan verified
    on the original instance, costs as ratios to eastwest's objective."""
    done = _run("time", "--smoke", "--time-limits", "3", "--workers", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    text = _only(tmp_path, "time-*.md").read_text()
    for line in PROTOCOL_LINES:
        assert line in text, f"protocol line {line!r} missing"
    assert "- Suite: time" in text
    data = json.loads(_only(tmp_path, "time-*.json").read_text())
    (case,) = data["cases"]
    assert (case["size"], case["hours"]) == (200, 24)
    solvers = case["solvers"]
    assert set(solvers) == {"eastwest", "cp-sat", "no-time-shift", "no-space-shift"}
    for name, record in solvers.items():
        assert record["verified"] is True, (name, record)
        assert record["co2_t"] is not None and record["peak_rss_bytes"] > 0
    ew = solvers["eastwest"]["objective"]
    for name, record in solvers.items():
        expected = record["objective"] / ew
        assert case["comparison"][f"cost_ratio_{name}"] == pytest.approx(expected)
