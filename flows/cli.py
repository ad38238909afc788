"""`drillbook`: the command line. Exit codes: 0 PASS, 1 FAIL, 2 ERROR (bad config, drill could not run).

The contract a release gate relies on: 1 means "the database was not shown
recoverable" and nothing else. Any failure of drillbook itself or its
environment (configuration, scratch or Prefect home not writable, Prefect not
starting, an unexpected exception, SIGTERM / Ctrl-C) is 2, with one line on
stderr, never a traceback, and under --json an ERROR object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before Prefect is imported: its settings are read once.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # Prefect's 20 s fails on a loaded CI runner

import warnings  # noqa: E402

# Prefect warns at import when it cannot create PREFECT_HOME; drillbook says it in one line instead (prefect_home_problem).
warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")


from drillbook.flows.lifecycle import (  # noqa: E402
    install_signal_handlers,
    prefect_home_problem,
    quiet_verdict_tracebacks,
    use_detached_temporary_server,
)
from drillbook.flows.runs import run_drill  # noqa: E402
from drillbook.tasks.config import catalogue_path, load_catalogue  # noqa: E402
from drillbook.tasks.errors import DrillbookError, one_line  # noqa: E402
from drillbook.tasks.verdict import EXIT_CODES, Verdict  # noqa: E402

EXIT_FAIL, EXIT_ERROR = EXIT_CODES[Verdict.FAIL], EXIT_CODES[Verdict.ERROR]


def _err(message: str) -> None:
    print(f"drillbook: {message}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    return run_drill(
        args.name, args.config, as_json=args.json, release=args.release, expect_schema=args.expect_schema, at=args.at, txid=args.txid
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    from drillbook.tasks.expectations import expectations_dir, load_suites

    catalogue = load_catalogue(args.config)
    suites = {entry.name: load_suites(entry, expectations_dir(catalogue)) for entry in catalogue.database}  # ConfigError names the file
    print(f"{catalogue.path}: {len(catalogue.database)} database(s) OK")
    for entry in catalogue.database:
        print(f"  {entry.name}: {entry.replica_redacted} (RTO target {entry.rto_target:g}s, RPO target {entry.rpo_target:g}s)")
        loaded = suites[entry.name]
        if loaded:
            count = sum(len(suite) for suite in loaded)
            print(f"    expectations: {count} in {', '.join(str(s.path) for s in loaded)}")
        smoke = len(entry.row_counts) + len(entry.smoke)
        if smoke:
            print(f"    smoke checks: {smoke}")
    return 0


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


def cmd_demo(args: argparse.Namespace) -> int:
    from drillbook.flows.demo import run_demo

    return run_demo(Path(args.evidence_dir), slack_preview=args.slack_preview, sample_history=args.sample_history)


def cmd_outbox(args: argparse.Namespace) -> int:
    from drillbook.tasks.slack import list_outbox, send_outbox

    catalogue = load_catalogue(args.config)
    if catalogue.slack is None:
        print(f"{catalogue.path}: Slack is not configured (no [slack] table), so there is no outbox")
        return 0
    if args.action == "send":
        deliveries = send_outbox(catalogue)
        if not deliveries:
            print(f"{catalogue.outbox_dir}: nothing waiting")
            return 0
        for delivery in deliveries:
            print(f"  {delivery.key}: {delivery.status}: {delivery.note if delivery.status != 'queued' else delivery.reason}")
        waiting = sum(1 for d in deliveries if d.status in ("queued", "busy"))
        print(f"{len(deliveries) - waiting} sent, {waiting} still waiting in {catalogue.outbox_dir}")
        return EXIT_FAIL if waiting else 0
    entries = list_outbox(catalogue)
    print(f"{catalogue.outbox_dir}: {len(entries)} report(s) waiting" + (" (`drillbook outbox send` re-sends them)" if entries else ""))
    for entry in entries:
        what = f"{entry.kind} {entry.database or ''} {entry.verdict or ''}".replace("  ", " ").strip()
        progress = " (message posted, thread incomplete)" if entry.posted_ts else ""
        print(f"  {entry.key}  {what}  queued {entry.created_at:%Y-%m-%d %H:%M:%S}Z  tries {entry.attempts}{progress}")
        if entry.reason:
            print(f"      reason: {one_line(entry.reason)}")  # entries queued before reasons were kept to one line
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drillbook",
        description="Restore drills for Litestream-replicated SQLite: restore, check, and judge RTO / RPO against targets.",
        epilog="Exit codes: 0 PASS, 1 FAIL, 2 ERROR (configuration or the drill itself).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", metavar="FILE", help=f"catalogue file (default: $DRILLBOOK_CONFIG or {catalogue_path()})")

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
    run.set_defaults(func=cmd_run)

    check = commands.add_parser(
        "check-config", help="validate the catalogue without drilling", description="Validate the catalogue and print its databases."
    )
    config_option(check)
    check.set_defaults(func=cmd_check_config)

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

    demo = commands.add_parser(
        "demo",
        help="a full drill on a sample database with a local S3 endpoint",
        description="Create a sample database, replicate it with litestream to a local S3 endpoint, drill it, clean up.",
    )
    demo.add_argument(
        "--evidence-dir", default="drill-evidence", help="where the demo's evidence bundle is kept (default: ./drill-evidence)"
    )
    demo.add_argument(
        "--slack-preview",
        action="store_true",
        help="also post the report to a Slack stand-in started on loopback, and print its Block Kit JSON (for Block Kit Builder)",
    )
    demo.add_argument(
        "--sample-history",
        action="store_true",
        help="first seed two weeks of SAMPLE drills (marked as such) so the forecast and the page have something to show",
    )
    demo.set_defaults(func=cmd_demo)

    outbox = commands.add_parser(
        "outbox",
        help="list (or send) Slack reports that Slack did not take",
        description="Reports Slack did not take wait in the outbox ([slack] outbox_dir) with the reason. 'send' re-sends them; a report is never sent twice.",
    )
    outbox.add_argument("action", nargs="?", choices=["list", "send"], default="list", help="list (default) or send")
    config_option(outbox)
    outbox.set_defaults(func=cmd_outbox)

    from drillbook.flows.cli_fleet import add_commands as add_fleet_commands  # nightly, release
    from drillbook.flows.cli_server import add_commands as add_server_commands  # server start | stop | status

    add_fleet_commands(commands, config_option)
    add_server_commands(commands, config_option)
    from drillbook.flows.cli_points import add_commands as add_point_commands  # coverage

    add_point_commands(commands, config_option)
    from drillbook.flows.cli_history import add_commands as add_history_commands  # history, stale, metrics, report, plan

    add_history_commands(commands, config_option)
    return parser


def _error(message: str, args: argparse.Namespace) -> int:
    """The ERROR contract: one line on stderr; under --json also an ERROR object on stdout; exit 2."""
    line = " ".join(message.split()) if "\n" not in message.strip() else message.strip()  # config errors keep their list
    _err(line)
    if getattr(args, "json", False):
        print(json.dumps({"verdict": "ERROR", "exit_code": EXIT_ERROR, "database": getattr(args, "name", None), "error": line}, indent=2))
    return EXIT_ERROR


def _unexpected(exc: BaseException) -> str:
    """One line for an exception drillbook did not raise on purpose: what, and where to look."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}; check that path's permissions and free space"
    text = " ".join(str(exc).split())[:300] or "(no message)"
    return f"unexpected {type(exc).__name__}: {text}; this is drillbook's problem, not the database's: please report it"


_RUNS_FLOWS = {"run", "nightly", "release", "demo"}  # commands that may start Prefect's temporary server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_verdict_tracebacks()
    restore_signals = install_signal_handlers(_err)
    try:
        if args.command in _RUNS_FLOWS:
            # Prefect is imported from here on: anything that sets PREFECT_API_URL for this process comes first.
            from drillbook.flows.cli_server import use_local_server

            use_local_server(_err)  # `drillbook server start`'s server, when no PREFECT_API_URL is set
            use_detached_temporary_server()
            problem = prefect_home_problem()
            if problem:
                return _error(problem, args)
        return args.func(args)
    except DrillbookError as exc:  # ConfigError, ToolMissing, PrefectUnavailable, ...: messages written for the operator
        return _error(str(exc), args)
    except KeyboardInterrupt:
        return _error("interrupted", args)
    except Exception as exc:
        return _error(_unexpected(exc), args)
    finally:
        restore_signals()


if __name__ == "__main__":
    sys.exit(main())
