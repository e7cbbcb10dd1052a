"""The `eastwest` command: a thin layer that wires library calls to files and the terminal.

Exit codes: 0 a plan was produced (unserved demands allowed) or a check passed; 1 verification
failed or an internal error; 2 invalid input or arguments; 3 the hard constraints cannot be met
(or no plan was found in time); 130 interrupted (SIGINT / Ctrl-C, or SIGTERM).

Interrupts: `main()` installs its SIGINT and SIGTERM handlers first, and every command runs in a
worker thread while the main thread waits, so a signal is seen at once at any moment. For
`solve`, the first signal stops the search; the best plan so far is itemized, verified and
written (atomically), then the command exits 130. That takes under a second plus the time to
itemize, verify and write the plan, which grows with the size (about 50 us per demand on 2
cores: 0.15 s at 3,000 demands, 5 s at 100,000, 50 s at 1,000,000); the plan is never written
unverified. Before the first (greedy) plan exists it exits 130 at once with one line saying
that no plan was written. A second signal while the plan is being itemized and verified exits
at once without writing it (one while the file is being written lets that finish). `scenario`,
`sweep` and `expand` keep what they finished: the first signal stops the running work, the rest
is written, exit 130; a second exits at once.

Time limits: the time since the command started counts, reading included; `solve()` gets what is
left. Where reading, compiling and verifying alone need more than the limit, a `note:` on stderr
says so up front, and another reports how long the solve took.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the command's clock (the interpreter started a few ms before)

import argparse  # noqa: E402 - after the clock starts
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130

SCHEMA_KINDS = ["instance", "plan", "params", "scenario", "sweep", "scenario-summary", "sweep-summary",
                "candidates", "expansion"]
LONG_RUNS = ("scenario", "sweep", "expand")  # commands that keep what they finished when interrupted

LATE_FACTOR, LATE_SLACK_S = 1.05, 1.0  # the documented rule: limit x 1.05 + 1 s


def say(*parts: object) -> None:
    """print() to stdout that survives a closed pipe (`eastwest solve ... | head`)."""
    try:
        print(*parts)
    except BrokenPipeError:
        # Point stdout at nowhere so the interpreter's final flush cannot fail either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def warn(text: str) -> None:
    """One line on stderr, flushed at once."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def elapsed() -> float:
    """Seconds since the command started."""
    return time.perf_counter() - _command_started


