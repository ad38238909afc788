"""The operator's runbook for one database, every field filled from the newest evidence and dated.

The fields are the domain notes' runbook entry: replica destination, last replicated
position and its time, last restore drill and its result, expected RPO and RTO,
restore target path, credential handling, corruption triage. Each comes from a drill
(the one just judged, or the history store and its evidence bundles); a field with no
evidence says so and never guesses. Rendered as Markdown (stdout, the file beside the
evidence) or HTML (Jinja2 autoescape when installed, else escaped text in <pre>).
"""

from __future__ import annotations

import html
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel

from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.errors import HistoryError
from drillbook.tasks.evidence import bundle_path, read_bundle
from drillbook.tasks.files import write_atomic
from drillbook.tasks.history.store import DrillRecord, recent_drills, trend_points
from drillbook.tasks.result import DrillResult
from drillbook.tasks.storage import BACKENDS
from drillbook.tasks.text import duration_text, iso, redact_url

NEVER = "never drilled"
FAILURE_WINDOW_DAYS = 90
HISTORY_READ = 200  # drills read back to find the newest of each kind

TRIAGE = [
    "Keep the copy: do not delete a restored copy that failed its checks (drills keep it under scratch_dir); it is the evidence.",
    "Run `PRAGMA integrity_check;` on the primary (read-only: `sqlite3 'file:LIVE?mode=ro' 'PRAGMA integrity_check;'`): "
    "an intact primary means the damage is in the replica or the restore path, not the data.",
    "Find the newest clean point: `drillbook recover {name} --find-clean --output PATH` (add `--checks smoke,expectations` "
    "when the damage may be in the data, not the pages); it prints what the point loses and the litestream command.",
    "Decide with the owners whether to promote that copy; drillbook never promotes it.",
]


class RunbookField(BaseModel):
    title: str
    lines: list[str]
    evidence: str = ""


class Runbook(BaseModel):
    database: str
    written_at: datetime
    fields: list[RunbookField]


def _field(title: str, lines: list[str], evidence: str) -> RunbookField:
    return RunbookField(title=title, lines=lines, evidence=evidence)


def _kind(summary: dict | None) -> str:
    point = (summary or {}).get("point") or {}
    kind = point.get("kind")
    if not kind:
        return "newest position"
    return "retention" if kind == "retention" else "point"


def _drill_source(drill_id: str, at: datetime) -> str:
    return f"drill {drill_id[:8]} at {iso(at)}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_runbook(entry: DatabaseEntry, catalogue: Catalogue, result: DrillResult | None = None, now: datetime | None = None) -> Runbook:
    """Every field from the newest evidence: `result` (the drill just judged, not yet recorded) first, then the history store."""
    now = now or datetime.now(UTC)
    notes: list[str] = []
    try:
        rows = [r for r in recent_drills(catalogue.history_url, entry.name, HISTORY_READ) if not result or r.drill_id != result.drill_id]
        failures_since = now - timedelta(days=FAILURE_WINDOW_DAYS)
        recent = trend_points(catalogue.history_url, [entry.name], since=failures_since).get(entry.name, [])
    except HistoryError as exc:
        rows, recent = [], []
        notes.append(f"the history store could not be read ({exc}): only the drill just run is evidence here")
    newest = result if result is not None else _bundle(rows[0]) if rows else None
    newest_at = _aware(newest.started_at) if newest else (_aware(rows[0].started_at) if rows else None)
    newest_id = newest.drill_id if newest else (rows[0].drill_id if rows else "")
    source = _drill_source(newest_id, newest_at) if newest_at else NEVER

    fields = [
        _field("Replica destination", [redact_url(entry.replica)] + _endpoint(newest), f"catalogue entry {entry.name!r}"),
        _field("Writer layout", _layout(newest), source if newest else NEVER),
        _field("Newest replicated position", _position(newest), source if newest else NEVER),
        _field(
            "Last drills",
            _last_drills(result, rows, _evidence_of(result, catalogue)),
            "history store" + (" and the drill just run" if result else ""),
        ),
        _field("RTO and RPO", _targets(entry, newest, rows), source if newest or rows else NEVER),
        _field("Restore target", _target(entry, catalogue), f"catalogue: scratch_dir and live_path of {entry.name!r}"),
        _field("Restore and check commands", _commands(entry, catalogue), f"catalogue entry {entry.name!r}"),
        _field("Credentials", _credentials(entry), "the replica URL's scheme (variable names only, never values)"),
        _field("Corruption triage", [f"{i}. {step.format(name=entry.name)}" for i, step in enumerate(TRIAGE, 1)], "domain notes"),
        _field(
            f"Failure modes, last {FAILURE_WINDOW_DAYS} days",
            _failures(recent, result),
            f"history store since {iso(now - timedelta(days=FAILURE_WINDOW_DAYS))}",
        ),
        _field("No-go status", _no_go(newest), source if newest else NEVER),
    ]
    if notes:
        fields.append(_field("Notes", notes, "drillbook"))
    return Runbook(database=entry.name, written_at=now, fields=fields)


