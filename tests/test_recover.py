"""`drillbook recover --find-clean`: real litestream against moto's S3 server, replicas broken by a "migration" at a known TXID.

Each history is written as an operator's grows: rows, `litestream replicate -once` (one LTX
file, one TXID per step). At step K a migration breaks the database: (a) an index no longer
matches its table (integrity_check fails from then on), or (b) the data only (a smoke check
starts failing). The search must return TXID K, the point just before, in a bounded number of
restores, and its copy must hold exactly the rows of that point.
"""

from __future__ import annotations

import json
import math
import shlex
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.testing.s3 import replicate_once, s3_replica_url
from tests.conftest import entry

ROWS = 3
STEPS = 8
BROKEN_AT = 5  # the migration's step: TXID 6 is the first broken point, TXID 5 the newest clean one


@dataclass
class Broken:
    live: Path
    replica: str
    clean_txid: int  # the newest clean point

    def rows_at(self, txid: int) -> int:
        return ROWS * txid  # steps before the migration add ROWS rows each, one TXID each


def break_index(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA writable_schema=ON")
    connection.execute("UPDATE sqlite_schema SET sql = 'CREATE INDEX events_step ON events(at)' WHERE name = 'events_step'")
    connection.commit()
    connection.execute("PRAGMA writable_schema=OFF")


def break_data(connection: sqlite3.Connection) -> None:
    connection.execute("UPDATE events SET step = -1 WHERE id % 2 = 0")  # a bad backfill: pages fine, data wrong
    connection.commit()


def build(directory: Path, endpoint: str, migration, *, steps: int = STEPS, broken_at: int = BROKEN_AT) -> Broken:
    live = directory / f"live-{uuid.uuid4().hex[:6]}.db"
    replica = s3_replica_url(endpoint, "drills", f"recover-{uuid.uuid4().hex[:8]}/app.db")
    connection = sqlite3.connect(live)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, step INTEGER NOT NULL, at TEXT NOT NULL)")
    connection.execute("CREATE INDEX events_step ON events(step)")
    for step in range(steps):
        if step == broken_at:
            connection.close()
            connection = sqlite3.connect(live)
            migration(connection)
            connection.close()
            connection = sqlite3.connect(live)  # a fresh connection reads the migrated schema
        else:
            connection.executemany("INSERT INTO events (step, at) VALUES (?, ?)", [(step, f"{step}-{i}") for i in range(ROWS)])
            connection.commit()
        replicate_once(live, replica)
    connection.close()
    return Broken(live=live, replica=replica, clean_txid=broken_at)


@pytest.fixture(scope="module")
def index_broken(tmp_path_factory, s3_endpoint) -> Broken:
    return build(tmp_path_factory.mktemp("index"), s3_endpoint, break_index)


@pytest.fixture(scope="module")
def data_broken(tmp_path_factory, s3_endpoint) -> Broken:
    return build(tmp_path_factory.mktemp("data"), s3_endpoint, break_data)


NO_NEGATIVE = {"name": "no negative steps", "sql": "SELECT count(*) FROM events WHERE step < 0", "equals": 0}


def recover(capsys, config: Path, output: Path, *extra: str, json_out: bool = True) -> tuple[int, dict | None, str, str]:
    argv = ["recover", "events", "--config", str(config), "--find-clean", "--output", str(output), *extra]
    code = main(argv + (["--json"] if json_out else []))
    captured = capsys.readouterr()
    data = json.loads(captured.out) if json_out and captured.out.strip().startswith("{") else None
    return code, data, captured.out, captured.err


