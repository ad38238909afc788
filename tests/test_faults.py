"""The fault corpus: what a real fleet meets, against real litestream, moto's S3 server behind a fault proxy, real SQLite.

For every case: never PASS, the documented exit code and failure mode, the live
database byte-identical, no process of the drill left running, and the verdict
recorded (evidence bundle and history row). Signals and Prefect's own start-up
are in tests/test_faults_process.py (they need a `drillbook` process of their own).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from drillbook.cli.main import main
from drillbook.flows.drill import drill_database
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.history.store import recent_drills
from drillbook.tasks.litestream import find_litestream
from drillbook.tasks.processes import running_groups
from drillbook.testing.faultproxy import FaultProxy
from drillbook.testing.s3 import s3_replica_url
from drillbook.testing.sample import make_sample_database
from tests.conftest import CORPUS_PREFIX, entry


@pytest.fixture
def proxy(s3_endpoint):
    with FaultProxy(s3_endpoint) as running:
        yield running


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: mount a small tmpfs (root only); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, *, size: str = "1m", read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


class Drilled:
    def __init__(self, code: int, result: dict, stderr: str):
        self.code, self.result, self.stderr = code, result, stderr

    @property
    def details(self) -> str:
        return " | ".join(f["detail"] for f in self.result["findings"])


def live_state(live: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(live.parent.glob(live.name + "*"))}


def litestream_children() -> list[psutil.Process]:
    """The drill's litestream (and stand-in) processes still running; the corpus's, building in the background, are not the drill's."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if CORPUS_PREFIX in cmdline:
                continue
            if "litestream" in cmdline or child.name() in ("sleep", "litestream"):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def drill(capsys, config: Path, name: str, *, live: Path | None) -> Drilled:
    """Run `drillbook run NAME --json` in this process and check what every fault case must hold."""
    before = live_state(live) if live else None
    code = main(["run", name, "--config", str(config), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["verdict"] != "PASS" and code != 0, result
    assert code == {"FAIL": 1, "ERROR": 2}[result["verdict"]]
    assert "Traceback" not in captured.err, captured.err
    if live:
        assert live_state(live) == before, "the live database changed"
    assert running_groups() == [] and litestream_children() == [], "a process of the drill is still running"
    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.verdict.value == result["verdict"]
    return Drilled(code, result, captured.err)


def history_of(config_dir: Path, name: str):
    return recent_drills(f"sqlite:///{config_dir / 'evidence' / 'history.db'}", name, 10)


def through(proxy: FaultProxy, key: str) -> str:
    return s3_replica_url(proxy.url, "drills", key)


def replicated_key(replicate, builder=None) -> tuple[Path, str]:
    key = f"{os.urandom(5).hex()}/app.db"
    replicated = replicate(builder, key=key)
    return replicated.live, key


def big_sample(path: Path) -> None:
    make_sample_database(path, customers=4000)  # about 1.6 MB: larger than the small tmpfs, slow through the slow proxy


# --- object storage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "seen"),
    [
        ("500", "answered HTTP 500 InternalError"),
        ("403", "access denied reading"),
        ("reset", "object GETs fail"),
        ("503", "answered HTTP 503 SlowDown; throttled (503 SlowDown)"),  # still so after botocore's retries
    ],
)
def test_object_gets_failing_after_a_good_listing_is_object_storage_failure(
    action, seen, capsys, replicate, proxy, write_catalogue, tmp_path
):
    live, key = replicated_key(replicate)
    proxy.fail("get", action)
    config = write_catalogue(entry("orders", through(proxy, key), live_path=str(live)))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "object storage failure")
    assert seen in drilled.details and "/0000/0000000000000001-0000000000000001.ltx" in drilled.details
    assert drilled.result["phases"]["restore"]["status"] == "skipped"  # litestream never started its silent retries
    assert history_of(tmp_path, "orders")[0].verdict == "FAIL"


def test_object_gets_hanging_from_the_start_is_object_storage_failure(capsys, replicate, proxy, write_catalogue):
    live, key = replicated_key(replicate)
    proxy.fail("get", "stall")
    config = write_catalogue(entry("orders", through(proxy, key), live_path=str(live), inspect_timeout="2s"))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "object storage failure")
    assert "object GETs do not answer" in drilled.details and "longer than 2s (the listing worked)" in drilled.details


