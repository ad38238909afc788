"""`drillbook report --html`: one static, self-contained page (no server, no external assets).

Stale databases at the top; then per database its last verdict, the figures,
the forecast line and any no-go advice, the last evidence, and a chart of RTO
and RPO over time against their targets with the forecast line (inline SVG,
tasks/report/svg.py). A few lines of inline script count what the browser actually
laid out, so a headless browser can tell a rendered page from a blank one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

from drillbook.tasks.config import Catalogue
from drillbook.tasks.history.forecast import Outlook
from drillbook.tasks.history.stale import StaleStatus, stale_status
from drillbook.tasks.history.store import TrendPoint, trend_points
from drillbook.tasks.history.trends import TREND_DAYS, outlook_of
from drillbook.tasks.report.charts import COLOURS
from drillbook.tasks.report.svg import render_svg
from drillbook.tasks.text import duration_text

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:980px;color:#1b1b1b;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} .sub{color:#666;font-size:13px;margin-bottom:18px}
.stale{border:2px solid #c62828;background:#ffebee;padding:10px 14px;border-radius:6px;margin-bottom:18px}
.stale h2{margin:0 0 6px;font-size:16px;color:#b71c1c} .stale li{margin:2px 0}
.ok{border:1px solid #a5d6a7;background:#e8f5e9;padding:8px 14px;border-radius:6px;margin-bottom:18px}
section.db{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin-bottom:16px}
section.db h2{font-size:17px;margin:0 0 8px;display:flex;gap:10px;align-items:center}
.badge{font-size:12px;padding:2px 8px;border-radius:10px;color:#fff} .PASS{background:#2e7d32} .FAIL{background:#c62828} .ERROR{background:#f9a825;color:#222} .NONE{background:#888}
table.figures{border-collapse:collapse;font-size:13px;margin-bottom:8px} table.figures td{padding:2px 12px 2px 0;vertical-align:top}
table.figures td:first-child{color:#666;white-space:nowrap}
.warning{color:#e65100;font-weight:600} .advice{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 10px;font-size:13px;margin:6px 0}
.chart svg{width:100%;height:auto} .legend{font-size:12px;color:#444;margin:-8px 0 14px;display:flex;gap:16px;flex-wrap:wrap} code{font-size:12px;word-break:break-all}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var charts = 0;
  document.querySelectorAll('.chart svg').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 100 && box.height > 50 && svg.querySelectorAll('polyline, path, line, circle').length > 5) { charts += 1; }
  });
  document.body.setAttribute('data-charts-rendered', String(charts));
});
"""


def _figures(rows: list[tuple[str, str]]) -> str:
    return '<table class="figures">' + "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _section(name: str, points: list[TrendPoint], outlook: Outlook | None, status: StaleStatus | None, chart: str | None) -> str:
    newest = points[-1] if points else None
    verdict = newest.verdict if newest else "NONE"
    rows: list[tuple[str, str]] = []
    if newest is not None:
        rows.append(
            (
                "last drill",
                f"{newest.started_at:%Y-%m-%d %H:%M} UTC, {escape(newest.verdict)}"
                + (f" ({escape(newest.failure_mode)})" if newest.failure_mode else ""),
            )
        )
        rows.append(
            (
                "RTO",
                f'<span data-figure="rto">{duration_text(newest.rto_seconds)}</span> (target {duration_text(newest.rto_target_seconds)})',
            )
        )
        rows.append(
            (
                "RPO",
                f'<span data-figure="rpo">{duration_text(newest.rpo_seconds)}</span> (target {duration_text(newest.rpo_target_seconds)})',
            )
        )
    if status is not None:
        rows.append(("freshness", ('<span class="warning">STALE</span>: ' if status.stale else "") + escape(status.detail())))
    if outlook is not None:
        css = "warning" if outlook.forecast.warning else ""
        rows.append(("forecast", f'<span class="{css}" data-figure="forecast">{escape(outlook.forecast.line)}</span>'))
    if newest is not None and newest.evidence:
        rows.append(("evidence", f"<code>{escape(newest.evidence)}</code>"))
    sample = sum(1 for p in points if p.release == "SAMPLE DATA")
    rows.append(
        (
            "drills",
            str(len(points))
            + (
                f' <span class="warning">({sample} of them SAMPLE DATA from `drillbook demo --sample-history`, not real drills)</span>'
                if sample
                else ""
            ),
        )
    )
    advice = ""
    if outlook is not None and outlook.advice is not None:
        items = "".join(f"<li>{escape(step)}</li>" for step in outlook.advice.route)
        advice = f'<div class="advice"><b>No-go advice:</b> {escape("; ".join(outlook.advice.reasons))}.<ol>{items}</ol></div>'
    body = (
        f'<div class="chart" role="img" aria-label="RTO and RPO of {escape(name)} over time">{chart}</div>'
        if chart
        else "<p>No drills recorded yet.</p>"
    )
    return (
        f'<section class="db" id="db-{escape(name)}" data-database="{escape(name)}">'
        f'<h2>{escape(name)} <span class="badge {verdict}">{escape(verdict if newest else "no drills")}</span></h2>'
        f"{_figures(rows)}{advice}{body}</section>"
    )


