"""The LiteFS drill's four results, each judged against the entry's targets where it is measured.

    read_freshness   the replicas' positions against the primary's while the writer writes: p50 / p95 / max staleness
    primary_switch   the primary stopped, a candidate promoted: failover RTO, acknowledged writes kept, the old primary fenced
    write_retry      the writes sent while the primary changed hands: retried into success, or failed with an error to retry on
    degraded         with no primary: replicas serving reads, a write failing fast, how long the cluster was read-only

Each result carries its findings (outcome.Finding, with the action that fits a
LiteFS cluster); verdict.py's rules hand them on. Staleness of a replica at a
moment is how long the primary has held a transaction the replica does not:
0 while it is at the primary's TXID (an idle primary is never stale), else the
time since the primary first showed a TXID beyond the replica's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

from pydantic import BaseModel, Field

from drillbook.tasks.outcome import FailureMode, Finding, Status
from drillbook.tasks.steps import StepResult

STALE_ACTION = (
    "A LiteFS replica served stale reads: check that node's `litefs mount` is running and connected to the primary "
    "(its .primary file, `litefs_lag_seconds`), and its network to the primary; route reads that need freshness to the primary "
    "(LiteFS's proxy does it with its TXID cookie)."
)
LOST_ACTION = (
    "Writes the old primary acknowledged are missing on the new one: LiteFS replicates asynchronously, so a crash loses what had "
    "not reached the candidate. Check the candidate's lag before relying on it, make the application's writes idempotent and "
    "retried, and rehearse the switch again."
)
PROMOTE_ACTION = (
    "The candidate did not take writes in time: check its lease configuration (static: every node's lease names the new "
    "primary), how long `litefs mount` takes to be ready there, and rehearse the switch until it fits the failover RTO target."
)
FENCE_ACTION = (
    "The old primary took writes again beside the new one: fence it before it returns (its lease must name the new primary, "
    "or use a Consul lease), pause writes, confirm which node is primary, and reconcile what the old one wrote."
)
RETRY_ACTION = (
    "Writes sent during the switch were lost or failed with an error the application does not retry on: retry writes on "
    "LiteFS's read-only and I/O errors until a primary answers, and never count a write done before it is acknowledged."
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class PrimaryTimeline:
    """When the primary first showed each TXID it was sampled at (monotonic seconds), for staleness."""

    def __init__(self) -> None:
        self.txids: list[int] = []
        self.times: list[float] = []

    def add(self, at: float, txid: int) -> None:
        if not self.txids or txid > self.txids[-1]:
            self.txids.append(txid)
            self.times.append(at)

    def staleness(self, at: float, txid: int | None) -> float:
        """How long the primary has held a TXID beyond `txid` at `at` (0 when `txid` is at or past the newest)."""
        index = bisect.bisect_right(self.txids, -1 if txid is None else txid)
        return 0.0 if index >= len(self.txids) else max(0.0, at - self.times[index])


class NodeStaleness(BaseModel):
    samples: int
    unanswered: int = 0
    p50: float
    p95: float
    max: float


class ReadFreshness(StepResult):
    freshness_target: float = 0.0
    interval: float = 0.0
    nodes: dict[str, NodeStaleness] = Field(default_factory=dict)
    primary_txids: tuple[int, int] | None = Field(default=None, description="The primary's TXID at the window's start and end.")
    findings: list[Finding] = Field(default_factory=list)


def judge_freshness(samples: dict[str, list[tuple[float, bool]]], target: float, interval: float) -> ReadFreshness:
    """Per replica its staleness samples (seconds, answered); over the target at p95 is a stale read."""
    nodes = {
        name: NodeStaleness(
            samples=len(values),
            unanswered=sum(1 for _, answered in values if not answered),
            p50=round(percentile([v for v, _ in values], 50), 3),
            p95=round(percentile([v for v, _ in values], 95), 3),
            max=round(max(v for v, _ in values), 3),
        )
        for name, values in samples.items()
        if values
    }
    findings = []
    for name, node in nodes.items():
        if node.p95 > target:
            silent = f"; it did not answer {node.unanswered} of {node.samples} samples" if node.unanswered else ""
            findings.append(
                Finding(
                    mode=FailureMode.STALE_READ,
                    detail=f"LiteFS replica {name}: p95 staleness {node.p95:.2f}s (max {node.max:.2f}s) over the "
                    f"{target:g}s freshness target{silent}",
                    action=STALE_ACTION,
                )
            )
    shown = ", ".join(f"{name} p50 {n.p50:.3f}s p95 {n.p95:.3f}s max {n.max:.3f}s" for name, n in nodes.items())
    return ReadFreshness(
        status=status_of(findings),
        summary=f"staleness against the primary (target {target:g}s): {shown or 'no replica sampled'}",
        freshness_target=target,
        interval=interval,
        nodes=nodes,
        findings=findings,
    )


class PrimarySwitch(StepResult):
    old_primary: str = ""
    new_primary: str = ""
    switch: str = ""
    failover_rto_seconds: float | None = None
    failover_rto_target_seconds: float = 0.0
    acked_before: int = 0
    lost_before: list[int] = Field(default_factory=list, description="Writes acknowledged before the switch, missing on the new primary.")
    lost_window_seconds: float | None = Field(default=None, description="Age at the switch of the oldest lost write.")
    old_primary_took_write: bool | None = None
    old_primary_answer: str = ""
    findings: list[Finding] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Said in the drill's notes: writes lost within the RPO target.")


class WriteRetry(StepResult):
    sent: int = 0
    first_try: int = 0
    after_retry: int = 0
    longest_retry_seconds: float = 0.0
    failed_retryable: int = 0
    failed_other: list[str] = Field(default_factory=list)
    silently_lost: list[int] = Field(default_factory=list)
    errors_seen: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)


class DegradedMode(StepResult):
    read_only_seconds: float | None = None
    reads_served: dict[str, bool] = Field(default_factory=dict)
    read_errors: dict[str, str] = Field(default_factory=dict)
    write_error: str | None = None
    write_seconds: float | None = None
    write_timeout: float = 0.0
    findings: list[Finding] = Field(default_factory=list)


def status_of(findings: Iterable[Finding]) -> Status:
    return Status.FAILED if list(findings) else Status.PASSED
