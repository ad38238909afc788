"""Slack's state-change alerts (tasks/transitions.py renders each once): stale drills and recovery, replication
stopped and resumed, two writers on one replica. Text from outside is escaped here, at the sink, as in report/slack.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from drillbook.tasks.report.slack import SlackMessage, context_block, escape, mention, notification, section_block
from drillbook.tasks.text import duration_text

if TYPE_CHECKING:
    from drillbook.tasks.history.stale import StaleStatus
    from drillbook.tasks.watch import WatchStatus


def _owners_line(owners: Iterable[str]) -> str:
    mentions = " ".join(mention(o) for o in owners)
    return f"\n*Owners:* {mentions}" if mentions else ""


def _alert_message(text: str, body: str, footer: str) -> SlackMessage:
    """A state-change alert (tasks/transitions.py): the notification text, the body, and which check sends it."""
    return SlackMessage(text=notification(text), blocks=[section_block(body).to_dict(), context_block(footer).to_dict()])


def render_stale_alert(kind: str, status: StaleStatus, *, owners: Iterable[str] = ()) -> SlackMessage:
    """One alert per transition: a database became stale (no PASS within max_drill_age), or recovered."""

    limit = duration_text(status.max_age_seconds)
    last = f"{status.last_pass_at:%Y-%m-%d %H:%M} UTC" if status.last_pass_at else None
    if kind == "stale":
        since = (
            f"no passing drill for {duration_text(status.age_seconds)} (last PASS {last})" if last else "no passing drill recorded at all"
        )
        text = f"STALE {status.database}: {since}; max_drill_age is {limit}"
        body = (
            f":hourglass: *{escape(status.database)}* is stale: {escape(since)}, over its max_drill_age of {limit}.\n"
            "*Next:* the nightly may have stopped: check the `drillbook-nightly` deployment, its work pool and worker, "
            "and the last drills (`drillbook history " + escape(status.database) + "`)."
        )
        body += _owners_line(owners)
    else:
        text = f"RECOVERED {status.database}: passing drill at {last}"
        body = f":white_check_mark: *{escape(status.database)}* is drilled again: PASS at {last} (max_drill_age {limit})."
    return _alert_message(text, body, "drillbook stale · one alert when a database becomes stale, one when it recovers")


def render_writers_alert(kind: str, status: WatchStatus, *, owners: Iterable[str] = ()) -> SlackMessage:
    """A second writer on a replica, seen by the watch: once per fork."""
    first = status.forks[0] if status.forks else status.detail
    text = f"TWO WRITERS {status.database}: {first}"
    body = (
        f":rotating_light: *{escape(status.database)}*: the replica's history forks ({escape(first)}).\n"
        "*Next:* find which primaries replicate to this path (an old primary that came back, a restored copy started "
        "with the live config), stop all but one, and drill the replica before trusting it: a restore follows one lineage."
    )
    body += _owners_line(owners)
    return _alert_message(text, body, "drillbook watch · one alert per fork of a replica's history")


def render_watch_alert(kind: str, status: WatchStatus, *, owners: Iterable[str] = ()) -> SlackMessage:
    """One alert per transition of the replication watch: replication stopped, or resumed."""
    if kind == "stopped":
        text = f"REPLICATION STOPPED {status.database}: {status.detail}"
        body = (
            f":rotating_light: *{escape(status.database)}*: {escape(status.detail)}.\n"
            "*Next:* check that `litestream replicate` runs beside the live database (its process, its log, "
            "the replica's credentials and endpoint); writes since the replica's newest change are not backed up."
        )
        body += _owners_line(owners)
    else:
        text = f"REPLICATION RESUMED {status.database}: {status.detail}"
        body = f":white_check_mark: *{escape(status.database)}* replicates again: {escape(status.detail)}."
    return _alert_message(text, body, "drillbook watch · one alert when replication stops, one when it resumes")
