"""Looking ahead from the history: where is the RTO going, and when does it cross its target?

Pure: points in, a forecast out (no database, no clock but the one passed in).

The fit is Theil–Sen: the slope is the median of the slopes between every pair
of drills, the intercept the median of what is left. One slow night (a noisy
neighbour, a cold cache) moves a least-squares line a lot; it moves the median
of pairwise slopes hardly at all (up to ~29% of the drills can be outliers
before the slope breaks down), and it needs no tuning or distribution
assumptions, which a few dozen nightly drills could not justify. The middle half
of the pairwise slopes is reported as the slope's spread.

A forecast is only made from `min_drills` passing drills; with fewer it says it
does not know yet. A crossing inside the horizon is a WARNING in the report:
it never changes a verdict. The no-go advice (domain notes, "restore drills
regularly exceed the RTO") follows from the same figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from drillbook.tasks.config import Catalogue
from drillbook.tasks.text import duration_text

DAY = 86400.0
MIN_SPAN_SECONDS = 2 * 3600.0  # drills closer together than this show no trend (and round to "0 days")
WEEK = 7 * DAY
GB = 1e9
TREND_DAYS = 90  # forecasts, charts and metrics read this many days of history (a drill from last year says nothing about today's trend)


def _seconds(value: float | None) -> str:

    return duration_text(value)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float, float] | None:
    """(slope, intercept, slope low, slope high): median pairwise slope, median intercept, middle half of the slopes."""
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i])
    if not slopes:
        return None
    slope = statistics.median(slopes)
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys))
    low, high = slopes[len(slopes) // 4], slopes[(3 * len(slopes)) // 4 if len(slopes) > 1 else 0]
    return slope, intercept, low, high


class RtoForecast(BaseModel):
    """The RTO's trend against time (and against restored bytes), and when it crosses its target."""

    database: str
    known: bool = Field(description="False while there are too few passing drills to fit.")
    method: str = "Theil-Sen (median of pairwise slopes)"
    drills: int = Field(description="Passing drills the fit used.")
    min_drills: int
    span_days: float = 0.0
    rto_seconds: float | None = Field(default=None, description="The newest measured RTO.")
    target_seconds: float
    slope_seconds_per_week: float | None = None
    slope_low_per_week: float | None = None
    slope_high_per_week: float | None = None
    spread_seconds: float | None = Field(default=None, description="Median distance of the drills from the fitted line.")
    fitted_now_seconds: float | None = None
    days_to_target: float | None = Field(default=None, description="0 when already at or over the target; None when not growing.")
    crosses_at: datetime | None = None
    seconds_per_gb: float | None = Field(default=None, description="RTO against restored bytes (Theil-Sen slope).")
    bytes_now: int | None = None
    bytes_per_week: float | None = Field(default=None, description="Growth of the restored size (Theil-Sen slope).")
    horizon_days: float
    warning: bool = Field(default=False, description="The crossing lies inside the horizon (a WARNING, never a verdict).")
    line: str = ""
    # For the chart: the fitted line's anchor (seconds since the epoch -> RTO).
    fit_origin: datetime | None = None
    fit_intercept: float | None = None

    def fitted(self, at: datetime) -> float | None:
        if not self.known or self.fit_origin is None or self.fit_intercept is None or self.slope_seconds_per_week is None:
            return None
        return self.fit_intercept + self.slope_seconds_per_week / WEEK * (at - self.fit_origin).total_seconds()


class Advice(BaseModel):
    """The no-go route (domain notes) with the figures that triggered it; advice, never a verdict."""

    reasons: list[str]
    route: list[str]

    def lines(self) -> list[str]:
        return [f"No-go advice: {'; '.join(self.reasons)}."] + [f"  {i}. {step}" for i, step in enumerate(self.route, 1)]


ROUTE = [
    "Shrink the restore first: trigger a snapshot / compaction and shorten the snapshot interval and retention "
    "(litestream's snapshot and compaction-level settings) so a restore fetches fewer LTX files; rehearse the restore.",
    "If drills keep exceeding the RTO after that, the SQLite file has outgrown this RTO: move the data to a server database "
    "(PostgreSQL / MySQL), shard it, or do data lifecycle work (archive or delete old rows).",
]


