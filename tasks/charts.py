"""The RTO and RPO of one database over time, against their targets, with the forecast line (matplotlib, Agg).

Rendering only: points and a forecast in, SVG text or PNG bytes out. The
HTML report inlines the SVG (no external assets); Slack gets the PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime, timedelta

from drillbook.tasks.forecast import RtoForecast

_COLOURS = {"PASS": "#2e7d32", "FAIL": "#c62828", "ERROR": "#f9a825"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "drillbook", "font.size": 8, "axes.titlesize": 9})
    return plt


def render_chart(points: Sequence, forecast: RtoForecast | None, *, title: str, fmt: str = "svg", now: datetime | None = None) -> str | bytes:
    """Two panels sharing the time axis: RTO (with its forecast) and RPO, each with its target; `fmt` 'svg' (text) or 'png' (bytes)."""
    plt = _pyplot()
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    figure, (rto_axis, rpo_axis) = plt.subplots(2, 1, sharex=True, figsize=(7.2, 3.8), dpi=100, layout="constrained")
    try:
        figure.suptitle(title, fontsize=10, x=0.01, ha="left")
        for verdict, colour in _COLOURS.items():
            chosen = [p for p in points if p.verdict == verdict]
            marker = "o" if verdict == "PASS" else "x"
            rto = [(p.started_at, p.rto_seconds) for p in chosen if p.rto_seconds is not None]
            rpo = [(p.started_at, p.rpo_seconds) for p in chosen if p.rpo_seconds is not None]
            if rto:
                rto_axis.plot(*zip(*rto), linestyle="none", marker=marker, markersize=3, color=colour, label=f"RTO {verdict}")
            if rpo:
                rpo_axis.plot(*zip(*rpo), linestyle="none", marker=marker, markersize=3, color=colour, label=f"RPO {verdict}")
        if points:
            first, last = points[0].started_at, points[-1].started_at
            end = last
            if forecast is not None and forecast.known:
                end = max(last, min(forecast.crosses_at or last, (now or last) + timedelta(days=forecast.horizon_days)))
                start_y, end_y = forecast.fitted(forecast.fit_origin or first), forecast.fitted(end)
                rto_axis.plot([forecast.fit_origin or first, end], [start_y, end_y], linestyle=":", color="#ef6c00", linewidth=1.5, label="forecast")
            rto_axis.hlines(points[-1].rto_target_seconds, first, end, colors="#555555", linestyles="--", linewidth=1, label="RTO target")
            rpo_axis.hlines(points[-1].rpo_target_seconds, first, end, colors="#555555", linestyles="--", linewidth=1, label="RPO target")
        rto_axis.set_ylabel("RTO s")
        rpo_axis.set_ylabel("RPO s")
        rto_axis.set_ylim(bottom=0)
        rpo_axis.set_ylim(bottom=0)
        locator = AutoDateLocator()
        rpo_axis.xaxis.set_major_locator(locator)
        rpo_axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        for axis in (rto_axis, rpo_axis):
            axis.grid(True, linewidth=0.3, alpha=0.5)
            axis.legend(loc="upper left", fontsize=6, frameon=False, ncol=4)
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    finally:
        plt.close(figure)
    data = buffer.getvalue()
    return data.decode() if fmt == "svg" else data
