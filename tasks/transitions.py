"""A database changed state: one alert per change, for the stale check and the replication watch alike.

    check               bad       good        remembered in the history (history/alerts.py)
    stale drills        stale     recovered   drillbook_alerts: AlertState
    replication watch   stopped   resumed     drillbook_watch: WatchState

Each check gives its statuses; `stale_transitions` and `watch_transitions` compare them with
what the store remembers and, for each change, `_announce` renders one Alert (report/slack.py
and a plain line), hands it to `send` (notify.broadcast: every channel) and the change is
remembered with the alert's key. The same change always gets the same key, and the outbox
sends a key once, so a check that runs again after a crash does not alert twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from drillbook.tasks.config import Catalogue
from drillbook.tasks.history.alerts import alert_states, save_alert_state, save_watch_states, watch_states
from drillbook.tasks.history.stale import StaleStatus
from drillbook.tasks.report.slack import SlackMessage
from drillbook.tasks.report.slack_alerts import render_stale_alert, render_watch_alert, render_writers_alert
from drillbook.tasks.text import file_part, key_stamp
from drillbook.tasks.watch import Replication, WatchStatus

Kind = Literal["stale", "recovered", "stopped", "resumed", "two writers"]


class Alert(BaseModel):
    """A state-change alert, rendered once: every channel delivers it as it is."""

    key: str
    database: str
    line: str  # plain text, one line: a terminal, a log line, a subject
    slack: SlackMessage


class Transition(BaseModel):
    """One database's change, and what the channels said about its alert."""

    kind: Kind
    status: StaleStatus | WatchStatus
    key: str
    delivery: str = ""


Send = Callable[[Alert], str]
Render = Callable[..., SlackMessage]


def stale_key(kind: str, status: StaleStatus) -> str:
    return f"{kind}-{file_part(status.database)}-{key_stamp(status.last_pass_at)}"


def watch_key(kind: str, status: WatchStatus) -> str:
    """The replica position the change was seen at names it."""
    return f"replication-{kind}-{file_part(status.database)}-{key_stamp(status.replica_newest_at)}"


def _announce(catalogue: Catalogue, transition: Transition, render: Render, send: Send) -> Transition:
    status = transition.status
    entry = catalogue.find(status.database)
    message = render(transition.kind, status, owners=list(entry.owners) if entry else [])
    alert = Alert(key=transition.key, database=status.database, line=f"{transition.kind}: {status.line()}", slack=message)
    transition.delivery = send(alert)
    return transition


def stale_transitions(catalogue: Catalogue, statuses: list[StaleStatus], send: Send, now: datetime | None = None) -> list[Transition]:
    """For each database that became stale or recovered since the last check: one alert, then remembered.

    A database seen for the first time is remembered without an alert unless it is stale.
    """
    now = now or datetime.now(UTC)
    url = catalogue.history_url
    known = alert_states(url)
    done = []
    for status in statuses:
        previous = known.get(status.database)
        if status.stale == (previous.stale if previous is not None else False):
            if previous is None:
                save_alert_state(url, status.database, stale=False, since=now, last_pass_at=status.last_pass_at, notified_key=None)
            continue
        kind: Kind = "stale" if status.stale else "recovered"
        transition = _announce(catalogue, Transition(kind=kind, status=status, key=stale_key(kind, status)), render_stale_alert, send)
        save_alert_state(url, status.database, stale=status.stale, since=now, last_pass_at=status.last_pass_at, notified_key=transition.key)
        done.append(transition)
    return done


def watch_transitions(catalogue: Catalogue, statuses: list[WatchStatus], send: Send) -> list[Transition]:
    """For each database whose replication stopped or resumed since the last check: one alert, then remembered.

    A replica that cannot be read, or an unknown (idle or stopped?) database, changes
    nothing: the previous state stands until the watch can tell.
    """
    url = catalogue.history_url
    known = watch_states(url)
    done: list[Transition] = []
    saves: list[tuple[WatchStatus, bool, bool, str | None]] = []
    for status in statuses:
        previous = known.get(status.database)
        was_stopped = previous.stopped if previous is not None else False
        if status.replication in (Replication.UNREADABLE, Replication.UNKNOWN) or status.stopped == was_stopped:
            saves.append((status, was_stopped, False, previous.notified_key if previous else None))
            continue
        kind: Kind = "stopped" if status.stopped else "resumed"
        transition = _announce(catalogue, Transition(kind=kind, status=status, key=watch_key(kind, status)), render_watch_alert, send)
        saves.append((status, status.stopped, True, transition.key))
        done.append(transition)
        # Saved after each alert: a crash later in the loop must not lose what was already sent (the outbox holds the key too).
        save_watch_states(url, saves)
        saves = []
    save_watch_states(url, saves)
    return done


def writer_alerts(catalogue: Catalogue, statuses: list[WatchStatus], send: Send) -> list[Transition]:
    """For each database whose replica's history forks (a second writer): one alert per fork, named by its TXID.

    The channels' outboxes send a key once, so the watch may see the same fork every few minutes and say it once;
    a new fork (another TXID) is another alert.
    """
    done = []
    for status in statuses:
        if status.fork_txid is None:
            continue
        key = f"writers-{file_part(status.database)}-{status.fork_txid}"
        done.append(_announce(catalogue, Transition(kind="two writers", status=status, key=key), render_writers_alert, send))
    return done
