"""Step 6: the verdict, a pure function of the step results and the targets.

RTO (measured) = restore + integrity + smoke: from "we start recovering" to
"the application works on the copy". RPO (measured) = drill start minus the
time litestream wrote the newest change the replica holds (its LTX header), or,
when the copy came back behind that position, the time of the position restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from pydantic import BaseModel

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.outcome import (  # re-exported: the verdict's vocabulary
    ACTIONS,
    EXIT_CODES,
    FailureMode,
    Finding,
    Phase,
    Status,
    Verdict,
    exit_code_for,
    tally,
)
from drillbook.tasks.points import PointProblem
from drillbook.tasks.replica import CLOCK_SKEW_TOLERANCE, ReplicaProblem, clock_skew
from drillbook.tasks.restore import RestoreProblem
from drillbook.tasks.result import DrillResult, DrillSteps
from drillbook.tasks.steps import StepResult

__all__ = [
    "ACTIONS",
    "EXIT_CODES",
    "DrillContext",
    "DrillResult",
    "DrillSteps",
    "FailureMode",
    "Finding",
    "Phase",
    "Verdict",
    "compare_position",
    "exit_code_for",
    "judge",
    "tally",
]


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


# One rule per step: what its result says against the entry's targets. Each returns findings only;
# RTO, RPO and the position are judged below, where they need more than one step.
def _replica_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    if steps.replica.status == Status.FAILED:
        yield Finding(mode=_REPLICA_MODES.get(steps.replica.problem, FailureMode.OBJECT_STORAGE), detail=steps.replica.summary)


def _point_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    point = steps.point
    if point is not None and point.status == Status.FAILED:
        short = point.problem == PointProblem.RETENTION_SHORT
        yield Finding(mode=FailureMode.RETENTION_SHORT if short else FailureMode.POINT_NOT_RESTORED, detail=point.summary)


def _restore_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    if steps.restore.status == Status.FAILED:
        yield Finding(mode=_RESTORE_MODES.get(steps.restore.problem, FailureMode.RESTORE_FAILURE), detail=steps.restore.summary)


def _integrity_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    integrity = steps.integrity
    if integrity.status != Status.FAILED:
        return
    if not integrity.intact:
        yield Finding(mode=FailureMode.INTEGRITY, detail=integrity.summary)
    if integrity.sidecar_problem:
        yield Finding(mode=FailureMode.SIDECAR, detail=integrity.sidecar_problem)
    if integrity.schema_problem:
        yield Finding(mode=FailureMode.SCHEMA, detail=integrity.schema_problem)


def _smoke_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    if steps.smoke is not None and steps.smoke.status == Status.FAILED:
        yield from _listed(FailureMode.SMOKE, [check.describe() for check in steps.smoke.failures])


def _expectations_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    report = steps.expectations
    if report is not None and report.status == Status.FAILED:
        yield from _listed(FailureMode.EXPECTATIONS, [f"{r.suite}: {r.describe()}" for r in report.failures])


def _freshness_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    freshness = steps.freshness
    if freshness is None:
        return
    if freshness.status == Status.FAILED:
        yield Finding(mode=FailureMode.SCHEMA if freshness.copy_lacks else FailureMode.REPLICA_LAG, detail=freshness.summary)
    loss = freshness.data_loss_seconds
    if loss is not None and loss > entry.rpo_target:
        yield Finding(
            mode=FailureMode.REPLICA_LAG,
            detail=f"data-loss window (freshness_query) is {loss:.0f}s, over the {entry.rpo_target:g}s RPO target by {loss - entry.rpo_target:.0f}s",
        )


def _follow_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    if steps.follow is not None and steps.follow.status == Status.FAILED:
        yield Finding(mode=FailureMode.STALE_READ, detail=steps.follow.summary)


def _promote_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    if steps.promote is not None and steps.promote.status == Status.FAILED:
        yield Finding(mode=FailureMode.PROMOTION, detail=steps.promote.summary)


def _compat_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    compat = steps.compat
    if compat is not None and compat.status == Status.FAILED:
        yield from _listed(FailureMode.RESTORE_TOOL, [row.describe() for row in compat.incompatible])


def _writers_rule(steps: DrillSteps, entry: DatabaseEntry) -> Iterable[Finding]:
    writers = steps.writers
    if writers is not None and writers.status == Status.FAILED:
        yield from _listed(FailureMode.WRITER_LEASE, [fork.detail for fork in writers.forks])


STEP_RULES: tuple[Callable[[DrillSteps, DatabaseEntry], Iterable[Finding]], ...] = (
    _replica_rule,
    _writers_rule,
    _point_rule,
    _restore_rule,
    _integrity_rule,
    _smoke_rule,
    _expectations_rule,
    _follow_rule,
    _promote_rule,
    _compat_rule,
    _freshness_rule,  # after the RPO judged from the header: the data's own loss window is the second opinion
)


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
    phases = steps.phases()
    errors = [f"interrupted by {context.interrupted}: the drill did not finish"] if context.interrupted else []
    errors += [f"{name}: {step.summary}" for name, step in phases.items() if step.status == Status.ERROR]
    findings = [finding for rule in STEP_RULES[:-1] for finding in rule(steps, entry)]
    notes: list[str] = []

    restore, replica = steps.restore, steps.replica
    # A point-in-time drill is held to the point it asked for (its point phase), not to the newest listed TXID.
    position = compare_position(restore.txid, replica.newest_txid) if restore.ok and steps.point is None else Position()
    if position.finding:
        findings.append(position.finding)
    notes += [note for note in (position.note, replica.clocks_note, *replica.notes) if note]
    rto = _rto(steps, entry, findings)
    rpo = _rpo(steps, entry, context, position, findings)
    findings += STEP_RULES[-1](steps, entry)

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
        action=ACTIONS[mode] if mode else None,
        findings=findings,
        rto_seconds=rto,
        rto_target_seconds=entry.rto_target,
        rpo_seconds=rpo,
        rpo_target_seconds=entry.rpo_target,
        phases={name: _phase(step) for name, step in phases.items()},
        entry=entry.public(),
        notes=notes,
        **{
            name: getattr(steps, name)
            for name in (
                "replica",
                "restore",
                "integrity",
                "smoke",
                "expectations",
                "point",
                "freshness",
                "compat",
                "writers",
                "follow",
                "promote",
            )
        },
    )
