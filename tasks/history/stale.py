"""Stale drills: a database whose last PASS is older than its max_drill_age is a problem in itself.

The nightly may have stopped, its worker may be gone, or the drills may all be
failing: either way nobody has shown lately that this database can be restored.
`drillbook stale` lists such databases; the hourly `drillbook-stale` deployment
also posts ONE Slack alert when a database becomes stale and one when it
recovers, never again every hour in between. The state that makes that so lives
in the history store (table drillbook_alerts); tasks/transitions.py finds the
changes and sends their alerts (the replication watch's too), each through the
outbox keyed by its transition, so a crash between sending and saving never
sends it twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from drillbook.tasks.config import Catalogue
from drillbook.tasks.history.store import last_passes
from drillbook.tasks.text import duration_text


class StaleStatus(BaseModel):
    database: str
    last_pass_at: datetime | None
    age_seconds: float | None
    max_age_seconds: float
    stale: bool
    removed: bool = False  # a tenant of a [[directories]] entry whose replica prefix is gone: said, never stale
    unlisted: bool = False  # a tenant known from the history whose directory's replica could not be listed this time

    def detail(self) -> str:
        """'last PASS 2026-11-21 02:31 UTC, 4d 01h ago (max_drill_age 2d 00h)'."""
        if self.removed and self.last_pass_at is not None:
            return (
                f"tenant removed from the replica: last PASS {self.last_pass_at:%Y-%m-%d %H:%M} UTC, {duration_text(self.age_seconds)} ago"
            )
        if self.unlisted and self.last_pass_at is not None:
            past = f"last PASS {self.last_pass_at:%Y-%m-%d %H:%M} UTC, {duration_text(self.age_seconds)} ago"
            return (
                f"its directory's replica could not be listed (not drilled): {past} (max_drill_age {duration_text(self.max_age_seconds)})"
            )
        if self.last_pass_at is None:
            return f"no passing drill recorded (max_drill_age {duration_text(self.max_age_seconds)})"
        return f"last PASS {self.last_pass_at:%Y-%m-%d %H:%M} UTC, {duration_text(self.age_seconds)} ago (max_drill_age {duration_text(self.max_age_seconds)})"

    def line(self) -> str:
        return f"{self.database}: {self.detail()}"


def stale_status(catalogue: Catalogue, now: datetime | None = None, passes: dict[str, datetime] | None = None) -> list[StaleStatus]:
    """Every catalogue database (the directories' discovered ones too), stale ones first (never passed, then oldest last PASS).

    A directory's tenant that passed before but is no longer discovered (its replica prefix removed) is listed, not stale,
    until its last PASS is older than the directory's max_drill_age: said for that long, never counted stale forever.
    The tenants of a directory whose replica could not be listed are known from the history and judged by their last
    PASS as usual (nothing drills them meanwhile); the listing problem itself is `catalogue.unlisted()`'s, said by the caller.
    """
    now = now or datetime.now(UTC)
    passes = last_passes(catalogue.history_url) if passes is None else passes
    out = []
    entries = catalogue.databases()
    current = {entry.name for entry in entries}
    unlisted = {directory.name for directory, _ in catalogue.unlisted()}
    for directory in catalogue.directories:
        limit = catalogue.max_drill_age(directory)
        for name, last in passes.items():
            age = round((now - last).total_seconds(), 1)
            if not name.startswith(f"{directory.name}.") or name in current:
                continue
            if directory.name in unlisted:
                status = StaleStatus(
                    database=name, last_pass_at=last, age_seconds=age, max_age_seconds=limit, stale=age > limit, unlisted=True
                )
                out.append(status)
            elif age <= limit:
                out.append(StaleStatus(database=name, last_pass_at=last, age_seconds=age, max_age_seconds=limit, stale=False, removed=True))
    for entry in entries:
        limit = catalogue.max_drill_age(entry)
        last = passes.get(entry.name)
        age = round((now - last).total_seconds(), 1) if last else None
        out.append(
            StaleStatus(database=entry.name, last_pass_at=last, age_seconds=age, max_age_seconds=limit, stale=age is None or age > limit)
        )
    return sorted(out, key=lambda s: (not s.stale, s.last_pass_at is not None, s.last_pass_at or now, s.database))