class Interrupts:
    """SIGINT and SIGTERM while a command runs: the handler only records the signal and wakes
    the main thread; the command's worker thread sees ``stop``."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.received: list[int] = []
        self.phase = "starting"  # what the worker is doing, for the message
        self.plan_exists = False  # from the first (greedy) plan on, an interrupt writes a plan
        self.writing = False
        self.abandoned = False  # the main thread gave up on the worker: it must not write
        self.lock = threading.Lock()
        self.progress_lines = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except (ValueError, OSError):  # not the main thread: leave signals alone
                pass

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, _frame) -> None:
        self.received.append(number)
        self.stop.set()
        self.wake.set()

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def may_write(self) -> bool:
        """Called by the worker just before writing the plan: False once abandoned."""
        with self.lock:
            if self.abandoned:
                return False
            self.writing = True
            return True

    def abandon(self) -> bool:
        """Give up on the worker unless it is writing already; True if abandoned."""
        with self.lock:
            if self.writing:
                return False
            self.abandoned = True
            return True


class ProgressLine:
    """Progress on stderr: a live line when stderr is a terminal, or with ``lines`` (the
    `--progress` flag) one newline-terminated `progress: ...` line per update, for scripts."""

    def __init__(self, enabled: bool, lines: bool = False):
        self.enabled = enabled
        self.lines = lines
        self.last = 0.0
        self.objective: float | None = None
        self.bound: float | None = None
        self.shown: tuple | None = None
        self.lock = threading.Lock()
        self.listeners: list = []

    def event(self, text: str) -> None:
        """A step of the command (reading, writing, a signal), as a progress line."""
        if self.lines:
            with self.lock:
                warn(f"progress: {elapsed():.2f} s {text}")

    def __call__(self, progress) -> None:
        from scheduler.report import money, percent

        for listener in self.listeners:
            listener(progress)
        if progress.message.startswith("late: "):
            return
        with self.lock:
            if progress.objective is not None:
                self.objective = progress.objective
            if progress.bound is not None:
                self.bound = max(self.bound or progress.bound, progress.bound)
            gap = None
            if self.objective is not None and self.bound is not None:
                gap = max(0.0, self.objective - self.bound) / max(abs(self.objective), 1.0)
            if self.lines:
                shown = (progress.message, self.objective, self.bound)
                if shown != self.shown:
                    self.shown = shown
                    if progress.engine == "solve" and progress.objective is None:
                        warn(f"progress: {elapsed():.2f} s {progress.message}")
                        return
                    what = progress.message if progress.engine == "solve" else (
                        f"{progress.engine} {progress.message}")
                    warn(f"progress: {elapsed():.2f} s {what}  incumbent {money(self.objective)}"
                         f"  bound {money(self.bound)}  gap {percent(gap, 3)}")
                return
            now = time.monotonic()
            if not self.enabled or now - self.last < 0.2:
                return
            self.last = now
            line = (
                f"{progress.elapsed_s:7.1f} s  {progress.engine}  incumbent {money(self.objective)}"
                f"  bound {money(self.bound)}  gap {percent(gap, 3)}"
            )
            sys.stderr.write("\r" + line.ljust(100)[:120])
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last and not self.lines:
            sys.stderr.write("\n")
            sys.stderr.flush()


class TaskBar:
    """Progress of a run of many solves (scenario years, sweep solves) on stderr: on a terminal
    a live bar with what is done and what is running; otherwise one line per finished item;
    nothing when ``quiet``."""

    def __init__(self, unit: str, *, live: bool, quiet: bool):
        self.unit, self.live, self.quiet = unit, live and not quiet, quiet
        self.shown = False
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, event) -> None:
        if self.quiet:
            return
        with self.lock:
            now = time.monotonic()
            if event.kind == "solve" and now - self.last < 0.2:  # at most 5 redraws a second
                return
            self.last = now
            if not self.live:
                if event.kind == "finish":
                    warn(f"done {event.done}/{event.total} {self.unit}: {event.item}: {event.detail}")
                return
            import shutil

            width = max(40, shutil.get_terminal_size((80, 24)).columns) - 1
            cells = 20
            filled = cells * event.done // max(event.total, 1)
            running = ", ".join(event.running) or "-"
            detail = f" | {event.detail}" if event.kind == "solve" and event.detail else ""
            line = (f"[{'#' * filled}{'.' * (cells - filled)}] {event.done}/{event.total} {self.unit}"
                    f"  running {running}{detail}")
            if event.kind == "finish":  # the finished item stays on screen, above the bar
                sys.stderr.write("\r" + " " * width + "\r"
                                 + f"{event.item}: {event.detail}"[:width] + "\n")
            sys.stderr.write("\r" + line[:width].ljust(width))
            sys.stderr.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_solve(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from pydantic import ValidationError

    from models import Status
    from scheduler.io import InputError, check_writable, read_instance, read_params, write_plan
    from scheduler.params import SolveParams, Stopped
    from scheduler.report import summary
    from scheduler.solve import VerificationError, solve

    progress = ProgressLine(enabled=sys.stderr.isatty() and not args.quiet, lines=args.progress)
    interrupts.progress_lines = args.progress
    interrupts.set_phase(f"reading {args.instance}")
    progress.event(f"reading {args.instance}")
    instance = read_instance(args.instance)
    read_s = elapsed()
    progress.event(f"read {len(instance.demands):,} demands")
    params = read_params(args.params) if args.params else SolveParams()
    overrides = {
        "time_limit_s": args.time_limit,
        "seed": args.seed,
        "workers": args.workers,
        "engine": args.engine,
        "gap_limit": args.gap_limit,
    }
    try:
        params = SolveParams.model_validate(
            params.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        )
    except ValidationError as error:
        raise InputError("arguments", [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        ]) from None
    check_writable(args.output, protect=(args.instance, args.params))
    limit = params.time_limit_s
    left = limit - elapsed()
    if left <= 0:
        warn(f"note: reading took {read_s:.1f} s of the {limit:g} s limit; the plan will be late")

    def late(report) -> None:
        if report.message.startswith("late: ") and left > 0:
            warn(f"note: {report.message.removeprefix('late: ')} left after reading "
                 f"({read_s:.1f} s) of the {limit:g} s limit; the plan will be late")
        elif report.message == "compiled":
            interrupts.set_phase("building the first plan")
        elif report.message == "first plan":
            interrupts.plan_exists = True
            interrupts.set_phase("searching")

    progress.listeners.append(late)
    interrupts.set_phase("compiling the options")
    budget = params.model_copy(update={"time_limit_s": max(left, 0.05)})
    try:
        result = solve(instance, budget, on_progress=progress, stop=interrupts.stop)
    except Stopped:
        progress.close()
        return EXIT_INTERRUPTED  # the main thread has said so already
    except VerificationError as error:
        progress.close()
        _print_violations(error.result.verification.violations)
        warn("error: the plan failed independent verification; nothing was written (a bug in "
             "eastwest: please report it with the instance)")
        return EXIT_FAILED
    finally:
        interrupts.set_phase("itemizing and verifying the plan")
    progress.close()
    stats = result.plan.stats.model_copy(update={"time_limit_s": limit})
    plan = result.plan.model_copy(update={"stats": stats})
    interrupts.set_phase(f"writing {args.output}")
    if not interrupts.may_write():
        return EXIT_INTERRUPTED
    progress.event(f"writing {args.output}")
    write_plan(plan, args.output, protect=(args.instance, args.params))
    progress.event(f"wrote {args.output}")
    took = elapsed()
    if took > limit * LATE_FACTOR + LATE_SLACK_S:
        warn(f"note: the solve took {took:.1f} s in all, against the {limit:g} s limit")
    if not args.quiet:
        say(summary(instance, plan, result.verification, **_terminal()))
        say(f"\nplan written to {args.output}")
    if interrupts.stop.is_set():
        return EXIT_INTERRUPTED
    if plan.status in (Status.INFEASIBLE, Status.UNKNOWN):
        why = ("the must-serve demands cannot all be served" if plan.status == Status.INFEASIBLE
               else "no plan serving every must-serve demand was found in the time limit "
                    "(infeasibility not proven)")
        warn(f"error: {why}; see the unserved reasons in {args.output}")
        return EXIT_INFEASIBLE
    return EXIT_OK


def _print_violations(violations) -> None:
    from scheduler.report import table

    rows = [[v.code, v.subject, f"{v.amount:g}", v.message] for v in violations[:50]]
    say(table(["violation", "subject", "amount", "message"], rows))
    if len(violations) > 50:
        say(f"... and {len(violations) - 50} more")


def cmd_verify(args: argparse.Namespace) -> int:
    from scheduler.io import read_instance, read_plan
    from scheduler.report import money, percent
    from scheduler.verify import verify

    instance = read_instance(args.instance)
    plan = read_plan(args.plan)
    verification = verify(instance, plan)
    if plan.instance != instance.name:
        print(f"note: the plan names instance '{plan.instance}', the file holds '{instance.name}'",
              file=sys.stderr)
    if verification.ok:
        say(f"ok: the plan meets every rule; objective {money(verification.objective)} "
              f"(recomputed), status {plan.status.value}, gap {percent(plan.gap, 3)}")
        if instance.horizon is not None:  # a plan over time: its summary too
            from scheduler.report import summary

            say("\n" + summary(instance, plan, verification, **_terminal()))
        return EXIT_OK
    _print_violations(verification.violations)
    say(f"\nfailed: {len(verification.violations)} violation(s)")
    return EXIT_FAILED


def _terminal() -> dict:
    """The summary's width (the terminal's, 80 when stdout is not one; COLUMNS overrides) and
    glyphs (ASCII unless stdout's encoding is UTF-8)."""
    import shutil

    from scheduler.report import glyphs_for

    width = shutil.get_terminal_size((80, 24)).columns
    return {"width": max(40, width), "glyphs": glyphs_for(getattr(sys.stdout, "encoding", None))}


def cmd_show(args: argparse.Namespace) -> int:
    from scheduler.io import InputError, read_instance, read_plan
    from scheduler.report import demand_view, summary

    instance = read_instance(args.instance)
    plan = read_plan(args.plan)
    check_plan_matches(instance, plan, args.plan)
    if args.demand is not None:
        if args.demand not in {d.id for d in instance.demands}:
            raise InputError(args.instance, [f"demand '{args.demand}': no such demand"])
        say(demand_view(instance, plan, args.demand, **_terminal()))
        return EXIT_OK
    say(summary(instance, plan, None, pool_group=args.pool_group, chart_groups=None, **_terminal()))
    return EXIT_OK


def check_plan_matches(instance, plan, path) -> None:
    """Raise `InputError` (about the plan file ``path``) where the plan names demands or pools
    the instance lacks, or slots outside its horizon; a note where it names another instance."""
    from scheduler.io import InputError

    if plan.instance != instance.name:
        warn(f"note: the plan names instance '{plan.instance}', the file holds '{instance.name}'")
    demands = {d.id for d in instance.demands}
    region_of = {p.id: r.id for r, p in instance.pools()}
    pools = set(region_of)
    problems = [f"assignment '{a.demand}': field 'pool' names unknown pool '{a.pool}'"
                for a in plan.assignments if a.pool not in pools]
    placed = [("assignment", a.demand, a) for a in plan.assignments]
    placed += [("service", s.demand, p) for s in plan.services for p in s.placements]
    problems += [f"{kind} '{demand}': field 'region' is '{x.region}', pool '{x.pool}' is in "
                 f"'{region_of[x.pool]}'" for kind, demand, x in placed
                 if x.pool in pools and x.region != region_of[x.pool]]
    problems += [f"field 'demand' names unknown demand '{x.demand}'"
                 for x in (*plan.assignments, *plan.unserved, *plan.services) if x.demand not in demands]
    problems += [f"service '{s.demand}': field 'pool' names unknown pool '{p.pool}'"
                 for s in plan.services for p in s.placements if p.pool not in pools]
    if instance.horizon is None:
        problems += [f"assignment '{a.demand}': field 'start_slot' is {a.start_slot}; the instance has "
                     "no horizon" for a in plan.assignments if a.start_slot is not None]
    else:
        slots = instance.horizon.slots
        problems += [f"assignment '{a.demand}': field 'start_slot' is missing; the instance has a "
                     f"horizon ({slots} slots)" for a in plan.assignments if a.start_slot is None]
        problems += [f"assignment '{a.demand}': field 'start_slot' is {a.start_slot}, outside the "
                     f"horizon ({slots} slots)" for a in plan.assignments
                     if a.start_slot is not None and a.start_slot >= slots]
        problems += [f"service '{s.demand}' on '{p.pool}': field 'replicas' has {len(p.replicas)} values; "
                     f"the horizon has {slots} slots"
                     for s in plan.services for p in s.placements if len(p.replicas) != slots]
    if problems:
        raise InputError(path, problems[:20] + ([f"(and {len(problems) - 20} more)"]
                                                 if len(problems) > 20 else []))


def cmd_report(args: argparse.Namespace) -> int:
    from scheduler.html_report import MissingExtra, require_matplotlib, write_html_report
    from scheduler.io import InputError, check_writable, read_instance, read_plan
    from scheduler.verify import verify

    try:
        require_matplotlib()
    except MissingExtra as error:
        warn(f"error: {error}")
        return EXIT_FAILED
    if Path(args.instance).is_dir():
        return _report_scenario(args)
    if args.plan is None:
        raise InputError("arguments", ["report: give INSTANCE PLAN, or a folder written by 'eastwest scenario'"])
    check_writable(args.output, protect=(args.instance, args.plan))
    instance = read_instance(args.instance)
    plan = read_plan(args.plan)
    check_plan_matches(instance, plan, args.plan)
    verification = verify(instance, plan)
    write_html_report(instance, plan, args.output, protect=(args.instance, args.plan),
                      verification=verification, pool_group=args.pool_group)
    if not verification.ok:
        warn(f"the plan fails verification ({len(verification.violations)} violation(s): "
             f"eastwest verify lists them); the report says so")
        return EXIT_FAILED
    say(f"report written to {args.output}")
    return EXIT_OK


def _report_scenario(args: argparse.Namespace) -> int:
    """`eastwest report DIR -o FILE`: the years of a scenario's folder side by side."""
    from scheduler.io import InputError, check_writable
    from scheduler.scenario_report import write_scenario_report

    if args.plan is not None:
        raise InputError("arguments", [f"report: '{args.instance}' is a folder (a scenario's output); "
                                       "give no plan with it"])
    folder = Path(args.instance)
    check_writable(args.output, protect=tuple(folder.glob("*.json")))
    years = write_scenario_report(folder, args.output)
    bad = [y for y in years if not y.verification.ok]
    if bad:
        warn(f"the plans of {', '.join(str(y.summary.year) for y in bad)} fail verification "
             f"(eastwest verify lists the violations); the report says so")
        return EXIT_FAILED
    say(f"report of {len(years)} year(s) written to {args.output}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from models import RULES
    from scheduler.compile import ELIGIBLE, compile_options
    from scheduler.io import read_instance

    instance = read_instance(args.instance)
    if instance.timed:
        return _validate_timed(instance)
    options = compile_options(instance)
    no_option = Counter(
        RULES[int(r)].value for r in options.nearest_miss if r != ELIGIBLE
    )
    must_without = int((options.must_serve & (options.nearest_miss != ELIGIBLE)).sum())
    say(f"ok: instance '{instance.name}' is valid")
    say(f"  {len(instance.regions):,} regions, {len(instance.links):,} links, "
          f"{len(instance.pools()):,} pools, {len(instance.demands):,} demands, "
          f"{len(instance.offers):,} offers, {options.n_options:,} eligible options")
    if no_option:
        say("  demands with no eligible option, by nearest miss: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(no_option.items())))
    if must_without:
        say(f"  warning: {must_without:,} must-serve demand(s) have no eligible option; "
              "the instance is infeasible")
    return EXIT_OK


def _validate_timed(instance) -> int:
    """`validate` for a horizon instance: the time-expanded options of formulation §8."""
    import numpy as np

    from models import RULES
    from scheduler.compile import ELIGIBLE
    from scheduler.timed import compile_timed

    problem = compile_timed(instance)  # RangeError (exit 2) names what no plan can get around
    b, sv = problem.batch, problem.services
    starts = int((b.last - b.first + 1).sum())
    say(f"ok: instance '{instance.name}' is valid")
    say(f"  {len(instance.regions):,} regions, {len(instance.links):,} links, "
        f"{len(instance.pools()):,} pools, {b.n_demands:,} batch jobs, {sv.n_services:,} services, "
        f"{problem.slots:,} slots of {problem.slot_hours:g} h")
    say(f"  {b.n_options:,} eligible (job, pool) options with {starts:,} allowed starts, "
        f"{sv.n_options:,} eligible (service, pool) pairs")
    misses = Counter(RULES[int(r)].value for r in b.nearest_miss[np.diff(b.start) == 0])
    misses.update(RULES[int(r)].value for r in sv.nearest_miss[np.diff(sv.start) == 0])
    if misses:
        say("  demands with no eligible option, by nearest miss: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(misses.items())))
    must_without = int((b.must_serve & (b.nearest_miss != ELIGIBLE)).sum())
    if must_without:
        say(f"  warning: {must_without:,} must-serve demand(s) have no eligible option; "
            "the instance is infeasible")
    return EXIT_OK


def _solve_overrides(args: argparse.Namespace, params):
    """The file's solve parameters with the command line's --params, --time-limit, --engine and
    --workers over them."""
    from pydantic import ValidationError

    from scheduler.io import InputError, read_params
    from scheduler.params import SolveParams

    if args.params:
        params = read_params(args.params)
    overrides = {"time_limit_s": args.time_limit, "engine": args.engine, "workers": args.workers}
    try:
        return SolveParams.model_validate(
            params.model_dump() | {k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        raise InputError("arguments", [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]) from None


def _run_outcome(summaries, interrupted: bool, out) -> int:
    """The exit code of a scenario or sweep: 130 interrupted, 1 a plan failed verification,
    3 a year had no plan meeting the hard constraints, else 0."""
    if interrupted:
        warn(f"interrupted: the {len(summaries)} finished solve(s) are kept in {out}")
        return EXIT_INTERRUPTED
    if any(not s.verified for s in summaries):
        warn("error: a plan failed independent verification (a bug in eastwest: please report it)")
        return EXIT_FAILED
    if any(s.status in ("infeasible", "unknown") for s in summaries):
        warn("error: in some year the must-serve demands could not all be served; see summary.txt")
        return EXIT_INFEASIBLE
    return EXIT_OK


def cmd_scenario(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from scheduler.scenario import ScenarioRun, prepare_output, read_scenario, tables

    spec, base, params = read_scenario(args.spec)
    params = _solve_overrides(args, params)
    if spec.expansion is not None and args.time_limit is not None:  # seconds per year
        if not 0 < args.time_limit <= 24 * 3600:
            from scheduler.io import InputError

            raise InputError("arguments", [f"--time-limit: {args.time_limit:g} must be above 0 and at "
                                           "most 86,400 s with 'expansion'"])
        spec = spec.model_copy(update={"expansion": spec.expansion.model_copy(
            update={"year_time_limit_s": args.time_limit})})
    out = prepare_output(args.output, "eastwest-scenario", force=args.force)
    bar = TaskBar("years", live=sys.stderr.isatty(), quiet=args.quiet)
    run = ScenarioRun(spec, args.spec, base, params, out, write_instances=args.instances,
                      on_event=bar, stop=interrupts.stop)
    try:
        done = run.run()
    finally:
        bar.close()
    if not args.quiet and done:
        say(tables(done, complete=not run.interrupted))
        say(f"\nwritten to {out}")
    return _run_outcome(done, run.interrupted, out)


def cmd_sweep(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from scheduler.sweep import SweepRun, sweep_table

    bar = TaskBar("solves", live=sys.stderr.isatty(), quiet=args.quiet)
    run = SweepRun(args.spec, args.output, backend=args.backend, workers=args.workers,
                   address=args.address, force=args.force, on_event=bar, stop=interrupts.stop)
    try:
        summary = run.run()
    finally:
        bar.close()
    if not args.quiet:
        say(sweep_table(summary))
        say(f"\nwritten to {run.out}")
    return _run_outcome([y for p in summary.points for y in p.years], run.interrupted, run.out)


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from models import Instance, Plan
    from scheduler.io import write_text
    from scheduler.params import SolveParams

    from models.expansion import CandidateSet, ExpansionResult
    from models.scenario import Scenario, ScenarioSummary, Sweep, SweepSummary
    from scheduler.scenario import spec_schema

    if args.kind in ("scenario", "sweep"):
        schema = spec_schema({"scenario": Scenario, "sweep": Sweep}[args.kind])
    else:
        schema = {"instance": Instance, "plan": Plan, "params": SolveParams,
                  "scenario-summary": ScenarioSummary, "sweep-summary": SweepSummary,
                  "candidates": CandidateSet, "expansion": ExpansionResult,
                  }[args.kind].model_json_schema()
    text = json.dumps(schema, indent=2)
    if args.output:
        write_text(text, args.output)
    else:
        say(text)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from scheduler.generate import china_instance
    from scheduler.io import write_instance

    if args.hours is None and args.carbon_cap is not None:
        warn("error: generate: --carbon-cap needs --hours (a carbon cap needs a horizon)")
        return EXIT_INPUT
    if args.hours is None:
        instance = china_instance(demands=args.demands, seed=args.seed)
    else:
        instance = china_instance(demands=args.demands, seed=args.seed, hours=args.hours,
                                  carbon_cap_t_co2=args.carbon_cap)
    write_instance(instance, args.output)
    say(f"wrote {args.output}: {len(instance.regions)} regions, {len(instance.pools())} pools, "
          f"{len(instance.demands):,} demands")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from scheduler.gap import GapFormatError, convert_gap_file
    from scheduler.io import InputError

    try:
        written = convert_gap_file(args.file, args.output, maximize=args.maximize)
    except GapFormatError as error:
        raise InputError(args.file, [str(error)]) from None
    for path in written:
        say(path)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from scheduler.explain.command import run

    return run(args)


def cmd_replan(args: argparse.Namespace) -> int:
    """Re-plan a plan after events; all the work is in scheduler.replan."""
    from pydantic import ValidationError

    from models import Status
    from scheduler.io import InputError, check_writable, read_demands, read_instance, read_plan
    from scheduler.io import write_instance, write_plan, write_text
    from scheduler.params import SolveParams
    from scheduler.replan import Events, ReplanError, change_report, parse_capacity, parse_outage, replan
    from scheduler.solve import VerificationError

    inputs = (args.instance, args.plan, *args.add)
    for out in (args.output, args.instance_out, args.change_out):
        if out is not None:
            check_writable(out, protect=inputs)
    outs = [o for o in (args.output, args.instance_out, args.change_out) if o is not None]
    if len({os.path.realpath(o) for o in outs}) < len(outs):
        raise InputError("arguments", ["-o, --instance-out and --change-out must be different files"])
    instance = read_instance(args.instance)
    plan = read_plan(args.plan)
    added = [read_demands(path) for path in args.add]
    try:
        events = Events(
            outages=tuple(parse_outage(text) for text in args.outage),
            capacity=tuple(parse_capacity(text) for text in args.capacity),
            add=tuple(d for f in added for d in f.demands),
            add_offers=tuple(o for f in added for o in f.offers),
            cancel=tuple(i for text in args.cancel for i in text.split(",") if i),
        )
        params = SolveParams(time_limit_s=args.time_limit, seed=args.seed, engine=args.engine)
        # The limit covers the whole command, as for solve: reading counts against it.
        limit, read_s = params.time_limit_s, elapsed()
        if limit - read_s <= 0:
            warn(f"note: reading took {read_s:.1f} s of the {limit:g} s limit; the plan will be late")

        def late(report) -> None:
            if report.message.startswith("late: ") and limit - read_s > 0:
                warn(f"note: {report.message.removeprefix('late: ')} left after reading "
                     f"({read_s:.1f} s) of the {limit:g} s limit; the plan will be late")

        params = params.model_copy(update={"time_limit_s": max(limit - read_s, 0.05)})
        result = replan(instance, plan, now_slot=args.now, events=events,
                        migration_cost_cny=args.migration_cost,
                        disruption_cost_cny=args.disruption_cost, params=params, on_progress=late)
    except ReplanError as error:
        where = {"plan": args.plan, "instance": args.instance,
                 "add": ", ".join(args.add) or "arguments"}.get(error.where, "arguments")
        raise InputError(where, error.problems) from None
    except ValidationError as error:
        raise InputError("arguments", [
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]) from None
    except VerificationError as error:
        _print_violations(error.result.verification.violations)
        warn("error: the re-plan failed independent verification; nothing was written (a bug in "
             "eastwest: please report it with the instance and the plan)")
        return EXIT_FAILED
    stats = result.plan.stats.model_copy(update={"time_limit_s": limit})
    write_plan(result.plan.model_copy(update={"stats": stats}), args.output, protect=inputs)
    if args.instance_out:
        write_instance(result.instance, args.instance_out, protect=inputs)
    if args.change_out:
        write_text(result.change.model_dump_json(indent=1), args.change_out, protect=inputs)
    took = elapsed()
    if took > limit * LATE_FACTOR + LATE_SLACK_S:
        warn(f"note: the re-plan took {took:.1f} s in all, against the {limit:g} s limit")
    if not args.quiet:
        say(change_report(result, limit=args.show, width=_terminal().get("width")))
        say(f"\nplan written to {args.output} (verified against the modified instance"
            + (f", written to {args.instance_out})" if args.instance_out else ")"))
    if result.plan.status in (Status.INFEASIBLE, Status.UNKNOWN):
        warn(f"error: no plan serves every must-serve demand after the events; see {args.output}")
        return EXIT_INFEASIBLE
    return EXIT_OK


def cmd_expand(args: argparse.Namespace, interrupts: Interrupts) -> int:
    from scheduler.expansion import run_expand_command

    return run_expand_command(args, say=say, warn=warn, progress=sys.stderr.isatty() and not args.quiet,
                              stop=interrupts.stop)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _slot_count(text: str) -> int:
    from models import MAX_SLOTS

    value = int(text)
    if not 1 <= value <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SLOTS}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (0 <= value <= 1e15):
        raise argparse.ArgumentTypeError("must be a number between 0 and 1e15")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="eastwest",
        description="Match compute demand to compute supply across regions, with a proven bound.",
        epilog="exit codes: 0 ok, 1 verification failed or internal error, 2 invalid input, "
        "3 hard constraints cannot be met, 130 interrupted",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="solve an instance and write a verified plan")
    p.add_argument("instance")
    p.add_argument("-o", "--output", required=True, help="plan file to write (JSON)")
    p.add_argument("--time-limit", type=float, help="seconds (default 60)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="parallel workers (default: engine's choice)")
    p.add_argument("--engine", choices=["auto", "exact", "large"])
    p.add_argument("--gap-limit", type=float, help="stop at this relative gap (e.g. 0.001)")
    p.add_argument("--params", help="SolveParams file (JSON/YAML); flags override it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line, no summary")
    p.add_argument("--progress", action="store_true",
                   help="one 'progress: ...' line on stderr per step and per new incumbent or "
                   "bound, also when stderr is not a terminal (for scripts and tests)")
    p.set_defaults(run=cmd_solve)

    p = sub.add_parser("verify", help="check a plan against an instance, independently")
    p.add_argument("instance")
    p.add_argument("plan")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("show", help="print a plan's summary, or one demand over time")
    p.add_argument("plan")
    p.add_argument("--instance", required=True, help="the instance the plan answers")
    p.add_argument("--pool-group", choices=["hub", "region", "accelerator"],
                   help="group the GPU chart by hub (default where regions name hubs), region or "
                   "accelerator")
    p.add_argument("--demand", metavar="ID",
                   help="one demand: a batch job's window, pool and run, a service's replicas per pool")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("report", help="write a plan's report (or a scenario folder's years side by "
                       "side): one self-contained HTML page with maps")
    p.add_argument("instance", help="instance file, or a folder written by 'eastwest scenario'")
    p.add_argument("plan", nargs="?", help="plan file (not with a folder)")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--pool-group", choices=["hub", "region", "accelerator"],
                   help="group the utilization chart by hub (default where regions name hubs), "
                   "region or accelerator")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("validate", help="check an instance file and count its options")
    p.add_argument("instance")
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of a file format")
    p.add_argument("kind", choices=SCHEMA_KINDS)
    p.add_argument("-o", "--output")
    p.set_defaults(run=cmd_schema)

    p = sub.add_parser("generate", help="generate a synthetic instance")
    p.add_argument("family", choices=["china"])
    p.add_argument("--demands", type=_positive_int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hours", type=_slot_count, default=None,
                   help="a horizon of this many one-hour slots from Monday 2025-06-02 00:00 Beijing time "
                   "(time-of-use prices, hourly carbon, outages, batch windows, services)")
    p.add_argument("--carbon-cap", type=_non_negative_float, default=None, metavar="T_CO2",
                   help="with --hours: the most tCO2 the plan may emit (default: no cap)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("convert", help="convert literature files to native instances")
    p.add_argument("format", choices=["gap"])
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="folder for <stem>-<k>.json")
    p.add_argument("--maximize", action="store_true",
                   help="OR-Library gap1-12 published maxima: convert profit to cost")
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("scenario", help="solve a growth scenario year by year into a folder")
    p.add_argument("spec", help="scenario file (JSON/YAML, docs/schema/scenario.schema.json)")
    p.add_argument("-o", "--output", required=True, help="folder for the plans and summary")
    p.add_argument("--time-limit", type=float, help="seconds per year (default: the file's, else 60)")
    p.add_argument("--engine", choices=["auto", "exact", "large"])
    p.add_argument("--workers", type=int, help="parallel workers per solve")
    p.add_argument("--params", help="SolveParams file (JSON/YAML) replacing the file's 'solve'")
    p.add_argument("--instances", action="store_true", help="also write each year's instance")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a previous scenario output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no tables")
    p.set_defaults(run=cmd_scenario)

    p = sub.add_parser("sweep", help="run a scenario over a grid of variants, locally or on Ray")
    p.add_argument("spec", help="sweep file (JSON/YAML, docs/schema/sweep.schema.json)")
    p.add_argument("-o", "--output", required=True, help="folder for the summary (and plans)")
    p.add_argument("--backend", choices=["local", "ray", "serial"], default="local",
                   help="local processes (default), Ray (needs eastwest[ray]), or this process")
    p.add_argument("--address", help="Ray: an existing cluster's address (default: start a local Ray)")
    p.add_argument("--workers", type=_positive_int,
                   help="solves at a time (default: the cores, at most 8); each solve uses one")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a previous sweep output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no tables")
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("expand", help="choose capacity builds over the years (docs/expansion.md)")
    p.add_argument("instance", help="base instance (one window), the first year's demand")
    p.add_argument("candidates", help="candidate builds file (docs/schema/candidates.schema.json)")
    p.add_argument("--years", required=True, help="e.g. 2026-2030, or one year")
    p.add_argument("--growth", type=float, default=0.0,
                   help="uniform yearly growth of every demand's work, e.g. 0.4 (default 0)")
    p.add_argument("--time-limit", type=float, help="seconds for the whole run (default 120)")
    p.add_argument("--year-time-limit", type=float, help="seconds per yearly solve (default 10)")
    p.add_argument("--no-savings", action="store_true", help="skip re-solving without each build")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no table")
    p.add_argument("-o", "--output", required=True, help="folder for the result and each year's plan")
    p.set_defaults(run=cmd_expand)

    p = sub.add_parser("replan", help="re-plan a plan from a slot on after outages, capacity "
                       "changes, new and cancelled demands")
    p.add_argument("instance")
    p.add_argument("plan", help="the plan to re-plan (never changed)")
    p.add_argument("--now", type=int, required=True, metavar="SLOT",
                   help="first slot the new plan may change; jobs started before it stay put")
    p.add_argument("--outage", action="append", default=[], metavar="ID@FROM-TO",
                   help="a region, pool or link (SOURCE-TARGET) out over slots FROM..TO-1 (repeatable)")
    p.add_argument("--capacity", action="append", default=[], metavar="POOL=GPUS",
                   help="a pool's GPU count from now on (repeatable)")
    p.add_argument("--add", action="append", default=[], metavar="DEMANDS.json",
                   help="a file of demands to add ({\"demands\": [...], \"offers\": [...]}; repeatable)")
    p.add_argument("--cancel", action="append", default=[], metavar="ID[,ID...]",
                   help="demands to cancel (repeatable)")
    p.add_argument("--migration-cost", type=_non_negative_float, default=100.0, metavar="CNY",
                   help="objective cost of each job of the old plan that moves to another pool or "
                   "start (plus re-sending data already sent; default 100)")
    p.add_argument("--disruption-cost", type=_non_negative_float, default=None, metavar="CNY",
                   help="added to the move cost of a job no event displaced, so that such a job "
                   "moves only when that saves more than both (default: the job's own cost in the "
                   "old plan, which in practice moves it only to make room for displaced or new "
                   "work; 0: no extra cost)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["auto", "exact", "large"], default="auto")
    p.add_argument("-o", "--output", required=True, help="the new plan (JSON)")
    p.add_argument("--instance-out", metavar="FILE",
                   help="write the modified instance (the one the new plan is verified against)")
    p.add_argument("--change-out", metavar="FILE", help="write the change (JSON)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="changes listed (default 20)")
    p.add_argument("-q", "--quiet", action="store_true", help="no table")
    p.set_defaults(run=cmd_replan)

    _explain_parser(sub)
    return top


def _explain_parser(sub) -> None:
    """explain: its handler is `scheduler.explain.command.run`."""
    p = sub.add_parser("explain", help="why a demand is (not) served; a pool's, region's or link's use "
                       "and shadow prices")
    p.add_argument("instance")
    p.add_argument("plan", help="the plan file (a demand id instead: which rule rejects each pool, "
                   "without a plan)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--demand", metavar="ID", help="why this demand is served where it is, or not")
    which.add_argument("--pool", metavar="ID", help="the pool's use over time, what fills it, its shadow prices")
    which.add_argument("--region", metavar="ID", help="the same for each pool of a region")
    which.add_argument("--link", metavar="A-B", help="the link's load and the value of more bandwidth")
    p.add_argument("--json", action="store_true", help="the explanation as JSON")
    p.set_defaults(run=cmd_explain)


def main(argv: list[str] | None = None, *, early_signals: list[int] | None = None) -> int:
    """Run the command; ``early_signals``: signals `python -m scheduler` caught before this."""
    global _command_started, _clock_used
    if _clock_used:  # a second command in the same process (tests): its own clock
        _command_started = time.perf_counter()
    _clock_used = True
    interrupts = Interrupts()
    interrupts.install()  # first thing: a signal from here on is handled
    if early_signals:
        interrupts.received.extend(early_signals)
        interrupts.stop.set()
        interrupts.wake.set()
    try:
        args = parser().parse_args(argv)
        code = _run(args, interrupts)
    finally:
        interrupts.restore()
    if argv is None:  # the real command: leave now, even with the worker thread still busy
        _exit(code)
    return code


def _exit(code: int) -> None:
    """Flush and end the process without tearing down the interpreter: a worker thread that
    was given up on may be inside a C call (tearing down under it can abort the process), and
    freeing a large instance object by object at exit takes a while."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


_command_started = STARTED
_clock_used = False


def _run(args: argparse.Namespace, interrupts: Interrupts) -> int:
    """Run the command in a worker thread; the main thread waits for it or for a signal."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["code"] = (args.run(args, interrupts) if args.command in ("solve", *LONG_RUNS)
                               else args.run(args))
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error
        finally:
            done.set()
            interrupts.wake.set()

    threading.Thread(target=work, name="eastwest-command", daemon=True).start()
    told = 0
    while not done.is_set():
        interrupts.wake.wait(0.1)  # an Event, not Thread.join: a signal is handled at once
        interrupts.wake.clear()
        if len(interrupts.received) == told or done.is_set():
            continue
        told = len(interrupts.received)
        name = signal.Signals(interrupts.received[-1]).name
        if interrupts.progress_lines:
            warn(f"progress: {elapsed():.2f} s signal {name}")
        if args.command in LONG_RUNS:
            if told == 1:
                warn(f"\ninterrupted ({name}): stopping; what is finished is kept in {args.output} "
                     "(interrupt again to exit at once)")
                continue
            warn(f"interrupted again ({name}): exiting")
            return EXIT_INTERRUPTED
        if args.command != "solve":
            warn(f"\ninterrupted ({name})")
            return EXIT_INTERRUPTED
        if not interrupts.plan_exists and interrupts.abandon():
            warn(f"\ninterrupted ({name}) while {interrupts.phase}: no plan was written")
            return EXIT_INTERRUPTED
        if told == 1:
            warn(f"\ninterrupted ({name}): stopping the search and writing the best plan so far "
                 "(interrupt again to exit without writing it)")
        elif interrupts.abandon():
            warn(f"interrupted again ({name}): exiting without writing {args.output}")
            return EXIT_INTERRUPTED
        else:
            warn(f"interrupted again ({name}): {args.output} is being written; finishing that")
    error = outcome.get("error")
    if error is None:
        return outcome["code"]  # type: ignore[return-value]
    return _failure(error, getattr(args, "instance", None) or getattr(args, "spec", "instance"))


def _failure(error: BaseException, where: str) -> int:
    """The exit code and one line for an error the command raised about the file ``where``."""
    from scheduler.compile import RangeError
    from scheduler.io import InputError

    if isinstance(error, InputError):
        warn(f"error: {error}")
        return EXIT_INPUT
    if isinstance(error, RangeError):  # outside what the engines represent (formulation section 7)
        warn(f"error: {where}: " + str(error).replace("\n", f"\n{where}: "))
        return EXIT_INPUT
    if isinstance(error, KeyboardInterrupt):
        warn("\ninterrupted")
        return EXIT_INTERRUPTED
    if isinstance(error, SystemExit):
        raise error
    if os.environ.get("EASTWEST_DEBUG") or not isinstance(error, Exception):
        raise error  # no traceback for users; EASTWEST_DEBUG=1 shows it
    warn(f"internal error: {type(error).__name__}: {error}")
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
