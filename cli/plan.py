"""`drillbook plan NAME`: what a restore would fetch and how long it should take, before running it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.outcome import EXIT_CODES, Verdict

EXIT_FAIL = EXIT_CODES[Verdict.FAIL]


def cmd_plan(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.store import trend_points
    from drillbook.tasks.lookahead import plan_restore
    from drillbook.tasks.outcome import Status
    from drillbook.tasks.plan import plan_errors

    catalogue = load_catalogue(args.config)
    entry = catalogue.get(args.name)
    if args.litestream:
        plan = plan_restore(entry, catalogue.history_url, litestream=True)
    else:
        from drillbook.tasks.replica import inspect_replica  # boto3: off the path of the other commands

        replica = inspect_replica(entry)
        plan = plan_restore(entry, catalogue.history_url, replica)
        if not replica.ok:  # the plan says why: the inspection's own words (no backup, object storage failure, ...)
            plan = plan.model_copy(update={"status": replica.status, "summary": f"not planned: {replica.summary}"})
    errors = plan_errors(trend_points(catalogue.history_url, [entry.name]).get(entry.name, []))
    if args.json:
        data = plan.model_dump(mode="json", exclude={"command"})
        data["past_plan_errors"] = [round(e, 4) for e in errors[-10:]]
        print(json.dumps(data, indent=2))
    else:
        print(f"{entry.name}: {plan.line()} (RTO target {entry.rto_target:g}s); nothing was restored")
        if plan.status == Status.PASSED:
            print(
                f"  LTX files per level: {', '.join(f'L{k}: {v}' for k, v in sorted(plan.levels.items())) or 'none'}; TXID {plan.min_txid} - {plan.max_txid}"
            )
        if errors:
            recent = errors[-10:]
            print(f"  past plans vs measured (last {len(recent)}): " + ", ".join(f"{e:+.0%}" for e in recent))
    if plan.status == Status.ERROR:
        raise DrillbookError(plan.summary)
    return 0 if plan.status == Status.PASSED else EXIT_FAIL


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    plan = commands.add_parser(
        "plan",
        help="what a restore would fetch and its expected RTO, without restoring",
        description="Plans from the replica's listing as litestream does (or asks `litestream restore -dry-run -json` with --litestream), and the throughput of past drills (this database's, else the fleet's) to predict the RTO.",
        epilog="Exit codes: 0 planned, 1 the replica gave no plan, 2 drillbook could not ask (litestream missing, bad catalogue).",
    )
    plan.add_argument("name", help="the database's name in the catalogue")
    config_option(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--litestream", action="store_true", help="ask litestream itself (`restore -dry-run -json`) instead of planning from the listing"
    )
    plan.set_defaults(func=cmd_plan)
