"""Which point to restore, which TXID the copy must then hold, and whether it did: planned from the timeline alone."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.outcome import Status
from drillbook.tasks.points.coverage import PointRecord, proven_slots, slot_of
from drillbook.tasks.points.request import PointKind, PointProblem, PointRequest
from drillbook.tasks.points.timeline import Timeline
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.steps import StepResult
from drillbook.tasks.text import duration_text, iso, txid_text


class PointCheck(StepResult):
    """The 'point' phase: what was asked, what the listing says it is, what litestream restored."""

    request: PointRequest | None = None
    target_args: list[str] = Field(default_factory=list, description="What litestream was asked: -timestamp T or -txid X.")
    problem: PointProblem | None = None
    expected_txid: str | None = None
    expected_time: datetime | None = None
    restored_txid: str | None = None
    restored_time: datetime | None = None
    oldest_txid: str | None = None
    oldest_time: datetime | None = None
    newest_txid: str | None = None
    newest_time: datetime | None = None
    window_start: datetime | None = Field(default=None, description="Random points: the window drawn from.")
    slot_start: datetime | None = Field(default=None, description="Random points: the slot (restore_points.every long) the point lies in.")
    proven: bool = False
    notes: list[str] = Field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The point as the history row's summary keeps it (coverage reads this)."""
        return {
            "kind": self.request.kind.value if self.request else None,
            "requested_at": iso(self.request.at) if self.request and self.request.at else None,
            "requested_txid": self.request.txid if self.request else None,
            "expected_txid": self.expected_txid,
            "expected_time": iso(self.expected_time) if self.expected_time else None,
            "restored_txid": self.restored_txid,
            "restored_time": iso(self.restored_time) if self.restored_time else None,
            "oldest_txid": self.oldest_txid,
            "oldest_time": iso(self.oldest_time) if self.oldest_time else None,
            "slot_start": iso(self.slot_start) if self.slot_start else None,
            "problem": self.problem.value if self.problem else None,
            "status": self.status.value,
            "proven": self.proven,
        }


def choose_random_point(
    timeline: Timeline, window: float, every: float, records: Iterable[PointRecord], now: datetime, rng: random.Random
) -> tuple[datetime, datetime, datetime] | None:
    """(point, its slot, the window's start): a random time in a slot never proven (else the one proven longest ago)."""
    start, end = timeline.restorable_from, timeline.restorable_until
    if start is None or end is None:
        return None
    window_start = now - timedelta(seconds=window)
    low, high = max(start, window_start), end
    if high <= low:
        return None
    proven = proven_slots(records, every)
    slots = []
    slot = slot_of(low, every)
    while slot < high:
        slots.append(slot)
        slot += timedelta(seconds=every)
    never = [s for s in slots if s not in proven]
    chosen = rng.choice(never) if never else min(slots, key=lambda s: (proven[s], rng.random()))
    lo = max(low, chosen)
    hi = min(high, chosen + timedelta(seconds=every))
    millis = rng.randint(int(lo.timestamp() * 1000) + 1, max(int(lo.timestamp() * 1000) + 1, int(hi.timestamp() * 1000)))
    return datetime.fromtimestamp(millis / 1000, UTC), chosen, window_start


