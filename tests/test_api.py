"""The public face: what the packages export is what docs/api.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import models
import scheduler

API = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()


def documented(section: str) -> set[str]:
    """Names in the first column of the tables under '## `section`'."""
    body = API.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("| name") and not line.startswith("|--"):
            first = line.split("|")[1]
            names |= {m.split("(")[0] for m in re.findall(r"`([A-Za-z_]\w*)", first)}
    return names


def test_scheduler_exports_match_the_docs():
    """Every documented name is exported from scheduler, and nothing undocumented is."""
    assert set(scheduler.__all__) == documented("scheduler")
    for name in scheduler.__all__:
        assert hasattr(scheduler, name)


def test_models_exports_match_the_docs():
    """Every documented name is exported from models, and nothing undocumented is."""
    assert set(models.__all__) == documented("models")
    for name in models.__all__:
        assert hasattr(models, name)


def test_typed_markers_ship():
    """Both packages carry py.typed, so type checkers read their annotations."""
    root = Path(__file__).resolve().parent.parent
    assert (root / "models" / "py.typed").exists() and (root / "scheduler" / "py.typed").exists()


def test_strategies_without_hypothesis_name_the_extra():
    """Importing the strategies without Hypothesis says which extra to install."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import scheduler.strategies\n"
            "except ImportError as e:\n    print(e)\nelse:\n    print('imported')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert "eastwest[strategies]" in done.stdout, done.stdout + done.stderr
