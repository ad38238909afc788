"""A drill's look ahead: the restore plan before it, the forecast and advice after it (tasks/forecast.py fits them).

Bookkeeping around the verdict, never part of it: a history that cannot be read
turns into a note, and the drill's verdict stands.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.errors import HistoryError, ToolMissing
from drillbook.tasks.forecast import TREND_DAYS, Outlook, RtoForecast, outlook_of
from drillbook.tasks.history.store import TrendPoint, drillbook_version, fleet_points, trend_point_of, trend_points
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.ltx import LEGACY_LAYOUT, ltx_files
from drillbook.tasks.outcome import Status
from drillbook.tasks.plan import RestorePlan, dry_run, estimate, plan_from_listing
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.report.charts import render_chart
from drillbook.tasks.result import DrillResult

FLEET_DAYS = 30  # a database without history borrows the throughput of the fleet's drills from this many days
FLEET_SAMPLE = 1000  # ... its newest this many drills: the median of a thousand says as much as that of a whole big fleet's


class HistorySnapshot:
    """The drill history read once for a fleet's drills: each drill's plan and forecast filter it in memory.

    Before (bench/profile.py, 20 x 1 MB nightly), every drill read its own points twice and, with no passing drill of
    its own yet, the whole fleet's: one history read per drill at least, the fleet's growing with the fleet. It holds
    the drills of `databases` (all: None) from the last TREND_DAYS and the fleet's newest FLEET_SAMPLE, never the
    whole history (tests/test_history_scale.py: a history of 1,000,000 drills). A failed read is kept and raised
    where a drill would have met it, so the drill's notes say the same thing as before.
    Tonight's earlier drills are not in it: a drill's estimate and forecast rest on the nights before.
    """

    def __init__(self, history_url: str, databases: list[str] | None = None, now: datetime | None = None):
        self._error: HistoryError | None = None
        now = now or datetime.now(UTC)
        self._points: dict[str, list[TrendPoint]] = {}
        self._fleet: list[TrendPoint] = []
        try:
            self._points = trend_points(history_url, databases, since=now - timedelta(days=TREND_DAYS))
            self._fleet = fleet_points(history_url, now - timedelta(days=FLEET_DAYS), FLEET_SAMPLE)
        except HistoryError as exc:
            self._error = exc

    def trend_points(self, databases: list[str], *, since: datetime | None = None) -> dict[str, list[TrendPoint]]:
        """What tasks/history/store.py's trend_points would return for these databases, from the snapshot (the last TREND_DAYS)."""
        if self._error is not None:
            raise self._error
        return {name: [p for p in self._points.get(name, []) if since is None or p.started_at >= since] for name in databases}

    def fleet_points(self, since: datetime) -> list[TrendPoint]:
        if self._error is not None:
            raise self._error
        return [p for p in self._fleet if p.started_at >= since]


def _points(history_url: str, snapshot: HistorySnapshot | None, databases: list[str], since: datetime) -> dict[str, list[TrendPoint]]:
    if snapshot is not None:
        return snapshot.trend_points(databases, since=since)
    return trend_points(history_url, databases, since=since)


@lru_cache(maxsize=1)
def litestream_version() -> str | None:
    try:
        done = run_litestream(["version"], timeout=10)
    except ToolMissing:
        return None
    return (done.stdout.strip()[:32] or None) if done.record.ok else None


def tool_versions() -> dict[str, str]:
    found = {"drillbook": drillbook_version(), "litestream": litestream_version()}
    return {name: value for name, value in found.items() if value}


def plan_restore(
    entry: DatabaseEntry,
    history_url: str,
    replica: ReplicaState | None = None,
    *,
    litestream: bool = False,
    history: HistorySnapshot | None = None,
) -> RestorePlan:
    """litestream's dry-run plan with the expected RTO from the history (the fleet's when this database has none).

    `history`: a fleet's snapshot, read once for all its drills, instead of the store."""
    if replica is not None and not replica.ok:
        return RestorePlan.skipped("not planned: the replica inspection did not pass")
    if replica is not None and replica.layout == LEGACY_LAYOUT:
        return RestorePlan.skipped(
            f"not planned: litestream cannot dry-run a 0.3 replica; a restore fetches generation {replica.generations[-1]}'s newest "
            f"snapshot and the WAL segments after it ({replica.total_bytes:,} bytes listed)"
        )
    # The inspection's listing gives the plan without a litestream process (`litestream=True`: litestream's own, as `plan --litestream`).
    listing = replica.listing if replica is not None and not litestream else None
    plan = plan_from_listing(ltx_files(listing)) if listing is not None else dry_run(entry)
    if plan.status != Status.PASSED:
        return plan
    now = datetime.now(UTC)
    try:
        own = _points(history_url, history, [entry.name], now - timedelta(days=TREND_DAYS)).get(entry.name, [])
        fleet: list[TrendPoint] = []
        if not any(p.verdict == "PASS" and p.restore_seconds for p in own):
            since = now - timedelta(days=FLEET_DAYS)
            fleet = history.fleet_points(since) if history is not None else fleet_points(history_url, since, FLEET_SAMPLE)
    except HistoryError as exc:
        return plan.model_copy(update={"summary": f"{plan.summary}; no estimate: {exc}"})
    return estimate(plan, own, fleet)


def chart_path(evidence_dir: Path, result: DrillResult) -> Path:
    return evidence_dir / result.database / f"{result.started_at:%Y%m%dT%H%M%SZ}-{result.drill_id}-rto.png"


def look_ahead(
    result: DrillResult, catalogue: Catalogue, plan: RestorePlan | None = None, history: HistorySnapshot | None = None
) -> DrillResult:
    """The drill with its plan, tool versions and outlook (forecast, advice, and a chart when inside the horizon).

    Never raises: whatever goes wrong here becomes a note, and the verdict, evidence and report go on.
    """
    try:
        return _look_ahead(result, catalogue, plan, history)
    except Exception as exc:  # bookkeeping beside the verdict must never cost the verdict
        result.notes.append(f"no forecast: it failed ({type(exc).__name__}: {exc}); the verdict stands")
        return result


def _look_ahead(result: DrillResult, catalogue: Catalogue, plan: RestorePlan | None, history: HistorySnapshot | None) -> DrillResult:
    result.plan = plan
    result.versions = tool_versions()
    try:
        since = result.started_at - timedelta(days=TREND_DAYS)
        own = _points(catalogue.history_url, history, [result.database], since).get(result.database, [])
    except HistoryError:  # the record step says what is wrong with the store, in the notes
        forecast = RtoForecast(
            database=result.database,
            known=False,
            drills=0,
            min_drills=catalogue.drillbook.forecast_min_drills,
            target_seconds=result.rto_target_seconds,
            rto_seconds=result.rto_seconds,
            horizon_days=catalogue.drillbook.forecast_horizon / 86400,
            line="no forecast: the drill history could not be read",
        )
        result.outlook = Outlook(forecast=forecast)
        return result
    points = [p for p in own if p.drill_id != result.drill_id] + [trend_point_of(result)]
    result.outlook = outlook_of(catalogue, result.database, points, result.rto_target_seconds, result.finished_at)
    if result.outlook.forecast.warning:
        try:
            path = chart_path(catalogue.evidence_dir, result)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(
                render_chart(points, result.outlook.forecast, title=f"{result.database}: RTO and RPO", fmt="png", now=result.finished_at)
            )  # type: ignore[arg-type]
            result.outlook.chart = str(path)
        except OSError as exc:
            result.notes.append(f"the forecast chart could not be written ({exc.strerror}); the forecast line stands")
    return result
