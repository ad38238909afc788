"""One restore drill, as the runbook says it: inspect, restore, check, judge, record, report, clean up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from drillbook.flows.runs import unwrap
from drillbook.tasks.cleanup import clean_up
from drillbook.tasks.compat import CompatReport, check_compat
from drillbook.tasks.config import Catalogue, DatabaseEntry, check_release, load_catalogue
from drillbook.tasks.errors import ConfigError, DrillFailed, HistoryError
from drillbook.tasks.evidence import evidence_stem, write_bundle
from drillbook.tasks.expectations import ExpectationsReport, expectations_dir, load_suites, run_expectations
from drillbook.tasks.follow import FollowReport, follow_replica
from drillbook.tasks.freshness import FreshnessReport, measure_freshness
from drillbook.tasks.history.metrics import refresh_metrics_file
from drillbook.tasks.history.store import recent_drills, record_drill
from drillbook.tasks.integrity import IntegrityReport, check_integrity
from drillbook.tasks.lineage_history import check_writers_across
from drillbook.tasks.litefs.drill import drill_litefs
from drillbook.tasks.lookahead import HistorySnapshot, look_ahead, plan_restore
from drillbook.tasks.newest_only import newest_only_skips
from drillbook.tasks.notify import channels, deliver
from drillbook.tasks.outcome import Status, Verdict
from drillbook.tasks.plan import RestorePlan
from drillbook.tasks.points import (
    PointCheck,
    PointKind,
    PointRecord,
    PointRequest,
    Timeline,
    plan_point,
    point_records,
    point_request,
    read_timeline,
    verify_point,
)
from drillbook.tasks.processes import interrupted, reclaim_signals
from drillbook.tasks.promote import PromoteReport, promote_copy
from drillbook.tasks.replica import ReplicaState, inspect_replica
from drillbook.tasks.report.drill import headline, render_markdown
from drillbook.tasks.restore import RestoreResult, restore_database
from drillbook.tasks.result import DrillResult, DrillSteps, phase_kind
from drillbook.tasks.runbook import refresh_runbook
from drillbook.tasks.smoke import SmokeReport, run_smoke_tests
from drillbook.tasks.steps import StepResult
from drillbook.tasks.text import redact, slug, visible
from drillbook.tasks.verdict import DrillContext, judge
from drillbook.tasks.workspace import prepare_workspace

S = TypeVar("S", bound=StepResult)


POINT_HISTORY = 1000  # drills read back to see which parts of the window are already proven


def plan_point_step(
    entry: DatabaseEntry, request: PointRequest, replica: ReplicaState, history_url: str
) -> tuple[PointCheck, Timeline | None]:
    """Which point to restore and which TXID the copy must then hold, from the replica's listing and LTX headers."""
    if not replica.ok:
        return PointCheck.skipped("not planned: the replica inspection did not pass").model_copy(update={"request": request}), None
    started = datetime.now(UTC)
    timeline, notes = read_timeline(entry, replica.listing)
    history: list[PointRecord] = []
    if request.kind == PointKind.RANDOM:
        try:
            history = point_records(row.summary for row in recent_drills(history_url, entry.name, POINT_HISTORY))
        except HistoryError as exc:
            notes.append(f"{exc}: the random point ignores what earlier drills covered")
    check = plan_point(entry, request, timeline, started, history=history)
    check.notes[:0] = notes
    check.seconds = round((datetime.now(UTC) - started).total_seconds(), 3)
    get_run_logger().info("point: %s", check.summary)
    return check, timeline


def plan_step(entry: DatabaseEntry, replica: ReplicaState, history_url: str, history: HistorySnapshot | None) -> RestorePlan:
    get_run_logger().info("planning the restore of %s (litestream restore -dry-run)", entry.name)
    return plan_restore(entry, history_url, replica, history=history)


