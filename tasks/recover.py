"""When it is real: the newest restorable point of the replica whose copy passes the checks.

A drill that FAILs says "this backup is not good"; during an incident the question
is "then which one is?". The replica's restorable positions are the distinct max
TXIDs of its LTX files. Damage from a bad migration or a corrupting writer is
assumed to start at some TXID and stay ("clean up to a point, broken after"), so the
boundary is found by bisection: the newest point first, then O(log n) restores,
then one restore of the winner straight from litestream, checked again, which
becomes the copy at the operator's output path. Every copy tried is removed.
drillbook never promotes the copy: that is the operator's decision.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from uuid import uuid4

from pydantic import BaseModel, Field

from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.errors import LiveDatabaseGuard, RecoveryError
from drillbook.tasks.expectations import ExpectationsReport, expectations_dir, load_suites, run_expectations
from drillbook.tasks.integrity import check_integrity
from drillbook.tasks.ltx import LTX_LAYOUT
from drillbook.tasks.outcome import Status
from drillbook.tasks.points import Timeline, read_timeline
from drillbook.tasks.processes import interrupted
from drillbook.tasks.replica import ReplicaState, inspect_replica
from drillbook.tasks.restore import guard_live, is_within, make_scratch, restore_database
from drillbook.tasks.scratch import remove as remove_scratch
from drillbook.tasks.smoke import SmokeReport, run_smoke_tests
from drillbook.tasks.text import duration_text, iso, redact_url

CHECKS = ("integrity", "smoke", "expectations")  # integrity always runs; the others on request


class PointState(StrEnum):
    CLEAN = "clean"  # restored, and every check passed
    BROKEN = "broken"  # restored, and a check failed
    UNRESTORABLE = "unrestorable"  # litestream could not restore it


class PointTry(BaseModel):
    """One restorable point, restored into scratch and checked."""

    txid: str
    time: datetime | None = None
    state: PointState
    reason: str
    seconds: float
    sha256: str | None = None

    def line(self) -> str:
        return f"TXID {self.txid} ({iso(self.time)}): {self.state.value} - {self.reason} [{self.seconds:.2f}s]"


class Recovery(BaseModel):
    """The search, every point tried, and the winner (None: no clean point within the budget)."""

    database: str
    replica: str = Field(description="The replica URL, credentials redacted.")
    checks: list[str]
    points: int = Field(description="Restorable points the replica lists.")
    newest_txid: str
    newest_time: datetime | None = None
    oldest_txid: str
    tried: list[PointTry] = Field(default_factory=list)
    winner: PointTry | None = None
    output: str | None = None
    command: str | None = Field(default=None, description="The litestream command that reproduces the copy (URL redacted).")
    budget_seconds: float
    budget_spent: bool = False
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)

    @property
    def restores(self) -> int:
        """Restores run: every point tried, plus the winner's confirming restore."""
        return len(self.tried) + (1 if self.winner is not None else 0)

    def lost(self) -> tuple[int, float | None] | None:
        """What the winner loses against the newest point: (TXIDs, seconds)."""
        if self.winner is None:
            return None
        txids = int(self.newest_txid, 16) - int(self.winner.txid, 16)
        seconds = (self.newest_time - self.winner.time).total_seconds() if self.newest_time and self.winner.time else None
        return txids, seconds


def check_output(entry: DatabaseEntry, output: Path) -> Path:
    """The --output path, or RecoveryError: never the live database, never over an existing file, never inside a file replica."""
    output = output.expanduser().absolute()
    if output.exists() or output.is_symlink():
        raise RecoveryError(f"the output path already exists: {output}; drillbook never overwrites a file: choose another --output")
    if not output.parent.is_dir():
        raise RecoveryError(f"the output's directory does not exist: {output.parent}; create it or choose another --output")
    try:
        guard_live(entry, output)
    except LiveDatabaseGuard as exc:
        raise RecoveryError(f"{exc} --output must be a new file away from the live database") from None
    if entry.replica.startswith("file://"):
        replica_dir = Path(entry.replica.removeprefix("file://"))
        if is_within(output, replica_dir):
            raise RecoveryError(f"the output {output} is inside the replica {replica_dir}: drillbook never writes to a replica")
    return output


def restorable_points(timeline: Timeline) -> list[int]:
    """The distinct max TXIDs of the listed LTX files, oldest first (each one a position `restore -txid` can bring back)."""
    return sorted({f.max_txid for files in timeline.levels().values() for f in files})


