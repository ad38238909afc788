"""`drillbook nightly` and `drillbook release`: the schedule's and the release hook's way in.

`release` runs the release deployment on the configured Prefect server (the
release is the idempotency key, so a retried CI job does not drill twice) or,
with no server configured, the flow in this process. It never emits into an
ephemeral server, where the event (or a run nobody waits for) would be lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

from drillbook.flows.runs import drill_results_of, unwrap
from drillbook.tasks.config import check_release, load_catalogue, parse_duration
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.outcome import EXIT_CODES, Verdict, exit_code_for, tally
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import redact, visible

EXIT_PASS, EXIT_ERROR = EXIT_CODES[Verdict.PASS], EXIT_CODES[Verdict.ERROR]
RELEASE_DEPLOYMENT = "release-drills/drillbook-release"
NO_SERVER = (
    "no Prefect server is configured (PREFECT_API_URL is not set), so {what} would go to a temporary in-process server and be lost. "
    "Set PREFECT_API_URL to your server's API (e.g. `export PREFECT_API_URL=http://127.0.0.1:4200/api`, see README, 'Going live'), "
    "or run the drills here with `drillbook release --release {release} --wait`."
)


def server_url() -> str | None:
    """The Prefect API this process talks to (env, profile or test harness), or None for an ephemeral one."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def schema_version_arg(value: str) -> int | str:
    """42 as a number (PRAGMA user_version), anything else as given."""
    return int(value) if value.isdigit() else value


def print_rows(rows: list[dict[str, str]], title: str) -> None:
    """A table for the terminal: every cell shown (control characters written out), credentials masked."""
    print(visible(redact(title)))
    if not rows:
        return
    rows = [{key: visible(redact(str(value))) for key, value in row.items()} for row in rows]
    widths = {key: max(len(key), *(len(str(row.get(key, ""))) for row in rows)) for key in rows[0]}
    print("  " + "  ".join(key.ljust(width) for key, width in widths.items()))
    for row in rows:
        print("  " + "  ".join(str(row.get(key, "")).ljust(width) for key, width in widths.items()))


def show_progress(args: argparse.Namespace, stream: Any = None) -> bool:
    """A progress display only for a person at a terminal: not when stderr is piped or logged, not under --json."""
    stream = stream or sys.stderr
    return not getattr(args, "json", False) and hasattr(stream, "isatty") and stream.isatty()


@contextlib.contextmanager
def progress(description: str, enabled: bool, counted: Callable[[], str] | None = None) -> Any:
    """A spinner with the elapsed time on stderr while long work runs (gone when it ends: the report follows).

    With `counted`, the line says what it returns beside the description (how many drills are done), twice a second.
    """
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(), console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(description, total=None)
        if counted is None:
            yield
            return
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(0.5):
                bar.update(task, description=f"{description}: {counted()}")

        updater = threading.Thread(target=refresh, name="drillbook-progress", daemon=True)
        updater.start()
        try:
            yield
        finally:
            stop.set()
            updater.join()


def _report(results: list[DrillResult], title: str, as_json: bool) -> int:
    from drillbook.flows.summary import summary_rows

    if as_json:
        print(json.dumps([r.summary() for r in results], indent=2))
    else:
        print_rows(summary_rows(results), f"{title}: {tally(r.verdict for r in results)}")
    return exit_code_for([r.verdict.value for r in results])


