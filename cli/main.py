"""`drillbook`: the command line. Exit codes: 0 PASS, 1 FAIL, 2 ERROR (bad config, drill could not run).

The contract a release gate relies on: 1 means "the database was not shown
recoverable" and nothing else. Any failure of drillbook itself or its
environment (configuration, scratch or Prefect home not writable, Prefect not
starting, an unexpected exception, SIGTERM / Ctrl-C) is 2, with one line on
stderr, never a traceback, and under --json an ERROR object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

# Before Prefect is imported: its settings are read once.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's SDK telemetry prints a first-run notice at import in a terminal ("Prefect collects anonymous usage data"):
# off, like the servers drillbook starts; an operator who wants it sets DO_NOT_TRACK=0.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # Prefect's 20 s fails on a loaded CI runner

import warnings  # noqa: E402

# Prefect warns at import when it cannot create PREFECT_HOME; drillbook says it in one line instead (prefect_home_problem).
warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")


from drillbook.cli import (  # noqa: E402
    compat,
    config,
    demo,
    expectations,
    fleet,
    history,
    outbox,
    plan,
    points,
    recover,
    replicas,
    run,
    runbook,
    server,
    watch,
)
from drillbook.cli.lifecycle import (  # noqa: E402
    prefect_home_problem,
    quiet_verdict_tracebacks,
    stop_temporary_server,
    use_detached_temporary_server,
)
from drillbook.tasks.config import catalogue_path  # noqa: E402
from drillbook.tasks.errors import DrillbookError  # noqa: E402
from drillbook.tasks.outcome import EXIT_CODES, Verdict  # noqa: E402
from drillbook.tasks.processes import install_signal_handlers  # noqa: E402
from drillbook.tasks.text import redact, visible  # noqa: E402

EXIT_ERROR = EXIT_CODES[Verdict.ERROR]
# In the order `drillbook --help` lists them.
COMMAND_MODULES = (run, config, expectations, demo, outbox, fleet, server, points, history, watch, plan, recover, runbook, compat, replicas)


# The exit-code contract each command's --help ends with (a command's own epilog wins when it has one).
_ERROR = "2 ERROR (the catalogue, the environment or drillbook itself: one line on stderr, never a traceback)"
EXIT_CODE_HELP = {
    "run": f"Exit codes: 0 PASS, 1 FAIL (the database was not shown recoverable), {_ERROR}.",
    "check-config": f"Exit codes: 0 the catalogue is valid, {_ERROR} (also a [[directories]] replica that cannot be listed).",
    "expectations": f"Exit codes: 0 the suite was written, {_ERROR}.",
    "suggest": f"Exit codes: 0 the suite was written, {_ERROR}.",
    "demo": f"Exit codes: the demo drill's verdict: 0 PASS, 1 FAIL, {_ERROR}.",
    "outbox": f"Exit codes: 0 listed, or everything sent; 1 (send) some reports still waiting; {_ERROR}.",
    "nightly": f"Exit codes: the worst verdict of the run: 0 every drill PASS, 1 some FAIL, {_ERROR} or some drill ERROR.",
    "release": f"Exit codes: the worst verdict of the run: 0 every drill PASS, 1 some FAIL, {_ERROR} or some drill ERROR.",
    "server": f"Exit codes: 0 started / stopped / answering; 1 (status) not running; {_ERROR}.",
    "coverage": f"Exit codes: 0 listed, {_ERROR}.",
    "history": f"Exit codes: 0 listed, {_ERROR} (also an unknown database name).",
    "metrics": f"Exit codes: 0 written or pushed, {_ERROR} (the file or the Pushgateway included; also a directory not listed).",
    "report": f"Exit codes: 0 the page was written, {_ERROR}.",
    "prune": f"Exit codes: 0 pruned (or counted, on a dry run), {_ERROR} (also no history_retention and no --older-than).",
    "follow": f"Exit codes: 0 PASS (the follower within its freshness target), 1 FAIL (stale, stalled, or replication stopped past rpo_target), {_ERROR}.",
    "promote": f"Exit codes: 0 PASS (the writes restorable within the failover RTO target), 1 FAIL, {_ERROR}.",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drillbook")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _with_exit_codes(parser: argparse.ArgumentParser) -> None:
    """Every command's --help ends with its exit codes (nested commands included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if "Exit codes:" not in (sub.epilog or ""):
                    sub.epilog = ((sub.epilog + " ") if sub.epilog else "") + EXIT_CODE_HELP.get(name, f"Exit codes: 0 done, {_ERROR}.")
                _with_exit_codes(sub)


def _err(message: str) -> None:
    print(f"drillbook: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drillbook",
        description="Restore drills for Litestream-replicated SQLite: restore, check, and judge RTO / RPO against targets.",
        epilog="Exit codes: 0 PASS, 1 FAIL, 2 ERROR (configuration or the drill itself).",
    )
    parser.add_argument("--version", action="version", version=f"drillbook {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", metavar="FILE", help=f"catalogue file (default: $DRILLBOOK_CONFIG or {catalogue_path()})")

    for module in COMMAND_MODULES:
        module.add_commands(commands, config_option)
    _with_exit_codes(parser)
    return parser


def _error(message: str, args: argparse.Namespace) -> int:
    """The ERROR contract: one line on stderr; under --json also an ERROR object on stdout; exit 2."""
    line = " ".join(message.split()) if "\n" not in message.strip() else message.strip()  # config errors keep their list
    line = visible(redact(line, emails=False), lines=True)  # text from outside in it: credentials masked, control characters shown
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


_RUNS_FLOWS = {"run", "nightly", "release", "demo", "prune"}  # commands that may start Prefect's temporary server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_verdict_tracebacks()
    restore_signals = install_signal_handlers(_err, on_leave=stop_temporary_server)
    try:
        validate = getattr(args, "validate", None)
        if validate is not None:  # a catalogue mistake is reported in a second, before any Prefect server starts
            validate(args)
        if args.command in _RUNS_FLOWS:
            # Prefect is imported from here on: anything that sets PREFECT_API_URL for this process comes first.
            from drillbook.cli.server import use_local_server

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


def command() -> int:
    """The `drillbook` command (and `python -m drillbook.cli`): main(), then an exit without Python's last collections.

    After a command that ran a flow the heap holds Prefect's, SQLAlchemy's and boto3's objects, and the interpreter's
    final garbage collections walked them for 0.4-0.7 s after everything had finished (measured: imports alone, 0.45 s
    to exit; 0.05 s frozen). gc.freeze() leaves that memory to the operating system; the exit handlers still run
    (Prefect's log and event flushes, the temporary server's stop, weakref finalizers), so nothing is left unflushed.
    In-process callers (the tests) call main() and keep a collected heap.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(command())
