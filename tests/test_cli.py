"""The eastwest command end to end: exit codes, messages, files written and files left alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from models import Plan
from scheduler import read_instance, verify
from scheduler.cli import main

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"
EXPECTED = json.loads((Path(__file__).resolve().parent / "corpus.json").read_text())
CHINA = ROOT / "instances" / "china-2025.json"


def run(*args: str) -> subprocess.CompletedProcess:
    """The real command, in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=600,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=str)
def test_malformed_instance_gives_exit_2_and_a_located_message(name, capsys):
    """Every file of the hostile corpus is refused with exit 2, its name and the culprit, no traceback."""
    path = CORPUS / name
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for fragment in EXPECTED[name]:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert "Traceback" not in err


def test_malformed_instance_from_a_real_process_has_no_traceback():
    """The installed command prints one clean error line and exits 2."""
    done = run("solve", str(CORPUS / "dangling-origin.json"), "-o", os.devnull)
    assert done.returncode == 2
    assert "demand 'chat-1': field 'origin' names unknown region 'atlantis'" in done.stderr
    assert "Traceback" not in done.stderr


def test_yaml_without_pyyaml_names_the_extra(monkeypatch, capsys):
    """Without PyYAML a YAML file is refused with exit 2 and a hint, not an ImportError."""
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = CORPUS / "python-tag.yaml"
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "install PyYAML" in err and "Traceback" not in err


def test_missing_file_and_folder_are_input_errors(tmp_path, capsys):
    """A path that is not a readable file is invalid input."""
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys):
    """Unknown options and out-of-range values are refused with exit 2."""
    with pytest.raises(SystemExit) as stop:
        main(["solve"])
    assert stop.value.code == 2
    assert main(["solve", str(CORPUS / "valid.json"), "-o", os.devnull, "--time-limit", "-5"]) == 2
    assert "time_limit_s" in capsys.readouterr().err


def test_solve_refuses_to_overwrite_its_input(tmp_path, capsys):
    """-o pointing at the instance file is refused and the file stays as it was."""
    instance = tmp_path / "instance.json"
    shutil.copy(CORPUS / "valid.json", instance)
    before = instance.read_bytes()
    assert main(["solve", str(instance), "-o", str(instance), "-q"]) == 2
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert instance.read_bytes() == before


def test_failed_solve_leaves_an_existing_plan_untouched(tmp_path):
    """A run that fails on bad input does not touch the plan already on disk."""
    plan = tmp_path / "plan.json"
    plan.write_text("precious")
    assert main(["solve", str(CORPUS / "not-json.json"), "-o", str(plan), "-q"]) == 2
    assert plan.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_solve_then_verify_the_small_example(tmp_path, capsys):
    """solve writes a plan whose summary and file agree, and verify accepts it."""
    plan_path = tmp_path / "plan.json"
    assert main(["solve", str(CORPUS / "valid.json"), "-o", str(plan_path), "--time-limit", "10"]) == 0
    out = capsys.readouterr().out
    assert "status optimal" in out and "verified" in out
    plan = Plan.model_validate_json(plan_path.read_text())
    assert plan.gap < 1e-9  # only the bounded integer rounding separates bound and objective
    assert main(["verify", str(CORPUS / "valid.json"), str(plan_path)]) == 0
    assert "ok: the plan meets every rule" in capsys.readouterr().out


def test_verify_reports_a_tampered_plan_with_exit_1(tmp_path, capsys):
    """A plan edited by hand to claim a lower cost fails verification."""
    plan_path = tmp_path / "plan.json"
    assert main(["solve", str(CORPUS / "valid.json"), "-o", str(plan_path), "-q"]) == 0
    data = json.loads(plan_path.read_text())
    data["objective"] -= 100.0
    plan_path.write_text(json.dumps(data))
    assert main(["verify", str(CORPUS / "valid.json"), str(plan_path)]) == 1
    assert "objective" in capsys.readouterr().out