@task(name="restore-database", task_run_name="restore-{entry.name}", cache_policy=NO_CACHE)
def restore_task(entry: DatabaseEntry, replica: ReplicaState, scratch: Path, point: PointCheck | None = None) -> RestoreResult:
    if point is not None and not point.target_args:
        return RestoreResult.skipped(f"not attempted: the point could not be planned ({point.summary})")
    get_run_logger().info("restoring %s into %s%s", entry.name, scratch, f" at {' '.join(point.target_args)}" if point else "")
    return restore_database(entry, replica, scratch, point.target_args if point else None)


@task(name="measure-freshness", task_run_name="freshness-{entry.name}", cache_policy=NO_CACHE)
def freshness_task(restore: RestoreResult, integrity: IntegrityReport, entry: DatabaseEntry) -> FreshnessReport:
    path = _intact_copy(restore, integrity)
    if path is None:
        return FreshnessReport.skipped("not run: there is no intact restored copy")
    get_run_logger().info("measuring the data-loss window of %s with its freshness_query", entry.name)
    return measure_freshness(entry, path)


@task(name="check-integrity", task_run_name="integrity-{entry.name}", cache_policy=NO_CACHE)
def check_integrity_task(
    restore: RestoreResult, entry: DatabaseEntry, expected_schema: int | str | None, rows_file: Path
) -> IntegrityReport:
    if not restore.ok or restore.path is None:
        return IntegrityReport.skipped("not run: there is no restored copy")
    get_run_logger().info("checking integrity of %s", restore.path)
    return check_integrity(restore.path, expected_schema=expected_schema, schema_query=entry.schema_version_query, rows_file=rows_file)


@task(name="check-restore-tools", task_run_name="compat-{entry.name}", cache_policy=NO_CACHE)
def compat_task(
    entry: DatabaseEntry,
    replica: ReplicaState,
    restore: RestoreResult,
    integrity: IntegrityReport,
    versions: list[str],
    scratch: Path,
    **at: bool,
) -> CompatReport:
    if _intact_copy(restore, integrity) is None:
        return CompatReport.skipped("not run: there is no intact restored copy to compare with")
    get_run_logger().info("restoring %s with litestream %s to compare with the pinned copy", entry.name, ", ".join(versions))
    return check_compat(entry, replica, restore, versions, scratch, **at)  # at_point=True: the copy is a point's


def _intact_copy(restore: RestoreResult, integrity: IntegrityReport) -> str | None:
    """The restored copy's path when there is one worth checking further."""
    if restore.ok and restore.path and integrity.status in (Status.PASSED, Status.FAILED) and integrity.intact:
        return restore.path
    return None


@task(name="run-smoke-tests", task_run_name="smoke-{entry.name}", cache_policy=NO_CACHE)
def smoke_task(restore: RestoreResult, integrity: IntegrityReport, entry: DatabaseEntry, base_dir: Path) -> SmokeReport:
    path = _intact_copy(restore, integrity)
    if path is None:
        return SmokeReport.skipped("not run: there is no intact restored copy")
    get_run_logger().info("smoke-testing %s", path)
    return run_smoke_tests(path, entry, base_dir=base_dir)


@task(name="run-expectations", task_run_name="expectations-{entry.name}", cache_policy=NO_CACHE)
def expectations_task(restore: RestoreResult, integrity: IntegrityReport, entry: DatabaseEntry, suites_dir: Path) -> ExpectationsReport:
    path = _intact_copy(restore, integrity)
    if path is None:
        return ExpectationsReport.skipped("not run: there is no intact restored copy")
    try:
        suites = load_suites(entry, suites_dir)
    except ConfigError as exc:
        return ExpectationsReport(status=Status.ERROR, summary=str(exc))
    get_run_logger().info("running %d expectation suite(s) on %s", len(suites), path)
    return run_expectations(path, suites, samples=entry.expectations_samples)


@task(name="follow-replica", task_run_name="follow-{entry.name}", cache_policy=NO_CACHE)
def follow_task(
    restore: RestoreResult, integrity: IntegrityReport, entry: DatabaseEntry, replica: ReplicaState, scratch: Path
) -> FollowReport:
    if _intact_copy(restore, integrity) is None:
        return FollowReport.skipped("not run: there is no intact restored copy")
    get_run_logger().info("following the replica of %s for %gs", entry.name, entry.follow.seconds if entry.follow else 0)
    return follow_replica(entry, replica, scratch)


