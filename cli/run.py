"""`drillbook run NAME`: one drill through the Prefect flow, its report printed."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from drillbook.flows.runs import drill_result_of, unwrap
from drillbook.tasks.config import check_release, load_catalogue
from drillbook.tasks.errors import DrillbookError


def run_drill(
    name: str,
    config: str | None,
    *,
    as_json: bool,
    release: str | None = None,
    expect_schema: str | None = None,
    at: str | None = None,
    txid: str | None = None,
) -> int:
    """Validate, drill through the Prefect flow, print the report; return the exit code (`drillbook run`, the demo)."""
    from datetime import UTC, datetime

    from rich.console import Console

    from drillbook.flows.drill import drill_database  # Prefect: only once main() has chosen its API server
    from drillbook.tasks.notify import TerminalNotifier  # Slack, SQLAlchemy: not on check-config's path
    from drillbook.tasks.points import point_request
    from drillbook.tasks.replica import warm_clients

    check_release(release, "--release")  # before Prefect starts: a bad release is a one-line error, exit 2
    entry = load_catalogue(config).get(name)  # config errors surface here, before any Prefect start-up
    point_request(at, txid, entry, datetime.now(UTC))  # and a bad --at / --txid
    warm_clients([entry])  # the store's client, built while Prefect's server creates the flow run
    with no_heartbeat():
        state = drill_database(name, config_path=config, release=release, expect_schema=expect_schema, at=at, txid=txid, return_state=True)
    _, value = unwrap(state)
    result = drill_result_of(value)
    if result is None:
        if isinstance(value, BaseException):
            raise value
        raise DrillbookError(f"the drill flow ended {state.type.value} without a result: {state.message}")
    TerminalNotifier(Console(stderr=as_json, soft_wrap=False)).drill(result)
    if as_json:
        print(json.dumps(result.summary(), indent=2))
    return result.exit_code


@contextlib.contextmanager
def no_heartbeat() -> Iterator[None]:
    """The drill's flow run without Prefect's heartbeat thread, whose end held every run's end up to 1 s (Prefect 3.9).

    The heartbeat tells a server that a run's process died; `drillbook run`
    records its own end (SIGTERM and Ctrl-C included), and a killed process
    leaves its run Running either way until the server's zombie automation, if
    any, acts. A fleet's drills are no flow runs at all.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def validate_run(args: argparse.Namespace) -> None:
    """The catalogue, the name and --at / --txid, checked before main() starts or finds a Prefect server (seconds saved on a mistake)."""
    from datetime import UTC, datetime

    from drillbook.tasks.points import point_request

    point_request(args.at, args.txid, load_catalogue(args.config).get(args.name), datetime.now(UTC))


def cmd_run(args: argparse.Namespace) -> int:
    return run_drill(
        args.name, args.config, as_json=args.json, release=args.release, expect_schema=args.expect_schema, at=args.at, txid=args.txid
    )


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    run = commands.add_parser(
        "run", help="drill one database from the catalogue", description="Restore one database from its replica, check it, judge it."
    )
    run.add_argument("name", help="the database's name in the catalogue")
    config_option(run)
    run.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (the report goes to stderr)")
    run.add_argument("--release", help="the release this drill is for (shown in the report and evidence)")
    run.add_argument("--expect-schema", metavar="VERSION", help="expected schema version (overrides the catalogue's schema_version)")
    run.add_argument(
        "--at",
        metavar="TIME",
        help="restore this point instead of the newest: an ISO 8601 time (2026-11-20T10:00:00Z), or oldest, random, retention",
    )
    run.add_argument("--txid", metavar="TXID", help="restore up to this TXID (hex, as `litestream ltx` lists it) instead of the newest")
    run.set_defaults(func=cmd_run, validate=validate_run)
