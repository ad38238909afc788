"""The page's charts as plain inline SVG: RTO and RPO over time against their targets, with the forecast line.

The same picture as tasks/report/charts.py (matplotlib, which draws the Slack PNG),
written directly: a page of 100 databases needs 100 charts, and matplotlib's
~20 ms of drawing per chart (ticks, text layout, one element per mark) is most
of a two-second budget; these take well under a millisecond each. Written with
care, not cleverness: fixed layout, "nice" tick steps, every mark in data
order, text escaped, no script, no external reference, and nothing that needs
an id (several charts share one page).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape

from drillbook.tasks.forecast import RtoForecast
from drillbook.tasks.report.charts import COLOURS
from drillbook.tasks.text import duration_text

WIDTH, HEIGHT = 720, 330
LEFT, RIGHT = 64, 12
PANELS = {"rto": (22, 150), "rpo": (184, 290)}  # top, bottom of each panel's plot area
AXIS_Y = 308  # baseline of the time labels


_DURATION_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def nice_step(span: float, ticks: int = 3) -> float:
    """A step a person reads as a duration (10s, 30s, 1m, 5m, 1h, ...; 1/2/5 x 10^k below 10 s), about `ticks` of which cover `span`."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    if raw > 5:
        return float(next((step for step in _DURATION_STEPS if raw <= step), 86400 * math.ceil(raw / 86400)))
    power = 10 ** math.floor(math.log10(raw))
    return next(factor * power for factor in (1, 2, 5, 10) if raw <= factor * power)


def _seconds(value: float) -> str:

    return duration_text(value)


def render_svg(points: Sequence, forecast: RtoForecast | None, *, now: datetime | None = None, label: str = "") -> str:
    """One chart as an <svg> element (scales with its container: viewBox, no fixed size)."""
    if not points:
        raise ValueError("a chart needs at least one drill")
    first, last = points[0].started_at, points[-1].started_at
    end = last
    known = forecast is not None and forecast.known and forecast.fit_origin is not None
    if known:
        reach = (now or last) + timedelta(days=forecast.horizon_days)  # type: ignore[union-attr]
        end = max(last, min(forecast.crosses_at or reach, reach))  # type: ignore[union-attr]
    if end <= first:  # one drill: the day up to it, never an axis running a day past the newest drill
        first = end - timedelta(days=1)
    length = (end - first).total_seconds()
    pad = length * 0.02

    def x(at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * ((at - first).total_seconds() + pad) / (length + 2 * pad)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        'font-family="system-ui,sans-serif" font-size="11">',
        f"<title>{escape(label)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    for kind, (top, bottom) in PANELS.items():
        attribute, target = (
            ("rto_seconds", points[-1].rto_target_seconds) if kind == "rto" else ("rpo_seconds", points[-1].rpo_target_seconds)
        )
        values = [getattr(p, attribute) for p in points if getattr(p, attribute) is not None]
        fitted_end = forecast.fitted(end) if known and kind == "rto" else None  # type: ignore[union-attr]
        high = max([target, *values, *([fitted_end] if fitted_end is not None else [])]) * 1.08
        step = nice_step(high)
        high = math.ceil(high / step) * step

        def y(value: float, top: int = top, bottom: int = bottom, high: float = high) -> float:
            return bottom - (bottom - top) * min(max(value, 0.0), high) / high

        out.append(
            f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{bottom - top}" fill="none" stroke="#999" stroke-width="0.8"/>'
        )
        tick = 0.0
        while tick <= high + 1e-9:
            ty = y(tick)
            out.append(f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}" stroke="#ddd" stroke-width="0.6"/>')
            out.append(
                f'<text x="{LEFT - 5}" y="{ty + 4:.1f}" text-anchor="end" fill="#444">{escape(_seconds(tick) if tick else "0")}</text>'
            )
            tick += step
        out.append(f'<text x="{LEFT + 4}" y="{top - 6}" fill="#222" font-weight="600">{kind.upper()}</text>')
        ty = y(target)
        out.append(
            f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}" stroke="{COLOURS["target"]}" stroke-width="1" stroke-dasharray="5 4"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{ty - 4:.1f}" text-anchor="end" fill="{COLOURS["target"]}">target {escape(_seconds(target))}</text>'
        )
        passing = [(x(p.started_at), y(getattr(p, attribute))) for p in points if p.verdict == "PASS" and getattr(p, attribute) is not None]
        if len(passing) == 1:
            ((px, py),) = passing
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{COLOURS["PASS"]}"/>')
        elif passing:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in passing)
            out.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS["PASS"]}" stroke-width="1.4" stroke-linejoin="round"/>')
        for verdict in ("FAIL", "ERROR"):
            # A drill that failed before measuring (an ERROR, refused credentials) is drawn on the panel's floor:
            # it happened, and leaving it out would draw a failing history as a clean one.
            marks = [
                f"M{x(p.started_at) - 3:.1f},{(y(value) if value is not None else bottom) - 3:.1f}l6,6m0,-6l-6,6"
                for p in points
                if p.verdict == verdict
                for value in (getattr(p, attribute),)
            ]
            if marks:
                out.append(
                    f'<path data-verdict="{verdict}" d="{"".join(marks)}" stroke="{COLOURS[verdict]}" stroke-width="1.6" fill="none"/>'
                )
        if fitted_end is not None:
            start = max(forecast.fit_origin, first)  # type: ignore[union-attr,type-var]
            out.append(
                f'<line x1="{x(start):.1f}" y1="{y(forecast.fitted(start)):.1f}" x2="{x(end):.1f}" y2="{y(fitted_end):.1f}" '  # type: ignore[union-attr]
                f'stroke="{COLOURS["forecast"]}" stroke-width="1.8" stroke-dasharray="2 3"/>'
            )
    label_format = "%d %b %H:%M" if length < 4 * 86400 else "%d %b"
    for index in range(4):
        at = first + timedelta(seconds=length * index / 3)
        anchor = ("start", "middle", "middle", "end")[index]
        out.append(f'<text x="{x(at):.1f}" y="{AXIS_Y}" text-anchor="{anchor}" fill="#444">{escape(at.strftime(label_format))}</text>')
    out.append("</svg>")
    return "".join(out)
