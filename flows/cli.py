"""`drillbook`: the command line. Exit codes: 0 PASS, 1 FAIL, 2 ERROR (bad config, drill could not run)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before Prefect is imported: its settings are read once.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from rich.console import Console  # noqa: E402

from tasks.config import catalogue_path, load_catalogue  # noqa: E402
from tasks.errors import ConfigError, DrillbookError, DrillFailed  # noqa: E402
from tasks.report import render_terminal  # noqa: E402
from tasks.verdict import DrillResult  # noqa: E402

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def _err(message: str) -> None:
    print(f"drillbook: {message}", file=sys.stderr)


def run_drill(name: str, config: str | None, *, as_json: bool, release: str | None = None, expect_schema: str | None = None) -> int:
    """Validate, drill through the Prefect flow, print the report; return the exit code."""
    from flows.drill import drill_database

    load_catalogue(config).get(name)  # config errors surface here, before any Prefect start-up
    state = drill_database(name, config_path=config, release=release, expect_schema=expect_schema, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, DrillFailed):
        result: DrillResult = outcome.result
    elif isinstance(outcome, DrillResult):
        result = outcome
    elif isinstance(outcome, BaseException):
        raise outcome
    else:
        raise DrillbookError(f"the drill flow ended {state.type.value} without a result: {state.message}")
    console = Console(stderr=as_json, soft_wrap=False)
    console.print(render_terminal(result))
    if as_json:
        print(json.dumps(result.summary(), indent=2))
    return result.exit_code


def cmd_run(args: argparse.Namespace) -> int:
    return run_drill(args.name, args.config, as_json=args.json, release=args.release, expect_schema=args.expect_schema)


def cmd_check_config(args: argparse.Namespace) -> int:
    catalogue = load_catalogue(args.config)
    print(f"{catalogue.path}: {len(catalogue.database)} database(s) OK")
    for entry in catalogue.database:
        print(f"  {entry.name}: {entry.replica_redacted} (RTO target {entry.rto_target:g}s, RPO target {entry.rpo_target:g}s)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(Path(args.evidence_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drillbook",
        description="Restore drills for Litestream-replicated SQLite: restore, check, and judge RTO / RPO against targets.",
        epilog="Exit codes: 0 PASS, 1 FAIL, 2 ERROR (configuration or the drill itself).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", metavar="FILE", help=f"catalogue file (default: $DRILLBOOK_CONFIG or {catalogue_path()})")

    run = commands.add_parser("run", help="drill one database from the catalogue", description="Restore one database from its replica, check it, judge it.")
    run.add_argument("name", help="the database's name in the catalogue")
    config_option(run)
    run.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (the report goes to stderr)")
    run.add_argument("--release", help="the release this drill is for (shown in the report and evidence)")
    run.add_argument("--expect-schema", metavar="VERSION", help="expected schema version (overrides the catalogue's schema_version)")
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check-config", help="validate the catalogue without drilling", description="Validate the catalogue and print its databases.")
    config_option(check)
    check.set_defaults(func=cmd_check_config)

    demo = commands.add_parser(
        "demo",
        help="a full drill on a sample database with a local S3 endpoint",
        description="Create a sample database, replicate it with litestream to a local S3 endpoint, drill it, clean up.",
    )
    demo.add_argument("--evidence-dir", default="drill-evidence", help="where the demo's evidence bundle is kept (default: ./drill-evidence)")
    demo.set_defaults(func=cmd_demo)

    from flows.cli_fleet import add_commands as add_fleet_commands  # nightly, release

    add_fleet_commands(commands, config_option)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_ERROR
    except DrillbookError as exc:
        _err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
