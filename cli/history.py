"""`drillbook history`, `stale`, `metrics`, `report --html`: the history, looking back and ahead.

Exit codes: `stale` exits 1 when any database is stale; the others 0, or 2 when
the catalogue or the history store is not usable (one line saying which). A
[[directories]] entry whose replica could not be listed is one line on stderr
and exit 2 for `stale` and `metrics`, after the other databases are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillbook.cli.config import said
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.outcome import EXIT_CODES, Verdict
from drillbook.tasks.text import duration_text, redact, visible

EXIT_FAIL = EXIT_CODES[Verdict.FAIL]
COMPACT_WIDTH = 80  # piped output is laid out for this


def output_width() -> int:
    """The terminal's columns (or $COLUMNS); 80 when piped, so no line wraps in a pager or a log."""
    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return max(40, shutil.get_terminal_size((COMPACT_WIDTH, 24)).columns)
    return COMPACT_WIDTH


def fit_table(columns: list[tuple[str, list[str]]], width: int, keep: int = 3) -> list[str]:
    """Plain aligned columns, dropping the rightmost optional ones (after `keep`) and then shortening the widest until a line fits `width`."""
    columns = [(title, [cell.replace("\n", " ") for cell in cells]) for title, cells in columns]

    def widths(cols: list[tuple[str, list[str]]]) -> list[int]:
        return [max([len(title), *(len(c) for c in cells)]) for title, cells in cols]

    while len(columns) > keep and sum(widths(columns)) + 2 * (len(columns) - 1) > width:
        columns.pop()
    sizes = widths(columns)
    while sum(sizes) + 2 * (len(sizes) - 1) > width and max(sizes) > 8:
        widest = sizes.index(max(sizes))
        sizes[widest] -= 1

    def cell(text: str, size: int) -> str:
        return (text if len(text) <= size else text[: size - 1] + "…").ljust(size)

    rows = len(columns[0][1]) if columns else 0
    lines = ["  ".join(cell(title, size) for (title, _), size in zip(columns, sizes)).rstrip()]
    for index in range(rows):
        lines.append("  ".join(cell(cells[index], size) for (_, cells), size in zip(columns, sizes)).rstrip())
    return lines


def _plan_cell(row: Any) -> str:

    if row.planned_rto_seconds is None:
        return ""
    if row.rto_seconds is None or row.planned_rto_seconds <= 0:
        return duration_text(row.planned_rto_seconds)
    return f"{duration_text(row.planned_rto_seconds)} ({(row.rto_seconds - row.planned_rto_seconds) / row.planned_rto_seconds:+.0%})"


def _point_cell(row: Any) -> str:
    """'' for a drill of the newest position; else the kind and the point it restored ('oldest 11-30 12:00', 'txid 00000000000000a2')."""
    point = (row.summary or {}).get("point") or {}
    if not point and not getattr(row, "point_kind", None):
        return ""
    kind = point.get("kind") or row.point_kind or "point"
    moment = point.get("requested_at") or point.get("expected_time") or point.get("restored_time")
    if kind == "txid" and point.get("requested_txid"):
        return f"txid {point['requested_txid']}"
    return f"{kind} {moment[:16].replace('T', ' ')}" if moment else kind


