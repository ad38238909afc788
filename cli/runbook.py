"""`drillbook runbook NAME`: the database's runbook from the newest evidence (Markdown on stdout, or HTML to a file)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillbook.tasks.config import load_catalogue


def cmd_runbook(args: argparse.Namespace) -> int:
    from drillbook.tasks.files import write_atomic
    from drillbook.tasks.runbook import build_runbook, render_runbook_html, render_runbook_markdown

    catalogue = load_catalogue(args.config)
    book = build_runbook(catalogue.get(args.name), catalogue)
    if args.html:
        path = write_atomic(Path(args.html), render_runbook_html(book))
        print(f"runbook of {args.name} written to {path}")
    else:
        print(render_runbook_markdown(book))
    return 0


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    runbook = commands.add_parser(
        "runbook",
        help="the database's runbook, every field from the newest drill evidence",
        description=(
            "Replica destination, layout, newest position, last drills, RTO / RPO against targets, restore commands, "
            "credential variables, corruption triage, recent failure modes and no-go status; each field dated by its evidence. "
            "Drills rewrite <evidence_dir>/runbooks/NAME.md after each run."
        ),
        epilog="Exit codes: 0 written, 2 drillbook could not read the catalogue.",
    )
    runbook.add_argument("name", help="the database's name in the catalogue")
    config_option(runbook)
    runbook.add_argument("--html", metavar="FILE", help="write HTML to FILE instead of Markdown on stdout")
    runbook.set_defaults(func=cmd_runbook)