def _evidence_of(result: DrillResult | None, catalogue: Catalogue) -> str | None:
    """Where the drill just judged writes its bundle (the runbook is refreshed before the record, so its note is in it)."""
    if result is None:
        return None
    return result.evidence or str(bundle_path(catalogue.evidence_dir, result))


def _bundle(row: DrillRecord) -> DrillResult | None:
    """The newest drill's full evidence, when its bundle is still where the history says."""
    if not row.evidence:
        return None
    try:
        return read_bundle(Path(row.evidence))
    except (OSError, ValueError):
        return None


def _endpoint(newest: DrillResult | None) -> list[str]:
    if newest and newest.replica and newest.replica.endpoint:
        return [f"endpoint {redact_url(newest.replica.endpoint)}"]
    return []


def _layout(newest: DrillResult | None) -> list[str]:
    if newest is None or newest.replica is None or not newest.replica.ok:
        return [NEVER if newest is None else "unknown: the newest drill could not inspect the replica"]
    state = newest.replica
    levels = ", ".join(f"L{k}: {v}" for k, v in sorted(state.levels.items()))
    return [f"{state.layout} ({state.files} files, {state.total_bytes:,} bytes; {levels})"] + list(state.notes)


def _position(newest: DrillResult | None) -> list[str]:
    if newest is None or newest.replica is None or not newest.replica.ok:
        return [NEVER if newest is None else "unknown: the newest drill could not inspect the replica"]
    state = newest.replica
    where = f"TXID {state.newest_txid}" if state.newest_txid else f"position {state.position}"
    return [f"{where}, written at {iso(state.newest_time)}"]


def _last_drills(result: DrillResult | None, rows: list[DrillRecord], evidence: str | None) -> list[str]:
    seen: dict[str, str] = {}
    if result is not None:
        summary = result.summary()
        seen[_kind(summary)] = _drill_line(result.verdict.value, result.failure_mode, result.drill_id, result.started_at, evidence)
    for row in rows:
        kind = _kind(row.summary)
        if kind not in seen:
            seen[kind] = _drill_line(row.verdict, row.failure_mode, row.drill_id, row.started_at, row.evidence)
    return [f"{kind}: {seen.get(kind, NEVER)}" for kind in ("newest position", "point", "retention")]


def _drill_line(verdict: str, mode, drill_id: str, at: datetime, evidence: str | None) -> str:
    mode = getattr(mode, "value", mode)
    return f"{verdict}{f' ({mode})' if mode else ''} on {iso(_aware(at))}, drill {drill_id[:8]}" + (
        f", evidence {evidence}" if evidence else ""
    )


def _targets(entry: DatabaseEntry, newest: DrillResult | None, rows: list[DrillRecord]) -> list[str]:
    targets = f"targets: RTO {duration_text(entry.rto_target)}, RPO {duration_text(entry.rpo_target)}"
    if newest is None and not rows:
        return [f"{targets}; measured: {NEVER}"]
    rto = newest.rto_seconds if newest else rows[0].rto_seconds
    rpo = newest.rpo_seconds if newest else rows[0].rpo_seconds
    lines = [targets, f"measured: RTO {duration_text(rto)}, RPO {duration_text(rpo)}"]
    outlook = newest.outlook if newest else None
    lines.append(f"forecast: {outlook.forecast.line}" if outlook else "forecast: none (no outlook in the newest evidence)")
    return lines


def _target(entry: DatabaseEntry, catalogue: Catalogue) -> list[str]:
    lines = [f"drills restore into {catalogue.scratch_dir / entry.name}/<stamp>-<drill id>/{entry.name}.db and remove it"]
    lines.append(f"live database: {entry.live_path} (never written)" if entry.live_path else "live database: not set (live_path)")
    return lines


