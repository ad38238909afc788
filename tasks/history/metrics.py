"""The drill history as Prometheus metrics (prometheus_client's exposition format).

Per database: when the last passing drill started, the last RTO and RPO and
their targets, the last verdict, when the forecast has the RTO reach its target,
and (from `drillbook watch`) when the replica's newest change was written.
Times, never ages: the file is rewritten only after a drill or a watch, so an
age written into it would freeze exactly when the nightly stops. A rule that
says `time() - drillbook_last_pass_timestamp_seconds > ...` keeps counting on a
frozen file (deployments/prometheus-rules.yml). Every value is in seconds.
For the fleet: its size and the share of it proven within max_drill_age when
the file was written, and what the last budgeted nightly drilled and left, by
reason (tasks/history/budget.py; a bounded label).
Written as a node_exporter textfile-collector file (atomically, by
prometheus_client), printed, or pushed to a Pushgateway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway, write_to_textfile
from prometheus_client.core import GaugeMetricFamily

from drillbook.tasks.config import Catalogue
from drillbook.tasks.config.entry import DatabaseEntry
from drillbook.tasks.errors import HistoryError
from drillbook.tasks.forecast import TREND_DAYS, forecast_for
from drillbook.tasks.history.alerts import watch_states
from drillbook.tasks.history.budget import Left, load_night
from drillbook.tasks.history.store import TrendPoint, _aware, last_passes, recent_drills, trend_point, trend_points

VERDICTS = ("PASS", "FAIL", "ERROR")


class _Gauge:
    """A gauge collected as one family: prometheus_client's Gauge.labels() makes a child object per label set, half the time of
    10,000 tenants' metrics (bench/fleet_page.py); here a sample is a tuple. Registered on the registry like a Gauge."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], registry: CollectorRegistry):
        self._name, self._documentation, self._labelnames = name, documentation, labelnames  # _name, _labelnames: as Gauge's
        self._samples: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Sample:
        return _Sample(self._samples, values)

    def set(self, value: float) -> None:
        self._samples[()] = float(value)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self._name, self._documentation, labels=list(self._labelnames))]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=list(self._labelnames))
        for values, value in self._samples.items():
            family.add_metric(list(values), value)
        return [family]


class _Sample:
    __slots__ = ("_samples", "_values")

    def __init__(self, samples: dict[tuple[str, ...], float], values: tuple[str, ...]):
        self._samples, self._values = samples, values

    def set(self, value: float) -> None:
        self._samples[self._values] = float(value)


