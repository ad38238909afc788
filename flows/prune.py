"""The daily pruning (deployment `drillbook-prune`): history rows, evidence files and drillbook's flow runs older than the retention."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from drillbook.tasks.config import Catalogue, load_catalogue
from drillbook.tasks.history.prune import PruneCounts, prune


@task(name="prune", cache_policy=NO_CACHE)
def prune_task(catalogue: Catalogue, apply: bool) -> PruneCounts:
    counts = prune(catalogue, apply=apply)
    get_run_logger().info("%s", counts.line())
    return counts


@flow(name="prune-history")
def prune_history(config_path: str | None = None, apply: bool = True) -> PruneCounts:
    """Delete what is older than [drillbook] history_retention, each database's newest drill and newest PASS kept (README, "History")."""
    catalogue = load_catalogue(config_path)
    return prune_task(quote(catalogue), apply)
