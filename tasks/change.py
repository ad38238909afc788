"""What changed on a replica since its last drill, from one listing: the budgeted nightly's fifth criterion.

The listing is the drill's own (ReplicaReader over tasks/storage, as tasks/replica.py's inspection lists it): the
LTX files' names carry their TXID ranges and the listing their sizes, so the newest TXID and the bytes past the last
drilled one need no restore and no header read. The plan lists only the candidates not already due, LISTING_WORKERS
at once; a listing that fails, a replica without LTX files or TXIDs that started again below the last drilled one
make the change unknown, which tasks/history/budget.py ranks as the most (the safer guess).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.history.budget import Change
from drillbook.tasks.ltx import LtxFile, newest_file
from drillbook.tasks.replica import ReplicaReader
from drillbook.tasks.storage import StorageError
from drillbook.tasks.text import one_line

LISTING_WORKERS = 16  # listings at once: each is a few paginated requests, waiting on the store rather than the CPU


def change_bytes(files: Iterable[LtxFile], last: int, newest: int) -> int:
    """Bytes of the LTX files holding TXIDs last+1..newest, walked from `last`: the file holding the next TXID at the
    lowest level that has one (level 0 as litestream wrote it while it is kept, else the compacted file, the snapshot
    last), then on from that file's end; each file counted once."""
    levels: dict[int, list[LtxFile]] = {}
    for f in files:
        if f.high > last:
            levels.setdefault(f.level, []).append(f)
    order = sorted(levels)
    for level in order:
        levels[level].sort(key=lambda f: f.low)
    lows = {level: [f.low for f in levels[level]] for level in order}
    total, cursor = 0, last
    while cursor < newest:
        holding = None
        for level in order:
            index = bisect_right(lows[level], cursor + 1) - 1
            if index >= 0 and levels[level][index].high > cursor:
                holding = levels[level][index]
                break
        if holding is None:  # a gap in what is listed (retention): go on from the next file that starts past it
            later = [f.low for level in order for f in levels[level] if f.low > cursor + 1]
            if not later:
                break
            cursor = min(later) - 1
            continue
        total += holding.size
        cursor = holding.high
    return total


def change_of(files: Sequence[LtxFile], last_txid: str) -> Change:
    """The change a listing's LTX files show past `last_txid` (16 hex digits, as litestream writes a TXID)."""
    if not files:
        return Change(unknown="change unknown: the listing holds no LTX files")
    newest = newest_file(files)
    try:
        last = int(last_txid, 16)
    except ValueError:
        return Change(unknown=f"change unknown: the last drilled TXID {last_txid!r} is not one")
    if newest.high < last:
        return Change(unknown=f"change unknown: the newest TXID {newest.max_txid} is below the last drilled {last_txid} (a new lineage)")
    return Change(transactions=newest.high - last, bytes=change_bytes(files, last, newest.high))


def read_change(entry: DatabaseEntry, last_txid: str | None) -> Change:
    """One listing of the replica and the change it shows since the drill that restored `last_txid`; never raises."""
    if not last_txid:
        return Change(unknown="change unknown: no drilled TXID on record")
    try:
        reader = ReplicaReader.of(entry)
        files = reader.ltx_files()
        if not files:
            reader.storage.probe()  # an empty listing: a missing directory or bucket says so here (one more request, only then)
        return change_of(files, last_txid)
    except (StorageError, ValueError, OSError) as exc:  # ValueError: a scheme without a backend
        return Change(unknown=f"listing failed: {one_line(str(exc), 200)}")
    except Exception as exc:  # noqa: BLE001 - one replica's listing never stops the night's plan
        return Change(unknown=f"listing failed: {type(exc).__name__}: {one_line(str(exc), 200)}")


class Listed(NamedTuple):
    """The listing step's result: the change per database, and what it cost."""

    changes: dict[str, Change]
    seconds: float
    failed: int


def read_changes(entries: Iterable[DatabaseEntry], last_txids: dict[str, str | None], workers: int = LISTING_WORKERS) -> Listed:
    """Each entry's change since its last drill (`last_txids`: per database, the TXID that drill restored), `workers` at once."""
    entries = list(entries)
    started = time.monotonic()
    if not entries:
        return Listed({}, 0.0, 0)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(entries))), thread_name_prefix="drillbook-listing") as pool:
        found = list(pool.map(lambda entry: read_change(entry, last_txids.get(entry.name)), entries))
    changes = {entry.name: change for entry, change in zip(entries, found, strict=True)}
    failed = sum(1 for change in found if (change.unknown or "").startswith("listing failed"))
    return Listed(changes, round(time.monotonic() - started, 3), failed)