def plan_point(
    entry: DatabaseEntry,
    request: PointRequest,
    timeline: Timeline,
    now: datetime,
    *,
    history: Iterable[PointRecord] = (),
    rng: random.Random | None = None,
) -> PointCheck:
    """Resolve the request against the listing: what to ask litestream, and which TXID the copy must then hold.

    FAILED when the listing already shows the point cannot be restored (the restore still runs, as evidence).
    """
    rng = rng or random.Random()
    oldest, newest = timeline.oldest, timeline.newest
    check = PointCheck(
        request=request,
        oldest_txid=txid_text(oldest.max_txid) if oldest else None,
        oldest_time=oldest.time if oldest else None,
        newest_txid=txid_text(newest.max_txid) if newest else None,
        newest_time=newest.time if newest else None,
    )
    if timeline.legacy and request.kind == PointKind.TXID:
        check.status = Status.ERROR
        check.summary = (
            f"--txid {request.txid}: a litestream 0.3 replica has no TXIDs (its positions are generation/index/offset, and litestream "
            "refuses -txid on it); restore a time with --at instead"
        )
        return check
    if timeline.legacy and request.kind == PointKind.OLDEST and oldest is not None:
        request = PointRequest(kind=PointKind.OLDEST, at=oldest.time + timedelta(milliseconds=1))
        check.request = request
        return _plan_time(check, timeline, request.at)
    if not timeline.header_times and not timeline.legacy:
        check.notes.append(
            "times are the object store's, not litestream's (LTX headers unreadable): a point within a second of a file may be misjudged"
        )
    if oldest is None or newest is None:
        nothing = "the replica lists no file starting at TXID 1 (no snapshot): no point of it is restorable"
        if request.kind == PointKind.RETENTION:
            return _fail(check, PointProblem.RETENTION_SHORT, f"retention window short: {nothing}")
        return _fail(check, PointProblem.NO_HISTORY, nothing)

    if request.kind == PointKind.TXID:
        return _plan_txid(check, timeline, int(request.txid, 16))
    if request.kind == PointKind.OLDEST:
        check.request = PointRequest(kind=PointKind.OLDEST, txid=txid_text(oldest.max_txid))
        return _plan_txid(check, timeline, oldest.max_txid)
    if request.kind == PointKind.RETENTION:
        target = float(entry.retention_target or 0)
        age = (now - oldest.time).total_seconds()
        if age < target:
            check.request = PointRequest(kind=PointKind.RETENTION, txid=txid_text(oldest.max_txid))
            _plan_txid(check, timeline, oldest.max_txid)
            return _fail(
                check,
                PointProblem.RETENTION_SHORT,
                f"retention window short: the oldest restorable point is TXID {txid_text(oldest.max_txid)} written {iso(oldest.time)} "
                f"({duration_text(age)} ago), short of retention_target {duration_text(target)} by {duration_text(target - age)}",
            )
        request = PointRequest(kind=PointKind.RETENTION, at=now - timedelta(seconds=target))
        check.request = request
    if request.kind == PointKind.RANDOM:
        points = entry.restore_points
        chosen = choose_random_point(timeline, points.random_within, points.every, history, now, rng)
        if chosen is None:
            return _fail(
                check,
                PointProblem.BEFORE_OLDEST,
                f"no restorable point lies inside restore_points.random_within ({duration_text(points.random_within)}): "
                f"the replica holds {iso(timeline.restorable_from)} to {iso(timeline.restorable_until)}",
            )
        moment, check.slot_start, check.window_start = chosen
        if check.window_start < (timeline.restorable_from or now):
            first = "the replica's first backup" if oldest.level != 9 or oldest.min_txid == oldest.max_txid else "its oldest snapshot"
            check.notes.append(
                f"restore_points.random_within ({duration_text(points.random_within)}) reaches before {first} "
                f"({iso(oldest.time)}); points are drawn from the {duration_text((now - oldest.time).total_seconds())} that exist"
            )
        request = PointRequest(kind=PointKind.RANDOM, at=moment)
        check.request = request
    return _plan_time(check, timeline, request.at)


def _fail(check: PointCheck, problem: PointProblem, summary: str) -> PointCheck:
    check.status, check.problem, check.summary = Status.FAILED, problem, summary
    return check


def _plan_txid(check: PointCheck, timeline: Timeline, txid: int) -> PointCheck:
    check.target_args = ["-txid", txid_text(txid)]
    check.expected_txid = txid_text(txid)
    newest = timeline.newest
    if txid > newest.max_txid:
        return _fail(
            check, PointProblem.BEYOND_NEWEST, f"TXID {txid_text(txid)} is beyond the newest on the replica ({txid_text(newest.max_txid)})"
        )
    ending = timeline.file_ending(txid)
    if ending is None:
        holding = sorted((f for f in timeline.files if f.min_txid <= txid <= f.max_txid), key=lambda f: (f.level == 9, f.level))
        where = (
            f"inside the compacted file L{holding[0].level} {txid_text(holding[0].min_txid)}-{txid_text(holding[0].max_txid)}"
            if holding
            else "missing from the replica"
        )
        ends = sorted({f.max_txid for f in timeline.files})
        before = max((t for t in ends if t < txid), default=None)
        after = min((t for t in ends if t > txid), default=None)
        return _fail(
            check,
            PointProblem.NOT_A_POINT,
            f"TXID {txid_text(txid)} is {where}: no restore ends there (nearest restorable TXIDs: {txid_text(before) or 'none'} and {txid_text(after) or 'none'})",
        )
    check.expected_time = ending.time
    holes = timeline.holes(f for f in timeline.files if f.max_txid <= txid)
    if holes:
        low, high = holes[0]
        return _fail(
            check,
            PointProblem.GAP,
            f"the replica is missing TXIDs {txid_text(low)}-{txid_text(high)}: no chain of files reaches TXID {txid_text(txid)}",
        )
    check.status, check.summary = Status.PASSED, f"TXID {txid_text(txid)} (written {iso(ending.time)}) is listed"
    return check


