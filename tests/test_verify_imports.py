"""The verifier stays independent: it imports only the standard library, `models` and `networkx`."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

VERIFY = Path(__file__).resolve().parent.parent / "scheduler" / "verify.py"
ALLOWED = set(sys.stdlib_module_names) | {"__future__", "models", "networkx"}


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module named by an import statement, relative imports as '.name'."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_verify_imports_only_stdlib_models_networkx():
    """No import of `scheduler` (or anything else) from verify.py, relative or absolute."""
    tree = ast.parse(VERIFY.read_text(), filename=str(VERIFY))
    bad = [name for name in imported_modules(tree) if name.split(".")[0] not in ALLOWED]
    assert bad == []


def test_verify_has_no_dynamic_imports():
    """No `__import__` or `importlib` call sneaks a module in."""
    tree = ast.parse(VERIFY.read_text(), filename=str(VERIFY))
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = {getattr(f, "id", None) or getattr(f, "attr", None) for f in calls}
    assert not names & {"__import__", "import_module"}
    assert "importlib" not in imported_modules(tree)


def test_verify_has_no_assert():
    """Library code reports problems as violations, never with `assert`."""
    tree = ast.parse(VERIFY.read_text(), filename=str(VERIFY))
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]


def test_checker_catches_a_scheduler_import():
    """The check itself flags `from scheduler import ...` and relative imports."""
    tree = ast.parse("from scheduler.network import routes\nfrom . import compile\nimport os\n")
    bad = [name for name in imported_modules(tree) if name.split(".")[0] not in ALLOWED]
    assert bad == ["scheduler.network", "."]