def forecast_rto(
    database: str,
    points: Sequence,
    *,
    target_seconds: float,
    now: datetime,
    min_drills: int = 5,
    window: int = 30,
    horizon_days: float = 30.0,
) -> RtoForecast:
    """Fit the last `window` passing drills (`points`, oldest first, any verdict: only PASS with an RTO is used)."""
    passing = [p for p in points if p.verdict == "PASS" and p.rto_seconds is not None][-window:]
    base = RtoForecast(
        database=database,
        known=False,
        drills=len(passing),
        min_drills=min_drills,
        target_seconds=target_seconds,
        horizon_days=horizon_days,
        rto_seconds=next((p.rto_seconds for p in reversed(points) if p.rto_seconds is not None), None),
    )
    rto_text = f"RTO {_seconds(base.rto_seconds)}" if base.rto_seconds is not None else "RTO not measured yet"
    span = (passing[-1].started_at - passing[0].started_at).total_seconds() if passing else 0.0
    base.span_days = round(span / DAY, 1)
    if len(passing) < min_drills:
        base.line = f"{rto_text}: no forecast yet, {len(passing)} of the {min_drills} passing drills it needs (not guessing)"
        return base
    if span < MIN_SPAN_SECONDS:  # enough drills, too close together: say that, not "8 of the 5"
        base.line = (
            f"{rto_text}: no forecast yet, the {len(passing)} passing drills span only {duration_text(span)}; "
            f"a trend needs them spread over at least {duration_text(MIN_SPAN_SECONDS)} (not guessing)"
        )
        return base
    origin = passing[0].started_at
    xs = [(p.started_at - origin).total_seconds() for p in passing]
    ys = [float(p.rto_seconds) for p in passing]
    fit = theil_sen(xs, ys)
    if fit is None:
        base.line = f"{rto_text}: no forecast yet, the drills share one timestamp"
        return base
    slope, intercept, low, high = fit
    now_x = (now - origin).total_seconds()
    fitted_now = intercept + slope * now_x
    spread = statistics.median(abs(y - (intercept + slope * x)) for x, y in zip(xs, ys))
    out = base.model_copy(
        update={
            "known": True,
            "slope_seconds_per_week": round(slope * WEEK, 3),
            "slope_low_per_week": round(low * WEEK, 3),
            "slope_high_per_week": round(high * WEEK, 3),
            "spread_seconds": round(spread, 3),
            "fitted_now_seconds": round(fitted_now, 3),
            "fit_origin": origin,
            "fit_intercept": intercept,
        }
    )
    sized = [p for p in passing if p.restored_bytes]
    if len(sized) >= min_drills:
        by_bytes = theil_sen([float(p.restored_bytes) for p in sized], [float(p.rto_seconds) for p in sized])
        if by_bytes is not None:
            out.seconds_per_gb = round(by_bytes[0] * GB, 3)
        growth = theil_sen([(p.started_at - origin).total_seconds() for p in sized], [float(p.restored_bytes) for p in sized])
        if growth is not None:
            out.bytes_per_week = round(growth[0] * WEEK, 1)
        out.bytes_now = sized[-1].restored_bytes
    confidence = f"{len(passing)} drills over {base.span_days:g} days, ±{_seconds(spread)}"
    trend = f"{slope * WEEK:+.1f} s/week"
    target = _seconds(target_seconds)
    if fitted_now >= target_seconds:
        out.days_to_target = 0.0
        out.crosses_at = now
        out.warning = True
        out.line = f"{rto_text}, {trend}: the trend is already at the {target} target ({confidence})"
    elif slope * WEEK < 0.05:  # flat or falling: a crossing date would be noise
        out.line = f"{rto_text}, {trend}: not growing toward the {target} target ({confidence})"
    else:
        days = (target_seconds - fitted_now) / slope / DAY
        out.days_to_target = round(days, 1)
        out.crosses_at = now + timedelta(days=days)
        out.warning = days <= horizon_days
        out.line = (
            f"{rto_text}, {trend}: crosses the {target} target in about {days:.0f} days, around {out.crosses_at:%Y-%m-%d} ({confidence})"
        )
    return out


def advise(
    points: Sequence,
    forecast: RtoForecast,
    *,
    over_target: int = 3,
    window: int = 5,
) -> Advice | None:
    """The no-go route when `over_target` of the last `window` drills exceeded the RTO target, or the
    forecast crosses inside the horizon while the restored size keeps growing."""
    recent = [p for p in points if p.rto_seconds is not None or p.failure_mode == "restore lag"][-window:]
    over = [p for p in recent if p.failure_mode == "restore lag" or (p.rto_seconds is not None and p.rto_seconds > p.rto_target_seconds)]
    reasons = []
    if len(over) >= over_target:
        worst = max((p.rto_seconds for p in over if p.rto_seconds is not None), default=None)
        reasons.append(
            f"{len(over)} of the last {len(recent)} drills exceeded the {_seconds(forecast.target_seconds)} RTO target"
            + (f" (worst {_seconds(worst)})" if worst is not None else "")
        )
    if forecast.warning and forecast.bytes_per_week and forecast.bytes_per_week > 0:
        size = f"{forecast.bytes_now / 1e6:,.1f} MB" if forecast.bytes_now else "the database"
        reasons.append(
            f"the RTO trend ({forecast.slope_seconds_per_week:+.1f} s/week) reaches the target within {forecast.horizon_days:g} days "
            f"while {size} grows by {forecast.bytes_per_week / 1e6:,.2f} MB/week"
            + (f" ({forecast.seconds_per_gb:.1f} s per GB restored)" if forecast.seconds_per_gb else "")
        )
    return Advice(reasons=reasons, route=list(ROUTE)) if reasons else None


class Outlook(BaseModel):
    """What a drill adds about the future: the RTO forecast, the no-go advice, the chart (when inside the horizon)."""

    forecast: RtoForecast
    advice: Advice | None = None
    chart: str | None = Field(default=None, description="PNG of the RTO / RPO history with the forecast, beside the evidence.")

    def lines(self) -> list[str]:
        prefix = "WARNING forecast: " if self.forecast.warning else "Forecast: "
        out = [prefix + self.forecast.line + (f" (inside the {self.forecast.horizon_days:g}-day horizon)" if self.forecast.warning else "")]
        if self.advice:
            out += self.advice.lines()
        return out


def forecast_for(catalogue: Catalogue, entry_name: str, points: Sequence, target_seconds: float, now: datetime) -> RtoForecast:
    settings = catalogue.drillbook
    return forecast_rto(
        entry_name,
        points,
        target_seconds=target_seconds,
        now=now,
        min_drills=settings.forecast_min_drills,
        window=settings.forecast_window,
        horizon_days=settings.forecast_horizon / 86400,
    )


def outlook_of(catalogue: Catalogue, name: str, points: Sequence, target_seconds: float, now: datetime) -> Outlook:
    forecast = forecast_for(catalogue, name, points, target_seconds, now)
    advice = advise(points, forecast, over_target=catalogue.drillbook.no_go_over_target, window=catalogue.drillbook.no_go_window)
    return Outlook(forecast=forecast, advice=advice)
