"""`eastwest explain INSTANCE PLAN [--demand ID | --pool ID | --region ID | --link A-B] [--json]`
(the arguments are in `scheduler.cli`, which stays light)."""

from __future__ import annotations

import argparse
import os


def run(args: argparse.Namespace) -> int:
    from scheduler.cli import EXIT_OK, say
    from scheduler.explain import UnknownName, explain, render
    from scheduler.io import InputError, read_instance, read_plan
    from scheduler.verify import verify

    instance = read_instance(args.instance)
    selected = any(getattr(args, k) is not None for k in ("demand", "pool", "region", "link"))
    if not os.path.exists(args.plan) and not selected and args.plan in {d.id for d in instance.demands}:
        return _rules_only(instance, args.plan)
    plan = read_plan(args.plan)
    verification = verify(instance, plan)
    if not verification.ok:
        shown = [f"does not belong to instance '{instance.name}' ({args.instance}): "
                 f"{v.code} at {v.subject}: {v.message}" for v in verification.violations[:5]]
        more = len(verification.violations) - len(shown)
        raise InputError(args.plan, shown + ([f"(and {more} more)"] if more > 0 else []))
    try:
        answer = explain(instance, plan, demand=args.demand, pool=args.pool, region=args.region, link=args.link)
    except UnknownName as error:
        raise InputError(args.instance, [str(error)]) from None
    if args.json:
        say(answer.model_dump_json(indent=1))
    else:
        from scheduler.cli import _terminal

        say(render(answer, width=_terminal()["width"]))
    return EXIT_OK


def _rules_only(instance, demand_id: str) -> int:
    """The former `explain INSTANCE DEMAND`: per pool, the first rule that rejects it."""
    from scheduler.cli import EXIT_OK, say
    from scheduler.compile import rejections
    from scheduler.report import table

    rows = [[region, pool, "eligible" if rule is None else f"rejected: {rule.value}"]
            for region, pool, rule in rejections(instance, demand_id)]
    say(table(["region", "pool", "verdict"], rows))
    return EXIT_OK
