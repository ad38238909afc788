"""End-to-end drills: real litestream, real S3 protocol server, real SQLite, real Prefect."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.flows.drill import drill_database
from drillbook.tasks.errors import DrillFailed
from drillbook.tasks.evidence import read_bundle
from tests.conftest import corrupt_index, entry


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["run", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_pass_drill_reports_rto_rpo_and_keeps_evidence(capsys, replicate, write_catalogue, tmp_path, monkeypatch):
    # The machines have AWS_CA_BUNDLE set; litestream 0.5.17 breaks on it unless the runner drops it.
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, schema_version=3, live_path=str(replicated.live)))

    code, result = run_json(capsys, "orders", "--config", str(config))

    assert code == 0, result
    assert result["verdict"] == "PASS"
    assert result["failure_mode"] is None
    assert result["rto_target_seconds"] == 120.0 and result["rpo_target_seconds"] == 600.0
    assert 0 < result["rto_seconds"] < 120
    assert 0 <= result["rpo_seconds"] < 600
    assert set(result["phases"]) == {"replica", "restore", "integrity", "smoke", "expectations", "writers"}
    assert all(result["phases"][name]["status"] == "passed" for name in ("replica", "restore", "integrity"))
    # Nothing configured for this entry: both later stages say so rather than vanish.
    assert result["phases"]["smoke"] == {"status": "skipped", "seconds": 0.0, "summary": "no smoke tests configured"}
    assert result["phases"]["expectations"]["status"] == "skipped"
    assert result["rto_seconds"] == pytest.approx(
        result["phases"]["restore"]["seconds"] + result["phases"]["integrity"]["seconds"], abs=0.01
    )

    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.restore.litestream["txid"] == bundle.restore.txid
    assert bundle.restore.command.argv[1:4] == ["restore", "-json", "-o"]
    assert "-force" not in bundle.restore.command.argv and "-if-replica-exists" not in bundle.restore.command.argv
    assert bundle.integrity.integrity_rows == ["ok"]
    assert bundle.integrity.schema_version == "3"
    assert len(bundle.integrity.sha256) == 64
    # Passed: the scratch copy is gone.
    assert not any((tmp_path / "scratch" / "orders").iterdir())


def test_no_backup_is_a_fail_not_an_error(capsys, s3_endpoint, write_catalogue):
    from drillbook.testing.s3 import s3_replica_url

    config = write_catalogue(entry("ghost", s3_replica_url(s3_endpoint, "drills", "never-replicated/app.db")))
    code, result = run_json(capsys, "ghost", "--config", str(config))
    assert code == 1
    assert result["verdict"] == "FAIL"
    assert result["failure_mode"] == "no backup"
    assert result["phases"]["restore"]["status"] == "skipped"
    assert "litestream replicate" in result["action"]


def test_missing_bucket_is_no_backup(capsys, s3_endpoint, write_catalogue):
    from drillbook.testing.s3 import s3_replica_url

    config = write_catalogue(entry("nobucket", s3_replica_url(s3_endpoint, "no-such-bucket", "app.db")))
    code, result = run_json(capsys, "nobucket", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "no backup")
    assert "bucket 'no-such-bucket' does not exist" in result["findings"][0]["detail"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_object_storage_failure_naming_endpoint(capsys, write_catalogue):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    url = f"s3://drills/app.db?endpoint={endpoint}&region=us-east-1&forcePathStyle=true"
    config = write_catalogue(entry("offline", url, inspect_timeout="3s"))
    code, result = run_json(capsys, "offline", "--config", str(config))
    assert code == 1
    assert result["failure_mode"] == "object storage failure"
    assert endpoint in result["findings"][0]["detail"]
    assert "unreachable" in result["findings"][0]["detail"]


def test_missing_credentials_are_named(capsys, replicate, write_catalogue, monkeypatch, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("nocreds", replicated.replica))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    code, result = run_json(capsys, "nocreds", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "object storage failure")
    assert "no usable AWS credentials" in result["findings"][0]["detail"]


def test_integrity_failure_keeps_rows_and_the_copy(capsys, replicate, write_catalogue):
    replicated = replicate(corrupt_index)
    config = write_catalogue(entry("broken", replicated.replica))
    code, result = run_json(capsys, "broken", "--config", str(config))
    assert code == 1
    assert result["failure_mode"] == "integrity failure"
    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.integrity.integrity_problems > 0
    assert any("orders_customer" in row for row in bundle.integrity.integrity_rows)
    kept = Path(result["scratch_kept"])
    assert (kept / "broken.db").is_file()
    assert (kept / ".drillbook-kept").is_file()


def test_schema_mismatch_fails(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, schema_version=4))
    code, result = run_json(capsys, "orders", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "schema mismatch")
    assert result["findings"][0]["detail"] == "schema version is 3, expected 4"


def test_release_schema_overrides_catalogue(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, schema_version=4))
    code, result = run_json(capsys, "orders", "--config", str(config), "--expect-schema", "3", "--release", "v1.2.3")
    assert (code, result["verdict"], result["release"]) == (0, "PASS", "v1.2.3")


def test_rto_target_below_measured_time_is_restore_lag(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("slow", replicated.replica, rto_target="1ms"))
    code, result = run_json(capsys, "slow", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "restore lag")
    assert "over the 0.001s target" in result["findings"][0]["detail"]


def test_old_replica_is_replica_lag(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("stale", replicated.replica, rpo_target="1s"))
    time.sleep(2.2)  # LTX timestamps have one-second resolution
    code, result = run_json(capsys, "stale", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "replica lag")
    assert result["rpo_seconds"] > 1


def test_litestream_missing_is_an_error(capsys, replicate, write_catalogue, monkeypatch, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(tmp_path / "no-litestream"))
    code, result = run_json(capsys, "orders", "--config", str(config))
    assert (code, result["verdict"], result["failure_mode"]) == (2, "ERROR", "drill error")
    assert "DRILLBOOK_LITESTREAM" in result["findings"][0]["detail"]


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_live_database_is_never_written(capsys, replicate, write_catalogue):
    replicated = replicate()
    before = {p.name: _digest(p) for p in replicated.live.parent.glob(replicated.live.name + "*")}
    config = write_catalogue(entry("orders", replicated.replica, live_path=str(replicated.live), rto_target="1ms"))
    code, _ = run_json(capsys, "orders", "--config", str(config))
    assert code == 1  # a failed drill keeps its copy: still never next to the live file
    after = {p.name: _digest(p) for p in replicated.live.parent.glob(replicated.live.name + "*")}
    assert after == before


def test_scratch_dir_holding_the_live_database_is_refused(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, live_path=str(replicated.live)), settings={"scratch_dir": str(tmp_path)})
    code = main(["run", "orders", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"database[0] 'orders': field live_path: {replicated.live} lies inside the scratch_dir {tmp_path}" in err


def test_two_concurrent_drills_of_one_database_both_complete(replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(drill_database, "orders", config_path=str(config)) for _ in range(2)]
        results = [f.result() for f in futures]
    assert [r.verdict.value for r in results] == ["PASS", "PASS"]
    assert results[0].drill_id != results[1].drill_id
    assert results[0].restore.scratch_dir != results[1].restore.scratch_dir
    assert results[0].evidence != results[1].evidence


def test_flow_raises_after_recording_a_failure(replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, schema_version=99))
    with pytest.raises(DrillFailed) as caught:
        drill_database("orders", config_path=str(config))
    result = caught.value.result
    assert result.verdict.value == "FAIL"
    assert Path(result.evidence).is_file()


def test_failed_copies_are_pruned_to_keep_failed(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, rto_target="1ms"), settings={"keep_failed": 2})
    for _ in range(3):
        assert main(["run", "orders", "--config", str(config)]) == 1
    capsys.readouterr()
    kept = [d for d in (tmp_path / "scratch" / "orders").iterdir() if (d / ".drillbook-kept").exists()]
    assert len(kept) == 2


def test_demo_drills_a_sample_database_and_cleans_up_after_itself(tmp_path, capsys):
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("drillbook-demo-*"))
    assert main(["demo", "--evidence-dir", str(tmp_path / "evidence")]) == 0
    out = capsys.readouterr().out
    assert "PASS demo-orders" in out
    assert "smoke" in out and "expectations" in out
    (bundle,) = (tmp_path / "evidence" / "demo-orders").glob("*.json")
    assert read_bundle(bundle).verdict.value == "PASS"
    assert set(Path(tempfile.gettempdir()).glob("drillbook-demo-*")) == before  # sample db, catalogue and scratch are gone


@pytest.fixture
def s3_with_auth(tmp_path):
    """A second S3 server that checks credentials (moto enforces IAM once INITIAL_NO_AUTH_ACTION_COUNT is spent)."""
    import subprocess
    import sys

    port = _closed_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_wrong_credentials_are_access_denied_not_no_backup(capsys, s3_with_auth, write_catalogue):
    url = f"s3://drills/app.db?endpoint={s3_with_auth}&region=us-east-1&forcePathStyle=true"
    config = write_catalogue(entry("denied", url))
    code, result = run_json(capsys, "denied", "--config", str(config))
    assert (code, result["failure_mode"]) == (1, "object storage failure")
    detail = result["findings"][0]["detail"]
    assert detail.startswith(f"access denied listing s3://drills/app.db at {s3_with_auth} (InvalidAccessKeyId)")
    assert "drillbook-test-secret" not in json.dumps(result)
