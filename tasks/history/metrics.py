"""The drill history as Prometheus metrics (prometheus_client's exposition format).

Per database: seconds since the last passing drill (an age, which alerts
cleanly: `> max_drill_age`), the last RTO and RPO and their targets, the last
verdict, and the forecast's days until the RTO reaches its target. Written as a
node_exporter textfile-collector file (atomically, by prometheus_client),
printed, or pushed to a Pushgateway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway, write_to_textfile

from drillbook.tasks.config import Catalogue
from drillbook.tasks.errors import HistoryError
from drillbook.tasks.history.store import TrendPoint, last_passes, recent_drills, trend_point, trend_points
from drillbook.tasks.history.trends import TREND_DAYS, forecast_for

VERDICTS = ("PASS", "FAIL", "ERROR")


def build_registry(
    catalogue: Catalogue, now: datetime | None = None, points: dict[str, list[TrendPoint]] | None = None
) -> CollectorRegistry:
    now = now or datetime.now(UTC)
    names = [entry.name for entry in catalogue.database]
    points = trend_points(catalogue.history_url, names, since=now - timedelta(days=TREND_DAYS)) if points is None else points
    passes = last_passes(catalogue.history_url)
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ("database",)) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    age = gauge("drillbook_last_pass_age_seconds", "Seconds since the newest passing drill started (absent: never passed).")
    last_pass = gauge("drillbook_last_pass_timestamp_seconds", "Unix time the newest passing drill started.")
    max_age = gauge("drillbook_max_drill_age_seconds", "The database's max_drill_age: older last PASS means stale.")
    stale = gauge("drillbook_stale", "1 when the last PASS is older than max_drill_age (or there is none).")
    rto = gauge("drillbook_last_rto_seconds", "Measured RTO of the newest drill that measured one.")
    rto_target = gauge("drillbook_rto_target_seconds", "RTO target from the catalogue.")
    rpo = gauge("drillbook_last_rpo_seconds", "Measured RPO of the newest drill that measured one.")
    rpo_target = gauge("drillbook_rpo_target_seconds", "RPO target from the catalogue.")
    verdict = gauge("drillbook_last_verdict", "1 for the newest drill's verdict, 0 for the others.", ("database", "verdict"))
    last_drill = gauge("drillbook_last_drill_timestamp_seconds", "Unix time the newest drill (any verdict) started.")
    days = gauge(
        "drillbook_forecast_days_to_rto_target",
        "Forecast days until the RTO trend reaches its target (0: already there; absent: not growing or too few drills).",
    )
    for entry in catalogue.database:
        name = entry.name
        mine = points.get(name, [])
        max_age.labels(name).set(catalogue.max_drill_age(entry))
        rto_target.labels(name).set(entry.rto_target)
        rpo_target.labels(name).set(entry.rpo_target)
        passed = passes.get(name)
        if passed is not None:
            age.labels(name).set(max(0.0, (now - passed).total_seconds()))
            last_pass.labels(name).set(passed.timestamp())
        stale.labels(name).set(0 if passed is not None and (now - passed).total_seconds() <= catalogue.max_drill_age(entry) else 1)
        if not mine:  # nothing recent: the newest drill, however old, still says what was last measured
            mine = [trend_point(row) for row in recent_drills(catalogue.history_url, name, limit=1)]
        if mine:
            newest = mine[-1]
            last_drill.labels(name).set(newest.started_at.timestamp())
            for value in VERDICTS:
                verdict.labels(name, value).set(1 if newest.verdict == value else 0)
            measured_rto = next((p.rto_seconds for p in reversed(mine) if p.rto_seconds is not None), None)
            measured_rpo = next((p.rpo_seconds for p in reversed(mine) if p.rpo_seconds is not None), None)
            if measured_rto is not None:
                rto.labels(name).set(measured_rto)
            if measured_rpo is not None:
                rpo.labels(name).set(measured_rpo)
            forecast = forecast_for(catalogue, name, mine, entry.rto_target, now)
            if forecast.days_to_target is not None:
                days.labels(name).set(forecast.days_to_target)
    return registry


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def write_metrics(catalogue: Catalogue, path, now: datetime | None = None) -> None:
    """The textfile collector's file, replaced atomically (prometheus_client writes a temp file and renames it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), build_registry(catalogue, now))


def push_metrics(catalogue: Catalogue, gateway: str, job: str = "drillbook", now: datetime | None = None, timeout: float = 30) -> None:
    push_to_gateway(gateway, job=job, registry=build_registry(catalogue, now), timeout=timeout)


def refresh_metrics_file(catalogue: Catalogue) -> str | None:
    """After a drill: rewrite `[drillbook] metrics_file` when set; a note when it could not be written (never raises)."""
    path = catalogue.metrics_file
    if path is None:
        return None
    try:
        write_metrics(catalogue, path)
    except (OSError, HistoryError) as exc:
        return f"the metrics file {path} could not be refreshed ({getattr(exc, 'strerror', None) or exc}); the drill is recorded"
    except Exception as exc:  # after the record: a metrics bug must never cost the drill its report
        return f"the metrics file {path} could not be refreshed ({type(exc).__name__}: {exc}); the drill is recorded"
    return None
