"""The RTO and RPO of one database over time, against their targets, with the forecast line (matplotlib, Agg).

Rendering only: points and a forecast in, PNG bytes (or SVG text) out. Slack
gets the PNG, attached to the drill's or the nightly's thread when the forecast
crosses inside the horizon. (The HTML page draws the same picture as plain
inline SVG, tasks/report/svg.py: a hundred matplotlib charts would take most of
its two seconds.)

The figure is built once per renderer and only its data, ticks and limits
change per chart (a fresh figure with a layout engine and date locators costs
~0.3 s, this ~20 ms).
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from drillbook.tasks.forecast import RtoForecast

COLOURS = {"PASS": "#2e7d32", "FAIL": "#c62828", "ERROR": "#f9a825", "forecast": "#ef6c00", "target": "#555555"}
_serial = itertools.count()


class ChartRenderer:
    """Two panels sharing the time axis: RTO (with its forecast) above, RPO below, each with its target line."""

    def __init__(self, *, legend: bool = False, width: float = 7.2, height: float = 3.4):
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure  # no pyplot: no global figure registry, nothing to close
        from matplotlib.ticker import MaxNLocator

        self.matplotlib = matplotlib
        self.figure = Figure(figsize=(width, height), dpi=100)
        self.figure.subplots_adjust(left=0.085, right=0.99, top=0.93 if legend else 0.97, bottom=0.09, hspace=0.12)
        self.rto_axis, self.rpo_axis = self.figure.subplots(2, 1, sharex=True)
        self.lines: dict[str, object] = {}
        for axis, kind in ((self.rto_axis, "rto"), (self.rpo_axis, "rpo")):
            # Passing drills as one line (one SVG path), failures and errors as marks (few, each its own element).
            (self.lines[f"{kind}-PASS"],) = axis.plot([], [], linestyle="-", linewidth=1.2, color=COLOURS["PASS"], label="PASS")
            for verdict in ("FAIL", "ERROR"):
                (self.lines[f"{kind}-{verdict}"],) = axis.plot(
                    [], [], linestyle="none", marker="x", markersize=4, color=COLOURS[verdict], label=verdict
                )
            (self.lines[f"{kind}-target"],) = axis.plot([], [], linestyle="--", linewidth=1, color=COLOURS["target"], label="target")
            axis.yaxis.set_major_locator(MaxNLocator(3))
            axis.grid(True, linewidth=0.3, alpha=0.5)
            axis.tick_params(labelsize=7)
        (self.lines["forecast"],) = self.rto_axis.plot([], [], linestyle=":", linewidth=1.6, color=COLOURS["forecast"], label="forecast")
        self.rto_axis.set_ylabel("RTO s", fontsize=8)
        self.rpo_axis.set_ylabel("RPO s", fontsize=8)
        for axis in (self.rto_axis, self.rpo_axis):  # placed once: matplotlib would otherwise measure every tick label to place it
            axis.yaxis.set_label_coords(-0.065, 0.5)
        if legend:
            handles = [self.lines[f"rto-{v}"] for v in ("PASS", "FAIL", "ERROR")] + [self.lines["rto-target"], self.lines["forecast"]]
            self.figure.legend(handles=handles, loc="upper right", ncol=5, fontsize=7, frameon=False)
        self.title = self.figure.text(0.01, 0.985, "", fontsize=8, va="top") if legend else None

    def render(
        self,
        points: Sequence,
        forecast: RtoForecast | None,
        *,
        title: str = "",
        fmt: str = "svg",
        now: datetime | None = None,
        salt: str | None = None,
    ) -> str | bytes:
        from matplotlib.dates import date2num
        from matplotlib.ticker import FixedFormatter, FixedLocator

        if not points:
            raise ValueError("a chart needs at least one drill")
        first, last = points[0].started_at, points[-1].started_at
        xs = list(date2num([p.started_at for p in points]))  # one vectorised conversion
        end = last
        if forecast is not None and forecast.known:
            reach = (now or last) + timedelta(days=forecast.horizon_days)
            end = max(last, min(forecast.crosses_at or reach, reach))
        for kind, attribute in (("rto", "rto_seconds"), ("rpo", "rpo_seconds")):
            for verdict in ("PASS", "FAIL", "ERROR"):
                chosen = [
                    (x, getattr(p, attribute)) for x, p in zip(xs, points) if p.verdict == verdict and getattr(p, attribute) is not None
                ]
                self.lines[f"{kind}-{verdict}"].set_data([x for x, _ in chosen], [y for _, y in chosen])  # type: ignore[attr-defined]
        span = [date2num(first), date2num(end)]
        self.lines["rto-target"].set_data(span, [points[-1].rto_target_seconds] * 2)  # type: ignore[attr-defined]
        self.lines["rpo-target"].set_data(span, [points[-1].rpo_target_seconds] * 2)  # type: ignore[attr-defined]
        if forecast is not None and forecast.known and forecast.fit_origin is not None:
            start = max(forecast.fit_origin, first)
            self.lines["forecast"].set_data([date2num(start), date2num(end)], [forecast.fitted(start), forecast.fitted(end)])  # type: ignore[attr-defined]
        else:
            self.lines["forecast"].set_data([], [])  # type: ignore[attr-defined]
        if end <= first:  # one drill: the day up to it, never an axis running a day past the newest drill
            first = end - timedelta(days=1)
        length = end - first
        ticks = [first + length * i / 3 for i in range(4)]
        label = "%d %b %H:%M" if length < timedelta(days=4) else "%d %b"
        self.rpo_axis.xaxis.set_major_locator(FixedLocator([date2num(t) for t in ticks]))
        self.rpo_axis.xaxis.set_major_formatter(FixedFormatter([t.strftime(label) for t in ticks]))
        pad = length * 0.02 or timedelta(hours=1)
        self.rpo_axis.set_xlim(date2num(first - pad), date2num(end + pad))
        for axis in (self.rto_axis, self.rpo_axis):
            axis.relim()
            axis.autoscale_view(scalex=False)
            axis.set_ylim(bottom=0)
        if self.title is not None:
            self.title.set_text(title)
        buffer = io.BytesIO()
        # Each inline SVG gets ids of its own: several charts in one page must not share a clip path or marker id.
        with self.matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"drillbook-{salt or next(_serial)}"}):
            self.figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        data = buffer.getvalue()
        if fmt != "svg":
            return data
        # matplotlib names its groups figure_1, axes_1, ... in every SVG: unreferenced, but duplicate ids in one page.
        return re.sub(r'<g id="[^"]*"', "<g", data.decode())


def render_chart(
    points: Sequence, forecast: RtoForecast | None, *, title: str, fmt: str = "png", now: datetime | None = None
) -> str | bytes:
    """One chart with its own legend and title (the Slack attachment)."""
    return ChartRenderer(legend=True, height=3.8).render(points, forecast, title=title, fmt=fmt, now=now)