def test_infeasible_instance_exits_3_and_still_writes_the_reasons(tmp_path):
    """Must-serve demands that cannot be served give exit 3 and a plan listing why."""
    data = json.loads((CORPUS / "valid.json").read_text())
    data["demands"][1]["min_memory_gb_per_gpu"] = 200  # no pool has that much memory
    instance = tmp_path / "infeasible.json"
    instance.write_text(json.dumps(data))
    plan_path = tmp_path / "plan.json"
    assert main(["solve", str(instance), "-o", str(plan_path), "-q"]) == 3
    plan = Plan.model_validate_json(plan_path.read_text())
    assert plan.status.value == "infeasible"
    assert {u.demand: u.reason.value for u in plan.unserved}["scan-1"] == "memory"


def test_schema_command_matches_the_shipped_schemas(capsys):
    """docs/schema holds exactly what `eastwest schema` prints."""
    for kind in ("instance", "plan", "params"):
        assert main(["schema", kind]) == 0
        printed = json.loads(capsys.readouterr().out)
        shipped = json.loads((ROOT / "docs" / "schema" / f"{kind}.schema.json").read_text())
        assert printed == shipped, f"regenerate docs/schema/{kind}.schema.json"


def test_explain_lists_the_rule_for_every_pool(capsys):
    """explain shows, per pool, whether the demand may run there and which rule says no."""
    assert main(["explain", str(CORPUS / "valid.json"), "scan-1"]) == 0
    out = capsys.readouterr().out
    assert "bj-h800" in out and "eligible" in out
    assert "rejected: jurisdiction" in out


def test_generate_is_deterministic(tmp_path):
    """The same seed writes the same file."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["generate", "china", "--demands", "50", "--seed", "7", "-o", str(a)]) == 0
    assert main(["generate", "china", "--demands", "50", "--seed", "7", "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert len(read_instance(a).demands) == 50


@pytest.mark.skipif(not CHINA.exists(), reason="instances/china-2025.json not present")
def test_solve_the_shipped_china_instance(tmp_path):
    """The README's main job: solve the China instance, then verify the plan independently."""
    plan_path = tmp_path / "plan.json"
    done = run("solve", str(CHINA), "-o", str(plan_path), "--time-limit", "10")
    assert done.returncode == 0, done.stderr
    assert "sector" in done.stdout and "utilization" in done.stdout
    plan = Plan.model_validate_json(plan_path.read_text())
    assert plan.lower_bound is not None and plan.gap is not None
    assert verify(read_instance(CHINA), plan).ok
    checked = run("verify", str(CHINA), str(plan_path))
    assert checked.returncode == 0, checked.stdout


@pytest.mark.skipif(not CHINA.exists(), reason="instances/china-2025.json not present")
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_interrupt_writes_the_best_plan_so_far_and_exits_130(tmp_path):
    """Ctrl-C once the search has a plan stops it, writes a verified plan and exits 130.

    The moment comes from the `--progress` lines (the first incumbent of the search), not from
    a fixed sleep that lands in reading on a slow machine or after the proof on a fast one."""
    plan_path = tmp_path / "plan.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "solve", str(CHINA), "-o", str(plan_path),
         "--time-limit", "300", "--progress", "-q"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("progress:") and "large solution" in line:
            break
    else:
        pytest.fail("no incumbent line: " + "".join(seen))
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err
    plan = Plan.model_validate_json(plan_path.read_text())
    assert verify(read_instance(CHINA), plan).ok


def test_progress_lines_are_one_per_line_without_a_terminal(tmp_path):
    """--progress writes newline-terminated `progress:` lines to a pipe, from reading to writing."""
    plan_path = tmp_path / "plan.json"
    done = run("solve", str(CORPUS / "valid.json"), "-o", str(plan_path), "--progress", "-q")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr
    events = [line.split(" s ", 1)[1] for line in lines if line.startswith("progress: ")]
    assert events[0].startswith("reading ") and events[-1] == f"wrote {plan_path}", lines
    assert any(e.startswith("first plan") for e in events), lines
