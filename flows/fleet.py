"""What the nightly and the release runs share: choosing databases, bounding drills, collecting verdicts.

Bounding uses Prefect global concurrency limits, created if missing: one on
drills at once (`drillbook-drills`) and one per object-storage endpoint and
bucket (`drillbook-bucket-...`). Slots are taken with `strict=True`, so a limit
that does not exist is an error instead of silently meaning "unlimited".

Each drill runs either as a subflow of the calling run (the default: one
machine, the CLI, tests) or, given `drill_deployment`, as a flow run of that
deployment through `run_deployment`, so that a fleet spreads the drills over
its workers while the calling run holds the concurrency slots and collects the
results.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from drillbook.flows.runs import drill_result_of, unwrap
from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.replica import parse_s3_url
from drillbook.tasks.verdict import ACTIONS, DrillResult, FailureMode, Finding, Verdict, tally

DRILLS_LIMIT = "drillbook-drills"
DEFAULT_MAX_CONCURRENT = 4  # drills at once, when the limit has to be created
DEFAULT_PER_BUCKET = 4  # drills reading one bucket at once, when the limit has to be created
DRILL_DEPLOYMENT = "drill-database/drillbook-drill"


def select_databases(catalogue: Catalogue, tags: list[str] | None = None, databases: list[str] | None = None) -> list[DatabaseEntry]:
    """The entries to drill: the named ones (each must exist), or those carrying any of `tags`, or all."""
    if databases:
        chosen = [catalogue.get(name) for name in dict.fromkeys(databases)]
    else:
        chosen = list(catalogue.database)
    if tags:
        wanted = set(tags)
        chosen = [entry for entry in chosen if wanted & set(entry.tags)]
        if not chosen:
            known = sorted({tag for entry in catalogue.database for tag in entry.tags}) or ["none"]
            raise ConfigError(f"{catalogue.path}: no database carries the tag(s) {', '.join(sorted(wanted))} (tags in use: {', '.join(known)})")
    return chosen


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "default"


def bucket_limit_name(entry: DatabaseEntry) -> str:
    """One limit per object-storage endpoint and bucket (file replicas share one local limit)."""
    if urlsplit(entry.replica).scheme == "s3":
        location = parse_s3_url(entry.replica)
        host = urlsplit(location.endpoint).netloc if location.endpoint else "aws"
        return f"drillbook-bucket-{slug(host + '-' + location.bucket)}"
    return "drillbook-bucket-local-files"


def ensure_limits(entries: list[DatabaseEntry], max_concurrent: int | None = None) -> dict[str, list[str]]:
    """Create the global concurrency limits that are missing; `max_concurrent` sets the drills limit.

    Returns, per database, the limits its drill takes a slot on.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"max_concurrent must be at least 1 (got {max_concurrent})")
    wanted = {DRILLS_LIMIT: max_concurrent or DEFAULT_MAX_CONCURRENT}
    per_entry = {}
    for entry in entries:
        bucket = bucket_limit_name(entry)
        wanted.setdefault(bucket, DEFAULT_PER_BUCKET)
        per_entry[entry.name] = [DRILLS_LIMIT, bucket]
    with get_client(sync_client=True) as client:
        for name, limit in wanted.items():
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                continue
            if name == DRILLS_LIMIT and max_concurrent is not None and existing.limit != max_concurrent:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=max_concurrent))
    return per_entry


def error_result(entry: DatabaseEntry, detail: str, *, release: str | None = None) -> DrillResult:
    """An ERROR verdict for a drill that could not run or report (so that no database drops out of the summary)."""
    now = datetime.now(UTC)
    return DrillResult(
        drill_id=uuid4().hex,
        database=entry.name,
        release=release,
        started_at=now,
        finished_at=now,
        verdict=Verdict.ERROR,
        failure_mode=FailureMode.DRILL_ERROR,
        action=ACTIONS[FailureMode.DRILL_ERROR],
        findings=[Finding(mode=FailureMode.DRILL_ERROR, detail=detail)],
        rto_target_seconds=entry.rto_target,
        rpo_target_seconds=entry.rpo_target,
        entry=entry.public(),
    )