def cmd_history(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.store import recent_drills, safe_url

    catalogue = load_catalogue(args.config)
    rows = recent_drills(catalogue.history_url, args.name, args.limit)
    if args.name and not rows:
        catalogue.get(
            args.name
        )  # a name the catalogue does not know is a mistake (exit 2), as in `run`; a removed one with history is shown
    if args.json:
        print(json.dumps([row.summary for row in rows], indent=2))
        return 0
    if not rows:
        print(f"no drills recorded yet in {safe_url(catalogue.history_url)}" + (f" for {args.name!r}" if args.name else ""))
        return 0
    # Most useful first: what fits in the width is shown; the rest is one `--json` away.
    width = output_width()
    started = "%Y-%m-%d %H:%M" if width >= 100 else "%m-%d %H:%M"  # 80 columns keep the failure mode rather than the year
    columns = [
        ("started (UTC)", [row.started_at.strftime(started) for row in rows]),
        ("database", [row.database for row in rows]),
        ("verdict", [row.verdict for row in rows]),
        ("RTO / target", [f"{duration_text(row.rto_seconds)} / {duration_text(row.rto_target_seconds)}" for row in rows]),
        ("RPO / target", [f"{duration_text(row.rpo_seconds)} / {duration_text(row.rpo_target_seconds)}" for row in rows]),
        ("failure mode", [row.failure_mode or "" for row in rows]),
        ("point", [_point_cell(row) for row in rows]),  # a point-in-time drill restored a past point, not the newest
        ("drill", [row.drill_id[:8] for row in rows]),  # full UUIDs in --json and the evidence; people read a prefix
        ("release", [visible(row.release or "")[:80] for row in rows]),  # stored as it came; shown, bounded
        ("plan (error)", [_plan_cell(row) for row in rows]),
        ("evidence", [visible(redact(row.evidence or "")) for row in rows]),
    ]
    for line in fit_table(columns, width):
        print(line)
    return 0


def cmd_stale(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.stale import stale_status

    catalogue = load_catalogue(args.config)
    if args.notify:
        from drillbook.flows.stale import check_stale

        statuses = check_stale(catalogue)
    else:
        statuses = stale_status(catalogue)
    stale = [s for s in statuses if s.stale]
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2))
    else:
        print(f"{len(stale)} of {len(statuses)} database(s) stale (no PASS within max_drill_age)")
        for status in statuses:
            print(("  STALE " if status.stale else "  ok    ") + visible(status.line()))
    return _unlisted_said(catalogue) or (EXIT_FAIL if stale else 0)


