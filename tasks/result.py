"""What a drill found: the steps' results as one model, and the DrillResult the evidence bundle is.

The step modules define their own result models (values, no behaviour beyond
describing themselves); this module gathers them. It never imports the steps'
functions, and no step imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel, Field, model_validator

from drillbook.tasks.compat import CompatReport
from drillbook.tasks.expectations import ExpectationsReport
from drillbook.tasks.follow import FollowReport
from drillbook.tasks.forecast import Outlook
from drillbook.tasks.freshness import FreshnessReport
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.litefs.phases import DegradedMode, PrimarySwitch, ReadFreshness, WriteRetry
from drillbook.tasks.outcome import EXIT_CODES, FailureMode, Finding, Phase, Status, Verdict
from drillbook.tasks.plan import RestorePlan
from drillbook.tasks.points import PointCheck
from drillbook.tasks.promote import PromoteReport
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.smoke import SmokeReport
from drillbook.tasks.steps import StepResult
from drillbook.tasks.writers import WriterCheck


class PhaseResults(BaseModel):
    """Each phase's result, declared once, in drill order: the drill's phases are these fields (PHASES).

    A phase that did not run is None (or skipped). A new phase is a field here, a rule in
    verdict.py's STEP_RULES and one `run.step` call in flows/drill.py; the renderers read
    the phases generically (tests/test_phases.py fails when one of them does not).
    DrillSteps (what the verdict reads) and DrillResult (the evidence bundle) both carry them.
    """

    setup: StepResult | None = Field(default=None, exclude=True)  # a phase only when it did not pass; not in the bundle
    replica: ReplicaState | None = None
    restore: RestoreResult | None = None
    integrity: IntegrityReport | None = None
    smoke: SmokeReport | None = None
    expectations: ExpectationsReport | None = None
    point: PointCheck | None = Field(default=None, description="Point-in-time drills: what was asked, expected and restored.")
    freshness: FreshnessReport | None = Field(default=None, description="RPO from the data (freshness_query): live newest vs copy newest.")
    compat: CompatReport | None = Field(default=None, description="restore_with: other litestream versions against the pinned copy.")
    writers: WriterCheck | None = Field(default=None, description="The replica's L0 history read for a second writer.")
    follow: FollowReport | None = Field(default=None, description="Read-replica drill: the follower's staleness and the held-reader probe.")
    promote: PromoteReport | None = Field(default=None, description="Promotion drill: writes on the promoted copy and the failover RTO.")
    read_freshness: ReadFreshness | None = Field(default=None, description="LiteFS: the replicas' staleness against the primary.")
    primary_switch: PrimarySwitch | None = Field(default=None, description="LiteFS: the primary stopped, a candidate promoted.")
    write_retry: WriteRetry | None = Field(default=None, description="LiteFS: the writes sent while the primary changed hands.")
    degraded: DegradedMode | None = Field(default=None, description="LiteFS: reads and writes with no primary.")

    def ran(self) -> dict[str, StepResult]:
        """The phases that ran, in drill order: setup only when it did not pass."""
        out: dict[str, StepResult] = {}
        for name in PHASES:
            step = getattr(self, name)
            if step is not None and not (name == "setup" and step.status == Status.PASSED):
                out[name] = step
        return out

    def phase_notes(self) -> list[str]:
        """What the phases noted beside their status, in drill order (a passed setup's too: a killed drill's scratch reclaimed)."""
        setup = [self.setup] if self.setup is not None and self.setup.status == Status.PASSED else []
        return [note for step in [*setup, *self.ran().values()] for note in getattr(step, "notes", ())]


PHASES: tuple[str, ...] = tuple(PhaseResults.model_fields)
ALWAYS = ("replica", "restore", "integrity")  # every drill that reaches the verdict has these (skipped, when they could not run)


def phase_kind(name: str) -> type[StepResult]:
    """The result model of a phase, for a phase that crashed or was skipped."""
    annotation = PhaseResults.model_fields[name].annotation
    return next(t for t in get_args(annotation) if isinstance(t, type) and issubclass(t, StepResult))


class DrillSteps(PhaseResults):
    """Every phase's result, as the verdict reads them."""

    @model_validator(mode="after")
    def _drilled(self) -> DrillSteps:
        missing = [name for name in ALWAYS if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a drill's steps need a result for {', '.join(missing)}")
        return self


class DrillHeader(BaseModel):
    """The verdict and its measurements: the evidence bundle's first fields."""

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
    data_loss_seconds: float | None = Field(
        default=None,
        description="Worst data-loss window seen (freshness_query at the copy, and the follower's window against the primary).",
    )
    phases: dict[str, Phase] = Field(default_factory=dict)
    entry: dict[str, Any] = Field(default_factory=dict, description="The catalogue entry, secrets redacted.")


class DrillResult(PhaseResults, DrillHeader):
    """Everything a drill found; the evidence bundle is this, as JSON: the header, each phase's result, then the rest."""

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
            "data_loss_seconds": self.data_loss_seconds,
            "follow": self.follow.record() if self.follow else None,
            "promote": self.promote.record() if self.promote else None,
            "compat": self.compat.matrix() if self.compat and self.compat.rows else None,
            # What the two-writer check learned of the WAL lineage, for the next drill (lineage.py): kept in the history.
            "writer_lineage": self.writers.lineage_record() if self.writers and self.writers.lineage else None,
        }