def _run_drill(entry: DatabaseEntry, parameters: dict[str, Any], drill_deployment: str | None) -> DrillResult:
    if drill_deployment:
        from prefect.deployments import run_deployment

        run = run_deployment(drill_deployment, parameters=parameters, poll_interval=1, flow_run_name=f"drill-{entry.name}")
        state = run.state
        where = f"flow run {run.name} ({run.id})"
    else:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from drillbook.flows.drill import drill_database

        # A subflow in this process needs no heartbeat of its own (the nightly run has one), and
        # the heartbeat thread's exit costs up to a second per drill (bench/run.py, fleet case).
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            state = drill_database(**parameters, return_state=True)
        where = "the drill subflow"
    if state is None:
        return error_result(entry, f"{where} has no state", release=parameters.get("release"))
    try:
        _, outcome = unwrap(state)
    except Exception as exc:  # the run's result lives where this process cannot read it
        return error_result(
            entry,
            f"{where} ended {state.type.value} but its result could not be read ({type(exc).__name__}: {exc}); "
            "give the workers shared result storage (see README, 'Going live')",
            release=parameters.get("release"),
        )
    result = drill_result_of(outcome)
    if result is None:
        return error_result(entry, f"{where} ended {state.type.value} without a drill result: {state.message}", release=parameters.get("release"))
    return result


@task(name="drill-one", cache_policy=NO_CACHE)
def drill_one_task(entry: DatabaseEntry, parameters: dict[str, Any], limits: list[str], drill_deployment: str | None = None) -> DrillResult:
    logger = get_run_logger()
    logger.info("waiting for a slot on %s to drill %s", ", ".join(limits), entry.name)
    with concurrency(limits, occupy=1, strict=True):
        return _run_drill(entry, parameters, drill_deployment)


@task(name="ensure-concurrency-limits", cache_policy=NO_CACHE)
def ensure_limits_task(entries: list[DatabaseEntry], max_concurrent: int | None) -> dict[str, list[str]]:
    return ensure_limits(entries, max_concurrent)


def drill_many(
    entries: list[DatabaseEntry],
    limits: dict[str, list[str]],
    parameters: dict[str, dict[str, Any]],
    drill_deployment: str | None = None,
) -> list[DrillResult]:
    """Drill every entry (in the running flow), each bounded by its limits; one failing never stops the others."""
    futures = [(entry, drill_one_task.submit(entry, parameters[entry.name], limits[entry.name], drill_deployment)) for entry in entries]
    results = []
    for entry, future in futures:
        future.wait()
        _, outcome = unwrap(future.state)
        result = drill_result_of(outcome)
        if result is None:
            detail = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else f"task ended {future.state.type.value}"
            result = error_result(entry, f"the drill could not run: {detail}", release=parameters[entry.name].get("release"))
        results.append(result)
    return results


def _seconds(measured: float | None, target: float) -> str:
    return f"{'-' if measured is None else f'{measured:.1f}s'} / {target:g}s"


def summary_rows(results: list[DrillResult]) -> list[dict[str, str]]:
    """One row per drill: database, verdict, RTO vs target, RPO vs target, failure mode."""
    return [
        {
            "database": r.database,
            "verdict": r.verdict.value,
            "RTO / target": _seconds(r.rto_seconds, r.rto_target_seconds),
            "RPO / target": _seconds(r.rpo_seconds, r.rpo_target_seconds),
            "failure mode": r.failure_mode.value if r.failure_mode else "",
        }
        for r in results
    ]


@task(name="record-summary", cache_policy=NO_CACHE)
def record_summary_task(results: list[DrillResult], key: str, title: str) -> None:
    create_table_artifact(key=key, table=summary_rows(results), description=f"{title}: {tally(r.verdict for r in results)}")


def drill_parameters(entry: DatabaseEntry, config_path: str | None, **extra: Any) -> dict[str, Any]:
    return {"name": entry.name, "config_path": config_path, **{k: v for k, v in extra.items() if v is not None}}