def count_rows(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        connection.close()


def bound(points: int) -> int:
    return math.ceil(math.log2(points)) + 2


def scratch_left(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]


def test_a_corrupted_index_finds_the_point_just_before_the_migration(capsys, tmp_path, index_broken, write_catalogue):
    config = write_catalogue(entry("events", index_broken.replica, live_path=str(index_broken.live)))
    output = tmp_path / "clean.db"
    code, data, _, _ = recover(capsys, config, output)
    assert code == 0, data
    assert data["points"] == STEPS
    assert data["winner"]["txid"] == f"{index_broken.clean_txid:016x}"
    assert data["restores"] <= bound(STEPS)
    assert data["lost"]["txids"] == STEPS - index_broken.clean_txid
    broken = [t for t in data["tried"] if t["state"] == "broken"]
    assert broken and all("integrity_check" in t["reason"] for t in broken)
    assert all(int(t["txid"], 16) > index_broken.clean_txid for t in broken)
    assert count_rows(output) == index_broken.rows_at(index_broken.clean_txid)
    connection = sqlite3.connect(f"file:{output}?mode=ro", uri=True)
    assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()
    txid = f"{index_broken.clean_txid:016x}"
    assert data["command"] == shlex.join(["litestream", "restore", "-txid", txid, "-o", str(output), index_broken.replica])
    assert scratch_left(tmp_path) == []  # every copy tried was removed


def test_the_terminal_session_names_every_point_the_winner_and_the_command(capsys, tmp_path, index_broken, write_catalogue):
    config = write_catalogue(entry("events", index_broken.replica))
    output = tmp_path / "clean.db"
    code, _, out, err = recover(capsys, config, output, json_out=False)
    assert code == 0, err
    assert f"newest clean point: TXID {index_broken.clean_txid:016x}" in out
    assert f"loses {STEPS - index_broken.clean_txid} TXID(s)" in out
    assert f"reproduce: litestream restore -txid {index_broken.clean_txid:016x} -o {output} 's3://drills/" in out
    assert f"tried TXID {STEPS:016x}" in out and ": broken - integrity_check:" in out
    assert "\x1b[" not in out + err  # no progress display when stderr is not a terminal


def test_data_broken_by_a_migration_is_found_with_the_smoke_checks(capsys, tmp_path, data_broken, write_catalogue):
    config = write_catalogue(entry("events", data_broken.replica, smoke=[NO_NEGATIVE]))
    output = tmp_path / "clean.db"
    code, data, _, _ = recover(capsys, config, output, "--checks", "smoke")
    assert code == 0, data
    assert data["winner"]["txid"] == f"{data_broken.clean_txid:016x}"
    assert data["restores"] <= bound(STEPS)
    assert any("smoke: 1 of 1 smoke checks failed: no negative steps" in t["reason"] for t in data["tried"])
    assert count_rows(output) == data_broken.rows_at(data_broken.clean_txid)
    # Integrity alone cannot see it: the newest point's pages are fine.
    other = tmp_path / "newest.db"
    code, data, _, _ = recover(capsys, config, other)
    assert (code, data["winner"]["txid"], data["restores"]) == (0, f"{STEPS:016x}", 2)


def test_data_broken_by_a_migration_is_found_with_the_expectation_suites(capsys, tmp_path, data_broken, write_catalogue):
    suite = tmp_path / "expectations" / "events" / "steps.json"
    suite.parent.mkdir(parents=True)
    steps = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "step", "min_value": 0, "max_value": 1000}}
    suite.write_text(json.dumps({"name": "steps", "meta": {"table": "events"}, "expectations": [steps]}))
    config = write_catalogue(entry("events", data_broken.replica))
    output = tmp_path / "clean.db"
    code, data, _, _ = recover(capsys, config, output, "--checks", "expectations")
    assert code == 0, data
    assert data["winner"]["txid"] == f"{data_broken.clean_txid:016x}"
    assert data["restores"] <= bound(STEPS)
    assert any(t["reason"] and t["reason"].startswith("expectations: ") for t in data["tried"]), data["tried"]
    assert count_rows(output) == data_broken.rows_at(data_broken.clean_txid)


def test_a_replica_broken_from_its_first_point_has_no_clean_point(capsys, tmp_path, s3_endpoint, write_catalogue):
    def rows_then_break(connection: sqlite3.Connection) -> None:  # an index over no rows cannot disagree with them
        connection.executemany("INSERT INTO events (step, at) VALUES (?, ?)", [(0, f"0-{i}") for i in range(ROWS)])
        connection.commit()
        break_index(connection)

    broken = build(tmp_path, s3_endpoint, rows_then_break, steps=4, broken_at=0)
    config = write_catalogue(entry("events", broken.replica))
    output = tmp_path / "clean.db"
    code, _, out, _ = recover(capsys, config, output, json_out=False)
    assert code == 1
    assert "no clean point found: every point tried is broken; looked back to TXID 0000000000000001" in out
    assert "next: run `PRAGMA integrity_check` on the primary" in out
    assert not output.exists()
    assert scratch_left(tmp_path) == []


def test_an_existing_output_or_the_live_database_is_refused(capsys, tmp_path, index_broken, write_catalogue):
    config = write_catalogue(entry("events", index_broken.replica, live_path=str(index_broken.live)))
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"keep me")
    code, _, _, err = recover(capsys, config, taken, json_out=False)
    assert code == 2
    assert f"the output path already exists: {taken}; drillbook never overwrites a file" in err
    assert taken.read_bytes() == b"keep me"
    fresh = tmp_path / "nowhere" / "x.db"
    code, _, _, err = recover(capsys, config, fresh, json_out=False)
    assert (code, f"the output's directory does not exist: {fresh.parent}" in err) == (2, True)
    beside_live = index_broken.live.with_name(index_broken.live.name + "-recovered")
    code, _, _, err = recover(capsys, config, beside_live, json_out=False)
    assert code == 2 and "it is, or contains, the live database" in err
    assert not beside_live.exists()


def test_a_replica_that_cannot_be_listed_is_an_error_with_the_inspection_summary(capsys, tmp_path, s3_endpoint, write_catalogue):
    config = write_catalogue(entry("events", s3_replica_url(s3_endpoint, "drills", "nothing-here/app.db")))
    code, _, _, err = recover(capsys, config, tmp_path / "clean.db", json_out=False)
    assert code == 2
    assert "the replica of 'events' cannot be searched: no backup:" in err


def test_a_spent_budget_stops_the_search_and_says_so(capsys, tmp_path, index_broken, write_catalogue):
    config = write_catalogue(entry("events", index_broken.replica))
    code, _, out, _ = recover(capsys, config, tmp_path / "clean.db", "--budget", "0.001s", json_out=False)
    assert code == 1
    assert f"no clean point found: the budget of 0.0s ran out; looked back to TXID {STEPS:016x}" in out
