"""The read-replica drill: a follower (`litestream restore -f`) from the replica into scratch, sampled once a second.

Staleness of a read on the follower = the replica's newest change as litestream
wrote it (the newest LTX header's time) minus the newest change the follower's
data holds (`freshness_query`, run read-only on a connection opened and closed
for each sample: a held reader stalls the follower, see below). Both are the
primary's clocks, so this host's clock does not enter. A follower already at the
replica's newest TXID reads 0: what it lacks then is the replica's own lag, the
RPO. p50 / p95 / max over the window; a p95 over `freshness_target` is a stale read.

litestream 0.5.17's follower writes pages into the file under an exclusive
POSIX lock taken with a blocking F_SETLKW (internal/lock_unix.go): while any
reader holds a SHARED lock (an open read transaction; in WAL mode, as the
restored file says until the first change is applied, any open connection),
the follower waits, applies nothing, and holds the PENDING byte, so fresh
readers get "database is locked". With `hold_reader`, the window's second half
has a reader process hold a read transaction open; a follower that stays at one
TXID while the replica moves on is a stale read naming that reader.

The follower leads a process group of its own (tasks/runner.py): stopped with
SIGTERM, then SIGKILL, and gone when the step returns, whatever happened.
"""

from __future__ import annotations

import math
import random
import sqlite3
import sys
import time
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.config.replicas import FollowSettings
from drillbook.tasks.errors import LiveDatabaseGuard, ToolMissing
from drillbook.tasks.follow_probe import HOLDER_SCRIPT, holder_env, lock_holders
from drillbook.tasks.freshness import FreshnessValueError, as_time
from drillbook.tasks.litestream import find_litestream, litestream_env
from drillbook.tasks.litestream_config import restore_source
from drillbook.tasks.ltx import LEGACY_LAYOUT, LTX_HEADER_BYTES, ltx_files, newest_file, parse_ltx_header
from drillbook.tasks.outcome import Status
from drillbook.tasks.processes import interrupted
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import guard_live
from drillbook.tasks.runner import Child, CommandRecord, started
from drillbook.tasks.steps import StepResult
from drillbook.tasks.storage import StorageError, StorageProblem, open_storage

SAMPLE_EVERY = 1.0  # seconds between samples
READ_BUSY = 0.2  # seconds a sample waits for a lock before it counts as "database is locked"
READ_TIMEOUT = 2.0  # seconds a sample's query may run
STOP_GRACE = 5.0  # seconds the follower has to stop on SIGTERM before its group is killed
CATCH_UP_WAIT = 5.0  # seconds after the held reader lets go, to see the follower move again
SAMPLES_KEPT = 600  # timeline entries kept in the evidence
_jitter = random.Random()


class FollowProblem(StrEnum):
    STALE = "stale"  # p95 staleness over the target
    STALLED = "stalled"  # the follower stopped applying while a reader held the file
    EXITED = "exited"  # the follower exited (or never got going)
    UNREADABLE = "unreadable"  # no sample could be read


class Sample(BaseModel):
    at: float = Field(description="Seconds into the window.")
    replica_txid: str | None = None
    follower_txid: str | None = None
    staleness: float | None = None
    held: bool = False
    error: str | None = None


class HeldReader(BaseModel):
    """The held-reader probe: a reader process with a read transaction open on the follower for the window's second half."""

    pid: int | None = None
    statement: str = ""
    held_seconds: float = 0.0
    txid_at_hold: str | None = None
    txid_at_release: str | None = None
    replica_txid_at_release: str | None = None
    stalled_seconds: float = Field(default=0.0, description="Longest stretch with the follower at one TXID while the replica was ahead.")
    locked_reads: int = Field(default=0, description="Fresh samples refused with 'database is locked' meanwhile.")
    holders: list[str] = Field(default_factory=list, description="Processes holding a lock on the follower's file (/proc/locks).")
    caught_up_seconds: float | None = Field(default=None, description="After the reader let go: seconds until the follower moved again.")
    stalled: bool = False


