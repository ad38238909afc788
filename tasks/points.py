"""Restore points other than the newest: a time (`--at`), a TXID (`--txid`), a random point of a window, the retention boundary.

litestream 0.5.17 restores a point by its LTX files' times (the time written in
each file's header; a compacted file carries the time it was compacted, later
than the transactions in it) and, asked for a time, silently stops at the first
gap in the TXID chain: the copy is then *earlier* than the point, and the exit
code is 0. So the point is planned here from the replica listing, independently
of litestream, and the restored TXID is checked against that plan:

- expected TXID for a time T: the highest TXID of any listed file written before T;
- a hole in the TXIDs at or just after it (a deleted file) makes the point unprovable;
- the oldest restorable point is the oldest file that starts at TXID 1 (a snapshot or the first file).

Everything here is a plain function; the listing and the header reads are the only I/O.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.replica import ReplicaState, parse_ltx_header, parse_s3_url, s3_client
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.steps import Status, StepResult
from drillbook.tasks.text import duration_text, iso, txid_text

KEYWORDS = ("oldest", "random", "retention")
TXID_HINT = "a hexadecimal TXID like 0000000000001a2b (1 to 16 hex digits, as `litestream ltx` lists them)"
AT_HINT = "an ISO 8601 time with a zone like 2026-11-20T10:00:00Z, or one of oldest, random, retention"


class PointKind(StrEnum):
    AT = "at"  # a time
    TXID = "txid"
    OLDEST = "oldest"
    RANDOM = "random"  # a random time inside restore_points.random_within, favouring uncovered parts
    RETENTION = "retention"  # the retention_target boundary (or the oldest point when the window is short)


class PointProblem(StrEnum):
    BEFORE_OLDEST = "before_oldest"  # the point predates every restorable file
    BEYOND_NEWEST = "beyond_newest"  # a TXID the replica never held
    NOT_A_POINT = "not_a_point"  # a TXID inside a compacted file: no restore ends there
    GAP = "gap"  # TXIDs missing from the replica at or after the point's chain
    RETENTION_SHORT = "retention_short"
    BEHIND = "behind"  # the copy is earlier than the point
    AHEAD = "ahead"  # the copy holds changes after the point
    REFUSED = "refused"  # litestream did not restore the point
    NO_HISTORY = "no_history"  # the listing could not be read


class PointRequest(BaseModel):
    """What was asked: `--at`, `--txid`, or a point drillbook chooses."""

    kind: PointKind
    at: datetime | None = None
    txid: str | None = None

    def describe(self) -> str:
        if self.kind == PointKind.TXID:
            return f"TXID {self.txid}"
        if self.kind == PointKind.AT:
            return f"the point {iso(self.at)}"
        return f"the {self.kind.value} point" + (f" {iso(self.at)}" if self.at else "")


def parse_txid(value: str) -> str:
    """'1a2b' or '0000000000001a2b' -> '0000000000001a2b'; anything else is a ConfigError naming --txid."""
    text = value.strip().lower().removeprefix("0x")
    try:
        number = int(text, 16) if 0 < len(text) <= 16 else -1
    except ValueError:
        number = -1
    if number <= 0:
        raise ConfigError(f"--txid {value!r}: expected {TXID_HINT}", field="txid")
    return f"{number:016x}"


def parse_at(value: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, not in the future."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at {value!r}: expected {AT_HINT}", field="at") from None
    if moment.tzinfo is None:
        example = text + ("Z" if "T" in text or " " in text else "T00:00:00Z")
        raise ConfigError(f"--at {value!r}: give a time zone, e.g. {example} for UTC", field="at")
    moment = moment.astimezone(UTC)
    if moment > now:
        raise ConfigError(f"--at {iso(moment)} is in the future (now is {iso(now)}): give a point that has already happened", field="at")
    return moment


def point_request(at: str | None, txid: str | None, entry: DatabaseEntry, now: datetime) -> PointRequest | None:
    """The point a drill restores, from `--at` / `--txid` (None: the newest). Bad input is a ConfigError (exit 2)."""
    if at is not None and txid is not None:
        raise ConfigError("give --at or --txid, not both (litestream restores to one point)", field="at")
    if txid is not None:
        return PointRequest(kind=PointKind.TXID, txid=parse_txid(txid))
    if at is None:
        return None
    keyword = at.strip().lower()
    if keyword == PointKind.RANDOM and entry.restore_points is None:
        raise ConfigError(
            f'--at random: database {entry.name!r} has no restore_points; add restore_points = {{ random_within = "30d", every = "7d" }}',
            entry=entry.name,
            field="restore_points",
        )
    if keyword == PointKind.RETENTION and entry.retention_target is None:
        raise ConfigError(
            f'--at retention: database {entry.name!r} has no retention_target; add e.g. retention_target = "14d"',
            entry=entry.name,
            field="retention_target",
        )
    if keyword in KEYWORDS:
        return PointRequest(kind=PointKind(keyword))
    return PointRequest(kind=PointKind.AT, at=parse_at(at, now))


# -- the replica's timeline ---------------------------------------------------------------------------------------


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


def parse_listing(stdout: str) -> list[dict[str, Any]]:
    items = json.loads(stdout or "[]")
    if not isinstance(items, list):
        raise ValueError("not a JSON list")
    return items


def list_files(entry: DatabaseEntry, replica: ReplicaState) -> list[dict[str, Any]]:
    """The replica's LTX files: from the inspection's listing, or a fresh `litestream ltx` when that was cut short."""
    if replica.command is not None:
        try:
            return parse_listing(replica.command.stdout)
        except ValueError:
            pass  # the kept stdout is cut at 20,000 characters: list again
    command = run_litestream(["ltx", "-json", "-level", "all", entry.replica], timeout=entry.inspect_timeout)
    if not command.ok:
        raise OSError(f"`litestream ltx` failed (exit {command.exit_code}): {command.stderr_tail(300)}")
    return parse_listing(command.stdout)


_HEADER_PREFIX = 40  # magic, flags, page size, commit, min TXID, max TXID, timestamp: all a point needs of the header


def header_time(data: bytes) -> datetime:
    """When litestream wrote the file, from its header (one decoder: tasks/replica.py's, which the RPO check uses too)."""
    return parse_ltx_header(data).written_at


def ltx_name(low: int, high: int) -> str:
    return f"{low:016x}-{high:016x}.ltx"


def read_header_times(entry: DatabaseEntry, files: list[tuple[int, int, int]]) -> dict[tuple[int, int, int], datetime]:
    """The time in each file's LTX header (what litestream's -timestamp goes by), read with a 40-byte ranged GET."""
    parts = urlsplit(entry.replica)
    if parts.scheme == "s3":
        location = parse_s3_url(entry.replica)
        client = s3_client(location, timeout=entry.inspect_timeout)

        def read(key: tuple[int, int, int]) -> bytes:
            level, low, high = key
            path = f"{location.prefix}/{level:04x}/{ltx_name(low, high)}"
            return client.get_object(Bucket=location.bucket, Key=path, Range=f"bytes=0-{_HEADER_PREFIX - 1}")["Body"].read()
    else:
        root = Path(unquote(parts.path))

        def read(key: tuple[int, int, int]) -> bytes:
            level, low, high = key
            with open(root / "ltx" / str(level) / ltx_name(low, high), "rb") as handle:
                return handle.read(_HEADER_PREFIX)

    with ThreadPoolExecutor(max_workers=8) as pool:  # botocore keeps 10 connections per client
        return {key: header_time(data) for key, data in zip(files, pool.map(read, files))}


def read_timeline(entry: DatabaseEntry, replica: ReplicaState) -> tuple[Timeline, list[str]]:
    """The replica's files with their header times; notes say what could not be read precisely."""
    items = list_files(entry, replica)
    notes: list[str] = []
    listed = []
    for item in items:
        listed.append(
            (
                int(item["level"]),
                int(str(item["min_txid"]), 16),
                int(str(item["max_txid"]), 16),
                datetime.fromisoformat(str(item["timestamp"]).replace("Z", "+00:00")),
            )
        )
    keys = [(level, low, high) for level, low, high, _ in listed]
    try:
        times = read_header_times(entry, keys)
        header = True
    except Exception as exc:  # noqa: BLE001 - any read problem: fall back to the listing's (storage) times, and say so
        times, header = {}, False
        notes.append(f"LTX headers could not be read ({type(exc).__name__}); the listing's storage times are used instead")
    files = [
        PointFile(
            level=level,
            min_txid=low,
            max_txid=high,
            time=times.get((level, low, high), stamp).astimezone(UTC),
            listed=stamp.astimezone(UTC),
        )
        for level, low, high, stamp in listed
    ]
    return Timeline(files=files, header_times=header), notes


# -- choosing and planning the point ------------------------------------------------------------------------------


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


def slot_of(moment: datetime, every: float) -> datetime:
    """Slots are `every` long, anchored at the Unix epoch, so they stay put as the window slides."""
    stamp = moment.timestamp()
    return datetime.fromtimestamp(stamp - (stamp % every), UTC)


def proven_slots(summaries: Iterable[dict[str, Any]], every: float) -> dict[datetime, datetime]:
    """slot start -> when it was last proven restorable, from the history rows' summaries."""
    proven: dict[datetime, datetime] = {}
    for summary in summaries:
        point = summary.get("point") or {}
        if not point.get("proven") or not point.get("requested_at"):
            continue
        if (summary.get("phases") or {}).get("integrity", {}).get("status") != Status.PASSED.value:
            continue
        slot = slot_of(datetime.fromisoformat(point["requested_at"].replace("Z", "+00:00")), every)
        when = datetime.fromisoformat(summary["started_at"])
        if slot not in proven or proven[slot] < when:
            proven[slot] = when
    return proven


def choose_random_point(
    timeline: Timeline, window: float, every: float, summaries: Iterable[dict[str, Any]], now: datetime, rng: random.Random
) -> tuple[datetime, datetime, datetime] | None:
    """(point, its slot, the window's start): a random time in a slot never proven (else the one proven longest ago)."""
    start, end = timeline.restorable_from, timeline.restorable_until
    if start is None or end is None:
        return None
    window_start = now - timedelta(seconds=window)
    low, high = max(start, window_start), end
    if high <= low:
        return None
    proven = proven_slots(summaries, every)
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
    history: Iterable[dict[str, Any]] = (),
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
    if not timeline.header_times:
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
    usable = [f for f in timeline.files if f.time < moment]
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


def point_due(summaries: Iterable[dict[str, Any]], every: float, now: datetime) -> bool:
    """The nightly's cadence: a random-point drill when none ran in the last `every` (less a little slack for schedule jitter)."""
    slack = min(3600.0, every * 0.1)
    for summary in summaries:
        point = summary.get("point") or {}
        if point.get("kind") == PointKind.RANDOM.value:
            when = datetime.fromisoformat(summary["started_at"])
            if (now - when).total_seconds() < every - slack:
                return False
    return True


def coverage(summaries: Iterable[dict[str, Any]], window: float, every: float, now: datetime) -> list[dict[str, Any]]:
    """One row per slot of the window, oldest first: proven (when, by which drill), failed, or never drilled."""
    summaries = list(summaries)
    start = slot_of(now - timedelta(seconds=window), every)
    rows: dict[datetime, dict[str, Any]] = {}
    slot = start
    while slot <= now:
        rows[slot] = {
            "slot_start": slot,
            "slot_end": min(now, slot + timedelta(seconds=every)),
            "state": "not drilled",
            "drills": 0,
            "last": None,
            "point": None,
        }
        slot += timedelta(seconds=every)
    ordered = sorted(summaries, key=lambda s: s["started_at"])
    oldest = next((s["point"]["oldest_time"] for s in reversed(ordered) if (s.get("point") or {}).get("oldest_time")), None)
    if oldest is not None:  # the newest listing seen says nothing before this is restorable
        oldest_time = datetime.fromisoformat(oldest.replace("Z", "+00:00"))
        for row in rows.values():
            if row["slot_end"] <= oldest_time:
                row["state"], row["detail"] = "before oldest point", f"the oldest restorable point was {oldest}"
    for summary in ordered:
        point = summary.get("point") or {}
        if not point.get("requested_at"):
            continue
        slot = slot_of(datetime.fromisoformat(point["requested_at"].replace("Z", "+00:00")), every)
        if slot not in rows:
            continue
        row = rows[slot]
        row["drills"] += 1
        integrity_ok = (summary.get("phases") or {}).get("integrity", {}).get("status") == Status.PASSED.value
        ok = bool(point.get("proven")) and integrity_ok
        if ok or row["state"] != "proven":
            row["state"] = "proven" if ok else "failed"
            row["last"] = summary["started_at"]
            row["point"] = point["requested_at"]
            row["drill_id"] = summary.get("drill_id")
            row["detail"] = None if ok else (summary.get("failure_mode") or point.get("problem"))
    return list(rows.values())
