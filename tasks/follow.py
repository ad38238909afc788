"""The read-replica drill: a follower (`litestream restore -f`) from the replica into scratch, sampled once a second.

Staleness of a read on the follower = the live primary's newest change minus the
newest change the follower's data holds, both by `freshness_query` (the data's
own clock), read within milliseconds of each other (tasks/follow_reads.py): what
a reader of the follower lacks, whether the follower lags or the replica is no
longer fed. Where the primary cannot be read on this machine, the staleness is
the replica's newest change as litestream wrote it (the newest LTX header's time)
minus the follower's newest, a follower at the replica's newest TXID reading 0,
and the report says it was measured against the replica only, and why. p50 / p95
/ max over the window; a p95 over `freshness_target` is a stale read. The same
samples show replication stopping during the window (the replica staying behind
while the primary commits on): named with the moment, as replica lag judged
against `rpo_target`; the worst RPO and data-loss window seen go to the verdict.

The follower is read on a connection opened and closed for each sample: a held
reader stalls it. litestream 0.5.17's follower writes pages into the file under an exclusive
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

import random
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.config.replicas import FollowSettings
from drillbook.tasks.errors import LiveDatabaseGuard, ToolMissing
from drillbook.tasks.follow_probe import HOLDER_SCRIPT, holder_env, lock_holders
from drillbook.tasks.follow_reads import (
    STOPPED_AFTER,
    PrimaryReader,
    Replication,
    ReplicaWatch,
    Sample,
    follower_txid,
    longest_stall,
    percentile,
    primary_reader,
    read_follower,
    replication_seen,
)
from drillbook.tasks.freshness import FreshnessValueError, as_time
from drillbook.tasks.litestream import find_litestream, litestream_env
from drillbook.tasks.litestream_config import restore_source
from drillbook.tasks.ltx import LEGACY_LAYOUT
from drillbook.tasks.outcome import Status
from drillbook.tasks.processes import interrupted
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import guard_live
from drillbook.tasks.runner import Child, CommandRecord, started
from drillbook.tasks.steps import StepResult
from drillbook.tasks.storage import StorageError

SAMPLE_EVERY = 1.0  # seconds between samples
STOP_GRACE = 5.0  # seconds the follower has to stop on SIGTERM before its group is killed
CATCH_UP_WAIT = 5.0  # seconds after the held reader lets go, to see the follower move again
SAMPLES_KEPT = 600  # timeline entries kept in the evidence
_jitter = random.Random()


class FollowProblem(StrEnum):
    STALE = "stale"  # p95 staleness over the target
    STALLED = "stalled"  # the follower stopped applying while a reader held the file
    EXITED = "exited"  # the follower exited (or never got going)
    UNREADABLE = "unreadable"  # no sample could be read


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
    measured_against: str = Field(default="replica", description="'primary' (live_path read here) or 'replica' (its newest LTX header).")
    replication: Replication | None = Field(default=None, description="Against the primary: a stop during the window, worst figures.")
    replica_lag: str | None = Field(default=None, description="Replication stopped (or behind) past rpo_target: the finding.")
    stale_detail: str | None = Field(default=None, description="What readers of the follower lacked: the stale-read finding.")
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
            "measured_against": self.measured_against,
            "replica_stopped_at": _stamp(self.replication.stopped_at) if self.replication else None,
            "rpo_max": self.replication.rpo_max if self.replication else None,
            "data_loss_max": self.replication.data_loss_max if self.replication else None,
        }


def _stamp(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z" if moment else None


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
        primary, why_not = primary_reader(entry)
    except (LiveDatabaseGuard, ToolMissing) as exc:
        return _done(report, began, Status.ERROR, str(exc))
    except OSError as exc:
        return _done(report, began, Status.ERROR, f"cannot prepare the follower's directory {directory}: {exc.strerror or exc}")
    try:
        with started(argv, env=litestream_env(), grace=STOP_GRACE) as child:
            if primary is None:
                report.notes.append(f"staleness measured against the replica only (its newest LTX header), not the primary: {why_not}")
            else:
                report.measured_against = "primary"
            _run(entry, settings, child, output, watch, primary, report)
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


def _run(
    entry: DatabaseEntry,
    settings: FollowSettings,
    child: Child,
    output: Path,
    watch: ReplicaWatch,
    primary: PrimaryReader | None,
    report: FollowReport,
) -> None:
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
    _sample(entry, child, output, (watch, primary), report, window_start, window_start + half, held=False)
    if settings.hold_reader and report.problem is None:
        _hold(entry, settings, child, output, (watch, primary), report, window_start)


Sources = tuple[ReplicaWatch, PrimaryReader | None]


def _sample(
    entry: DatabaseEntry, child: Child, output: Path, sources: Sources, report: FollowReport, origin: float, until: float, *, held: bool
) -> list[Sample]:
    """One sample a second until `until`; the follower exiting ends it (problem EXITED)."""
    watch, primary = sources
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
        sample = Sample(at=round(time.monotonic() - origin, 3), checked_at=datetime.now(UTC), held=held)
        try:
            sample.replica_txid, sample.replica_written_at = watch.newest()  # the replica first: a follower ahead of it reads as 0
        except (StorageError, ValueError) as exc:
            sample.error = f"replica: {exc}"
        sample.follower_txid = follower_txid(output)  # before the read: the read holds at least this TXID
        value, error = read_follower(output, sql)
        if primary is not None:  # at once after the follower: the primary's newest at the same moment
            sample.primary_newest, sample.primary_error = primary.newest()
        if error is not None:
            sample.error = error
        else:
            _measure(sample, value)
        taken.append(sample)
        if len(report.timeline) < SAMPLES_KEPT:
            report.timeline.append(sample)
    return taken


def _measure(sample: Sample, value: object) -> None:
    """The sample's staleness: to the primary when it was read, else to the replica (0 once the follower holds its newest TXID)."""
    try:
        sample.follower_newest = as_time(value) if value is not None else None
    except FreshnessValueError as exc:
        sample.error = f"freshness_query {exc}"
        return
    if sample.primary_newest is not None and sample.follower_newest is not None:
        sample.staleness = round(max(0.0, (sample.primary_newest - sample.follower_newest).total_seconds()), 3)
        return
    if sample.primary_error is not None:
        return  # the primary is measured, but not at this sample: a replica figure here would mix two measures
    caught_up = sample.follower_txid and sample.replica_txid and int(sample.follower_txid, 16) >= int(sample.replica_txid, 16)
    if caught_up:
        sample.staleness = 0.0  # it holds all the replica holds: the rest is the replica's own lag (the RPO)
    elif sample.follower_newest is not None and sample.replica_written_at is not None:
        sample.staleness = round(max(0.0, (sample.replica_written_at - sample.follower_newest).total_seconds()), 3)