class FollowReport(StepResult):
    """What the follower did over the window."""

    window_seconds: float = 0.0
    freshness_target: float | None = None
    samples: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    unreadable: int = 0
    path: str | None = Field(default=None, description="The follower's database file (in scratch).")
    restore_seconds: float | None = Field(default=None, description="The follower's initial restore.")
    follower_txid: str | None = None
    replica_txid: str | None = None
    held: HeldReader | None = None
    problem: FollowProblem | None = None
    command: CommandRecord | None = None
    timeline: list[Sample] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def record(self) -> dict:
        """The figures the history keeps (the run's summary)."""
        return {
            "status": self.status.value,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "samples": self.samples,
            "target": self.freshness_target,
            "stalled_seconds": self.held.stalled_seconds if self.held else None,
            "problem": self.problem.value if self.problem else None,
        }


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
        self.storage = open_storage(entry.replica, timeout=min(entry.inspect_timeout, 15.0))
        self.prefix = level0_prefix(entry.replica)
        self._headers: dict[str, datetime] = {}

    def newest(self) -> tuple[str, datetime]:
        files = ltx_files(self.storage.list(self.prefix)) or ltx_files(self.storage.list())
        if not files:
            raise StorageError(StorageProblem.STORAGE_ERROR, "the replica lists no LTX files")
        newest = newest_file(files)
        if newest.key not in self._headers:
            self._headers[newest.key] = parse_ltx_header(self.storage.read(newest.key, 0, LTX_HEADER_BYTES)).written_at
        return newest.max_txid, self._headers[newest.key]


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


