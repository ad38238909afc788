"""Alert state in the history store: what the stale check and the replication watch last said, so each alerts once per change.

`drillbook_alerts` (revision 0002): per database, stale or not (tasks/history/stale.py).
`drillbook_watch` (revision 0003): per database, replication stopped or not, and the
replica's newest change the watch saw (`drillbook metrics` exports it). What changed, and the
alert it sent, is tasks/transitions.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from drillbook.tasks.history.store import Base, _store

if TYPE_CHECKING:
    from drillbook.tasks.watch import WatchStatus


class AlertState(Base):
    """Per database: is it stale, since when, and which alert said so (one Slack alert per transition)."""

    __tablename__ = "drillbook_alerts"

    database: Mapped[str] = mapped_column(String(64), primary_key=True)
    stale: Mapped[bool] = mapped_column(Boolean)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_pass_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_key: Mapped[str | None] = mapped_column(String(128))


class WatchState(Base):
    """Per database: the watch's last verdict on replication and the replica's newest change it saw."""

    __tablename__ = "drillbook_watch"

    database: Mapped[str] = mapped_column(String(64), primary_key=True)
    stopped: Mapped[bool] = mapped_column(Boolean)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replica_newest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_key: Mapped[str | None] = mapped_column(String(160))


def alert_states(url: str) -> dict[str, AlertState]:
    with _store(url, "read") as engine, Session(engine) as session:
        rows = list(session.scalars(select(AlertState)))
        session.expunge_all()
        return {row.database: row for row in rows}


def save_alert_state(
    url: str, database: str, *, stale: bool, since: datetime, last_pass_at: datetime | None, notified_key: str | None
) -> None:
    with _store(url, "write") as engine, Session(engine) as session, session.begin():
        row = session.get(AlertState, database)
        if row is None:
            session.add(AlertState(database=database, stale=stale, since=since, last_pass_at=last_pass_at, notified_key=notified_key))
        else:
            row.stale, row.since, row.last_pass_at, row.notified_key = stale, since, last_pass_at, notified_key


def watch_states(url: str) -> dict[str, WatchState]:
    with _store(url, "read") as engine, Session(engine) as session:
        rows = list(session.scalars(select(WatchState)))
        session.expunge_all()
        return {row.database: row for row in rows}


def save_watch_states(url: str, statuses: Iterable[tuple[WatchStatus, bool, bool, str | None]]) -> None:
    """(status, stopped, changed, key) per database, in one transaction."""
    with _store(url, "write") as engine, Session(engine) as session, session.begin():
        for status, stopped, changed, key in statuses:
            row = session.get(WatchState, status.database)
            if row is None:
                row = WatchState(database=status.database, stopped=stopped, since=status.checked_at, notified_key=key)
                session.add(row)
            elif changed:
                row.stopped, row.since, row.notified_key = stopped, status.checked_at, key
            row.checked_at = status.checked_at
            if status.replica_newest_at is not None:
                row.replica_newest_at = status.replica_newest_at
