"""Step 8 (Slack): delivering drill reports, with retries and an outbox so no report is lost or sent twice.

Every report is written to the outbox on disk (one JSON file per drill, keyed
by its drill ID) before it is sent, and its progress is saved after each call:
the message, then each file in its thread. A report Slack does not take stays
there with the reason; `drillbook outbox send` (and the next drill) sends the
rest of it. A delivered report moves to `sent/`, and a key found there is never
sent again.

slack-sdk's retry handlers take care of rate limits (429 with Retry-After),
connection errors and 5xx answers. The token is read once per run (environment
variable, else a Prefect Secret block) and never reaches a log line, an outbox
file or an error message: slack-sdk's own logger is filtered, and its
exceptions are turned into reasons built here, not passed on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol
from urllib.error import URLError

from pydantic import BaseModel, Field, SecretStr

from drillbook.tasks.config import Catalogue, SlackSettings
from drillbook.tasks.errors import SlackDeliveryError
from drillbook.tasks.files import write_atomic
from drillbook.tasks.slack_render import SlackFile, SlackMessage, redact, render_drill_message, render_nightly_summary
from drillbook.tasks.verdict import DrillResult

SLACK_API_URL = "https://slack.com/api/"
OUTBOX_FORMAT = 1

# Answers that concern every report (the token, the workspace, Slack itself): stop, keep the rest queued.
_AFFECTS_ALL = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "ratelimited", "team_access_not_granted"}
_HINTS = {
    "invalid_auth": "Slack refused the bot token: check it (xoxb-...) and that the app is installed in the workspace",
    "not_authed": "no token reached Slack: check the bot token",
    "token_revoked": "the bot token was revoked: install the app again and update the token",
    "token_expired": "the bot token expired: refresh it",
    "account_inactive": "the bot's account is deactivated: reinstall the app",
    "channel_not_found": "Slack has no channel by that name the bot can see: check [slack] channel / the database's slack_channel, and invite the app to a private channel",
    "not_in_channel": "the app is not in the channel: invite it (/invite @app) or give it chat:write.public",
    "is_archived": "the channel is archived: point [slack] channel / slack_channel at a live one",
    "missing_scope": "the app lacks a scope: it needs chat:write and files:write",
    "ratelimited": "Slack kept rate-limiting the app after the retries",
    "invalid_blocks": "Slack rejected the message's blocks (a drillbook bug: please report it with the outbox file)",
}


# ---------------------------------------------------------------------------------------------- credentials


class SlackCredentials(BaseModel):
    """What a run may use to reach Slack, read once. `repr` never shows the secrets."""

    token: SecretStr | None = None
    webhook_url: SecretStr | None = None
    source: str = "none"
    problem: str | None = None

    def secrets(self) -> tuple[str | None, ...]:
        return (
            self.token.get_secret_value() if self.token else None,
            self.webhook_url.get_secret_value() if self.webhook_url else None,
        )


def read_credentials(settings: SlackSettings) -> SlackCredentials:
    """The bot token from `token_env`, else from the Prefect Secret block `token_secret_block`; else the webhook URL."""
    token = os.environ.get(settings.token_env) or None
    source = f"environment variable {settings.token_env}"
    problem = None
    if token is None and settings.token_secret_block:
        source = f"Prefect Secret block {settings.token_secret_block!r}"
        try:
            from prefect.blocks.system import Secret

            token = str(Secret.load(settings.token_secret_block).get()) or None
        except Exception as exc:  # any failure to load is reported by name, never by content
            problem = f"could not read the Prefect Secret block {settings.token_secret_block!r} ({type(exc).__name__})"
    webhook = os.environ.get(settings.webhook_url_env) if settings.webhook_url_env else None
    if token and settings.channel:
        return SlackCredentials(token=SecretStr(token), webhook_url=SecretStr(webhook) if webhook else None, source=source)
    if webhook:
        return SlackCredentials(webhook_url=SecretStr(webhook), source=f"environment variable {settings.webhook_url_env}")
    if problem is None:
        wanted = [f"set {settings.token_env}"]
        if settings.token_secret_block:
            wanted.append(f"create the Prefect Secret block {settings.token_secret_block!r}")
        if settings.webhook_url_env:
            wanted.append(f"set {settings.webhook_url_env} to an incoming-webhook URL")
        if token and not settings.channel:
            problem = "a bot token is set but [slack] has no channel: set channel"
        else:
            problem = "no Slack credentials: " + " or ".join(wanted)
    return SlackCredentials(source=source, problem=problem)


# ---------------------------------------------------------------------------------------------- transports


class _ScrubFilter(logging.Filter):
    def __init__(self, secrets: tuple[str | None, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), *self.secrets)
        record.args = None
        return True


def _sdk_logger(secrets: tuple[str | None, ...]) -> logging.Logger:
    """slack-sdk's logger for this run: quiet (we report reasons ourselves) and scrubbed should anything pass."""
    logger = logging.getLogger(f"drillbook.slack.sdk.{id(secrets)}")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    logger.addFilter(_ScrubFilter(secrets))
    return logger


