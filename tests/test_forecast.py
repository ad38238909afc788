"""The forecast and the no-go advice, pure: a table of histories and what they must say."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from drillbook.tasks.forecast import advise, forecast_rto, theil_sen

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


@dataclass
class P:
    started_at: datetime
    rto_seconds: float | None
    verdict: str = "PASS"
    restored_bytes: int | None = None
    failure_mode: str | None = None
    rto_target_seconds: float = 120.0


def daily(rtos, *, sizes=None, end=NOW, verdicts=None):
    start = end - timedelta(days=len(rtos) - 1)
    return [P(start + timedelta(days=i), rto, (verdicts or {}).get(i, "PASS"), (sizes[i] if sizes else None)) for i, rto in enumerate(rtos)]


def test_theil_sen_ignores_one_outlier_where_least_squares_does_not():
    xs = list(range(10))
    ys = [10 + 2 * x for x in xs]
    ys[9] = 500  # one very slow night
    slope, intercept, low, high = theil_sen(xs, ys)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(10.0)
    mean_x, mean_y = sum(xs) / 10, sum(ys) / 10
    least_squares = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    assert least_squares > 20  # the outlier swings a least-squares slope tenfold
    assert low <= slope <= high


def test_the_example_line_from_the_issue():
    # RTO rising 3.2 s a week to 41 s; target 2 minutes.
    rtos = [41 - 3.2 / 7 * (13 - i) for i in range(14)]
    forecast = forecast_rto("orders", daily(rtos), target_seconds=120, now=NOW)
    assert forecast.known and forecast.slope_seconds_per_week == pytest.approx(3.2, abs=0.01)
    assert forecast.days_to_target == pytest.approx((120 - 41) / (3.2 / 7), rel=0.01)
    assert forecast.line.startswith(
        "RTO 41s, +3.2 s/week: crosses the 2m 00s target in about 173 days, around 2027-05-16 (14 drills over 13 days"
    )
    assert not forecast.warning  # 173 days is outside the 30-day horizon


def test_a_crossing_inside_the_horizon_is_a_warning_and_one_outlier_does_not_move_it():
    rtos = [60 + 2 * i for i in range(20)]  # +14 s/week, at 98 s now: crosses 120 s in 11 days
    steady = forecast_rto("orders", daily(rtos), target_seconds=120, now=NOW)
    rtos[10] = 900  # one night the restore hung on a slow bucket
    noisy = forecast_rto("orders", daily(rtos), target_seconds=120, now=NOW)
    assert steady.warning and noisy.warning
    assert steady.days_to_target == pytest.approx(11, abs=0.1)
    assert noisy.days_to_target == pytest.approx(steady.days_to_target, abs=0.5)
    assert "crosses the 2m 00s target in about 11 days" in noisy.line


@pytest.mark.parametrize(
    "rtos, expected",
    [
        ([40, 41], "RTO 41s: no forecast yet, 2 of the 5 passing drills it needs (not guessing)"),
        ([], "RTO not measured yet: no forecast yet, 0 of the 5 passing drills it needs (not guessing)"),
        ([50, 49, 50, 48, 49, 47, 48], "not growing toward the 2m 00s target"),
        ([100, 110, 120, 130, 140, 150], "the trend is already at the 2m 00s target"),
    ],
)
def test_what_the_forecast_says(rtos, expected):
    forecast = forecast_rto("orders", daily(rtos), target_seconds=120, now=NOW)
    assert expected in forecast.line
    assert forecast.known == (len(rtos) >= 5)
    if "already" in expected:
        assert forecast.days_to_target == 0 and forecast.warning
    if "not growing" in expected:
        assert forecast.days_to_target is None and not forecast.warning


def test_enough_drills_within_an_hour_say_what_is_missing_not_a_count_already_met():
    points = [P(NOW - timedelta(minutes=5 * (7 - i)), 40.0 + i) for i in range(8)]
    forecast = forecast_rto("orders", points, target_seconds=120, now=NOW)
    assert not forecast.known
    assert forecast.line == (
        "RTO 47s: no forecast yet, the 8 passing drills span only 35m 00s; a trend needs them spread over at least 2h 00m (not guessing)"
    )


def test_only_passing_drills_count_and_the_minimum_is_configurable():
    points = daily([40, 41, 42, 43, 44, 45], verdicts={1: "FAIL", 3: "ERROR"})
    assert not forecast_rto("orders", points, target_seconds=120, now=NOW).known  # 4 passing of 5 needed
    assert forecast_rto("orders", points, target_seconds=120, now=NOW, min_drills=4).known


def test_bytes_fit_gives_seconds_per_gb_and_growth():
    sizes = [1_000_000_000 + 100_000_000 * i for i in range(10)]  # 1 GB growing 100 MB a day
    rtos = [30 + 3 * (s - sizes[0]) / 100_000_000 for s in sizes]  # 30 s per GB
    forecast = forecast_rto("orders", daily(rtos, sizes=sizes), target_seconds=120, now=NOW)
    assert forecast.seconds_per_gb == pytest.approx(30.0)
    assert forecast.bytes_per_week == pytest.approx(700_000_000)


def test_advice_when_drills_regularly_exceed_the_rto():
    points = daily([100, 130, 125, 90, 140])
    forecast = forecast_rto("orders", points, target_seconds=120, now=NOW)
    advice = advise(points, forecast)
    assert advice is not None
    assert advice.reasons == ["3 of the last 5 drills exceeded the 2m 00s RTO target (worst 2m 20s)"]
    assert "snapshot / compaction" in advice.route[0] and "server database" in advice.route[1]
    assert advise(points, forecast, over_target=4) is None  # thresholds are configurable
    assert (
        advise(points[:2] + [P(NOW, None, "FAIL", failure_mode="restore lag")], forecast, over_target=2, window=3) is not None
    )  # killed at the timeout counts


def test_advice_when_the_forecast_crosses_while_the_size_grows():
    sizes = [500_000_000 + 20_000_000 * i for i in range(12)]
    rtos = [80 + 3 * i for i in range(12)]
    forecast = forecast_rto("orders", daily(rtos, sizes=sizes), target_seconds=120, now=NOW)
    assert forecast.warning
    advice = advise(daily(rtos, sizes=sizes), forecast)
    assert advice is not None and "grows by 140.00 MB/week" in advice.reasons[0]
    # The same trend with a database that does not grow: a warning, but no route to a server database.
    flat = forecast_rto("orders", daily(rtos, sizes=[sizes[0]] * 12), target_seconds=120, now=NOW)
    assert flat.warning and advise(daily(rtos), flat) is None
