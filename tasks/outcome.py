"""The outcome of a drill, in the operator's words: verdict, exit code, failure mode, action.

A leaf: everything may import it; it imports nothing of drillbook.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, Field


class Status(StrEnum):
    """How one step ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"  # the step itself could not run


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
    WRITER_LEASE = "writer lease confusion"  # two writers on one replica: which history "latest" holds is in question
    RETENTION_SHORT = "retention window short"
    POINT_NOT_RESTORED = "point not restorable"
    RESTORE_FAILURE = "restore failure"
    SIDECAR = "sidecar file mismatch"  # before integrity: a -wal beside the copy explains what integrity sees
    INTEGRITY = "integrity failure"
    SCHEMA = "schema mismatch"
    SMOKE = "smoke test"
    EXPECTATIONS = "data expectations"
    RESTORE_TOOL = "restore tool incompatible"  # another litestream release cannot restore this replica, or restores other data
    RESTORE_LAG = "restore lag"
    REPLICA_LAG = "replica lag"
    STALE_READ = "stale read"  # the read-replica drill (follow)
    PROMOTION = "promotion failure"  # the promotion drill (promote)


ACTIONS: dict[FailureMode, str] = {
    FailureMode.DRILL_ERROR: "Fix what the drill reports (installation, configuration, scratch disk), then run the drill again.",
    FailureMode.NO_BACKUP: "There is nothing to restore: start `litestream replicate` for this database and confirm the replica URL.",
    FailureMode.OBJECT_STORAGE: "Check the endpoint, bucket and credentials; switch credentials or destination and re-send.",
    FailureMode.WRITER_LEASE: "Two writers replicated to this replica: pause writes, confirm which node is the primary, "
    "fence the old writer (stop its litestream and application), then restore from the replica and check the newest data is the primary's.",
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
    FailureMode.RESTORE_TOOL: "Pin the disaster-recovery host, container image and runbook to a litestream version that restores "
    "this replica (the pinned one does), or upgrade litestream there; drill again with `drillbook compat`.",
    FailureMode.RESTORE_LAG: "Trigger a snapshot / compaction to shrink the LTX backlog and rehearse the restore; if restores keep exceeding the RTO, plan a server database.",
    FailureMode.REPLICA_LAG: "Replication is behind (RPO growing): check litestream on the primary, its credentials and network; lower the write rate.",
    FailureMode.STALE_READ: "Fall back to the primary for reads that need freshness and mark freshness in responses (the data's own time); "
    "check the follower's process (`litestream restore -f`) and that no reader keeps a transaction or connection open on its file.",
    FailureMode.PROMOTION: "The restored copy did not work as a new primary: keep litestream replicate's log and the promoted copy, fix the "
    "failing write or the replication to the new prefix, and rehearse the switch again before relying on fail-forward.",
}


class Phase(BaseModel):
    status: Status
    seconds: float
    summary: str = ""


class Finding(BaseModel):
    mode: FailureMode
    detail: str
    action: str | None = Field(
        default=None, exclude=True
    )  # where the mode's general action does not fit (a LiteFS cluster's stale read): this one, when it leads
