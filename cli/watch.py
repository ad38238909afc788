"""`drillbook watch`: is replication still running? Between nightlies, per database: replica listing and newest header, no restore.

Exit codes: 0 every database replicating or idle, 1 some replication stopped
(or a replica could not be read), 2 the catalogue or the history store is not
usable (one line saying which).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.outcome import EXIT_CODES, Verdict

EXIT_FAIL = EXIT_CODES[Verdict.FAIL]
_MARK = {"stopped": "STOPPED", "unreadable": "UNREAD ", "unknown": "?      ", "idle": "idle   ", "replicating": "ok     "}


def cmd_watch(args: argparse.Namespace) -> int:
    from drillbook.tasks.watch import Replication, watch_databases

    catalogue = load_catalogue(args.config)
    for name in args.names:
        catalogue.get(name)  # an unknown name is a config error (exit 2), as in `run`
    if args.notify:
        from drillbook.flows.watch import check_replication

        statuses = check_replication(catalogue, args.names or None, say=lambda line: None if args.json else print(line))
    else:
        statuses = watch_databases(catalogue, args.names or None)
    bad = [s for s in statuses if s.replication in (Replication.STOPPED, Replication.UNREADABLE) or s.forks]
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2))
    else:
        stopped = sum(s.stopped for s in statuses)
        forked = sum(bool(s.forks) for s in statuses)
        print(f"{stopped} of {len(statuses)} database(s) stopped replicating" + (f", {forked} with two writers" if forked else ""))
        for status in statuses:
            print(f"  {_MARK[status.replication.value]} {status.line()}")
    return EXIT_FAIL if bad else 0


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    watch = commands.add_parser(
        "watch",
        help="check that replication still runs: replica listing and newest change only, no restore (exit 1 when stopped)",
        description=(
            "Per database: the replica's newest change and its lag (one storage listing, one header read). With live_path "
            "readable here and freshness_query set, the live database (read-only) tells an idle database from a stopped replication."
        ),
        epilog="Exit codes: 0 all replicating or idle, 1 replication stopped, a replica not readable or two writers on one, "
        "2 the catalogue or history is not usable.",
    )
    watch.add_argument("names", nargs="*", metavar="NAME", help="only these databases (default: all)")
    config_option(watch)
    watch.add_argument("--json", action="store_true", help="print every database's status as JSON")
    watch.add_argument("--notify", action="store_true", help="post one Slack alert per database whose replication stopped (or resumed)")
    watch.set_defaults(func=cmd_watch)
