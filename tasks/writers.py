"""Two writers on one replica: does the replica's history fork?

A replica has one writer at a time, by convention only: litestream takes no
lease. Measured with litestream 0.5.17 on moto S3 (README, "Two writers on one
replica"): a restored copy that replicates to the same path logs "detected
database behind replica" and continues the TXIDs with a full-database L0 file;
an old primary that comes back does the same, and its state silently becomes
"latest" (the other writer's changes vanish from every later restore).

What tells it from the L0 files' headers (the first 80 bytes of each, one ranged
read per file; litestream 0.5.x writes no checksums: the "no checksum" flag, both
checksums zero, so the WAL position is what chains one file to the next):

- a WAL lineage (its salts) that comes back after another lineage wrote: two
  writers alternating. Definite: a WAL's salts never return once replaced.
- TXID ranges of L0 files that overlap: two writers numbered the same TXIDs.
- a header time older than the previous TXID's by more than the tolerance:
  files of two writers interleave (an old primary uploading what it held).
- a new WAL lineage (not a checkpoint's restart: salt-1 is not the previous + 1)
  whose first file holds fewer pages than the database had: a copy restored
  from an older position took over.

And from the listing alone (no read): compacted files of one level (L1-L8) whose
TXID ranges overlap, e.g. L1 57-93 beside L1 57-106: two litestream processes
compacted the same replica. One writer's compactions continue where the last
ended; measured, two writers at once leave overlapping L1 files, and these
outlive the L0 files (until snapshot retention removes them).

A new WAL lineage alone is a note, not a finding: litestream restarting after
every connection closed (the WAL removed) looks the same. L0 files compacted
and removed by retention take their headers with them: a fork older than the
oldest L0 file kept (l0-retention, 5 minutes by default) is not seen.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.lineage import LineageMark, carry, judged_now, recorded_next
from drillbook.tasks.ltx import LINEAGE_BYTES, LTX_LAYOUT, LtxFile, LtxLineage, ltx_files, parse_ltx_lineage
from drillbook.tasks.outcome import Status
from drillbook.tasks.replica import ReplicaReader, ReplicaState
from drillbook.tasks.steps import StepResult
from drillbook.tasks.storage import StorageError

MAX_HEADERS = 1000  # L0 headers read per drill at most (the newest of those the read plan picks)
SHORT_HISTORY = 64  # L0 files read whole: a quiet replica's history costs a few reads
WHOLE_DATABASE = 4  # an L0 file this many times the median L0 file's size: a whole database, where a WAL starts anew
READERS = 8  # concurrent ranged reads
TIME_TOLERANCE = 2.0  # seconds a header time may step back (a clock adjusted) before files are said to interleave
SHOWN = 10  # findings listed; the evidence keeps them all


class Fork(BaseModel):
    """One place where the history forks."""

    kind: str = Field(description="lineage returned, TXIDs overlap, time went backwards, older copy took over")
    txid: str = Field(description="The TXID (16 hex digits) of the L0 file where it shows.")
    detail: str


class WriterCheck(StepResult):
    """The replica's L0 history read for a second writer."""

    l0_files: int = 0
    headers_read: int = 0
    lineages: int = Field(default=0, description="WAL lineages (salt pairs) among the files read.")
    forks: list[Fork] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    lineage: list[LineageMark] = Field(
        default_factory=list, description="The WAL lineage runs this drill knows of (earlier drills' carried forward), for the next drill."
    )
    replica_digest: str | None = Field(
        default=None, description="Which replica URL the lineage is of (a digest): another URL starts afresh."
    )

    def lineage_record(self) -> dict:
        """The lineage as the history keeps it (the drill's summary: `writer_lineage`)."""
        return {"replica_digest": self.replica_digest, "runs": [mark.model_dump() for mark in self.lineage]}


def _hex(txid: int) -> str:
    return f"{txid:016x}"


