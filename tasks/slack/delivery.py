"""Delivering reports: queue in the outbox, send what waits there first, then the report; never raise for Slack."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from drillbook.tasks.config import Catalogue, SlackSettings
from drillbook.tasks.errors import SlackDeliveryError
from drillbook.tasks.report.slack import SlackMessage, render_drill_message, render_nightly_summary
from drillbook.tasks.result import DrillResult
from drillbook.tasks.slack.credentials import SlackCredentials, read_credentials
from drillbook.tasks.slack.outbox import Outbox, OutboxEntry
from drillbook.tasks.slack.transport import Transport, make_transport


class SlackDelivery(BaseModel):
    """What happened to one report."""

    status: Literal["sent", "queued", "not configured", "already sent", "busy"]
    key: str | None = None
    channel: str | None = None
    ts: str | None = None
    reason: str | None = None
    note: str = Field(description="One line for the terminal and the drill's notes.")
    flushed: list[str] = Field(default_factory=list, description="Outbox keys delivered before this report.")


def _channel_for(catalogue: Catalogue, database: str | None) -> str | None:
    entry = catalogue.find(database)
    if entry is not None and entry.slack_channel:
        return entry.slack_channel
    return catalogue.slack.channel if catalogue.slack else None


def _owners_for(catalogue: Catalogue, result: DrillResult) -> list[str]:
    entry = catalogue.find(result.database)
    return list(entry.owners) if entry is not None else list(result.entry.get("owners") or [])


def deliver(entry: OutboxEntry, transport: Transport, outbox: Outbox, channel: str | None) -> None:
    """Send what is left of `entry`, saving progress after each call; raises SlackDeliveryError."""
    entry.attempts += 1
    entry.last_attempt_at = datetime.now(UTC)
    if entry.posted_ts is None and not entry.delivered_at:
        posted_channel, ts = transport.post(channel, entry.message.text, entry.message.blocks)
        entry.posted_channel, entry.posted_ts = posted_channel, ts or "webhook"
        outbox.save(entry)
    if transport.threads and entry.posted_channel:
        thread_ts = entry.posted_ts
        for index in range(entry.thread_sent, len(entry.message.thread)):
            item = entry.message.thread[index]
            if item.kind == "file" and item.file is not None:
                transport.upload(entry.posted_channel, thread_ts, item.file)
            else:
                transport.post(entry.posted_channel, item.text, item.blocks, thread_ts=thread_ts)
            entry.thread_sent = index + 1
            outbox.save(entry)
    elif entry.message.thread:
        entry.notes.append(f"{transport.where} has no threads: {len(entry.message.thread)} thread item(s) not sent")
    outbox.mark_sent(entry)


def _try(entry: OutboxEntry, transport: Transport, outbox: Outbox, channel: str | None) -> SlackDelivery:
    with outbox.lock(entry.key) as mine:
        if not mine:
            return SlackDelivery(status="busy", key=entry.key, note=f"Slack report {entry.key} is being sent by another drillbook process")
        if outbox.already_sent(entry.key):
            outbox.path(entry.key).unlink(missing_ok=True)
            return SlackDelivery(status="already sent", key=entry.key, note=f"Slack report {entry.key} was already sent")
        try:
            deliver(entry, transport, outbox, channel)
        except SlackDeliveryError as exc:
            entry.reason = exc.reason
            outbox.save(entry)
            raise
    where = channel or transport.where
    return SlackDelivery(status="sent", key=entry.key, channel=where, ts=entry.posted_ts, note=f"Slack report sent to {where}")


def _queued(entry: OutboxEntry, outbox: Outbox, reason: str) -> SlackDelivery:
    entry.reason = reason
    outbox.save(entry)
    return SlackDelivery(
        status="queued",
        key=entry.key,
        reason=reason,
        note=f"Slack did not take the report ({reason}); it waits in the outbox {outbox.directory} (`drillbook outbox send` re-sends it)",
    )


def _send_new(catalogue: Catalogue, entry: OutboxEntry, credentials: SlackCredentials | None) -> SlackDelivery:
    """Queue `entry`, send what waits in the outbox first, then `entry`."""
    assert catalogue.slack is not None and catalogue.outbox_dir is not None
    outbox = Outbox(catalogue.outbox_dir)
    if outbox.already_sent(entry.key):
        return SlackDelivery(status="already sent", key=entry.key, note=f"Slack report {entry.key} was already sent")
    existing = outbox.get(entry.key)
    entry = existing or entry
    outbox.save(entry)  # on disk before any attempt: a crash mid-send loses nothing
    credentials = credentials or read_credentials(catalogue.slack)
    if credentials.problem:
        return _queued(entry, outbox, credentials.problem)
    transport = make_transport(catalogue.slack, credentials)
    flushed: list[str] = []
    for waiting in outbox.pending():
        if waiting.key == entry.key:
            continue
        try:
            if _try(waiting, transport, outbox, _channel_for(catalogue, waiting.database)).status == "sent":
                flushed.append(waiting.key)
        except SlackDeliveryError as exc:
            if exc.affects_all:
                delivery = _queued(entry, outbox, f"not tried: Slack failed for an earlier report in this run: {exc.reason}")
                delivery.flushed = flushed
                return delivery
    try:
        delivery = _try(entry, transport, outbox, _channel_for(catalogue, entry.database))
    except SlackDeliveryError as exc:
        delivery = _queued(entry, outbox, exc.reason)
    delivery.flushed = flushed
    if flushed:
        delivery.note += f"; {len(flushed)} earlier report(s) from the outbox sent first"
    return delivery


def not_configured_note(catalogue: Catalogue) -> str:
    where = catalogue.path or "the catalogue"
    return f"Slack is not configured (no [slack] table in {where}): this report is on the terminal and in the evidence folder only"


def _threads(settings: SlackSettings, credentials: SlackCredentials) -> bool:
    """Whether the report will go through the Web API (thread, files), not an incoming webhook."""
    return bool(settings.channel) and (credentials.token is not None or credentials.webhook_url is None)


def notify_slack(result: DrillResult, catalogue: Catalogue, *, credentials: SlackCredentials | None = None) -> SlackDelivery:
    """Send one drill's report (message + evidence in its thread); on failure it waits in the outbox. Never raises for Slack."""
    if catalogue.slack is None:
        return SlackDelivery(status="not configured", note=not_configured_note(catalogue))
    credentials = credentials or read_credentials(catalogue.slack)
    entry = OutboxEntry(
        key=result.drill_id,
        kind="drill",
        database=result.database,
        verdict=result.verdict.value,
        channel=_channel_for(catalogue, result.database),
        created_at=datetime.now(UTC),
        message=render_drill_message(result, owners=_owners_for(catalogue, result), thread=_threads(catalogue.slack, credentials)),
    )
    return _send_new(catalogue, entry, credentials)


