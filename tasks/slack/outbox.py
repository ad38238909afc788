"""The outbox: one JSON file per report (keyed by drill ID), saved before each try and after each call.

A delivered report moves to `sent/`; a key found there is never sent again. Every channel keeps one: Slack's
entries are OutboxEntry, another channel's are its own model with the same `key` and `created_at`
(tasks/webhook.py's WebhookEntry).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from drillbook.tasks.files import write_atomic
from drillbook.tasks.report.slack import SlackMessage

OUTBOX_FORMAT = 1


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
    """A folder of entry JSON files (OutboxEntry, or `model`: any model with `key` and `created_at`); delivered ones
    move to `sent/`."""

    def __init__(self, directory: Path, model: type[BaseModel] | None = None):
        self.directory = Path(directory)
        self.model = model or OutboxEntry

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def sent_path(self, key: str) -> Path:
        return self.directory / "sent" / f"{key}.json"

    def already_sent(self, key: str) -> bool:
        return self.sent_path(key).exists()

    def get(self, key: str) -> Any:
        path = self.path(key)
        return self.model.model_validate_json(path.read_text()) if path.exists() else None

    def pending(self) -> list[Any]:
        if not self.directory.is_dir():
            return []
        entries = []
        for path in self.directory.glob("*.json"):
            try:
                entries.append(self.model.model_validate_json(path.read_text()))
            except ValueError:  # a foreign or damaged file: left alone, listed by name
                continue
        return sorted(entries, key=lambda e: e.created_at)

    def save(self, entry: Any) -> Path:
        return write_atomic(self.path(entry.key), entry.model_dump_json(indent=2))

    def mark_sent(self, entry: Any) -> None:
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
