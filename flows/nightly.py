"""Every database in the catalogue (or a tag / a selection), each as its own drill run, bounded.

The selection, the concurrency limits and the fan-out are shared with the
release run (flows/fleet.py); the nightly adds one Slack summary for the night.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from drillbook.flows.fleet import drill_many, drill_parameters, ensure_limits_task, select_databases, unlisted_results
from drillbook.flows.summary import record_summary_task
from drillbook.tasks.change import read_changes
from drillbook.tasks.compat import compat_due
from drillbook.tasks.config import Catalogue, DatabaseEntry, load_catalogue
from drillbook.tasks.config.fields import parse_duration
from drillbook.tasks.errors import ConfigError, DrillsFailed, HistoryError
from drillbook.tasks.history.budget import (
    BudgetPlan,
    Member,
    Night,
    candidates,
    choose,
    last_drilled_txid,
    night_of,
    save_night,
    to_list,
    with_changes,
)
from drillbook.tasks.history.metrics import refresh_metrics_file
from drillbook.tasks.history.store import recent_drills
from drillbook.tasks.lookahead import HistorySnapshot
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


def publish_summary(results: list[DrillResult], catalogue: Catalogue, lines: list[str] | None = None) -> list[str]:
    """The single place the nightly summary leaves drillbook: one message per channel (Slack: failures in its thread).

    `lines`: a budgeted night's coverage and what it left, said in every channel's message."""
    notes = []
    for channel in channels(catalogue):
        note = deliver(lambda channel=channel: channel.summary(results, "Nightly restore drills", lines or ()), "nightly summary", channel)
        get_run_logger().info("nightly summary: %s (%s: %s)", tally(r.verdict for r in results), channel.name, note)
        notes.append(note)
    return notes


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(results: list[DrillResult], catalogue: Catalogue, lines: list[str] | None = None) -> list[str]:
    return publish_summary(results, catalogue, lines)


def budget_seconds(budget: float | str | None, catalogue: Catalogue) -> float | None:
    """The night's budget: the parameter (`nightly --budget`), else [drillbook] budget, else none."""
    if budget is None:
        return catalogue.drillbook.budget
    try:
        return parse_duration(budget)
    except ValueError as exc:
        raise ConfigError(f"budget: {exc}") from None


def plan_budget(entries: list[DatabaseEntry], catalogue: Catalogue, budget: float, slots: int, history: HistorySnapshot) -> BudgetPlan:
    """The night's choice by risk from one history read and one listing per database not due (its change since its last
    drill: tasks/change.py); said up front (the log, and the CLI's stderr) before any drill starts.

    Plain calls, not task runs: Prefect would walk the snapshot and the plan (a fleet's worth) as task inputs."""
    from datetime import UTC, datetime

    logger = get_run_logger()
    try:
        points = history.trend_points([entry.name for entry in entries])
    except HistoryError as exc:  # the nightly still runs: every database ranks as never drilled
        logger.warning("%s; choosing tonight's drills without it (every database as never drilled)", exc)
        points = {}
    members = [Member(entry.name, catalogue.max_drill_age(entry), entry.rto_target) for entry in entries]
    settings = catalogue.drillbook
    found = candidates(members, points, datetime.now(UTC), min_drills=settings.forecast_min_drills, window=settings.forecast_window)
    wanted, listed = set(to_list(found)), None  # the change since the last drill: one listing each of those not already due
    if wanted:
        last = {name: last_drilled_txid(points.get(name, [])) for name in wanted}
        listed = read_changes([e for e in entries if e.name in wanted], last)
        found = with_changes(found, listed.changes)
    plan = choose(found, budget, slots)
    for line in plan.upfront():
        (logger.warning if plan.due_left() else logger.info)("%s", line)
    if listed is not None:
        failed = f" ({listed.failed:,} listing(s) failed: ranked as the most change)" if listed.failed else ""
        logger.info(
            "listed %s replica(s) not due tonight for their change since the last drill in %.1fs%s",
            f"{len(wanted):,}",
            listed.seconds,
            failed,
        )
    return plan