def nightly_key(results: list[DrillResult]) -> str:
    """The same set of drills gives the same key: a retried nightly flow never posts its summary twice."""
    digest = hashlib.sha256(",".join(sorted(r.drill_id for r in results)).encode()).hexdigest()[:12]
    return f"nightly-{digest}"


def post_nightly_summary(
    results: list[DrillResult],
    catalogue: Catalogue,
    *,
    key: str | None = None,
    title: str = "Nightly restore drills",
    credentials: SlackCredentials | None = None,
    notes: Sequence[str] = (),
) -> SlackDelivery:
    """ONE message for many drills (a line per database, failures first), each failure's detail and evidence in its thread."""
    if catalogue.slack is None:
        return SlackDelivery(status="not configured", note=not_configured_note(catalogue))
    credentials = credentials or read_credentials(catalogue.slack)
    owners = {entry.name: list(entry.owners) for entry in catalogue.database}
    for result in results:
        owners.setdefault(result.database, list(result.entry.get("owners") or []))
    entry = OutboxEntry(
        key=key or nightly_key(results),
        kind="nightly",
        verdict=max((r.verdict.value for r in results), key=["PASS", "FAIL", "ERROR"].index, default=None),
        channel=catalogue.slack.channel,
        created_at=datetime.now(UTC),
        message=render_nightly_summary(results, owners=owners, thread=_threads(catalogue.slack, credentials), title=title, notes=notes),
    )
    return _send_new(catalogue, entry, credentials)


def post_alert(
    catalogue: Catalogue, key: str, database: str, message: SlackMessage, *, credentials: SlackCredentials | None = None
) -> SlackDelivery:
    """One alert (stale drills, recovery) to the database's channel, through the outbox: a key is sent once."""
    if catalogue.slack is None:
        return SlackDelivery(status="not configured", note=not_configured_note(catalogue))
    entry = OutboxEntry(
        key=key, kind="alert", database=database, channel=_channel_for(catalogue, database), created_at=datetime.now(UTC), message=message
    )
    return _send_new(catalogue, entry, credentials)


def list_outbox(catalogue: Catalogue) -> list[OutboxEntry]:
    return Outbox(catalogue.outbox_dir).pending() if catalogue.outbox_dir else []


def send_outbox(catalogue: Catalogue, *, credentials: SlackCredentials | None = None) -> list[SlackDelivery]:
    """Send every waiting report, oldest first; stop at the first failure that would fail the rest too."""
    if catalogue.slack is None or catalogue.outbox_dir is None:
        return []
    outbox = Outbox(catalogue.outbox_dir)
    waiting = outbox.pending()
    if not waiting:
        return []
    credentials = credentials or read_credentials(catalogue.slack)
    if credentials.problem:
        return [_queued(entry, outbox, credentials.problem) for entry in waiting]
    transport = make_transport(catalogue.slack, credentials)
    deliveries: list[SlackDelivery] = []
    for index, entry in enumerate(waiting):
        try:
            deliveries.append(_try(entry, transport, outbox, _channel_for(catalogue, entry.database)))
        except SlackDeliveryError as exc:
            deliveries.append(_queued(entry, outbox, exc.reason))
            if exc.affects_all:
                for rest in waiting[index + 1 :]:
                    deliveries.append(SlackDelivery(status="queued", key=rest.key, reason=rest.reason, note=f"not tried: {exc.reason}"))
                break
    return deliveries


def outbox_json(entry: OutboxEntry) -> str:
    return json.dumps(entry.model_dump(mode="json"), indent=2)