@task(name="promote-copy", task_run_name="promote-{entry.name}", cache_policy=NO_CACHE)
def promote_task(restore: RestoreResult, integrity: IntegrityReport, entry: DatabaseEntry, scratch: Path, base_dir: Path) -> PromoteReport:
    path = _intact_copy(restore, integrity)
    if path is None:
        return PromoteReport.skipped("not run: there is no intact restored copy")
    get_run_logger().info("promoting a copy of %s: it replicates to a scratch prefix and takes writes", path)
    return promote_copy(entry, Path(path), scratch, base_dir=base_dir)


def record(result: DrillResult, evidence_dir: Path, history_url: str, *, artifact: bool = True) -> DrillResult:
    """Evidence bundle, history row, and (`artifact`) the drill's Markdown artifact in Prefect's UI."""
    path = write_bundle(result, evidence_dir)
    try:
        record_drill(history_url, result)
    except HistoryError as exc:
        result.notes.append(f"{exc}; the evidence bundle holds the full record")
        path = write_bundle(result, evidence_dir)
    if artifact:
        create_markdown_artifact(
            key=f"drill-{_artifact_key(result.database)}",
            markdown=render_markdown(result),
            description=f"Restore drill of {result.database}: {result.verdict.value}",
        )
    get_run_logger().info("evidence written to %s", path)
    return result


def report(result: DrillResult) -> None:
    """The verdict in the run's log: a PASS is INFO, a FAIL (a finding, not a fault) WARNING, an ERROR (drillbook broke) ERROR."""
    level = {Verdict.PASS: logging.INFO, Verdict.FAIL: logging.WARNING, Verdict.ERROR: logging.ERROR}[result.verdict]
    get_run_logger().log(level, "%s", visible(redact(headline(result))))


def _notify(result: DrillResult, catalogue: Catalogue) -> None:
    """Every channel gets the report; a channel's trouble is a note (the outbox keeps Slack's), never the verdict's."""
    for channel in channels(catalogue):
        note = deliver(lambda channel=channel: channel.drill(result), "report", channel)
        get_run_logger().info("%s: %s", channel.name, note)
        result.notes.append(note)


class _Phases:
    """Runs the drill's phases and keeps their results by name, for DrillSteps.

    A phase whose step crashed still reaches the verdict, as that phase's error. After an
    interrupt (SIGTERM, Ctrl-C) no further phase starts: the drill goes straight to its record.
    A Prefect task gets a task run of its own, unless `own_runs=False` (a drill inside a fleet):
    each task run costs the Prefect server CPU, the ceiling on how many fleet workers one server
    can feed (bench/run.py). A plain function is a plain call (cheap, seldom retried alone).
    """

    def __init__(self, own_runs: bool) -> None:
        self.own_runs = own_runs
        self.results: dict[str, StepResult] = {}

    def step(self, phase: str, step: Callable[..., Any], **arguments: Any) -> Any:
        return self.record(phase, _guarded(phase_kind(phase), step, own_runs=self.own_runs, **arguments))

    def record(self, phase: str, result: S) -> S:
        self.results[phase] = result
        return result


def _guarded(kind: type[S], step: Callable[..., Any], *, own_runs: bool = True, **arguments: Any) -> S:
    """The step's result, or its kind's skipped (interrupted) or crashed result."""
    stop = interrupted()
    if stop:
        return kind.skipped(f"not run: interrupted by {stop}")
    if isinstance(step, Task):
        if not own_runs:
            step = step.fn
        else:
            completed, value = unwrap(step(**arguments, return_state=True))
            return value if completed else kind.crashed(value)
    try:
        return step(**arguments)
    except Exception as exc:  # noqa: BLE001 - the crash is the step's ERROR
        return kind.crashed(exc)


