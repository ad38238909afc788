"""The verdict must be true: the data's own time, the restored position, sidecars first, every integrity row,
paths resolved one way, the exit contract, one-line reasons, and a private CA reaching litestream."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import sqlite3
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import ConfigError, SlackDeliveryError
from drillbook.tasks.integrity import MAX_ROWS_KEPT, check_integrity
from drillbook.tasks.ltx import parse_ltx_header
from drillbook.tasks.outcome import FailureMode, Status, Verdict
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.text import one_line
from drillbook.tasks.verdict import compare_position
from drillbook.testing.faultproxy import FaultProxy
from drillbook.testing.s3 import s3_replica_url
from drillbook.testing.sample import make_sample_database
from tests.conftest import corrupt_index, entry
from tests.verdicts import judged

START = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
NEWEST, OLDER = "0000000000000010", "000000000000000c"


# --- the restored position ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restored", "expected", "finding", "note"),
    [
        (NEWEST, NEWEST, None, None),
        (
            OLDER,
            NEWEST,
            "restored TXID 000000000000000c is behind the newest TXID listed on the replica, 0000000000000010 (4 transaction(s) missing from the copy)",
            None,
        ),
        (
            "0000000000000011",
            NEWEST,
            None,
            "restored TXID 0000000000000011 is ahead of the newest TXID listed on the replica, 0000000000000010: the replica moved on during the drill",
        ),
        (None, NEWEST, None, None),
        (NEWEST, None, None, None),
    ],
)
def test_compare_position(restored, expected, finding, note):
    position = compare_position(restored, expected)
    assert (position.finding.detail if position.finding else None, position.note) == (finding, note)
    if position.finding:
        assert position.finding.mode == FailureMode.RESTORE_FAILURE


def test_compare_position_names_a_requested_point():
    position = compare_position(OLDER, NEWEST, expected_what="the requested TXID")
    assert position.finding.detail.startswith("restored TXID 000000000000000c is behind the requested TXID, 0000000000000010")


def _replica(**fields) -> ReplicaState:
    base = dict(
        status=Status.PASSED, newest_txid=NEWEST, newest_time=START - timedelta(seconds=5), newest_storage_time=START - timedelta(seconds=5)
    )
    return ReplicaState(**{**base, **fields})


def _judge(replica: ReplicaState, restore: RestoreResult, integrity=None, **entry_fields):
    from drillbook.tasks.config import DatabaseEntry
    from drillbook.tasks.integrity import IntegrityReport

    database = DatabaseEntry(name="orders", replica="file:///r/orders.db", rto_target=60, rpo_target=entry_fields.get("rpo_target", 30))
    integrity = integrity or IntegrityReport(status=Status.PASSED, seconds=0.1, summary="intact")
    return judged(database, drill_id="d" * 32, started_at=START, finished_at=START, replica=replica, restore=restore, integrity=integrity)


def test_a_copy_restored_behind_the_listing_fails_naming_both_and_rpo_comes_from_what_was_restored():
    replica = _replica(txid_times={OLDER: START - timedelta(seconds=100), NEWEST: START - timedelta(seconds=5)})
    result = _judge(replica, RestoreResult(status=Status.PASSED, txid=OLDER, seconds=1.0, path="/x"))
    assert (result.verdict, result.failure_mode) == (Verdict.FAIL, FailureMode.RESTORE_FAILURE)
    assert OLDER in result.findings[0].detail and NEWEST in result.findings[0].detail
    assert result.rpo_seconds == 100.0  # not the listing's 5 s
    assert any(
        f.mode == FailureMode.REPLICA_LAG and "restored copy (TXID 000000000000000c) is 100s old" in f.detail for f in result.findings
    )


def test_a_copy_restored_ahead_passes_with_a_note():
    result = _judge(_replica(), RestoreResult(status=Status.PASSED, txid="0000000000000011", seconds=1.0, path="/x"))
    assert result.verdict == Verdict.PASS
    assert any("ahead of the newest TXID listed" in note for note in result.notes)


def test_rpo_is_judged_on_the_header_time_and_the_storage_time_is_reported_beside_it():
    replica = _replica(newest_time=START - timedelta(seconds=56), newest_storage_time=START - timedelta(seconds=12))
    result = _judge(replica, RestoreResult(status=Status.PASSED, txid=NEWEST, seconds=1.0, path="/x"), rpo_target=40)
    assert (result.verdict, result.failure_mode, result.rpo_seconds) == (Verdict.FAIL, FailureMode.REPLICA_LAG, 56.0)
    assert any("(+44s): a copied or re-uploaded replica" in note for note in result.notes)


@pytest.mark.parametrize("ahead", [3.0, 120.0, 6 * 3600.0])
def test_a_newest_change_in_the_future_is_clock_skew_an_unknown_rpo_and_never_a_pass(ahead):
    """The primary's clock ahead (or this host's behind): the RPO used to be clamped to 0 and the drill PASSed."""
    written = START + timedelta(seconds=ahead)
    replica = _replica(newest_time=written, newest_storage_time=written)
    result = _judge(replica, RestoreResult(status=Status.PASSED, txid=NEWEST, seconds=1.0, path="/x"))

    assert (result.verdict, result.failure_mode, result.rpo_seconds) == (Verdict.FAIL, FailureMode.REPLICA_LAG, None)
    assert result.findings[0].detail == (
        f"clock skew: the newest change was written at {written:%Y-%m-%d %H:%M:%S}Z (the primary's clock), {ahead:.0f}s after "
        f"the drill started at {START:%Y-%m-%d %H:%M:%S}Z (this host's clock); the RPO cannot be judged: "
        "synchronise both clocks (NTP) and drill again"
    )
    assert replica.lag_seconds(START) is None


def test_a_change_just_inside_the_clock_tolerance_reads_as_zero_rpo():
    replica = _replica(newest_time=START + timedelta(seconds=1.5), newest_storage_time=START)
    result = _judge(replica, RestoreResult(status=Status.PASSED, txid=NEWEST, seconds=1.0, path="/x"))
    assert (result.verdict, result.rpo_seconds) == (Verdict.PASS, 0.0)


def test_the_clock_tolerance_is_a_catalogue_setting(write_catalogue):
    from drillbook.tasks.config import DatabaseEntry
    from drillbook.tasks.integrity import IntegrityReport

    catalogue = load_catalogue(write_catalogue(entry("orders", "file:///r/orders.db"), settings={"clock_skew_tolerance": "30s"}))
    assert catalogue.drillbook.clock_skew_tolerance == 30.0
    replica = _replica(newest_time=START + timedelta(seconds=20), newest_storage_time=START)
    database = DatabaseEntry(name="orders", replica="file:///r/orders.db", rto_target=60, rpo_target=30)
    restore = RestoreResult(status=Status.PASSED, txid=NEWEST, seconds=1.0, path="/x")
    integrity = IntegrityReport(status=Status.PASSED, seconds=0.1, summary="intact")
    kept = dict(drill_id="d" * 32, started_at=START, replica=replica, restore=restore, integrity=integrity)
    assert judged(database, clock_skew_tolerance=30.0, **kept).verdict == Verdict.PASS
    assert judged(database, **kept).verdict == Verdict.FAIL


def test_a_restored_position_in_the_future_is_clock_skew_too():
    replica = _replica(txid_times={OLDER: START + timedelta(seconds=600), NEWEST: START - timedelta(seconds=5)})
    result = _judge(replica, RestoreResult(status=Status.PASSED, txid=OLDER, seconds=1.0, path="/x"))
    assert result.verdict == Verdict.FAIL and result.rpo_seconds is None
    assert any(f.detail.startswith("clock skew: ") for f in result.findings)


def test_ltx_header_is_read_as_litestream_writes_it(tmp_path):
    from drillbook.testing.s3 import replicate_once

    live = make_sample_database(tmp_path / "live.db", customers=10)
    replicate_once(live, f"file://{tmp_path / 'replica'}")
    [file] = (tmp_path / "replica" / "ltx" / "0").iterdir()
    header = parse_ltx_header(file.read_bytes()[:100])
    assert (header.min_txid, header.max_txid, header.page_size) == ("0000000000000001", "0000000000000001", 4096)
    assert abs((datetime.now(UTC) - header.written_at).total_seconds()) < 120
    with pytest.raises(ValueError, match="only 10 bytes"):
        parse_ltx_header(b"LTX1" + b"\0" * 6)
    with pytest.raises(ValueError, match="not b'LTX1'"):
        parse_ltx_header(b"SQLite format 3\0" + b"\0" * 84)


# --- sidecars and integrity rows -------------------------------------------------------------------------------


def test_a_wal_beside_the_copy_leads_as_sidecar_file_mismatch(tmp_path):
    live = make_sample_database(tmp_path / "live.db", customers=20)
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("DELETE FROM order_items")
    writer.commit()  # the change sits in live.db-wal, not in live.db
    copy = tmp_path / "copy" / "orders.db"
    copy.parent.mkdir()
    shutil.copy(live, copy)
    shutil.copy(live.with_name("live.db-wal"), copy.with_name("orders.db-wal"))
    writer.close()
    integrity = check_integrity(copy)
    assert integrity.sidecar_problem and integrity.sidecars["-wal"] > 0
    result = _judge(_replica(), RestoreResult(status=Status.PASSED, txid=NEWEST, seconds=1.0, path=str(copy)), integrity)
    assert result.failure_mode == FailureMode.SIDECAR
    assert result.findings[0].mode == FailureMode.SIDECAR


def test_every_integrity_row_is_kept_beside_the_bundle(capsys, replicate, write_catalogue):
    def many_problems(path: Path) -> None:  # ~6,000 index rows that no longer match their table
        make_sample_database(path, customers=2000)
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA writable_schema=ON")
        connection.execute(
            "UPDATE sqlite_schema SET sql = 'CREATE INDEX orders_customer ON orders(total_cents)' WHERE name = 'orders_customer'"
        )
        connection.commit()
        connection.close()

    replicated = replicate(many_problems)
    config = write_catalogue(entry("orders", replicated.replica))
    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["failure_mode"]) == (1, "integrity failure")
    from drillbook.tasks.evidence import read_bundle

    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.integrity.integrity_problems > MAX_ROWS_KEPT
    assert len(bundle.integrity.integrity_rows) == MAX_ROWS_KEPT
    rows_file = Path(bundle.integrity.rows_file)
    assert rows_file == Path(result["evidence"]).with_suffix(".integrity.txt")
    lines = rows_file.read_text().splitlines()
    assert len([line for line in lines if line.startswith("integrity_check: ")]) == bundle.integrity.integrity_problems


def test_an_intact_copy_writes_no_rows_file(tmp_path):
    copy = make_sample_database(tmp_path / "ok.db", customers=10)
    report = check_integrity(copy, rows_file=tmp_path / "rows.txt")
    assert report.intact and report.rows_file is None and not (tmp_path / "rows.txt").exists()


def test_a_small_integrity_failure_keeps_its_rows_in_the_file_too(tmp_path):
    corrupt_index(tmp_path / "bad.db")
    report = check_integrity(tmp_path / "bad.db", rows_file=tmp_path / "rows.txt")
    assert report.integrity_problems > 0
    assert (tmp_path / "rows.txt").read_text().splitlines() == [f"integrity_check: {row}" for row in report.integrity_rows]


# --- the catalogue's paths -----------------------------------------------------------------------------------


def test_relative_live_path_is_resolved_against_the_catalogue_folder(write_catalogue, tmp_path, monkeypatch):
    config = write_catalogue(entry("orders", "file:///r/orders.db", live_path="data/orders.db"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_catalogue(config).get("orders").live_path == str(tmp_path / "data" / "orders.db")


def test_relative_live_path_inside_a_relative_scratch_dir_is_refused(write_catalogue, tmp_path, monkeypatch):
    config = write_catalogue(entry("orders", "file:///r/orders.db", live_path="scratch/orders.db"), settings={"scratch_dir": "scratch"})
    monkeypatch.chdir("/")
    with pytest.raises(ConfigError, match="field live_path: .*/scratch/orders.db lies inside the scratch_dir"):
        load_catalogue(config)


def test_an_expectations_dir_set_but_missing_is_a_config_error(write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", "file:///r/orders.db"), settings={"expectations_dir": "suites"})
    with pytest.raises(ConfigError) as caught:
        load_catalogue(config)
    assert str(caught.value) == (
        f"{config}: [drillbook] field expectations_dir: {tmp_path / 'suites'} is not a directory; create it, fix the path, or remove the field"
    )
    (tmp_path / "suites").mkdir()
    assert load_catalogue(config).drillbook.expectations_dir == "suites"


def test_the_default_expectations_dir_may_be_missing(write_catalogue):
    assert load_catalogue(write_catalogue(entry("orders", "file:///r/orders.db"))).database[0].name == "orders"


# --- the exit contract -----------------------------------------------------------------------------------------


def test_a_config_error_under_json_is_an_error_object(capsys, tmp_path):
    code = main(["run", "orders", "--config", str(tmp_path / "missing.toml"), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert json.loads(captured.out) == {
        "verdict": "ERROR",
        "exit_code": 2,
        "database": "orders",
        "error": f"{tmp_path / 'missing.toml'}: catalogue not found. Create it (see README, 'Catalogue') or pass --config PATH.",
    }


def test_an_unexpected_exception_is_exit_2_one_line_no_traceback(capsys, monkeypatch, write_catalogue):
    import drillbook.cli.run as cli

    def explode(*args, **kwargs):
        raise RuntimeError("boom\n  with a second line")

    monkeypatch.setattr(cli, "run_drill", explode)
    config = write_catalogue(entry("orders", "file:///r/orders.db"))
    code = main(["run", "orders", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "drillbook: unexpected RuntimeError: boom with a second line; this is drillbook's problem, not the database's: please report it"
    ]


def test_an_os_error_names_the_path(capsys, monkeypatch, write_catalogue):
    import drillbook.cli.run as cli

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/var/lib/drillbook/x")

    monkeypatch.setattr(cli, "run_drill", denied)
    code = main(["run", "orders", "--config", str(write_catalogue(entry("orders", "file:///r/orders.db"))), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == ["drillbook: Permission denied: /var/lib/drillbook/x; check that path's permissions and free space"]
    assert json.loads(captured.out)["verdict"] == "ERROR"


# --- one-line reasons -------------------------------------------------------------------------------------------------


def test_an_html_error_page_becomes_a_one_line_reason():
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n"
    assert one_line(f"incoming webhook: Slack answered HTTP 502 {page}: check the webhook URL") == (
        "incoming webhook: Slack answered HTTP 502 502 Bad Gateway 502 Bad Gateway : check the webhook URL"
    )
    assert SlackDeliveryError("x\n" * 400, affects_all=True).reason.endswith("…")


@pytest.mark.parametrize("transport", ["webhook", "web api"])
def test_slack_behind_a_proxy_answering_html_leaves_a_one_line_reason_in_the_outbox(transport, write_catalogue, tmp_path, monkeypatch):
    from drillbook.tasks.slack import list_outbox, notify_slack
    from drillbook.testing.slack_standin import SlackStandIn
    from tests.test_slack import built_result, with_slack

    with SlackStandIn(token="xoxb-1-2-html") as slack:
        slack.fail("html_error", count=20)
        config = write_catalogue(entry("orders", "file:///r/orders.db"))
        if transport == "webhook":
            monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
            config = with_slack(config, webhook_url_env="SLACK_WEBHOOK_URL", outbox_dir=str(tmp_path / "outbox"), timeout="2s")
        else:
            monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-html")
            config = with_slack(config, channel="#drills", api_url=slack.api_url, outbox_dir=str(tmp_path / "outbox"), timeout="2s")
        catalogue = load_catalogue(config)
        delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "queued"
    [waiting] = list_outbox(catalogue)
    assert "\n" not in waiting.reason and "<" not in waiting.reason, waiting.reason
    assert len(waiting.reason) <= 300


# --- a private CA on the object store's TLS endpoint ----------------------------------------------------------------------


def _private_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drillbook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def test_a_users_aws_ca_bundle_reaches_litestream_over_tls(capsys, replicate, s3_endpoint, write_catalogue, tmp_path, monkeypatch):
    ca, cert, key = _private_ca(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    replicated = replicate(key="tls/app.db")
    with FaultProxy(s3_endpoint, tls=context) as endpoint:
        assert endpoint.url.startswith("https://127.0.0.1:")
        config = write_catalogue(entry("orders", s3_replica_url(endpoint.url, "drills", "tls/app.db"), live_path=str(replicated.live)))
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))  # boto3 reads it; litestream gets it as SSL_CERT_FILE
        code = main(["run", "orders", "--config", str(config), "--json"])
        result = json.loads(capsys.readouterr().out)
        assert (code, result["verdict"]) == (0, "PASS"), result["findings"]
        assert {s.kind for s in endpoint.seen()} >= {"list", "get"}  # litestream and boto3 both went through TLS

        monkeypatch.delenv("AWS_CA_BUNDLE")  # without the CA the endpoint is not trusted: never PASS, and said so
        code = main(["run", "orders", "--config", str(config), "--json"])
        result = json.loads(capsys.readouterr().out)
        assert (code, result["failure_mode"]) == (1, "object storage failure")
        assert (
            f"the TLS certificate of s3://drills/tls/app.db at {endpoint.url} is not trusted: set AWS_CA_BUNDLE"
            in result["findings"][0]["detail"]
        )


# --- every drill leaves its record ------------------------------------------------------------------------------------


def test_a_failing_clean_up_still_leaves_the_record(capsys, replicate, write_catalogue, monkeypatch, tmp_path):
    import drillbook.flows.drill as drill_module
    from drillbook.tasks.history.store import recent_drills

    def refuse(result, scratch, keep_failed):
        raise PermissionError(13, "Permission denied", str(scratch))

    monkeypatch.setattr(drill_module, "clean_up", refuse)
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["verdict"]) == (0, "PASS")  # the database was shown recoverable; the leftover copy is noted
    assert any(
        note.startswith("cleaning up the scratch directory ") and "failed (Permission denied); remove it by hand" in note
        for note in result["notes"]
    )
    assert Path(result["evidence"]).is_file()
    assert [row.drill_id for row in recent_drills(f"sqlite:///{tmp_path / 'evidence' / 'history.db'}", "orders", 5)] == [result["drill_id"]]
