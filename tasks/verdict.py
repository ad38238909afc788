"""Step 6: the verdict, a pure function of the step results and the targets.

RTO (measured) = restore + integrity + smoke: from "we start recovering" to
"the application works on the copy". RPO (measured) = drill start minus the
time litestream wrote the newest change the replica holds (its LTX header), or,
when the copy came back behind that position, the time of the position restored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.expectations import ExpectationsReport
from drillbook.tasks.forecast import Outlook
from drillbook.tasks.freshness import FreshnessReport
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.plan import RestorePlan
from drillbook.tasks.points import PointCheck, PointProblem
from drillbook.tasks.replica import ReplicaProblem, ReplicaState
from drillbook.tasks.restore import RestoreProblem, RestoreResult
from drillbook.tasks.smoke import SmokeReport
from drillbook.tasks.steps import Status, StepResult


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"


EXIT_CODES = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ERROR: 2}
_WORST_FIRST = (Verdict.FAIL, Verdict.ERROR, Verdict.PASS)


def exit_code_for(verdicts: Iterable[Verdict | str]) -> int:
    """The contract for many drills: 2 if any ERROR (or none ran), else 1 if any FAIL, else 0."""
    seen = {Verdict(v) for v in verdicts}
    if not seen or Verdict.ERROR in seen:
        return EXIT_CODES[Verdict.ERROR]
    return EXIT_CODES[Verdict.FAIL] if Verdict.FAIL in seen else EXIT_CODES[Verdict.PASS]


def tally(verdicts: Iterable[Verdict | str], *, empty: str = "no drills") -> str:
    """'1 FAIL, 1 ERROR, 3 PASS': worst first, zero counts left out."""
    counts = Counter(Verdict(v) for v in verdicts)
    return ", ".join(f"{counts[v]} {v.value}" for v in _WORST_FIRST if counts[v]) or empty


class FailureMode(StrEnum):
    """Names from the operator's vocabulary (domain.md), most fundamental first."""

    DRILL_ERROR = "drill error"
    NO_BACKUP = "no backup"
    OBJECT_STORAGE = "object storage failure"
    RETENTION_SHORT = "retention window short"
    POINT_NOT_RESTORED = "point not restorable"
    RESTORE_FAILURE = "restore failure"
    SIDECAR = "sidecar file mismatch"  # before integrity: a -wal beside the copy explains what integrity sees
    INTEGRITY = "integrity failure"
    SCHEMA = "schema mismatch"
    SMOKE = "smoke test"
    EXPECTATIONS = "data expectations"
    RESTORE_LAG = "restore lag"
    REPLICA_LAG = "replica lag"


ACTIONS: dict[FailureMode, str] = {
    FailureMode.DRILL_ERROR: "Fix what the drill reports (installation, configuration, scratch disk), then run the drill again.",
    FailureMode.NO_BACKUP: "There is nothing to restore: start `litestream replicate` for this database and confirm the replica URL.",
    FailureMode.OBJECT_STORAGE: "Check the endpoint, bucket and credentials; switch credentials or destination and re-send.",
    FailureMode.RETENTION_SHORT: "Retention or compaction removed what the retention target needs: raise litestream's snapshot retention "
    "(snapshot.retention) to at least the target, check bucket lifecycle rules, and keep the oldest snapshot until it is replaced.",
    FailureMode.POINT_NOT_RESTORED: "The requested point cannot be restored as asked: list the replica with `litestream ltx -level all`, "
    "look for missing TXIDs (deleted files) and restore the nearest listed point; keep this copy for comparison.",
    FailureMode.RESTORE_FAILURE: "Keep litestream's stderr; list the replica with `litestream ltx` and restore an earlier -txid to find the last good point.",
    FailureMode.INTEGRITY: "Keep the restored copy for triage; run PRAGMA integrity_check on the primary and restore an earlier point to compare.",
    FailureMode.SIDECAR: "Go back to the backup API / the official restore path; never copy a database file without its sidecars.",
    FailureMode.SCHEMA: "The replica does not carry the expected migration: check replication after the deploy and hold the release.",
    FailureMode.SMOKE: "The application does not work on the restored copy: fix the failing check before relying on this backup.",
    FailureMode.EXPECTATIONS: "The restored data breaks its expectations: check the last migration and the data before relying on this backup.",
    FailureMode.RESTORE_LAG: "Trigger a snapshot / compaction to shrink the LTX backlog and rehearse the restore; if restores keep exceeding the RTO, plan a server database.",
    FailureMode.REPLICA_LAG: "Replication is behind (RPO growing): check litestream on the primary, its credentials and network; lower the write rate.",
}

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


class Phase(BaseModel):
    status: Status
    seconds: float
    summary: str = ""


class Finding(BaseModel):
    mode: FailureMode
    detail: str


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