def _plan(
    entry: DatabaseEntry, request: PointRequest | None, replica: ReplicaState, history_url: str
) -> tuple[PointCheck | None, Timeline | None]:
    """No request: the newest position, no point phase. A planning crash is the point phase's error."""
    if request is None:
        return None, None
    try:
        return plan_point_step(entry, request, replica, history_url)
    except Exception as exc:  # noqa: BLE001 - the crash is the point phase's ERROR
        return PointCheck.crashed(exc).model_copy(update={"request": request}), None


def _clean_up(result: DrillResult, scratch: Path | None, keep_failed: int) -> None:
    """Scratch removal never costs the record: a failure becomes a note."""
    if scratch is None:
        return
    try:
        result.scratch_kept = clean_up(result, scratch, keep_failed)
    except OSError as exc:
        result.scratch_kept = str(scratch)
        result.notes.append(f"cleaning up the scratch directory {scratch} failed ({exc.strerror}); remove it by hand")


def _artifact_key(name: str) -> str:
    return slug(name, limit=60)  # Prefect keys: lowercase ASCII letters, digits and dashes only


def _flow_run_url() -> str | None:
    from prefect.runtime import flow_run

    try:
        url = flow_run.ui_url
        return url if url and url.startswith(("http://", "https://")) else None  # no PREFECT_UI_URL: "None/flow-runs/..."
    except Exception:  # no UI configured: the report simply has no link
        return None


@flow(name="drill-database", flow_run_name="drill-{name}")
def drill_database(
    name: str,
    config_path: str | None = None,
    release: str | None = None,
    expect_schema: int | str | None = None,
    notify: bool = True,
    release_lag: str | None = None,
    at: str | None = None,
    txid: str | None = None,
    compat: bool = True,
) -> DrillResult:
    """The drill as a flow run of its own (`drillbook run`, the drillbook-drill deployment): the catalogue path is the boundary."""
    reclaim_signals()  # SIGTERM stops litestream and records the drill, as the CLI promises
    catalogue = load_catalogue(config_path)
    return drill(
        catalogue.get(name),
        catalogue,
        release=release,
        expect_schema=expect_schema,
        notify=notify,
        release_lag=release_lag,
        at=at,
        txid=txid,
        compat=compat,
    )