def cmd_metrics(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.metrics import build_registry, exposition, push_metrics, write_metrics

    catalogue = load_catalogue(args.config)
    if args.push:
        try:
            push_metrics(catalogue, args.push, job=args.job)
        except OSError as exc:
            raise DrillbookError(
                f"the Pushgateway at {args.push} did not take the metrics ({exc}): check --push URL and that the gateway runs"
            ) from None
        print(f"pushed {len(catalogue.databases())} database(s)' metrics to {args.push} (job {args.job})", file=sys.stderr)
        return _unlisted_said(catalogue)
    output = args.output or (str(catalogue.metrics_file) if catalogue.metrics_file else "-")
    if output == "-":
        sys.stdout.write(exposition(build_registry(catalogue)))
        return _unlisted_said(catalogue)
    try:
        write_metrics(catalogue, output)
    except OSError as exc:
        raise DrillbookError(
            f"cannot write the metrics file {output}: {exc.strerror}; choose another --output or [drillbook] metrics_file"
        ) from None
    print(f"wrote metrics for {len(catalogue.databases())} database(s) to {output}", file=sys.stderr)
    return _unlisted_said(catalogue)


def _unlisted_said(catalogue: Any) -> int:
    """Each [[directories]] entry whose replica could not be listed, one line on stderr: exit 2 after the rest was written."""
    return said([str(problem) for _, problem in catalogue.unlisted()])


def cmd_report(args: argparse.Namespace) -> int:
    from drillbook.tasks.files import write_atomic
    from drillbook.tasks.report.html import render_page

    catalogue = load_catalogue(args.config)
    page = render_page(catalogue, days=args.days)
    target = Path(args.html)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, page)
    except OSError as exc:
        reason = (
            f"{exc.filename} is not a directory"
            if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename
            else exc.strerror
        )
        raise DrillbookError(f"cannot write the report to {target}: {reason}; choose another path for --html") from None
    print(
        f"wrote {target} ({len(page.encode()) // 1024} KB, {len(catalogue.databases())} database(s)); open it in a browser, it needs nothing else"
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.prune import prune

    catalogue = load_catalogue(args.config)
    counts = prune(catalogue, apply=args.apply, older_than=args.older_than)
    if args.json:
        print(json.dumps(counts.model_dump(mode="json"), indent=2))
    else:
        print(counts.line() + ("" if args.apply else "; dry run: pass --apply to delete"))
    return 0


def _retention(value: str) -> float:
    from drillbook.tasks.config.fields import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds < 86400:
        raise argparse.ArgumentTypeError(f"expected a duration of a day or more, like 90d, got {value!r}")
    return seconds


def _positive_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = 0.0
    if not 0 < days <= 3660:
        raise argparse.ArgumentTypeError(f"expected a number of days between 0 and 3660, got {value!r}")
    return days


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    history = commands.add_parser(
        "history", help="list recent drills and their verdicts", description="Recent drills from the history store, newest first."
    )
    history.add_argument("name", nargs="?", help="only this database")
    history.add_argument("--limit", type=int, default=20, help="how many drills (default 20)")
    history.add_argument("--json", action="store_true", help="print the drills as a JSON list")
    config_option(history)
    history.set_defaults(func=cmd_history)

    stale = commands.add_parser(
        "stale",
        help="list databases whose last PASS is older than max_drill_age (exit 1 when any)",
        description="A database with no passing drill within its max_drill_age (default 48h) is stale: the nightly may have stopped.",
        epilog="Exit codes: 0 none stale, 1 some stale, 2 the catalogue or history is not usable, or a directory's replica could not be listed.",
    )
    config_option(stale)
    stale.add_argument("--json", action="store_true", help="print every database's status as JSON")
    stale.add_argument(
        "--notify", action="store_true", help="post one Slack alert per database that became stale (or recovered) since the last check"
    )
    stale.set_defaults(func=cmd_stale)

    metrics = commands.add_parser(
        "metrics",
        help="the history as Prometheus metrics (stdout, a textfile, or a Pushgateway)",
        description="Per database: age of the last PASS, last RTO / RPO and their targets, last verdict, forecast days to the RTO target.",
    )
    config_option(metrics)
    metrics.add_argument(
        "--output", metavar="FILE", help="write a textfile-collector file (default: [drillbook] metrics_file, else stdout; '-' for stdout)"
    )
    metrics.add_argument("--push", metavar="URL", help="push to this Pushgateway instead (e.g. http://pushgateway:9091)")
    metrics.add_argument("--job", default="drillbook", help="the Pushgateway job label (default drillbook)")
    metrics.set_defaults(func=cmd_metrics)

    prune = commands.add_parser(
        "prune",
        help="delete history rows, evidence files and drillbook's Prefect runs older than history_retention (dry run unless --apply)",
        description="Prune what is older than [drillbook] history_retention (or --older-than): history rows and their evidence files, "
        "and runs of drillbook's flows on the Prefect server. Each database's newest drill and newest PASS are always kept. "
        "Without --apply nothing is deleted: the counts say what would be.",
    )
    config_option(prune)
    prune.add_argument("--apply", action="store_true", help="delete (default: a dry run printing what would be deleted)")
    prune.add_argument("--older-than", type=_retention, metavar="DURATION", help="instead of history_retention, e.g. 30d")
    prune.add_argument("--json", action="store_true", help="print the counts as JSON")
    prune.set_defaults(func=cmd_prune)

    report = commands.add_parser(
        "report",
        help="write a self-contained HTML page of every database's drills, charts and forecasts",
        description="One static page (no server, no external assets): stale databases first, then per database the RTO / RPO chart with its forecast.",
    )
    config_option(report)
    report.add_argument("--html", required=True, metavar="OUT.html", help="where to write the page")
    report.add_argument("--days", type=_positive_days, default=90, help="how many days the charts show (default 90)")
    report.set_defaults(func=cmd_report)
