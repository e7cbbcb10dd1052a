"""The `eastwest` command: a thin layer that wires library calls to files and the terminal.

Exit codes: 0 a plan was produced (unserved demands allowed) or a check passed; 1 verification
failed or an internal error; 2 invalid input or arguments; 3 the hard constraints cannot be met
(or no plan was found in time); 130 interrupted (the best plan so far is still written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter

from pydantic import ValidationError

from models import Instance, Plan, Status
from scheduler.compile import RangeError
from scheduler.io import (
    InputError,
    check_writable,
    read_instance,
    read_params,
    read_plan,
    write_instance,
    write_plan,
    write_text,
)
from scheduler.params import Progress, Result, SolveParams
from scheduler.report import money, percent, summary, table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130


def say(*parts: object) -> None:
    """print() to stdout that survives a closed pipe (`eastwest solve ... | head`)."""
    try:
        print(*parts)
    except BrokenPipeError:
        # Point stdout at nowhere so the interpreter's final flush cannot fail either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class ProgressLine:
    """A live status line on stderr (only when stderr is a terminal), a few updates a second."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last = 0.0
        self.objective: float | None = None
        self.bound: float | None = None
        self.lock = threading.Lock()

    def __call__(self, progress: Progress) -> None:
        with self.lock:
            if progress.objective is not None:
                self.objective = progress.objective
            if progress.bound is not None:
                self.bound = max(self.bound or progress.bound, progress.bound)
            now = time.monotonic()
            if not self.enabled or now - self.last < 0.2:
                return
            self.last = now
            gap = None
            if self.objective is not None and self.bound is not None:
                gap = max(0.0, self.objective - self.bound) / max(abs(self.objective), 1.0)
            line = (
                f"{progress.elapsed_s:7.1f} s  {progress.engine}  incumbent {money(self.objective)}"
                f"  bound {money(self.bound)}  gap {percent(gap, 3)}"
            )
            sys.stderr.write("\r" + line.ljust(100)[:120])
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_solve(args: argparse.Namespace) -> int:
    from scheduler.solve import VerificationError, solve

    instance = read_instance(args.instance)
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

    progress = ProgressLine(enabled=sys.stderr.isatty() and not args.quiet)
    stop = threading.Event()
    outcome: dict[str, object] = {}

    finished = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = solve(instance, params, on_progress=progress, stop=stop)
        except BaseException as error:  # handed to the main thread
            outcome["error"] = error
        finally:
            finished.set()

    worker = threading.Thread(target=run, name="eastwest-solve", daemon=True)
    worker.start()
    interrupted = False
    while not finished.is_set():
        try:
            finished.wait(0.1)  # an Event, not Thread.join: Ctrl-C may safely interrupt it
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            sys.stderr.write("\ninterrupted: stopping the search and writing the best plan so far\n")
    worker.join()
    progress.close()
    error = outcome.get("error")
    if isinstance(error, VerificationError):
        _print_violations(error.result.verification.violations)
        print("error: the plan failed independent verification; nothing was written (a bug in "
              "eastwest: please report it with the instance)", file=sys.stderr)
        return EXIT_FAILED
    if error is not None:
        raise error  # type: ignore[misc]
    result: Result = outcome["result"]  # type: ignore[assignment]
    write_plan(result.plan, args.output, protect=(args.instance, args.params))
    if not args.quiet:
        say(summary(instance, result.plan, result.verification))
        say(f"\nplan written to {args.output}")
    if interrupted:
        return EXIT_INTERRUPTED
    if result.plan.status in (Status.INFEASIBLE, Status.UNKNOWN):
        why = ("the must-serve demands cannot all be served" if result.plan.status == Status.INFEASIBLE
               else "no plan serving every must-serve demand was found in the time limit "
                    "(infeasibility not proven)")
        print(f"error: {why}; see the unserved reasons in {args.output}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return EXIT_OK


def _print_violations(violations) -> None:
    rows = [[v.code, v.subject, f"{v.amount:g}", v.message] for v in violations[:50]]
    say(table(["violation", "subject", "amount", "message"], rows))
    if len(violations) > 50:
        say(f"... and {len(violations) - 50} more")


def cmd_verify(args: argparse.Namespace) -> int:
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
        return EXIT_OK
    _print_violations(verification.violations)
    say(f"\nfailed: {len(verification.violations)} violation(s)")
    return EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    from scheduler.compile import ELIGIBLE, compile_options
    from models import RULES

    instance = read_instance(args.instance)
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


def cmd_schema(args: argparse.Namespace) -> int:
    model = {"instance": Instance, "plan": Plan, "params": SolveParams}[args.kind]
    text = json.dumps(model.model_json_schema(), indent=2)
    if args.output:
        write_text(text, args.output)
    else:
        say(text)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from scheduler.generate import china_instance

    instance = china_instance(demands=args.demands, seed=args.seed)
    write_instance(instance, args.output)
    say(f"wrote {args.output}: {len(instance.regions)} regions, {len(instance.pools())} pools, "
          f"{len(instance.demands):,} demands")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from scheduler.gap import GapFormatError, convert_gap_file

    try:
        written = convert_gap_file(args.file, args.output, maximize=args.maximize)
    except GapFormatError as error:
        raise InputError(args.file, [str(error)]) from None
    for path in written:
        say(path)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from scheduler.compile import rejections

    instance = read_instance(args.instance)
    if args.demand not in {d.id for d in instance.demands}:
        raise InputError(args.instance, [f"demand '{args.demand}': no such demand"])
    rows = [[region, pool, "eligible" if rule is None else f"rejected: {rule.value}"]
            for region, pool, rule in rejections(instance, args.demand)]
    say(table(["region", "pool", "verdict"], rows))
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
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
    p.set_defaults(run=cmd_solve)

    p = sub.add_parser("verify", help="check a plan against an instance, independently")
    p.add_argument("instance")
    p.add_argument("plan")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("validate", help="check an instance file and count its options")
    p.add_argument("instance")
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of a file format")
    p.add_argument("kind", choices=["instance", "plan", "params"])
    p.add_argument("-o", "--output")
    p.set_defaults(run=cmd_schema)

    p = sub.add_parser("generate", help="generate a synthetic instance")
    p.add_argument("family", choices=["china"])
    p.add_argument("--demands", type=_positive_int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("convert", help="convert literature files to native instances")
    p.add_argument("format", choices=["gap"])
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="folder for <stem>-<k>.json")
    p.add_argument("--maximize", action="store_true",
                   help="OR-Library gap1-12 published maxima: convert profit to cost")
    p.set_defaults(run=cmd_convert)

    p = sub.add_parser("explain", help="show which rule rejects each pool for one demand")
    p.add_argument("instance")
    p.add_argument("demand")
    p.set_defaults(run=cmd_explain)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except RangeError as error:  # outside what the engines represent (formulation section 7)
        where = getattr(args, "instance", "instance")
        print(f"error: {where}: " + str(error).replace("\n", f"\n{where}: "), file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # no traceback for users; EASTWEST_DEBUG=1 shows it
        if os.environ.get("EASTWEST_DEBUG"):
            raise
        print(f"internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
