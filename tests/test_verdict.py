"""The verdict is a pure function: a table of step results and targets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import FailureMode, Status, Verdict
from drillbook.tasks.replica import ReplicaProblem, ReplicaState
from drillbook.tasks.restore import RestoreProblem, RestoreResult
from tests.verdicts import judged

START = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
ENTRY = DatabaseEntry(name="orders", replica="s3://b/orders.db", rto_target=60, rpo_target=30)


def replica_ok(age: float = 5) -> ReplicaState:
    return ReplicaState(status=Status.PASSED, newest_txid="0000000000000010", newest_time=START - timedelta(seconds=age), seconds=0.2)


def restore_ok(seconds: float = 10) -> RestoreResult:
    return RestoreResult(status=Status.PASSED, seconds=seconds, path="/scratch/orders.db", txid="0000000000000010")


def intact(seconds: float = 2, **fields) -> IntegrityReport:
    return IntegrityReport(
        status=Status.PASSED, seconds=seconds, integrity_rows=["ok"], page_size=4096, page_count=2, file_bytes=8192, **fields
    )


def broken(**fields) -> IntegrityReport:
    return IntegrityReport(
        **{"status": Status.FAILED, "integrity_rows": ["ok"], "page_size": 4096, "page_count": 2, "file_bytes": 8192, **fields}
    )


CASES = [
    ("all good", replica_ok(), restore_ok(), intact(), Verdict.PASS, None),
    ("restore over RTO", replica_ok(), restore_ok(59), intact(2), Verdict.FAIL, FailureMode.RESTORE_LAG),
    ("exactly at RTO passes", replica_ok(), restore_ok(58), intact(2), Verdict.PASS, None),
    ("replica too old", replica_ok(31), restore_ok(), intact(), Verdict.FAIL, FailureMode.REPLICA_LAG),
    (
        "empty replica",
        ReplicaState(status=Status.FAILED, problem=ReplicaProblem.EMPTY, summary="no backup"),
        RestoreResult.skipped("x"),
        IntegrityReport.skipped("x"),
        Verdict.FAIL,
        FailureMode.NO_BACKUP,
    ),
    (
        "unreachable",
        ReplicaState(status=Status.FAILED, problem=ReplicaProblem.UNREACHABLE, summary="unreachable"),
        RestoreResult.skipped("x"),
        IntegrityReport.skipped("x"),
        Verdict.FAIL,
        FailureMode.OBJECT_STORAGE,
    ),
    (
        "restore timeout",
        replica_ok(),
        RestoreResult(status=Status.FAILED, problem=RestoreProblem.TIMEOUT, seconds=70),
        IntegrityReport.skipped("x"),
        Verdict.FAIL,
        FailureMode.RESTORE_LAG,
    ),
    (
        "restore exit 1",
        replica_ok(),
        RestoreResult(status=Status.FAILED, problem=RestoreProblem.FAILED, seconds=1),
        IntegrityReport.skipped("x"),
        Verdict.FAIL,
        FailureMode.RESTORE_FAILURE,
    ),
    (
        "integrity rows",
        replica_ok(),
        restore_ok(),
        broken(integrity_problems=2, integrity_rows=["row 1 missing from index i"]),
        Verdict.FAIL,
        FailureMode.INTEGRITY,
    ),
    ("foreign keys", replica_ok(), restore_ok(), broken(foreign_key_problems=1), Verdict.FAIL, FailureMode.INTEGRITY),
    ("sidecar", replica_ok(), restore_ok(), broken(sidecar_problem="-wal beside the copy"), Verdict.FAIL, FailureMode.SIDECAR),
    ("schema", replica_ok(), restore_ok(), broken(schema_problem="schema version is 3, expected 4"), Verdict.FAIL, FailureMode.SCHEMA),
    (
        "integrity beats lag",
        replica_ok(100),
        restore_ok(100),
        broken(integrity_problems=1, integrity_rows=["x"]),
        Verdict.FAIL,
        FailureMode.INTEGRITY,
    ),
    (
        "no backend for the scheme",
        ReplicaState(status=Status.ERROR, problem=ReplicaProblem.UNSUPPORTED, summary="no storage backend for ftp:// replicas"),
        RestoreResult.skipped("x"),
        IntegrityReport.skipped("x"),
        Verdict.ERROR,
        FailureMode.DRILL_ERROR,
    ),
    ("crashed step", replica_ok(), restore_ok(), IntegrityReport.crashed(RuntimeError("boom")), Verdict.ERROR, FailureMode.DRILL_ERROR),
]


@pytest.mark.parametrize(("label", "replica", "restore", "integrity", "verdict", "mode"), CASES, ids=[c[0] for c in CASES])
def test_verdict_table(label, replica, restore, integrity, verdict, mode):
    result = judged(ENTRY, drill_id="d1", started_at=START, finished_at=START, replica=replica, restore=restore, integrity=integrity)
    assert result.verdict == verdict
    assert result.failure_mode == mode
    assert (result.action is None) == (mode is None)
    assert result.exit_code == {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.ERROR: 2}[verdict]


def test_measurements():
    result = judged(
        ENTRY, drill_id="d1", started_at=START, finished_at=START, replica=replica_ok(12), restore=restore_ok(10), integrity=intact(2.5)
    )
    assert result.rto_seconds == 12.5
    assert result.rpo_seconds == 12
    assert set(result.phases) == {"replica", "restore", "integrity"}


def test_every_failure_mode_has_an_action():
    from drillbook.tasks.outcome import ACTIONS

    assert set(ACTIONS) == set(FailureMode)