def find_clean(
    entry: DatabaseEntry,
    catalogue: Catalogue,
    output: Path,
    *,
    checks: tuple[str, ...] = ("integrity",),
    budget: float = 1800.0,
    on_try: Callable[[str, PointTry | None], None] | None = None,
) -> Recovery:
    """Bisect the replica's points for the newest clean one and restore it to `output`; raise RecoveryError when drillbook cannot."""
    started = time.monotonic()
    output = check_output(entry, output)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise RecoveryError(f"unknown check(s) {', '.join(unknown)}: choose from {', '.join(CHECKS[1:])} (integrity always runs)")
    replica = inspect_replica(entry)
    if not replica.ok:
        raise RecoveryError(f"the replica of {entry.name!r} cannot be searched: {replica.summary}")
    if replica.layout != LTX_LAYOUT:
        raise RecoveryError(
            f"{entry.name!r} is a litestream 0.3 replica (no TXIDs): restore it by time by hand, `litestream restore -timestamp T -o PATH URL`"
        )
    timeline, notes = read_timeline(entry, replica.listing)
    points = restorable_points(timeline)
    if not points:
        raise RecoveryError(f"the replica of {entry.name!r} lists no restorable point ({replica.summary})")
    newest = timeline.file_ending(points[-1])
    recovery = Recovery(
        database=entry.name,
        replica=redact_url(entry.replica),
        checks=["integrity", *[c for c in CHECKS[1:] if c in checks]],
        points=len(points),
        newest_txid=f"{points[-1]:016x}",
        newest_time=newest.time if newest else None,
        oldest_txid=f"{points[0]:016x}",
        budget_seconds=budget,
        notes=notes,
    )
    suites = load_suites(entry, expectations_dir(catalogue)) if "expectations" in checks else []
    say = on_try or (lambda _txid, _try: None)

    def probe(index: int) -> PointTry:
        if stop := interrupted():  # SIGTERM / Ctrl-C: no further restore starts, and drillbook says so (exit 2, not "none found")
            raise RecoveryError(f"interrupted by {stop} after {len(recovery.tried)} restore(s); nothing was written to {output}")
        txid = points[index]
        say(f"{txid:016x}", None)
        tried = try_point(entry, catalogue, replica, txid, timeline, recovery.checks, suites)
        recovery.tried.append(tried)
        say(tried.txid, tried)
        return tried

    def out_of_time() -> bool:
        recovery.budget_spent = time.monotonic() - started > budget
        return recovery.budget_spent

    # Invariant: points[hi] is known not clean (or is past the end); points[lo] is known clean (or lo = -1).
    best: PointTry | None = None
    first = probe(len(points) - 1)
    if first.state == PointState.CLEAN:
        best = first
    else:
        lo, hi = -1, len(points) - 1
        while hi - lo > 1 and not out_of_time():
            mid = (lo + hi) // 2
            tried = probe(mid)
            if tried.state == PointState.CLEAN:
                lo, best = mid, tried
            else:
                hi = mid
        if hi - lo > 1 and best is not None:
            recovery.notes.append(
                f"the budget ({duration_text(budget)}) ran out before the boundary was found: a newer clean point may lie "
                f"between TXID {points[lo]:016x} and TXID {points[hi]:016x}"
            )
    if best is not None and not interrupted():
        confirm(entry, catalogue, replica, timeline, suites, best, output, recovery)
    if stop := interrupted():
        output.unlink(missing_ok=True)
        raise RecoveryError(f"interrupted by {stop} after {len(recovery.tried)} restore(s); nothing was written to {output}")
    recovery.seconds = round(time.monotonic() - started, 3)
    return recovery


def try_point(
    entry: DatabaseEntry,
    catalogue: Catalogue,
    replica: ReplicaState,
    txid: int,
    timeline: Timeline,
    checks: list[str],
    suites: list,
    keep: Path | None = None,
) -> PointTry:
    """Restore `txid` into a scratch directory of its own, check the copy, remove the scratch (move the copy to `keep` first, if given)."""
    started = time.monotonic()
    ending = timeline.file_ending(txid)
    scratch = make_scratch(catalogue.scratch_dir, entry, f"recover-{uuid4().hex[:8]}")
    try:
        restore = restore_database(entry, replica, scratch, ["-txid", f"{txid:016x}"])
        state, reason, digest = _judge_copy(entry, restore.path if restore.ok else None, restore.summary, checks, suites)
        if keep is not None and state == PointState.CLEAN and restore.path:
            shutil.move(restore.path, keep)
    finally:
        remove_scratch(scratch)  # and its owner file (tasks/scratch.py)
    seconds = round(time.monotonic() - started, 3)
    return PointTry(txid=f"{txid:016x}", time=ending.time if ending else None, state=state, reason=reason, seconds=seconds, sha256=digest)


