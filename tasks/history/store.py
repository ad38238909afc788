"""The history store: one row per drill, so "last restore drill and its result" is a query away.

SQLAlchemy over a URL: a SQLite file beside the evidence by default, PostgreSQL for a fleet (`history_url =
"postgresql+psycopg://…"`). The evidence bundle stays the full record; a row here points at it, and keeps what
trends need (restored bytes and TXID, the replica's LTX files, phase seconds, versions, the restore plan's forecast).

The schema is managed by Alembic (the scripts ship in drillbook.tasks.migrations). Every entry point upgrades the
store in place first, once per process and URL: a history.db written by an older drillbook gains the new columns
and keeps every row. Concurrent drills do not race: PostgreSQL takes an advisory lock for the upgrade, SQLite a
file lock beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, and_, create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from drillbook.tasks.errors import HistoryError
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import one_line, redact, redact_url

HEAD_REVISION = "0004"  # the newest script in migrations/versions (a test holds the two together)
VERSION_TABLE = "drillbook_alembic_version"  # not alembic_version: the store may share a database with an app that has its own
_PG_LOCK_KEY = 0x64726C62  # "drlb": the advisory lock held while migrating


class Base(DeclarativeBase):
    pass


class DrillRecord(Base):
    """One drill, as the runbook's "last restore drill" line and the trends need it."""

    __tablename__ = "drillbook_drills"
    __table_args__ = (
        Index("ix_drillbook_drills_database_started_at", "database", "started_at"),
        Index("ix_drillbook_drills_last_pass", "verdict", "point_kind", "database", "started_at"),  # revision 0004: last_passes
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drill_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    database: Mapped[str] = mapped_column(String(64), index=True)
    release: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(8))
    failure_mode: Mapped[str | None] = mapped_column(String(64))
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    rto_target_seconds: Mapped[float] = mapped_column(Float)
    rpo_seconds: Mapped[float | None] = mapped_column(Float)
    rpo_target_seconds: Mapped[float] = mapped_column(Float)
    restored_txid: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[str | None] = mapped_column(String(1024))
    summary: Mapped[dict] = mapped_column(JSON)
    # Revision 0002: what trends and forecasts need (NULL on rows from before).
    restored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    ltx_files: Mapped[int | None] = mapped_column(Integer)
    ltx_levels: Mapped[dict | None] = mapped_column(JSON)
    ltx_bytes: Mapped[int | None] = mapped_column(BigInteger)
    phase_seconds: Mapped[dict | None] = mapped_column(JSON)
    drillbook_version: Mapped[str | None] = mapped_column(String(32))
    litestream_version: Mapped[str | None] = mapped_column(String(32))
    planned_rto_seconds: Mapped[float | None] = mapped_column(Float)
    planned_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Revision 0003: a point-in-time drill's kind (at, txid, oldest, random); NULL for a drill of the newest position.
    point_kind: Mapped[str | None] = mapped_column(String(16))


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One drill, the columns a trend, a chart or a metric reads (no summary JSON, no ORM object)."""

    database: str
    drill_id: str
    started_at: datetime
    verdict: str
    failure_mode: str | None
    rto_seconds: float | None
    rto_target_seconds: float
    rpo_seconds: float | None
    rpo_target_seconds: float
    restored_bytes: int | None
    ltx_bytes: int | None
    planned_bytes: int | None
    planned_rto_seconds: float | None
    restore_seconds: float | None
    evidence: str | None
    release: str | None = None
    point_kind: str | None = None  # a point-in-time drill: not the newest position's RTO / RPO or last PASS
    wall_seconds: float | None = None  # start to finish: what a nightly's budget counts a drill as costing (tasks/history/budget.py)
    restored_txid: str | None = None  # the position the restore reached: the budget's change since the last drill starts past it


# ---------------------------------------------------------------------------------------------- schema


def safe_url(url: str) -> str:
    """The history URL without its password. SQLAlchemy reads a password holding '@' only up to the first one (the
    rest would show as the host and path), so such a URL is masked by the text rule, up to the last '@'."""
    try:
        parsed = make_url(url)
    except Exception:  # not a URL at all: say so without echoing it whole
        return "(unparseable URL)"
    if parsed.username is None and parsed.password is None or url.count("@") <= 1:  # SQLAlchemy read it right: user:***@host
        return parsed.render_as_string(hide_password=True)
    return redact_url(url)  # a password holding '@': SQLAlchemy stops at the first, so the text rule masks to the last


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine (and connection pool) per history URL per process: a fleet's drills share it."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = _engines[url] = create_engine(url, pool_pre_ping=True)
        return engine


def migrations_dir() -> str:
    """The Alembic scripts, shipped inside the package (found the same from a checkout and a wheel)."""
    from importlib.resources import files

    return str(files("drillbook.tasks.migrations"))


def _alembic_config(connection: Any):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", migrations_dir())
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(migrations_dir()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


_upgraded: set[str] = set()  # URLs known to be at head in this process (idempotent: only saves a query)
_upgrade_lock = threading.Lock()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        yield
        return
    # The store's folder is locked, not a file beside it: nothing is left behind (a lock file would stay, empty, for good).
    handle = os.open(Path(database).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _at_head(engine: Engine) -> bool:
    """One plain query, no Alembic import: most calls find the store already current."""
    try:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == HEAD_REVISION
    except SQLAlchemyError:
        return False


def upgrade(engine: Engine) -> None:
    """Bring the store's schema to the newest revision, in place (nothing recorded is lost)."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _upgraded:
        return
    if _at_head(engine):
        _upgraded.add(key)
        return
    from alembic import command

    with _upgrade_lock, _sqlite_file_lock(engine):
        if current_revision(engine) != head_revision():
            with engine.begin() as connection:
                if engine.url.get_backend_name() == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                command.upgrade(_alembic_config(connection), "head")
        _upgraded.add(key)


