"""What the nightly and the release runs share: choosing databases, bounding drills, collecting verdicts.

Bounding uses Prefect global concurrency limits, created if missing: one on
drills at once (`drillbook-drills`) and one per object-storage endpoint and
bucket (`drillbook-bucket-...`). Slots are taken with `strict=True`, so a limit
that does not exist is an error instead of silently meaning "unlimited".

Drills run inside worker tasks, with no task runs of their own (a subflow per
drill cost more than the restore of a small database, and each task run costs
the server CPU; bench/run.py measures both): each worker holds its slot on the drills limit for its whole life and drills from a
queue grouped by bucket, so slots are taken per worker, not per drill. On a
fleet (`batch_deployment`), the databases travel to the workers as batches:
runs of the `drill-batch` flow, each drilling its share the same way, so a
worker starts one process per batch, not per database.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel, Field

from drillbook.flows.drill import drill
from drillbook.flows.progress import PROGRESS
from drillbook.flows.queue import DrillQueue, held_slot
from drillbook.flows.runs import crash_detail, drill_result_of, drill_results_in, label_worker, unwrap
from drillbook.tasks.config import Catalogue, DatabaseEntry, load_catalogue
from drillbook.tasks.errors import ConfigError, DrillFailed, DrillsFailed, HistoryError
from drillbook.tasks.history.budget import expected_seconds
from drillbook.tasks.history.metrics import refresh_metrics_file
from drillbook.tasks.lookahead import HistorySnapshot
from drillbook.tasks.outcome import ACTIONS, FailureMode, Finding, Verdict
from drillbook.tasks.result import DrillResult
from drillbook.tasks.storage import store_scope
from drillbook.tasks.text import slug

DRILLS_LIMIT = "drillbook-drills"
DEFAULT_MAX_CONCURRENT = 4  # drills at once, when the limit has to be created
DEFAULT_PER_BUCKET = 4  # drills reading one bucket at once, when the limit has to be created
DRILL_DEPLOYMENT = "drill-database/drillbook-drill"  # one drill (ad hoc, or a retry from the UI)
BATCH_DEPLOYMENT = "drill-batch/drillbook-batch"  # what nightly and release send databases to on a fleet
SLOT_STAGGER = 0.15  # seconds between the workers' first slot requests (bench/run.py: a burst of them met 503s at fleet start)


def select_databases(catalogue: Catalogue, tags: list[str] | None = None, databases: list[str] | None = None) -> list[DatabaseEntry]:
    """The entries to drill: the named ones (each must exist), or those carrying any of `tags`, or all."""
    if databases:
        chosen = [catalogue.get(name) for name in dict.fromkeys(databases)]
    else:
        chosen = catalogue.databases()
    if tags:
        wanted = set(tags)
        chosen = [entry for entry in chosen if wanted & set(entry.tags)]
        if not chosen and not unlisted_chosen(catalogue, tags, databases):
            known = sorted({tag for entry in catalogue.databases() for tag in entry.tags}) or ["none"]
            raise ConfigError(
                f"{catalogue.path}: no database carries the tag(s) {', '.join(sorted(wanted))} (tags in use: {', '.join(known)})"
            )
    return chosen


def unlisted_chosen(catalogue: Catalogue, tags: list[str] | None = None, databases: list[str] | None = None) -> list[tuple[Any, str]]:
    """The chosen [[directories]] entries whose replica prefix could not be listed, each with its error (none when names were given)."""
    if databases:
        return []
    wanted = set(tags or ())
    return [(directory, str(problem)) for directory, problem in catalogue.unlisted() if not wanted or wanted & set(directory.tags)]


def unlisted_results(
    catalogue: Catalogue, tags: list[str] | None = None, databases: list[str] | None = None, release: str | None = None
) -> list[DrillResult]:
    """One ERROR per chosen directory whose replica could not be listed, under the directory's name: its tenants were not drilled."""
    return [error_result(directory, problem, release=release) for directory, problem in unlisted_chosen(catalogue, tags, databases)]


def bucket_limit_name(entry: DatabaseEntry) -> str:
    """One limit per store: endpoint and bucket (S3, GCS), container (Azure), object store (NATS), host (SFTP, WebDAV); file replicas share one."""
    return f"drillbook-bucket-{slug(store_scope(entry.replica))}"


class DrillLimits(BaseModel):
    """The concurrency limits a fan-out works under: the drills limit's size, and each database's bucket limit."""

    drills: int = Field(ge=1, description="Slots on drillbook-drills: how many workers a fan-out starts (at most).")
    buckets: dict[str, str] = Field(description="Database name -> the bucket limit its drill takes a slot on.")


