"""The replication watch (deployment `drillbook-watch`, every 5 minutes): one Slack alert when replication stops, one when it resumes."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from drillbook.tasks.config import Catalogue, load_catalogue
from drillbook.tasks.history.metrics import refresh_metrics_file
from drillbook.tasks.notify import broadcast
from drillbook.tasks.transitions import watch_transitions, writer_alerts
from drillbook.tasks.watch import WatchStatus, watch_databases


def check_replication(catalogue: Catalogue, names: list[str] | None = None, say: Callable[[str], None] = print) -> list[WatchStatus]:
    """Every (or the named) database's replication; one alert per database that stopped or resumed; the metrics file refreshed."""
    statuses = watch_databases(catalogue, names)
    for transition in watch_transitions(catalogue, statuses, lambda alert: broadcast(catalogue, alert)):
        say(f"replication {transition.kind} alert for {transition.status.database}: {transition.delivery}")
    for transition in writer_alerts(catalogue, statuses, lambda alert: broadcast(catalogue, alert)):
        say(f"two-writers alert for {transition.status.database}: {transition.delivery}")
    note = refresh_metrics_file(catalogue)
    if note:
        say(note)
    return statuses


@task(name="check-replication", cache_policy=NO_CACHE)
def check_replication_task(catalogue: Catalogue) -> list[WatchStatus]:
    return check_replication(catalogue, say=get_run_logger().warning)


@flow(name="replication-watch")
def replication_watch(config_path: str | None = None) -> list[WatchStatus]:
    """Is every database still replicating? Replica listing and newest header only, no restore (README, "Watch")."""
    catalogue = load_catalogue(config_path)
    statuses = check_replication_task(quote(catalogue))
    create_table_artifact(
        key="replication-watch",
        table=[{"database": s.database, "replication": s.replication.value, "status": s.detail} for s in statuses],
        description=f"{sum(s.stopped for s in statuses)} of {len(statuses)} database(s) stopped replicating",
    )
    return statuses
