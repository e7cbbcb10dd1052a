"""The scale suite: China-network instances (`scheduler.generate.china_instance`) at growing sizes,
three solvers on the same instance, each (solver, size) in its own child process.

The parent (`run`) starts ``run.py _one`` per (solver, size), watches it with ``os.wait4`` (whose
rusage gives the child's own peak RSS, even when the child is killed), kills it at the wall
timeout, and classifies the outcome. The child (`child_main`) limits its own address space,
generates the instance (deterministic by seed), solves it and writes a JSON result.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    GB,
    TIMES_NOTE,
    Incumbents,
    engine_best_s,
    fmt_gb,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    fmt_s,
    mean,
    protocol,
    protocol_markdown,
    ratio,
    stamp,
    table,
    write_atomic,
    write_json,
)

SOLVERS = ("eastwest", "cp-sat", "greedy")
EXTRA_SOLVERS: dict = {}
"""Further child solvers by name (the time suite's baselines register theirs here)."""
ENGINE_OF = {"eastwest": "auto", "cp-sat": "exact"}
DEFAULT_SIZES = (1000, 10_000, 100_000, 1_000_000)
DEFAULT_LIMITS = (10.0, 10.0, 60.0, 600.0)
SMOKE_SIZES = (1000,)
SMOKE_LIMITS = (5.0,)
DEFAULT_MEM_LIMIT_GB = 20.0

TARGETS: dict[int, dict[str, float]] = {
    10_000: {"gap": 0.0005, "time_s": 10.0, "cpsat_ratio": 0.1},
    100_000: {"gap": 0.001, "time_s": 60.0, "memory": 4 * GB},
    1_000_000: {"gap": 0.005, "time_s": 600.0, "memory": 16 * GB},
}
TARGET_TEXT = (
    "10,000 demands: eastwest gap <= 0.05% within 10 s, and <= 1/10 of plain CP-SAT's gap at the "
    "same limit",
    "100,000 demands: gap <= 0.1% within 60 s, peak memory <= 4 GB",
    "1,000,000 demands: a verified plan, gap <= 0.5% within 10 min, peak memory <= 16 GB",
)


def overrun_threshold(limit: float) -> float:
    """A solve whose wall time passes this has overrun its limit (5% + 1 s for compile, plan
    building and verification)."""
    return 1.05 * limit + 1.0


def generation_timeout(size: int) -> float:
    """Wall seconds allowed for a child to start and generate its instance."""
    return 120.0 + size / 2000.0


def default_grace(size: int, limit: float) -> float:
    """Wall seconds allowed past the time limit (model building, plan building, verification)."""
    return max(120.0, limit) + size / 2000.0


# --------------------------------------------------------------------------------------------------
# The child: one solver on one instance


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _solve_with_engine(instance, solver: str, args) -> dict:
    from scheduler import SolveParams, VerificationError, solve

    engine = args.engine if solver == "eastwest" else ENGINE_OF[solver]
    params = SolveParams(engine=engine, time_limit_s=args.time_limit, seed=args.seed,
                         workers=args.workers)
    hook = Incumbents()
    try:
        result = solve(instance, params, on_progress=hook)
    except VerificationError as exc:
        shown = "; ".join(v.message for v in exc.result.verification.violations[:3])
        return {"outcome": "verification failed", "verified": False, "error": shown,
                "wall_s": hook.elapsed()}
    wall = hook.elapsed()
    plan, check = result.plan, result.verification
    stats = plan.stats
    verified = bool(check.ok and check.objective is not None)
    kept = "greedy plan kept" in stats.solver_status
    return {
        "outcome": "ok" if verified else "no plan",
        "verified": verified,
        "engine": stats.engine,
        "objective": check.objective if verified else None,
        "engine_objective": plan.objective,
        "lower_bound": plan.lower_bound,
        "own_gap": plan.gap,
        "status": plan.status.value,
        "solver_status": stats.solver_status,
        "greedy_hint_kept": kept,
        "wall_s": wall,
        "engine_wall_s": stats.wall_time_s,
        "first_solution_s": stats.first_solution_s,
        "first_incumbent_s": hook.first,
        "best_incumbent_s": hook.best,
        "engine_best_s": engine_best_s(stats.details),
        "workers_used": stats.workers,
        "options": stats.options,
        "pools": stats.pools,
        "details": dict(stats.details),
    }


def _solve_greedy(instance, args) -> dict:
    from models import SolveStats, Status
    from scheduler import compile_options, verify
    from scheduler.decode import build_plan
    from scheduler.engines.greedy import greedy

    started = time.perf_counter()
    options = compile_options(instance)
    choice, complete = greedy(options)
    stats = SolveStats(
        engine="greedy",
        solver_status="complete" if complete else "a must-serve demand did not fit",
        wall_time_s=time.perf_counter() - started, seed=args.seed, workers=1,
        demands=options.n_demands, pools=options.n_pools, options=options.n_options,
    )
    plan = build_plan(instance, options, choice, status=Status.FEASIBLE, lower_bound=None,
                      stats=stats)
    check = verify(instance, plan)
    verified = bool(check.ok and check.objective is not None)
    return {
        "outcome": "ok" if verified else "no plan",
        "verified": verified,
        "engine": "greedy",
        "objective": check.objective if verified else None,
        "engine_objective": plan.objective,
        "lower_bound": None,
        "own_gap": None,
        "status": "feasible" if verified else "infeasible",
        "solver_status": stats.solver_status,
        "wall_s": time.perf_counter() - started,
        "options": options.n_options,
        "pools": options.n_pools,
        "error": None if verified else "; ".join(v.message for v in check.violations[:3]),
    }


def child_main(args) -> int:
    """The `_one` command: limit memory, generate, solve, write the result JSON."""
    limit = int(args.mem_limit_gb * GB)
    if limit > 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError) as exc:
            print(f"could not set the address-space limit: {exc}", file=sys.stderr)
    out = Path(args.result)
    record: dict = {"solver": args.solver, "size": args.size, "seed": args.seed,
                    "time_limit_s": args.time_limit}
    try:
        from scheduler.generate import china_instance

        started = time.perf_counter()
        hours = getattr(args, "hours", None)
        instance = (china_instance(demands=args.size, seed=args.seed) if hours is None
                    else china_instance(demands=args.size, seed=args.seed, hours=hours))
        record["generation_s"] = time.perf_counter() - started
        record["rss_after_generation_bytes"] = _proc_status_bytes("VmRSS")
        write_atomic(out.with_name(out.name + ".generated"), f"{record['generation_s']}\n")
        reset = _reset_peak_rss()
        if args.solver in EXTRA_SOLVERS:
            record.update(EXTRA_SOLVERS[args.solver](instance, args))
        elif args.solver == "greedy":
            record.update(_solve_greedy(instance, args))
        else:
            record.update(_solve_with_engine(instance, args.solver, args))
        record["peak_rss_solve_bytes"] = _proc_status_bytes("VmHWM") if reset else None
    except MemoryError:
        record.update(outcome="out of memory", verified=False,
                      error=f"MemoryError under the {args.mem_limit_gb:g} GB address-space limit")
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the outcome
        record.update(outcome="error", verified=False, error=f"{type(exc).__name__}: {exc}")
    record["peak_rss_self_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    write_json(out, record)
    return 0


# --------------------------------------------------------------------------------------------------
# The parent: one child per (solver, size)


def _spawn(solver: str, size: int, limit: float, seed: int, args, work: Path,
           hours: int | None = None) -> dict:
    """Run one child to completion or to its timeout; return its record with the outcome."""
    result = work / f"{solver}-{size}-{hours or 0}-{seed}.json"
    marker = result.with_name(result.name + ".generated")
    log = work / f"{solver}-{size}-{seed}.log"
    grace = args.grace if args.grace is not None else default_grace(size, limit)
    command = [sys.executable, str(Path(__file__).with_name("run.py")), "_one",
               "--solver", solver, "--size", str(size), "--seed", str(seed),
               "--time-limit", repr(limit), "--workers", str(args.workers),
               "--engine", args.engine,
               "--mem-limit-gb", repr(args.mem_limit_gb), "--result", str(result),
               *(["--hours", str(hours)] if hours else [])]
    started = time.monotonic()
    deadline = started + generation_timeout(size)
    phase = "generation"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        killed = None
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = time.monotonic()
                if phase == "generation" and marker.exists():
                    phase, deadline = "solve", now + limit + grace
                if now > deadline:
                    killed = phase
                    _kill(proc.pid)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
        except BaseException:
            _kill(proc.pid)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    record: dict = {}
    if result.exists():
        record = json.loads(result.read_text(encoding="utf-8"))
    record.update(solver=solver, size=size, seed=seed, time_limit_s=limit, grace_s=grace,
                  child_wall_s=elapsed, exit_code=proc.returncode,
                  peak_rss_bytes=usage.ru_maxrss * 1024,
                  peak_rss_source="os.wait4 rusage of the child (ru_maxrss, whole process)")
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    if "outcome" not in record:
        record.update(verified=False, **_classify(killed, proc.returncode, tail, limit, grace,
                                                  size, args.mem_limit_gb))
        record["log_tail"] = tail
    elif record.get("outcome") != "ok":
        record["log_tail"] = tail
    return record


def _kill(pid: int) -> None:
    """SIGKILL our own child's process group (the child leads a session of its own)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _classify(killed: str | None, code: int, tail: str, limit: float, grace: float, size: int,
              mem_limit_gb: float) -> dict:
    """The outcome of a child that left no result file."""
    if killed == "solve":
        return {"outcome": "killed at limit + grace",
                "error": f"no result after {limit:g} s + {grace:g} s grace"}
    if killed == "generation":
        return {"outcome": "killed during generation",
                "error": f"not generated within {generation_timeout(size):g} s"}
    memory_words = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")
    if any(w in tail for w in memory_words):
        return {"outcome": "out of memory",
                "error": f"ran out under the {mem_limit_gb:g} GB address-space limit (exit {code})"}
    if code == -signal.SIGKILL:
        return {"outcome": "out of memory", "error": "SIGKILL not sent by the suite (the "
                "system's out-of-memory killer, most likely)"}
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return {"outcome": "crashed", "error": f"killed by {name}; no result written"}
    return {"outcome": "error", "error": f"exit code {code}; no result written"}


def compare(records: dict[str, dict]) -> dict:
    """Best bound across solvers, each solver's gap to it, and the eastwest ratios."""
    bounds = [r["lower_bound"] for r in records.values()
              if r.get("verified") and r.get("lower_bound") is not None]
    best = max(bounds) if bounds else None
    for r in records.values():
        obj = r.get("objective")
        r["gap_to_best_bound"] = (None if obj is None or best is None
                                  else max(0.0, obj - best) / max(abs(obj), 1.0))
    ew, cp, gr = (records.get(s, {}) for s in SOLVERS)
    return {
        "best_bound": best,
        "gap_ratio_vs_cpsat": ratio(ew.get("own_gap"), cp.get("own_gap")),
        "objective_ratio_vs_cpsat": ratio(ew.get("objective"), cp.get("objective")),
        "objective_ratio_vs_greedy": ratio(ew.get("objective"), gr.get("objective")),
    }


def verdicts(size: int, limit: float, records: dict[str, dict], ratios: dict) -> list[str]:
    """The eastwest targets at this size, each 'met' or 'MISS (...)'. Never asserted."""
    target = TARGETS.get(size)
    if target is None:
        return []
    ew = records.get("eastwest", {})
    found: list[str] = []
    if not ew.get("verified"):
        return [f"MISS: no verified plan ({ew.get('outcome', 'not run')})"]
    if size >= 1_000_000:
        found.append("verified plan: met")
    gap = ew.get("own_gap")
    label = f"gap <= {fmt_pct(target['gap'], 2)}"
    if gap is None:
        found.append(f"{label}: MISS (no proven bound)")
    else:
        found.append(f"{label}: {'met' if gap <= target['gap'] else 'MISS'} ({fmt_pct(gap)})")
    wall = ew.get("wall_s") or math.inf
    within = f"within {target['time_s']:g} s"
    if limit > target["time_s"]:
        found.append(f"{within}: MISS (run with a {limit:g} s limit)")
    elif wall > overrun_threshold(target["time_s"]):
        found.append(f"{within}: MISS (solve wall {fmt_s(wall)} s)")
    else:
        found.append(f"{within}: met (solve wall {fmt_s(wall)} s)")
    if "cpsat_ratio" in target:
        r = ratios.get("gap_ratio_vs_cpsat")
        ok = r is not None and r <= target["cpsat_ratio"]
        found.append(f"gap <= 1/10 of CP-SAT's: {'met' if ok else 'MISS'} ({fmt_ratio(r)})")
    if "memory" in target:
        peak = ew.get("peak_rss_bytes")
        ok = peak is not None and peak <= target["memory"]
        found.append(f"peak RSS <= {target['memory'] / GB:g} GB: {'met' if ok else 'MISS'} "
                     f"({fmt_gb(peak)} GB)")
    return found


def _parse_list(text: str, kind) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


SUMMARY_FIELDS = (
    ("own_gap", "gap"),
    ("first_incumbent_s", "first plan s"),
    ("best_incumbent_s", "best plan s"),
    ("wall_s", "wall s"),
    ("peak_rss_bytes", "peak GB"),
)


def over_seeds(results: list[dict]) -> list[dict]:
    """Per size and solver: mean, min and max over the seeds of each SUMMARY_FIELDS figure
    (over the seeds where it is known), and how many seeds gave a verified plan."""
    summary: list[dict] = []
    for size in dict.fromkeys(r["size"] for r in results):
        runs = [r for r in results if r["size"] == size]
        for solver in dict.fromkeys(s for r in runs for s in r["solvers"]):
            records = [r["solvers"][solver] for r in runs if solver in r["solvers"]]
            entry: dict = {"size": size, "time_limit_s": runs[0]["time_limit_s"],
                           "solver": solver, "seeds": [r["seed"] for r in runs],
                           "verified": sum(1 for rec in records if rec.get("verified"))}
            for field, _ in SUMMARY_FIELDS:
                values = [rec[field] for rec in records if rec.get(field) is not None]
                entry[field] = {"mean": mean(values), "min": min(values, default=None),
                                "max": max(values, default=None), "n": len(values)}
            summary.append(entry)
    return summary


def run(args) -> int:
    """The `scale` command."""
    try:
        sizes = _parse_list(args.sizes, int) if args.sizes else list(
            SMOKE_SIZES if args.smoke else DEFAULT_SIZES)
        limits = _parse_list(args.time_limits, float) if args.time_limits else list(
            SMOKE_LIMITS if args.smoke else DEFAULT_LIMITS)
        seeds = _parse_list(args.seeds, int) if args.seeds else [args.seed]
    except ValueError as exc:
        print(f"bad --sizes, --time-limits or --seeds: {exc}")
        return 2
    if not seeds or len(set(seeds)) != len(seeds):
        print("--seeds needs distinct integers, comma-separated")
        return 2
    if len(limits) == 1:
        limits = limits * len(sizes)
    if len(limits) != len(sizes) or not sizes or min(sizes) < 1 or min(limits) <= 0:
        print("--time-limits needs one positive value, or one per size; sizes must be positive")
        return 2
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    if not solvers or set(solvers) - set(SOLVERS):
        print(f"--solvers: choose from {','.join(SOLVERS)}")
        return 2
    if args.smoke and args.grace is None:
        args.grace = 60.0
    grace = "per size: max(120, limit) + size/2000 s" if args.grace is None else f"{args.grace:g} s"
    proto = protocol(
        "scale",
        instances=", ".join(f"china_instance(demands={n:,}, seed=S)" for n in sizes),
        time_limits=", ".join(f"{n:,}: {t:g} s" for n, t in zip(sizes, limits, strict=True)),
        seeds=f"S = {','.join(map(str, seeds))} (instance generator and solver)",
        workers=f"{args.workers} (SolveParams.workers; 0 = engine default)",
        solvers=f"eastwest = solve(engine='{args.engine}'); cp-sat = solve(engine='exact'), the "
                "whole problem as one CP-SAT model; greedy = compile_options + greedy + "
                "build_plan + verify",
        isolation=f"each (solver, size) in its own child process; address-space limit "
                  f"{args.mem_limit_gb:g} GB (RLIMIT_AS); wall timeout = generation "
                  f"(120 s + size/2000 s), then time limit + grace ({grace})",
        memory="peak RSS = ru_maxrss of the child from os.wait4: the whole child process "
               "(interpreter, imports, instance generation, compile, solve, plan, verification); "
               "GB = 10^9 bytes",
    )
    base = Path(args.out) / f"scale-{stamp()}"
    results: list[dict] = []
    try:
        with tempfile.TemporaryDirectory(prefix="eastwest-scale-") as tmp:
            for size, limit in zip(sizes, limits, strict=True):
                for seed in seeds:
                    records: dict[str, dict] = {}
                    for solver in solvers:
                        print(f"scale {size:,} demands, {limit:g} s, seed {seed}: {solver} ...",
                              flush=True)
                        rec = _spawn(solver, size, limit, seed, args, Path(tmp))
                        records[solver] = rec
                        print(f"  {rec['outcome']}: objective {fmt_num(rec.get('objective'))}, "
                              f"gap {fmt_pct(rec.get('own_gap'))}, wall {fmt_s(rec.get('wall_s'))}"
                              f" s, peak {fmt_gb(rec.get('peak_rss_bytes'))} GB"
                              + (f" ({rec['error']})" if rec.get("error") else ""), flush=True)
                    ratios = compare(records)
                    results.append({"size": size, "time_limit_s": limit, "seed": seed,
                                    "solvers": records, "comparison": ratios,
                                    "targets": verdicts(size, limit, records, ratios)})
                    _write(base, proto, results)
    except KeyboardInterrupt:
        print("interrupted: writing the sizes finished so far")
        proto["interrupted"] = True
        _write(base, proto, results)
        return 130
    print(f"wrote {base}.md and {base}.json")
    return 0


# --------------------------------------------------------------------------------------------------
# The report


def _notes(r: dict) -> str:
    notes = []
    if r.get("outcome") != "ok":
        notes.append(f"{r.get('outcome')}" + (f": {r['error'][:80]}" if r.get("error") else ""))
    if r.get("greedy_hint_kept"):
        notes.append("CP-SAT found no plan; greedy hint kept")
    wall, limit = r.get("wall_s"), r.get("time_limit_s")
    timed = r.get("solver") != "greedy" and wall is not None and limit
    if timed and wall > overrun_threshold(limit):
        notes.append(f"overran limit by {wall - limit:.1f} s")
    return "; ".join(notes)


def markdown(proto: dict, results: list[dict]) -> str:
    """The report: protocol, targets, an overview per size, then every solver at every size."""
    text = ["# Scale benchmark (China national network)", "", protocol_markdown(
        proto, (("solvers", "Solvers"), ("isolation", "Isolation"), ("memory", "Memory"),
                ("interrupted", "Interrupted"))), ""]
    text += ["## Targets (measured, not asserted)", "", *[f"- {t}" for t in TARGET_TEXT], ""]
    text += ["Objectives are the independent verifier's. own gap = (objective - own proven bound) "
             "/ objective; gap to best bound uses the best bound any solver proved on the same "
             "instance (greedy proves none). Ratios are eastwest / other (below 1 is better).", ""]

    several = len({res.get("seed") for res in results}) > 1
    if several:
        text += _over_seeds_markdown(over_seeds(results))
    else:
        text += ["## Overview", ""]
    headers = ["demands", "limit s", "seed", "engine", "eastwest gap", "CP-SAT gap", "gap ratio",
               "obj / CP-SAT", "obj / greedy", "wall s", "peak GB", "targets"]
    rows = []
    for res in results:
        ew = res["solvers"].get("eastwest", {})
        cp = res["solvers"].get("cp-sat", {})
        c = res["comparison"]
        misses = [t for t in res["targets"] if "MISS" in t]
        verdict = ("-" if not res["targets"] else "all met" if not misses else
                   "MISS: " + ", ".join(t.split(":")[0] for t in misses))
        rows.append([f"{res['size']:,}", f"{res['time_limit_s']:g}", str(res.get("seed", "-")),
                     ew.get("engine", "-"),
                     fmt_pct(ew.get("own_gap")), fmt_pct(cp.get("own_gap")),
                     fmt_ratio(c["gap_ratio_vs_cpsat"]),
                     fmt_ratio(c["objective_ratio_vs_cpsat"], 5),
                     fmt_ratio(c["objective_ratio_vs_greedy"], 5), fmt_s(ew.get("wall_s")),
                     fmt_gb(ew.get("peak_rss_bytes")), verdict])
    text.append(table(headers, rows, right={0, 1, 2, 4, 5, 6, 7, 8, 9, 10}))

    for res in results:
        size, limit = res["size"], res["time_limit_s"]
        first = next((r for r in res["solvers"].values() if r.get("options")), {})
        seed = f", seed {res['seed']}" if several else ""
        text += ["", f"## {size:,} demands, time limit {limit:g} s{seed}", ""]
        if first:
            text += [f"Instance: {first.get('options', 0):,} eligible options, "
                     f"{first.get('pools', 0)} pools; generated in "
                     f"{fmt_s(first.get('generation_s'))} s.", ""]
        headers = ["solver", "engine", "outcome", "objective", "bound", "own gap",
                   "gap to best bound", "first s", "best s", "engine best s", "wall s",
                   "RSS after gen GB", "peak GB", "notes"]
        rows = []
        for solver, r in res["solvers"].items():
            rows.append([solver, r.get("engine", "-"), r.get("outcome", "-"),
                         fmt_num(r.get("objective")), fmt_num(r.get("lower_bound")),
                         fmt_pct(r.get("own_gap")), fmt_pct(r.get("gap_to_best_bound")),
                         fmt_s(r.get("first_incumbent_s")), fmt_s(r.get("best_incumbent_s")),
                         fmt_s(r.get("engine_best_s")), fmt_s(r.get("wall_s")),
                         fmt_gb(r.get("rss_after_generation_bytes")),
                         fmt_gb(r.get("peak_rss_bytes")), _notes(r)])
        text.append(table(headers, rows, right={3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))
        c = res["comparison"]
        text += ["", f"- eastwest gap / CP-SAT gap: {fmt_ratio(c['gap_ratio_vs_cpsat'])}",
                 f"- eastwest objective / CP-SAT objective: "
                 f"{fmt_ratio(c['objective_ratio_vs_cpsat'], 5)}",
                 f"- eastwest objective / greedy objective: "
                 f"{fmt_ratio(c['objective_ratio_vs_greedy'], 5)}"]
        if res["targets"]:
            text += ["- Targets: " + "; ".join(res["targets"])]
    text += ["", TIMES_NOTE + " wall s: the `solve()` call (compile, engine, plan, "
             "verification), without instance generation.", ""]
    return "\n".join(text)


def _over_seeds_markdown(summary: list[dict]) -> list[str]:
    """The table of mean / min / max over the seeds, one row per size and solver."""
    headers = ["demands", "limit s", "solver", "seeds", "verified"]
    for _, label in SUMMARY_FIELDS:
        headers += [f"{label} mean", f"{label} min", f"{label} max"]
    rows = []
    for entry in summary:
        row = [f"{entry['size']:,}", f"{entry['time_limit_s']:g}", entry["solver"],
               ",".join(map(str, entry["seeds"])), f"{entry['verified']}/{len(entry['seeds'])}"]
        for field, _ in SUMMARY_FIELDS:
            shown = fmt_pct if field == "own_gap" else fmt_gb if field == "peak_rss_bytes" else fmt_s
            row += [shown(entry[field][k]) for k in ("mean", "min", "max")]
        rows.append(row)
    right = set(range(len(headers))) - {2, 3}
    return ["## Over seeds (mean / min / max)", "", table(headers, rows, right=right), "",
            "## Overview (each seed)", ""]


def _write(base: Path, proto: dict, results: list[dict]) -> None:
    data = {"protocol": proto, "sizes": results}
    if len({res.get("seed") for res in results}) > 1:
        data["over_seeds"] = over_seeds(results)
    write_json(base.with_suffix(".json"), data)
    write_atomic(base.with_suffix(".md"), markdown(proto, results))


__all__ = ["child_main", "run"]
