"""The hourly stale-drill check (deployment `drillbook-stale`): one Slack alert per database that became stale or recovered."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from drillbook.tasks.config import Catalogue, load_catalogue
from drillbook.tasks.history.stale import StaleStatus, stale_status
from drillbook.tasks.notify import broadcast
from drillbook.tasks.transitions import stale_transitions


def check_stale(catalogue: Catalogue, say: Callable[[str], None] = print) -> list[StaleStatus]:
    """Every database's status; one alert for each database that became stale or recovered since the last check."""
    statuses = stale_status(catalogue)
    for transition in stale_transitions(catalogue, statuses, lambda alert: broadcast(catalogue, alert)):
        say(f"{transition.kind} alert for {transition.status.database}: {transition.delivery}")
    return statuses


@task(name="check-stale", cache_policy=NO_CACHE)
def check_stale_task(catalogue: Catalogue) -> list[StaleStatus]:
    return check_stale(catalogue, get_run_logger().warning)


@flow(name="stale-drills")
def stale_drills(config_path: str | None = None) -> list[StaleStatus]:
    """Which databases have had no PASS within their max_drill_age; alert once per change (README, "Stale drills")."""
    catalogue = load_catalogue(config_path)
    statuses = check_stale_task(quote(catalogue))
    unlisted = [{"database": directory.name, "stale": "ERROR", "status": str(problem)} for directory, problem in catalogue.unlisted()]
    create_table_artifact(
        key="stale-drills",
        table=unlisted + [{"database": s.database, "stale": "STALE" if s.stale else "ok", "status": s.line()} for s in statuses],
        description=f"{sum(s.stale for s in statuses)} of {len(statuses)} database(s) stale",
    )
    return statuses
