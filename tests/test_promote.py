"""The promotion drill: a restored copy becomes a primary with the real `litestream replicate` on moto's S3 server,
takes writes, and must come back with them from its new prefix. The live side is never written."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry, load_catalogue
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.outcome import Status
from drillbook.tasks.promote import PromoteProblem, promote_copy
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.restore import restore_database
from drillbook.testing.corpus import S3Target
from drillbook.testing.faultproxy import FaultProxy
from drillbook.testing.primary import running_primary
from drillbook.testing.s3 import s3_replica_url
from tests.conftest import entry
from tests.test_follow import processes_with

SEQ_INSERT = "INSERT INTO seq (n, committed_at) VALUES (-1, 0)"  # the workload's table (testing/workload.py)
INSERT = "INSERT INTO customers (email, name, created_at) VALUES ('promoted@example.com', 'promoted', '2026-01-01')"


def prefix_objects(endpoint: str, url_path: str) -> list[tuple[str, str, int]]:
    """(key, ETag, size) of every object below bucket 'drills', path `url_path`."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="drills", Prefix=url_path.rstrip("/") + "/")
    return sorted((item["Key"], item["ETag"], item["Size"]) for page in pages for item in page.get("Contents", []))


def test_a_promotion_passes_deletes_its_prefix_and_never_writes_the_live_side(write_catalogue, s3_endpoint, capsys, tmp_path):
    key = f"{uuid.uuid4().hex[:10]}/app.db"
    with running_primary(tmp_path / "primary", S3Target(s3_endpoint, "drills", key)) as primary:  # a replica made under writes
        deadline = time.monotonic() + 30
        while len(prefix_objects(s3_endpoint, key)) < 3:  # a few uploads under writes, not only the first
            assert time.monotonic() < deadline, f"the replica did not grow: {prefix_objects(s3_endpoint, key)}"
            time.sleep(0.1)
    live = primary.db_path
    live_bytes = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in live.parent.glob("app.db*") if path.is_file()}
    live_objects = prefix_objects(s3_endpoint, key)
    promoted = f"promoted-{uuid.uuid4().hex[:8]}"
    write_command = [sys.executable, "-c", "import os, sqlite3; c = sqlite3.connect(os.environ['DRILLBOOK_DB_PATH']); "
                     "c.execute('UPDATE accounts SET balance = -1 WHERE id = 1'); c.commit()"]  # fmt: skip
    config = write_catalogue(
        entry(
            "orders",
            primary.url,
            live_path=str(live),
            failover_rto_target="60s",
            promote={"replica": s3_replica_url(s3_endpoint, "drills", promoted), "writes": [SEQ_INSERT, {"command": write_command}]},
        )
    )

    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 0, result
    phase = result["phases"]["promote"]
    assert phase["status"] == "passed" and phase["summary"].startswith("failover RTO ")
    assert "2 write(s) restorable from the new prefix at TXID " in phase["summary"]
    assert result["promote"]["failover_rto_target"] == 60.0 and 0 < result["promote"]["failover_rto_seconds"] < 60
    assert any(note.startswith("deleted the drill's promotion prefix s3://drills/promoted-") for note in result["notes"])
    assert prefix_objects(s3_endpoint, promoted) == []  # the scratch prefix is gone
    after = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in live.parent.glob("app.db*") if path.is_file()}
    assert after == live_bytes  # the live database and its sidecars, byte for byte
    assert prefix_objects(s3_endpoint, key) == live_objects  # the live replica, object for object (ETags included)
    assert processes_with(str(tmp_path / "scratch")) == []


@pytest.fixture
def restored(replicate, tmp_path):
    """A restored copy in scratch, as the drill's restore step leaves it, and its entry's fields."""
    replicated = replicate()
    fields = {"name": "orders", "replica": replicated.replica, "rto_target": "2m", "rpo_target": "10m"}
    plain = DatabaseEntry(**fields)
    scratch = tmp_path / "scratch" / "orders" / "drill"
    scratch.mkdir(parents=True)
    copy = restore_database(plain, inspect_replica(plain), scratch)
    assert copy.ok, copy.summary
    return fields, copy, scratch


def test_writes_an_endpoint_acknowledges_and_drops_are_lost(restored, s3_endpoint):
    fields, copy, scratch = restored
    before = hashlib.sha256(Path(copy.path).read_bytes()).hexdigest()
    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("put", "drop")  # 200 and an ETag, nothing stored
        settings = DatabaseEntry(
            **fields,
            failover_rto_target="3s",
            promote={"replica": s3_replica_url(proxy.url, "drills", f"lost-{uuid.uuid4().hex[:8]}"), "writes": [INSERT]},
        )
        report = promote_copy(settings, Path(copy.path), scratch)

    assert report.status == Status.FAILED and report.problem == PromoteProblem.WRITES_LOST
    assert report.summary.startswith("writes lost: 1 write(s) on the promoted copy were not restorable from s3://drills/lost-")
    assert "no matching backup files available" in report.summary
    assert [s.outcome for s in proxy.seen("put")] and all(s.outcome == "drop" for s in proxy.seen("put"))
    assert not report.cleaned and report.replicate is not None and not report.replicate.group_left
    assert hashlib.sha256(open(copy.path, "rb").read()).hexdigest() == before  # noqa: SIM115 - the restored copy is untouched
    assert processes_with(str(scratch)) == []


