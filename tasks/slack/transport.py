"""Transports to Slack over slack-sdk: the Web API (message, thread, files) or an incoming webhook (one message).

Every slack-sdk failure becomes a SlackDeliveryError whose reason is written
here and scrubbed of the secrets; slack-sdk's own logger is quiet and filtered.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.error import URLError

from drillbook.tasks.config import SlackSettings
from drillbook.tasks.errors import SlackDeliveryError
from drillbook.tasks.report.slack import SlackFile
from drillbook.tasks.slack.credentials import SlackCredentials
from drillbook.tasks.text import redact

SLACK_API_URL = "https://slack.com/api/"

# Answers that concern every report (the token, the workspace, Slack itself): stop, keep the rest queued.
_AFFECTS_ALL = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "ratelimited",
    "team_access_not_granted",
}
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
    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2),
    ]


class Transport(Protocol):
    threads: bool
    where: str

    def post(
        self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None
    ) -> tuple[str | None, str | None]: ...

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

    def post(
        self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None
    ) -> tuple[str | None, str | None]:
        response = _call(
            "chat.postMessage",
            self.where,
            self.secrets,
            lambda: self.client.chat_postMessage(
                channel=channel or "", text=text, blocks=blocks, thread_ts=thread_ts, unfurl_links=False, link_names=False, parse="none"
            ),
        )
        return response.get("channel"), response.get("ts")

    def upload(self, channel_id: str, thread_ts: str, file: SlackFile) -> None:
        _call(
            "files_upload_v2",
            self.where,
            self.secrets,
            lambda: self.client.files_upload_v2(
                channel=channel_id, thread_ts=thread_ts, filename=file.filename, title=file.title, content=file.payload()
            ),
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
            credentials.webhook_url.get_secret_value(),
            timeout=int(settings.timeout),
            logger=_sdk_logger(self.secrets),
            retry_handlers=_retry_handlers(),
        )

    def post(
        self, channel: str | None, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None
    ) -> tuple[str | None, str | None]:
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
        hint = _HINTS.get(code) or (
            f"HTTP {status} from Slack even after the retries; try again later"
            if status and status >= 500
            else "see Slack's documentation of this error"
        )
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