def _when(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def find_forks(
    headers: list[LtxLineage], tolerance: float = TIME_TOLERANCE, gaps: frozenset[int] = frozenset()
) -> tuple[list[Fork], list[str], int]:
    """Pure: L0 headers in TXID order -> (forks, notes, lineages). See the module's docstring for the rules.

    `gaps`: positions in `headers` whose predecessor in the list is not the L0 file just before it (files between
    were not read). There a new WAL is not judged (checkpoints in between explain it); the other rules hold.
    """
    forks: list[Fork] = []
    notes: list[str] = []
    seen: dict[tuple[int, int], int] = {}  # lineage -> the last max TXID written with it
    previous: LtxLineage | None = None
    for position, header in enumerate(headers):
        txid = _hex(header.min_txid)
        if previous is not None:
            lineage, before = header.salts, previous.salts
            if header.min_txid <= previous.max_txid:
                forks.append(
                    Fork(
                        kind="TXIDs overlap",
                        txid=txid,
                        detail=f"L0 files {_hex(previous.min_txid)}-{_hex(previous.max_txid)} and {txid}-{_hex(header.max_txid)} "
                        "both hold TXID " + txid + ": two writers numbered the same transactions",
                    )
                )
            if header.written_ms < previous.written_ms - tolerance * 1000:
                forks.append(
                    Fork(
                        kind="time went backwards",
                        txid=txid,
                        detail=f"TXID {txid} was written at {_when(header.written_ms)}, {(previous.written_ms - header.written_ms) / 1000:.1f}s "
                        f"before TXID {_hex(previous.max_txid)} ({_when(previous.written_ms)}): files of two writers interleave",
                    )
                )
            if lineage != before:
                if lineage in seen:
                    forks.append(
                        Fork(
                            kind="lineage returned",
                            txid=txid,
                            detail=f"TXID {txid} continues the WAL that wrote up to TXID {_hex(seen[lineage])}, after another WAL wrote "
                            f"TXIDs up to {_hex(previous.max_txid)}: two writers replicated here, and the one at TXID {txid} is now 'latest'",
                        )
                    )
                elif position not in gaps and header.salt1 != (previous.salt1 + 1) & 0xFFFFFFFF:  # a checkpoint: salt-1 + 1
                    if header.commit < previous.commit:
                        forks.append(
                            Fork(
                                kind="older copy took over",
                                txid=txid,
                                detail=f"TXID {txid} starts a new WAL with a whole database of {header.commit} pages after "
                                f"{previous.commit} pages at TXID {_hex(previous.max_txid)}: a copy restored from an older position "
                                "took over the replica (or the database shrank while litestream was stopped)",
                            )
                        )
                    else:
                        notes.append(
                            f"TXID {txid} starts a new WAL (litestream lost its WAL position: restarted after every connection "
                            "closed, or another writer took over from the same position); no second writer shows in the headers"
                        )
        seen[header.salts] = header.max_txid
        previous = header
    return forks, notes, len(seen)


def overlapping_compactions(files: list[LtxFile]) -> list[Fork]:
    """Pure: files of one compaction level (1-8) whose TXID ranges overlap; snapshots (L9) all start at TXID 1."""
    forks = []
    for level in sorted({f.level for f in files if 0 < f.level < 9}):
        ordered = sorted((f for f in files if f.level == level), key=lambda f: (f.low, f.high))
        for before, after in zip(ordered, ordered[1:]):
            if after.low <= before.high:
                forks.append(
                    Fork(
                        kind="compactions overlap",
                        txid=after.min_txid,
                        detail=f"L{level} files {before.min_txid}-{before.max_txid} and {after.min_txid}-{after.max_txid} overlap: "
                        "two litestream processes compacted this replica, so two writers replicated to it",
                    )
                )
    return forks


def read_plan(level0: list[LtxFile], limit: int = MAX_HEADERS) -> tuple[list[LtxFile], frozenset[int]]:
    """Which L0 headers to read (TXID order), and where the list skips files (find_forks' `gaps`).

    A short history is read whole. Of a long one: every file several times the
    median L0 size (a whole database: litestream writes one wherever a WAL starts
    anew, a takeover, an old primary returning or a restart, measured) with the
    file before it, and the newest file. A WAL that changes without a whole
    database is a checkpoint's restart, one writer's. So a busy replica costs a
    handful of reads per drill instead of one per file (bench/run.py: hundreds of
    reads a drill made the object store the fleet's bottleneck).
    """
    if len(level0) <= SHORT_HISTORY:
        return level0[-limit:], frozenset()
    sizes = sorted(f.size for f in level0)
    threshold = WHOLE_DATABASE * max(sizes[len(sizes) // 2], 1)
    chosen = {len(level0) - 1}
    for index in range(1, len(level0)):
        if level0[index].size >= threshold:
            chosen.update((index - 1, index))
    picked = sorted(chosen)[-limit:]
    gaps = frozenset(position for position in range(1, len(picked)) if picked[position] != picked[position - 1] + 1)
    return [level0[index] for index in picked], gaps


def check_writers(
    entry: DatabaseEntry, replica: ReplicaState, *, limit: int = MAX_HEADERS, recorded: list[LineageMark] | None = None
) -> WriterCheck:
    """Read the L0 headers that tell a fork (read_plan: ranged reads, concurrently) and look for one.

    `recorded`: the lineage runs earlier drills saw (lineage.py), set before tonight's headers: a fork whose
    files retention has removed since is still seen.
    """
    if not replica.ok or replica.listing is None:
        return WriterCheck.skipped("not run: the replica inspection did not pass")
    if replica.layout != LTX_LAYOUT:
        return WriterCheck.skipped("not run: a litestream 0.3 replica keeps no WAL lineage in its files (its generations are listed)")
    started = time.monotonic()
    recorded = recorded or []
    listed = ltx_files(replica.listing)
    newest = max((f.high for f in listed), default=None)
    compacted = overlapping_compactions(listed)
    level0 = sorted((f for f in listed if f.level == 0), key=lambda f: (f.low, f.high))
    chosen, gaps = read_plan(level0, limit)
    notes = []
    if len(level0) > SHORT_HISTORY:
        notes.append(
            f"read {len(chosen):,} of {len(level0):,} L0 headers: the whole-database files (where a WAL starts anew), "
            "the file before each, and the newest"
        )
    if len(level0) < (1 if recorded else 2):
        carried = carry(recorded, [], newest)
        went_back = [Fork(kind="history went back", txid=f"{newest:016x}", detail=carried.went_back)] if carried.went_back else []
        check = WriterCheck(
            l0_files=len(level0),
            forks=compacted + went_back,
            lineage=recorded_next(carried, recorded, newest),
            seconds=round(time.monotonic() - started, 3),
        )
        return _conclude(check, f"{len(level0)} L0 file(s) to compare (compacted and removed by retention, or a quiet primary)")
    storage = ReplicaReader.of(entry)

    def read(f: LtxFile) -> LtxLineage:
        return parse_ltx_lineage(storage.read(f.key, 0, LINEAGE_BYTES))

    try:
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="drillbook-writers") as pool:
            headers = list(pool.map(read, chosen))
    except (StorageError, ValueError) as exc:
        return WriterCheck(
            status=Status.ERROR,
            l0_files=len(level0),
            summary=f"the L0 headers could not be read: {exc}",
            lineage=recorded,
            seconds=round(time.monotonic() - started, 3),
        )
    carried = carry(recorded, headers, newest)
    forks, found, lineages = find_forks(carried.sequence, gaps=carried.gaps(gaps))
    forks = judged_now(forks, carried)
    forks += [Fork(kind="history rewritten", txid=f"{headers[0].min_txid:016x}", detail=said) for said in carried.rewritten]
    if carried.went_back:
        forks.append(Fork(kind="history went back", txid=f"{newest:016x}", detail=carried.went_back))
    if carried.recorded_at:
        notes.append(f"compared with {len(carried.recorded_at)} lineage run(s) earlier drills recorded, whose L0 files are gone")
    check = WriterCheck(
        l0_files=len(level0),
        headers_read=len(headers),
        lineages=lineages,
        forks=forks + compacted,
        notes=notes + found,
        lineage=recorded_next(carried, recorded, newest),
        seconds=round(time.monotonic() - started, 3),
    )
    return _conclude(
        check,
        f"{len(headers):,} of {len(level0):,} L0 headers (TXIDs {level0[0].min_txid}-{level0[-1].max_txid}), {lineages} WAL lineage(s)",
    )


def _conclude(check: WriterCheck, read: str) -> WriterCheck:
    if check.forks:
        check.status = Status.FAILED
        where = ", ".join(dict.fromkeys(f.txid for f in check.forks[:SHOWN]))
        check.summary = f"the history forks at TXID {where}: {check.forks[0].detail}"
    else:
        check.status = Status.PASSED
        check.summary = f"no second writer seen: {read}"
    return check
