"""eastwest benchmarks: one command per suite, each run under a stated protocol.

    python benchmarks/run.py gap   [--time-limit 60] [--families orlib,a,b,c,d,e] [--instances N,..]
                                   [--engine auto] [--baseline] [--seed 0] [--workers 0] [--smoke]
                                   [--out DIR]
    python benchmarks/run.py scale [--sizes 1000,10000,100000,1000000] [--time-limits 10,10,60,600]
                                   [--seed 1 | --seeds 1,2,3] [--workers 0] [--mem-limit-gb 20] [--grace S]
                                   [--engine auto] [--solvers eastwest,cp-sat,greedy] [--smoke]
                                   [--out DIR]
    python benchmarks/run.py time  [--cases 1000x24,10000x168,100000x168] [--time-limits 60,120,600]
                                   [--seeds 1,2,3] [--workers 0] [--mem-limit-gb 20] [--grace S]
                                   [--engine auto] [--solvers eastwest,cp-sat,no-time-shift,no-space-shift]
                                   [--smoke] [--out DIR]
    python benchmarks/run.py replan [--cases week,10000] [--seeds 1] [--time-limit 10] [--base-limit 60]
                                   [--now 48] [--events west-outage,hub-cut,new-demands]
                                   [--solvers replan,scratch+migration,scratch] [--migration-cost 100]
                                   [--disruption-cost CNY]
                                   [--new-demands 1000] [--workers 0] [--base-plans DIR] [--smoke]
                                   [--out DIR]
    python benchmarks/run.py limits [--sizes 1000,10000,100000] [--time-limits 2,10] [--seed 1]
                                   [--workers 0] [--out DIR]

Protocol (docs/benchmarks.md has the full text):

* gap: the literature files in ../shared/benchmarks/gap/ (skipped, exit 0, when absent).
  OR-Library gap1-gap12 against the `min` rows of bks.csv (family "orlib") and all 57 Yagiura
  files (families a-e); gapa-gapd are not run, they duplicate Yagiura A-D with n <= 200. Each
  problem: gap_to_instance, solve with the stated engine, seed, workers and time limit; the
  objective is the independent verifier's; gap to best-known = (objective - BKS) / BKS. With
  --baseline, plain CP-SAT (engine="exact") runs on every problem in the same run, same limit.
* scale: china_instance(demands=N, seed) at each size; eastwest (engine="auto"), plain CP-SAT of
  the whole problem (engine="exact", same limit) and greedy (compile + greedy + build_plan +
  verify) on the same instance. Each (solver, size) runs in its own child process (`_one`), which
  generates the instance itself, caps its address space (RLIMIT_AS) and is killed at the time
  limit + grace; peak RSS is the child's ru_maxrss from os.wait4. A child that runs out of memory
  or time is reported as such, never ends the suite.
* time: china_instance(demands=N, seed, hours=H) at each case (N demands x H hourly slots);
  eastwest, plain CP-SAT of the same time-expanded model, and two baselines solved by eastwest
  under a restriction: no temporal shifting (every batch job at its earliest allowed start) and
  no spatial shifting (every demand in its origin's hub). Children as in the scale suite; every
  plan verified against the original instance; cost and tCO2 reported as ratios to eastwest.
* limits: `eastwest solve --time-limit L` as a real process at each size and limit: its wall
  time from outside against the rule L x 1.05 + 1 s, and the time per phase (start, read,
  compile, search, plan, verify, write) from its progress lines and the plan's statistics.
* replan: a base plan of the shipped week and of a 10,000-demand week, then at slot 48 each of
  three events (the largest western cluster out for 24 h, a 20% cut across the largest eastern
  hub, 1,000 new demands) answered by `replan()` (warm start, move cost), by the same model from
  the greedy plan, and without move cost: moves against the jobs planned on the lost capacity,
  cost with moves priced, own gap, wall time; every plan verified (benchmarks/replan_suite.py).
* Output: <out>/<suite>-<UTC stamp>.md (aligned tables, targets flagged met/MISS) and .json (raw
  records), each headed by the protocol: suite, instances, limits, seeds, workers and cores,
  machine, Python/OR-Tools/numpy versions, git commit (+dirty), date. Default out:
  benchmarks/results/ (git-ignored). Targets are measured and printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_OUT  # noqa: E402


def parser() -> argparse.ArgumentParser:
    """The command line: `gap`, `scale`, `time`, `limits`, `replan`, and the internal `_one` (one scale child)."""
    top = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="suite", required=True)

    gap = sub.add_parser("gap", help="GAP literature instances against best-known values")
    gap.add_argument("--time-limit", type=float, default=None,
                     help="seconds per problem and solver (default 60; --smoke: 2)")
    gap.add_argument("--families", default="orlib,a,b,c,d,e",
                     help="comma-separated: orlib (gap1-gap12, min) and Yagiura a,b,c,d,e")
    gap.add_argument("--instances", default=None,
                     help="comma-separated problem names (gap3-2, d10200) or OR-Library "
                          "files (gap3)")
    gap.add_argument("--engine", default="auto", choices=("auto", "exact", "large"))
    gap.add_argument("--baseline", action="store_true",
                     help="also run plain CP-SAT (engine=exact) on every problem")
    gap.add_argument("--seed", type=int, default=0)
    gap.add_argument("--workers", type=int, default=0, help="SolveParams.workers (0: default)")
    gap.add_argument("--smoke", action="store_true",
                     help="CI smoke run: the gap1 problems only, 2 s limit")
    gap.add_argument("--out", default=str(DEFAULT_OUT))

    scale = sub.add_parser("scale", help="China-network instances at growing sizes, 3 solvers")
    scale.add_argument("--sizes", default=None, help="comma-separated demand counts "
                       "(default 1000,10000,100000,1000000; --smoke: 1000)")
    scale.add_argument("--time-limits", default=None, help="seconds, one or one per size "
                       "(default 10,10,60,600; --smoke: 5)")
    scale.add_argument("--seed", type=int, default=1)
    scale.add_argument("--seeds", default=None, help="comma-separated seeds, each size run once "
                       "per seed, with mean / min / max over them (overrides --seed)")
    scale.add_argument("--workers", type=int, default=0, help="SolveParams.workers (0: default)")
    scale.add_argument("--engine", default="auto", choices=("auto", "exact", "large"),
                       help="the engine of the eastwest solver (the baseline is always exact)")
    scale.add_argument("--solvers", default="eastwest,cp-sat,greedy")
    scale.add_argument("--mem-limit-gb", type=float, default=20.0,
                       help="address-space limit of each child (0: none)")
    scale.add_argument("--grace", type=float, default=None,
                       help="seconds past the limit before a child is killed "
                            "(default max(120, limit) + size/2000; --smoke: 60)")
    scale.add_argument("--smoke", action="store_true",
                       help="CI smoke run: 1,000 demands, 5 s, all three solvers")
    scale.add_argument("--out", default=str(DEFAULT_OUT))

    timed = sub.add_parser("time", help="hourly horizons: eastwest, CP-SAT and the no-shifting "
                           "baselines, cost and tCO2 as ratios")
    timed.add_argument("--cases", default=None, help="comma-separated NxH: demands x hourly slots "
                       "(default 1000x24,10000x168,100000x168; --smoke: 200x24)")
    timed.add_argument("--time-limits", default=None, help="seconds, one or one per case "
                       "(default 60,120,600; --smoke: 5)")
    timed.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    timed.add_argument("--workers", type=int, default=0, help="SolveParams.workers (0: default)")
    timed.add_argument("--engine", default="auto", choices=("auto", "exact", "large"),
                       help="the engine of the eastwest solver and the baselines")
    timed.add_argument("--solvers", default="eastwest,cp-sat,no-time-shift,no-space-shift")
    timed.add_argument("--mem-limit-gb", type=float, default=20.0,
                       help="address-space limit of each child (0: none)")
    timed.add_argument("--grace", type=float, default=None,
                       help="seconds past the limit before a child is killed "
                            "(default max(120, limit) + size/2000; --smoke: 60)")
    timed.add_argument("--smoke", action="store_true", help="CI smoke run: 200 demands x 24, 5 s")
    timed.add_argument("--out", default=str(DEFAULT_OUT))

    limits = sub.add_parser("limits", help="the command's wall time against its time limit, "
                            "with the time per phase")
    limits.add_argument("--sizes", default="1000,10000,100000",
                        help="comma-separated demand counts (default 1000,10000,100000)")
    limits.add_argument("--time-limits", default="2,10",
                        help="comma-separated limits in seconds, each run at every size "
                             "(default 2,10)")
    limits.add_argument("--seed", type=int, default=1)
    limits.add_argument("--workers", type=int, default=0, help="--workers (0: default)")
    limits.add_argument("--out", default=str(DEFAULT_OUT))

    rp = sub.add_parser("replan", help="re-planning after events: warm re-plan against re-solving "
                        "with and without move cost")
    rp.add_argument("--cases", default=None,
                    help="comma-separated: week (the shipped week) or NxH / N (N demands, H slots, "
                         "default 168) (default week,10000; --smoke: 200x24)")
    rp.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    rp.add_argument("--time-limit", type=float, default=None,
                    help="seconds per re-plan (default 10; --smoke: 3)")
    rp.add_argument("--base-limit", type=float, default=None,
                    help="seconds for the base plan (default 60; --smoke: 3)")
    rp.add_argument("--now", type=int, default=48, help="the slot the events happen (default 48)")
    rp.add_argument("--events", default="west-outage,hub-cut,new-demands")
    rp.add_argument("--solvers", default="replan,scratch+migration,scratch")
    rp.add_argument("--migration-cost", type=float, default=100.0, help="CNY per moved job")
    rp.add_argument("--disruption-cost", type=float, default=None,
                    help="CNY added per moved job no event displaced (default: the job's own cost "
                         "in the old plan; 0: none, the rule before it)")
    rp.add_argument("--new-demands", type=int, default=1000, help="demands added (--smoke: 50)")
    rp.add_argument("--workers", type=int, default=0, help="SolveParams.workers (0: default)")
    rp.add_argument("--base-plans", default=None,
                    help="folder for the base plans: read when there, else solved and written")
    rp.add_argument("--smoke", action="store_true", help="CI smoke run: 200 demands x 24, 3 s")
    rp.add_argument("--out", default=str(DEFAULT_OUT))

    one = sub.add_parser("_one", help=argparse.SUPPRESS)
    one.add_argument("--solver", required=True, choices=("eastwest", "cp-sat", "greedy",
                     "timed-eastwest", "timed-cp-sat", "no-time-shift", "no-space-shift"))
    one.add_argument("--hours", type=int, default=None)
    one.add_argument("--size", type=int, required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--time-limit", type=float, required=True)
    one.add_argument("--workers", type=int, default=0)
    one.add_argument("--engine", default="auto", choices=("auto", "exact", "large"))
    one.add_argument("--mem-limit-gb", type=float, default=20.0)
    one.add_argument("--result", required=True)
    return top


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a suite; the exit code is 0 unless the command line is wrong or interrupted."""
    args = parser().parse_args(argv)
    if args.suite == "gap":
        import gap_suite

        return gap_suite.run(args)
    if args.suite == "limits":
        import limits_suite

        return limits_suite.run(args)
    if args.suite == "replan":
        import replan_suite

        return replan_suite.run(args)
    import scale_suite
    import time_suite  # registers the time suite's child solvers with scale_suite

    if args.suite == "time":
        return time_suite.run(args)
    if args.suite == "_one":
        return scale_suite.child_main(args)
    return scale_suite.run(args)


if __name__ == "__main__":
    sys.exit(main())
