"""The read-replica drill against a moving replica: real `litestream replicate` under a write workload on moto's S3
server, a real follower (`litestream restore -f`), real SQLite readers. Windows of a few seconds (bench/follow.py
measures the minute)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.follow import FollowProblem, follow_replica
from drillbook.tasks.follow_reads import percentile
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import FailureMode, Status, Verdict
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.restore import RestoreResult
from drillbook.testing.corpus import S3Target
from drillbook.testing.primary import FRESHNESS_QUERY, running_primary
from tests.conftest import entry
from tests.verdicts import judged


def processes_with(fragment: str) -> list[str]:
    """Command lines of live processes that mention `fragment` (a scratch path): what a drill may not leave behind."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in command and int(pid) != os.getpid():
            found.append(f"{pid}: {command[:200]}")
    return found


@pytest.fixture
def primary(s3_endpoint, tmp_path):
    """A database written 10 times a second and replicated by a running `litestream replicate` (1 s intervals)."""
    target = S3Target(s3_endpoint, "drills", f"follow-{uuid.uuid4().hex[:8]}/app.db")
    with running_primary(tmp_path / "primary", target) as running:
        yield running


def follow_entry(url: str, **follow) -> DatabaseEntry:
    return DatabaseEntry(
        name="orders",
        replica=url,
        rto_target="2m",
        rpo_target="10m",
        freshness_query=FRESHNESS_QUERY,
        follow={"freshness_target": "5s", **follow},
    )


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 0.5) == 10.0 and percentile(values, 0.95) == 19.0 and percentile([3.0], 0.95) == 3.0
    assert percentile([], 0.5) is None


def test_a_follower_within_target_passes_from_the_cli_and_leaves_no_process(primary, write_catalogue, capsys, tmp_path):
    config = write_catalogue(
        entry("orders", primary.url, freshness_query=FRESHNESS_QUERY, follow={"seconds": "4s", "freshness_target": "5s"})
    )

    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 0, result
    assert result["phases"]["follow"]["status"] == "passed"
    assert result["phases"]["follow"]["summary"].startswith("follower within target: staleness p50 ")
    follow = result["follow"]
    assert follow["status"] == "passed" and follow["samples"] >= 3 and follow["target"] == 5.0
    assert 0 <= follow["p50"] <= follow["p95"] <= follow["max"] < 5.0
    assert follow["measured_against"] == "replica" and "measured against the replica only" in result["phases"]["follow"]["summary"]
    assert processes_with(str(tmp_path / "scratch")) == []


def test_a_held_reader_stalls_the_follower_and_the_fail_names_it(primary, tmp_path):
    settings = follow_entry(primary.url, seconds="10s", hold_reader=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    report = follow_replica(settings, inspect_replica(settings), scratch)

    assert report.status == Status.FAILED and report.problem == FollowProblem.STALLED, report.summary
    held = report.held
    assert held is not None and held.stalled and held.stalled_seconds >= 3
    assert int(held.replica_txid_at_release, 16) > int(held.txid_at_hold, 16)
    assert f"the follower stayed at TXID {held.txid_at_hold} for " in report.summary
    assert f"(pid {held.pid}: BEGIN; {FRESHNESS_QUERY} kept open" in report.summary
    assert "blocks litestream's exclusive lock" in report.summary and "'database is locked'" in report.summary
    assert held.locked_reads >= 1 and any(h.startswith(f"pid {held.pid} ") for h in held.holders)
    assert report.command is not None and not report.command.group_left
    assert processes_with(str(scratch)) == []  # the follower and the held reader: both groups gone

    result = judged(
        settings,
        started_at=datetime.now(UTC),
        replica=inspect_replica(settings),
        restore=RestoreResult.skipped("-"),
        integrity=IntegrityReport.skipped("-"),
        follow=report,
    )
    assert result.verdict == Verdict.FAIL and result.failure_mode == FailureMode.STALE_READ
    assert "Fall back to the primary" in (result.action or "")


def test_a_follower_that_exits_at_once_is_a_fail_with_litestreams_words(replicate, tmp_path, monkeypatch):
    fake = tmp_path / "litestream"
    fake.write_text("#!/bin/sh\necho 'cannot restore: replica client: no such host' >&2\nexit 1\n")
    fake.chmod(0o755)
    settings = follow_entry(replicate().replica, seconds="3s")
    replica = inspect_replica(settings)
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(fake))
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    report = follow_replica(settings, replica, scratch)

    assert report.status == Status.FAILED and report.problem == FollowProblem.EXITED
    assert report.summary.startswith("the follower exited 1 after ")
    assert report.summary.endswith(": cannot restore: replica client: no such host")

    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(tmp_path / "missing"))
    (tmp_path / "again").mkdir()
    report = follow_replica(settings, replica, tmp_path / "again")
    assert report.status == Status.ERROR and "is not an executable file" in report.summary


def test_an_idle_replica_passes_with_a_note_that_nothing_moved(replicate, tmp_path):
    replicated = replicate()
    settings = DatabaseEntry(
        name="orders",
        replica=replicated.replica,
        rto_target="2m",
        rpo_target="10m",
        freshness_query="SELECT max(created_at) FROM orders",
        follow={"seconds": "3s", "freshness_target": "5s"},
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    report = follow_replica(settings, inspect_replica(settings), scratch)

    assert report.status == Status.PASSED and report.samples >= 2, report.summary
    assert report.follower_txid == report.replica_txid
    assert report.measured_against == "replica" and report.notes == [
        "staleness measured against the replica only (its newest LTX header), not the primary: no live_path in the catalogue",
        f"the replica did not move during the 3s window (TXID {report.replica_txid}): the follower had nothing to apply; whether the "
        "primary is idle or its litestream stopped is the RPO's question (a follower says nothing either way)",
    ]
