"""The replica's timeline: every LTX file with the time litestream wrote it (its header) and the time the store lists.

Header times are read when a question needs them, not for every file: files of one
level are written in TXID order, so their header times grow with their TXIDs, and
"the newest file written before T" is a bisection per level (a few ranged reads),
not one read per file. A busy month's 100,000 files cost a few dozen reads.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.ltx import HEADER_PREFIX, Generation, generations, legacy_files, ltx_files, parse_ltx_header
from drillbook.tasks.replica import ReplicaReader
from drillbook.tasks.storage import StoredObject


class PointFile:
    """One LTX file: its TXID range, the time litestream wrote it (its header, read on first use), the time the listing shows.

    A plain slotted class: a busy replica's timeline holds 100,000 of them.
    """

    __slots__ = ("level", "min_txid", "max_txid", "header_time", "listed", "key", "_reader")

    def __init__(
        self, level: int, min_txid: int, max_txid: int, listed: datetime, time: datetime | None = None, key: str = "", reader=None
    ):
        self.level, self.min_txid, self.max_txid, self.listed, self.key = level, min_txid, max_txid, listed, key
        self.header_time: datetime | None = time
        self._reader: Callable[[PointFile], datetime] | None = reader

    @property
    def time(self) -> datetime:
        """When litestream wrote the file (its header), else the store's time."""
        if self.header_time is None:
            self.header_time = self._reader(self) if self._reader is not None else self.listed
        return self.header_time

    def __repr__(self) -> str:
        return f"PointFile(L{self.level} {self.min_txid:x}-{self.max_txid:x})"


class Timeline:
    """Every listed LTX file, with the times litestream's own point-in-time restore goes by."""

    def __init__(self, files: Iterable[PointFile] = (), header_times: bool = True, legacy: str | None = None):
        self.files = list(files)
        self.header_times = header_times  # False once LTX headers could not be read (listing times used)
        # litestream 0.3: the generation drilled. Its 'TXIDs' here number the snapshot and WAL segments in order; times are the store's.
        self.legacy = legacy
        self._levels: dict[int, list[PointFile]] | None = None

    def levels(self) -> dict[int, list[PointFile]]:
        """Files per level, in TXID order (the order litestream wrote them in, so header times grow along each)."""
        if self._levels is None:
            grouped: dict[int, list[PointFile]] = {}
            for f in sorted(self.files, key=lambda f: (f.max_txid, f.min_txid)):
                grouped.setdefault(f.level, []).append(f)
            self._levels = grouped
        return self._levels

    def file_ending(self, txid: int) -> PointFile | None:
        ending = [f for f in self.files if f.max_txid == txid]
        return min(ending, key=lambda f: f.time) if ending else None

    @property
    def newest(self) -> PointFile | None:
        if not self.files:
            return None
        top = max(f.max_txid for f in self.files)
        return max((f for f in self.files if f.max_txid == top), key=lambda f: f.time)

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
        return min(max(files[-1].time for files in self.levels().values()), max(f.listed for f in self.files))

    def before(self, moment: datetime) -> list[PointFile]:
        """Every file written before `moment`: per level, the files up to the last one whose header time is before it."""
        out: list[PointFile] = []
        for files in self.levels().values():
            cut = bisect.bisect_left(files, True, key=lambda f: f.time >= moment)
            out.extend(files[:cut])
        return out

    def expected_at(self, moment: datetime) -> PointFile | None:
        """The newest state the replica lists before `moment`: the file with the highest TXID written before it."""
        before = self.before(moment)
        if not before:
            return None
        top = max(f.max_txid for f in before)
        return min((f for f in before if f.max_txid == top), key=lambda f: f.time)

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


def read_timeline(entry: DatabaseEntry, listing: list[StoredObject] | None = None) -> tuple[Timeline, list[str]]:
    """The replica's files with their header times (read as needed); `listing`: the inspection's, so the replica is listed once."""
    storage = ReplicaReader.of(entry)
    objects = listing if listing is not None else storage.objects()
    listed = ltx_files(objects)
    if not listed and (found := generations(legacy_files(objects))):
        newest = max(found, key=lambda g: (g.last_written, g.name))
        return legacy_timeline(newest), [f"litestream 0.3 replica: points are planned over generation {newest.name}, by the store's times"]
    notes: list[str] = []
    timeline = Timeline(
        files=[PointFile(level=f.level, min_txid=f.low, max_txid=f.high, listed=f.timestamp.astimezone(UTC), key=f.key) for f in listed]
    )
    lock = threading.Lock()

    def read(f: PointFile) -> datetime:
        if not timeline.header_times:
            return f.listed
        try:
            return parse_ltx_header(storage.read(f.key, 0, HEADER_PREFIX)).written_at
        except Exception as exc:  # noqa: BLE001 - any read problem: the listing's (storage) times from here on, and say so
            with lock:
                if timeline.header_times:
                    timeline.header_times = False
                    notes.append(f"LTX headers could not be read ({type(exc).__name__}); the listing's storage times are used instead")
            return f.listed

    for f in timeline.files:
        f._reader = read
    return timeline, notes
