"""The GAP literature suite: OR-Library gap1-gap12 (min rows of bks.csv) and Yagiura types A-E.

Each problem is mapped onto an instance (`scheduler.gap.gap_to_instance`, formulation §6) and
solved in this process; the objective is the independent verifier's (`Result.verification`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common import (
    SHARED,
    TIMES_NOTE,
    Incumbents,
    engine_best_s,
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

GAP_DIR = SHARED / "benchmarks" / "gap"
FAMILIES = ("orlib", "a", "b", "c", "d", "e")
ORLIB_FILES = tuple(f"gap{k}" for k in range(1, 13))
SMOKE_TIME_LIMIT = 2.0

TARGET_TIME_S = 60.0
TARGET_MEAN_GAP = 0.001
TARGET_FAMILIES = ("c", "d", "e")
TARGETS = (
    "orlib (gap1-gap12): every problem at its proven optimum (objective = BKS, status optimal)",
    "Yagiura C, D, E: mean gap to best-known <= 0.1% at 60 s",
)

AT_BKS_TOLERANCE = 1e-6
"""GAP objectives are integers; a float objective within this of the BKS counts as at it."""


@dataclass(frozen=True)
class Problem:
    """One GAP problem to run: its bks.csv key, family, file and index within the file."""

    name: str
    family: str
    path: Path
    index: int


def problems(families: list[str], names: list[str] | None) -> list[Problem]:
    """The problems of the chosen families (and names), in a fixed order: orlib, then Yagiura.

    gapa-gapd are never listed: they duplicate Yagiura A-D with n <= 200.
    """
    found: list[Problem] = []
    if "orlib" in families:
        for stem in ORLIB_FILES:
            path = GAP_DIR / "orlib" / f"{stem}.txt"
            found.extend(Problem(f"{stem}-{k}", "orlib", path, k - 1) for k in range(1, 6))
    for path in sorted((GAP_DIR / "yagiura").iterdir()):
        family = path.name[:1]
        if path.is_file() and family in families and re.fullmatch(r"[a-e]\d+", path.name):
            found.append(Problem(path.name, family, path, 0))
    if names:
        wanted = set(names)
        found = [p for p in found if p.name in wanted or p.name.split("-")[0] in wanted]
    return found


def run_one(instance, engine: str, time_limit: float, seed: int, workers: int) -> dict:
    """Solve one instance with one engine; every number comes from the plan and the verifier."""
    from scheduler import SolveParams, VerificationError, solve

    params = SolveParams(engine=engine, time_limit_s=time_limit, seed=seed, workers=workers)
    hook = Incumbents()
    try:
        result = solve(instance, params, on_progress=hook)
    except VerificationError as exc:
        result = exc.result
        failed = "; ".join(v.message for v in result.verification.violations[:3])
        return {"engine_requested": engine, "outcome": "verification failed", "verified": False,
                "error": failed}
    except MemoryError:
        return {"engine_requested": engine, "outcome": "out of memory", "verified": False}
    except Exception as exc:  # noqa: BLE001 - one failing problem must not end the suite
        return {"engine_requested": engine, "outcome": "error", "verified": False,
                "error": f"{type(exc).__name__}: {exc}"}
    wall = hook.elapsed()
    plan, check = result.plan, result.verification
    stats = plan.stats
    verified = bool(check.ok and check.objective is not None)
    return {
        "engine_requested": engine,
        "engine": stats.engine,
        "outcome": "ok" if verified else "no plan",
        "verified": verified,
        "objective": check.objective if verified else None,
        "engine_objective": plan.objective,
        "lower_bound": plan.lower_bound,
        "own_gap": plan.gap,
        "status": plan.status.value,
        "solver_status": stats.solver_status,
        "wall_s": wall,
        "engine_wall_s": stats.wall_time_s,
        "first_solution_s": stats.first_solution_s,
        "first_incumbent_s": hook.first,
        "best_incumbent_s": hook.best,
        "engine_best_s": engine_best_s(stats.details),
        "workers_used": stats.workers,
        "options": stats.options,
        "details": dict(stats.details),
    }


def _score(record: dict, bks: int | None) -> None:
    """Add gap to best-known and the at-BKS flag to a solver record."""
    objective = record.get("objective")
    if objective is None or bks is None:
        record["bks_gap"] = None
        record["at_bks"] = False
        return
    record["bks_gap"] = (objective - bks) / bks
    record["at_bks"] = abs(objective - bks) <= AT_BKS_TOLERANCE
    record["below_bks"] = objective < bks - AT_BKS_TOLERANCE


def run(args) -> int:
    """The `gap` command."""
    if not GAP_DIR.is_dir() or not (GAP_DIR / "bks.csv").is_file():
        print(f"gap suite skipped: the literature files are not at {GAP_DIR} "
              f"(expected ../shared/benchmarks/gap/ next to the repository)")
        return 0
    from scheduler.gap import gap_to_instance, load_bks, read_gap

    families = [f.strip().lower() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        print(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
              f"choose from {','.join(FAMILIES)}")
        return 2
    names = [n.strip() for n in args.instances.split(",")] if args.instances else None
    if args.smoke:
        names = names or ["gap1"]
    time_limit = args.time_limit or (SMOKE_TIME_LIMIT if args.smoke else TARGET_TIME_S)
    chosen = problems(families, names)
    if not chosen:
        print("no GAP problems match the selection")
        return 2
    bks = load_bks(GAP_DIR / "bks.csv")
    engines = [args.engine] + (["exact"] if args.baseline else [])

    proto = protocol(
        "gap",
        instances=_describe(chosen),
        time_limits=f"{time_limit:g} s per problem and solver (SolveParams.time_limit_s)",
        seeds=str(args.seed),
        workers=f"{args.workers} (SolveParams.workers; 0 = engine default)",
        solvers=", ".join(f"engine={e}" for e in engines),
        source=str(GAP_DIR),
    )
    out = Path(args.out)
    base = out / f"gap-{stamp()}"
    records: list[dict] = []
    cache: dict[Path, list] = {}
    print(f"gap suite: {len(chosen)} problems, {time_limit:g} s each, engines {engines}")
    try:
        for n, problem in enumerate(chosen, 1):
            if problem.path not in cache:
                cache = {problem.path: read_gap(problem.path)}
            gap_problem = cache[problem.path][problem.index]
            row = bks.get((problem.name, "min"))
            record = {
                "instance": problem.name, "family": problem.family, "m": gap_problem.m,
                "n": gap_problem.n, "file": str(problem.path.relative_to(GAP_DIR)),
                "bks": row.best_known if row else None,
                "bks_proven_optimal": row.proven_optimal if row else None,
                "bks_confidence": row.confidence if row else None,
                "solvers": {},
            }
            instance = gap_to_instance(gap_problem, name=problem.name)
            for engine in engines:
                solved = run_one(instance, engine, time_limit, args.seed, args.workers)
                _score(solved, record["bks"])
                record["solvers"][_label(engine)] = solved
            records.append(record)
            _print_progress(n, len(chosen), record)
            _write(base, proto, records, engines, time_limit)
    except KeyboardInterrupt:
        print("interrupted: writing the problems finished so far")
        proto["interrupted"] = True
        _write(base, proto, records, engines, time_limit)
        return 130
    print(f"wrote {base}.md and {base}.json")
    return 0


def _label(engine: str) -> str:
    return "eastwest" if engine != "exact" else "cp-sat"


def _describe(chosen: list[Problem]) -> str:
    counts: dict[str, int] = {}
    for p in chosen:
        counts[p.family] = counts.get(p.family, 0) + 1
    parts = [f"{'orlib gap1-gap12 (min)' if f == 'orlib' else 'Yagiura ' + f.upper()}: {c}"
             for f, c in counts.items()]
    return (f"{len(chosen)} problems ({'; '.join(parts)}); gapa-gapd not run (they duplicate "
            f"Yagiura A-D)")


def _print_progress(n: int, total: int, record: dict) -> None:
    parts = []
    for label, s in record["solvers"].items():
        parts.append(f"{label} {s.get('outcome')} obj {fmt_num(s.get('objective'))} "
                     f"gap-to-bks {fmt_pct(s.get('bks_gap'))} {s.get('status', '')} "
                     f"{fmt_s(s.get('wall_s'))} s")
    print(f"[{n}/{total}] {record['instance']} bks {record['bks']}: " + " | ".join(parts),
          flush=True)


# --------------------------------------------------------------------------------------------------
# Summaries and the report


def summarize(records: list[dict], labels: list[str]) -> dict:
    """Per family and overall: mean and max gap to BKS, count at BKS and proven optimal."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["family"], []).append(r)
    summary: dict[str, dict] = {}
    for family, rows in [*groups.items(), ("all", records)]:
        entry: dict[str, dict] = {}
        for label in labels:
            solved = [r["solvers"][label] for r in rows if label in r["solvers"]]
            gaps = [s["bks_gap"] for s in solved if s.get("bks_gap") is not None]
            entry[label] = {
                "problems": len(solved),
                "with_plan": len(gaps),
                "mean_bks_gap": mean(gaps) if len(gaps) == len(solved) else None,
                "max_bks_gap": max(gaps) if gaps else None,
                "at_bks": sum(1 for s in solved if s.get("at_bks")),
                "proven_optimal": sum(1 for s in solved if s.get("status") == "optimal"),
                "mean_wall_s": mean([s["wall_s"] for s in solved if s.get("wall_s") is not None]),
            }
        if len(labels) == 2:
            entry["gap_ratio"] = ratio(entry[labels[0]]["mean_bks_gap"],
                                       entry[labels[1]]["mean_bks_gap"])
        summary[family] = entry
    return summary


