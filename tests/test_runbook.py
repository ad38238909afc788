"""The runbook: every field from the newest evidence, dated; a database never drilled says so field by field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drillbook.cli.main import main
from tests.conftest import entry


def runbook(capsys, config: Path, name: str) -> tuple[int, str]:
    code = main(["runbook", name, "--config", str(config)])
    return code, capsys.readouterr().out


def field(text: str, title: str) -> str:
    """One section of the Markdown: from its heading to the next."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {title!r} in:\n{text}"
    return match.group(1)


def test_a_database_never_drilled_says_so_in_every_field_that_needs_evidence(capsys, tmp_path, write_catalogue):
    config = write_catalogue(
        entry("ledger", "s3://bucket/ledger.db?endpoint=http://127.0.0.1:9&region=us-east-1", live_path="/srv/ledger.db")
    )
    code, text = runbook(capsys, config, "ledger")
    assert code == 0
    assert text.startswith("# Runbook: ledger\n")
    assert "- s3://bucket/ledger.db?endpoint=http://127.0.0.1:9&region=us-east-1" in field(text, "Replica destination")
    for title in ("Writer layout", "Newest replicated position", "No-go status"):
        assert "- never drilled" in field(text, title) and "_Evidence: never drilled_" in field(text, title)
    assert field(text, "Last drills").count(": never drilled") == 3
    assert "- targets: RTO 2m 00s, RPO 10m 00s; measured: never drilled" in field(text, "RTO and RPO")
    assert "- never drilled in the last 90 days" in field(text, "Failure modes, last 90 days")
    assert "- live database: /srv/ledger.db (never written)" in field(text, "Restore target")
    credentials = field(text, "Credentials")
    assert "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in credentials and "AWS_PROFILE" in credentials
    assert "drillbook-test-secret" not in text  # the test environment's secret value never appears
    triage = field(text, "Corruption triage")
    assert "1. Keep the copy" in triage and "PRAGMA integrity_check;" in triage
    assert "`drillbook recover ledger --find-clean --output PATH`" in triage
    assert "litestream restore -o " in field(text, "Restore and check commands")


def test_a_drilled_database_has_each_field_from_its_drill_and_the_file_is_refreshed(capsys, tmp_path, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("app", replicated.replica, live_path=str(replicated.live)))
    code = main(["run", "app", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result["findings"]
    path = tmp_path / "evidence" / "runbooks" / "app.md"
    assert f"runbook: {path}" in result["notes"]
    written = path.read_text()
    code, text = runbook(capsys, config, "app")
    assert code == 0
    short = result["drill_id"][:8]
    assert field(text, "Writer layout").startswith("\n- litestream 0.5 (LTX) (1 files")
    bundle = json.loads(Path(result["evidence"]).read_text())
    txid = bundle["replica"]["newest_txid"]
    position = field(text, "Newest replicated position")
    assert f"- TXID {txid}, written at {bundle['replica']['newest_time'][:19]}" in position
    assert f"_Evidence: drill {short} at {result['started_at'][:19]}" in position
    drills = field(text, "Last drills")
    assert f"- newest position: PASS on {result['started_at'][:19]}" in drills and f"drill {short}, evidence {result['evidence']}" in drills
    assert "- point: never drilled" in drills and "- retention: never drilled" in drills
    rto = field(text, "RTO and RPO")
    assert "- targets: RTO 2m 00s, RPO 10m 00s" in rto and "- measured: RTO " in rto and "- forecast: " in rto
    assert "- none in 1 drill(s)" in field(text, "Failure modes, last 90 days")
    assert field(text, "No-go status").startswith("\n- go: no no-go advice")
    # The file the drill wrote says the same (it was written from the drill itself, before the record).
    assert field(written, "Newest replicated position") == position
    assert field(written, "Last drills").split("_Evidence")[0] == drills.split("_Evidence")[0]


def test_a_failed_drill_shows_its_failure_mode_and_the_html_escapes_values(capsys, tmp_path, s3_endpoint, write_catalogue):
    from drillbook.testing.s3 import s3_replica_url

    config = write_catalogue(entry("gone", s3_replica_url(s3_endpoint, "drills", "never-written/app.db"), live_path="/srv/<b>x</b>.db"))
    code = main(["run", "gone", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    code, text = runbook(capsys, config, "gone")
    assert f"- {result['failure_mode']}: 1 time(s), last " in field(text, "Failure modes, last 90 days")
    assert f"- newest position: FAIL ({result['failure_mode']}) on " in field(text, "Last drills")
    assert "- unknown: the newest drill could not inspect the replica" in field(text, "Newest replicated position")
    page = tmp_path / "gone.html"
    assert main(["runbook", "gone", "--config", str(config), "--html", str(page)]) == 0
    html = page.read_text()
    assert "/srv/&lt;b&gt;x&lt;/b&gt;.db" in html and "<b>x</b>" not in html
    assert "<h2>Corruption triage</h2>" in html


def test_a_runbook_that_cannot_be_written_is_a_note_never_an_error(tmp_path, write_catalogue):
    from datetime import UTC, datetime

    from drillbook.tasks.config import load_catalogue
    from drillbook.tasks.outcome import Verdict
    from drillbook.tasks.result import DrillResult
    from drillbook.tasks.runbook import refresh_runbook

    catalogue = load_catalogue(write_catalogue(entry("ledger", "file:///srv/replicas/ledger.db")))
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "runbooks").write_text("a file where the folder goes")
    now = datetime.now(UTC)
    result = DrillResult(
        drill_id="ab" * 16,
        database="ledger",
        started_at=now,
        finished_at=now,
        verdict=Verdict.PASS,
        rto_target_seconds=120,
        rpo_target_seconds=600,
    )
    note = refresh_runbook(result, catalogue.get("ledger"), catalogue)
    assert note.startswith("runbook not refreshed: FileExistsError")
    assert result.verdict == Verdict.PASS


@pytest.mark.parametrize(
    "replica, names",
    [
        (
            "sftp://drill@sftp.example:2222/backups/ledger",
            ["LITESTREAM_SFTP_KEY_PATH", "LITESTREAM_SFTP_PASSWORD", "LITESTREAM_SFTP_HOST_KEY"],
        ),
        ("webdavs://dav.example/backups/ledger", ["LITESTREAM_WEBDAV_USERNAME", "LITESTREAM_WEBDAV_PASSWORD"]),
        ("nats://127.0.0.1:4222/ledger", ["LITESTREAM_NATS_CREDS", "LITESTREAM_NATS_USERNAME", "LITESTREAM_NATS_TOKEN"]),
        ("abs://acct@backups/ledger", ["LITESTREAM_AZURE_ACCOUNT_KEY", "LITESTREAM_AZURE_SAS_TOKEN"]),
        ("gs://backups/ledger", ["GOOGLE_APPLICATION_CREDENTIALS"]),
    ],
)
def test_the_credentials_field_names_each_backends_variables(replica, names, capsys, monkeypatch, write_catalogue):
    monkeypatch.setenv("LITESTREAM_SFTP_PASSWORD", "drillbook-sftp-secret")  # the sftp check wants a key or a password
    code, text = runbook(capsys, write_catalogue(entry("ledger", replica)), "ledger")
    assert code == 0
    credentials = field(text, "Credentials")
    assert "no known variables" not in credentials
    assert all(name in credentials for name in names), credentials
    assert "drillbook-sftp-secret" not in text
