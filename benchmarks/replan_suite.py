"""The re-planning suite: a week's plan, three events, and three ways to answer them.

Per case (the shipped week `instances/china-2025-week.json`, and
`china_instance(demands=N, seed=S, hours=168)`) the base plan is `solve()` at the base limit.
At slot ``now`` (default 48: Wednesday 00:00) one event at a time:

* west-outage: the western cluster with the most GPUs (region tagged ``west``) out for 24 slots;
* hub-cut: every pool of the eastern hub with the most GPUs cut to 80% of its GPUs from now on;
* new-demands: 1,000 batch demands of `china_instance(demands=1000, seed=S + 1000, hours=168)`
  added (ids prefixed ``new-``, optional, windows from now on).

Three solvers on each, all with the same time limit, all verified against the modified instance:

* replan: `replan()` (the old plan as the warm start, move cost M per job, and the disruption
  cost D, ``--disruption-cost``, default each job's own cost, on each job no event displaced);
* scratch+migration: the same modified instance (pins and move costs) from the plain greedy plan;
* scratch: pins only, no move or disruption cost (M = D = 0, no re-sent data), from the plain
  greedy plan; its cost with the moves priced at M (and re-sent data) is the verifier's objective
  of its plan against the instance with move cost M and no disruption cost.

Reported: moves (moved, retimed or restarted jobs), newly unserved and served, jobs planned on
the lost capacity, the move ratio (moves / planned on lost capacity), cost (objective with moves
priced at M: the plan's objective less its disruption costs, which are reported beside it), gap to the solver's own proven bound, wall seconds (the whole `replan()` call),
and the seconds of each phase (`PHASES`, from the plan's ``stats.details``) with the search's
budget. In-process, one solve at a time. ``--base-plans DIR`` keeps the base plans
(``DIR/<case>-seed<S>.plan.json``) and reads them back on later runs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from common import (
    REPO,
    fmt_num,
    fmt_pct,
    fmt_s,
    mean,
    protocol,
    protocol_markdown,
    stamp,
    table,
    write_atomic,
    write_json,
)

SOLVERS = ("replan", "scratch+migration", "scratch")
PHASES = ("verify_old_s", "apply_events_s", "compile_s", "adjust_s", "warm_start_s", "search_s",
          "itemize_s", "verify_new_s", "change_s")
"""The phases of a re-plan, in order (docs/replan.md, "Time")."""
EVENTS = ("west-outage", "hub-cut", "new-demands")
WEEK = REPO / "instances" / "china-2025-week.json"
TARGET_TEXT = (
    "10,000-demand week: a re-plan within 10 s (2 cores), gap <= 1% to its own proven bound",
    "moves <= 1.5 x the jobs planned on the lost capacity",
)


def west_cluster(instance) -> str:
    """The region tagged ``west`` holding the most GPUs."""
    west = [r for r in instance.regions if "west" in r.tags and r.pools]
    return max(west, key=lambda r: sum(p.gpu_count for p in r.pools)).id


def east_hub(instance) -> tuple[str, list]:
    """The hub (``hub:`` tag) of ``east`` regions holding the most GPUs, and its pools."""
    hubs: dict[str, list] = {}
    for r in instance.regions:
        hub = next((t for t in r.tags if t.startswith("hub:") and t != "hub:none"), None)
        if hub is not None and "east" in r.tags:
            hubs.setdefault(hub, []).extend(r.pools)
    hub = max(hubs, key=lambda h: sum(p.gpu_count for p in hubs[h]))
    return hub, hubs[hub]


def new_demands(seed: int, now: int, count: int, slots: int):
    """``count`` demands of another draw of the generator over ``slots`` hours, its batch jobs
    kept, optional, from ``now`` on."""
    from scheduler.generate import china_instance

    source = china_instance(demands=count, seed=seed + 1000, hours=slots)
    out = []
    for d in source.demands:
        if d.kind != "batch":
            continue
        release = max(d.release_slot or 0, now)
        deadline = d.deadline_slot if d.deadline_slot is not None and d.deadline_slot > release + 1 else None
        out.append(d.model_copy(update={"id": f"new-{d.id}", "must_serve": False, "release_slot": release,
                                        "deadline_slot": deadline}))
    return tuple(out)


def events_for(name: str, instance, now: int, seed: int, count: int):
    from scheduler.replan import CapacityEvent, Events, OutageEvent

    if name == "west-outage":
        end = min(now + 24, instance.horizon.slots)
        return Events(outages=(OutageEvent(target=west_cluster(instance), from_slot=now, to_slot=end),))
    if name == "hub-cut":
        _, pools = east_hub(instance)
        return Events(capacity=tuple(CapacityEvent(pool=p.id, gpus=math.floor(0.8 * p.gpu_count)) for p in pools))
    return Events(add=new_demands(seed, now, count, instance.horizon.slots))


def run_one(instance, plan, events, solver: str, now: int, migration: float, params,
            disruption: float | None = None) -> dict:
    """One solver on one event: the figures of the table (``disruption``: `replan`'s
    ``disruption_cost_cny``, None for its default; scratch runs without)."""
    from scheduler.replan import replan
    from scheduler.verify import verify

    started = time.perf_counter()
    result = replan(instance, plan, now_slot=now, events=events, params=params,
                    migration_cost_cny=0.0 if solver == "scratch" else migration,
                    disruption_cost_cny=0.0 if solver == "scratch" else disruption,
                    resend_cost=solver != "scratch", warm_start=solver == "replan")
    wall = time.perf_counter() - started
    ch = result.change
    moves = ch.count("moved") + ch.count("retimed") + ch.count("restarted")
    cost = result.plan.objective
    if cost is not None:  # moves priced at M, without the disruption cost
        cost -= ch.disruption_cny
    if solver == "scratch" and cost is not None:  # its moves priced at M: the verifier's objective
        from scheduler.replan import apply_events

        priced = apply_events(instance, plan, now, events, migration, checked=True,
                              disruption_cost_cny=0.0).instance
        cost = verify(priced, result.plan).objective
    lost = ch.planned_on_lost_capacity
    return {
        "solver": solver, "status": result.plan.status.value, "verified": result.verification.ok,
        "objective": result.plan.objective, "cost_with_moves": cost, "lower_bound": result.plan.lower_bound,
        "own_gap": result.plan.gap, "migration_cny": ch.migration_cny,
        "disruption_cny": ch.disruption_cny, "moves": moves,
        "moved": ch.count("moved"), "retimed": ch.count("retimed"), "restarted": ch.count("restarted"),
        "newly_unserved": ch.count("newly_unserved"), "newly_served": ch.count("newly_served"),
        "added_unserved": ch.count("added_unserved"),
        "planned_on_lost_capacity": lost, "move_ratio": moves / lost if lost else None,
        "pinned": ch.pinned, "cost_delta": ch.cost_delta_cny, "wall_s": wall,
        "engine": result.plan.stats.engine, "warm_start": result.plan.stats.details.get("warm_start"),
        "phases": {k: result.plan.stats.details.get(k) for k in PHASES},
        "search_budget_s": result.plan.stats.details.get("search_budget_s"),
        "reserve_s": result.plan.stats.details.get("reserve_s"),
        "engine_bound": result.plan.stats.details.get("engine_bound"),
        "simple_bound": result.plan.stats.details.get("simple_bound"),
    }


def run(args) -> int:
    """The suite (see the module text); writes <out>/replan-<stamp>.md and .json."""
    import os

    from scheduler import read_instance, read_plan, solve
    from scheduler.generate import china_instance
    from scheduler.io import write_plan
    from scheduler.params import SolveParams

    cases = [c.strip() for c in (args.cases or ("200x24" if args.smoke else "week,10000")).split(",") if c.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    limit = args.time_limit if args.time_limit is not None else (3.0 if args.smoke else 10.0)
    base_limit = args.base_limit if args.base_limit is not None else (3.0 if args.smoke else 60.0)
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    if set(solvers) - set(SOLVERS) or set(events) - set(EVENTS):
        print(f"--solvers: choose from {','.join(SOLVERS)}; --events: from {','.join(EVENTS)}")
        return 2
    count = 50 if args.smoke else args.new_demands
    proto = protocol(
        "replan",
        instances=", ".join("instances/china-2025-week.json" if c == "week"
                            else f"china_instance(demands={c.split('x')[0]}, seed=S, hours="
                                 f"{c.split('x')[1] if 'x' in c else 168})" for c in cases),
        time_limits=f"re-plans {limit:g} s each; base plan solve() {base_limit:g} s",
        seeds=f"S = {','.join(map(str, seeds))} (generator, new demands seed S+1000, solver)",
        workers=f"{args.workers} (SolveParams.workers; 0 = engine default)",
        events=f"at slot {args.now}, one at a time: {', '.join(events)} (module text of "
               f"benchmarks/replan_suite.py); {count} new demands",
        solvers=f"replan (warm start, move cost {args.migration_cost:g} CNY per job, disruption cost "
                f"{'each job its own cost' if args.disruption_cost is None else f'{args.disruption_cost:g} CNY'} "
                "per job no event displaced), scratch+migration "
                "(same instance, greedy start), scratch (move cost 0, greedy start; cost with "
                "moves priced by the verifier); every plan verified against the modified instance",
        load=f"load average {os.getloadavg()[0]:.2f} at the start",
    )
    base = Path(args.out) / f"replan-{stamp()}"
    results: list[dict] = []
    for case in cases:
        for seed in seeds:
            if case == "week":
                instance = read_instance(WEEK)
            else:
                size, _, hours = case.partition("x")
                instance = china_instance(demands=int(size), seed=seed, hours=int(hours or 168))
            params = SolveParams(time_limit_s=base_limit, seed=seed, workers=args.workers)
            t0 = time.perf_counter()
            kept = Path(args.base_plans) / f"{case}-seed{seed}.plan.json" if args.base_plans else None
            if kept is not None and kept.exists():
                old = read_plan(kept)
            else:
                old = solve(instance, params).plan
                if kept is not None:
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    write_plan(old, kept)
            print(f"{case} seed {seed}: base plan {fmt_num(old.objective)}, gap {fmt_pct(old.gap)}, "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            now = min(args.now, instance.horizon.slots - 1)
            for event in events:
                ev = events_for(event, instance, now, seed, count)
                records = {}
                for solver in solvers:
                    rec = run_one(instance, old, ev, solver, now, args.migration_cost,
                                  params.model_copy(update={"time_limit_s": limit}), args.disruption_cost)
                    records[solver] = rec
                    print(f"  {event} {solver}: moves {rec['moves']} / lost {rec['planned_on_lost_capacity']}, "
                          f"newly unserved {rec['newly_unserved']}, cost {fmt_num(rec['cost_with_moves'])}, "
                          f"gap {fmt_pct(rec['own_gap'])}, {rec['wall_s']:.1f} s ("
                          + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in rec["phases"].items() if v is not None)
                          + f"; budget {rec['search_budget_s'] or 0:.2f}; load {os.getloadavg()[0]:.2f})",
                          flush=True)
                results.append({"case": case, "seed": seed, "event": event, "now": now,
                                "base_objective": old.objective, "base_gap": old.gap,
                                "demands": len(instance.demands), "solvers": records})
                _write(base, proto, results, limit)
    proto["load"] += f", {os.getloadavg()[0]:.2f} at the end"
    _write(base, proto, results, limit)
    print(f"wrote {base}.md and {base}.json")
    return 0


def _write(base: Path, proto: dict, results: list[dict], limit: float) -> None:
    write_json(base.with_suffix(".json"), {"protocol": proto, "results": results})
    write_atomic(base.with_suffix(".md"), markdown(proto, results, limit))


def markdown(proto: dict, results: list[dict], limit: float) -> str:
    text = ["# Re-planning benchmark", "", protocol_markdown(proto, (("events", "Events"), ("solvers", "Solvers"),
                                                                    ("load", "Load"))), ""]
    text += ["## Targets (measured, not asserted)", "", *[f"- {t}" for t in TARGET_TEXT], ""]
    headers = ["case", "seed", "event", "solver", "verified", "moves", "lost", "moves / lost",
               "newly unserved", "newly served", "cost (moves priced)", "disruption", "gap", "wall s"]
    rows = []
    for r in results:
        for name, s in r["solvers"].items():
            rows.append([r["case"], str(r["seed"]), r["event"], name, "yes" if s["verified"] else "NO",
                         str(s["moves"]), str(s["planned_on_lost_capacity"]),
                         "-" if s["move_ratio"] is None else f"{s['move_ratio']:.2f}",
                         str(s["newly_unserved"]), str(s["newly_served"]), fmt_num(s["cost_with_moves"]),
                         fmt_num(s.get("disruption_cny")), fmt_pct(s["own_gap"]), fmt_s(s["wall_s"])])
    text += [table(headers, rows, right=set(range(5, 14))), ""]
    text += ["## Phases (seconds; budget: what the search was given)", ""]
    names = [k.removesuffix("_s").replace("_", " ") for k in PHASES]
    rows = []
    for r in results:
        for name, s in r["solvers"].items():
            ph = s.get("phases") or {}
            rows.append([r["case"], str(r["seed"]), r["event"], name,
                         *[fmt_s(ph.get(k)) if ph.get(k) is not None else "-" for k in PHASES],
                         fmt_s(s.get("search_budget_s")) if s.get("search_budget_s") is not None else "-",
                         fmt_s(s["wall_s"])])
    text += [table(["case", "seed", "event", "solver", *names, "budget", "wall"], rows,
                   right=set(range(4, 6 + len(PHASES)))), ""]
    text += ["## Over seeds (replan)", ""]
    over = []
    for key in dict.fromkeys((r["case"], r["event"]) for r in results):
        runs = [r["solvers"]["replan"] for r in results if (r["case"], r["event"]) == key and "replan" in r["solvers"]]
        if not runs:
            continue
        gaps = [s["own_gap"] for s in runs if s["own_gap"] is not None]
        walls = [s["wall_s"] for s in runs]
        ratios = [s["move_ratio"] for s in runs if s["move_ratio"] is not None]
        within = all(w <= limit * 1.0 + 1e-9 for w in walls)
        ruled = all(w <= limit * 1.05 + 1.0 for w in walls)
        over.append([*key, str(len(runs)), fmt_pct(mean(gaps)), fmt_pct(max(gaps, default=None)),
                     fmt_s(mean(walls)), fmt_s(max(walls)),
                     "-" if not ratios else f"{max(ratios):.2f}",
                     "met" if within else "MISS",
                     "met" if ruled else "MISS",
                     "met" if gaps and max(gaps) <= 0.01 else "MISS",
                     "-" if not ratios else ("met" if max(ratios) <= 1.5 else "MISS")])
    text += [table(["case", "event", "seeds", "gap mean", "gap max", "wall mean", "wall max",
                    "moves / lost max", f"wall <= {limit:g} s", f"wall <= {limit * 1.05 + 1:g} s (rule)",
                    "gap <= 1%", "moves <= 1.5 x lost"],
                   over, right=set(range(2, 12))), ""]
    return "\n".join(text) + "\n"
