"""The follower's staleness against the live primary, through the CLI: a real primary writing, the real `litestream
replicate` shipping it to moto's S3 (killed or stopped mid-window), a real follower, real read-only reads of the primary."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.testing.corpus import S3Target
from drillbook.testing.primary import FRESHNESS_QUERY, Primary, running_primary
from tests.conftest import entry

pytestmark = pytest.mark.slow


@pytest.fixture
def primary(s3_endpoint, tmp_path):
    """A database written 10 times a second and replicated by a running `litestream replicate` (1 s intervals)."""
    target = S3Target(s3_endpoint, "drills", f"follow-primary-{uuid.uuid4().hex[:8]}/app.db")
    with running_primary(tmp_path / "pri#mary?", target) as running:  # the live path quoted in its read-only URI
        yield running


def _drill(capsys, write_catalogue, primary: Primary, *, rpo_target: str = "1m", **follow) -> tuple[int, dict]:
    config = write_catalogue(
        entry(
            "orders",
            primary.url,
            rpo_target=rpo_target,
            live_path=str(primary.db_path),
            freshness_query=FRESHNESS_QUERY,
            follow={"freshness_target": "5s", **follow},
        )
    )
    code = main(["run", "orders", "--config", str(config), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _signal_litestream_in_window(primary: Primary, scratch: Path, sig: signal.Signals, after: float) -> threading.Thread:
    """Once the follower's first restore is done (its -txid file), wait `after` seconds and send `sig` to litestream's group."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("**/follow/orders.db-txid")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(after)
        os.killpg(primary.litestream.pid, sig)

    thread = threading.Thread(target=run, name="signal-litestream", daemon=True)
    thread.start()
    return thread


def _modes(result: dict) -> list[str]:
    return [finding["mode"] for finding in result["findings"]]


def test_a_running_replication_passes_with_the_staleness_measured_against_the_primary(primary, write_catalogue, capsys):
    code, result = _drill(capsys, write_catalogue, primary, seconds="6s")

    assert code == 0, result
    follow = result["follow"]
    assert follow["measured_against"] == "primary" and follow["replica_stopped_at"] is None
    assert follow["samples"] >= 4 and 0 <= follow["p50"] <= follow["p95"] <= follow["max"] < 5.0
    assert "measured against the primary" in result["phases"]["follow"]["summary"]
    assert not any("replication stopped" in note or "against the replica only" in note for note in result["notes"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
def test_litestream_stopping_mid_window_is_replica_lag_and_the_follower_is_stale(primary, write_catalogue, capsys, tmp_path, sig):
    sender = _signal_litestream_in_window(primary, tmp_path / "scratch", sig, after=1.0)
    try:
        code, result = _drill(capsys, write_catalogue, primary, rpo_target="6s", seconds="14s", freshness_target="4s")
    finally:
        sender.join()
        if sig == signal.SIGSTOP:
            os.killpg(primary.litestream.pid, signal.SIGCONT)

    assert code == 1, result
    assert result["failure_mode"] == "replica lag" and _modes(result) == ["replica lag", "stale read"], result["findings"]
    lag = result["findings"][0]["detail"]
    follow = result["follow"]
    assert lag.startswith(f"replication stopped at {follow['replica_stopped_at']}: the replica stayed at TXID ")
    assert "it had not moved again at the window's end" in lag and "over the 6s RPO target by " in lag
    assert follow["measured_against"] == "primary" and follow["p95"] > 4.0 and follow["max"] > 6.0
    # the worst seen during the drill, not the first measurement (taken while litestream still ran)
    assert result["rpo_seconds"] == follow["rpo_max"] > 6.0
    assert result["data_loss_seconds"] == follow["data_loss_max"] > 6.0
    assert result["action"].startswith("Replication is behind")


def test_a_stop_within_rpo_target_is_a_note_and_the_rpo_is_the_worst_seen(primary, write_catalogue, capsys, tmp_path):
    sender = _signal_litestream_in_window(primary, tmp_path / "scratch", signal.SIGKILL, after=1.0)
    try:
        code, result = _drill(capsys, write_catalogue, primary, rpo_target="1m", seconds="9s", freshness_target="30s")
    finally:
        sender.join()

    assert code == 0, result
    follow = result["follow"]
    noted = [note for note in result["notes"] if note.startswith(f"replication stopped at {follow['replica_stopped_at']}: ")]
    assert len(noted) == 1 and noted[0].endswith(", within the 60s RPO target"), result["notes"]
    assert result["rpo_seconds"] == follow["rpo_max"] > 5.0 and result["data_loss_seconds"] == follow["data_loss_max"] > 5.0


def test_a_follower_lagging_on_its_own_is_a_stale_read_not_replica_lag(primary, write_catalogue, capsys):
    code, result = _drill(capsys, write_catalogue, primary, seconds="10s", freshness_target="2s", interval="8s")

    assert code == 1, result
    assert _modes(result) == ["stale read"], result["findings"]
    follow = result["follow"]
    assert follow["measured_against"] == "primary" and follow["replica_stopped_at"] is None and follow["p95"] > 2.0
    assert result["findings"][0]["detail"].startswith("the follower's reads are stale: staleness p50 ")
    assert result["data_loss_seconds"] < 6.0  # the replica kept up: what readers lacked was the follower's


def test_an_idle_primary_is_neither_stale_nor_a_stopped_replication(primary, write_catalogue, capsys):
    primary.workload.stop()  # the application stops writing; litestream keeps running
    time.sleep(2.5)  # its last upload

    code, result = _drill(capsys, write_catalogue, primary, seconds="5s", freshness_target="1s")

    assert code == 0, result
    follow = result["follow"]
    assert follow["measured_against"] == "primary" and follow["p95"] == 0.0 and follow["replica_stopped_at"] is None
    assert "the primary committed nothing during the 5s window (idle): nothing stale, nothing to replicate" in result["notes"]
    assert result["data_loss_seconds"] == 0.0
