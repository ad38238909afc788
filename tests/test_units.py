"""Small pieces with real processes and files: the litestream runner, the live-path guard, integrity."""

from __future__ import annotations

import socket
import sqlite3
import time

import psutil
import pytest

from drillbook.tasks import replica as replica_module
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import LiveDatabaseGuard
from drillbook.tasks.integrity import check_integrity
from drillbook.tasks.litestream import litestream_env, run_litestream
from drillbook.tasks.replica import HEADER_READ_TIMEOUT, warm_clients
from drillbook.tasks.restore import guard_live, make_scratch
from drillbook.tasks.storage import open_storage
from drillbook.tasks.storage import s3 as s3_module
from drillbook.testing.sample import make_sample_database


def test_environment_is_built_not_inherited():
    env = litestream_env(
        {"AWS_CA_BUNDLE": "/x", "AWS_ACCESS_KEY_ID": "k", "PATH": "/bin", "SLACK_BOT_TOKEN": "xoxb", "PREFECT_API_URL": "u"}
    )
    # AWS_CA_BUNDLE breaks litestream 0.5.17; the same CA reaches it as Go's SSL_CERT_FILE.
    assert env == {"AWS_ACCESS_KEY_ID": "k", "PATH": "/bin", "SSL_CERT_FILE": "/x"}
    proxied = litestream_env({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "127.0.0.1", "SSL_CERT_FILE": "/own", "AWS_CA_BUNDLE": "/x"})
    assert proxied == {
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "127.0.0.1",
        "SSL_CERT_FILE": "/x",
    }  # the AWS setting wins for an AWS client


def test_hanging_litestream_is_killed_at_its_timeout():
    with socket.socket() as sock:  # a port that accepts nothing: litestream retries forever
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"s3://drills/app.db?endpoint=http://127.0.0.1:{port}&region=us-east-1&forcePathStyle=true"
    started = time.monotonic()
    record = run_litestream(["ltx", "-json", url], timeout=2).record
    assert record.timed_out and record.exit_code is None
    assert time.monotonic() - started < 10
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and url in p.info["cmdline"]]


def test_guard_refuses_the_live_path_its_directory_and_sidecars(tmp_path):
    live = tmp_path / "app" / "orders.db"
    live.parent.mkdir()
    live.write_bytes(b"")
    entry = DatabaseEntry(name="orders", replica="file:///r", rto_target=1, rpo_target=1, live_path=str(live))
    for path in (live, live.parent, tmp_path, live.with_name("orders.db-wal")):
        with pytest.raises(LiveDatabaseGuard, match="refusing to restore 'orders'"):
            guard_live(entry, path)
    guard_live(entry, tmp_path / "scratch" / "orders.db")
    with pytest.raises(LiveDatabaseGuard):
        make_scratch(tmp_path, entry, "abc")


def test_integrity_of_a_good_copy(tmp_path):
    path = make_sample_database(tmp_path / "a.db", customers=20)
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"a.db{suffix}").unlink(missing_ok=True)
    report = check_integrity(path, expected_schema=3)
    assert report.ok, report.summary
    assert report.page_size * report.page_count == report.file_bytes


def test_integrity_of_foreign_key_violations(tmp_path):
    path = make_sample_database(tmp_path / "a.db", customers=20)
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO orders VALUES (100000, 999999, 'paid', 5, '2026-01-01')")
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    report = check_integrity(path)
    assert not report.ok
    assert report.foreign_key_problems == 1
    assert report.foreign_key_rows == [{"table": "orders", "rowid": 100000, "parent": "customers", "fk_index": 0}]


def test_integrity_of_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "g.db"
    garbage.write_bytes(b"not a database at all" * 300)
    report = check_integrity(garbage)
    assert not report.ok and "SQLite cannot read the copy" in report.summary
    missing = check_integrity(tmp_path / "missing.db")
    assert not missing.ok and "cannot read" in missing.summary
    assert not (tmp_path / "missing.db").exists()  # read-only: never creates an empty database


