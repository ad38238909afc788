"""What each drill learned of a replica's WAL lineage, kept in the history so a fork older than L0 retention is still seen.

The two-writer check (writers.py) reads L0 headers; litestream compacts and removes L0
files after `l0-retention` (5 minutes by default), taking their headers with them. So each
drill records the runs of one WAL lineage it saw (salts, TXID range, header time, pages), the
runs earlier drills recorded carried forward, and the next drill puts the recorded runs before
the headers it reads now and judges the whole sequence with the same rules:

- a lineage recorded as replaced that writes again now: "lineage returned" (an old primary back);
- TXIDs an earlier drill saw written by one WAL, now held by a file of another: "history rewritten";
- a replica whose newest TXID is below one an earlier drill saw written: "history went back"
  (the prefix was replaced by an older copy, or emptied and replicated anew).

Pure: no reads here; writers.py reads the headers and lineage_history.py the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from drillbook.tasks.ltx import LtxLineage

MAX_MARKS = 32  # lineage runs kept per database: the newest; a run is a WAL's whole stretch, so a few suffice


class LineageMark(BaseModel):
    """One run of L0 files written by one WAL (the same salts), as a drill saw it."""

    salts: str = Field(description="The WAL's salt-1 and salt-2, 8 hex digits each: 'salt1-salt2'.")
    first_txid: int = Field(description="The run's first TXID.")
    last_txid: int = Field(description="The run's last TXID.")
    last_written_ms: int = Field(description="The header time (ms since the epoch) of the run's last file.")
    commit: int = Field(description="Database size in pages at the run's last file.")


def _salts(header: LtxLineage) -> str:
    return f"{header.salt1:08x}-{header.salt2:08x}"


def marks_of(headers: list[LtxLineage]) -> list[LineageMark]:
    """Headers in TXID order -> runs of one lineage each."""
    marks: list[LineageMark] = []
    for header in headers:
        salts = _salts(header)
        if marks and marks[-1].salts == salts and header.min_txid > marks[-1].last_txid:
            marks[-1].last_txid, marks[-1].last_written_ms, marks[-1].commit = header.max_txid, header.written_ms, header.commit
        else:
            marks.append(
                LineageMark(
                    salts=salts,
                    first_txid=header.min_txid,
                    last_txid=header.max_txid,
                    last_written_ms=header.written_ms,
                    commit=header.commit,
                )
            )
    return marks


def as_header(mark: LineageMark) -> LtxLineage:
    """A recorded run as one header spanning it, for the fork rules (no checksum, no WAL offset: not read)."""
    salt1, salt2 = (int(part, 16) for part in mark.salts.split("-"))
    return LtxLineage(0, mark.commit, mark.first_txid, mark.last_txid, mark.last_written_ms, 0, 0, 0, salt1, salt2)


@dataclass
class Carried:
    """The recorded runs set against tonight's headers."""

    sequence: list[LtxLineage] = field(default_factory=list)  # TXID order: tonight's headers, and recorded runs no header overlaps
    recorded_at: set[int] = field(default_factory=set)  # positions in `sequence` that are recorded runs
    current_at: list[int] = field(default_factory=list)  # the position of each of tonight's headers, in their order
    rewritten: list[str] = field(default_factory=list)  # where a recorded run and a header read now disagree
    went_back: str | None = None  # the replica ends below a TXID an earlier drill saw written

    def gaps(self, current_gaps: frozenset[int]) -> frozenset[int]:
        """find_forks' gaps: at and after each recorded run (judged when recorded), and where tonight's reads skip files."""
        around = self.recorded_at | {position + 1 for position in self.recorded_at}
        return frozenset(around | {self.current_at[index] for index in current_gaps if index < len(self.current_at)})


def carry(recorded: list[LineageMark], headers: list[LtxLineage], newest_txid: int | None) -> Carried:
    """Pure: tonight's headers (TXID order) with the recorded runs none of them overlaps, where the two disagree, and
    whether the replica went back."""
    carried = Carried()
    inserted: list[LtxLineage] = []
    for mark in sorted(recorded, key=lambda m: m.first_txid):
        overlapping = [h for h in headers if h.max_txid >= mark.first_txid and h.min_txid <= mark.last_txid]
        if not overlapping:
            inserted.append(as_header(mark))
            continue
        other = next((h for h in overlapping if _salts(h) != mark.salts), None)
        if other is not None and not carried.rewritten:
            carried.rewritten.append(
                f"TXID {other.min_txid:016x} is now held by a file of WAL {_salts(other)}; an earlier drill saw TXIDs "
                f"{mark.first_txid:016x}-{mark.last_txid:016x} written by WAL {mark.salts}: the history was rewritten "
                "(a second writer, or the prefix replicated anew)"
            )
    ordered = sorted([(h.min_txid, 1, i, h) for i, h in enumerate(headers)] + [(h.min_txid, 0, i, h) for i, h in enumerate(inserted)])
    carried.current_at = [0] * len(headers)
    for position, (_txid, current, index, header) in enumerate(ordered):
        carried.sequence.append(header)
        if current:
            carried.current_at[index] = position
        else:
            carried.recorded_at.add(position)
    seen = max((mark.last_txid for mark in recorded), default=None)
    if seen is not None and newest_txid is not None and newest_txid < seen:
        carried.went_back = (
            f"the replica ends at TXID {newest_txid:016x}, and an earlier drill saw TXID {seen:016x} written: the history went back "
            "(the prefix was replaced by an older copy, or emptied and replicated anew); what was written after it is not restorable"
        )
    return carried


def recorded_next(carried: Carried, recorded: list[LineageMark], newest_txid: int | None) -> list[LineageMark]:
    """What this drill records: the runs of the whole sequence (recorded and tonight's); the newest MAX_MARKS.

    Where the history went back, the runs past the replica's end are dropped: the next drill judges from tonight's state.
    """
    marks = marks_of(carried.sequence) if carried.sequence else [mark.model_copy() for mark in recorded]
    if carried.went_back and newest_txid is not None:
        marks = [mark for mark in marks if mark.first_txid <= newest_txid]
        for mark in marks:
            mark.last_txid = min(mark.last_txid, newest_txid)
    return marks[-MAX_MARKS:]


def judged_now(forks: list, carried: Carried) -> list:
    """The forks at a header read now: one among recorded runs alone was named by the drill that saw it."""
    tonight = {f"{carried.sequence[position].min_txid:016x}" for position in carried.current_at}
    return [fork for fork in forks if fork.txid in tonight]