class DrillResult(BaseModel):
    """Everything a drill found; the evidence bundle is this, as JSON."""

    drill_id: str
    database: str
    release: str | None = None
    started_at: datetime
    finished_at: datetime
    verdict: Verdict
    failure_mode: FailureMode | None = None
    action: str | None = None
    findings: list[Finding] = Field(default_factory=list)
    rto_seconds: float | None = None
    rto_target_seconds: float
    rpo_seconds: float | None = None
    rpo_target_seconds: float
    phases: dict[str, Phase] = Field(default_factory=dict)
    entry: dict[str, Any] = Field(default_factory=dict, description="The catalogue entry, secrets redacted.")
    replica: ReplicaState | None = None
    restore: RestoreResult | None = None
    integrity: IntegrityReport | None = None
    smoke: SmokeReport | None = None
    expectations: ExpectationsReport | None = None
    point: PointCheck | None = Field(default=None, description="Point-in-time drills: what was asked, expected and restored.")
    freshness: FreshnessReport | None = Field(default=None, description="RPO from the data (freshness_query): live newest vs copy newest.")
    evidence: str | None = Field(default=None, description="Path of the evidence bundle, once written.")
    scratch_kept: str | None = Field(default=None, description="Restored copy kept for triage (failed drills).")
    flow_run_url: str | None = None
    notes: list[str] = Field(default_factory=list)
    # Set by the flow around the verdict, never by it: a forecast or advice never changes a verdict.
    plan: RestorePlan | None = Field(default=None, description="litestream's dry-run restore plan and the RTO it predicted.")
    outlook: Outlook | None = Field(default=None, description="RTO forecast from this database's history, no-go advice.")
    versions: dict[str, str] = Field(default_factory=dict, description="drillbook and litestream versions.")

    @property
    def passed(self) -> bool:
        return self.verdict == Verdict.PASS

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def short_id(self) -> str:
        """The drill id's first 8 characters, where people read it (the full id is the key everywhere else)."""
        return self.drill_id[:8]

    def summary(self) -> dict[str, Any]:
        """The stable, machine-readable core (`drillbook run --json`)."""
        return {
            "database": self.database,
            "drill_id": self.drill_id,
            "release": self.release,
            "verdict": self.verdict.value,
            "failure_mode": self.failure_mode.value if self.failure_mode else None,
            "action": self.action,
            "findings": [f.model_dump(mode="json") for f in self.findings],
            "rto_seconds": self.rto_seconds,
            "rto_target_seconds": self.rto_target_seconds,
            "rpo_seconds": self.rpo_seconds,
            "rpo_target_seconds": self.rpo_target_seconds,
            "phases": {name: phase.model_dump(mode="json") for name, phase in self.phases.items()},
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "evidence": self.evidence,
            "scratch_kept": self.scratch_kept,
            "notes": list(self.notes),
            "point": self.point.record() if self.point else None,
            "data_loss_seconds": self.freshness.data_loss_seconds if self.freshness else None,
        }


def _phase(step: StepResult) -> Phase:
    return Phase(status=step.status, seconds=step.seconds, summary=step.summary)


MAX_CHECK_FINDINGS = 10  # failing checks listed one per finding; the evidence bundle keeps them all


def _listed(mode: FailureMode, details: list[str]) -> list[Finding]:
    shown = [Finding(mode=mode, detail=detail) for detail in details[:MAX_CHECK_FINDINGS]]
    if len(details) > MAX_CHECK_FINDINGS:
        shown.append(Finding(mode=mode, detail=f"and {len(details) - MAX_CHECK_FINDINGS} more failing (all in the evidence bundle)"))
    return shown