def _judge_copy(
    entry: DatabaseEntry, path: str | None, restored: str, checks: list[str], suites: list
) -> tuple[PointState, str, str | None]:
    if path is None:
        return PointState.UNRESTORABLE, restored, None
    integrity = check_integrity(path, schema_query=entry.schema_version_query)
    if not integrity.intact:
        detail = integrity.open_error or (
            f"integrity_check: {integrity.integrity_problems} problem(s), first: {integrity.integrity_rows[0]}"
            if integrity.integrity_problems
            else f"foreign_key_check: {integrity.foreign_key_problems} problem(s)"
            if integrity.foreign_key_problems
            else "the file size is not page_size x page_count"
        )
        return PointState.BROKEN, detail, integrity.sha256
    passed = ["integrity ok"]
    if "smoke" in checks:
        smoke: SmokeReport = run_smoke_tests(path, entry)
        if smoke.status not in (Status.PASSED, Status.SKIPPED):
            return PointState.BROKEN, f"smoke: {smoke.summary}", integrity.sha256
        passed.append(f"smoke: {smoke.summary}")
    if "expectations" in checks:
        if not suites:
            passed.append("expectations: no suites configured")
        else:
            report: ExpectationsReport = run_expectations(path, suites)
            if report.status != Status.PASSED:
                return PointState.BROKEN, f"expectations: {report.summary}", integrity.sha256
            passed.append(f"expectations: {report.summary}")
    return PointState.CLEAN, "; ".join(passed), integrity.sha256


def confirm(
    entry: DatabaseEntry,
    catalogue: Catalogue,
    replica: ReplicaState,
    timeline: Timeline,
    suites: list,
    best: PointTry,
    output: Path,
    recovery: Recovery,
) -> None:
    """Restore the winner once more, check it again, and move it to `output` (the restore a person reproduces with `command`)."""
    final = try_point(entry, catalogue, replica, int(best.txid, 16), timeline, recovery.checks, suites, keep=output)
    if final.state != PointState.CLEAN or not output.exists():
        recovery.notes.append(f"the confirming restore of TXID {best.txid} did not come back clean ({final.reason}); nothing was written")
        return
    if best.sha256 and final.sha256 and best.sha256 != final.sha256:
        recovery.notes.append(f"the confirming restore's copy differs from the probe's (sha256 {final.sha256[:12]} vs {best.sha256[:12]})")
    recovery.winner = best
    recovery.output = str(output)
    recovery.command = shlex.join(["litestream", "restore", "-txid", best.txid, "-o", str(output), redact_url(entry.replica)])


def render_recovery(recovery: Recovery) -> list[str]:
    """The session as a person reads it: every point tried, the winner, what it loses, how to reproduce it (or what to try next)."""
    lines = [
        f"{recovery.database}: {recovery.points} restorable point(s) on {recovery.replica}, "
        f"TXID {recovery.oldest_txid} - {recovery.newest_txid}; checks: {', '.join(recovery.checks)}",
    ]
    lines += [f"  tried {t.line()}" for t in recovery.tried]
    if recovery.winner is not None:
        txids, seconds = recovery.lost()
        lines += [
            f"newest clean point: TXID {recovery.winner.txid} written at {iso(recovery.winner.time)}",
            f"  loses {txids} TXID(s) and {duration_text(seconds)} of changes against the newest point "
            f"(TXID {recovery.newest_txid} at {iso(recovery.newest_time)})",
            f"  copy: {recovery.output} (restored again and checked; drillbook does not promote it)",
            f"  reproduce: {recovery.command}",
        ]
    else:
        oldest = min(recovery.tried, key=lambda t: int(t.txid, 16)) if recovery.tried else None
        how_far = f"back to TXID {oldest.txid} ({iso(oldest.time)})" if oldest else "no point at all"
        why = f"the budget of {duration_text(recovery.budget_seconds)} ran out" if recovery.budget_spent else "every point tried is broken"
        lines += [
            f"no clean point found: {why}; looked {how_far}, the oldest restorable point is TXID {recovery.oldest_txid}",
            "  next: run `PRAGMA integrity_check` on the primary (it may be intact), raise --budget, drop --checks to integrity only "
            "to tell data damage from page damage, or try an older replica / backup (restore_points retention)",
        ]
    lines += [f"note: {n}" for n in recovery.notes]
    lines.append(f"{recovery.restores} restore(s) in {duration_text(recovery.seconds)}")
    return lines