def test_integrity_flags_a_wal_sidecar(tmp_path):
    path = make_sample_database(tmp_path / "a.db", customers=20)
    keep = sqlite3.connect(path)  # an open connection keeps the -wal with content
    keep.execute("INSERT INTO customers (email, name, created_at) VALUES ('x@example.com', 'x', 'now')")
    keep.commit()
    report = check_integrity(path)
    keep.close()
    assert report.sidecar_problem and "-wal" in report.sidecar_problem


def test_run_failures_survive_being_persisted_and_read_back():
    """A batch or drill run's failure is pickled as its result and read by the run that started it."""
    import pickle

    from drillbook.flows.fleet import error_result
    from drillbook.tasks.config import DatabaseEntry
    from drillbook.tasks.errors import DrillFailed, DrillsFailed

    entry = DatabaseEntry(name="orders", replica="file:///tmp/none", rto_target=60, rpo_target=60)
    result = error_result(entry, "boom")
    many = pickle.loads(pickle.dumps(DrillsFailed("drill batch of 1", [result])))
    assert [r.database for r in many.results] == ["orders"] and str(many).startswith("drill batch of 1: 1 ERROR")
    one = pickle.loads(pickle.dumps(DrillFailed(result)))
    assert one.result.database == "orders"


def test_batches_are_even_and_keep_a_bucket_together():
    from drillbook.flows.fleet import batches_of
    from drillbook.tasks.config import DatabaseEntry

    entries = [DatabaseEntry(name=f"db{i}", replica="file:///tmp/none", rto_target=60, rpo_target=60) for i in range(7)]
    buckets = {f"db{i}": ("b" if i % 2 else "a") for i in range(7)}
    batches = batches_of(entries, buckets, 3)
    assert [len(b) for b in batches] == [3, 2, 2]
    assert [e.name for b in batches for e in b] == ["db0", "db2", "db4", "db6", "db1", "db3", "db5"]
    assert len(batches_of(entries, buckets, 20)) == 7 and batches_of(entries, buckets, 1) == [
        sorted(entries, key=lambda e: buckets[e.name])
    ]


def test_the_store_clients_are_built_ahead_once_and_a_failure_is_left_to_the_drill(s3_endpoint, monkeypatch):
    """`warm_clients` builds the inspection's and the header reads' S3 clients in a thread; the drill then reuses them,
    and both clients come from one boto3 Session. A client that cannot be built is not raised in the thread."""
    monkeypatch.setattr(s3_module, "_clients", {})
    monkeypatch.setattr(s3_module, "_sessions", {})
    url = f"s3://drills/warm/app.db?endpoint={s3_endpoint}&region=us-east-1&forcePathStyle=true"
    entries = [DatabaseEntry(name=name, replica=url.replace("warm/", f"warm/{name}/"), rto_target=60, rpo_target=60) for name in ("a", "b")]
    warming = warm_clients(entries)
    warming.join(30)
    assert not warming.is_alive()
    built = dict(s3_module._clients)
    assert sorted(key[4] for key in built) == sorted({entries[0].inspect_timeout, HEADER_READ_TIMEOUT})  # one per timeout, not per database
    assert len(s3_module._sessions) == 1
    storage = open_storage(entries[1].replica, timeout=entries[1].inspect_timeout)
    assert list(storage.list()) == []  # the drill's listing works through the client built ahead
    assert s3_module._clients == built  # and built no other

    monkeypatch.setattr(s3_module, "_clients", {})
    monkeypatch.setattr(s3_module, "_sessions", {})

    def refused(*_args, **_kwargs):
        raise RuntimeError("no client today")

    monkeypatch.setattr(s3_module, "_new_s3_client", refused)
    failures = []
    monkeypatch.setattr(replica_module.threading, "excepthook", lambda seen: failures.append(seen))
    warming = warm_clients(entries)
    warming.join(30)
    assert failures == [] and s3_module._clients == {}
    with pytest.raises(RuntimeError, match="no client today"):  # the drill meets it, where its report says so
        open_storage(url, timeout=60).connect()
