"""LiteFS for real: the binary built (or found), a static-lease cluster on FUSE, writes through the primary, reads on a replica.

The binary comes from drillbook's cache ($DRILLBOOK_HOME/litefs, built once per
machine with `go install`, about 30 s from a clean cache). The one-line errors
for a missing go or FUSE are made by the environment (PATH, a device path), not
by uninstalling anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from drillbook.tasks import litefs_bin
from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.litefs.cluster import PROBE_DB, LiteFSCluster, Position, litefs_cluster, mounted


@pytest.fixture
def cluster(tmp_path, litefs_binary):
    with litefs_cluster(tmp_path / "cluster", nodes=2, binary=litefs_binary) as started:
        yield started
    for node in started.nodes:  # the teardown left nothing behind
        assert not node.running and not mounted(node.mount)


def _insert(path: Path, rows: int = 1, *, wal: bool = False) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        if wal:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, at REAL)")
        for _ in range(rows):
            connection.execute("INSERT INTO orders (at) VALUES (?)", (time.time(),))
    finally:
        connection.close()


def _count(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        connection.close()


@pytest.mark.slow
def test_the_build_is_recorded_and_checked(litefs_binary, tmp_path):
    if litefs_binary.parent.parent != litefs_bin.litefs_cache():
        pytest.skip(f"litefs came from PATH ({litefs_binary}), not from drillbook's build")
    record = json.loads((litefs_binary.parent / litefs_bin.RECORD).read_text())
    assert record["module"] == "github.com/superfly/litefs/cmd/litefs" and record["version"] == "v0.5.14"
    assert record["binary_sha256"] == litefs_bin._sha256(litefs_binary)
    # A copy whose binary changed after it was built is refused, naming both checksums.
    copy = tmp_path / "cache" / "v0.5.14"
    copy.mkdir(parents=True)
    (copy / "litefs").write_bytes(b"#!/bin/sh\n")
    (copy / litefs_bin.RECORD).write_text(json.dumps(record))
    with pytest.raises(ToolMissing, match=r"has sha256 [0-9a-f]{64}, but build.json recorded " + record["binary_sha256"]):
        litefs_bin.litefs_binary("v0.5.14", cache=tmp_path / "cache")


@pytest.mark.slow
def test_a_write_on_the_primary_reaches_the_replica(cluster):
    primary, (replica,) = cluster.primary, cluster.replicas
    assert primary.info()["isPrimary"] is True and replica.info()["isPrimary"] is False
    assert primary.primary_hostname() is None and replica.primary_hostname() == "node1"

    _insert(primary.db("app.db"), rows=10)
    seconds = cluster.wait_replicated("app.db", timeout=5)
    assert seconds < 5
    assert _count(replica.db("app.db")) == 10
    assert replica.position("app.db") == primary.position("app.db")
    assert replica.position("app.db").txid == primary.stored_txid("app.db") == replica.stored_txid("app.db")
    print(f"replication of 10 commits seen on the replica after {seconds * 1000:.0f} ms; ready in {replica.ready_seconds:.2f}s")


@pytest.mark.slow
def test_a_stopped_replica_falls_behind_and_catches_up(cluster):
    primary, (replica,) = cluster.primary, cluster.replicas
    _insert(primary.db("app.db"), rows=3)
    cluster.wait_replicated("app.db", timeout=5)
    before = replica.position("app.db")

    cluster.stop(replica)
    assert not mounted(replica.mount) and replica.position("app.db") is None
    _insert(primary.db("app.db"), rows=5)
    ahead = primary.position("app.db")
    assert ahead.txid == before.txid + 5
    assert replica.stored_txid("app.db") == before.txid  # what it held when it stopped

    ready = cluster.restart(replica)
    cluster.wait_replicated("app.db", timeout=5)
    assert replica.position("app.db") == ahead and _count(replica.db("app.db")) == 8
    print(f"replica restarted and ready in {ready:.2f}s")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wal", "message", "code"),
    [(False, "attempt to write a readonly database", "SQLITE_READONLY_DIRECTORY"), (True, "disk I/O error", "SQLITE_IOERR_WRITE")],
)
def test_a_write_on_a_replica_fails_with_litefs_read_only_error(cluster, wal, message, code):
    primary, (replica,) = cluster.primary, cluster.replicas
    _insert(primary.db("app.db"), wal=wal)
    cluster.wait_replicated("app.db", timeout=5)
    before = replica.position("app.db")
    with pytest.raises(sqlite3.OperationalError, match=message) as raised:
        _insert(replica.db("app.db"))
    assert raised.value.sqlite_errorname == code
    assert replica.position("app.db") == before == primary.position("app.db")
    assert "read only replica" in replica.log_text(last=200)


@pytest.mark.slow
def test_three_nodes_start_and_every_replica_follows(tmp_path, litefs_binary):
    with litefs_cluster(tmp_path / "three", nodes=3, binary=litefs_binary) as cluster:
        assert [n.name for n in cluster.nodes] == ["node1", "node2", "node3"]
        assert {n.position(PROBE_DB) for n in cluster.nodes} == {cluster.primary.position(PROBE_DB)}
        _insert(cluster.primary.db("app.db"), rows=2)
        cluster.wait_replicated("app.db", timeout=5)
        assert [_count(n.db("app.db")) for n in cluster.replicas] == [2, 2]


@pytest.mark.slow
def test_the_teardown_unmounts_after_a_crashed_node(tmp_path, litefs_binary):
    cluster = LiteFSCluster(tmp_path / "crash", nodes=2, binary=litefs_binary)
    try:
        cluster.start_all()
        os.killpg(cluster.replicas[0].process.pid, 9)  # a crash: LiteFS cannot unmount itself
        cluster.replicas[0].process.wait()
        assert mounted(cluster.replicas[0].mount)  # left behind, "Transport endpoint is not connected"
    finally:
        cluster.close()
    assert not any(mounted(n.mount) or n.running for n in cluster.nodes)


def test_position_file_is_parsed():
    assert Position.parse("0000000000000012/ec3f1536d45c9e35\n") == Position(18, "ec3f1536d45c9e35")


def test_missing_go_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither litefs nor go on PATH
    monkeypatch.setattr(litefs_bin, "_GO_FALLBACK", str(tmp_path / "go" / "bin" / "go"))
    with pytest.raises(ToolMissing) as raised:
        litefs_bin.find_litefs(cache=tmp_path / "cache")
    assert str(raised.value) == (
        "go is not installed: building litefs v0.5.14 needs Go 1.21 or newer (apt-get install golang-go, or Go's release archive "
        "into /usr/local/go); or put a litefs binary on PATH."
    )
    assert not (tmp_path / "cache" / "v0.5.14").exists()


def test_missing_fuse_device_is_one_line(tmp_path):
    with pytest.raises(ToolMissing) as raised:
        litefs_bin.check_fuse(device=str(tmp_path / "fuse"))
    assert str(raised.value) == (
        f"{tmp_path / 'fuse'} is missing: LiteFS mounts through FUSE; load the module (modprobe fuse) or, in a container, "
        f"pass the device (--device {tmp_path / 'fuse'} --cap-add SYS_ADMIN)."
    )


def test_missing_fusermount3_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as raised:
        litefs_bin.check_fuse()
    assert str(raised.value) == ("fusermount3 is not on PATH: LiteFS mounts and unmounts through it; install it (apt-get install fuse3).")


def test_an_explicit_binary_that_is_not_there_is_one_line(tmp_path):
    with pytest.raises(ToolMissing, match=r"^litefs binary .*/nope is not an executable file; fix the path or leave it out"):
        litefs_bin.find_litefs(tmp_path / "nope")


@pytest.mark.slow
def test_the_proxy_forwards_writes_on_the_primary_and_names_it_on_a_replica(tmp_path, litefs_binary):
    from drillbook.testing.litefs_app import call, node_apps

    with litefs_cluster(tmp_path / "proxy", nodes=2, binary=litefs_binary, proxy_db="app.db") as cluster:
        primary, (replica,) = cluster.primary, cluster.replicas
        with node_apps(cluster.nodes, "app.db"):
            first = call(primary, "POST", "/orders/1")
            assert first.written and first.body == "node1 wrote 1\n" and first.cookie.startswith("__txid=")
            # A read on the replica with the writer's cookie waits for that TXID: it sees the write.
            assert call(replica, "GET", "/orders", cookie=first.cookie).body == "node2 1 1\n"
            # A write on the replica never reaches the application: 200, no body, Fly-Replay naming the primary.
            sent = call(replica, "POST", "/orders/2")
            assert (sent.status, sent.body, sent.replay, sent.written) == (200, "", "instance=node1", False)
            assert call(primary, "GET", "/orders").body == "node1 1 1\n"
            # The primary gone: the replica still serves reads; its proxy still names node1 (a static lease).
            cluster.stop(primary)
            assert call(replica, "GET", "/orders").body == "node2 1 1\n"
            assert call(replica, "POST", "/orders/3").replay == "instance=node1"
            assert replica.primary_hostname() is None and replica.info()["primary"]["hostname"] == ""


def _ids(path: Path) -> list[int]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [row[0] for row in connection.execute("SELECT id FROM orders ORDER BY id")]
    finally:
        connection.close()


@pytest.mark.slow
def test_a_static_switch_keeps_the_writes_and_a_rejoining_writer_loses_its_own(tmp_path, litefs_binary):
    from drillbook.tasks.litefs.cluster import node_config

    with litefs_cluster(tmp_path / "switch", nodes=3, binary=litefs_binary) as cluster:
        node1, node2, node3 = cluster.nodes
        _insert(node1.db("app.db"), rows=5)
        cluster.wait_replicated("app.db")
        seconds = cluster.switch_primary(node2)  # the operator's switch: a static lease has no election
        assert cluster.primary is node2 and node2.info()["isPrimary"] and not node1.running
        assert node3.primary_hostname() == "node2" and _ids(node2.db("app.db")) == [1, 2, 3, 4, 5]
        _insert(node2.db("app.db"), rows=2)
        cluster.start(node1)  # the old primary returns as a replica of node2
        cluster.wait_replicated("app.db")
        assert _ids(node1.db("app.db")) == [1, 2, 3, 4, 5, 6, 7] and node1.primary_hostname() == "node2"

        # node3 writes alone as a primary of its own (a lease confusion), then rejoins: node2's snapshot replaces its write.
        cluster.stop(node3)
        node3.config.write_text(node_config(node3, node3))
        cluster.start(node3)
        _insert(node3.db("app.db"))
        assert node3.position("app.db").txid == node2.position("app.db").txid + 1
        cluster.stop(node3)
        node3.config.write_text(node_config(node3, node2))
        cluster.start(node3)
        cluster.wait_replicated("app.db")
        assert _ids(node3.db("app.db")) == [1, 2, 3, 4, 5, 6, 7]  # id 8, written on node3, is gone without an error
        print(f"static switch to node2 ready in {seconds:.2f}s")


def test_a_switch_that_lost_writes_within_the_rpo_target_keeps_its_note():
    """The within-RPO loss of a crash switch is a note (it was a drill ERROR: the result had no notes field)."""
    from drillbook.tasks.litefs.phases import PrimarySwitch

    switch = PrimarySwitch()
    switch.notes = ["2 write(s) from the last 0.40s before the crash were not replicated (within the RPO target)"]
    assert PrimarySwitch.model_validate(switch.model_dump()).notes == switch.notes
