"""What one follower sample reads (the replica's newest, the follower's, the primary's) and what the samples say of replication.

A reader of a follower sees what the primary committed minus what has not
arrived, whatever the cause: the follower lagging the replica, or the replica no
longer fed. So where the live primary can be read here (`live_path` on this
machine, `freshness_query`; opened read-only as tasks/freshness.py opens it,
never written), a sample's staleness is the primary's newest change minus the
follower's newest, both by the data's own clock, read within milliseconds of
each other. Where it cannot, the staleness is measured against the replica (its
newest LTX header's time), and the report says so and why.

The same samples show replication stopping: the primary committing on while the
replica's newest change stays more than STOPPED_AFTER behind it. A primary that
commits nothing new (idle) is neither stale nor stopped.
"""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field

from drillbook.tasks.catalogue_sql import CopyLacks, QueryBroken
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.freshness import FreshnessValueError, as_time, live_database, newest_change
from drillbook.tasks.ltx import LTX_HEADER_BYTES, newest_file, parse_ltx_header
from drillbook.tasks.replica import ReplicaReader
from drillbook.tasks.storage import StorageError, StorageProblem

READ_BUSY = 0.2  # seconds a sample waits for a lock before it counts as "database is locked"
READ_TIMEOUT = 2.0  # seconds a sample's query may run (on the follower and on the primary)
# The primary's newest change this far ahead of the replica's newest (litestream's own write time) is replication
# stopped, or far behind: litestream ships every second by default, so a healthy replica stays within a second or two.
STOPPED_AFTER = 5.0


class Sample(BaseModel):
    at: float = Field(description="Seconds into the window.")
    checked_at: datetime | None = Field(default=None, description="This host's clock at the sample.")
    replica_txid: str | None = None
    replica_written_at: datetime | None = Field(default=None, description="litestream's write time of the replica's newest LTX file.")
    follower_txid: str | None = None
    follower_newest: datetime | None = None
    primary_newest: datetime | None = Field(default=None, description="The live primary's newest change (freshness_query), read-only.")
    staleness: float | None = None
    held: bool = False
    error: str | None = None
    primary_error: str | None = None

    def replica_behind(self) -> float | None:
        """The primary's newest change minus the replica's newest write (0 when the replica has it); None when either is unknown."""
        if self.primary_newest is None or self.replica_written_at is None:
            return None
        return round(max(0.0, (self.primary_newest - self.replica_written_at).total_seconds()), 3)

    def rpo(self) -> float | None:
        """The replica's newest change's age at this sample, counted only while the primary holds changes newer than it."""
        behind = self.replica_behind()
        if not behind or self.checked_at is None or self.replica_written_at is None:
            return None
        return round(max(0.0, (self.checked_at - self.replica_written_at).total_seconds()), 3)

    def data_loss(self) -> float | None:
        """Primary's newest minus the replica's newest data: the follower's, when it holds the replica's newest TXID."""
        if self.primary_newest is None:
            return None
        caught_up = self.follower_txid and self.replica_txid and int(self.follower_txid, 16) >= int(self.replica_txid, 16)
        held = self.follower_newest if caught_up and self.follower_newest is not None else self.replica_written_at
        if held is None:
            return None
        return round(max(0.0, (self.primary_newest - held).total_seconds()), 3)


class Replication(BaseModel):
    """The replication as the window's samples saw it, against the primary."""

    stopped_at: datetime | None = Field(default=None, description="litestream's write time of the position the replica stayed at.")
    stopped_txid: str | None = None
    resumed: bool = False
    behind_max: float | None = None
    rpo_max: float | None = None
    data_loss_max: float | None = None
    primary_moved: bool = False


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def level0_prefix(url: str) -> str:
    """Where a replica keeps its level-0 LTX files (the newest position is always among them)."""
    return "ltx/0/" if urlsplit(url).scheme == "file" else "0000/"