def drill(
    entry: DatabaseEntry,
    catalogue: Catalogue,
    *,
    release: str | None = None,
    expect_schema: int | str | None = None,
    notify: bool = True,
    release_lag: str | None = None,
    at: str | None = None,
    txid: str | None = None,
    own_runs: bool = True,
    compat: bool = True,
    history: HistorySnapshot | None = None,
) -> DrillResult:
    """Restore `entry` from its replica into scratch, check it, and judge RTO / RPO against its targets.

    `notify=False` leaves Slack to the caller (the nightly flow posts one summary for all drills).
    `release_lag` (from a release drill's wait) says the replica did not carry the
    release in time; the verdict leads with it as replica lag.
    `at` (an ISO 8601 time, or oldest / random / retention) or `txid` restores that
    point instead of the newest; the copy must then hold exactly the TXID the
    replica lists for it (the "point" phase).
    `own_runs=False` (a drill inside a fleet's worker) records no task runs and,
    for a PASS, no artifact: the evidence bundle, the history row and the fleet's
    summary table are its record; a drill that did not pass keeps its artifact. Its fleet refreshes
    the metrics file once when its drills end, and may pass `history`, read once for all of them.
    `compat` (default on) runs the restore-tool compatibility phase when the catalogue gives
    restore_with versions for this database (a drill of the newest position only); the nightly
    turns it off until its cadence says it is due.

    Ends failed (DrillFailed, carrying the result) after the evidence and report
    are done, whenever the verdict is not PASS.
    """
    release = check_release(release)  # from CI, an event or a person: one printable line, bounded (ConfigError)
    expected = expect_schema if expect_schema is not None else entry.schema_version
    drill_id = uuid4().hex  # the full UUID: a short one collides, and a collision loses a history row and a report
    started_at = datetime.now(UTC)
    request = point_request(at, txid, entry, started_at)  # bad input is a ConfigError before anything runs
    setup = prepare_workspace(catalogue.scratch_dir, entry, drill_id, catalogue.evidence_dir)
    scratch = Path(setup.scratch) if setup.scratch else None
    rows_file = evidence_stem(catalogue.evidence_dir, entry.name, started_at, drill_id).with_suffix(".integrity.txt")

    run = _Phases(own_runs)
    run.record("setup", setup)
    work = scratch or catalogue.scratch_dir
    if setup.ok:
        replica = run.step("replica", inspect_replica, entry=entry)
    else:
        replica = run.record("replica", ReplicaState.skipped(f"not run: {setup.summary}"))
    plan = _guarded(RestorePlan, plan_step, entry=entry, replica=replica, history_url=catalogue.history_url, history=history)
    run.step("writers", check_writers_across, entry=entry, replica=replica, history_url=catalogue.history_url)  # L0 + recorded lineage
    point, timeline = _plan(entry, request, replica, catalogue.history_url)
    restore = run.step("restore", restore_task, entry=entry, replica=replica, scratch=work, point=point)
    if point is not None:
        run.record("point", verify_point(point, restore, timeline))
    integrity = run.step("integrity", check_integrity_task, restore=restore, entry=entry, expected_schema=expected, rows_file=rows_file)
    copy = {"restore": restore, "integrity": integrity, "entry": entry}
    versions = catalogue.restore_with(entry) if compat else []  # at a point too: each version is asked for the copy's TXID
    if versions:  # other litestream releases against the pinned copy, before a smoke command could change it; not in the RTO
        run.step("compat", compat_task, **copy, replica=replica, versions=versions, scratch=work, at_point=request is not None)
    run.step("smoke", smoke_task, **copy, base_dir=catalogue.base_dir)
    run.step("expectations", expectations_task, **copy, suites_dir=expectations_dir(catalogue))
    if entry.freshness_query and request is None:  # the data's own RPO: a past point is old by design
        run.step("freshness", freshness_task, **copy)
    if entry.follow is not None and request is None and scratch is not None:  # a follower follows the newest position
        run.step("follow", follow_task, **copy, replica=replica, scratch=scratch)
    if entry.promote is not None and request is None and scratch is not None:
        run.step("promote", promote_task, **copy, scratch=scratch, base_dir=catalogue.base_dir)
    if entry.litefs is not None and request is None and scratch is not None and _intact_copy(restore, integrity):
        for phase, outcome in drill_litefs(entry, Path(restore.path), scratch).items():  # one cluster, four phases
            run.record(phase, outcome)
    run.results.update(newest_only_skips(entry, request) if request is not None else {})  # what a point drill leaves out, said

    steps = DrillSteps(**run.results)
    context = DrillContext(
        drill_id=drill_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        release=release,
        release_lag=release_lag,
        interrupted=interrupted(),
        clock_skew_tolerance=catalogue.drillbook.clock_skew_tolerance,
    )
    result = judge(entry, steps, context)
    result.flow_run_url = _flow_run_url()
    result = look_ahead(result, catalogue, plan, history)  # forecast and advice beside the verdict, never in it
    _clean_up(result, scratch, catalogue.drillbook.keep_failed)
    result.notes.append(refresh_runbook(result, entry, catalogue))  # never raises: a failure is the note
    try:
        result = record(result, catalogue.evidence_dir, catalogue.history_url, artifact=own_runs or not result.passed)
    except Exception as exc:  # noqa: BLE001 - the verdict still reaches the report, with the reason the record is missing
        result.notes.append(f"recording the evidence failed: {exc}")
    if own_runs:  # [drillbook] metrics_file, when set; a fleet's drill leaves it to its fleet (once, not once a drill)
        result.notes.extend(filter(None, [refresh_metrics_file(catalogue)]))
    report(result)
    if notify and interrupted():
        result.notes.append(f"not reported to Slack: interrupted by {interrupted()}")
    elif notify:
        _notify(result, catalogue)
    if not result.passed:
        raise DrillFailed(result)
    return result