def _retry_handlers() -> list[Any]:
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler

    # Posting is safe to repeat on these: Slack either never got the request (connection refused / reset)
    # or said it did not take it (429, 500, 503). A timeout after sending is not retried: the message may be there.
    return [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=3), ServerErrorRetryHandler(max_retry_count=2)]


class Transport(Protocol):
    threads: bool
    where: str

    def post(self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> tuple[str | None, str | None]: ...

    def upload(self, channel_id: str, thread_ts: str, file: SlackFile) -> None: ...


class WebApiTransport:
    """A bot token and the Web API: message, thread, files."""

    threads = True

    def __init__(self, settings: SlackSettings, credentials: SlackCredentials):
        from slack_sdk import WebClient

        assert credentials.token is not None
        self.secrets = credentials.secrets()
        self.where = settings.api_url or SLACK_API_URL
        self.client = WebClient(
            token=credentials.token.get_secret_value(),
            base_url=self.where,
            timeout=settings.timeout,  # type: ignore[arg-type]  # urllib takes a float
            logger=_sdk_logger(self.secrets),
            retry_handlers=_retry_handlers(),
        )

    def post(self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> tuple[str | None, str | None]:
        response = _call(
            "chat.postMessage", self.where, self.secrets, lambda: self.client.chat_postMessage(channel=channel or "", text=text, blocks=blocks, thread_ts=thread_ts, unfurl_links=False)
        )
        return response.get("channel"), response.get("ts")

    def upload(self, channel_id: str, thread_ts: str, file: SlackFile) -> None:
        _call(
            "files_upload_v2",
            self.where,
            self.secrets,
            lambda: self.client.files_upload_v2(channel=channel_id, thread_ts=thread_ts, filename=file.filename, title=file.title, content=file.payload()),
        )


class WebhookTransport:
    """An incoming webhook: one message into the webhook's own channel; no thread, no file."""

    threads = False
    where = "the incoming webhook"

    def __init__(self, settings: SlackSettings, credentials: SlackCredentials):
        from slack_sdk.webhook import WebhookClient

        assert credentials.webhook_url is not None
        self.secrets = credentials.secrets()
        self.client = WebhookClient(
            credentials.webhook_url.get_secret_value(), timeout=int(settings.timeout), logger=_sdk_logger(self.secrets), retry_handlers=_retry_handlers()
        )

    def post(self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> tuple[str | None, str | None]:
        response = _call("incoming webhook", self.where, self.secrets, lambda: self.client.send(text=text, blocks=blocks))
        if response.status_code != 200:
            body = redact(str(response.body or ""), *self.secrets)[:200]
            raise SlackDeliveryError(
                f"incoming webhook: Slack answered HTTP {response.status_code} {body}: check the webhook URL",
                affects_all=response.status_code in (403, 404, 410, 429) or response.status_code >= 500,
            )
        return None, None

    def upload(self, channel_id: str, thread_ts: str, file: SlackFile) -> None:  # pragma: no cover - threads is False
        raise SlackDeliveryError("an incoming webhook cannot upload files", affects_all=False)


def _call(what: str, where: str, secrets: tuple[str | None, ...], call: Any) -> Any:
    """Run one slack-sdk call; every failure becomes a SlackDeliveryError whose text we wrote (and scrubbed)."""
    from slack_sdk.errors import SlackApiError, SlackClientError

    try:
        return call()
    except SlackApiError as exc:
        response = exc.response
        code = str(response.get("error") or f"HTTP {response.status_code}") if response is not None else "unknown error"
        status = getattr(response, "status_code", None)
        hint = _HINTS.get(code) or (f"HTTP {status} from Slack even after the retries; try again later" if status and status >= 500 else "see Slack's documentation of this error")
        reason = f"{what}: Slack answered {code}: {hint}"
        raise SlackDeliveryError(redact(reason, *secrets), affects_all=code in _AFFECTS_ALL or bool(status and status >= 500)) from None
    except (URLError, OSError, TimeoutError) as exc:
        detail = getattr(exc, "reason", None) or exc
        reason = f"{what}: Slack unreachable at {where} ({type(exc).__name__}: {detail})"
        if isinstance(exc, TimeoutError) or "timed out" in str(detail):
            reason = f"{what}: no answer from {where} within the timeout ([slack] timeout); the message may or may not have arrived"
        raise SlackDeliveryError(redact(reason, *secrets), affects_all=True) from None
    except SlackClientError as exc:
        raise SlackDeliveryError(redact(f"{what}: {type(exc).__name__}: {exc}", *secrets)[:500], affects_all=False) from None


def make_transport(settings: SlackSettings, credentials: SlackCredentials) -> Transport:
    if credentials.token is not None and settings.channel:
        return WebApiTransport(settings, credentials)
    return WebhookTransport(settings, credentials)


# ---------------------------------------------------------------------------------------------- outbox


class OutboxEntry(BaseModel):
    """One report on its way to Slack, with how far it got."""

    drillbook_outbox: int = OUTBOX_FORMAT
    key: str = Field(description="The drill ID (or nightly-<digest>): a key is sent at most once.")
    kind: Literal["drill", "nightly", "alert"]
    database: str | None = None
    verdict: str | None = None
    channel: str | None = Field(default=None, description="The channel when queued; re-read from the catalogue at each try.")
    created_at: datetime
    message: SlackMessage
    posted_channel: str | None = None
    posted_ts: str | None = None
    thread_sent: int = 0
    attempts: int = 0
    last_attempt_at: datetime | None = None
    reason: str | None = None
    delivered_at: datetime | None = None
    notes: list[str] = Field(default_factory=list)


class Outbox:
    """A folder of OutboxEntry JSON files; delivered ones move to `sent/`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def sent_path(self, key: str) -> Path:
        return self.directory / "sent" / f"{key}.json"

    def already_sent(self, key: str) -> bool:
        return self.sent_path(key).exists()

    def get(self, key: str) -> OutboxEntry | None:
        path = self.path(key)
        return OutboxEntry.model_validate_json(path.read_text()) if path.exists() else None

    def pending(self) -> list[OutboxEntry]:
        if not self.directory.is_dir():
            return []
        entries = []
        for path in self.directory.glob("*.json"):
            try:
                entries.append(OutboxEntry.model_validate_json(path.read_text()))
            except ValueError:  # a foreign or damaged file: left alone, listed by name
                continue
        return sorted(entries, key=lambda e: e.created_at)

    def save(self, entry: OutboxEntry) -> Path:
        return write_atomic(self.path(entry.key), entry.model_dump_json(indent=2))

    def mark_sent(self, entry: OutboxEntry) -> None:
        entry.delivered_at = datetime.now(UTC)
        entry.reason = None
        write_atomic(self.sent_path(entry.key), entry.model_dump_json(indent=2))
        self.path(entry.key).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[bool]:
        """Whether this process may send `key` now (another one may be sending it)."""
        locks = self.directory / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- delivery


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
    assert catalogue.slack is not None
    for entry in catalogue.database:
        if entry.name == database and entry.slack_channel:
            return entry.slack_channel
    return catalogue.slack.channel


def _owners_for(catalogue: Catalogue, result: DrillResult) -> list[str]:
    for entry in catalogue.database:
        if entry.name == result.database:
            return list(entry.owners)
    return list(result.entry.get("owners") or [])


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
        message=render_nightly_summary(results, owners=owners, thread=_threads(catalogue.slack, credentials), title=title),
    )
    return _send_new(catalogue, entry, credentials)


def post_alert(catalogue: Catalogue, key: str, database: str, message: SlackMessage, *, credentials: SlackCredentials | None = None) -> SlackDelivery:
    """One alert (stale drills, recovery) to the database's channel, through the outbox: a key is sent once."""
    if catalogue.slack is None:
        return SlackDelivery(status="not configured", note=not_configured_note(catalogue))
    entry = OutboxEntry(key=key, kind="alert", database=database, channel=_channel_for(catalogue, database), created_at=datetime.now(UTC), message=message)
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
