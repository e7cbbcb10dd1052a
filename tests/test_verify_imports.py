"""The verifier stays independent: it imports only the standard library and the data model
(`models`: its classes and constants, no helper functions), and runs without `scheduler`."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import models

REPO = Path(__file__).resolve().parent.parent
VERIFY = REPO / "scheduler" / "verify.py"
ALLOWED = set(sys.stdlib_module_names) | {"__future__", "models"}


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module named by an import statement, relative imports as '.name'."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_verify_imports_only_stdlib_and_models():
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


def names_from_models(tree: ast.AST) -> list[str]:
    """Every name verify.py takes from `models` (or its submodules)."""
    return [alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.level == 0 and (node.module or "").split(".")[0] == "models"
            for alias in node.names]


def shared_helpers(names: list[str]) -> list[str]:
    """The names that are functions (shared code), not data-model classes or constants."""
    return [name for name in names if inspect.isroutine(getattr(models, name, None))
            or name == "*" or not hasattr(models, name)]


def test_verify_takes_only_classes_and_constants_from_models():
    """No shared helper function (such as models.relative_gap) reaches the verifier."""
    tree = ast.parse(VERIFY.read_text(), filename=str(VERIFY))
    names = names_from_models(tree)
    assert "Plan" in names and "Instance" in names
    assert shared_helpers(names) == []
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import)
                and any(alias.name.split(".")[0] == "models" for alias in node.names)]


def test_helper_check_catches_a_function_from_models():
    """The check itself flags `from models import relative_gap` and a star import."""
    tree = ast.parse("from models import Plan, relative_gap, OPTIMAL_GAP\nfrom models import *\n")
    assert shared_helpers(names_from_models(tree)) == ["relative_gap", "*"]


ALONE = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("verify_alone", sys.argv[2])
module = importlib.util.module_from_spec(spec)
sys.modules["verify_alone"] = module
spec.loader.exec_module(module)
import models
from models import Instance, Plan
instance = Instance.model_validate_json(open(sys.argv[3]).read())
plan = Plan.model_validate_json(open(sys.argv[4]).read())
good = module.verify(instance, plan)
bad = module.verify(instance, plan.model_copy(update={"objective": plan.objective + 1}))
print(json.dumps({"ok": good.ok, "objective": good.objective,
                  "bad": [v.code for v in bad.violations], "modules": sorted(sys.modules),
                  "models": models.__file__}))
"""


def test_verify_runs_in_a_fresh_interpreter_without_the_scheduler_package():
    """verify.py, loaded from its file path, checks a shipped plan and never imports scheduler."""
    instance = REPO / "instances" / "tiny" / "gap_offers.json"
    plan = instance.with_name("gap_offers.plan.json")
    done = subprocess.run(
        [sys.executable, "-I", "-c", ALONE, str(REPO), str(VERIFY), str(instance), str(plan)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO / "instances")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and out["objective"] == 20.0
    assert out["bad"] == ["mismatch:objective"]
    tops = {name.split(".")[0] for name in out["modules"]}
    assert "scheduler" not in tops
    assert not tops & {"numpy", "ortools", "networkx"}
    assert "models" in tops and "verify_alone" in tops
    assert Path(out["models"]).resolve() == REPO / "models" / "__init__.py"


def test_verify_runs_alone_on_a_plan_over_a_horizon(tmp_path):
    """The time rules need nothing beyond models either: the hand-built horizon plan of
    tests/test_verify_time.py verifies in a fresh interpreter without the scheduler package."""
    from tests.test_verify_time import OBJECTIVE, instance, plan

    inst_file, plan_file = tmp_path / "timed.json", tmp_path / "timed.plan.json"
    inst_file.write_text(instance().model_dump_json())
    plan_file.write_text(plan().model_dump_json())
    done = subprocess.run(
        [sys.executable, "-I", "-c", ALONE, str(REPO), str(VERIFY), str(inst_file), str(plan_file)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True and abs(out["objective"] - OBJECTIVE) < 1e-9
    assert out["bad"] == ["mismatch:objective"]
    tops = {name.split(".")[0] for name in out["modules"]}
    assert "scheduler" not in tops and not tops & {"numpy", "ortools", "networkx"}