class ReplicaWatch:
    """The replica's newest TXID and its header time, from a level-0 listing (headers read once per file)."""

    def __init__(self, entry: DatabaseEntry):
        self.storage = ReplicaReader.of(entry, timeout=min(entry.inspect_timeout, 15.0))
        self.prefix = level0_prefix(entry.replica)
        self._headers: dict[str, datetime] = {}

    def newest(self) -> tuple[str, datetime]:
        files = self.storage.ltx_files(self.prefix) or self.storage.ltx_files()
        if not files:
            raise StorageError(StorageProblem.STORAGE_ERROR, "the replica lists no LTX files")
        newest = newest_file(files)
        if newest.key not in self._headers:
            self._headers[newest.key] = parse_ltx_header(self.storage.read(newest.key, 0, LTX_HEADER_BYTES)).written_at
        return newest.max_txid, self._headers[newest.key]


class PrimaryReader:
    """The live primary's newest change by freshness_query: a read-only connection per read (mode=ro, query_only)."""

    def __init__(self, path: Path, sql: str):
        self.path, self.sql = path, sql

    def newest(self) -> tuple[datetime | None, str | None]:
        try:
            return as_time(newest_change(self.path, self.sql, timeout=READ_TIMEOUT)), None
        except (sqlite3.Error, QueryBroken, CopyLacks, FreshnessValueError) as exc:
            return None, f"the primary {self.path}: {exc}"


def primary_reader(entry: DatabaseEntry) -> tuple[PrimaryReader | None, str]:
    """The reader of the live primary, or None and why the staleness is measured against the replica only."""
    live, why_not = live_database(entry)
    if live is None:
        return None, why_not
    reader = PrimaryReader(live, entry.freshness_query)
    _, error = reader.newest()
    if error is not None:
        return None, f"freshness_query cannot be read on {error}"
    return reader, ""


def read_follower(path: Path, sql: str) -> tuple[object, str | None]:
    """The query's value on a short-lived read-only connection, closed at once; (None, why) when it cannot be read."""
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=READ_BUSY)
    except sqlite3.Error as exc:
        return None, str(exc)
    try:
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        row = connection.execute(sql).fetchone()
    except sqlite3.Error as exc:
        return None, str(exc)
    finally:
        connection.close()
    if row is None or len(row) != 1:
        return None, "freshness_query must return one value"
    return row[0], None


def follower_txid(path: Path) -> str | None:
    """The TXID the follower last applied: litestream keeps it in <db>-txid."""
    try:
        text = Path(f"{path}-txid").read_text().strip()
    except OSError:
        return None
    return text or None


def longest_stall(samples: list[Sample]) -> float:
    """Longest stretch of samples with the follower at one TXID while the replica lists a newer one."""
    longest, since, at_txid = 0.0, None, None
    for sample in samples:
        behind = sample.follower_txid and sample.replica_txid and int(sample.replica_txid, 16) > int(sample.follower_txid, 16)
        if behind and sample.follower_txid == at_txid and since is not None:
            longest = max(longest, sample.at - since)
        elif behind:
            since, at_txid = sample.at, sample.follower_txid
        else:
            since, at_txid = None, None
    return round(longest, 3)


def replication_seen(samples: list[Sample]) -> Replication:
    """Stopped (the replica's newest more than STOPPED_AFTER behind the primary's, at one TXID to the end), worst figures."""
    seen = Replication()
    behind = [(s, b) for s in samples if (b := s.replica_behind()) is not None]
    newest = [s.primary_newest for s in samples if s.primary_newest is not None]
    seen.primary_moved = len(set(newest)) > 1
    if behind:
        seen.behind_max = max(b for _, b in behind)
    seen.rpo_max = max((r for s in samples if (r := s.rpo()) is not None), default=None)
    seen.data_loss_max = max((d for s in samples if (d := s.data_loss()) is not None), default=None)
    late = [s for s, b in behind if b > STOPPED_AFTER]
    if late:
        first = late[0]
        seen.stopped_at, seen.stopped_txid = first.replica_written_at, first.replica_txid
        after = [s.replica_txid for s in samples if s.at >= first.at and s.replica_txid]
        seen.resumed = any(txid != first.replica_txid for txid in after)
    return seen
