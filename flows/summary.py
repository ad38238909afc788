"""A fan-out's summary: one table row per drill, the run's table artifact (the nightly's and the release's)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from drillbook.tasks.outcome import Verdict, tally
from drillbook.tasks.report.drill import md
from drillbook.tasks.result import DrillResult


def _seconds(measured: float | None, target: float) -> str:
    return f"{'-' if measured is None else f'{measured:.1f}s'} / {target:g}s"


def summary_rows(results: list[DrillResult]) -> list[dict[str, str]]:
    """One row per drill: database, verdict, RTO vs target, RPO vs target, failure mode."""
    return [
        {
            "database": r.database + (f" @{r.point.request.kind.value}" if r.point is not None and r.point.request is not None else ""),
            "verdict": r.verdict.value,
            "RTO / target": _seconds(r.rto_seconds, r.rto_target_seconds),
            "RPO / target": _seconds(r.rpo_seconds, r.rpo_target_seconds),
            "failure mode": r.failure_mode.value if r.failure_mode else "",
        }
        for r in results
    ]


ARTIFACT_ROWS = 500  # the table artifact's rows at most: a fleet of 10,000 must not put 10,000 rows in Prefect's database a night


def shown_in_artifact(results: list[DrillResult], limit: int = ARTIFACT_ROWS) -> list[DrillResult]:
    """The drills the table artifact shows: all of a fleet up to `limit`; past it, every drill that did not pass
    first (up to `limit`), then passes to fill, each kept in the run's order. The history and the page keep them all."""
    if len(results) <= limit:
        return results
    chosen = {id(r) for r in [r for r in results if r.verdict != Verdict.PASS][:limit]}
    chosen |= {id(r) for r in [r for r in results if r.verdict == Verdict.PASS][: limit - len(chosen)]}
    return [r for r in results if id(r) in chosen]


@task(name="record-summary", cache_policy=NO_CACHE)
def record_summary_task(results: list[DrillResult], key: str, title: str, notes: list[str] | None = None) -> None:
    """The run's table artifact; `notes` (a budgeted nightly's coverage, what it left and why) are lines of its description."""
    # The title carries a release from outside; the description is Markdown in Prefect's UI.
    lines = [f"{title}: {tally(r.verdict for r in results)}", *(notes or [])]
    shown = shown_in_artifact(results)
    if len(shown) < len(results):
        lines.append(
            f"showing {len(shown):,} of {len(results):,} drills (every one that did not pass first): the rest are in the history "
            "(`drillbook history`) and the page"
        )
    create_table_artifact(key=key, table=summary_rows(shown), description="\n\n".join(md(line) for line in lines))
