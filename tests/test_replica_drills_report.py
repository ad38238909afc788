"""The read-replica and promotion drills in every report: terminal, Markdown, Slack, history and the HTML page."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.follow import FollowProblem, FollowReport, HeldReader
from drillbook.tasks.history.store import recent_drills, record_drill
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import FailureMode, Status, Verdict
from drillbook.tasks.promote import PromoteReport
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.report.drill import render_markdown, render_terminal
from drillbook.tasks.report.html import render_page
from drillbook.tasks.report.slack import drill_blocks
from drillbook.tasks.restore import RestoreResult
from tests.conftest import entry
from tests.verdicts import judged

STALLED = (
    "the follower stayed at TXID 0000000000000007 for 6s while the replica moved on to 000000000000000f: a reader holding a read "
    "transaction on the follower's file /scratch/follow/orders.db (pid 4242: BEGIN; SELECT 1 kept open) blocks litestream's exclusive lock"
)


def drilled(config_path):
    database = load_catalogue(config_path).get("orders")
    now = datetime.now(UTC)
    follow = FollowReport(
        status=Status.FAILED, summary=STALLED, freshness_target=5.0, samples=30, p50=0.95, p95=1.5, max=1.6,
        problem=FollowProblem.STALLED, held=HeldReader(pid=4242, stalled=True, stalled_seconds=6.0),
    )  # fmt: skip
    promote = PromoteReport(status=Status.PASSED, summary="failover RTO 2.1s", failover_rto_seconds=2.1, failover_rto_target=60.0)
    return database, judged(
        database,
        started_at=now,
        replica=ReplicaState(status=Status.PASSED, newest_time=now, newest_txid="0000000000000001"),
        restore=RestoreResult(status=Status.PASSED, txid="0000000000000001", seconds=0.3),
        integrity=IntegrityReport(status=Status.PASSED, intact=True, seconds=0.1),
        follow=follow,
        promote=promote,
    )


def test_every_report_shows_the_follower_and_the_failover(write_catalogue):
    config = write_catalogue(entry("orders", "s3://drills/orders/app.db", freshness_query="SELECT 1", follow={"freshness_target": "5s"}))
    _database, result = drilled(config)

    assert result.verdict == Verdict.FAIL and result.failure_mode == FailureMode.STALE_READ
    assert result.findings[0].detail == STALLED
    assert list(result.phases)[-2:] == ["follow", "promote"]

    markdown = render_markdown(result)
    assert (
        "- **Follower staleness p95 1.5s (target 5.0s, 3.5s to spare); p50 0.9s, max 1.6s over 30 samples, against the replica only**"
        in markdown
    )
    assert "- **Failover RTO (promotion) 2.1s (target 1m 00s, 58s to spare)**" in markdown
    console = Console(width=300, record=True)
    console.print(render_terminal(result))
    terminal = console.export_text()
    assert "Follower staleness p95 1.5s" in terminal and "Failover RTO (promotion) 2.1s" in terminal and "stale read:" in terminal

    slack = json.dumps(drill_blocks(result))
    assert "*Follower staleness p95* 1.5s" in slack and "*Failover RTO (promotion)* 2.1s" in slack

    url = load_catalogue(config).history_url
    record_drill(url, result)
    summary = recent_drills(url, "orders", 1)[0].summary
    assert summary["follow"] == {
        "status": "failed", "p50": 0.95, "p95": 1.5, "max": 1.6, "samples": 30, "target": 5.0, "stalled_seconds": 6.0, "problem": "stalled",
        "measured_against": "replica", "replica_stopped_at": None, "rpo_max": None, "data_loss_max": None,
    }  # fmt: skip
    assert summary["promote"]["failover_rto_seconds"] == 2.1 and summary["promote"]["status"] == "passed"

    page = render_page(load_catalogue(config))
    assert "<td>follower staleness</td><td>p50 0.9s, p95 1.5s, max 1.6s over 30 samples (target 5.0s)</td>" in page
    assert "<td>follower</td><td>FAIL: stalled (6s stalled)</td>" in page
    assert "<td>failover RTO</td><td>2.1s (target 1m 00s)</td>" in page
