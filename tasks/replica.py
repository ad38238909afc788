"""Step 1: what does the replica hold, and how old is its newest change?

One listing of the replica's storage (paginated, through the backend's own
client: tasks/storage) tells an unreachable endpoint, refused credentials or a
missing bucket apart by error code, and gives every LTX file with its level,
TXID range, size and the store's time (tasks/ltx.py reads the keys). No
`litestream ltx` runs: its listing is the same objects, printed as megabytes of
JSON on a busy replica.

The newest change's time is read from the newest LTX file's own header (a
ranged read): the time litestream wrote it. The store's timestamp
(LastModified) is rewritten to "now" by a copied replica (bucket migration,
cross-region replication, a restored bucket). The same read proves that object
GETs work before the restore starts: litestream 0.5.17 retries failing GETs
silently, forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import Field, PrivateAttr

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.ltx import (
    LEGACY_LAYOUT,
    LTX_HEADER_BYTES,
    LTX_LAYOUT,
    Generation,
    LtxFile,
    LtxHeader,
    generations,
    legacy_files,
    ltx_files,
    newest_file,
    parse_ltx_header,
)
from drillbook.tasks.outcome import Status
from drillbook.tasks.steps import StepResult
from drillbook.tasks.storage import StorageError, StorageProblem, StoredObject, open_storage, store_scope


class ReplicaReader:
    """A replica's storage, opened once: how every step reads the replica (inspection, timeline, writers, follow,
    promotion). The backend (tasks/storage) is chosen by the URL's scheme and maps its client's errors onto
    StorageError; what is read is the replica, never written."""

    def __init__(self, url: str, *, timeout: float):
        self.storage = open_storage(url, timeout=timeout)

    @classmethod
    def of(cls, entry: DatabaseEntry, timeout: float | None = None) -> ReplicaReader:
        return cls(entry.replica, timeout=entry.inspect_timeout if timeout is None else timeout)

    @property
    def where(self) -> str:
        return self.storage.where

    def objects(self, prefix: str = "") -> list[StoredObject]:
        return list(self.storage.list(prefix))

    def ltx_files(self, prefix: str = "") -> list[LtxFile]:
        return ltx_files(self.storage.list(prefix))

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return self.storage.read(key, start, length)


class ReplicaProblem(StrEnum):
    EMPTY = "empty"  # reachable, but holds no LTX files: no backup
    MISSING = "missing"  # bucket or directory does not exist: no backup
    ACCESS_DENIED = "access_denied"
    UNREACHABLE = "unreachable"
    STORAGE_ERROR = "storage_error"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"  # a URL scheme drillbook has no storage backend for
    DAMAGED = "damaged"  # the newest LTX file is listed but is not a readable LTX file


HEADER_READ_TIMEOUT = 15.0  # seconds for the header GET: an object store that cannot answer that is failing
CLOCKS_DIFFER = 2.0  # seconds between the LTX header's time and the object's timestamp worth reporting
CLOCK_SKEW_TOLERANCE = 2.0  # seconds a change may be "newer" than the drill's start before the clocks are said to disagree


def clock_skew(written_at: datetime | None, at: datetime, tolerance: float = CLOCK_SKEW_TOLERANCE) -> str | None:
    """Said when a change was written after `at` by more than `tolerance`: the primary's clock is ahead of this host's
    (or this host's behind), so its age, the RPO, cannot be judged."""
    if written_at is None:
        return None
    ahead = (written_at - at).total_seconds()
    if ahead <= tolerance:
        return None
    return (
        f"clock skew: the newest change was written at {written_at:%Y-%m-%d %H:%M:%S}Z (the primary's clock), {ahead:.0f}s after "
        f"the drill started at {at:%Y-%m-%d %H:%M:%S}Z (this host's clock); the RPO cannot be judged: "
        "synchronise both clocks (NTP) and drill again"
    )


class ReplicaState(StepResult):
    """The replica at drill start."""

    url: str = ""
    endpoint: str | None = None
    problem: ReplicaProblem | None = None
    files: int = 0
    total_bytes: int = 0
    newest_txid: str | None = None
    newest_time: datetime | None = Field(default=None, description="When litestream wrote the newest change (its LTX header).")
    newest_storage_time: datetime | None = Field(default=None, description="The object store's timestamp of that file (LastModified).")
    newest_file: str | None = None
    levels: dict[str, int] = Field(default_factory=dict, description="LTX files per compaction level.")
    layout: str = Field(default=LTX_LAYOUT, description="Which litestream wrote the replica, as its layout says.")
    position: str | None = Field(default=None, description="litestream 0.3: the newest position as generation/index/offset.")
    generations: list[str] = Field(default_factory=list, description="litestream 0.3: the generations listed, oldest first.")
    notes: list[str] = Field(default_factory=list, description="What the listing says beside the position (layout, generations).")
    throttled: int = Field(default=0, description="Answers that said slow down (503 SlowDown) during the inspection, each retried.")
    # The listing itself, for the point planner (one listing per drill); never in the evidence.
    _listing: list[StoredObject] | None = PrivateAttr(default=None)

    @property
    def listing(self) -> list[StoredObject] | None:
        return self._listing

    txid_times: dict[str, datetime] = Field(
        default_factory=dict,
        exclude=True,  # one per LTX file: judged in memory, not kept in the evidence
        description="Newest storage timestamp per listed max TXID, for judging a restore that stopped short.",
    )

    def lag_seconds(self, at: datetime, tolerance: float = CLOCK_SKEW_TOLERANCE) -> float | None:
        """Age of the newest change the replica holds, at `at` (the measured RPO); None when unknown, also when the
        change lies more than `tolerance` in the future (clock skew: see `clock_skew`), never a made-up 0."""
        if self.newest_time is None or clock_skew(self.newest_time, at, tolerance):
            return None
        return max(0.0, round((at - self.newest_time).total_seconds(), 3))

    def time_of(self, txid: str) -> datetime | None:
        """When the replica's position `txid` was written: the header time for the newest, else the object's timestamp."""
        if txid == self.newest_txid:
            return self.newest_time
        return self.txid_times.get(txid)

    @property
    def clocks_note(self) -> str | None:
        """Said when the object store's time of the newest file is not the time litestream wrote it (a copied replica)."""
        if self.newest_time is None or self.newest_storage_time is None:
            return None
        apart = (self.newest_storage_time - self.newest_time).total_seconds()
        if abs(apart) <= CLOCKS_DIFFER:
            return None
        return (
            f"the newest LTX file was written at {self.newest_time:%Y-%m-%d %H:%M:%S}Z (its header) but stored at "
            f"{self.newest_storage_time:%Y-%m-%d %H:%M:%S}Z ({apart:+.0f}s): a copied or re-uploaded replica; RPO is judged on the header's time"
        )


def header_read_timeout(entry: DatabaseEntry) -> float:
    """The newest header's GET: the listing's timeout, at most HEADER_READ_TIMEOUT (its store client is built for it)."""
    return min(entry.inspect_timeout, HEADER_READ_TIMEOUT)


def warm_clients(entries: Iterable[DatabaseEntry]) -> threading.Thread:
    """Build the store clients the inspection and header reads will use, in a thread of their own, and return it.

    A fleet's first drill otherwise builds them on its restore's critical path (boto3: 0.2-0.3 s of CPU once per
    process); a command starts this before it waits on Prefect's server to create its flow run. Best effort: a
    client that cannot be built fails in the drill that needs it, with that drill's message."""
    chosen = list(entries)

    def connect() -> None:
        seen = set()
        for entry in chosen:
            for timeout in (entry.inspect_timeout, header_read_timeout(entry)):
                try:
                    key = (store_scope(entry.replica), timeout)
                    if key not in seen:
                        seen.add(key)
                        connecting = getattr(open_storage(entry.replica, timeout=timeout), "connect", None)
                        if connecting is not None:
                            connecting()
                except Exception:  # noqa: BLE001, S112 - see above: the drill that needs the client reports its failure
                    continue

    warming = threading.Thread(target=connect, name="drillbook-warm-clients", daemon=True)
    warming.start()
    return warming


def _listing(entry: DatabaseEntry) -> tuple[list[StoredObject], str | None]:
    """Every object below the replica's root, or raise StorageError; also the endpoint, for the report."""
    storage = open_storage(entry.replica, timeout=entry.inspect_timeout)
    endpoint = getattr(storage, "endpoint", None)
    try:
        storage.probe()
        deadline = time.monotonic() + entry.inspect_timeout
        objects = []
        for item in storage.list():
            objects.append(item)
            if time.monotonic() > deadline:
                raise StorageError(
                    StorageProblem.TIMEOUT, f"listing the replica took longer than {entry.inspect_timeout:g}s ({entry.replica_redacted})"
                )
        return objects, endpoint
    except StorageError as exc:
        exc.endpoint = endpoint
        raise


def inspect_replica(entry: DatabaseEntry) -> ReplicaState:
    """The replica's newest position and its time, or the problem that hides them (the listing kept for the point planner)."""
    kept: list[list[StoredObject]] = []
    before = _throttled(entry)
    state = _inspect(entry, kept)
    state._listing = kept[0] if kept else None
    state.throttled = max(0, _throttled(entry) - before)  # a fleet's drills of one bucket count together: it is the bucket's
    if state.throttled:
        state.notes.append(
            f"throttled (503 SlowDown): the replica's bucket answered 'slow down' {state.throttled} time(s) during the inspection, "
            "each retried with backoff; the restore meets the same limit, so drills of this bucket are slower "
            "(a fleet drills a throttled bucket one database at a time, the other buckets at full speed)"
        )
    return state


def _throttled(entry: DatabaseEntry) -> int:
    """The store's count of slow-down answers for this replica's bucket (S3 counts them; opening its storage costs nothing)."""
    if not entry.replica.startswith("s3://"):
        return 0
    try:
        counted = getattr(open_storage(entry.replica, timeout=entry.inspect_timeout), "throttled", None)
    except ValueError:
        return 0
    return counted() if counted is not None else 0


def _inspect(entry: DatabaseEntry, kept: list[list[StoredObject]]) -> ReplicaState:
    started = time.monotonic()
    endpoint: str | None = None

    def done(**fields) -> ReplicaState:
        return ReplicaState(url=entry.replica_redacted, endpoint=endpoint, seconds=round(time.monotonic() - started, 3), **fields)

    try:
        objects, endpoint = _listing(entry)
        kept.append(objects)
    except ValueError as exc:  # a scheme without a backend (check-config says so first)
        return done(status=Status.ERROR, problem=ReplicaProblem.UNSUPPORTED, summary=str(exc))
    except StorageError as exc:
        endpoint = getattr(exc, "endpoint", None)
        summary = str(exc) if exc.problem != StorageProblem.MISSING or str(exc).startswith("bucket") else f"no backup: {exc}"
        return done(status=Status.FAILED, problem=ReplicaProblem(exc.problem.value), summary=summary)
    if not objects:
        return done(status=Status.FAILED, problem=ReplicaProblem.EMPTY, summary=f"no backup: nothing stored under {entry.replica_redacted}")
    files = ltx_files(objects)
    legacy = generations(legacy_files(objects))
    if not files and legacy:
        return _inspect_legacy(entry, legacy, done)
    if not files:
        return done(
            status=Status.FAILED,
            problem=ReplicaProblem.EMPTY,
            summary=f"no backup: the replica holds no LTX files ({entry.replica_redacted})",
        )

    newest = newest_file(files)
    levels: dict[str, int] = {}
    txid_times: dict[str, datetime] = {}
    for f in files:
        levels[str(f.level)] = levels.get(str(f.level), 0) + 1
        stored = f.timestamp.astimezone(UTC)
        txid_times[f.max_txid] = max(stored, txid_times.get(f.max_txid, stored))
    listed = dict(
        files=len(files),
        total_bytes=sum(f.size for f in files),
        newest_txid=newest.max_txid,
        newest_file=newest.key,
        newest_storage_time=newest.timestamp.astimezone(UTC),
        levels=levels,
        txid_times=txid_times,
    )
    if legacy:
        listed["notes"] = [
            f"the replica also holds {len(legacy)} litestream 0.3 generation(s) ({', '.join(g.name for g in legacy)}), "
            "which a litestream 0.5 restore does not read: the LTX files are what is drilled"
        ]
    header, problem, seen = read_newest_header(entry, newest)
    if problem is not None:
        return done(status=Status.FAILED, problem=problem, summary=seen, **listed)
    state = done(
        status=Status.PASSED,
        newest_time=header.written_at,
        summary=f"{len(files)} LTX files, newest TXID {newest.max_txid} written at {header.written_at:%Y-%m-%d %H:%M:%S}Z",
        **listed,
    )
    if state.clocks_note:
        state.summary += f" (stored at {state.newest_storage_time:%Y-%m-%d %H:%M:%S}Z)"
    return state


def _inspect_legacy(entry: DatabaseEntry, found: list[Generation], done) -> ReplicaState:
    """A litestream 0.3 replica: the newest generation's last WAL segment is the position, its storage time the RPO's clock.

    litestream 0.5.17 restores the newest generation; it cannot say which position it restored (no TXIDs),
    so the position is the one listed, and the report says the time is the object store's.
    """
    newest_generation = max(found, key=lambda g: (g.last_written, g.name))
    newest = newest_generation.newest
    files = [f for g in found for f in g.files]
    notes = [
        f"litestream 0.3 replica: its newest position is {newest.position} (generation/index/offset); 0.3 writes no time of its own, "
        "so the RPO is judged on the object store's clock (when the segment was stored)"
    ]
    if len(found) > 1:
        older = ", ".join(f"{g.name} (last written {g.last_written:%Y-%m-%d %H:%M:%S}Z)" for g in found if g is not newest_generation)
        notes.append(
            f"{len(found)} generations on the replica: litestream restarted on the primary without its position, or a second primary "
            f"replicated to the same path; the newest, {newest_generation.name} (started {newest_generation.started:%Y-%m-%d %H:%M:%S}Z), "
            f"is what a restore brings back; older: {older}"
        )
    fields = dict(
        layout=LEGACY_LAYOUT,
        files=len(files),
        total_bytes=sum(f.size for f in files),
        position=newest.position,
        newest_file=newest.key,
        newest_time=newest.timestamp.astimezone(UTC),
        newest_storage_time=newest.timestamp.astimezone(UTC),
        generations=[g.name for g in found],
        levels={"snapshots": len(newest_generation.snapshots), "wal": len(newest_generation.segments)},
        notes=notes,
    )
    if not newest_generation.snapshots:
        return done(
            status=Status.FAILED,
            problem=ReplicaProblem.DAMAGED,
            summary=f"litestream 0.3 generation {newest_generation.name} has WAL segments but no snapshot: nothing to restore them onto",
            **fields,
        )
    return done(
        status=Status.PASSED,
        summary=f"litestream 0.3 replica, generation {newest_generation.name}: {len(newest_generation.snapshots)} snapshot(s), "
        f"{len(newest_generation.segments)} WAL segment(s), newest position {newest.position} stored at {newest.timestamp:%Y-%m-%d %H:%M:%S}Z",
        **fields,
    )


def read_newest_header(entry: DatabaseEntry, newest: LtxFile) -> tuple[LtxHeader | None, ReplicaProblem | None, str]:
    """Read the newest LTX file's header from the replica: (header, None, "") or (None, problem, what was seen)."""
    storage = open_storage(entry.replica, timeout=header_read_timeout(entry))
    where = f"{storage.where.split(' at ')[0].rstrip('/')}/{newest.key}"
    try:
        data = storage.read(newest.key, 0, LTX_HEADER_BYTES)
    except StorageError as exc:
        said = str(exc)
        return None, ReplicaProblem(exc.problem.value), f"the newest LTX file {said}" if " is listed but " in said else said
    try:
        header = parse_ltx_header(data)
    except ValueError as exc:
        return None, ReplicaProblem.DAMAGED, f"the newest LTX file {where} is damaged: {exc}"
    if header.max_txid != newest.max_txid:
        return None, ReplicaProblem.DAMAGED, f"the newest LTX file {where} holds TXID {header.max_txid}, its name says {newest.max_txid}"
    return header, None, ""