def budget_arg(value: str) -> float:
    """--budget 45m: seconds, between a minute and a week (as [drillbook] budget)."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 60 <= seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"expected a budget between 1m and 7d, got {value!r}")
    return seconds


def cmd_nightly(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from drillbook.flows.fleet import select_databases
    from drillbook.flows.nightly import nightly_drills
    from drillbook.flows.progress import PROGRESS
    from drillbook.tasks.history.budget import load_night
    from drillbook.tasks.replica import warm_clients

    catalogue = load_catalogue(args.config)  # config errors surface before any Prefect start-up
    chosen = select_databases(catalogue, args.tag or None, args.db or None)
    count = len(chosen)
    warm_clients(chosen)  # the store clients, built while Prefect's server creates the flow run
    budget = args.budget or catalogue.drillbook.budget
    started = datetime.now(UTC)
    PROGRESS.reset()
    with progress("nightly drills", show_progress(args), lambda: PROGRESS.line(count)):
        state = nightly_drills(
            config_path=args.config,
            tags=args.tag or None,
            databases=args.db or None,
            max_concurrent=args.max_concurrent,
            budget=budget,
            return_state=True,
        )
    code = _report(drill_results_of(state), "nightly drills", args.json)
    night = load_night(catalogue.evidence_dir) if budget else None
    if night is not None and night.at >= started and not args.json:
        for line in night.lines():
            print(visible(redact(line)))
    _, value = unwrap(state)
    stale = getattr(value, "going_stale", None)  # DrillsFailed: a database goes stale before the next nightly
    return max(code, EXIT_CODES[Verdict.FAIL]) if stale else code


def release_parameters(args: argparse.Namespace) -> dict[str, Any]:
    parameters: dict[str, Any] = {"release": args.release, "schema_version": args.schema_version, "databases": args.db or None}
    if args.config:
        parameters["config_path"] = args.config
    if args.wait_seconds is not None:
        parameters["wait_seconds"] = args.wait_seconds
    return parameters


def emit_release_event(release: str, schema_version: int | str | None, databases: list[str] | None) -> str:
    """Send `drillbook.release.deployed` to the configured server and wait until it is sent; returns the event id."""
    from prefect.events.clients import get_events_client
    from prefect.events.schemas.events import Event, Resource

    from drillbook.flows.release import RELEASE_EVENT

    event = Event(
        event=RELEASE_EVENT,
        resource=Resource({"prefect.resource.id": f"drillbook.release.{release}", "prefect.resource.name": release}),
        payload={"release": release, "schema_version": schema_version, "databases": databases or []},
    )

    async def send() -> None:
        async with get_events_client(checkpoint_every=1) as client:
            await client.emit(event)

    asyncio.run(send())
    return str(event.id)


def release_verdicts(flow_run_id: Any, release: str) -> list[str] | None:
    """Verdicts from the release run's summary artifact (None when the run left none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from drillbook.flows.release import release_artifact_key

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[release_artifact_key(release)])
            )
        )
    if not artifacts:
        return None
    data = artifacts[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    print_rows(rows, f"release {release}:")
    return [row["verdict"] for row in rows]


def cmd_release(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    check_release(args.release, "--release")  # one printable line, at most 200 characters: else exit 2, before anything runs
    server = None if args.in_process else server_url()
    if args.emit:
        if server is None:
            raise DrillbookError(NO_SERVER.format(what="the event", release=args.release))
        event_id = emit_release_event(args.release, args.schema_version, args.db or None)
        echo(f"sent event drillbook.release.deployed for {args.release} (id {event_id}) to {server}")
        return EXIT_PASS
    if server is None:
        if not args.wait:
            raise DrillbookError(NO_SERVER.format(what="a run nobody waits for", release=args.release))
        from drillbook.flows.progress import PROGRESS
        from drillbook.flows.release import release_drills

        load_catalogue(args.config)
        PROGRESS.reset()
        with progress(f"release {args.release}: drilling", show_progress(args), PROGRESS.line):
            state = release_drills(**release_parameters(args), return_state=True)
        return _report(drill_results_of(state), f"release {args.release}", args.json)

    from prefect.deployments import run_deployment

    with progress(f"release {args.release}: waiting for the run on {server}", show_progress(args) and args.wait):
        run = run_deployment(
            args.deployment,
            parameters=release_parameters(args),
            idempotency_key=f"drillbook-release:{args.release}",
            timeout=None if args.wait else 0,
            poll_interval=2,
            as_subflow=False,
        )
    echo(f"release {args.release}: flow run {run.name} ({run.id}) on {server}")
    if not args.wait:
        return EXIT_PASS
    verdicts = release_verdicts(run.id, args.release)
    if verdicts is None:
        echo(
            f"release {args.release}: the run ended {run.state.type.value if run.state else 'without a state'} with no verdicts: {run.state.message if run.state else ''}"
        )
        return EXIT_ERROR
    return exit_code_for(verdicts)


def validate_catalogue(args: argparse.Namespace) -> None:
    """The catalogue, checked before main() starts or finds a Prefect server.

    Not for `release --emit`: the event names the release, and the deployment's worker reads its own catalogue.
    """
    if not getattr(args, "emit", False):
        load_catalogue(args.config)


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    nightly = commands.add_parser(
        "nightly",
        help="drill every database in the catalogue (or by tag / name)",
        description="Drill the catalogue's databases, bounded by Prefect concurrency limits.",
    )
    config_option(nightly)
    nightly.add_argument("--tag", action="append", metavar="TAG", help="only databases carrying this tag (repeatable)")
    nightly.add_argument("--db", nargs="+", metavar="NAME", help="only these databases")
    nightly.add_argument("--max-concurrent", type=int, metavar="N", help="drills at once (sets the drillbook-drills concurrency limit)")
    nightly.add_argument(
        "--budget",
        type=budget_arg,
        metavar="DURATION",
        help="wall time for tonight's drills, e.g. 45m: the riskiest databases that fit, due ones first (default [drillbook] budget)",
    )
    nightly.add_argument("--json", action="store_true", help="print every result as JSON")
    nightly.set_defaults(func=cmd_nightly, validate=validate_catalogue)

    release = commands.add_parser(
        "release",
        help="drill after a release: wait for the replica to carry it, gate on the verdict",
        description="Run the release drills: on the Prefect server (PREFECT_API_URL) through the release deployment, else in this process.",
        epilog="Exit codes: 0 PASS, 1 FAIL, 2 ERROR.",
    )
    release.add_argument("--release", required=True, help="the release, e.g. v1.2.3 (also the idempotency key of its run)")
    release.add_argument(
        "--schema-version", type=schema_version_arg, metavar="VERSION", help="schema version the migration leaves the databases at"
    )
    release.add_argument("--db", nargs="+", metavar="NAME", help="the databases the release touched (default: all)")
    config_option(release)
    release.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the verdict and exit with it (default); --no-wait needs a server",
    )
    release.add_argument(
        "--wait-seconds", type=float, metavar="S", help="how long to wait for the replica to carry the release (default 600)"
    )
    release.add_argument("--deployment", default=RELEASE_DEPLOYMENT, help=f"the release deployment (default {RELEASE_DEPLOYMENT})")
    release.add_argument("--in-process", action="store_true", help="run the drills in this process even when a server is configured")
    release.add_argument(
        "--emit", action="store_true", help="only send the drillbook.release.deployed event (the deployment's trigger starts the drills)"
    )
    release.add_argument("--json", action="store_true", help="print every result as JSON (in-process runs)")
    release.set_defaults(func=cmd_release, validate=validate_catalogue)