def judge(
    entry: DatabaseEntry,
    *,
    drill_id: str,
    started_at: datetime,
    finished_at: datetime,
    replica: ReplicaState,
    restore: RestoreResult,
    integrity: IntegrityReport,
    release: str | None = None,
    smoke: SmokeReport | None = None,
    expectations: ExpectationsReport | None = None,
    release_lag: str | None = None,
    point: PointCheck | None = None,
    freshness: FreshnessReport | None = None,
    setup: StepResult | None = None,
    interrupted: str | None = None,
) -> DrillResult:
    """PASS only when every step passed (or was skipped) and both measurements are inside their targets.

    `smoke` and `expectations` are phases only when given; smoke seconds count in the RTO, expectations
    seconds are reported beside it. `release_lag` says the replica did not carry the release within
    the wait: it leads the findings as replica lag, since it explains what the copy lacks.
    `setup` (scratch and evidence directories) is a phase when it did not pass. `interrupted`
    (e.g. "SIGTERM") makes the drill an ERROR whatever the steps said: it did not finish.
    """
    steps: dict[str, StepResult] = {}
    if setup is not None and setup.status != Status.PASSED:
        steps["setup"] = setup
    steps.update({"replica": replica, "restore": restore, "integrity": integrity})
    if smoke is not None:
        steps["smoke"] = smoke
    if expectations is not None:
        steps["expectations"] = expectations
    if point is not None:
        steps["point"] = point
    if freshness is not None:
        steps["freshness"] = freshness
    findings: list[Finding] = []
    errors: list[str] = [f"interrupted by {interrupted}: the drill did not finish"] if interrupted else []
    notes: list[str] = []

    for name, step in steps.items():
        if step.status == Status.ERROR:
            errors.append(f"{name}: {step.summary}")

    if replica.status == Status.FAILED:
        findings.append(Finding(mode=_REPLICA_MODES.get(replica.problem, FailureMode.OBJECT_STORAGE), detail=replica.summary))
    if point is not None and point.status == Status.FAILED:
        short = point.problem == PointProblem.RETENTION_SHORT
        findings.append(Finding(mode=FailureMode.RETENTION_SHORT if short else FailureMode.POINT_NOT_RESTORED, detail=point.summary))
    if restore.status == Status.FAILED:
        findings.append(Finding(mode=_RESTORE_MODES.get(restore.problem, FailureMode.RESTORE_FAILURE), detail=restore.summary))
    # A point-in-time drill is held to the point it asked for (its point phase), not to the newest listed TXID.
    position = compare_position(restore.txid, replica.newest_txid) if restore.ok and point is None else Position()
    if position.finding:
        findings.append(position.finding)
    if position.note:
        notes.append(position.note)
    if replica.clocks_note:
        notes.append(replica.clocks_note)
    if integrity.status == Status.FAILED:
        if not integrity.intact:
            findings.append(Finding(mode=FailureMode.INTEGRITY, detail=integrity.summary))
        if integrity.sidecar_problem:
            findings.append(Finding(mode=FailureMode.SIDECAR, detail=integrity.sidecar_problem))
        if integrity.schema_problem:
            findings.append(Finding(mode=FailureMode.SCHEMA, detail=integrity.schema_problem))
    if smoke is not None and smoke.status == Status.FAILED:
        findings.extend(_listed(FailureMode.SMOKE, [check.describe() for check in smoke.failures]))
    if expectations is not None and expectations.status == Status.FAILED:
        findings.extend(_listed(FailureMode.EXPECTATIONS, [f"{r.suite}: {r.describe()}" for r in expectations.failures]))

    rto = None
    if restore.status != Status.SKIPPED:
        rto = round(sum(step.seconds for step in (restore, integrity, smoke) if step is not None and step.status != Status.SKIPPED), 3)
        if rto > entry.rto_target and not any(f.mode == FailureMode.RESTORE_LAG for f in findings):
            findings.append(
                Finding(
                    mode=FailureMode.RESTORE_LAG,
                    detail=f"measured RTO {rto:.1f}s is over the {entry.rto_target:g}s target by {rto - entry.rto_target:.1f}s",
                )
            )
    rpo = replica.lag_seconds(started_at)
    what = "newest change on the replica"
    if position.finding and restore.txid:  # what we could get back is what was restored, not what was listed
        restored_at = replica.time_of(restore.txid)
        rpo = max(0.0, round((started_at - restored_at).total_seconds(), 3)) if restored_at else None
        what = f"newest change in the restored copy (TXID {restore.txid})"
    if rpo is not None and rpo > entry.rpo_target:
        findings.append(
            Finding(
                mode=FailureMode.REPLICA_LAG,
                detail=f"{what} is {rpo:.0f}s old, over the {entry.rpo_target:g}s target by {rpo - entry.rpo_target:.0f}s",
            )
        )

    if freshness is not None and freshness.status == Status.FAILED:
        findings.append(Finding(mode=FailureMode.REPLICA_LAG, detail=freshness.summary))
    if freshness is not None and freshness.data_loss_seconds is not None and freshness.data_loss_seconds > entry.rpo_target:
        loss = freshness.data_loss_seconds
        findings.append(
            Finding(
                mode=FailureMode.REPLICA_LAG,
                detail=f"data-loss window (freshness_query) is {loss:.0f}s, over the {entry.rpo_target:g}s RPO target by {loss - entry.rpo_target:.0f}s",
            )
        )

    order = list(FailureMode)
    findings.sort(key=lambda f: order.index(f.mode))
    if release_lag:
        findings.insert(0, Finding(mode=FailureMode.REPLICA_LAG, detail=release_lag))
    if errors:
        verdict, mode = Verdict.ERROR, FailureMode.DRILL_ERROR
        findings.insert(0, Finding(mode=mode, detail="; ".join(errors)))
    elif findings:
        verdict, mode = Verdict.FAIL, findings[0].mode
    else:
        verdict, mode = Verdict.PASS, None

    return DrillResult(
        drill_id=drill_id,
        database=entry.name,
        release=release,
        started_at=started_at,
        finished_at=finished_at,
        verdict=verdict,
        failure_mode=mode,
        action=ACTIONS[mode] if mode else None,
        findings=findings,
        rto_seconds=rto,
        rto_target_seconds=entry.rto_target,
        rpo_seconds=rpo,
        rpo_target_seconds=entry.rpo_target,
        phases={name: _phase(step) for name, step in steps.items()},
        entry=entry.public(),
        replica=replica,
        restore=restore,
        integrity=integrity,
        smoke=smoke,
        expectations=expectations,
        point=point,
        freshness=freshness,
        notes=notes,
    )
