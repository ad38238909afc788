"""Every database in the catalogue (or a tag / a selection), each as its own drill run, bounded.

The selection, the concurrency limits and the fan-out are shared with the
release run (flows/fleet.py); the nightly adds one Slack summary for the night.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from drillbook.flows.fleet import drill_many, drill_parameters, ensure_limits_task, record_summary_task, select_databases, unlisted_results
from drillbook.tasks.compat import compat_due
from drillbook.tasks.config import Catalogue, DatabaseEntry, load_catalogue
from drillbook.tasks.errors import DrillsFailed, HistoryError
from drillbook.tasks.history.store import recent_drills
from drillbook.tasks.notify import channels, deliver
from drillbook.tasks.outcome import FailureMode, tally
from drillbook.tasks.points import point_due, point_records
from drillbook.tasks.processes import reclaim_signals
from drillbook.tasks.result import DrillResult


def point_drills(entries: list[DatabaseEntry], catalogue: Catalogue) -> dict[str, list[DatabaseEntry]]:
    """The night's extra drills: a random point where restore_points is due, the retention boundary where retention_target is set."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    random_due = []
    for entry in entries:
        if entry.restore_points is None:
            continue
        try:
            history = point_records(row.summary for row in recent_drills(catalogue.history_url, entry.name, 200))
        except HistoryError as exc:
            get_run_logger().warning("%s; drilling a random point of %s anyway", exc, entry.name)
            history = []
        if point_due(history, entry.restore_points.every, now):
            random_due.append(entry)
    return {"random": random_due, "retention": [entry for entry in entries if entry.retention_target is not None]}


def compat_drills(entries: list[DatabaseEntry], catalogue: Catalogue) -> set[str]:
    """The databases whose restore-tool compatibility phase is due tonight (restore_with, at its restore_with_every)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    due = set()
    for entry in entries:
        if not catalogue.restore_with(entry):
            continue
        try:
            summaries = [row.summary for row in recent_drills(catalogue.history_url, entry.name, 200)]
        except HistoryError as exc:
            get_run_logger().warning("%s; running the compatibility phase of %s anyway", exc, entry.name)
            summaries = []
        if compat_due(summaries, catalogue.restore_with_every(entry), now):
            due.add(entry.name)
    return due


def publish_summary(results: list[DrillResult], catalogue: Catalogue) -> list[str]:
    """The single place the nightly summary leaves drillbook: one message per channel (Slack: failures in its thread)."""
    notes = []
    for channel in channels(catalogue):
        note = deliver(lambda channel=channel: channel.summary(results, "Nightly restore drills"), "nightly summary", channel)
        get_run_logger().info("nightly summary: %s (%s: %s)", tally(r.verdict for r in results), channel.name, note)
        notes.append(note)
    return notes


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(results: list[DrillResult], catalogue: Catalogue) -> list[str]:
    return publish_summary(results, catalogue)


@flow(name="nightly-drills", task_runner=ThreadPoolTaskRunner(max_workers=32))
def nightly_drills(
    config_path: str | None = None,
    tags: list[str] | None = None,
    databases: list[str] | None = None,
    max_concurrent: int | None = None,
    batch_deployment: str | None = None,
) -> list[DrillResult]:
    """Drill the catalogue's databases (all, by tag, or by name), at most `max_concurrent` at once.

    Fails (DrillsFailed, carrying every result) after the summary is recorded
    and published, unless every drill passed.
    """
    reclaim_signals()  # run from the CLI: SIGTERM stops the drills and records them (see tasks/processes.py)
    catalogue = load_catalogue(config_path)
    entries = select_databases(catalogue, tags, databases)
    limits = ensure_limits_task(entries, max_concurrent)
    # One summary message for the night instead of a message per database.
    compat = compat_drills(entries, catalogue)  # the restore-tool matrix at its own cadence, inside the newest drill
    parameters = {entry.name: drill_parameters(entry, config_path, notify=False, compat=entry.name in compat) for entry in entries}
    results = drill_many(entries, catalogue, limits, parameters, batch_deployment)
    # Then the points other than the newest (restore_points, retention_target): each its own drill run, bounded the same way.
    # Not where the newest drill found no replica to read: a point drill could only repeat that.
    unreadable = {
        r.database for r in results if r.failure_mode in (FailureMode.NO_BACKUP, FailureMode.OBJECT_STORAGE, FailureMode.DRILL_ERROR)
    }
    for point, chosen in point_drills([e for e in entries if e.name not in unreadable], catalogue).items():
        if chosen:
            extra = {entry.name: drill_parameters(entry, config_path, notify=False, at=point) for entry in chosen}
            results += drill_many(chosen, catalogue, limits, extra, batch_deployment)
    results += unlisted_results(catalogue, tags, databases)  # a directory whose replica could not be listed: one ERROR, the rest drilled
    record_summary_task(results, "nightly-drills", "Nightly restore drills")
    publish_summary_task(results, catalogue, return_state=True)  # a delivery problem never hides the verdicts
    if not all(r.passed for r in results):
        raise DrillsFailed("nightly drills", results)
    return results
