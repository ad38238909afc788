"""RPO from the application's data: the newest change in the live database minus the newest in the copy.

The replica-based RPO says how old the replica's newest change is; an idle
database looks old there while nothing would be lost. `freshness_query` (e.g.
`SELECT max(updated_at) FROM orders`) measures the data itself: run on the live
database (opened `mode=ro` with `query_only`, never written; skipped with a note
when `live_path` is not on this machine) and on the restored copy (read-only).
Their difference is the data-loss window.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field

from drillbook.tasks.catalogue_sql import CopyLacks, QueryBroken, check_on_copy
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.outcome import Status
from drillbook.tasks.steps import StepResult

QUERY_TIMEOUT = 30.0


class FreshnessReport(StepResult):
    """The newest change by the data's own clock, on the live database and on the copy."""

    live_newest: datetime | None = None
    copy_newest: datetime | None = None
    data_loss_seconds: float | None = Field(default=None, description="live newest minus copy newest (0 when the copy is as new).")
    error_field: str | None = None
    copy_lacks: str | None = Field(default=None, description="What the copy lacks that freshness_query names (a schema finding).")
    notes: list[str] = Field(default_factory=list)


class FreshnessValueError(ValueError):
    """The query ran but its value is not a time."""


def as_time(value: Any) -> datetime:
    """A timestamp from what a query returns: ISO 8601 text (naive = UTC) or Unix seconds / milliseconds."""
    if isinstance(value, bool) or value is None:
        raise FreshnessValueError(f"returned {value!r}, not a timestamp")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise FreshnessValueError(f"returned {value[:40]!r}, not an ISO 8601 time or Unix seconds") from None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise FreshnessValueError(f"returned a {type(value).__name__}, not a timestamp")


def read_only_uri(path: str | Path) -> str:
    """mode=ro, and immutable=1 when no -wal / -shm sit beside the file.

    Opening a WAL-mode database with mode=ro alone *creates* an empty -wal and a
    -shm when they are missing (measured, SQLite 3.4x): a write beside the live
    database. Without them the file is fully checkpointed, so immutable=1 reads it
    exactly and creates nothing. With them (the application has it open), mode=ro
    reads the WAL like any reader.
    """
    resolved = Path(path).resolve()
    sidecars = all(Path(f"{resolved}{suffix}").exists() for suffix in ("-wal", "-shm"))
    return f"file:{quote(str(resolved))}?mode=ro" + ("" if sidecars else "&immutable=1")  # quoted: a '?' or '#' in the path


def live_database(entry: DatabaseEntry) -> tuple[Path | None, str]:
    """The live database `freshness_query` reads on this machine, or None and why it cannot be read here."""
    if not entry.freshness_query:
        return None, "no freshness_query in the catalogue"
    if not entry.live_path:
        return None, "no live_path in the catalogue"
    live = Path(entry.live_path).expanduser()
    if not live.is_file():
        return None, f"the live database {live} is not on this machine"
    return live, ""


def newest_change(path: str | Path, sql: str, *, timeout: float = QUERY_TIMEOUT) -> Any:
    """The query's single value, on a read-only connection (mode=ro, query_only), interrupted at `timeout`."""
    deadline = time.monotonic() + timeout
    connection = sqlite3.connect(read_only_uri(path), uri=True, timeout=5)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        check_on_copy(connection, sql)  # QueryBroken: the catalogue's; CopyLacks: the database's
        row = connection.execute(sql).fetchone()
    finally:
        connection.close()
    if row is None or len(row) != 1:
        raise FreshnessValueError(f"returned {'no rows' if row is None else f'{len(row)} columns'}; it must return one value")
    return row[0]


def _lacks_too(live: Path, sql: str) -> bool:
    """True when the live database lacks what the query names as well: then the query, not the copy, is wrong."""
    try:
        newest_change(live, sql)
    except CopyLacks:
        return True
    except (sqlite3.Error, QueryBroken, FreshnessValueError):
        return False
    return False


def measure_freshness(entry: DatabaseEntry, copy_path: str | Path) -> FreshnessReport:
    """Run `freshness_query` on the live database and the copy; the difference is the data-loss window."""
    started = time.monotonic()
    report = FreshnessReport(status=Status.PASSED)
    sql = entry.freshness_query or ""

    def done() -> FreshnessReport:
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def config_error(where: str, problem: str) -> FreshnessReport:
        report.status, report.error_field = Status.ERROR, "freshness_query"
        report.summary = f"database {entry.name!r}: field freshness_query {problem} on the {where}: fix the query (one value: a timestamp)"
        return done()

    live = Path(entry.live_path).expanduser() if entry.live_path else None
    try:
        copy_value = newest_change(copy_path, sql)
    except QueryBroken as exc:
        return config_error("restored copy", f"does not parse ({exc})")
    except CopyLacks as exc:
        if live is not None and live.is_file() and _lacks_too(live, sql):
            return config_error(f"live database {live}", f"names what the live database lacks too ({exc.missing})")
        report.status, report.copy_lacks = Status.FAILED, str(exc)
        report.summary = f"freshness_query cannot run: {exc}"
        return done()
    except sqlite3.Error as exc:
        return config_error("restored copy", f"failed ({exc})")
    except FreshnessValueError as exc:
        return config_error("restored copy", str(exc))

    live_value = None
    if live is None:
        report.notes.append("live_path is not set: only the copy's newest change is known (data-loss window not measured)")
    elif not live.is_file():
        report.notes.append(f"the live database {live} is not on this machine: data-loss window not measured")
    else:
        try:
            live_value = newest_change(live, sql)
        except (sqlite3.Error, QueryBroken, CopyLacks) as exc:
            return config_error(f"live database {live}", f"failed ({exc})")
        except FreshnessValueError as exc:
            return config_error(f"live database {live}", str(exc))

    if live_value is not None:
        try:
            report.live_newest = as_time(live_value)
        except FreshnessValueError as exc:
            return config_error(f"live database {live}", str(exc))
    if copy_value is None and report.live_newest is not None:
        report.status = Status.FAILED
        report.summary = (
            f"the copy holds nothing for freshness_query while the live database's newest change is {report.live_newest:%Y-%m-%d %H:%M:%S}Z"
        )
        return done()
    try:
        report.copy_newest = as_time(copy_value)
    except FreshnessValueError as exc:
        return config_error("restored copy", str(exc))
    if report.live_newest is None:
        report.summary = f"copy's newest change {report.copy_newest:%Y-%m-%d %H:%M:%S}Z; " + report.notes[-1]
        return done()
    report.data_loss_seconds = round(max(0.0, (report.live_newest - report.copy_newest).total_seconds()), 3)
    report.summary = (
        f"data-loss window {report.data_loss_seconds:.1f}s (live newest {report.live_newest:%Y-%m-%d %H:%M:%S}Z, "
        f"copy newest {report.copy_newest:%Y-%m-%d %H:%M:%S}Z)"
    )
    return done()