def ensure_limits(entries: list[DatabaseEntry], max_concurrent: int | None = None) -> DrillLimits:
    """Create the global concurrency limits that are missing; `max_concurrent` sets the drills limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"max_concurrent must be at least 1 (got {max_concurrent})")
    wanted = {DRILLS_LIMIT: max_concurrent or DEFAULT_MAX_CONCURRENT}
    buckets = {}
    for entry in entries:
        buckets[entry.name] = bucket_limit_name(entry)
        wanted.setdefault(buckets[entry.name], DEFAULT_PER_BUCKET)
    drills = wanted[DRILLS_LIMIT]
    with get_client(sync_client=True) as client:
        for name, limit in wanted.items():
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
                continue
            if name == DRILLS_LIMIT:
                if max_concurrent is not None and existing.limit != max_concurrent:
                    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=max_concurrent))
                else:
                    drills = existing.limit
    return DrillLimits(drills=max(1, drills), buckets=buckets)


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


def _run_drill(
    entry: DatabaseEntry, catalogue: Catalogue, parameters: dict[str, Any], history: HistorySnapshot | None = None
) -> DrillResult:
    """One drill inside the running worker task: neither the drill nor its steps are runs of their own.

    Measured (bench/run.py, two cores, Prefect server): a subflow per drill cost
    about 0.35 s of wall and 0.2 s of client and server CPU per database; four
    task runs per drill 0.12 s of wall and 0.19 s of server CPU, a PASS's
    Markdown artifact 0.11 s. The per-database record is the evidence bundle, the
    history row and the fleet's summary table; a drill that did not pass keeps
    its Markdown artifact in the UI. `drillbook run` and the drillbook-drill
    deployment still run the drill as a flow of its own, its steps as task runs.
    """
    options = {key: value for key, value in parameters.items() if key not in ("name", "config_path")}
    try:
        outcome: Any = drill(entry, catalogue, **options, own_runs=False, history=history)
    except DrillFailed as failed:  # a FAIL or ERROR verdict, carrying its result
        outcome = failed
    result = drill_result_of(outcome)
    if result is None:
        return error_result(entry, f"the drill ended without a drill result: {outcome!r}", release=parameters.get("release"))
    return result


def _batch_outcome(run: Any, deadline: datetime | None) -> tuple[dict[str, DrillResult], bool, str]:
    """What an ended batch run gives back: its results by database, whether they are all it started (under a
    deadline), and what to say for a database it returned nothing for."""
    where = f"batch run {run.name} ({run.id})"
    if run.state.is_crashed():  # its process died (killed, out of memory): no result to read, the worker and process named
        return {}, False, crash_detail(run, where)
    try:
        _, value = unwrap(run.state)
    except Exception as exc:  # the run ended, but its result lives where this process cannot read it
        return (
            {},
            False,
            f"{where} ended {run.state.type.value} but its result could not be read ({type(exc).__name__}: {exc}); "
            "give the workers shared result storage (see README, 'Going live')",
        )
    try:
        results = {r.database: r for r in drill_results_in(value, run.state)}
    except Exception as exc:  # the batch run failed without results
        return {}, False, f"{where} ended {run.state.type.value}: {type(exc).__name__}: {exc}"
    return results, deadline is not None, f"{where} returned no result for it"


def _run_batch(
    batch: list[DatabaseEntry], parameters: dict[str, dict[str, Any]], batch_deployment: str, workers: int, deadline: datetime | None = None
) -> list[DrillResult]:
    """Drill `batch` in a run of the batch deployment (on whichever worker takes it); its results are read back here.

    Under a `deadline`, a database a batch that ended returned no result for was not started (the budget was spent)."""
    from prefect.deployments import run_deployment

    names = [entry.name for entry in batch]
    run = run_deployment(
        batch_deployment,
        parameters={"drills": [parameters[name] for name in names], "workers": workers, **({"deadline": deadline} if deadline else {})},
        poll_interval=1,
        flow_run_name=f"drill-batch-{names[0]}-and-{len(names) - 1}-more" if len(names) > 1 else f"drill-batch-{names[0]}",
    )
    results, read, detail = _batch_outcome(run, deadline)
    return [
        results.get(entry.name) or error_result(entry, detail, release=parameters[entry.name].get("release"))
        for entry in batch
        if not read or entry.name in results
    ]


def drill_one(
    entry: DatabaseEntry, catalogue: Catalogue, parameters: dict[str, Any], history: HistorySnapshot | None = None
) -> DrillResult:
    """One drill; anything that escapes it becomes that database's ERROR, never the fan-out's crash."""
    try:
        result = _run_drill(entry, catalogue, parameters, history)
    except Exception as exc:  # noqa: BLE001 - reported as the drill's ERROR with its type and text
        result = error_result(entry, f"the drill could not run: {type(exc).__name__}: {exc}", release=parameters.get("release"))
    PROGRESS.ended(result.verdict.value, entry.name)
    return result


@task(name="drill-worker", task_run_name="drill-worker-{number}", cache_policy=NO_CACHE)
def drill_worker_task(
    number: int, queue: DrillQueue, limits: DrillLimits, catalogue: Catalogue, parameters: dict[str, dict[str, Any]]
) -> dict[str, DrillResult]:
    """Hold one drills slot for the worker's whole life and drill from the queue.

    A slot taken per drill stalls: re-acquiring right after a release on a full
    limit gets HTTP 423 with a Retry-After of about the average occupancy (seconds
    per drill). The bucket slot is changed only when the next database reads
    another bucket. Leases are renewed in the background; a failed renewal is
    logged, not fatal, so a long restore is never cut short by the bookkeeping.
    """
    logger = get_run_logger()
    results: dict[str, DrillResult] = {}
    time.sleep(SLOT_STAGGER * (number - 1))  # first requests apart: a SQLite-backed server answers a burst with 503, a 2 s client wait
    with contextlib.ExitStack() as worker_slot:
        worker_slot.enter_context(held_slot(DRILLS_LIMIT, logger))
        held: str | None = None
        bucket_slot = contextlib.ExitStack()
        try:
            while (entry := queue.take(held)) is not None:
                bucket = limits.buckets[entry.name]
                if bucket != held:
                    bucket_slot.close()
                    bucket_slot = contextlib.ExitStack()
                    bucket_slot.enter_context(held_slot(bucket, logger))
                    held = bucket
                logger.info("drilling %s (slots on %s, %s)", entry.name, DRILLS_LIMIT, bucket)
                PROGRESS.started(entry.name)
                results[entry.name] = drill_one(entry, catalogue, parameters[entry.name], queue.history)
                queue.drilled(entry, results[entry.name])
        finally:
            bucket_slot.close()
    return results


@task(name="ensure-concurrency-limits", cache_policy=NO_CACHE)
def ensure_limits_task(entries: list[DatabaseEntry], max_concurrent: int | None) -> DrillLimits:
    return ensure_limits(entries, max_concurrent)


@task(name="drill-batch-run", task_run_name="drill-batch-run-{number}", cache_policy=NO_CACHE)
def drill_batch_run_task(
    number: int,
    batch: list[DatabaseEntry],
    parameters: dict[str, dict[str, Any]],
    batch_deployment: str,
    workers: int,
    deadline: datetime | None = None,
) -> dict[str, DrillResult]:
    """Results by database name, as a worker task returns them."""
    return {result.database: result for result in _run_batch(batch, parameters, batch_deployment, workers, deadline)}


def batches_of(entries: list[DatabaseEntry], buckets: dict[str, str], count: int, *, by_risk: bool = False) -> list[list[DatabaseEntry]]:
    """`count` batches of about equal size, each a run of neighbours in bucket order (fewer bucket slot changes).

    `by_risk` (a budget's deadline): dealt round the batches in the given order, so every batch starts with the riskiest."""
    count = max(1, min(count, len(entries)))
    if by_risk:
        return [entries[start::count] for start in range(count)]
    ordered = sorted(entries, key=lambda entry: buckets[entry.name])
    size, extra = divmod(len(ordered), count)
    batches, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        batches.append(ordered[start:end])
        start = end
    return batches


def expected_walls(entries: list[DatabaseEntry], history: HistorySnapshot) -> dict[str, float | None]:
    """Each database's expected wall time from the history (the progress line's ETA); none where it cannot be read."""
    try:
        points = history.trend_points([entry.name for entry in entries])
    except HistoryError:
        return {}
    return {name: expected_seconds(found) for name, found in points.items()}


def drill_many(
    entries: list[DatabaseEntry],
    catalogue: Catalogue,
    limits: DrillLimits,
    parameters: dict[str, dict[str, Any]],
    batch_deployment: str | None = None,
    workers: int | None = None,
    deadline: datetime | None = None,
    history: HistorySnapshot | None = None,
) -> list[DrillResult]:
    """Drill every entry; one failing never stops the others. Results come back in the entries' order.

    With `deadline` (a nightly's budget): no drill starts after it, here or in a batch run, and those not
    started have no result; batches are then dealt in the entries' (risk) order. `history`: a snapshot already read (the nightly's budget read it), else one read here.

    In this run (the default): up to `workers` (default: the drills limit) worker
    tasks drill from one queue, each holding its slot throughout. With
    `batch_deployment`: the databases go out as that many runs of the batch
    deployment, one worker each, so a fleet's workers share them without a
    process start per database. Either way the global limits bound the drills
    across every run on the server. A database whose worker or batch crashed
    gets an ERROR result. The history is read once for the drills run here, and the metrics file
    refreshed once when they end (bench/profile.py: once a drill, each read grew with the fleet).
    """
    if not entries:
        return []
    count = max(1, min(workers or limits.drills, len(entries)))
    history = history or HistorySnapshot(catalogue.history_url, [entry.name for entry in entries])
    PROGRESS.begin(len(entries), expected=expected_walls(entries, history), at_once=count)
    batches = batches_of(entries, limits.buckets, count, by_risk=deadline is not None) if batch_deployment else []
    # quote(): Prefect walks every task input for futures to link (about 3 s a call for 1,000 results, measured: docs/performance.md);
    # none of these holds one, and the task receives the value itself.
    if batch_deployment:
        futures = [
            drill_batch_run_task.submit(number, quote(batch), quote(parameters), batch_deployment, 1, deadline)
            for number, batch in enumerate(batches, start=1)
        ]
    else:
        queue = DrillQueue(entries, limits.buckets, history, deadline)
        futures = [
            drill_worker_task.submit(number, quote(queue), quote(limits), quote(catalogue), quote(parameters))
            for number in range(1, count + 1)
        ]
    done: dict[str, DrillResult] = {}
    problems = []
    finished: set[str] = set()  # the databases of the batch runs that ended and were read back
    for index, future in enumerate(futures):  # each a worker task or a batch run: results by database name
        future.wait()
        completed, value = unwrap(future.state)
        if completed:
            done.update(value)
            finished.update(entry.name for entry in (batches[index] if batch_deployment else ()))
            for result in value.values() if batch_deployment else ():  # a batch run drilled them in its own process
                PROGRESS.ended(result.verdict.value, result.database)
        else:
            problems.append(f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else f"ended {future.state.type.value}")
    PROGRESS.publish(final=True)
    detail = "; ".join(problems) or "no worker drilled it"
    note = refresh_metrics_file(catalogue)  # [drillbook] metrics_file, when set: never raises, a problem is its note
    if note:
        get_run_logger().warning("%s", note)
    # Not started under the deadline: left in this run's queue, or a batch that ended returned no result for it.
    stopped = finished - set(done) if batch_deployment else set(queue.stopped)
    return [
        done.get(entry.name) or error_result(entry, f"the drill could not run: {detail}", release=parameters[entry.name].get("release"))
        for entry in entries
        if entry.name not in stopped
    ]


def drill_parameters(entry: DatabaseEntry, config_path: str | None, **extra: Any) -> dict[str, Any]:
    return {"name": entry.name, "config_path": config_path, **{k: v for k, v in extra.items() if v is not None}}


@flow(name="drill-batch", task_runner=ThreadPoolTaskRunner(max_workers=32))
def drill_batch(drills: list[dict[str, Any]], workers: int = 1, deadline: datetime | None = None) -> list[DrillResult]:
    """Drill a batch of databases (each item: drill_database's parameters) with `workers` slot-holding workers.

    The nightly and release runs send their databases to the workers as batches
    of this flow. Fails (DrillsFailed, carrying every result) unless all passed.
    With a `deadline` (a budgeted nightly's), no drill starts after it: those have no result.
    """
    try:
        label_worker(flow_run.id)
    except Exception as exc:  # noqa: BLE001 - only the name a crash report would give; the drills go on
        get_run_logger().warning("could not label this batch run with its worker: %s: %s", type(exc).__name__, exc)
    paths = {parameters.get("config_path") for parameters in drills}
    if len(paths) != 1:
        raise ConfigError(f"a drill batch reads one catalogue; this one names {len(paths)}: {sorted(map(str, paths))}")
    catalogue = load_catalogue(paths.pop())  # once for the batch: its drills receive the loaded entries
    entries = [catalogue.get(parameters["name"]) for parameters in drills]
    limits = ensure_limits(entries, None)
    results = drill_many(entries, catalogue, limits, {p["name"]: p for p in drills}, workers=workers, deadline=deadline)
    if not all(r.passed for r in results):
        raise DrillsFailed(f"drill batch of {len(results)}", results)
    return results