def upgrade_store(url: str) -> str:
    """`upgrade` by URL; returns the revision the store is at."""
    with _errors("upgrade", url):
        engine = _engine(url)
        upgrade(engine)
        return current_revision(engine) or "none"


@contextlib.contextmanager
def _errors(what: str, url: str) -> Iterator[None]:
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        detail = exc.args[-1] if exc.args and what != "read" else ""
        detail = one_line(redact(str(detail), url, emails=False), 500)  # a driver's message may echo the URL, password and all
        raise HistoryError(
            f"cannot {what} the drill history at {safe_url(url)}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        ) from None


@contextlib.contextmanager
def _store(url: str, what: str) -> Iterator[Engine]:
    with _errors(what, url):
        engine = _engine(url)
        upgrade(engine)
        yield engine


# ---------------------------------------------------------------------------------------------- writing


@lru_cache(maxsize=1)
def drillbook_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drillbook")
    except PackageNotFoundError:
        return None


def _row(result: DrillResult) -> DrillRecord:
    replica, integrity, plan = result.replica, result.integrity, result.plan
    return DrillRecord(
        drill_id=result.drill_id,
        database=result.database,
        release=result.release,
        started_at=result.started_at,
        finished_at=result.finished_at,
        verdict=result.verdict.value,
        failure_mode=result.failure_mode.value if result.failure_mode else None,
        rto_seconds=result.rto_seconds,
        rto_target_seconds=result.rto_target_seconds,
        rpo_seconds=result.rpo_seconds,
        rpo_target_seconds=result.rpo_target_seconds,
        restored_txid=result.restore.txid if result.restore else None,
        evidence=result.evidence,
        summary=result.summary(),
        restored_bytes=integrity.file_bytes if integrity is not None else None,
        ltx_files=replica.files if replica is not None and replica.files else None,
        ltx_levels=dict(replica.levels) if replica is not None and replica.levels else None,
        ltx_bytes=replica.total_bytes if replica is not None and replica.total_bytes else None,
        phase_seconds={name: phase.seconds for name, phase in result.phases.items()} or None,
        drillbook_version=result.versions.get("drillbook") or drillbook_version(),
        litestream_version=result.versions.get("litestream"),
        planned_rto_seconds=plan.expected_rto_seconds if plan is not None else None,
        planned_bytes=plan.bytes_to_fetch if plan is not None else None,
        point_kind=result.point.request.kind.value if result.point is not None and result.point.request is not None else None,
    )


def record_drills(url: str, results: Iterable[DrillResult]) -> int:
    """Insert each drill's row once (a retried record step does not add a second); returns how many were new."""
    results = list(results)
    with _store(url, "write") as engine, Session(engine) as session, session.begin():
        ids = [r.drill_id for r in results]
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            known.update(session.scalars(select(DrillRecord.drill_id).where(DrillRecord.drill_id.in_(ids[start : start + 500]))))
        fresh = []
        for result in results:
            if result.drill_id not in known:  # also a drill given twice in one call
                known.add(result.drill_id)
                fresh.append(result)
        session.add_all(_row(r) for r in fresh)
    return len(fresh)


def record_drill(url: str, result: DrillResult) -> None:
    """Insert the drill's row (once: a retried record step does not add a second)."""
    record_drills(url, [result])


# ---------------------------------------------------------------------------------------------- reading


def recent_drills(url: str, database: str | None = None, limit: int = 20) -> list[DrillRecord]:
    """Newest first."""
    with _store(url, "read") as engine, Session(engine) as session:
        query = select(DrillRecord).order_by(DrillRecord.started_at.desc(), DrillRecord.id.desc()).limit(limit)
        if database:
            query = query.where(DrillRecord.database == database)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


_POINT_COLUMNS = (
    DrillRecord.database,
    DrillRecord.drill_id,
    DrillRecord.started_at,
    DrillRecord.verdict,
    DrillRecord.failure_mode,
    DrillRecord.rto_seconds,
    DrillRecord.rto_target_seconds,
    DrillRecord.rpo_seconds,
    DrillRecord.rpo_target_seconds,
    DrillRecord.restored_bytes,
    DrillRecord.ltx_bytes,
    DrillRecord.planned_bytes,
    DrillRecord.planned_rto_seconds,
    DrillRecord.phase_seconds,
    DrillRecord.evidence,
    DrillRecord.release,
    DrillRecord.point_kind,
    DrillRecord.finished_at,
    DrillRecord.restored_txid,
)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def trend_point(row: Any) -> TrendPoint:
    phases = row.phase_seconds or {}
    return TrendPoint(
        database=row.database,
        drill_id=row.drill_id,
        started_at=_aware(row.started_at),
        verdict=row.verdict,
        failure_mode=row.failure_mode,
        rto_seconds=row.rto_seconds,
        rto_target_seconds=row.rto_target_seconds,
        rpo_seconds=row.rpo_seconds,
        rpo_target_seconds=row.rpo_target_seconds,
        restored_bytes=row.restored_bytes,
        ltx_bytes=row.ltx_bytes,
        planned_bytes=row.planned_bytes,
        planned_rto_seconds=row.planned_rto_seconds,
        restore_seconds=phases.get("restore"),
        evidence=row.evidence,
        release=row.release,
        point_kind=row.point_kind,
        wall_seconds=(_aware(row.finished_at) - _aware(row.started_at)).total_seconds() if row.finished_at else None,
        restored_txid=row.restored_txid,
    )


def trend_point_of(result: DrillResult) -> TrendPoint:
    """A drill as the history will hold it, before it is recorded (the forecast counts the drill being judged)."""
    return trend_point(_row(result))


def trend_points(url: str, databases: Iterable[str] | None = None, *, since: datetime | None = None) -> dict[str, list[TrendPoint]]:
    """Per database, its drills oldest first (optionally only those started at or after `since`): one query."""
    with _store(url, "read") as engine, engine.connect() as connection:
        query = select(*_POINT_COLUMNS).order_by(DrillRecord.database, DrillRecord.started_at, DrillRecord.id)
        if since is not None:
            query = query.where(DrillRecord.started_at >= since)
        names = list(databases) if databases is not None else None
        out: dict[str, list[TrendPoint]] = {name: [] for name in names or []}
        # A fleet's names go in 500 at a time: one statement with 10,000 parameters is over some drivers' limits.
        for chunk in (
            [query] if names is None else (query.where(DrillRecord.database.in_(names[i : i + 500])) for i in range(0, len(names), 500))
        ):
            for row in connection.execute(chunk):
                out.setdefault(row.database, []).append(trend_point(row))
        return out


def fleet_points(url: str, since: datetime, limit: int) -> list[TrendPoint]:
    """The fleet's newest `limit` drills started at or after `since`, oldest first: a sample whose cost is not the fleet's size."""
    with _store(url, "read") as engine, engine.connect() as connection:
        query = select(*_POINT_COLUMNS).where(DrillRecord.started_at >= since)
        rows = connection.execute(query.order_by(DrillRecord.started_at.desc(), DrillRecord.id.desc()).limit(limit))
        return [trend_point(row) for row in reversed(list(rows))]


def last_passes(url: str) -> dict[str, datetime]:
    """Per database, when its newest passing drill of the newest position started (a point-in-time drill proves a past point)."""
    with _store(url, "read") as engine, engine.connect() as connection:
        passed = select(DrillRecord.database, func.max(DrillRecord.started_at)).where(DrillRecord.verdict == "PASS")
        query = passed.where(DrillRecord.point_kind.is_(None)).group_by(DrillRecord.database)
        return {name: _aware(at) for name, at in connection.execute(query)}


def newest_verdicts(url: str) -> dict[str, str]:
    """Per database, its newest drill's verdict (one grouped query: the page's tenant fleets need no row per tenant)."""
    newest = select(DrillRecord.database, func.max(DrillRecord.started_at).label("at")).group_by(DrillRecord.database).subquery()
    query = select(DrillRecord.database, DrillRecord.verdict).join(
        newest, and_(DrillRecord.database == newest.c.database, DrillRecord.started_at == newest.c.at)
    )
    with _store(url, "read") as engine, engine.connect() as connection:
        return dict(connection.execute(query).tuples().all())
