"""What a drill found: the steps' results as one model, and the DrillResult the evidence bundle is.

The step modules define their own result models (values, no behaviour beyond
describing themselves); this module gathers them. It never imports the steps'
functions, and no step imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel, Field

from drillbook.tasks.compat import CompatReport
from drillbook.tasks.expectations import ExpectationsReport
from drillbook.tasks.follow import FollowReport
from drillbook.tasks.freshness import FreshnessReport
from drillbook.tasks.history.forecast import Outlook
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import EXIT_CODES, FailureMode, Finding, Phase, Verdict
from drillbook.tasks.plan import RestorePlan
from drillbook.tasks.points import PointCheck
from drillbook.tasks.promote import PromoteReport
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.smoke import SmokeReport
from drillbook.tasks.steps import Status, StepResult
from drillbook.tasks.writers import WriterCheck


class DrillSteps(BaseModel):
    """Every phase's result, in drill order: the one declaration of the drill's phases.

    A step that did not run is None (or skipped). A new phase is a field here, a rule in
    verdict.py's STEP_RULES and one `run.step` call in flows/drill.py; the renderers read
    the phases generically (tests/test_phases.py fails when one of them does not).
    """

    setup: StepResult | None = None
    replica: ReplicaState
    restore: RestoreResult
    integrity: IntegrityReport
    smoke: SmokeReport | None = None
    expectations: ExpectationsReport | None = None
    point: PointCheck | None = None
    freshness: FreshnessReport | None = None
    compat: CompatReport | None = None  # the restore-tool compatibility matrix (restore_with)
    writers: WriterCheck | None = None  # two writers on one replica: the L0 history forks
    follow: FollowReport | None = None  # the read-replica drill, when configured
    promote: PromoteReport | None = None  # the promotion drill, when configured

    def phases(self) -> dict[str, StepResult]:
        """The steps that count as phases, in drill order: setup only when it did not pass."""
        out: dict[str, StepResult] = {}
        for name in PHASES:
            step = getattr(self, name)
            if step is not None and not (name == "setup" and step.status == Status.PASSED):
                out[name] = step
        return out

    def notes(self) -> list[str]:
        """What the phases noted beside their status, in drill order."""
        return [note for step in self.phases().values() for note in getattr(step, "notes", ())]


PHASES: tuple[str, ...] = tuple(DrillSteps.model_fields)


def phase_kind(name: str) -> type[StepResult]:
    """The result model of a phase (DrillSteps' field), for a phase that crashed or was skipped."""
    annotation = DrillSteps.model_fields[name].annotation
    return next(t for t in (*get_args(annotation), annotation) if isinstance(t, type) and issubclass(t, StepResult))


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
    follow: FollowReport | None = Field(default=None, description="Read-replica drill: the follower's staleness and the held-reader probe.")
    promote: PromoteReport | None = Field(default=None, description="Promotion drill: writes on the promoted copy and the failover RTO.")
    compat: CompatReport | None = Field(default=None, description="restore_with: other litestream versions against the pinned copy.")
    writers: WriterCheck | None = Field(default=None, description="The replica's L0 history read for a second writer.")
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
            "follow": self.follow.record() if self.follow else None,
            "promote": self.promote.record() if self.promote else None,
            "compat": self.compat.matrix() if self.compat and self.compat.rows else None,
        }