def _legend(colours: dict[str, str]) -> str:
    items = [
        f'<span><b style="color:{colours["PASS"]}">●</b> PASS</span>',
        f'<span><b style="color:{colours["FAIL"]}">✕</b> FAIL</span>',
        f'<span><b style="color:{colours["ERROR"]}">✕</b> ERROR</span>',
        f'<span><b style="color:{colours["target"]}">– –</b> target</span>',
        f'<span><b style="color:{colours["forecast"]}">· · ·</b> RTO forecast (Theil–Sen fit of recent passing drills)</span>',
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def render_page(catalogue: Catalogue, now: datetime | None = None, days: float = 90) -> str:
    """The whole page as one string (charts inline as SVG)."""
    now = now or datetime.now(UTC)
    names = [entry.name for entry in catalogue.database]
    since = now - timedelta(days=days)
    history = trend_points(catalogue.history_url, names, since=min(since, now - timedelta(days=TREND_DAYS)))
    statuses = {s.database: s for s in stale_status(catalogue, now)}
    stale = [s for s in statuses.values() if s.stale]
    if stale:
        items = "".join(f'<li><a href="#db-{escape(s.database)}">{escape(s.database)}</a>: {escape(s.detail())}</li>' for s in stale)
        banner = f'<div class="stale" data-stale="{len(stale)}"><h2>{len(stale)} stale database(s): no PASS within max_drill_age</h2><ul>{items}</ul></div>'
    else:
        banner = '<div class="ok" data-stale="0">No stale database: every one passed a drill within its max_drill_age.</div>'
    order = sorted(catalogue.database, key=lambda e: (not statuses[e.name].stale, e.name))
    sections = []
    for entry in order:
        points = history.get(entry.name, [])
        shown = [p for p in points if p.started_at >= since]
        outlook = outlook_of(catalogue, entry.name, points, entry.rto_target, now) if points else None
        label = f"RTO and RPO of {entry.name} over the last {days:g} days against their targets, with the RTO forecast"
        chart = render_svg(shown, outlook.forecast if outlook else None, now=now, label=label) if shown else None
        sections.append(_section(entry.name, points, outlook, statuses.get(entry.name), chart))  # type: ignore[arg-type]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>drillbook: restore drills</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        f'<h1>Restore drills</h1><div class="sub">{len(names)} database(s) from {escape(str(catalogue.path or "the catalogue"))}; '
        f"generated {now:%Y-%m-%d %H:%M} UTC by drillbook; charts show the last {days:g} days.</div>"
        f"{_legend(COLOURS)}"
        f"{banner}{''.join(sections)}</body></html>\n"
    )
