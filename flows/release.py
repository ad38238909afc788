"""Release drills: after a deploy, wait for the replica to carry it, drill, and gate the release.

Any FAIL or ERROR fails the flow run, so a CI job (`drillbook release`) or an
automation watching the run can hold the release.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from drillbook.flows.fleet import drill_many, drill_parameters, ensure_limits_task, select_databases, unlisted_results
from drillbook.flows.runs import unwrap
from drillbook.flows.summary import record_summary_task
from drillbook.tasks.config import DatabaseEntry, check_release, load_catalogue
from drillbook.tasks.errors import DrillsFailed
from drillbook.tasks.processes import reclaim_signals
from drillbook.tasks.release_wait import ReplicaWait, WaitOutcome, wait_for_release
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import slug

RELEASE_EVENT = "drillbook.release.deployed"
DEFAULT_WAIT_SECONDS = 600.0
DEFAULT_POLL_SECONDS = 10.0


@task(name="wait-for-replica", task_run_name="wait-for-replica-{entry.name}", cache_policy=NO_CACHE)
def wait_task(
    entry: DatabaseEntry,
    release: str,
    released_at: datetime,
    expected_schema: int | str | None,
    scratch_root: str,
    wait_seconds: float,
    poll_seconds: float,
) -> ReplicaWait:
    from pathlib import Path

    wait = wait_for_release(
        entry,
        release=release,
        released_at=released_at,
        expected_schema=expected_schema,
        scratch_root=Path(scratch_root),
        wait_seconds=wait_seconds,
        poll_seconds=poll_seconds,
    )
    (get_run_logger().info if wait.outcome == WaitOutcome.READY else get_run_logger().warning)("%s: %s", entry.name, wait.reason)
    return wait


def release_artifact_key(release: str) -> str:
    return f"release-drills-{slug(release)}"


@flow(name="release-drills", flow_run_name="release-{release}", task_runner=ThreadPoolTaskRunner(max_workers=32))
def release_drills(
    release: str,
    schema_version: int | str | None = None,
    databases: list[str] | None = None,
    config_path: str | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    released_at: datetime | None = None,
    batch_deployment: str | None = None,
) -> list[DrillResult]:
    """Wait until each database's replica carries `release`, drill it expecting `schema_version`, gate.

    `released_at` is when the deploy (and its migration) finished; default: now.
    A replica that does not carry the release within `wait_seconds` is drilled
    anyway (for the evidence) and FAILs as replica lag.
    """
    reclaim_signals()  # run from the CLI: SIGTERM stops the drills and records them (see tasks/processes.py)
    release = check_release(release)  # from an event's payload too: checked whole before anything runs
    catalogue = load_catalogue(config_path)
    entries = select_databases(catalogue, None, databases or None)
    released_at = released_at or datetime.now(UTC)
    expected = None if schema_version in (None, "") else schema_version
    limits = ensure_limits_task(quote(entries), None)
    waits = {
        entry.name: wait_task.submit(entry, release, released_at, expected, str(catalogue.scratch_dir), wait_seconds, poll_seconds)
        for entry in entries
    }
    parameters = {}
    for entry in entries:
        wait_state = waits[entry.name]
        wait_state.wait()
        _, wait = unwrap(wait_state.state)
        lag = wait.release_lag if isinstance(wait, ReplicaWait) else None
        parameters[entry.name] = drill_parameters(entry, config_path, release=release, expect_schema=expected, release_lag=lag)
    results = drill_many(entries, catalogue, limits, parameters, batch_deployment)
    results += unlisted_results(catalogue, None, databases or None, release=release)
    record_summary_task(quote(results), release_artifact_key(release), f"Release drills for {release}")
    if not all(r.passed for r in results):
        raise DrillsFailed(f"release {release}", results)
    return results
