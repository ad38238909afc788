"""`drillbook recover NAME --find-clean --output PATH`: the newest point of the replica whose copy passes the checks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillbook.tasks.config import load_catalogue, parse_duration
from drillbook.tasks.errors import RecoveryError

EXIT_NONE = 1


def _progress(enabled: bool):
    """A rich status line on stderr (a TTY only): which point is being restored, and what the last one was."""
    if not enabled:
        return None, (lambda _txid, _try: None)
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    status = console.status("listing the replica ...")

    def show(txid: str, tried) -> None:
        if tried is None:
            status.update(f"restoring TXID {txid} and checking the copy ...")
        else:
            console.print(escape(f"  TXID {txid}: {tried.state.value} ({tried.seconds:.1f}s)"), highlight=False)

    return status, show


def cmd_recover(args: argparse.Namespace) -> int:
    from drillbook.tasks.recover import find_clean, render_recovery

    if not args.find_clean:
        raise RecoveryError("say what to do: `drillbook recover NAME --find-clean --output PATH`")
    catalogue = load_catalogue(args.config)
    entry = catalogue.get(args.name)
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip()) if args.checks else ()
    try:
        budget = parse_duration(args.budget)
    except ValueError as exc:
        raise RecoveryError(f"--budget {args.budget!r}: {exc}") from None
    status, show = _progress(sys.stderr.isatty() and not args.json)
    if status is not None:
        status.start()
    try:
        recovery = find_clean(entry, catalogue, Path(args.output), checks=checks, budget=budget, on_try=show)
    finally:
        if status is not None:
            status.stop()
    if args.json:
        data = recovery.model_dump(mode="json")
        data["restores"] = recovery.restores
        data["lost"] = dict(zip(("txids", "seconds"), recovery.lost(), strict=True)) if recovery.winner else None
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(render_recovery(recovery)))
    return 0 if recovery.winner is not None else EXIT_NONE


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    recover = commands.add_parser(
        "recover",
        help="find the newest restorable point whose copy passes the checks, and restore it to a new file",
        description=(
            "Bisects the replica's restorable points (newest first) for the newest one whose restored copy passes "
            "PRAGMA integrity_check (and, with --checks, the smoke checks and expectation suites), then restores it to --output. "
            "The copy is never written onto the live database or over an existing file, and drillbook never promotes it."
        ),
        epilog="Exit codes: 0 a clean point was found and restored to --output, 1 none within the budget, 2 drillbook could not search.",
    )
    recover.add_argument("name", help="the database's name in the catalogue")
    config_option(recover)
    recover.add_argument("--find-clean", action="store_true", help="search for the newest clean point (the only mode)")
    recover.add_argument("--output", required=True, metavar="PATH", help="where the clean copy goes: a new file, never the live database")
    recover.add_argument(
        "--checks", default="", metavar="LIST", help="also run these on each copy: smoke,expectations (integrity always runs)"
    )
    recover.add_argument("--budget", default="30m", metavar="DURATION", help="stop searching after this long (default 30m)")
    recover.add_argument("--json", action="store_true", help="print the search as JSON")
    recover.set_defaults(func=cmd_recover)
