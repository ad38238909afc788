"""Every query drillbook sends to the history uses an index, on a history of 1,000,000 drills (issue 31).

The history is built in SQLite by one INSERT ... SELECT over a recursive CTE, straight into the table the migrations
made (about 6 s on two busy cores). The statements are the ones drillbook's own readers send (captured from the
engine), each then asked `EXPLAIN QUERY PLAN`: none may read the drills table from end to end.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.history.metrics import build_registry
from drillbook.tasks.history.stale import stale_status
from drillbook.tasks.history.store import _engine, fleet_points, last_passes, recent_drills, trend_points, upgrade_store
from drillbook.tasks.lookahead import FLEET_DAYS, FLEET_SAMPLE, HistorySnapshot
from drillbook.tasks.report.html import render_page
from tests.conftest import entry

DRILLS = 1_000_000
DATABASES = 10_000
START = datetime(2026, 9, 1, tzinfo=UTC)  # 100 nights of 10,000 drills; NOW is just after the last
NOW = START + timedelta(days=DRILLS // DATABASES)

_BUILD = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO drillbook_drills (drill_id, database, started_at, finished_at, verdict, rto_seconds, rto_target_seconds,
                              rpo_seconds, rpo_target_seconds, summary, point_kind, phase_seconds, ltx_bytes)
SELECT printf('%032x', i), printf('tenant-%05d', i % :databases),
       datetime(:start, '+' || (i / :databases) || ' days', '+' || (i % :databases) || ' seconds') || '.000000',
       datetime(:start, '+' || (i / :databases) || ' days', '+' || (i % :databases + 5) || ' seconds') || '.000000',
       CASE WHEN i % 17 = 0 THEN 'FAIL' ELSE 'PASS' END, 3.0, 120.0, 1.0, 600.0, '{}',
       CASE WHEN i % 29 = 0 THEN 'at' END, '{"restore": 2.0}', 1048576
FROM n
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    path = tmp_path_factory.mktemp("history-scale") / "history.db"
    url = f"sqlite:///{path}"
    upgrade_store(url)  # the schema (indexes and all) as every drillbook makes it
    began = time.monotonic()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = OFF")
        # The migrations' indexes are set aside and made again, by their own SQL, after the rows: sorting once is faster.
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'drillbook_drills' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f"DROP INDEX {name}")
        connection.execute(_BUILD, {"last": DRILLS - 1, "databases": DATABASES, "start": START.strftime("%Y-%m-%d %H:%M:%S")})
        for _, sql in indexes:
            connection.execute(sql)
    print(f"built {DRILLS:,} drills in {time.monotonic() - began:.1f}s")
    return url


def _reads(url: str, calls) -> dict[str, list[tuple[str, tuple]]]:
    """Per reader, the statements it sent to the drills table."""
    sent: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "drillbook_drills" in statement and statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, tuple(parameters)))

    engine = _engine(url)
    event.listen(engine, "before_cursor_execute", capture)
    out = {}
    try:
        for name, call in calls.items():
            began = time.monotonic()
            call()
            print(f"{name}: {time.monotonic() - began:.2f}s")
            out[name], sent[:] = list(sent), []
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return out


def _full_reads(connection: sqlite3.Connection, statement: str, parameters: tuple) -> list[str]:
    """The plan's steps that read the drills table end to end: a SCAN, unless it walks an index in order up to a LIMIT."""
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    ordered_limit = " LIMIT " in statement and not any("TEMP B-TREE" in step for step in plan)
    return [
        step
        for step in plan
        if re.match(r"SCAN drillbook_drills\b", step) and not (ordered_limit and "USING INDEX" in step and "COVERING" not in step)
    ]


def test_every_history_query_uses_an_index_on_a_million_drills(history, write_catalogue, tmp_path):
    names = [f"tenant-{n:05d}" for n in (1, 2, 3)]
    config = write_catalogue(
        *(entry(name, f"s3://drills/{name}/app.db") for name in names), settings={"history_url": history, "max_drill_age": "2d"}
    )
    catalogue = load_catalogue(config)
    since = NOW - timedelta(days=90)
    reads = _reads(
        history,
        {
            "recent_drills (history NAME, the runbook, the nightly's point history)": lambda: recent_drills(history, names[0], 200),
            "recent_drills (history, every database)": lambda: recent_drills(history, None, 20),
            "last PASS per database (stale)": lambda: stale_status(catalogue, NOW),
            "metrics": lambda: build_registry(catalogue, NOW),
            "the lookahead snapshot of a fleet's drills": lambda: HistorySnapshot(history, names, now=NOW),
            "a drill's forecast and plan (no snapshot)": lambda: (
                trend_points(history, [names[0]], since=since),
                fleet_points(history, NOW - timedelta(days=FLEET_DAYS), FLEET_SAMPLE),
            ),
            "plan NAME's errors (all its drills)": lambda: trend_points(history, [names[0]]),
            "the page": lambda: render_page(catalogue, NOW),
        },
    )
    assert all(reads.values()), {name: len(sent) for name, sent in reads.items()}
    with sqlite3.connect(history.removeprefix("sqlite:///")) as connection:
        scans = {
            name: [
                (statement.split()[:40], steps)
                for statement, parameters in sent
                if (steps := _full_reads(connection, statement, parameters))
            ]
            for name, sent in reads.items()
        }
    assert {name: found for name, found in scans.items() if found} == {}

    # What they read is right, not just fast: the snapshot holds the 90 days, the last PASS is the newest non-point PASS.
    snapshot = HistorySnapshot(history, names, now=NOW)
    assert len(snapshot.trend_points([names[0]])[names[0]]) == 90
    assert len(snapshot.fleet_points(NOW - timedelta(days=FLEET_DAYS))) == FLEET_SAMPLE
    passes = last_passes(history)
    assert len(passes) == DATABASES
    newest = recent_drills(history, names[0], 5)
    assert passes[names[0]] == next(r.started_at.replace(tzinfo=UTC) for r in newest if r.verdict == "PASS" and r.point_kind is None)
