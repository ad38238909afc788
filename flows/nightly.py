"""Every database in the catalogue (or a tag / a selection), each as its own drill run, bounded.

The selection, the concurrency limits and the fan-out are shared with the
release run (flows/fleet.py); the nightly adds one Slack summary for the night.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from drillbook.flows.fleet import drill_many, drill_parameters, ensure_limits_task, record_summary_task, select_databases
from drillbook.flows.lifecycle import reclaim_signals
from drillbook.tasks.config import Catalogue, load_catalogue
from drillbook.tasks.errors import DrillsFailed
from drillbook.tasks.slack import SlackDelivery, post_nightly_summary
from drillbook.tasks.verdict import DrillResult, tally


def publish_summary(results: list[DrillResult], catalogue: Catalogue) -> SlackDelivery:
    """The single place the nightly summary leaves drillbook: one Slack message, each failure in its thread."""
    delivery = post_nightly_summary(results, catalogue)
    get_run_logger().info("nightly summary: %s (Slack: %s)", tally(r.verdict for r in results), delivery.note or delivery.status)
    return delivery


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(results: list[DrillResult], catalogue: Catalogue) -> SlackDelivery:
    return publish_summary(results, catalogue)


@flow(name="nightly-drills", task_runner=ThreadPoolTaskRunner(max_workers=32))
def nightly_drills(
    config_path: str | None = None,
    tags: list[str] | None = None,
    databases: list[str] | None = None,
    max_concurrent: int | None = None,
    drill_deployment: str | None = None,
) -> list[DrillResult]:
    """Drill the catalogue's databases (all, by tag, or by name), at most `max_concurrent` at once.

    Fails (DrillsFailed, carrying every result) after the summary is recorded
    and published, unless every drill passed.
    """
    reclaim_signals()  # run from the CLI: SIGTERM stops the drills and records them (see flows/lifecycle.py)
    catalogue = load_catalogue(config_path)
    entries = select_databases(catalogue, tags, databases)
    limits = ensure_limits_task(entries, max_concurrent)
    # One summary message for the night instead of a message per database.
    parameters = {entry.name: drill_parameters(entry, config_path, notify=False) for entry in entries}
    results = drill_many(entries, limits, parameters, drill_deployment)
    record_summary_task(results, "nightly-drills", "Nightly restore drills")
    publish_summary_task(results, catalogue, return_state=True)  # a delivery problem never hides the verdicts
    if not all(r.passed for r in results):
        raise DrillsFailed("nightly drills", results)
    return results
