"""The verdict with smoke tests and expectations: still a pure function, tested as a table."""

from __future__ import annotations

import pytest

from drillbook.tasks.expectations import ExpectationResult, ExpectationsReport
from drillbook.tasks.outcome import FailureMode, Status, Verdict
from drillbook.tasks.smoke import SmokeCheckResult, SmokeReport
from tests.test_verdict import ENTRY, START, intact, replica_ok, restore_ok
from tests.verdicts import judged

SMOKE_OK = SmokeReport(status=Status.PASSED, seconds=3, summary="2 smoke checks passed")
EXPECT_OK = ExpectationsReport(status=Status.PASSED, seconds=50, summary="9 expectations in 1 suite passed")
SMOKE_FAILED = SmokeReport(
    status=Status.FAILED,
    seconds=1,
    checks=[
        SmokeCheckResult(name="row count orders", kind="row_count", success=False, observed=0, expected="at least 1"),
        SmokeCheckResult(name="app starts", kind="command", success=False, observed=2, error="exit 2: no such table: invoices"),
        SmokeCheckResult(name="fine", kind="sql", success=True, observed=1),
    ],
)
EXPECT_FAILED = ExpectationsReport(
    status=Status.FAILED,
    seconds=2,
    results=[
        ExpectationResult(
            suite="orders.json",
            index=0,
            type="expect_column_values_to_not_be_null",
            table="orders",
            column="status",
            success=False,
            unexpected_count=12,
            unexpected_percent=0.4,
        ),
        ExpectationResult(
            suite="orders.json", index=1, type="expect_table_row_count_to_be_between", table="orders", success=True, observed_value=3000
        ),
    ],
)


def run(smoke=None, expectations=None, restore_seconds=10.0):
    return judged(
        ENTRY,
        drill_id="x",
        started_at=START,
        finished_at=START,
        replica=replica_ok(),
        restore=restore_ok(restore_seconds),
        integrity=intact(),
        smoke=smoke,
        expectations=expectations,
    )


@pytest.mark.parametrize(
    "smoke, expectations, verdict, mode",
    [
        (SMOKE_OK, EXPECT_OK, Verdict.PASS, None),
        (SmokeReport.skipped("no smoke tests configured"), ExpectationsReport.skipped("none"), Verdict.PASS, None),
        (SMOKE_FAILED, EXPECT_OK, Verdict.FAIL, FailureMode.SMOKE),
        (SMOKE_OK, EXPECT_FAILED, Verdict.FAIL, FailureMode.EXPECTATIONS),
        (SMOKE_FAILED, EXPECT_FAILED, Verdict.FAIL, FailureMode.SMOKE),
        (SMOKE_OK, ExpectationsReport(status=Status.ERROR, summary="x.json: not valid JSON"), Verdict.ERROR, FailureMode.DRILL_ERROR),
        (SmokeReport.crashed(RuntimeError("boom")), EXPECT_OK, Verdict.ERROR, FailureMode.DRILL_ERROR),
    ],
)
def test_verdict_table(smoke, expectations, verdict, mode):
    result = run(smoke, expectations)
    assert (result.verdict, result.failure_mode) == (verdict, mode)


def test_smoke_counts_in_rto_expectations_do_not():
    result = run(SMOKE_OK, EXPECT_OK)
    assert result.rto_seconds == 10 + 2 + 3
    assert result.phases["expectations"].seconds == 50
    # 44s of restore + 2s integrity is inside the 60s target; the 15s of smoke pushes it over.
    assert run(SmokeReport(status=Status.PASSED, seconds=15), EXPECT_OK, restore_seconds=44).failure_mode == FailureMode.RESTORE_LAG
    assert run(SMOKE_OK, ExpectationsReport(status=Status.PASSED, seconds=500), restore_seconds=44).verdict == Verdict.PASS


def test_findings_list_every_failing_check_without_samples():
    result = run(SMOKE_FAILED, EXPECT_FAILED)
    assert [(f.mode.value, f.detail) for f in result.findings] == [
        ("smoke test", "row count orders: got 0, expected at least 1"),
        ("smoke test", "app starts: exit 2: no such table: invoices"),
        ("data expectations", "orders.json: orders.status expect_column_values_to_not_be_null: 12 unexpected (0.4%)"),
    ]


def test_many_failing_checks_are_listed_up_to_ten():
    many = SmokeReport(
        status=Status.FAILED, checks=[SmokeCheckResult(name=f"c{i}", kind="sql", observed=0, expected="at least 1") for i in range(13)]
    )
    details = [f.detail for f in run(many, EXPECT_OK).findings]
    assert details[:2] == ["c0: got 0, expected at least 1", "c1: got 0, expected at least 1"]
    assert details[10:] == ["and 3 more failing (all in the evidence bundle)"]
