"""Restore points end to end: real litestream against moto's S3 server, replicas written over (simulated) time.

Each history is built as an operator's would grow: write rows, `litestream replicate -once`
(one LTX file, one TXID), wait, write again, so that the LTX files carry distinct times.
Gaps and short retention are made by deleting LTX objects from the bucket. Correctness
is checked on the data: a smoke check counts the rows of the restored copy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from drillbook.cli.main import main
from drillbook.testing.s3 import replicate_once, s3_replica_url
from tests.conftest import entry

PAUSE = 1.2  # seconds between steps: LTX header times are milliseconds apart, the listing's seconds
ROWS = 3  # rows written per step


@dataclass
class History:
    live: Path
    replica: str
    key: str
    after: list[datetime] = field(default_factory=list)  # when step i's LTX file was surely written
    before: datetime | None = None  # before anything was replicated

    def between(self, step: int) -> str:
        """A time after step `step` was replicated and before step + 1 was written."""
        return (self.after[step] + timedelta(seconds=PAUSE / 2)).isoformat().replace("+00:00", "Z")

    def rows(self, step: int) -> int:
        return ROWS * (step + 1)


def build_history(directory: Path, endpoint: str, steps: int) -> History:
    live = directory / f"live-{uuid.uuid4().hex[:6]}.db"
    key = f"points-{uuid.uuid4().hex[:8]}/app.db"
    history = History(live=live, replica=s3_replica_url(endpoint, "drills", key), key=key, before=datetime.now(UTC))
    time.sleep(0.1)
    connection = sqlite3.connect(live)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, step INTEGER NOT NULL, at TEXT NOT NULL)")
    for step in range(steps):
        connection.executemany("INSERT INTO events (step, at) VALUES (?, ?)", [(step, datetime.now(UTC).isoformat())] * ROWS)
        connection.commit()
        replicate_once(live, history.replica)
        history.after.append(datetime.now(UTC))
        time.sleep(PAUSE)
    connection.close()
    return history


def counting(rows: int) -> dict:
    """Smoke: the copy holds exactly `rows` events (checked on the data, by the drill itself)."""
    return {"name": "rows written before the point", "sql": "SELECT count(*) FROM events", "equals": rows}


def delete_txid(endpoint: str, history: History, txid: int, level: int = 0) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.delete_object(Bucket="drills", Key=f"{history.key}/{level:04x}/{txid:016x}-{txid:016x}.ltx")


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["run", *argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def count_rows(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory, s3_endpoint) -> History:
    return build_history(tmp_path_factory.mktemp("points"), s3_endpoint, steps=4)


def test_listing_holds_one_ltx_file_per_step(history):
    from drillbook.tasks.litestream import run_litestream

    listed = json.loads(run_litestream(["ltx", "-json", "-level", "all", history.replica], timeout=60).stdout)
    assert [(f["level"], f["min_txid"], f["max_txid"]) for f in listed] == [(0, f"{i:016x}", f"{i:016x}") for i in range(1, 5)]


@pytest.mark.parametrize("step", [0, 2])
def test_a_time_between_two_ltx_files_restores_exactly_the_rows_written_before_it(capsys, history, write_catalogue, step):
    config = write_catalogue(entry("events", history.replica, smoke=[counting(history.rows(step))]))
    code, result, _ = run(capsys, "events", "--config", str(config), "--at", history.between(step))
    assert (code, result["verdict"]) == (0, "PASS"), result["findings"]
    assert result["phases"]["smoke"]["status"] == "passed"
    point = result["point"]
    assert (point["kind"], point["expected_txid"], point["restored_txid"], point["proven"]) == (
        "at",
        f"{step + 1:016x}",
        f"{step + 1:016x}",
        True,
    )
    assert point["requested_at"] == history.between(step).replace("Z", "")[:23] + "Z"


def test_a_txid_restores_exactly_that_transaction(capsys, history, write_catalogue):
    config = write_catalogue(entry("events", history.replica, smoke=[counting(history.rows(1))]))
    code, result, _ = run(capsys, "events", "--config", str(config), "--txid", "2")
    assert (code, result["verdict"], result["point"]["restored_txid"]) == (0, "PASS", "0000000000000002")
    from drillbook.tasks.evidence import read_bundle

    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.restore.command.argv[1:5] == ["restore", "-json", "-txid", "0000000000000002"]
    assert bundle.point.request.txid == "0000000000000002"


def test_the_oldest_point_is_restored_by_its_txid(capsys, history, write_catalogue):
    config = write_catalogue(entry("events", history.replica, smoke=[counting(history.rows(0))]))
    code, result, _ = run(capsys, "events", "--config", str(config), "--at", "oldest")
    assert (code, result["verdict"], result["point"]["kind"], result["point"]["restored_txid"]) == (0, "PASS", "oldest", "0000000000000001")


def test_a_point_before_any_backup_is_a_fail_and_a_future_one_is_bad_input(capsys, history, write_catalogue):
    config = write_catalogue(entry("events", history.replica))
    early = (history.before - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    code, result, _ = run(capsys, "events", "--config", str(config), "--at", early)
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "point not restorable")
    assert "is before the oldest restorable point (TXID 0000000000000001" in result["findings"][0]["detail"]
    assert "timestamp does not exist" in result["findings"][0]["detail"]  # litestream's own refusal, kept

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    code, result, err = run(capsys, "events", "--config", str(config), "--at", future)
    assert (code, result["verdict"]) == (2, "ERROR")  # under --json, the ERROR object (the exit-code contract)
    assert err.count("\n") == 1 and err.startswith("drillbook: --at ") and "is in the future" in err
    code, result, err = run(capsys, "events", "--config", str(config), "--txid", "not-hex")
    assert (code, result["verdict"], err.count("\n")) == (2, "ERROR", 1)
    assert "--txid 'not-hex': expected a hexadecimal TXID" in err


def test_retention_short_names_the_oldest_point_and_a_long_enough_window_passes(capsys, history, write_catalogue):
    config = write_catalogue(
        entry("short", history.replica, retention_target="1h"), entry("enough", history.replica, retention_target="1s")
    )
    code, result, _ = run(capsys, "short", "--config", str(config), "--at", "retention")
    assert (code, result["failure_mode"]) == (1, "retention window short")
    detail = result["findings"][0]["detail"]
    assert detail.startswith("retention window short: the oldest restorable point is TXID 0000000000000001 written ")
    assert "short of retention_target 1h 00m" in detail
    assert result["point"]["restored_txid"] == "0000000000000001"  # the oldest point was restored for the evidence

    code, result, _ = run(capsys, "enough", "--config", str(config), "--at", "retention")
    assert (code, result["verdict"], result["point"]["proven"]) == (0, "PASS", True)


def test_a_gap_in_the_bucket_is_named_and_never_a_pass(capsys, tmp_path, s3_endpoint, write_catalogue):
    gapped = build_history(
        tmp_path, s3_endpoint, steps=6
    )  # files after the point: S3 lists whole seconds, litestream refuses times in the newest
    delete_txid(s3_endpoint, gapped, 3)
    config = write_catalogue(entry("gapped", gapped.replica, smoke=[counting(gapped.rows(3))]))

    # After the gap: litestream 0.5.17 stops before it and exits 0 with the earlier copy (measured); drillbook FAILs.
    code, result, _ = run(capsys, "gapped", "--config", str(config), "--at", gapped.between(3))
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "point not restorable")
    assert "missing TXIDs 0000000000000003-0000000000000003" in result["findings"][0]["detail"]
    assert result["phases"]["restore"]["status"] == "passed" and result["point"]["restored_txid"] == "0000000000000002"
    assert count_rows(Path(result["scratch_kept"]) / "gapped.db") == gapped.rows(1)

    # Between the last file before the gap and the first after it: litestream restores TXID 2, the state may hold TXID 3.
    code, result, _ = run(capsys, "gapped", "--config", str(config), "--at", gapped.between(2))
    assert (code, result["failure_mode"]) == (1, "point not restorable")
    assert "may include them and cannot be shown" in result["findings"][0]["detail"]

    # A TXID past the gap, or a time after the newest change (the newest TXID): litestream refuses ("no matching backup files available").
    code, result, _ = run(capsys, "gapped", "--config", str(config), "--txid", "4")
    assert (code, result["failure_mode"]) == (1, "point not restorable")
    assert "no matching backup files available" in " ".join(f["detail"] for f in result["findings"])
    code, result, _ = run(capsys, "gapped", "--config", str(config), "--at", gapped.between(5))
    assert (code, result["failure_mode"]) == (1, "point not restorable")
    assert "no matching backup files available" in " ".join(f["detail"] for f in result["findings"])


def test_retention_deleted_the_first_file(capsys, tmp_path, s3_endpoint, write_catalogue):
    pruned = build_history(tmp_path, s3_endpoint, steps=2)
    delete_txid(s3_endpoint, pruned, 1)
    config = write_catalogue(entry("pruned", pruned.replica, retention_target="1s"))
    code, result, _ = run(capsys, "pruned", "--config", str(config), "--at", "retention")
    assert (code, result["failure_mode"]) == (1, "retention window short")
    assert "no file starting at TXID 1" in result["findings"][0]["detail"]


def test_random_point_is_recorded_and_coverage_shows_it(capsys, history, write_catalogue):
    config = write_catalogue(entry("events", history.replica, restore_points={"random_within": "1d", "every": "1h"}))
    code, result, _ = run(capsys, "events", "--config", str(config), "--at", "random")
    assert (code, result["verdict"]) == (0, "PASS"), result["findings"]
    point = result["point"]
    assert point["kind"] == "random" and point["proven"] and point["restored_txid"] == point["expected_txid"]
    chosen = datetime.fromisoformat(point["requested_at"].replace("Z", "+00:00"))
    assert history.after[0] - timedelta(seconds=1) < chosen <= datetime.now(UTC)
    assert any("reaches before the replica's first backup" in note for note in result["notes"])

    assert main(["coverage", "events", "--config", str(config), "--json"]) == 0
    slots = json.loads(capsys.readouterr().out)["slots"]
    proven = [slot for slot in slots if slot["state"] == "proven"]
    assert len(proven) == 1 and proven[0]["point"] == point["requested_at"]
    assert main(["coverage", "events", "--config", str(config)]) == 0
    assert "1 of " in capsys.readouterr().out


def test_nightly_adds_a_random_point_when_due_and_the_retention_drill(history, write_catalogue):
    from drillbook.flows.nightly import nightly_drills

    config = write_catalogue(entry("events", history.replica, restore_points={"random_within": "1d", "every": "1d"}, retention_target="1s"))
    results = nightly_drills(config_path=str(config))
    kinds = [(r.database, r.point.request.kind.value if r.point else None, r.verdict.value) for r in results]
    assert kinds == [("events", None, "PASS"), ("events", "random", "PASS"), ("events", "retention", "PASS")]
    # The cadence: a day has not passed, so the next night drills no random point.
    results = nightly_drills(config_path=str(config))
    assert [r.point.request.kind.value if r.point else None for r in results] == [None, "retention"]


def _orders(path: Path, stamps: list[str]) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, updated_at TEXT NOT NULL)")
    connection.executemany("INSERT INTO orders (updated_at) VALUES (?)", [(s,) for s in stamps])
    connection.commit()
    connection.close()


def _fingerprint(live: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(live.parent.glob(live.name + "*"))}


def test_rpo_from_the_data_measures_what_a_restore_would_lose(capsys, tmp_path, s3_endpoint, write_catalogue):
    live = tmp_path / "orders-live.db"
    _orders(live, ["2026-11-25T10:00:00Z"])
    url = s3_replica_url(s3_endpoint, "drills", f"fresh-{uuid.uuid4().hex[:8]}/app.db")
    replicate_once(live, url)
    query = "SELECT max(updated_at) FROM orders"
    config = write_catalogue(
        entry("idle", url, live_path=str(live), freshness_query=query, rpo_target="5m"),
        entry("elsewhere", url, live_path=str(tmp_path / "not-here.db"), freshness_query=query),
        entry("badquery", url, freshness_query="SELECT max(updated) FROM orders"),
    )
    # Idle: the copy holds the live database's newest row, nothing would be lost.
    code, result, _ = run(capsys, "idle", "--config", str(config))
    assert (code, result["data_loss_seconds"]) == (0, 0.0)

    # Ten minutes of orders never reached the replica: that is the data-loss window, over the 5m target.
    _orders(live, ["2026-11-25T10:10:00Z"])
    before = _fingerprint(live)
    code, result, _ = run(capsys, "idle", "--config", str(config))
    assert (code, result["failure_mode"], result["data_loss_seconds"]) == (1, "replica lag", 600.0)
    assert result["findings"][0]["detail"] == "data-loss window (freshness_query) is 600s, over the 300s RPO target by 300s"
    assert result["phases"]["freshness"]["status"] == "passed"
    assert _fingerprint(live) == before  # read with mode=ro: not a byte of the live database changed

    code, result, _ = run(capsys, "elsewhere", "--config", str(config))
    assert (code, result["data_loss_seconds"]) == (0, None)
    assert any("is not on this machine: data-loss window not measured" in note for note in result["notes"])

    # A query naming a column the copy lacks (no live database here to blame the query instead): the copy's finding.
    code, result, _ = run(capsys, "badquery", "--config", str(config))
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "schema mismatch")
    assert "freshness_query cannot run: the restored copy has no column updated (its tables: orders)" in result["findings"][0]["detail"]


def test_compacted_away_points_restore_earlier_and_a_txid_inside_is_refused(capsys, tmp_path, write_catalogue):
    """A real `litestream replicate` with fast compaction: level-0 files are compacted into level 1 and then deleted."""
    import subprocess

    from drillbook.tasks.litestream import find_litestream, litestream_env

    live, replica = tmp_path / "busy.db", tmp_path / "replica"
    connection = sqlite3.connect(live)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, step INTEGER NOT NULL, at TEXT NOT NULL)")
    connection.commit()
    config = tmp_path / "litestream.yml"
    config.write_text(
        "l0-retention: 2s\nl0-retention-check-interval: 1s\nlevels:\n  - interval: 3s\nsnapshot:\n  interval: 8s\n  retention: 1h\n"
        f"dbs:\n  - path: {live}\n    replica:\n      url: file://{replica}\n      sync-interval: 200ms\n"
    )
    process = subprocess.Popen(
        [find_litestream(), "replicate", "-config", str(config)],
        env=litestream_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from drillbook.tasks.config import DatabaseEntry
    from drillbook.tasks.points import read_timeline

    url = f"file://{replica}"
    busy = DatabaseEntry(name="busy", replica=url, rto_target=60, rpo_target=600)

    def compacted_inside():
        """A level-1 file after the first point holding a TXID no file ends at, with every level-0 file up to its end removed.

        Up to its end, not only below it: a level-0 file still holding its last TXID keeps the change after the point
        uncompacted, and the drill rightly notes nothing (seen in CI: L1 3-5 beside a level-0 file of TXID 5).
        """
        timeline, _ = read_timeline(busy)
        ends = {f.max_txid for f in timeline.files}
        for f in sorted(timeline.files, key=lambda f: f.min_txid):
            if f.level != 1 or f.min_txid <= 1:
                continue
            inside = [t for t in range(f.min_txid, f.max_txid) if t not in ends]
            if inside and not any(g.level == 0 and g.min_txid <= f.max_txid for g in timeline.files):
                before = max((g.time for g in timeline.files if g.max_txid == f.min_txid - 1), default=None)
                return f, inside[0], before
        return None

    found = None
    deadline = time.monotonic() + 90
    try:
        step = 0
        while found is None and time.monotonic() < deadline:
            connection.execute("INSERT INTO events (step, at) VALUES (?, ?)", (step, datetime.now(UTC).isoformat()))
            connection.commit()
            step += 1
            time.sleep(0.5)
            if step >= 6 and replica.exists():
                found = compacted_inside()
    finally:
        process.terminate()
        process.wait(timeout=30)
        connection.close()
    assert found is not None, (
        "litestream did not compact level-0 files into a level-1 file and remove them within 90s "
        f"({step} writes; replica holds {sorted(p.relative_to(replica).as_posix() for p in replica.rglob('*.ltx'))[:20]})"
    )
    compacted, txid, before = found

    # A TXID inside the compacted file: litestream refuses; drillbook names the file and the nearest restorable TXIDs.
    inside = f"{txid:016x}"
    catalogue = write_catalogue(
        entry("busy", url, rpo_target="1d", smoke=[{"name": "nothing after the point", "sql": "SELECT 1", "equals": 1}])
    )
    code, result, _ = run(capsys, "busy", "--config", str(catalogue), "--txid", inside)
    assert (code, result["failure_mode"]) == (1, "point not restorable")
    assert (
        f"TXID {inside} is inside the compacted file L1 {compacted.min_txid:016x}-{compacted.max_txid:016x}"
        in result["findings"][0]["detail"]
    )
    assert "no matching backup files available" in result["findings"][0]["detail"]

    # A time inside the compacted range: the state before the range (the file's time is when it was compacted), noted.
    # Inside: after the state before the range was recorded (two compactions can land close together under load).
    gap = (compacted.time - before) / 2 if before is not None else timedelta(milliseconds=300)
    moment = compacted.time - min(timedelta(milliseconds=300), gap)
    at = moment.isoformat().replace("+00:00", "Z")
    after_point = {
        "name": "no row written after the point",
        "sql": f"SELECT count(*) FROM events WHERE at >= '{moment.isoformat()}'",
        "equals": 0,
    }
    catalogue = write_catalogue(entry("busy", url, rpo_target="1d", smoke=[after_point]))
    code, result, _ = run(capsys, "busy", "--config", str(catalogue), "--at", at)
    assert (code, result["verdict"]) == (0, "PASS"), result["findings"]
    # The last transaction of the range was committed before the point, yet the copy stops short of it: measured, by design.
    assert int(result["point"]["restored_txid"], 16) < compacted.max_txid
    assert result["point"]["restored_txid"] == result["point"]["expected_txid"]
    assert any("kept only compacted" in note for note in result["notes"]), (result["notes"], result["point"], compacted)


def test_a_point_drill_runs_writers_and_compat_at_the_point_and_says_why_the_newest_only_phases_did_not(
    capsys, history, write_catalogue, s3_endpoint
):
    config = write_catalogue(
        entry(
            "events",
            history.replica,
            smoke=[counting(history.rows(1))],
            live_path=str(history.live),
            freshness_query="SELECT max(at) FROM events",
            follow={"seconds": "2s", "freshness_target": "5s"},
            promote={"replica": s3_replica_url(s3_endpoint, "drills", f"promoted-{uuid.uuid4().hex[:8]}"), "writes": ["SELECT 1"]},
            restore_with=["0.5.16"],
        )
    )
    code, result, err = run(capsys, "events", "--config", str(config), "--txid", "2")
    assert code == 0, (result, err)
    phases = result["phases"]
    assert phases["writers"]["status"] == "passed", phases["writers"]  # the replica's history, whatever the point
    assert phases["compat"]["status"] == "passed", phases["compat"]
    from drillbook.tasks.evidence import read_bundle

    [row] = read_bundle(Path(result["evidence"])).compat.rows
    assert (row.version, row.asked_txid, row.txid, row.same_data) == ("0.5.16", "0000000000000002", "0000000000000002", True)
    for phase, why in [("follow", "a follower follows"), ("promote", "a promotion starts from"), ("freshness", "freshness_query")]:
        assert phases[phase]["status"] == "skipped", phases[phase]
        assert phases[phase]["summary"].startswith(f"not run at TXID 0000000000000002: {why}"), phases[phase]
    assert result["point"]["restored_txid"] == "0000000000000002"