def _hold(
    entry: DatabaseEntry, settings: FollowSettings, child: Child, output: Path, sources: Sources, report: FollowReport, origin: float
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
        samples = _sample(entry, child, output, sources, report, origin, end, held=True)
        probe.holders = lock_holders(output)
        probe.held_seconds = round(time.monotonic() - held_from, 3)
    probe.txid_at_release = follower_txid(output)
    probe.replica_txid_at_release = samples[-1].replica_txid if samples else None
    probe.locked_reads = sum(1 for s in samples if s.error and "locked" in s.error)
    probe.stalled_seconds = longest_stall(samples)
    probe.stalled = probe.stalled_seconds >= max(3.0, 3 * settings.interval)
    if probe.stalled and report.problem is None:  # does it move again once the reader has gone?
        let_go = time.monotonic()
        while time.monotonic() - let_go < CATCH_UP_WAIT and child.exit_code() is None:
            if follower_txid(output) != probe.txid_at_release:
                probe.caught_up_seconds = round(time.monotonic() - let_go, 3)
                break
            time.sleep(0.1)


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
    against = "the primary" if report.measured_against == "primary" else "the replica only"
    figures = (
        f"staleness p50 {report.p50:.2f}s, p95 {report.p95:.2f}s, max {report.max:.2f}s over {report.samples} samples "
        f"(target {settings.freshness_target:g}s), measured against {against}"
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
    report.stale_detail = "; ".join(problems) or None
    if report.measured_against == "primary":
        _judge_replication(entry, settings, report)
    elif len({s.replica_txid for s in report.timeline if s.replica_txid}) == 1:
        report.notes.append(
            f"the replica did not move during the {settings.seconds:g}s window (TXID {report.replica_txid}): the follower had nothing "
            "to apply; whether the primary is idle or its litestream stopped is the RPO's question (a follower says nothing either way)"
        )
    if report.replica_lag:
        problems.insert(0, report.replica_lag)
    if problems:
        return Status.FAILED, "; ".join(problems)
    said = f"follower within target: {figures}"
    if held is not None and held.pid is not None and _replica_moved(report):
        said += f"; it kept applying while a reader held a read transaction for {held.held_seconds:.0f}s"
    return Status.PASSED, said


def _judge_replication(entry: DatabaseEntry, settings: FollowSettings, report: FollowReport) -> None:
    """Against the primary: replication stopped (or behind) during the window is replica lag past rpo_target; idle is neither."""
    seen = report.replication = replication_seen(report.timeline)
    if not seen.primary_moved and not seen.behind_max:
        report.notes.append(
            f"the primary committed nothing during the {settings.seconds:g}s window (idle): nothing stale, nothing to replicate"
        )
        return
    rpo = f"RPO up to {seen.rpo_max:.1f}s, data-loss window up to {seen.data_loss_max or 0:.1f}s" if seen.rpo_max is not None else ""
    if seen.stopped_at is not None:
        state = "it moved again within the window" if seen.resumed else "it had not moved again at the window's end"
        said = (
            f"replication stopped at {_stamp(seen.stopped_at)}: the replica stayed at TXID {seen.stopped_txid} while the primary "
            f"committed on, up to {seen.behind_max:.1f}s ahead of it (more than {STOPPED_AFTER:g}s: litestream on the primary "
            f"is not shipping); {state}; {rpo}"
        )
    elif seen.rpo_max is not None and seen.rpo_max > entry.rpo_target:
        said = f"the replica fell up to {seen.behind_max:.1f}s behind the primary during the window; {rpo}"
    else:
        return
    if seen.rpo_max is not None and seen.rpo_max > entry.rpo_target:
        report.replica_lag = f"{said}, over the {entry.rpo_target:g}s RPO target by {seen.rpo_max - entry.rpo_target:.1f}s"
    else:
        report.notes.append(f"{said}, within the {entry.rpo_target:g}s RPO target")


def _replica_moved(report: FollowReport) -> bool:
    held = [s.replica_txid for s in report.timeline if s.held and s.replica_txid]
    return len(set(held)) > 1