def _plan_time(check: PointCheck, timeline: Timeline, moment: datetime) -> PointCheck:
    start, until = timeline.restorable_from, timeline.restorable_until
    if moment <= start:
        check.target_args = ["-timestamp", iso(moment)]
        if moment > check.oldest_time:
            return _fail(
                check,
                PointProblem.BEFORE_OLDEST,
                f"{iso(moment)} is after the oldest point (TXID {check.oldest_txid} written {iso(check.oldest_time)}) but before the object store's time "
                f"of the oldest file ({iso(start)}), and litestream goes by the latter: was the replica copied? Restore by --txid instead",
            )
        return _fail(
            check,
            PointProblem.BEFORE_OLDEST,
            f"{iso(moment)} is before the oldest restorable point (TXID {check.oldest_txid} written {iso(check.oldest_time)})",
        )
    if moment > until and timeline.legacy:
        check.target_args = []  # no TXID to ask for: the newest position is the state at that time
        check.expected_txid, check.expected_time = txid_text(timeline.newest.max_txid), timeline.newest.time
        check.status, check.summary = Status.PASSED, f"{iso(moment)} is after the newest WAL segment ({iso(until)}): the newest position"
        return check
    if moment > until:
        # litestream refuses a time after its newest file by the object store's clock (whole seconds on S3):
        # "timestamp does not exist". The state at that time is the last file written before it: ask for its TXID.
        expected = timeline.expected_at(moment)
        newest = timeline.newest
        if expected.max_txid == newest.max_txid:
            check.notes.append(
                f"{iso(moment)} is after the newest change on the replica ({iso(newest.time)}): the point is the newest position"
            )
        else:
            check.notes.append(
                f"{iso(moment)} is later than litestream takes a time (its listing ends {iso(until)}): asking for TXID {txid_text(expected.max_txid)} instead"
            )
        return _plan_txid(check, timeline, expected.max_txid)
    check.target_args = ["-timestamp", iso(moment)]
    expected = timeline.expected_at(moment)
    check.expected_txid, check.expected_time = txid_text(expected.max_txid), expected.time
    usable = timeline.before(moment)
    holes = timeline.holes(usable)
    if holes:
        low, high = holes[0]
        return _fail(
            check,
            PointProblem.GAP,
            f"the replica is missing TXIDs {txid_text(low)}-{txid_text(high)}: a restore to {iso(moment)} stops before them, short of TXID {check.expected_txid}",
        )
    hole = timeline.hole_after(expected.max_txid)
    if hole is not None:
        low, high = hole
        following = min((f for f in timeline.files if f.min_txid == high + 1), key=lambda f: f.time)
        return _fail(
            check,
            PointProblem.GAP,
            f"the replica is missing TXIDs {txid_text(low)}-{txid_text(high)} (written between {iso(expected.time)} and {iso(following.time)}): "
            f"the state at {iso(moment)} may include them and cannot be shown",
        )
    following = [f for f in timeline.files if f.min_txid <= expected.max_txid + 1 <= f.max_txid and f.time >= moment]
    compacted = [f for f in following if f.level > 0]
    if compacted and not any(f.level == 0 for f in following):
        late = min(compacted, key=lambda f: f.time)
        check.notes.append(
            f"the changes after TXID {check.expected_txid} are kept only compacted (L{late.level} {txid_text(late.min_txid)}-{txid_text(late.max_txid)}, "
            f"written {iso(late.time)}): the nearest restorable point at or before {iso(moment)} is {iso(expected.time)}, "
            f"{duration_text((moment - expected.time).total_seconds())} earlier"
        )
    check.status = Status.PASSED
    check.summary = (
        f"{iso(moment)}: the replica lists TXID {check.expected_txid} (written {iso(expected.time)}) as the last change before it"
    )
    return check


# -- after the restore --------------------------------------------------------------------------------------------


def verify_point(check: PointCheck, restore: RestoreResult, timeline: Timeline | None = None) -> PointCheck:
    """Pure: the restored TXID against the planned one. Behind or ahead of the point is a FAIL naming both."""
    check = check.model_copy(deep=True)
    asked = check.request.describe() if check.request else "the point"
    if restore.status == Status.FAILED:
        said = (restore.command.stderr_tail(200) if restore.command else "") or restore.summary
        if check.status != Status.FAILED:
            _fail(check, PointProblem.REFUSED, f"litestream did not restore {asked} ({' '.join(check.target_args)}): {said}")
        else:
            check.summary += f"; litestream: {said}"
        return check
    if restore.ok and restore.txid is None and timeline is not None and timeline.legacy:
        if check.status == Status.PASSED:
            check.summary = f"restored {asked} from litestream 0.3 generation {timeline.legacy}; its position is not checked"
            check.notes.append(
                "litestream does not report the position a 0.3 restore reached (no TXIDs): the copy's integrity and checks are the evidence"
            )
        return check
    if not restore.ok or restore.txid is None:
        if check.status == Status.PASSED:
            check.status, check.summary = Status.SKIPPED, f"not checked: {restore.summary or 'no restored copy'}"
        return check
    restored = int(restore.txid, 16)
    check.restored_txid = txid_text(restored)
    if timeline is not None:
        ending = timeline.file_ending(restored)
        check.restored_time = ending.time if ending else None
    if check.status == Status.FAILED or check.expected_txid is None:
        return check
    expected = int(check.expected_txid, 16)
    restored_at = f" (written {iso(check.restored_time)})" if check.restored_time else ""
    if restored < expected:
        return _fail(
            check,
            PointProblem.BEHIND,
            f"the copy is behind {asked}: restored TXID {check.restored_txid}{restored_at}, "
            f"the replica lists TXID {check.expected_txid} (written {iso(check.expected_time)}) for it",
        )
    if restored > expected:
        return _fail(
            check,
            PointProblem.AHEAD,
            f"the copy is ahead of {asked}: restored TXID {check.restored_txid}{restored_at}, expected TXID {check.expected_txid} (written {iso(check.expected_time)})",
        )
    check.proven = True
    check.summary = f"restored {asked}: TXID {check.restored_txid}{restored_at}, as the replica lists it"
    return check