def _last_line(child: Child) -> str:
    lines = [line for line in (child.stderr or child.stdout).strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def follow_replica(entry: DatabaseEntry, replica: ReplicaState, scratch: Path) -> FollowReport:
    """Run the follower for `entry.follow.seconds` in scratch/follow and judge its staleness (and the held-reader probe)."""
    settings = entry.follow
    if settings is None:
        return FollowReport.skipped("no follow drill configured")
    if replica.layout == LEGACY_LAYOUT:
        return FollowReport.skipped("not run: litestream's follow mode does not read litestream 0.3 replicas")
    began = time.monotonic()
    directory = scratch / "follow"
    output = directory / f"{entry.name}.db"
    report = FollowReport(window_seconds=settings.seconds, freshness_target=settings.freshness_target, path=str(output))
    try:
        directory.mkdir(mode=0o700)
        guard_live(entry, directory, output)
        source = restore_source(entry.replica, directory, entry.name)
        argv = [find_litestream(), "restore", "-f", "-follow-interval", f"{settings.interval:g}s", "-o", str(output), *source]
        watch = ReplicaWatch(entry)
    except (LiveDatabaseGuard, ToolMissing) as exc:
        return _done(report, began, Status.ERROR, str(exc))
    except OSError as exc:
        return _done(report, began, Status.ERROR, f"cannot prepare the follower's directory {directory}: {exc.strerror or exc}")
    try:
        with started(argv, env=litestream_env(), grace=STOP_GRACE) as child:
            _run(entry, settings, child, output, watch, report)
    except OSError as exc:
        return _done(report, began, Status.ERROR, f"cannot start the follower ({argv[0]}): {exc.strerror or exc}")
    report.command = child.completed().record
    if child.group_left:
        report.notes.append(f"the follower's process group {child.pid} was still there after SIGKILL")
    if interrupted():
        return _done(report, began, Status.ERROR, f"interrupted by {interrupted()}: the follower was stopped")
    if report.problem == FollowProblem.EXITED:
        report.summary = f"{report.summary}: {_last_line(child)}"
        return _done(report, began, Status.FAILED, report.summary)
    return _done(report, began, *_judge(entry, settings, report))


def _done(report: FollowReport, began: float, status: Status, summary: str) -> FollowReport:
    report.status, report.summary = status, summary
    report.seconds = round(time.monotonic() - began, 3)
    return report


def _run(entry: DatabaseEntry, settings: FollowSettings, child: Child, output: Path, watch: ReplicaWatch, report: FollowReport) -> None:
    """Wait for the initial restore, then sample for the window (second half with the held reader, when asked)."""
    deadline = time.monotonic() + entry.restore_timeout
    start = time.monotonic()
    while follower_txid(output) is None:
        code = child.exit_code()
        if code is not None:
            report.problem = FollowProblem.EXITED
            report.summary = f"the follower exited {code} after {time.monotonic() - start:.1f}s, before its first restore finished"
            return
        if time.monotonic() > deadline:
            report.problem = FollowProblem.EXITED
            report.summary = f"the follower's first restore did not finish within {entry.restore_timeout:g}s"
            return
        time.sleep(0.05)
    report.restore_seconds = round(time.monotonic() - start, 3)
    window_start = time.monotonic()
    half = settings.seconds / 2 if settings.hold_reader else settings.seconds
    _sample(entry, child, output, watch, report, window_start, window_start + half, held=False)
    if settings.hold_reader and report.problem is None:
        _hold(entry, settings, child, output, watch, report, window_start)


def _sample(
    entry: DatabaseEntry, child: Child, output: Path, watch: ReplicaWatch, report: FollowReport, origin: float, until: float, *, held: bool
) -> list[Sample]:
    """One sample a second until `until`; the follower exiting ends it (problem EXITED)."""
    sql = entry.freshness_query or ""
    taken: list[Sample] = []
    slot = time.monotonic()
    while slot < until:
        # once a second, at a random point of it: a sample locked in step with the follower's own 1 s poll would always
        # land just after (or just before) it applies, where a user's read lands anywhere
        time.sleep(max(0.0, slot + _jitter.uniform(0.0, SAMPLE_EVERY) - time.monotonic()))
        slot += SAMPLE_EVERY
        code = child.exit_code()
        if code is not None:
            report.problem = FollowProblem.EXITED
            report.summary = f"the follower exited {code} {time.monotonic() - origin:.1f}s into the window"
            return taken
        sample = Sample(at=round(time.monotonic() - origin, 3), held=held)
        try:
            sample.replica_txid, written_at = watch.newest()  # the replica first: a follower ahead of the listing reads as 0
        except (StorageError, ValueError) as exc:
            sample.error = f"replica: {exc}"
            written_at = None
        sample.follower_txid = follower_txid(output)  # before the read: the read holds at least this TXID
        value, error = read_follower(output, sql)
        caught_up = sample.follower_txid and sample.replica_txid and int(sample.follower_txid, 16) >= int(sample.replica_txid, 16)
        if error is not None:
            sample.error = error
        elif caught_up:
            sample.staleness = 0.0  # it holds all the replica holds: the rest is the replica's own lag (the RPO)
        elif value is not None and written_at is not None:
            try:
                sample.staleness = round(max(0.0, (written_at - as_time(value)).total_seconds()), 3)
            except FreshnessValueError as exc:
                sample.error = f"freshness_query {exc}"
        taken.append(sample)
        if len(report.timeline) < SAMPLES_KEPT:
            report.timeline.append(sample)
    return taken


def _hold(
    entry: DatabaseEntry, settings: FollowSettings, child: Child, output: Path, watch: ReplicaWatch, report: FollowReport, origin: float
) -> None:
    """The window's second half with a reader process holding a read transaction on the follower's file."""
    marker = output.parent / "reader.held"
    statement = f"BEGIN; {entry.freshness_query}"
    probe = HeldReader(statement=statement, txid_at_hold=follower_txid(output))
    report.held = probe
    argv = [sys.executable, "-I", "-c", HOLDER_SCRIPT, str(output), entry.freshness_query or "", str(marker)]
    end = origin + settings.seconds
    with started(argv, env=holder_env()) as reader:
        probe.pid = reader.pid
        ready = time.monotonic() + 10.0
        while not marker.exists() and reader.exit_code() is None and time.monotonic() < ready:
            time.sleep(0.02)
        if not marker.exists():
            report.notes.append(
                f"the held reader did not get its read transaction: {_last_line(reader) if reader.exit_code() is not None else 'no answer'}"
            )
            return
        held_from = time.monotonic()
        probe.txid_at_hold = follower_txid(output)
        samples = _sample(entry, child, output, watch, report, origin, end, held=True)
        probe.holders = lock_holders(output)
        probe.held_seconds = round(time.monotonic() - held_from, 3)
    probe.txid_at_release = follower_txid(output)
    probe.replica_txid_at_release = samples[-1].replica_txid if samples else None
    probe.locked_reads = sum(1 for s in samples if s.error and "locked" in s.error)
    probe.stalled_seconds = _longest_stall(samples)
    probe.stalled = probe.stalled_seconds >= max(3.0, 3 * settings.interval)
    if probe.stalled and report.problem is None:  # does it move again once the reader has gone?
        let_go = time.monotonic()
        while time.monotonic() - let_go < CATCH_UP_WAIT and child.exit_code() is None:
            if follower_txid(output) != probe.txid_at_release:
                probe.caught_up_seconds = round(time.monotonic() - let_go, 3)
                break
            time.sleep(0.1)


def _longest_stall(samples: list[Sample]) -> float:
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


def _judge(entry: DatabaseEntry, settings: FollowSettings, report: FollowReport) -> tuple[Status, str]:
    """PASSED, or FAILED (stale or stalled), or ERROR (the query cannot be read on the follower at all)."""
    free = [s for s in report.timeline if not s.held]
    measured = [s.staleness for s in free if s.staleness is not None]
    report.samples = len(measured)
    report.unreadable = sum(1 for s in free if s.error)
    report.p50, report.p95, report.max = percentile(measured, 0.5), percentile(measured, 0.95), max(measured, default=None)
    if report.timeline:
        report.follower_txid, report.replica_txid = report.timeline[-1].follower_txid, report.timeline[-1].replica_txid
    if report.problem == FollowProblem.EXITED:
        return Status.FAILED, report.summary
    if not measured:
        report.problem = FollowProblem.UNREADABLE
        errors = [s.error for s in free if s.error]
        return (
            Status.ERROR,
            f"database {entry.name!r}: no staleness sample could be taken on the follower ({errors[-1] if errors else 'no samples'})",
        )
    figures = (
        f"staleness p50 {report.p50:.2f}s, p95 {report.p95:.2f}s, max {report.max:.2f}s over {report.samples} samples "
        f"(target {settings.freshness_target:g}s)"
    )
    problems = []
    if report.p95 is not None and report.p95 > settings.freshness_target:
        report.problem = FollowProblem.STALE
        problems.append(f"the follower's reads are stale: {figures}")
    held = report.held
    if held is not None and held.stalled:
        report.problem = report.problem or FollowProblem.STALLED
        holders = f"; /proc/locks names {', '.join(held.holders)}" if held.holders else ""
        after = (
            f"; it moved again {held.caught_up_seconds:.1f}s after the reader let go"
            if held.caught_up_seconds is not None
            else "; it had not moved 5s after the reader let go"
        )
        problems.append(
            f"the follower stayed at TXID {held.txid_at_hold} for {held.stalled_seconds:.0f}s while the replica moved on to "
            f"{held.replica_txid_at_release}: a reader holding a read transaction on the follower's file {report.path} "
            f"(pid {held.pid}: {held.statement} kept open{holders}) blocks litestream's exclusive lock; "
            f"{held.locked_reads} fresh read(s) got 'database is locked'{after}"
        )
    elif held is not None and held.pid is not None and not _replica_moved(report):
        report.notes.append("the replica did not move while the reader was held: whether the follower keeps applying was not measured")
    if len({s.replica_txid for s in report.timeline if s.replica_txid}) == 1:
        report.notes.append(
            f"the replica did not move during the {settings.seconds:g}s window (TXID {report.replica_txid}): the follower had nothing "
            "to apply; whether the primary is idle or its litestream stopped is the RPO's question (a follower says nothing either way)"
        )
    if problems:
        return Status.FAILED, "; ".join(problems)
    said = f"follower within target: {figures}"
    if held is not None and held.pid is not None and _replica_moved(report):
        said += f"; it kept applying while a reader held a read transaction for {held.held_seconds:.0f}s"
    return Status.PASSED, said


def _replica_moved(report: FollowReport) -> bool:
    held = [s.replica_txid for s in report.timeline if s.held and s.replica_txid]
    return len(set(held)) > 1
