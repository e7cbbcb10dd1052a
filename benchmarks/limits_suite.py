"""The `limits` suite: does `eastwest solve --time-limit L` end within L x 1.05 + 1 s, and where
does the time go?

Per size (China instances from `china_instance(demands=N, seed)`) and limit, the real command
runs in a fresh interpreter with `--progress`; the wall time is measured from outside (from
before the interpreter starts to its exit). The phases come from the child's own clock: start
(interpreter and imports, up to the `reading` line), read, and write from the progress lines;
compile (with the greedy plan and the measured reserve), search, plan and verify from the plan's
`SolveStats.details`. A run whose limit is below what reading, compiling and verifying need says
so on stderr (`note: ...`); the table marks it "late (noted)".
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    REPO,
    fmt_s,
    protocol,
    protocol_markdown,
    stamp,
    table,
    write_atomic,
    write_json,
)

DEFAULT_SIZES = "1000,10000,100000"
DEFAULT_LIMITS = "2,10"
LINE = re.compile(r"^progress: (\d+\.\d+) s (.*)$")


def rule_s(limit: float) -> float:
    """The documented bound on the whole command's wall time."""
    return limit * 1.05 + 1.0


def one_run(instance: Path, plan: Path, limit: float, seed: int, workers: int) -> dict:
    """Run the command once; its wall time, exit code, notes and time per phase."""
    command = [sys.executable, "-m", "scheduler", "solve", str(instance), "-o", str(plan), "-q",
               "--progress", "--time-limit", str(limit), "--seed", str(seed)]
    if workers:
        command += ["--workers", str(workers)]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - began
    events: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = LINE.match(line)
        if match:
            at, what = float(match[1]), match[2]
            for key in ("reading", "read", "writing", "wrote"):
                if what.startswith(key + " ") and key not in events:
                    events[key] = at
    record: dict = {"limit_s": limit, "wall_s": wall, "rule_s": rule_s(limit),
                    "overrun_s": max(0.0, wall - rule_s(limit)), "exit": done.returncode,
                    "noted_late": "note:" in done.stderr,
                    "notes": [line for line in done.stderr.splitlines() if line.startswith("note:")]}
    if done.returncode not in (0, 3):
        record["error"] = done.stderr[-2000:]
        return record
    from models import Plan

    stats = Plan.model_validate_json(plan.read_text()).stats
    details = stats.details
    record.update({
        "start_s": events.get("reading"),
        "read_s": _between(events, "reading", "read"),
        "compile_s": sum(details.get(k, 0.0) for k in ("compile_s", "hint_s", "reserve_measure_s")),
        "reserve_s": details.get("reserve_s"),
        "search_s": details.get("search_s"),
        "plan_s": details.get("plan_s"),
        "verify_s": details.get("verify_s"),
        "write_s": _between(events, "writing", "wrote"),
        "solve_wall_s": stats.wall_time_s,
        "engine": stats.engine,
        "status": stats.solver_status,
    })
    return record


def _between(events: dict[str, float], first: str, second: str) -> float | None:
    if first in events and second in events:
        return events[second] - events[first]
    return None


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    limits = [float(s) for s in args.time_limits.split(",")]
    from scheduler.generate import china_instance
    from scheduler.io import write_instance

    head = protocol("limits", instances=f"china_instance(demands=N, seed={args.seed}), N in "
                    f"{', '.join(f'{n:,}' for n in sizes)}",
                    time_limits=", ".join(f"{x:g} s" for x in limits), seeds=str(args.seed),
                    workers=args.workers or "default")
    records = []
    with tempfile.TemporaryDirectory(prefix="eastwest-limits-") as folder:
        for size in sizes:
            instance = Path(folder) / f"china-{size}.json"
            write_instance(china_instance(demands=size, seed=args.seed), instance)
            for limit in limits:
                record = {"demands": size,
                          **one_run(instance, Path(folder) / "plan.json", limit, args.seed,
                                    args.workers)}
                records.append(record)
                verdict = ("within" if not record["overrun_s"] else
                           "late (noted)" if record["noted_late"] else "MISS")
                print(f"{size:>9,} demands  limit {limit:g} s  wall {record['wall_s']:.2f} s  "
                      f"{verdict}", flush=True)
    rows = []
    for r in records:
        verdict = ("within" if not r["overrun_s"] else
                   "late (noted)" if r["noted_late"] else "MISS")
        rows.append([f"{r['demands']:,}", f"{r['limit_s']:g}", fmt_s(r["wall_s"]),
                     fmt_s(r["rule_s"]), fmt_s(r["overrun_s"]) if r["overrun_s"] else "-",
                     verdict, fmt_s(r.get("start_s")), fmt_s(r.get("read_s")),
                     fmt_s(r.get("compile_s")), fmt_s(r.get("search_s")), fmt_s(r.get("plan_s")),
                     fmt_s(r.get("verify_s")), fmt_s(r.get("write_s")), fmt_s(r.get("reserve_s"))])
    headers = ["demands", "limit s", "wall", "rule", "overrun", "verdict", "start", "read",
               "compile", "search", "plan", "verify", "write", "reserved"]
    text = "\n\n".join([
        "# eastwest time limits", protocol_markdown(head), "## Results",
        table(headers, rows, right={0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13}),
        "rule: limit x 1.05 + 1 s. start: interpreter and imports; compile: compile, greedy "
        "plan and measuring the reserve; reserved: what solve() set aside for plan + verify "
        "(+ serializing). Wall time from outside the process; phases on the child's clock.",
    ]) + "\n"
    out = Path(args.out)
    name = f"limits-{stamp()}"
    write_atomic(out / f"{name}.md", text)
    write_json(out / f"{name}.json", {"protocol": head, "records": records})
    print(text)
    print(f"written: {out / name}.md and .json")
    return 0