def _commands(entry: DatabaseEntry, catalogue: Catalogue) -> list[str]:
    copy = str(catalogue.scratch_dir / entry.name / f"{entry.name}.db")
    return [
        shlex.join(["litestream", "restore", "-o", copy, redact_url(entry.replica)]),
        shlex.join(["sqlite3", copy, "PRAGMA integrity_check;"]),
        f"drillbook run {shlex.quote(entry.name)}",
        f"drillbook recover {shlex.quote(entry.name)} --find-clean --output PATH",
    ]


def _credentials(entry: DatabaseEntry) -> list[str]:
    parts = urlsplit(entry.replica)
    backend = BACKENDS.get(parts.scheme)
    lines = list(backend.credentials if backend and backend.credentials else [f"no known variables for {parts.scheme}://"])
    if parts.username or parts.password or redact_url(entry.replica) != entry.replica:
        lines.append("the replica URL itself carries a credential (redacted here): move it into the environment")
    return lines


def _failures(recent, result: DrillResult | None) -> list[str]:
    modes: dict[str, tuple[int, datetime]] = {}
    points = list(recent)
    for p in points:
        if p.failure_mode and (not result or p.drill_id != result.drill_id):
            count, last = modes.get(p.failure_mode, (0, p.started_at))
            modes[p.failure_mode] = (count + 1, max(last, p.started_at))
    if result is not None and result.failure_mode:
        mode = result.failure_mode.value
        count, last = modes.get(mode, (0, result.started_at))
        modes[mode] = (count + 1, max(_aware(last), _aware(result.started_at)))
    drills = len(points) + (1 if result is not None and all(p.drill_id != result.drill_id for p in points) else 0)
    if not drills:
        return [f"{NEVER} in the last {FAILURE_WINDOW_DAYS} days"]
    if not modes:
        return [f"none in {drills} drill(s)"]
    return [
        f"{mode}: {count} time(s), last {iso(last)}" for mode, (count, last) in sorted(modes.items(), key=lambda m: -m[1][1].timestamp())
    ]


def _no_go(newest: DrillResult | None) -> list[str]:
    if newest is None:
        return [NEVER]
    if newest.outlook is None:
        return ["unknown: the newest drill carries no outlook"]
    if newest.outlook.advice is None:
        return ["go: no no-go advice from the RTO trend"]
    return ["NO-GO advice"] + newest.outlook.advice.lines()


def render_runbook_markdown(book: Runbook) -> str:
    out = [f"# Runbook: {book.database}", "", f"Written {iso(book.written_at)} from the newest evidence by drillbook.", ""]
    for f in book.fields:
        out += [f"## {f.title}", ""] + [line if line[:1].isdigit() else f"- {line}" for line in f.lines]
        out += ["", f"_Evidence: {f.evidence}_", ""]
    return "\n".join(out)


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Runbook: {{ book.database }}</title></head>
<body><h1>Runbook: {{ book.database }}</h1><p>Written {{ written }} from the newest evidence by drillbook.</p>
{% for f in book.fields %}<h2>{{ f.title }}</h2><ul>{% for line in f.lines %}<li>{{ line }}</li>{% endfor %}</ul>
<p><em>Evidence: {{ f.evidence }}</em></p>
{% endfor %}</body></html>
"""


def render_runbook_html(book: Runbook) -> str:
    """HTML with every value escaped by Jinja2's autoescape; without Jinja2, the Markdown escaped in <pre>."""
    try:
        import jinja2
    except ImportError:
        return f"<!doctype html><meta charset='utf-8'><pre>{html.escape(render_runbook_markdown(book))}</pre>\n"
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(_HTML).render(book=book, written=iso(book.written_at))


def runbook_path(catalogue: Catalogue, name: str) -> Path:
    return catalogue.evidence_dir / "runbooks" / f"{name}.md"


def refresh_runbook(result: DrillResult, entry: DatabaseEntry, catalogue: Catalogue) -> str:
    """Rewrite the database's runbook after a drill; the note for the drill (its path, or why it was not written), never an error."""
    try:
        path = runbook_path(catalogue, entry.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, render_runbook_markdown(build_runbook(entry, catalogue, result)))
        return f"runbook: {path}"
    except Exception as exc:  # noqa: BLE001 - the runbook is a by-product: its failure is a note, never the verdict's
        return f"runbook not refreshed: {type(exc).__name__}: {exc}"
