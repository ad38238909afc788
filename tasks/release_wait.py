"""Before a release drill: wait (bounded) until the replica carries the release.

After a deploy that ran a migration, a drill proves nothing until the replica
holds the migration. With an expected schema version, the replica carries the
release when a copy restored from it reports that version (restored again only
when the replica's position moved, so an idle replica is not restored over and
over): a change after the release time proves nothing about the migration.
Without one, it carries the release when its newest change is at or after the
release time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.integrity import open_read_only
from drillbook.tasks.processes import interrupted
from drillbook.tasks.replica import ReplicaState, inspect_replica
from drillbook.tasks.restore import throwaway_copy


class WaitOutcome(StrEnum):
    READY = "ready"  # the replica carries the release
    TIMED_OUT = "timed_out"  # it did not within the wait: replica lag
    UNREADABLE = "unreadable"  # the replica cannot be read at all: the drill will name why


class ReplicaWait(BaseModel):
    database: str
    release: str
    outcome: WaitOutcome
    reason: str
    waited_seconds: float
    polls: int
    newest_time: datetime | None = None
    schema_version: str | None = None
    expected_schema_version: str | None = None

    @property
    def release_lag(self) -> str | None:
        """The replica-lag finding when the wait ran out, else None."""
        return self.reason if self.outcome == WaitOutcome.TIMED_OUT else None


def restored_schema_version(entry: DatabaseEntry, replica: ReplicaState, scratch_root: Path) -> str | None:
    """The schema version of a throwaway copy restored from the replica (None if it cannot be read)."""
    with throwaway_copy(entry, replica, scratch_root, "wait") as restored:
        if not restored.ok or restored.path is None:
            return None
        connection = open_read_only(Path(restored.path))
        try:
            row = connection.execute(entry.schema_version_query).fetchone()
        except sqlite3.Error:
            return None
        finally:
            connection.close()
        return None if row is None or row[0] is None else str(row[0])


def wait_for_release(
    entry: DatabaseEntry,
    *,
    release: str,
    released_at: datetime,
    expected_schema: int | str | None,
    scratch_root: Path,
    wait_seconds: float,
    poll_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplicaWait:
    """Poll the replica until it carries `release`, for at most `wait_seconds`."""
    started = time.monotonic()
    expected = None if expected_schema is None else str(expected_schema)
    # LTX timestamps have one-second resolution.
    threshold = released_at.astimezone(UTC).replace(microsecond=0)
    polls = 0
    probed_txid: str | None = None
    seen_schema: str | None = None
    replica: ReplicaState | None = None

    def finish(outcome: WaitOutcome, reason: str) -> ReplicaWait:
        return ReplicaWait(
            database=entry.name,
            release=release,
            outcome=outcome,
            reason=reason,
            waited_seconds=round(time.monotonic() - started, 3),
            polls=polls,
            newest_time=replica.newest_time if replica else None,
            schema_version=seen_schema,
            expected_schema_version=expected,
        )

    while True:
        stop = interrupted()
        if stop:  # SIGTERM / Ctrl-C: the drill that follows records itself as interrupted
            return finish(WaitOutcome.TIMED_OUT, f"stopped waiting for release {release}: interrupted by {stop}")
        polls += 1
        replica = inspect_replica(entry)
        if not replica.ok:
            return finish(WaitOutcome.UNREADABLE, f"the replica cannot be read: {replica.summary}")
        if expected is None and replica.newest_time is not None and replica.newest_time >= threshold:
            return finish(
                WaitOutcome.READY, f"the replica's newest change ({replica.newest_time:%H:%M:%S}Z) is at or after the release time"
            )
        if expected is not None and replica.newest_txid != probed_txid:
            probed_txid = replica.newest_txid
            seen_schema = restored_schema_version(entry, replica, scratch_root)
            if seen_schema == expected:
                return finish(WaitOutcome.READY, f"a copy restored from the replica reports schema version {expected}")
        remaining = wait_seconds - (time.monotonic() - started)
        if remaining <= 0:
            newest = f"{replica.newest_time:%Y-%m-%d %H:%M:%S}Z" if replica.newest_time else "unknown"
            if expected is not None:
                why = f"a copy restored from it reports schema version {seen_schema}, expected {expected} (newest change at {newest})"
            else:
                why = f"its newest change is at {newest}, before the release time {threshold:%Y-%m-%d %H:%M:%S}Z"
            return finish(WaitOutcome.TIMED_OUT, f"the replica did not carry release {release} within {wait_seconds:g}s: {why}")
        sleep(min(poll_seconds, remaining))
