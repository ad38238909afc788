"""The watch's memory: per database, is replication stopped, since when, and which alert said so.

Kept like the stale alerts (tasks/history/stale.py): one Slack alert when
replication stops and one when it resumes, never one every five minutes in
between; the state lives in the history store (table drillbook_watch, revision
0003), and each alert goes through the outbox keyed by its transition, so a
crash between sending and saving never sends it twice. The replica's newest
change time is kept too: `drillbook metrics` exports it, so a Prometheus rule
can alert on a replica that stopped moving even where the watch cannot read the
live database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.orm import Session

from drillbook.tasks.config import Catalogue
from drillbook.tasks.history.alerts import WatchState, watch_states
from drillbook.tasks.history.store import _aware, _store
from drillbook.tasks.text import file_part, key_stamp
from drillbook.tasks.watch import Replication, WatchStatus


def replica_newest_changes(url: str) -> dict[str, datetime]:
    """Per database, the replica's newest change as the last watch saw it (for `drillbook metrics`)."""
    return {name: _aware(row.replica_newest_at) for name, row in watch_states(url).items() if row.replica_newest_at is not None}


class WatchTransition(BaseModel):
    kind: Literal["stopped", "resumed"]
    status: WatchStatus
    key: str
    delivery: str = ""


def watch_key(kind: str, status: WatchStatus) -> str:
    """The same transition always gets the same key (the outbox sends a key once): the replica position it was seen at."""
    return f"replication-{kind}-{file_part(status.database)}-{key_stamp(status.replica_newest_at)}"


def _save(url: str, statuses: Iterable[tuple[WatchStatus, bool, bool, str | None]]) -> None:
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


def watch_transitions(catalogue: Catalogue, statuses: list[WatchStatus], send: Callable[[WatchTransition], str]) -> list[WatchTransition]:
    """For each database whose replication stopped or resumed since the last check: send one alert, then remember it.

    A replica that cannot be read, or an unknown (idle or stopped?) database,
    changes nothing: the previous state stands until the watch can tell.
    """
    known = watch_states(catalogue.history_url)
    done: list[WatchTransition] = []
    saves: list[tuple[WatchStatus, bool, bool, str | None]] = []
    for status in statuses:
        previous = known.get(status.database)
        was_stopped = previous.stopped if previous is not None else False
        if status.replication in (Replication.UNREADABLE, Replication.UNKNOWN) or status.stopped == was_stopped:
            saves.append((status, was_stopped, False, previous.notified_key if previous else None))
            continue
        transition = WatchTransition(kind="stopped" if status.stopped else "resumed", status=status, key="")
        transition.key = watch_key(transition.kind, status)
        transition.delivery = send(transition)
        saves.append((status, status.stopped, True, transition.key))
        done.append(transition)
        # Saved after each alert: a crash later in the loop must not lose what was already sent (the outbox holds the key too).
        _save(catalogue.history_url, saves)
        saves = []
    _save(catalogue.history_url, saves)
    return done