def test_a_write_that_fails_on_the_promoted_copy_is_named(restored, s3_endpoint):
    fields, copy, scratch = restored
    settings = DatabaseEntry(
        **fields,
        promote={
            "replica": s3_replica_url(s3_endpoint, "drills", f"bad-{uuid.uuid4().hex[:8]}"),
            "writes": [INSERT, "INSERT INTO nowhere VALUES (1)"],
        },
    )

    report = promote_copy(settings, Path(copy.path), scratch)

    assert report.status == Status.FAILED and report.problem == PromoteProblem.WRITE_FAILED
    assert report.summary == "write 2 (INSERT INTO nowhere VALUES (1)) failed on the promoted copy: no such table: nowhere"
    assert [w.ok for w in report.writes] == [True, False]
    assert processes_with(str(scratch)) == []


LIVE = "s3://drills/orders/app.db?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true"


@pytest.mark.parametrize(
    ("promote", "said"),
    [
        ("s3://drills/orders/app.db?endpoint=http://127.0.0.1:9000", "is the live replica"),
        ("s3://drills/orders/app.db/promoted?endpoint=http://127.0.0.1:9000", "lies inside the live replica"),
        ("s3://drills/orders?endpoint=http://127.0.0.1:9000/", "contains the live replica"),
        ("file:///srv/replicas/orders", "lies inside the live replica"),
    ],
)
def test_a_promotion_prefix_overlapping_the_live_replica_is_a_config_error(write_catalogue, promote, said):
    live = "file:///srv/replicas" if promote.startswith("file:") else LIVE
    config = write_catalogue(entry("orders", live, promote={"replica": promote, "writes": [INSERT]}))

    with pytest.raises(ConfigError) as raised:
        load_catalogue(config)

    message = str(raised.value)
    assert "database[0] 'orders': field promote: promote.replica " in message
    assert f"{said} {live}" in message and promote.split("?")[0] in message


def test_siblings_and_other_buckets_are_apart_and_follow_needs_a_freshness_query(write_catalogue):
    for apart in (
        "s3://drills/orders-promoted?endpoint=http://127.0.0.1:9000",
        "s3://scratch/orders/app.db?endpoint=http://127.0.0.1:9000",
    ):
        assert load_catalogue(write_catalogue(entry("orders", LIVE, promote={"replica": apart, "writes": [INSERT]}))).get("orders").promote
    with pytest.raises(ConfigError, match="field follow: a follow drill measures staleness with freshness_query"):
        load_catalogue(write_catalogue(entry("orders", LIVE, follow={"freshness_target": "5s"}), name="follow.toml"))


def test_drillbook_promote_rehearses_alone_and_follow_says_what_is_missing(replicate, write_catalogue, s3_endpoint, capsys):
    replicated = replicate()
    promoted = f"cli-{uuid.uuid4().hex[:8]}"
    config = write_catalogue(
        entry("orders", replicated.replica, promote={"replica": s3_replica_url(s3_endpoint, "drills", promoted), "writes": [INSERT]})
    )

    assert main(["promote", "orders", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("PASSED orders promote: failover RTO ")
    assert prefix_objects(s3_endpoint, promoted) == []

    assert main(["follow", "orders", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"drillbook: database 'orders' has no follow = {{ ... }} in {config}: add one (README, 'Read replicas and promotion')"
    )


def test_the_nightly_runs_the_promotion_inside_each_configured_drill(replicate, write_catalogue, s3_endpoint):
    from drillbook.flows.nightly import nightly_drills  # Prefect

    plain, promoted = replicate(), replicate()
    prefix = f"nightly-{uuid.uuid4().hex[:8]}"
    config = write_catalogue(
        entry("plain", plain.replica),
        entry("standby", promoted.replica, promote={"replica": s3_replica_url(s3_endpoint, "drills", prefix), "writes": [INSERT]}),
    )

    results = {r.database: r for r in nightly_drills(config_path=str(config))}

    assert {name: r.verdict.value for name, r in results.items()} == {"plain": "PASS", "standby": "PASS"}
    assert results["plain"].promote is None and "promote" not in results["plain"].phases
    assert results["standby"].promote.status == Status.PASSED and results["standby"].promote.failover_rto_seconds > 0
    assert results["standby"].summary()["promote"]["status"] == "passed"
    assert prefix_objects(s3_endpoint, prefix) == []
