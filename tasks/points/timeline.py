"""The replica's timeline: every LTX file with the time litestream wrote it (its header) and the time the store lists."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.ltx import HEADER_PREFIX, Generation, LtxFile, generations, legacy_files, ltx_files, parse_ltx_header
from drillbook.tasks.storage import open_storage


class PointFile(BaseModel):
    """One LTX file: its TXID range and the time litestream wrote it (header), and the time the listing shows."""

    level: int
    min_txid: int
    max_txid: int
    time: datetime
    listed: datetime


class Timeline(BaseModel):
    """Every listed LTX file, with the times litestream's own point-in-time restore goes by."""

    files: list[PointFile] = Field(default_factory=list)
    header_times: bool = Field(default=True, description="False when the LTX headers could not be read (listing times used).")
    legacy: str | None = Field(
        default=None,
        description="litestream 0.3: the generation drilled. Its 'TXIDs' here number the snapshot and WAL segments in order; times are the store's.",
    )

    def file_ending(self, txid: int) -> PointFile | None:
        ending = [f for f in self.files if f.max_txid == txid]
        return min(ending, key=lambda f: f.time) if ending else None

    @property
    def newest(self) -> PointFile | None:
        return max(self.files, key=lambda f: (f.max_txid, f.time)) if self.files else None

    @property
    def oldest(self) -> PointFile | None:
        """The oldest restorable point: the earliest file starting at TXID 1 (a snapshot, or the first file)."""
        starts = [f for f in self.files if f.min_txid == 1]
        return min(starts, key=lambda f: (f.time, f.max_txid)) if starts else None

    @property
    def restorable_from(self) -> datetime | None:
        """Times strictly after this can be asked for (litestream also refuses times before its listing's first file)."""
        oldest = self.oldest
        if oldest is None:
            return None
        return max(oldest.time, min(f.listed for f in self.files))

    @property
    def restorable_until(self) -> datetime | None:
        """The latest time litestream takes for -timestamp (it refuses later ones: 'timestamp does not exist')."""
        newest = self.newest
        if newest is None:
            return None
        return min(max(f.time for f in self.files), max(f.listed for f in self.files))

    def expected_at(self, moment: datetime) -> PointFile | None:
        """The newest state the replica lists before `moment`: the file with the highest TXID written before it."""
        before = [f for f in self.files if f.time < moment]
        return max(before, key=lambda f: (f.max_txid, -f.time.timestamp())) if before else None

    def holes(self, files: Iterable[PointFile]) -> list[tuple[int, int]]:
        """TXID ranges no file covers, from TXID 1 up to the highest TXID of `files`."""
        spans = sorted((f.min_txid, f.max_txid) for f in files)
        holes, reached = [], 0
        for low, high in spans:
            if low > reached + 1:
                holes.append((reached + 1, low - 1))
            reached = max(reached, high)
        return holes

    def hole_after(self, txid: int) -> tuple[int, int] | None:
        """The TXIDs missing right after `txid` (a deleted file), if any.

        Snapshots (level 9) do not count: one always starts at TXID 1, and one written
        later cannot serve a time before it.
        """
        later = [f.min_txid for f in self.files if f.min_txid > txid]
        covered = any(f.min_txid <= txid + 1 <= f.max_txid for f in self.files if f.level < 9)
        if covered or not later:
            return None
        return txid + 1, min(later) - 1


def read_header_times(entry: DatabaseEntry, files: list[LtxFile]) -> dict[str, datetime]:
    """The time in each file's LTX header (what litestream's -timestamp goes by), by key: one ranged read each."""
    storage = open_storage(entry.replica, timeout=entry.inspect_timeout)
    with ThreadPoolExecutor(max_workers=8) as pool:  # botocore keeps 10 connections per client
        data = pool.map(lambda f: storage.read(f.key, 0, HEADER_PREFIX), files)
        return {f.key: parse_ltx_header(chunk).written_at for f, chunk in zip(files, data)}


def legacy_timeline(generation: Generation) -> Timeline:
    """A 0.3 generation as a timeline: the newest snapshot at position 1, each later WAL segment the next position.

    litestream 0.5 restores a 0.3 replica by time (`-timestamp`), judged on the store's times, which are
    all 0.3 has; the numbers only order the positions for the planner.
    """
    snapshot = max(generation.snapshots, key=lambda f: f.index) if generation.snapshots else None
    after = sorted(
        (f for f in generation.segments if snapshot is None or f.index >= snapshot.index), key=lambda f: (f.index, f.offset or 0)
    )
    files = []
    if snapshot is not None:
        stamp = snapshot.timestamp.astimezone(UTC)
        files.append(PointFile(level=9, min_txid=1, max_txid=1, time=stamp, listed=stamp))
    for number, segment in enumerate(after, start=2):
        stamp = segment.timestamp.astimezone(UTC)
        files.append(PointFile(level=0, min_txid=number, max_txid=number, time=stamp, listed=stamp))
    return Timeline(files=files, header_times=False, legacy=generation.name)


def read_timeline(entry: DatabaseEntry) -> tuple[Timeline, list[str]]:
    """The replica's files with their header times; notes say what could not be read precisely."""
    storage = open_storage(entry.replica, timeout=entry.inspect_timeout)
    objects = list(storage.list())
    listed = ltx_files(objects)
    if not listed and (found := generations(legacy_files(objects))):
        newest = max(found, key=lambda g: (g.last_written, g.name))
        return legacy_timeline(newest), [f"litestream 0.3 replica: points are planned over generation {newest.name}, by the store's times"]
    notes: list[str] = []
    try:
        times = read_header_times(entry, listed)
        header = True
    except Exception as exc:  # noqa: BLE001 - any read problem: fall back to the listing's (storage) times, and say so
        times, header = {}, False
        notes.append(f"LTX headers could not be read ({type(exc).__name__}); the listing's storage times are used instead")
    files = [
        PointFile(
            level=f.level,
            min_txid=f.low,
            max_txid=f.high,
            time=times.get(f.key, f.timestamp).astimezone(UTC),
            listed=f.timestamp.astimezone(UTC),
        )
        for f in listed
    ]
    return Timeline(files=files, header_times=header), notes
