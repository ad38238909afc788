"""Between nightlies: is replication still running? The cheap part of a drill, per database, every few minutes.

Replication that stops silently (no error, frozen metrics) is the failure
Litestream operators report most; a nightly drill finds it the next morning.
The watch reads only what `inspect_replica` reads (one storage listing and the
newest LTX file's header: no restore), which gives the replica's newest change
and its lag, and the L0 headers the two-writer check reads (tasks/writers.py):
an old primary writing to the replica again is named at the next watch. A lag alone cannot tell an idle database (nothing written, nothing
to lose) from a stopped replication (the live data moved on, the replica did
not): when `live_path` is readable on this machine and `freshness_query` is
set, the query runs on the live database (read-only, as tasks/freshness.py
opens it) and says which. A database whose live data is newer than the
replica's newest change by more than its `rpo_target`, while the replica has
not changed within it, has stopped replicating. As in the read-replica drill
(tasks/follow_reads.py), the rule is the distance to the primary: a replica that
holds the live data's newest change is replicating (or idle: nothing written,
nothing to lose); one that lacks changes the live database committed and has not
changed within `rpo_target` is listed again CONFIRM_AFTER later, and still at the
same TXID it has stopped replicating, at the moment of its newest change. A
primary that wrote a little and went quiet after litestream stopped is stopped,
not idle: what it wrote is not on the replica.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.freshness import FreshnessValueError, as_time, live_database, newest_change
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.text import duration_text
from drillbook.tasks.writers import check_writers

CONFIRM_AFTER = 3.0  # seconds before a replica lacking the live data's changes is listed again: litestream ships every second
LIVE_QUERY_TIMEOUT = 5.0  # seconds: the watch runs every few minutes; a slow query is reported, not waited for
WORKERS = 32  # concurrent checks: each is mostly waiting on the object store


class Replication(StrEnum):
    REPLICATING = "replicating"  # the replica holds the live data's newest change (or changed within rpo_target)
    IDLE = "idle"  # nothing written since the replica's newest change: nothing to lose
    STOPPED = "stopped"  # the live data moved on, the replica did not
    UNKNOWN = "unknown"  # no change within rpo_target, and the live database cannot be read here to tell idle from stopped
    UNREADABLE = "unreadable"  # the replica could not be listed or its newest file read


class WatchStatus(BaseModel):
    """One database at one check."""

    database: str
    checked_at: datetime
    replication: Replication
    replica_newest_at: datetime | None = Field(default=None, description="When litestream wrote the replica's newest change.")
    replica_newest_txid: str | None = None
    lag_seconds: float | None = Field(default=None, description="Age of the replica's newest change at the check.")
    live_newest_at: datetime | None = Field(default=None, description="The live database's newest change (freshness_query).")
    behind_seconds: float | None = Field(default=None, description="Live newest change minus the replica's (0 when the replica has it).")
    grace_seconds: float = Field(description="rpo_target: how far behind the replica may be before replication counts as stopped.")
    detail: str = ""
    forks: list[str] = Field(default_factory=list, description="Where the replica's L0 history forks: a second writer (tasks/writers.py).")
    fork_txid: str | None = Field(default=None, description="The TXID where the first fork shows: it names the alert, sent once.")
    cpu_seconds: float = 0.0

    @property
    def stopped(self) -> bool:
        return self.replication == Replication.STOPPED

    def line(self) -> str:
        return f"{self.database}: {self.detail}"


def _stamp(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z" if moment else "never"


def live_newest(entry: DatabaseEntry) -> tuple[datetime | None, str]:
    """The live database's newest change by freshness_query (read-only), or None and why it is not known."""
    live, why_not = live_database(entry)
    if live is None:
        return None, why_not
    try:
        return as_time(newest_change(live, entry.freshness_query, timeout=LIVE_QUERY_TIMEOUT)), ""
    except (sqlite3.Error, FreshnessValueError) as exc:
        return None, f"freshness_query on the live database {live} failed ({exc})"


def watch_database(entry: DatabaseEntry, now: datetime | None = None) -> WatchStatus:
    """Replicating, idle, stopped, unknown or unreadable: one listing, one header read, one read-only query."""
    cpu = time.process_time()
    replica = inspect_replica(entry)
    now = now or datetime.now(UTC)
    grace = float(entry.rpo_target)
    status = WatchStatus(
        database=entry.name,
        checked_at=now,
        replication=Replication.UNREADABLE,
        replica_newest_at=replica.newest_time,
        replica_newest_txid=replica.newest_txid,
        lag_seconds=replica.lag_seconds(now),
        grace_seconds=grace,
    )
    if replica.problem is not None or replica.newest_time is None:
        status.detail = f"replica not readable: {replica.summary}"
    else:
        live, why_not = live_newest(entry)
        newest = (
            f"replica's newest change {_stamp(replica.newest_time)} (TXID {replica.newest_txid}, {duration_text(status.lag_seconds)} ago)"
        )
        if live is not None:
            status.live_newest_at = live
            status.behind_seconds = round(max(0.0, (live - replica.newest_time).total_seconds()), 3)
            quiet = (status.lag_seconds or 0) > grace  # the replica has not changed within rpo_target
            if status.behind_seconds > 0 and quiet:  # the live data moved on: is the replica still moving?
                time.sleep(CONFIRM_AFTER)
                again = inspect_replica(entry)
                quiet = again.newest_txid in (None, replica.newest_txid)  # still at the same TXID (or not listed now)
            if status.behind_seconds > 0 and quiet:
                status.replication = Replication.STOPPED
                status.detail = (
                    f"replication stopped at {_stamp(replica.newest_time)} (TXID {replica.newest_txid}): the live database "
                    f"committed on to {_stamp(live)}, {duration_text(status.behind_seconds)} of changes the replica does not hold, and the replica "
                    f"has not changed for {duration_text(status.lag_seconds)} (rpo_target {duration_text(grace)})"
                )
            elif status.behind_seconds == 0 and quiet:
                status.replication = Replication.IDLE
                status.detail = f"idle: nothing written since the {newest}; nothing to lose"
            else:
                status.replication = Replication.REPLICATING
                status.detail = f"replicating: the {newest}"
        elif (status.lag_seconds or 0) > grace:
            status.replication = Replication.UNKNOWN
            status.detail = f"no change for {duration_text(status.lag_seconds)}: idle or stopped? {why_not}; the {newest}"
        else:
            status.replication = Replication.REPLICATING
            status.detail = f"replicating: the {newest}"
    if replica.problem is None:  # the listing is there: its L0 headers tell a second writer within minutes, not at the nightly
        writers = check_writers(entry, replica)
        if writers.forks:
            status.forks = [f"{fork.kind} at TXID {fork.txid}: {fork.detail}" for fork in writers.forks]
            status.fork_txid = writers.forks[0].txid
            status.detail += f"; TWO WRITERS: {status.forks[0]}"
    status.cpu_seconds = round(time.process_time() - cpu, 4)  # the process's CPU: with threads, an upper bound shared with the others
    return status


def watch_databases(catalogue: Catalogue, names: list[str] | None = None, *, workers: int = WORKERS) -> list[WatchStatus]:
    """Every (or the named) catalogue database, checked concurrently; stopped first, then by name."""
    entries = [e for e in catalogue.database if not names or e.name in names]
    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(entries))), thread_name_prefix="drillbook-watch") as pool:
        statuses = list(pool.map(watch_database, entries))
    order = [Replication.STOPPED, Replication.UNREADABLE, Replication.UNKNOWN, Replication.IDLE, Replication.REPLICATING]
    return sorted(statuses, key=lambda s: (order.index(s.replication), s.database))
