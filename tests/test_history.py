"""The history store: one row per drill, on SQLite by default and on PostgreSQL by URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.errors import HistoryError
from drillbook.tasks.history.store import recent_drills, record_drill
from tests.conftest import entry


def test_every_drill_gets_a_row_and_history_lists_it(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), entry("invoices", replicated.replica, schema_version=7))
    assert main(["run", "orders", "--config", str(config)]) == 0
    assert main(["run", "invoices", "--config", str(config), "--release", "v2"]) == 1
    capsys.readouterr()

    assert main(["history", "--config", str(config), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["database"], r["verdict"], r["failure_mode"], r["release"]) for r in rows] == [
        ("invoices", "FAIL", "schema mismatch", "v2"),
        ("orders", "PASS", None, None),
    ]
    assert (tmp_path / "evidence" / "history.db").is_file()

    assert main(["history", "orders", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "orders" in out and "PASS" in out and "invoices" not in out


def test_a_broken_history_store_loses_nothing(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), settings={"history_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0  # the verdict stands
    assert any("cannot write the drill history at postgresql+psycopg://nobody@127.0.0.1:1/none" in n for n in result["notes"])
    bundle = json.loads(Path(result["evidence"]).read_text())
    assert bundle["verdict"] == "PASS"
    assert any("cannot write the drill history" in n for n in bundle["notes"])


def test_history_on_postgresql(postgres_url, replicate, write_catalogue, capsys):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), settings={"history_url": postgres_url})
    assert main(["run", "orders", "--config", str(config)]) == 0
    rows = recent_drills(postgres_url, "orders")
    assert len(rows) == 1 and rows[0].verdict == "PASS" and rows[0].restored_txid
    from drillbook.tasks.evidence import read_bundle

    # A retried record step does not add a second row.
    record_drill(postgres_url, read_bundle(rows[0].evidence))
    assert len(recent_drills(postgres_url)) == 1


def test_history_errors_hide_passwords():
    with pytest.raises(HistoryError) as caught:
        recent_drills("postgresql+psycopg://drillbook:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