def target_verdict(family: str, entry: dict, time_limit: float) -> str:
    """The target of a family and whether this run met it (never asserted, only printed)."""
    if family == "orlib":
        ok = entry["at_bks"] == entry["problems"] == entry["proven_optimal"]
        return "met" if ok else (
            f"MISS ({entry['problems'] - min(entry['at_bks'], entry['proven_optimal'])} not at "
            f"proven optimum)")
    if family in TARGET_FAMILIES:
        gap = entry["mean_bks_gap"]
        if gap is None:
            return "MISS (a problem has no plan)"
        verdict = "met" if gap <= TARGET_MEAN_GAP else "MISS"
        sign = "<=" if gap <= TARGET_MEAN_GAP else ">"
        text = f"{verdict}: {fmt_pct(gap)} {sign} {fmt_pct(TARGET_MEAN_GAP, 1)}"
        if time_limit != TARGET_TIME_S:
            text += f" (target at {TARGET_TIME_S:g} s, this run {time_limit:g} s)"
        return text
    return "-"


def markdown(proto: dict, records: list[dict], engines: list[str], time_limit: float) -> str:
    """The report: protocol, targets, family summary, then a row per problem and solver."""
    labels = [_label(e) for e in engines]
    summary = summarize(records, labels)
    text = ["# GAP literature benchmark", "", protocol_markdown(
        proto, (("solvers", "Solvers"), ("source", "Data"), ("interrupted", "Interrupted"))), ""]
    text += ["## Targets (measured, not asserted)", "", *[f"- {t}" for t in TARGETS], ""]
    text += ["Objectives are the independent verifier's (`Result.verification.objective`). Gap to "
             "BKS = (objective - BKS) / BKS with the `min` rows of bks.csv; own gap = (objective "
             "- proven bound) / objective. Times are wall seconds from the start of `solve()`.", ""]

    text += ["## Summary per family", ""]
    headers = ["family", "solver", "problems", "mean gap to BKS", "max gap to BKS", "at BKS",
               "proven optimal", "mean wall s", "target"]
    rows = []
    for family, entry in summary.items():
        for label in labels:
            e = entry[label]
            verdict = target_verdict(family, e, time_limit) if label == "eastwest" else ""
            rows.append([family, label, str(e["problems"]), fmt_pct(e["mean_bks_gap"]),
                         fmt_pct(e["max_bks_gap"]), f"{e['at_bks']}/{e['problems']}",
                         f"{e['proven_optimal']}/{e['problems']}", fmt_s(e["mean_wall_s"]),
                         verdict])
    text.append(table(headers, rows, right={2, 3, 4, 5, 6, 7}))
    if len(labels) == 2:
        text += ["", "Ratio of mean gaps to BKS (eastwest / plain CP-SAT; below 1 is better, "
                 "'inf' when CP-SAT's is 0 and eastwest's is not):", ""]
        text.append(table(["family", "eastwest / cp-sat"],
                          [[f, fmt_ratio(e["gap_ratio"])] for f, e in summary.items()],
                          right={1}))
    text += ["", "## Per problem", ""]
    headers = ["instance", "m", "n", "BKS", "solver", "engine", "objective", "gap to BKS",
               "bound", "own gap", "status", "first s", "best s", "engine best s", "wall s", "flag"]
    rows = []
    for r in records:
        for label, s in r["solvers"].items():
            flag = _flag(r, s)
            rows.append([r["instance"], str(r["m"]), str(r["n"]), fmt_num(r["bks"]), label,
                         s.get("engine", "-"), fmt_num(s.get("objective")),
                         fmt_pct(s.get("bks_gap")), fmt_num(s.get("lower_bound")),
                         fmt_pct(s.get("own_gap")), s.get("status", s.get("outcome", "-")),
                         fmt_s(s.get("first_incumbent_s")), fmt_s(s.get("best_incumbent_s")),
                         fmt_s(s.get("engine_best_s")), fmt_s(s.get("wall_s")), flag])
    text.append(table(headers, rows, right={1, 2, 3, 6, 7, 8, 9, 11, 12, 13, 14}))
    text += ["", TIMES_NOTE, ""]
    return "\n".join(text)


def _flag(record: dict, s: dict) -> str:
    if s.get("outcome") != "ok":
        return f"MISS ({s.get('outcome')}{': ' + s['error'][:60] if s.get('error') else ''})"
    if s.get("below_bks"):
        return "BELOW BKS (check!)"
    if "greedy plan kept" in s.get("solver_status", ""):
        return "engine found no plan; greedy hint kept"
    if record["family"] == "orlib" and not (s.get("at_bks") and s.get("status") == "optimal"):
        return "MISS (not proven optimal)" if s.get("at_bks") else "MISS (above BKS)"
    return ""


def _write(base: Path, proto: dict, records: list[dict], engines: list[str],
           time_limit: float) -> None:
    labels = [_label(e) for e in engines]
    write_json(base.with_suffix(".json"),
               {"protocol": proto, "summary": summarize(records, labels), "problems": records})
    write_atomic(base.with_suffix(".md"), markdown(proto, records, engines, time_limit))


__all__ = ["run", "problems", "summarize"]