@pytest.mark.parametrize("action", ["stall", "500"])
def test_object_gets_failing_mid_restore_are_killed_at_the_stall_timeout(action, capsys, replicate, proxy, write_catalogue):
    live, key = replicated_key(replicate)
    proxy.fail("get", action, after=1)  # the header read passes; litestream's GETs then hang, or 500 and are retried silently
    config = write_catalogue(entry("orders", through(proxy, key), live_path=str(live), stall_timeout="3s", restore_timeout="10m"))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "object storage failure")
    assert "the restore made no progress for 3s and was killed" in drilled.details
    assert "restore lag" not in [f["mode"] for f in drilled.result["findings"]]
    assert drilled.result["phases"]["restore"]["seconds"] < 60  # killed at the stall timeout, not the 10-minute restore timeout


def test_slow_but_progressing_restore_stays_restore_lag(capsys, replicate, proxy, write_catalogue):
    live, key = replicated_key(replicate, big_sample)
    proxy.fail("get", "slow", rate=200_000)
    config = write_catalogue(entry("orders", through(proxy, key), live_path=str(live), stall_timeout="5s", restore_timeout="3s"))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "restore lag")
    assert "restore did not finish within 3s and was killed" in drilled.details


# --- the replica's files ---------------------------------------------------------------------------------


def _objects(s3_endpoint: str, prefix: str) -> list[dict]:
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(Bucket="drills", Prefix=prefix)["Contents"]


def _s3(s3_endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def test_truncated_ltx_file_is_a_restore_failure(capsys, replicate, s3_endpoint, write_catalogue):
    live, key = replicated_key(replicate)
    [obj] = _objects(s3_endpoint, key)
    body = _s3(s3_endpoint).get_object(Bucket="drills", Key=obj["Key"])["Body"].read()
    _s3(s3_endpoint).put_object(Bucket="drills", Key=obj["Key"], Body=body[: len(body) // 2])
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "restore failure")
    assert drilled.result["phases"]["restore"]["status"] == "failed"


def test_ltx_file_cut_inside_its_header_is_damaged(capsys, replicate, s3_endpoint, write_catalogue):
    live, key = replicated_key(replicate)
    [obj] = _objects(s3_endpoint, key)
    _s3(s3_endpoint).put_object(Bucket="drills", Key=obj["Key"], Body=b"LTX1\x00\x00")
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "restore failure")
    assert "is damaged: only 6 bytes, an LTX header has 100" in drilled.details


def _append_rows(live: Path, rows: int = 5) -> None:
    import sqlite3

    connection = sqlite3.connect(live)
    connection.executemany(
        "INSERT INTO customers (email, name, created_at) VALUES (?, 'n', 't')",
        [(f"new{os.urandom(4).hex()}@example.com",) for _ in range(rows)],
    )
    connection.commit()
    connection.close()


def test_missing_ltx_file_in_the_middle_never_passes(capsys, replicate, s3_endpoint, write_catalogue):
    from drillbook.testing.s3 import replicate_once

    live, key = replicated_key(replicate)
    url = s3_replica_url(s3_endpoint, "drills", key)
    for _ in range(2):
        _append_rows(live)
        replicate_once(live, url)
    keys = sorted(o["Key"] for o in _objects(s3_endpoint, key))
    assert len(keys) == 3
    _s3(s3_endpoint).delete_object(Bucket="drills", Key=keys[1])  # TXID 2 gone; 1 and 3 remain listed
    config = write_catalogue(entry("orders", url, live_path=str(live)))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "restore failure")
    restored = drilled.result["phases"]["restore"]
    if restored["status"] == "passed":  # litestream stopped short of the gap: the position check must catch it
        assert "is behind the newest TXID listed on the replica, 0000000000000003" in drilled.details


def test_copied_replica_is_judged_on_the_time_litestream_wrote_it(capsys, replicate, s3_endpoint, write_catalogue):
    live, key = replicated_key(replicate)
    time.sleep(3.2)  # the data ages; a copy made now gets fresh object timestamps
    copy_key = f"copy-{os.urandom(4).hex()}/app.db"
    for obj in _objects(s3_endpoint, key):
        _s3(s3_endpoint).copy_object(
            Bucket="drills", Key=obj["Key"].replace(key, copy_key, 1), CopySource={"Bucket": "drills", "Key": obj["Key"]}
        )
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", copy_key), live_path=str(live), rpo_target="2s"))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "replica lag")
    assert drilled.result["rpo_seconds"] >= 3
    assert any("a copied or re-uploaded replica; RPO is judged on the header's time" in note for note in drilled.result["notes"])


