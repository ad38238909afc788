"""One restore drill, as the runbook says it: inspect, restore, check, judge, record, report, clean up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, TypeVar
from uuid import uuid4

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.cleanup import clean_up
from tasks.config import DatabaseEntry, load_catalogue
from tasks.errors import DrillFailed
from tasks.evidence import write_bundle
from tasks.integrity import IntegrityReport, check_integrity
from tasks.replica import ReplicaState, inspect_replica
from tasks.report import headline, render_markdown
from tasks.restore import RestoreResult, make_scratch, restore_database
from tasks.steps import StepResult
from tasks.verdict import DrillResult, judge

S = TypeVar("S", bound=StepResult)


@task(name="inspect-replica", cache_policy=NO_CACHE)
def inspect_replica_task(entry: DatabaseEntry) -> ReplicaState:
    get_run_logger().info("inspecting replica %s", entry.replica_redacted)
    return inspect_replica(entry)


@task(name="restore-database", cache_policy=NO_CACHE)
def restore_task(entry: DatabaseEntry, replica: ReplicaState, scratch: Path) -> RestoreResult:
    get_run_logger().info("restoring %s into %s", entry.name, scratch)
    return restore_database(entry, replica, scratch)


@task(name="check-integrity", cache_policy=NO_CACHE)
def check_integrity_task(restore: RestoreResult, entry: DatabaseEntry, expected_schema: int | str | None) -> IntegrityReport:
    if not restore.ok or restore.path is None:
        return IntegrityReport.skipped("not run: there is no restored copy")
    get_run_logger().info("checking integrity of %s", restore.path)
    return check_integrity(restore.path, expected_schema=expected_schema, schema_query=entry.schema_version_query)


@task(name="record-evidence", cache_policy=NO_CACHE)
def record_task(result: DrillResult, evidence_dir: Path) -> DrillResult:
    path = write_bundle(result, evidence_dir)
    create_markdown_artifact(
        key=f"drill-{_artifact_key(result.database)}",
        markdown=render_markdown(result),
        description=f"Restore drill of {result.database}: {result.verdict.value}",
    )
    get_run_logger().info("evidence written to %s", path)
    return result


@task(name="report", cache_policy=NO_CACHE)
def report_task(result: DrillResult) -> None:
    logger = get_run_logger()
    (logger.info if result.passed else logger.error)(headline(result))


def _step(step_task: Callable[..., Any], kind: type[S], *args: Any) -> S:
    """Run a step; if its task crashed, the drill still reaches its verdict with that step as an error."""
    state = step_task(*args, return_state=True)
    if state.is_completed():
        return state.result()
    return kind.crashed(state.result(raise_on_failure=False))


def _artifact_key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "database"


def _flow_run_url() -> str | None:
    from prefect.runtime import flow_run

    try:
        return flow_run.ui_url
    except Exception:  # no UI configured: the report simply has no link
        return None


@flow(name="drill-database", flow_run_name="drill-{name}")
def drill_database(
    name: str,
    config_path: str | None = None,
    release: str | None = None,
    expect_schema: int | str | None = None,
    release_lag: str | None = None,
) -> DrillResult:
    """Restore `name` from its replica into scratch, check it, and judge RTO / RPO against its targets.

    `release_lag` (from a release drill's wait) says the replica did not carry the
    release in time; the verdict leads with it as replica lag.

    Ends failed (DrillFailed, carrying the result) after the evidence and report
    are done, whenever the verdict is not PASS.
    """
    catalogue = load_catalogue(config_path)
    entry = catalogue.get(name)
    expected = expect_schema if expect_schema is not None else entry.schema_version
    drill_id = uuid4().hex[:8]
    started_at = datetime.now(UTC)
    scratch = make_scratch(catalogue.scratch_dir, entry, drill_id)

    replica = _step(inspect_replica_task, ReplicaState, entry)
    restore = _step(restore_task, RestoreResult, entry, replica, scratch)
    integrity = _step(check_integrity_task, IntegrityReport, restore, entry, expected)

    result = judge(
        entry,
        drill_id=drill_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        replica=replica,
        restore=restore,
        integrity=integrity,
        release=release,
        release_lag=release_lag,
    )
    result.flow_run_url = _flow_run_url()
    result.scratch_kept = clean_up(result, scratch, catalogue.drillbook.keep_failed)
    result = record_task(result, catalogue.evidence_dir)
    report_task(result)
    if not result.passed:
        raise DrillFailed(result)
    return result
