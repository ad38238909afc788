"""Release drills: wait for the replica to carry the migration, drill, gate."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from drillbook.flows.release import release_drills
from drillbook.tasks import release_wait
from drillbook.tasks.errors import DrillsFailed
from drillbook.testing.s3 import replicate_once
from tests.conftest import entry


def _migrate(path, version: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE IF NOT EXISTS release_notes (id INTEGER PRIMARY KEY, body TEXT)")
    connection.execute(f"PRAGMA user_version = {version}")
    connection.commit()
    connection.close()


def test_migration_reaching_the_replica_late_passes(replicate, write_catalogue, monkeypatch):
    replicated = replicate()  # schema version 3 on the replica
    config = write_catalogue(entry("orders", replicated.replica))
    seen: list[str | None] = []
    waiting = threading.Event()

    original = release_wait.restored_schema_version

    def probed(*args):
        seen.append(original(*args))
        waiting.set()  # the wait has looked at the replica and found the release missing (or, later, there)
        return seen[-1]

    monkeypatch.setattr(release_wait, "restored_schema_version", probed)

    def deploy_late():
        assert waiting.wait(60), "the release wait never probed the replica"
        _migrate(replicated.live, 4)
        replicate_once(replicated.live, replicated.replica)

    thread = threading.Thread(target=deploy_late)
    thread.start()
    try:
        results = release_drills("v1.2.3", schema_version=4, config_path=str(config), wait_seconds=60, poll_seconds=0.5)
    finally:
        thread.join()
    assert seen[0] == "3" and seen[-1] == "4"  # it waited: the release was missing first, then arrived
    (result,) = results
    assert (result.verdict.value, result.release) == ("PASS", "v1.2.3")
    assert result.integrity.schema_version == "4"


def test_migration_that_never_arrives_fails_as_replica_lag(replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    started = time.monotonic()
    with pytest.raises(DrillsFailed) as caught:
        release_drills("v1.2.4", schema_version=5, config_path=str(config), wait_seconds=2, poll_seconds=0.5)
    assert time.monotonic() - started >= 2
    (result,) = caught.value.results
    assert (result.verdict.value, result.failure_mode.value) == ("FAIL", "replica lag")
    lead = result.findings[0].detail
    assert lead.startswith(
        "the replica did not carry release v1.2.4 within 2s: a copy restored from it reports schema version 3, expected 5 (newest change at "
    )
    assert [f.mode.value for f in result.findings] == ["replica lag", "schema mismatch"]
    assert "check litestream on the primary" in result.action


def test_release_without_schema_waits_for_a_newer_change(replicate, write_catalogue):
    from datetime import UTC, datetime, timedelta

    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    # The replica's newest change predates the deploy's time by an hour: nothing newer ever arrives.
    with pytest.raises(DrillsFailed) as caught:
        release_drills("v2", config_path=str(config), wait_seconds=1, poll_seconds=0.5, released_at=datetime.now(UTC) + timedelta(hours=1))
    assert caught.value.results[0].failure_mode.value == "replica lag"
    assert "before the release time" in caught.value.results[0].findings[0].detail
    # Released before the replica's newest change: no wait, PASS.
    results = release_drills("v1", config_path=str(config), wait_seconds=1, released_at=datetime.now(UTC) - timedelta(hours=1))
    assert results[0].verdict.value == "PASS"
