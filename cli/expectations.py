"""`drillbook expectations suggest`: a starter suite from what a database holds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillbook.tasks.config import load_catalogue


def cmd_expectations_suggest(args: argparse.Namespace) -> int:
    from drillbook.tasks.expectations import expectations_dir
    from drillbook.tasks.suggest import suggest_from_replica, suggest_suite, write_suite

    if args.db:
        suite = suggest_suite(args.db, args.name)
        default_dir = Path.cwd() / "expectations"
    else:
        catalogue = load_catalogue(args.config)
        entry = catalogue.get(args.name)
        print(f"restoring {entry.name} from {entry.replica_redacted} into scratch to read its schema ...", file=sys.stderr)
        suite = suggest_from_replica(entry, catalogue.scratch_dir)
        default_dir = expectations_dir(catalogue)
    if args.output == "-":
        print(json.dumps(suite, indent=2))
        return 0
    output = Path(args.output) if args.output else default_dir / args.name / "suggested.json"
    write_suite(suite, output)
    print(f"wrote {len(suite['expectations'])} expectations to {output}; edit the bounds, then commit it")
    return 0


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    expectations = commands.add_parser(
        "expectations",
        help="data expectation suites (Great Expectations)",
        description="Work with the expectation suites under expectations/.",
    )
    expectation_commands = expectations.add_subparsers(dest="expectations_command", required=True, metavar="COMMAND")
    suggest = expectation_commands.add_parser(
        "suggest",
        help="write a starter suite from what a database holds",
        description="Restore NAME from its replica (or open --db FILE) and write a starter suite: row counts near today's, "
        "primary keys unique and not null, NOT NULL columns not null. Edit it, then commit it.",
    )
    suggest.add_argument("name", help="the database's name in the catalogue (also the suite's name)")
    config_option(suggest)
    suggest.add_argument("--db", metavar="FILE", help="read this SQLite file (opened read-only) instead of restoring from the replica")
    suggest.add_argument(
        "--output", metavar="FILE", help="where to write (default: <expectations_dir>/NAME/suggested.json; '-' for stdout)"
    )
    suggest.set_defaults(func=cmd_expectations_suggest)