# --- litestream itself ----------------------------------------------------------------------------------


def test_hung_litestream_restore_is_killed_with_its_children(capsys, replicate, s3_endpoint, write_catalogue, monkeypatch, tmp_path):
    live, key = replicated_key(replicate)
    wrapper = tmp_path / "litestream"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = restore ]; then sleep 600; exit 0; fi\nexec {find_litestream()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(wrapper))
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live), stall_timeout="2s"))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (1, "object storage failure")
    assert "made no progress for 2s" in drilled.details


def test_missing_litestream_is_an_error_not_a_fail(capsys, replicate, s3_endpoint, write_catalogue, monkeypatch, tmp_path):
    live, key = replicated_key(replicate)
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(tmp_path / "gone" / "litestream"))
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)))
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (2, "drill error")
    assert f"DRILLBOOK_LITESTREAM={tmp_path / 'gone' / 'litestream'} is not an executable file" in drilled.details


# --- the drill's own disks ---------------------------------------------------------------------------------


def test_scratch_disk_full_from_the_start_is_an_error_naming_it(capsys, replicate, s3_endpoint, write_catalogue, tmpfs):
    live, key = replicated_key(replicate)
    scratch = tmpfs("scratchfs", size="256k")
    _fill(scratch)
    config = write_catalogue(
        entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)), settings={"scratch_dir": str(scratch)}
    )
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (2, "drill error")
    assert str(scratch) in drilled.details and ("No space left on device" in drilled.details or "scratch disk is full" in drilled.details)


def _fill(directory: Path) -> None:
    """Write until the file system says ENOSPC."""
    handle = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(handle, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(handle)


def test_scratch_disk_filling_during_the_restore_is_an_error_naming_it(capsys, replicate, s3_endpoint, write_catalogue, tmpfs):
    live, key = replicated_key(replicate, big_sample)
    scratch = tmpfs("scratchfs", size="512k")
    config = write_catalogue(
        entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)), settings={"scratch_dir": str(scratch)}
    )
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (2, "drill error")
    assert f"the scratch disk is full ({scratch}/orders/" in drilled.details
    assert drilled.result["phases"]["restore"]["status"] == "error"


def test_read_only_scratch_is_an_error_and_still_recorded(capsys, replicate, s3_endpoint, write_catalogue, tmpfs, tmp_path):
    live, key = replicated_key(replicate)
    scratch = tmpfs("scratchfs", read_only=True)
    config = write_catalogue(
        entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)), settings={"scratch_dir": str(scratch)}
    )
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (2, "drill error")
    assert f"cannot create the scratch directory {scratch}/orders: Read-only file system" in drilled.details
    assert history_of(tmp_path, "orders")[0].verdict == "ERROR"


def test_read_only_evidence_dir_is_an_error_recorded_in_the_fallback(capsys, replicate, s3_endpoint, write_catalogue, tmpfs):
    live, key = replicated_key(replicate)
    evidence = tmpfs("evidencefs", read_only=True)
    config = write_catalogue(
        entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live)), settings={"evidence_dir": str(evidence)}
    )
    drilled = drill(capsys, config, "orders", live=live)
    assert (drilled.code, drilled.result["failure_mode"]) == (2, "drill error")
    assert f"the evidence directory {evidence} is not writable (Read-only file system)" in drilled.details
    assert "drillbook-evidence" in drilled.result["evidence"]


# --- two at once ---------------------------------------------------------------------------------------------


def test_two_drills_of_one_database_at_once_each_leave_their_own_record(replicate, s3_endpoint, write_catalogue, tmp_path):
    live, key = replicated_key(replicate)
    config = write_catalogue(entry("orders", s3_replica_url(s3_endpoint, "drills", key), live_path=str(live), rpo_target="1ms"))
    before = live_state(live)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        states = [f.result() for f in [pool.submit(drill_database, "orders", config_path=str(config), return_state=True) for _ in range(2)]]
    results = [s.result(raise_on_failure=False).result for s in states]
    assert [r.verdict.value for r in results] == ["FAIL", "FAIL"]  # rpo_target 1ms: never PASS
    assert len({r.drill_id for r in results}) == 2 and all(len(r.drill_id) == 32 for r in results)
    assert len({r.evidence for r in results}) == 2
    assert {row.drill_id for row in history_of(tmp_path, "orders")} == {r.drill_id for r in results}
    assert live_state(live) == before