def account_budget(plan: BudgetPlan, results: list[DrillResult], catalogue: Catalogue) -> Night:
    """What the night drilled and left, and the coverage after it: saved for the page, into the metrics file, logged."""
    from datetime import UTC, datetime

    done = {r.database for r in results}
    passed = {r.database: r.started_at for r in results if r.passed}
    night = night_of(plan, passed, [name for name in plan.chosen if name not in done], datetime.now(UTC))
    logger = get_run_logger()
    try:
        save_night(catalogue.evidence_dir, night)
    except OSError as exc:
        logger.warning("the night's account could not be saved in %s (%s); the drills are recorded", catalogue.evidence_dir, exc.strerror)
    note = refresh_metrics_file(catalogue)  # again: now with the night's coverage and what it left
    if note:
        logger.warning("%s", note)
    for line in night.lines():
        (logger.warning if night.going_stale else logger.info)("%s", line)
    return night


@flow(name="nightly-drills", task_runner=ThreadPoolTaskRunner(max_workers=32))
def nightly_drills(
    config_path: str | None = None,
    tags: list[str] | None = None,
    databases: list[str] | None = None,
    max_concurrent: int | None = None,
    batch_deployment: str | None = None,
    budget: float | str | None = None,
) -> list[DrillResult]:
    """Drill the catalogue's databases (all, by tag, or by name), at most `max_concurrent` at once.

    With a `budget` (seconds or "45m"; default [drillbook] budget): only the riskiest that fit
    (tasks/history/budget.py), none started once its wall time is spent; the summary says what was left and why.
    Fails (DrillsFailed, carrying every result) after the summary is recorded
    and published, unless every drill passed and no database goes stale before the next nightly.
    """
    from datetime import UTC, datetime, timedelta

    reclaim_signals()  # run from the CLI: SIGTERM stops the drills and records them (see tasks/processes.py)
    catalogue = load_catalogue(config_path)
    entries = select_databases(catalogue, tags, databases)
    limits = ensure_limits_task(quote(entries), max_concurrent)
    seconds, plan, history, deadline = budget_seconds(budget, catalogue), None, None, None
    if seconds is not None:  # one history read for the choice and the drills
        deadline = datetime.now(UTC) + timedelta(seconds=seconds)
        history = HistorySnapshot(catalogue.history_url, [entry.name for entry in entries])
        plan = plan_budget(entries, catalogue, seconds, limits.drills, history)
        position = {name: index for index, name in enumerate(plan.chosen)}
        entries = sorted((e for e in entries if e.name in position), key=lambda e: position[e.name])
    # One summary message for the night instead of a message per database.
    compat = compat_drills(entries, catalogue)  # the restore-tool matrix at its own cadence, inside the newest drill
    parameters = {entry.name: drill_parameters(entry, config_path, notify=False, compat=entry.name in compat) for entry in entries}
    results = drill_many(entries, catalogue, limits, parameters, batch_deployment, deadline=deadline, history=history)
    night = account_budget(plan, results, catalogue) if plan is not None else None
    lines = night.lines() if night is not None else None
    entries = [entry for entry in entries if entry.name in {r.database for r in results}]  # not those the spent budget stopped
    # Then the points other than the newest (restore_points, retention_target): each its own drill run, bounded the same way.
    # Not where the newest drill found no replica to read: a point drill could only repeat that.
    unreadable = {
        r.database for r in results if r.failure_mode in (FailureMode.NO_BACKUP, FailureMode.OBJECT_STORAGE, FailureMode.DRILL_ERROR)
    }
    for point, chosen in point_drills([e for e in entries if e.name not in unreadable], catalogue).items():
        if chosen:
            extra = {entry.name: drill_parameters(entry, config_path, notify=False, at=point) for entry in chosen}
            results += drill_many(chosen, catalogue, limits, extra, batch_deployment, deadline=deadline, history=history)
    results += unlisted_results(catalogue, tags, databases)  # a directory whose replica could not be listed: one ERROR, the rest drilled
    record_summary_task(quote(results), "nightly-drills", "Nightly restore drills", lines)
    publish_summary_task(quote(results), quote(catalogue), lines, return_state=True)  # a delivery problem never hides the verdicts
    stale = night.going_stale if night is not None else []
    if stale or not all(r.passed for r in results):
        raise DrillsFailed("nightly drills", results, going_stale=stale)
    return results
