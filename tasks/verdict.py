"""Step 6: the verdict, a pure function of the step results and the targets.

RTO (measured) = restore + integrity + smoke: from "we start recovering" to
"the application works on the copy". RPO (measured) = drill start minus the
time litestream wrote the newest change the replica holds (its LTX header), or,
when the copy came back behind that position, the time of the position restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from drillbook.tasks.compat import CompatReport
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.expectations import ExpectationsReport
from drillbook.tasks.follow import FollowReport
from drillbook.tasks.freshness import FreshnessReport
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import ACTIONS, FailureMode, Finding, Phase, Status, Verdict
from drillbook.tasks.points import PointCheck, PointProblem
from drillbook.tasks.promote import PromoteReport
from drillbook.tasks.replica import CLOCK_SKEW_TOLERANCE, ReplicaProblem, ReplicaState, clock_skew
from drillbook.tasks.restore import RestoreProblem, RestoreResult
from drillbook.tasks.result import DrillResult, DrillSteps
from drillbook.tasks.smoke import SmokeReport
from drillbook.tasks.steps import StepResult
from drillbook.tasks.writers import WriterCheck

_REPLICA_MODES = {
    ReplicaProblem.EMPTY: FailureMode.NO_BACKUP,
    ReplicaProblem.MISSING: FailureMode.NO_BACKUP,
    ReplicaProblem.ACCESS_DENIED: FailureMode.OBJECT_STORAGE,
    ReplicaProblem.UNREACHABLE: FailureMode.OBJECT_STORAGE,
    ReplicaProblem.STORAGE_ERROR: FailureMode.OBJECT_STORAGE,
    ReplicaProblem.TIMEOUT: FailureMode.OBJECT_STORAGE,
    ReplicaProblem.DAMAGED: FailureMode.RESTORE_FAILURE,
}
_RESTORE_MODES = {
    RestoreProblem.TIMEOUT: FailureMode.RESTORE_LAG,
    RestoreProblem.STALLED: FailureMode.OBJECT_STORAGE,
}


class Position(BaseModel):
    """How a restored position compares with the one expected: a finding (behind), a note (ahead), or neither."""

    finding: Finding | None = None
    note: str | None = None


def compare_position(
    restored: str | None, expected: str | None, *, expected_what: str = "the newest TXID listed on the replica"
) -> Position:
    """Pure: the restored TXID against the expected one (the newest listed, or a point asked for).

    Behind is a restore failure naming both TXIDs: the copy is not the database we think it is.
    Ahead is fine (the replica moved on between listing and restore) and noted. Unknown on
    either side says nothing. TXIDs are litestream's 16-digit hex strings.
    """
    if not restored or not expected:
        return Position()
    have, want = int(restored, 16), int(expected, 16)
    if have < want:
        return Position(
            finding=Finding(
                mode=FailureMode.RESTORE_FAILURE,
                detail=f"restored TXID {restored} is behind {expected_what}, {expected} ({want - have} transaction(s) missing from the copy)",
            )
        )
    if have > want:
        return Position(note=f"restored TXID {restored} is ahead of {expected_what}, {expected}: the replica moved on during the drill")
    return Position()


class DrillContext(BaseModel):
    """What the verdict knows besides the steps: which drill, when, for which release, and how it ended."""

    drill_id: str
    started_at: datetime
    finished_at: datetime
    release: str | None = None
    release_lag: str | None = None  # a release drill's wait ended before the replica carried the release
    interrupted: str | None = None  # "SIGTERM": the drill did not finish, whatever the steps said
    clock_skew_tolerance: float = CLOCK_SKEW_TOLERANCE  # [drillbook] clock_skew_tolerance


def _phase(step: StepResult) -> Phase:
    return Phase(status=step.status, seconds=step.seconds, summary=step.summary)


MAX_CHECK_FINDINGS = 10  # failing checks listed one per finding; the evidence bundle keeps them all


def _listed(mode: FailureMode, details: list[str]) -> list[Finding]:
    shown = [Finding(mode=mode, detail=detail) for detail in details[:MAX_CHECK_FINDINGS]]
    if len(details) > MAX_CHECK_FINDINGS:
        shown.append(Finding(mode=mode, detail=f"and {len(details) - MAX_CHECK_FINDINGS} more failing (all in the evidence bundle)"))
    return shown


# One rule per phase: what its result says against the entry's targets, called only for a phase that ran.
# Each returns findings only; RTO, RPO and the position are judged in `judge`, where they need more than one step.
Rule = Callable[[Any, DatabaseEntry], Iterable[Finding]]


def _no_findings(step: StepResult, entry: DatabaseEntry) -> Iterable[Finding]:
    """Setup: its only outcome besides passing is an error, which `judge` reports for every phase."""
    return ()


def _replica_rule(replica: ReplicaState, entry: DatabaseEntry) -> Iterable[Finding]:
    if replica.status == Status.FAILED:
        yield Finding(mode=_REPLICA_MODES.get(replica.problem, FailureMode.OBJECT_STORAGE), detail=replica.summary)


def _point_rule(point: PointCheck, entry: DatabaseEntry) -> Iterable[Finding]:
    if point.status == Status.FAILED:
        short = point.problem == PointProblem.RETENTION_SHORT
        yield Finding(mode=FailureMode.RETENTION_SHORT if short else FailureMode.POINT_NOT_RESTORED, detail=point.summary)


def _restore_rule(restore: RestoreResult, entry: DatabaseEntry) -> Iterable[Finding]:
    if restore.status == Status.FAILED:
        yield Finding(mode=_RESTORE_MODES.get(restore.problem, FailureMode.RESTORE_FAILURE), detail=restore.summary)


def _integrity_rule(integrity: IntegrityReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if integrity.status != Status.FAILED:
        return
    if not integrity.intact:
        yield Finding(mode=FailureMode.INTEGRITY, detail=integrity.summary)
    if integrity.sidecar_problem:
        yield Finding(mode=FailureMode.SIDECAR, detail=integrity.sidecar_problem)
    if integrity.schema_problem:
        yield Finding(mode=FailureMode.SCHEMA, detail=integrity.schema_problem)


def _smoke_rule(smoke: SmokeReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if smoke.status == Status.FAILED:
        yield from _listed(FailureMode.SMOKE, [check.describe() for check in smoke.failures])


def _expectations_rule(report: ExpectationsReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if report.status == Status.FAILED:
        yield from _listed(FailureMode.EXPECTATIONS, [f"{r.suite}: {r.describe()}" for r in report.failures])


def _freshness_rule(freshness: FreshnessReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if freshness.status == Status.FAILED:
        yield Finding(mode=FailureMode.SCHEMA if freshness.copy_lacks else FailureMode.REPLICA_LAG, detail=freshness.summary)
    loss = freshness.data_loss_seconds
    if loss is not None and loss > entry.rpo_target:
        yield Finding(
            mode=FailureMode.REPLICA_LAG,
            detail=f"data-loss window (freshness_query) is {loss:.0f}s, over the {entry.rpo_target:g}s RPO target by {loss - entry.rpo_target:.0f}s",
        )


def _follow_rule(follow: FollowReport, entry: DatabaseEntry) -> Iterable[Finding]:
    """Replication stopped during the window (judged in the phase against rpo_target) is replica lag; what readers lacked, a stale read."""
    if follow.replica_lag:
        yield Finding(mode=FailureMode.REPLICA_LAG, detail=follow.replica_lag)
    if follow.status == Status.FAILED and (follow.stale_detail or not follow.replica_lag):
        yield Finding(mode=FailureMode.STALE_READ, detail=follow.stale_detail or follow.summary)


def _promote_rule(promote: PromoteReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if promote.status == Status.FAILED:
        yield Finding(mode=FailureMode.PROMOTION, detail=promote.summary)


def _compat_rule(compat: CompatReport, entry: DatabaseEntry) -> Iterable[Finding]:
    if compat.status == Status.FAILED:
        yield from _listed(FailureMode.RESTORE_TOOL, [row.describe() for row in compat.incompatible])


def _writers_rule(writers: WriterCheck, entry: DatabaseEntry) -> Iterable[Finding]:
    if writers.status == Status.FAILED:
        yield from _listed(FailureMode.WRITER_LEASE, [fork.detail for fork in writers.forks])


def _litefs_rule(step: StepResult, entry: DatabaseEntry) -> Iterable[Finding]:
    """A LiteFS phase judges itself where it measures (tasks/litefs/phases.py): its findings carry their actions."""
    return getattr(step, "findings", [])


STEP_RULES: dict[str, Rule] = {
    "setup": _no_findings,
    "replica": _replica_rule,
    "restore": _restore_rule,
    "integrity": _integrity_rule,
    "smoke": _smoke_rule,
    "expectations": _expectations_rule,
    "point": _point_rule,
    "freshness": _freshness_rule,
    "compat": _compat_rule,
    "writers": _writers_rule,
    "follow": _follow_rule,
    "promote": _promote_rule,
    "read_freshness": _litefs_rule,
    "primary_switch": _litefs_rule,
    "write_retry": _litefs_rule,
    "degraded": _litefs_rule,
}
# Judged after RTO and RPO: the data's own loss window is the second opinion on the header's RPO.
SECOND_OPINIONS = frozenset({"freshness"})


def _findings(steps: DrillSteps, entry: DatabaseEntry, *, second: bool) -> list[Finding]:
    """The rules of the phases that ran, in drill order (findings of one mode keep this order)."""
    return [
        finding for name, step in steps.ran().items() if (name in SECOND_OPINIONS) == second for finding in STEP_RULES[name](step, entry)
    ]


def _rto(steps: DrillSteps, entry: DatabaseEntry, findings: list[Finding]) -> float | None:
    """restore + integrity + smoke seconds; over the target is restore lag (unless a step already said so)."""
    if steps.restore.status == Status.SKIPPED:
        return None
    counted = (steps.restore, steps.integrity, steps.smoke)
    rto = round(sum(step.seconds for step in counted if step is not None and step.status != Status.SKIPPED), 3)
    if rto > entry.rto_target and not any(f.mode == FailureMode.RESTORE_LAG for f in findings):
        findings.append(
            Finding(
                mode=FailureMode.RESTORE_LAG,
                detail=f"measured RTO {rto:.1f}s is over the {entry.rto_target:g}s target by {rto - entry.rto_target:.1f}s",
            )
        )
    return rto


def _rpo(steps: DrillSteps, entry: DatabaseEntry, context: DrillContext, position: Position, findings: list[Finding]) -> float | None:
    """The age of the newest change we could get back; over the target is replica lag.

    A change written in the future (the primary's clock ahead of this host's by more than the tolerance) is clock
    skew: the RPO is unknown (None, never 0) and the drill FAILs as replica lag with both times in the detail.
    """
    replica, restore = steps.replica, steps.restore
    started_at, tolerance = context.started_at, context.clock_skew_tolerance
    written_at = replica.newest_time
    what = "newest change on the replica"
    if position.finding and restore.txid:  # what we could get back is what was restored, not what was listed
        written_at = replica.time_of(restore.txid)
        what = f"newest change in the restored copy (TXID {restore.txid})"
    skew = clock_skew(written_at, started_at, tolerance)
    if skew:
        findings.append(Finding(mode=FailureMode.REPLICA_LAG, detail=skew))
        return None
    rpo = max(0.0, round((started_at - written_at).total_seconds(), 3)) if written_at else None
    if rpo is not None and rpo > entry.rpo_target:
        findings.append(
            Finding(
                mode=FailureMode.REPLICA_LAG,
                detail=f"{what} is {rpo:.0f}s old, over the {entry.rpo_target:g}s target by {rpo - entry.rpo_target:.0f}s",
            )
        )
    return rpo


def judge(entry: DatabaseEntry, steps: DrillSteps, context: DrillContext) -> DrillResult:
    """PASS only when every step passed (or was skipped) and both measurements are inside their targets.

    Smoke seconds count in the RTO, expectations seconds are reported beside it. A release lag
    leads the findings as replica lag, since it explains what the copy lacks. A setup step is a
    phase when it did not pass. An interrupted drill is an ERROR whatever the steps said.
    """
    phases = steps.ran()
    errors = [f"interrupted by {context.interrupted}: the drill did not finish"] if context.interrupted else []
    errors += [f"{name}: {step.summary}" for name, step in phases.items() if step.status == Status.ERROR]
    findings = _findings(steps, entry, second=False)
    notes: list[str] = []

    restore, replica = steps.restore, steps.replica
    # A point-in-time drill is held to the point it asked for (its point phase), not to the newest listed TXID.
    position = compare_position(restore.txid, replica.newest_txid) if restore.ok and steps.point is None else Position()
    if position.finding:
        findings.append(position.finding)
    notes += [note for note in (position.note, replica.clocks_note) if note] + steps.phase_notes()
    rto = _rto(steps, entry, findings)
    rpo = _rpo(steps, entry, context, position, findings)
    seen = steps.follow.replication if steps.follow is not None else None  # the follower's window, measured against the primary
    if seen is not None and seen.rpo_max is not None and rpo is not None:
        rpo = max(rpo, seen.rpo_max)  # the worst seen during the drill, not only its first measurement
    loss = steps.freshness.data_loss_seconds if steps.freshness is not None else None
    if seen is not None and seen.data_loss_max is not None:
        loss = max(loss or 0.0, seen.data_loss_max)
    findings += _findings(steps, entry, second=True)

    order = list(FailureMode)
    findings.sort(key=lambda f: order.index(f.mode))
    if context.release_lag:
        findings.insert(0, Finding(mode=FailureMode.REPLICA_LAG, detail=context.release_lag))
    if errors:
        verdict, mode = Verdict.ERROR, FailureMode.DRILL_ERROR
        findings.insert(0, Finding(mode=mode, detail="; ".join(errors)))
    elif findings:
        verdict, mode = Verdict.FAIL, findings[0].mode
    else:
        verdict, mode = Verdict.PASS, None

    return DrillResult(
        drill_id=context.drill_id,
        database=entry.name,
        release=context.release,
        started_at=context.started_at,
        finished_at=context.finished_at,
        verdict=verdict,
        failure_mode=mode,
        action=(findings[0].action or ACTIONS[mode]) if mode else None,
        findings=findings,
        rto_seconds=rto,
        rto_target_seconds=entry.rto_target,
        rpo_seconds=rpo,
        rpo_target_seconds=entry.rpo_target,
        data_loss_seconds=loss,
        phases={name: _phase(step) for name, step in phases.items()},
        entry=entry.public(),
        notes=notes,
        **dict(steps),
    )
