"""Slack credentials: the bot token (environment, else a Prefect Secret block) or an incoming-webhook URL, read once."""

from __future__ import annotations

import os

from pydantic import BaseModel, SecretStr

from drillbook.tasks.config import SlackSettings


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
