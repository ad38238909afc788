"""The history store: one row per drill, so "last restore drill and its result" is a query away.

SQLAlchemy over a URL: a SQLite file beside the evidence by default, PostgreSQL
for a fleet (`history_url = "postgresql+psycopg://…"`). The evidence bundle
stays the full record; a row here points at it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Float, Integer, String, create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from drillbook.tasks.errors import HistoryError
from drillbook.tasks.verdict import DrillResult


class Base(DeclarativeBase):
    pass


class DrillRecord(Base):
    """One drill, as the runbook's "last restore drill" line needs it."""

    __tablename__ = "drillbook_drills"

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


def _engine(url: str):
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def record_drill(url: str, result: DrillResult) -> None:
    """Insert the drill's row (once: a retried record step does not add a second)."""
    try:
        engine = _engine(url)
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            if session.scalar(select(DrillRecord.id).where(DrillRecord.drill_id == result.drill_id)) is not None:
                return
            session.add(
                DrillRecord(
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
                )
            )
        engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        raise HistoryError(f"cannot write the drill history at {_safe(url)}: {type(exc).__name__}: {exc.args[-1] if exc.args else exc}") from None


def recent_drills(url: str, database: str | None = None, limit: int = 20) -> list[DrillRecord]:
    """Newest first."""
    try:
        engine = _engine(url)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            query = select(DrillRecord).order_by(DrillRecord.started_at.desc()).limit(limit)
            if database:
                query = query.where(DrillRecord.database == database)
            rows = list(session.scalars(query))
            session.expunge_all()
        engine.dispose()
        return rows
    except (SQLAlchemyError, OSError) as exc:
        raise HistoryError(f"cannot read the drill history at {_safe(url)}: {type(exc).__name__}") from None