def build_registry(
    catalogue: Catalogue, now: datetime | None = None, points: dict[str, list[TrendPoint]] | None = None
) -> CollectorRegistry:
    now = now or datetime.now(UTC)
    passes = last_passes(catalogue.history_url)
    # The directories' tenants too; those of a directory whose replica could not be listed as the history knows them,
    # under the directory's settings, so their last PASS keeps ageing in Prometheus instead of vanishing.
    entries: list[tuple[str, DatabaseEntry]] = [(entry.name, entry) for entry in catalogue.databases()]
    unlisted = [directory for directory, _ in catalogue.unlisted()]
    for directory in unlisted:
        entries += [(name, directory) for name in sorted(passes) if name.startswith(f"{directory.name}.")]
    names = [name for name, _ in entries]
    points = trend_points(catalogue.history_url, names, since=now - timedelta(days=TREND_DAYS)) if points is None else points
    watched = watch_states(catalogue.history_url)
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ("database",)) -> _Gauge:
        return _Gauge(name, doc, labels, registry)

    generated = gauge("drillbook_metrics_timestamp_seconds", "Unix time these metrics were written.", ())
    last_pass = gauge("drillbook_last_pass_timestamp_seconds", "Unix time the newest passing drill started (absent: never passed).")
    max_age = gauge("drillbook_max_drill_age_seconds", "The database's max_drill_age: an older last PASS means stale.")
    rto = gauge("drillbook_last_rto_seconds", "Measured RTO of the newest drill that measured one.")
    rto_target = gauge("drillbook_rto_target_seconds", "RTO target from the catalogue.")
    rpo = gauge("drillbook_last_rpo_seconds", "Measured RPO of the newest drill that measured one.")
    rpo_target = gauge("drillbook_rpo_target_seconds", "RPO target from the catalogue.")
    verdict = gauge("drillbook_last_verdict", "1 for the newest drill's verdict, 0 for the others.", ("database", "verdict"))
    last_drill = gauge("drillbook_last_drill_timestamp_seconds", "Unix time the newest drill (any verdict) started.")
    crosses = gauge(
        "drillbook_forecast_rto_target_timestamp_seconds",
        "Unix time the RTO trend is forecast to reach its target (the time of the forecast: already there; absent: not growing or too few drills).",
    )
    replica_newest = gauge(
        "drillbook_replica_newest_change_timestamp_seconds",
        "Unix time litestream wrote the replica's newest change, as `drillbook watch` last saw it.",
    )
    watch_checked = gauge("drillbook_watch_timestamp_seconds", "Unix time `drillbook watch` last checked the replica.")
    stopped = gauge(
        "drillbook_replication_stopped", "1 when `drillbook watch` last found replication stopped (live data newer than the replica)."
    )
    listed = gauge(
        "drillbook_directory_listed",
        "1 when the [[directories]] entry's replica prefix was listed, 0 when it could not be (its tenants are not drilled).",
        ("directory",),
    )
    generated.set(now.timestamp())
    fleet_metrics(registry, catalogue, entries, passes, now)
    for directory in catalogue.directories:
        listed.labels(directory.name).set(0 if any(d.name == directory.name for d in unlisted) else 1)
    for name, entry in entries:
        mine = points.get(name, [])
        max_age.labels(name).set(catalogue.max_drill_age(entry))
        rto_target.labels(name).set(entry.rto_target)
        rpo_target.labels(name).set(entry.rpo_target)
        passed = passes.get(name)
        if passed is not None:
            last_pass.labels(name).set(passed.timestamp())
        seen = watched.get(name)
        if seen is not None:
            watch_checked.labels(name).set(_aware(seen.checked_at).timestamp())
            stopped.labels(name).set(1 if seen.stopped else 0)
            if seen.replica_newest_at is not None:
                replica_newest.labels(name).set(_aware(seen.replica_newest_at).timestamp())
        if not mine:  # nothing recent: the newest drill, however old, still says what was last measured
            mine = [trend_point(row) for row in recent_drills(catalogue.history_url, name, limit=1)]
        if mine:
            newest = mine[-1]
            last_drill.labels(name).set(newest.started_at.timestamp())
            for value in VERDICTS:
                verdict.labels(name, value).set(1 if newest.verdict == value else 0)
            # A point-in-time drill restores a past point: its RTO / RPO are not the newest position's.
            measured_rto = next((p.rto_seconds for p in reversed(mine) if p.rto_seconds is not None and p.point_kind is None), None)
            measured_rpo = next((p.rpo_seconds for p in reversed(mine) if p.rpo_seconds is not None and p.point_kind is None), None)
            if measured_rto is not None:
                rto.labels(name).set(measured_rto)
            if measured_rpo is not None:
                rpo.labels(name).set(measured_rpo)
            forecast = forecast_for(catalogue, name, mine, entry.rto_target, now)
            if forecast.crosses_at is not None:
                crosses.labels(name).set(forecast.crosses_at.timestamp())
    return registry


def fleet_metrics(
    registry: CollectorRegistry, catalogue: Catalogue, entries: list[tuple[str, DatabaseEntry]], passes: dict[str, datetime], now: datetime
) -> None:
    """The fleet's coverage (from the history), and the last budgeted nightly (its saved account, when there is one)."""
    size = _Gauge("drillbook_fleet_databases", "Databases in the catalogue (the directories' tenants too).", (), registry)
    ratio = _Gauge(
        "drillbook_fleet_proven_ratio",
        "Share of the fleet (0 to 1) whose last PASS lay within its max_drill_age when these metrics were written.",
        (),
        registry,
    )
    proven = sum(1 for name, e in entries if name in passes and (now - passes[name]).total_seconds() <= catalogue.max_drill_age(e))
    size.set(len(entries))
    ratio.set(proven / len(entries) if entries else 1.0)
    night_at = _Gauge("drillbook_nightly_budget_timestamp_seconds", "Unix time the last budgeted nightly ended.", (), registry)
    budget = _Gauge("drillbook_nightly_budget_seconds", "The last budgeted nightly's budget (wall time).", (), registry)
    drilled = _Gauge("drillbook_nightly_drilled_databases", "Databases the last budgeted nightly drilled.", (), registry)
    left = _Gauge(
        "drillbook_nightly_left_databases",
        "Databases the last budgeted nightly left, by reason (not_fitting: the budget could not hold it; budget_spent: not started).",
        ("reason",),
        registry,
    )
    stale = _Gauge(
        "drillbook_nightly_going_stale_databases",
        "Databases the last budgeted nightly left to go stale before the next (their max_drill_age lapses).",
        (),
        registry,
    )
    night = load_night(catalogue.evidence_dir)
    if night is None:
        return
    night_at.set(night.at.timestamp())
    budget.set(night.budget_seconds)
    drilled.set(len(night.drilled))
    for reason in Left:
        left.labels(reason.name.lower()).set(sum(1 for out in night.left if out.reason == reason))
    stale.set(len(night.going_stale))


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
