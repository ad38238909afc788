"""`drillbook watch`: real litestream replicating to moto's S3, a live database kept written, the Slack stand-in."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.litestream import find_litestream, litestream_env
from drillbook.testing.corpus import S3Target
from drillbook.testing.s3 import replicate_once, s3_replica_url
from drillbook.testing.takeover import build_takeover
from tests.conftest import entry
from tests.test_looking_ahead import slack, with_slack  # noqa: F401  (fixture: the Slack stand-in)

pytestmark = pytest.mark.slow
FRESHNESS = "SELECT max(at) FROM events"


def _live(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
    connection.commit()
    return connection


def _write(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO events (at) VALUES (?)", (datetime.now(UTC).isoformat(),))
    connection.commit()


def _replicate(live: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [find_litestream(), "replicate", str(live), url],
        env=litestream_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def _watch(capsys, config: Path, *names: str) -> tuple[int, dict[str, dict]]:
    code = main(["watch", *names, "--notify", "--json", "--config", str(config)])
    return code, {s["database"]: s for s in json.loads(capsys.readouterr().out)}


def _until(capsys, config: Path, name: str, replication: str, writer: sqlite3.Connection, seconds: float = 40) -> tuple[int, dict]:
    """Check until `name` is in state `replication`, writing to the live database before each check (an application at work)."""
    deadline = time.monotonic() + seconds
    while True:
        _write(writer)
        code, statuses = _watch(capsys, config, name)
        if statuses[name]["replication"] == replication or time.monotonic() > deadline:
            return code, statuses[name]
        time.sleep(1)


def test_stopped_replication_alerts_once_an_idle_database_never_and_resuming_says_so_once(
    capsys,
    tmp_path,
    s3_endpoint,
    write_catalogue,
    slack,  # noqa: F811
):
    busy, quiet = tmp_path / "busy.db", tmp_path / "quiet.db"
    busy_url = s3_replica_url(s3_endpoint, "drills", "watch-busy/app.db")
    quiet_url = s3_replica_url(s3_endpoint, "drills", "watch-quiet/app.db")
    writer = _live(busy)
    _write(writer)
    quiet_connection = _live(quiet)
    _write(quiet_connection)
    quiet_connection.close()
    replicate_once(quiet, quiet_url)
    fields = dict(rpo_target="5s", freshness_query=FRESHNESS)
    config = with_slack(
        write_catalogue(
            entry("busy", busy_url, live_path=str(busy), owners=["U0ADA1"], **fields),
            entry("quiet", quiet_url, live_path=str(quiet), **fields),
        ),
        slack,
        tmp_path,
    )
    process = _replicate(busy, busy_url)
    try:
        code, status = _until(capsys, config, "busy", "replicating", writer)
        assert (code, status["replication"]) == (0, "replicating"), status
        _stop(process)
        time.sleep(6)  # past rpo_target: the live database moves on, the replica cannot
        _write(writer)

        slack.fail("server_error", count=100)  # Slack is down when replication stops: the alert waits in the outbox
        code, statuses = _watch(capsys, config)
        assert code == 1 and not slack.messages
        assert main(["watch", "--notify", "--config", str(config)]) == 1  # still stopped: nothing new queued
        capsys.readouterr()
        assert main(["outbox", "--json", "--config", str(config)]) == 0
        waiting = json.loads(capsys.readouterr().out)["waiting"]
        assert [(w["kind"], w["database"]) for w in waiting] == [("alert", "busy")]
        slack.heal()
        assert main(["outbox", "send", "--config", str(config)]) == 0
        capsys.readouterr()
        assert statuses["busy"]["replication"] == "stopped"
        assert statuses["busy"]["detail"].startswith("replication stopped at ")
        assert "the live database committed on to " in statuses["busy"]["detail"]
        assert statuses["quiet"]["replication"] == "idle"  # nothing written since its replica's newest change: no alert
        assert statuses["quiet"]["detail"].startswith("idle: nothing written since the replica's newest change")
        assert [m["text"].split(":")[0] for m in slack.messages] == ["REPLICATION STOPPED busy"]
        assert "<@U0ADA1>" in json.dumps(slack.messages[0]["blocks"])

        code, _ = _watch(capsys, config)  # five minutes later: still stopped, no second alert
        assert code == 1 and len(slack.messages) == 1

        assert main(["watch", "--config", str(config)]) == 1  # the table a person reads
        out = capsys.readouterr().out
        assert out.splitlines()[0] == "1 of 2 database(s) stopped replicating"
        assert "  STOPPED busy: replication stopped at " in out
        assert "  idle    quiet: idle: nothing written since" in out

        process = _replicate(busy, busy_url)  # replication resumes and catches up
        code, status = _until(capsys, config, "busy", "replicating", writer)
        assert (code, status["replication"]) == (0, "replicating"), status
        code, _ = _watch(capsys, config)
        assert code == 0
        assert [m["text"].split(":")[0] for m in slack.messages] == ["REPLICATION STOPPED busy", "REPLICATION RESUMED busy"]
    finally:
        if process.poll() is None:
            _stop(process)
        writer.close()


def test_a_primary_that_wrote_a_little_after_litestream_stopped_is_stopped_not_idle(capsys, tmp_path, s3_endpoint, write_catalogue):
    live = tmp_path / "late.db"
    url = s3_replica_url(s3_endpoint, "drills", "watch-late/app.db")
    writer = _live(live)
    config = write_catalogue(entry("late", url, live_path=str(live), rpo_target="3s", freshness_query=FRESHNESS))
    process = _replicate(live, url)
    try:
        deadline = time.monotonic() + 40
        while True:
            _write(writer)
            code = main(["watch", "late", "--json", "--config", str(config)])
            status = json.loads(capsys.readouterr().out)[0]
            if status["replication"] == "replicating" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert (code, status["replication"]) == (0, "replicating"), status
        _stop(process)
        _write(writer)  # one commit nothing ships, then the application goes quiet: well inside rpo_target of the replica's newest
        time.sleep(4)  # past rpo_target

        code = main(["watch", "late", "--json", "--config", str(config)])
        status = json.loads(capsys.readouterr().out)[0]
    finally:
        if process.poll() is None:
            _stop(process)
        writer.close()

    assert (code, status["replication"]) == (1, "stopped"), status
    assert 0 < status["behind_seconds"] < 3 < status["lag_seconds"]  # the old rule (behind over rpo_target) called this idle
    assert status["detail"].startswith(f"replication stopped at {status['replica_newest_at'][:19].replace('T', ' ')}Z ")


def test_without_the_live_database_a_quiet_replica_is_unknown_not_an_alert(capsys, replicate, write_catalogue, slack, tmp_path):  # noqa: F811
    replicated = replicate()
    config = with_slack(
        write_catalogue(
            entry("elsewhere", replicated.replica, rpo_target="1s", live_path="/nonexistent/app.db", freshness_query=FRESHNESS)
        ),
        slack,
        tmp_path,
    )
    time.sleep(1.5)
    code, statuses = _watch(capsys, config)
    assert code == 0 and statuses["elsewhere"]["replication"] == "unknown"
    assert "idle or stopped? the live database /nonexistent/app.db is not on this machine" in statuses["elsewhere"]["detail"]
    assert not slack.messages


def test_a_missing_replica_is_unreadable_and_an_unknown_name_is_a_config_error(capsys, s3_endpoint, write_catalogue):
    config = write_catalogue(entry("gone", s3_replica_url(s3_endpoint, "drills", "watch-never-written/app.db")))
    code, statuses = _watch(capsys, config)
    assert code == 1 and statuses["gone"]["replication"] == "unreadable"
    assert statuses["gone"]["detail"].startswith("replica not readable: no backup")
    assert main(["watch", "nosuch", "--config", str(config)]) == 2
    assert "no database named 'nosuch'" in capsys.readouterr().err


def test_a_second_writer_on_the_replica_is_named_by_the_watch_and_alerted_once(capsys, s3_endpoint, write_catalogue, slack, tmp_path):  # noqa: F811
    target = S3Target(s3_endpoint, "drills", f"watch-takeover-{time.time_ns()}/app.db")
    made = build_takeover(target, tmp_path / "writers")  # real litestream: a restored older copy took over, the old primary came back
    config = with_slack(write_catalogue(entry("orders", target.url, rpo_target="1h")), slack, tmp_path)

    code, statuses = _watch(capsys, config)
    assert code == 1, statuses
    status = statuses["orders"]
    assert status["fork_txid"] == made.copy_took_over, status
    assert "TWO WRITERS: " in status["detail"] and made.copy_took_over in status["detail"]
    [alert] = [m for m in slack.messages if m["text"].startswith("TWO WRITERS orders")]
    assert made.copy_took_over in alert["text"]

    code, _ = _watch(capsys, config)  # five minutes later, the same fork: named again, alerted no more
    assert code == 1
    assert len([m for m in slack.messages if m["text"].startswith("TWO WRITERS orders")]) == 1
