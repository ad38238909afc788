"""`drillbook report --html`: one static, self-contained page (no server, no external assets).

Stale databases at the top; then per database its last verdict, the figures,
the forecast line and any no-go advice, the last evidence, and a chart of RTO
and RPO over time against their targets with the forecast line (inline SVG,
tasks/report/svg.py). A few lines of inline script count what the browser actually
laid out, so a headless browser can tell a rendered page from a blank one.

The page is a Jinja2 template (tasks/report/templates/, package data) with
autoescaping on: every value from a catalogue, a drill or the history is escaped
where it lands, attributes included; only the chart, SVG drawn here with its own
text escaped, goes in as markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from drillbook.tasks.config import Catalogue
from drillbook.tasks.forecast import TREND_DAYS, Outlook, outlook_of
from drillbook.tasks.history.budget import coverage_text, load_night, within_text
from drillbook.tasks.history.stale import StaleStatus, stale_status
from drillbook.tasks.history.store import TrendPoint, newest_verdicts, recent_drills, trend_points
from drillbook.tasks.report.charts import COLOURS
from drillbook.tasks.report.svg import render_svg
from drillbook.tasks.text import duration_text, visible

SAMPLE_RELEASE = "SAMPLE DATA"
TENANT_SECTIONS = 100  # discovered tenants given a section (and a chart) of their own: those needing attention, worst first
STALE_LISTED = 200  # stale databases named in the banner; the rest are counted (`drillbook stale --json` lists them all)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The templates shipped in the package, autoescaped (.j2 files are HTML here), undefined names an error."""
    env = Environment(
        loader=PackageLoader("drillbook.tasks.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["duration"] = duration_text
    return env


@dataclass
class Section:
    """One database's part of the page, as values; the template decides how it looks."""

    name: str
    verdict: str
    badge: str
    newest: TrendPoint | None
    status: StaleStatus | None
    outlook: Outlook | None
    drills: int
    sample: int
    chart: Markup | None
    replicas: list[tuple[str, str]] = field(default_factory=list)  # (label, figures) of the read-replica and promotion drills
    compat: CompatMatrix | None = None
    phases: list[tuple[str, str]] = field(default_factory=list)  # (phase, what went wrong) of the newest drill's phases that did not pass


def replica_figures(summary: dict) -> list[tuple[str, str]]:
    """The newest drill's follower and promotion figures, from the summary the history keeps."""
    out = []
    follow = summary.get("follow") or {}
    if follow.get("p95") is not None:
        said = f"p50 {duration_text(follow['p50'])}, p95 {duration_text(follow['p95'])}, max {duration_text(follow['max'])}"
        out.append(("follower staleness", f"{said} over {follow['samples']} samples (target {duration_text(follow['target'])})"))
    if follow.get("problem"):
        out.append(
            (
                "follower",
                f"FAIL: {follow['problem']}" + (f" ({follow['stalled_seconds']:.0f}s stalled)" if follow.get("stalled_seconds") else ""),
            )
        )
    promote = summary.get("promote") or {}
    if promote.get("status") not in (None, "skipped"):
        rto = promote.get("failover_rto_seconds")
        said = f"{duration_text(rto) if rto is not None else 'not restorable'} (target {duration_text(promote.get('failover_rto_target'))})"
        out.append(("failover RTO", said + (f", FAIL: {promote['problem']}" if promote.get("problem") else "")))
    return out


def phase_figures(summary: dict) -> list[tuple[str, str]]:
    """The newest drill's phases that failed or could not run, from the summary the history keeps: every phase, by name."""
    out = []
    for name, phase in (summary.get("phases") or {}).items():
        if phase.get("status") in ("failed", "error"):
            out.append((name, visible(f"{phase['status'].upper()}: {phase.get('summary') or ''}".rstrip(": "))))  # escapes shown, not sent
    return out


def _newest_summary(url: str, name: str) -> dict:
    rows = recent_drills(url, name, 1)
    return rows[0].summary if rows and isinstance(rows[0].summary, dict) else {}


@dataclass
class CompatMatrix:
    """The newest restore-tool matrix of a database (restore_with), from the history's summary of that drill."""

    started_at: datetime
    rows: list[dict]


COMPAT_LOOKBACK = 50  # drills read back for the newest one that ran the compatibility phase


def _compat_matrix(catalogue: Catalogue, name: str) -> CompatMatrix | None:
    for row in recent_drills(catalogue.history_url, name, COMPAT_LOOKBACK):
        rows = (row.summary or {}).get("compat")
        if rows:
            return CompatMatrix(started_at=row.started_at, rows=rows)
    return None


def _legend() -> list[tuple[str, str, str]]:
    return [
        ("●", COLOURS["PASS"], "PASS"),
        ("✕", COLOURS["FAIL"], "FAIL"),
        ("✕", COLOURS["ERROR"], "ERROR"),
        ("– –", COLOURS["target"], "target"),
        ("· · ·", COLOURS["forecast"], "RTO forecast (Theil–Sen fit of recent passing drills)"),
    ]


@dataclass
class Fleet:
    """One [[directories]] entry on the page: how its tenants stand, counted; the ones needing attention get sections."""

    name: str
    replica: str
    tenants: int
    tally: str
    attention: int
    shown: int
    problem: str | None = None  # its replica could not be listed


def _fleets(catalogue: Catalogue, statuses: dict[str, StaleStatus]) -> tuple[list[Fleet], list]:
    """Each directory counted, and the tenants needing attention (stale, newest drill not PASS, never drilled) worst first, capped."""
    newest = newest_verdicts(catalogue.history_url) if catalogue.directories else {}
    problems = {directory.name: str(problem) for directory, problem in catalogue.unlisted()}
    fleets, chosen = [], []
    room = TENANT_SECTIONS
    for directory in catalogue.directories:
        tenants = catalogue.discovery(directory).entries
        verdicts = [newest.get(entry.name, "never drilled") for entry in tenants]
        needing = [e for e, v in zip(tenants, verdicts) if v != "PASS" or statuses[e.name].stale]
        needing.sort(key=lambda e: (not statuses[e.name].stale, {"FAIL": 0, "ERROR": 1}.get(newest.get(e.name, ""), 2), e.name))
        shown = needing[:room]
        room -= len(shown)
        chosen += shown
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("FAIL", "ERROR", "never drilled", "PASS") if verdicts.count(v))
        fleets.append(
            Fleet(
                name=directory.name,
                replica=directory.replica_redacted,
                tenants=len(tenants),
                tally=counts or "none discovered",
                attention=len(needing),
                shown=len(shown),
                problem=problems.get(directory.name),
            )
        )
    return fleets, chosen


def render_page(catalogue: Catalogue, now: datetime | None = None, days: float = 90, source: str | None = None) -> str:
    """The whole page as one string (charts inline as SVG); `source` names the catalogue when its path will not last (the demo's)."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    statuses = {s.database: s for s in stale_status(catalogue, now)}
    stale = [s for s in statuses.values() if s.stale]
    current = [s for s in statuses.values() if not s.removed]
    coverage = coverage_text(len(current), sum(1 for s in current if not s.stale), within_text(s.max_age_seconds for s in current))
    fleets, tenants = _fleets(catalogue, statuses)  # a fleet's tenants: counted, sections only for those needing attention
    listed = sorted(catalogue.database, key=lambda e: (not statuses[e.name].stale, e.name)) + tenants
    names = [entry.name for entry in listed]
    history = trend_points(catalogue.history_url, names, since=min(since, now - timedelta(days=TREND_DAYS)))
    sections = []
    for entry in listed:
        points = history.get(entry.name, [])
        shown = [p for p in points if p.started_at >= since]
        outlook = outlook_of(catalogue, entry.name, points, entry.rto_target, now) if points else None
        label = f"RTO and RPO of {entry.name} over the last {days:g} days against their targets, with the RTO forecast"
        chart = render_svg(shown, outlook.forecast if outlook else None, now=now, label=label) if shown else None
        newest = points[-1] if points else None
        summary = _newest_summary(catalogue.history_url, entry.name) if newest else {}
        sections.append(
            Section(
                name=entry.name,
                verdict=newest.verdict if newest else "NONE",
                badge=newest.verdict if newest else "no drills",
                newest=newest,
                status=statuses.get(entry.name),
                outlook=outlook,
                drills=len(points),
                sample=sum(1 for p in points if p.release == SAMPLE_RELEASE),
                chart=Markup(chart) if chart else None,  # noqa: S704 - SVG written by svg.py, its text escaped there
                replicas=replica_figures(summary) if entry.follow or entry.promote else [],
                phases=phase_figures(summary),
                compat=_compat_matrix(catalogue, entry.name) if catalogue.restore_with(entry) else None,
            )
        )
    return (
        environment()
        .get_template("page.html.j2")
        .render(
            count=len(catalogue.database) + sum(fleet.tenants for fleet in fleets),
            fleets=fleets,
            stale_listed=STALE_LISTED,
            source=source or str(catalogue.path or "the catalogue"),
            now=now,
            days=f"{days:g}",
            legend=_legend(),
            stale=stale,
            coverage=coverage,
            night=load_night(catalogue.evidence_dir),  # the last budgeted nightly: what it drilled, left and why
            sections=sections,
        )
    )
