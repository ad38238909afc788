"""Rough edges a new user hit: each test failed before its fix, and asserts what the person saw."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.history.store import TrendPoint
from drillbook.tasks.report.charts import COLOURS
from drillbook.tasks.report.svg import render_svg
from tests.conftest import entry
from tests.test_points_drill import History, build_history, counting, run

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def _point(hours_ago: float, verdict: str, rto: float | None, rpo: float | None) -> TrendPoint:
    return TrendPoint(
        database="orders",
        drill_id=f"d{hours_ago}",
        started_at=NOW - timedelta(hours=hours_ago),
        verdict=verdict,
        failure_mode=None,
        rto_seconds=rto,
        rto_target_seconds=120.0,
        rpo_seconds=rpo,
        rpo_target_seconds=600.0,
        restored_bytes=None,
        ltx_bytes=None,
        planned_bytes=None,
        planned_rto_seconds=None,
        restore_seconds=None,
        evidence=None,
    )


def test_the_chart_draws_drills_that_failed_before_measuring_an_rto():
    """The newest ERROR and a credentials FAIL have no RTO / RPO: they are drawn on the panel's floor, in their colour."""
    points = [_point(72, "PASS", 40, 5), _point(48, "FAIL", None, None), _point(24, "PASS", 41, 6), _point(1, "ERROR", None, None)]
    svg = render_svg(points, None, now=NOW)
    assert svg.count('data-verdict="ERROR" d="M') == 2  # the RTO panel and the RPO panel
    assert svg.count('data-verdict="FAIL" d="M') == 2
    assert f'stroke="{COLOURS["ERROR"]}"' in svg


def test_a_point_drill_counts_in_coverage_shows_in_history_and_is_not_the_newest_positions_pass(
    capsys, tmp_path, s3_endpoint, write_catalogue
):
    history: History = build_history(tmp_path, s3_endpoint, steps=2)
    config = write_catalogue(
        entry("events", history.replica, smoke=[counting(history.rows(0))], restore_points={"random_within": "1d", "every": "1h"}),
        settings={"metrics_file": str(tmp_path / "drillbook.prom")},
    )
    code, result, _ = run(capsys, "events", "--config", str(config), "--at", "oldest")
    assert (code, result["verdict"]) == (0, "PASS")

    assert main(["coverage", "events", "--config", str(config), "--json"]) == 0
    slots = json.loads(capsys.readouterr().out)["slots"]
    assert [s["point"] for s in slots if s["state"] == "proven"] == [result["point"]["restored_time"]]

    monkey_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "300"
    try:
        assert main(["history", "events", "--config", str(config)]) == 0
    finally:
        os.environ.pop("COLUMNS") if monkey_columns is None else os.environ.__setitem__("COLUMNS", monkey_columns)
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "point" in header.split() and f"oldest {result['point']['restored_time'][:16].replace('T', ' ')}" in row

    # The newest position was never drilled: stale says so, and the metrics carry no last PASS and no last RTO.
    assert main(["stale", "--config", str(config)]) == 1
    assert "STALE events: no passing drill recorded" in capsys.readouterr().out
    assert main(["metrics", "--config", str(config), "--output", "-"]) == 0
    text = capsys.readouterr().out
    assert 'drillbook_last_pass_timestamp_seconds{database="events"}' not in text
    assert 'drillbook_last_rto_seconds{database="events"}' not in text


def test_a_smoke_query_that_does_not_parse_is_a_config_error_naming_the_check(capsys, replicate, write_catalogue):
    replicated = replicate()
    broken = {"name": "open orders", "sql": "SELECT count(*) FROM order WHERE", "min": 1}
    config = write_catalogue(entry("orders", replicated.replica, smoke=[broken]))
    assert main(["run", "orders", "--config", str(config), "--json"]) == 2  # before any restore: the catalogue is checked first
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "ERROR"
    assert "check 'open orders': field sql does not parse (near \"order\": syntax error)" in result["error"]

    working = {"name": "many orders", "sql": "SELECT count(*) FROM orders", "min": 10**9}
    config = write_catalogue(entry("orders", replicated.replica, smoke=[working]))
    assert main(["run", "orders", "--config", str(config)]) == 1  # a query that runs and misses is still a FAIL


def test_a_replica_url_without_endpoint_names_the_endpoint_tried(monkeypatch):
    from drillbook.tasks.storage import StorageError, open_storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # what boto3 resolves when the URL names no endpoint
    storage = open_storage("s3://drills/orders.db?region=us-east-1", timeout=5)
    with pytest.raises(StorageError) as raised:
        storage.probe()
    assert str(raised.value) == (
        "object storage endpoint unreachable: s3://drills/orders.db at AWS (no endpoint= in the URL), "
        "tried http://127.0.0.1:9 (EndpointConnectionError)"
    )


def test_run_reports_a_catalogue_mistake_before_any_prefect_server(capsys, write_catalogue, monkeypatch, tmp_path):
    import drillbook.cli.main as cli_main
    import drillbook.cli.server as cli_server

    def no_server(*args, **kwargs):
        raise AssertionError("a Prefect server was looked for before the catalogue was checked")

    monkeypatch.setattr(cli_server, "use_local_server", no_server)
    monkeypatch.setattr(cli_main, "use_detached_temporary_server", no_server)
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    assert main(["run", "ordres", "--config", str(config)]) == 2
    assert "no database named 'ordres' (known: orders)" in capsys.readouterr().err
    assert main(["nightly", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "catalogue not found" in capsys.readouterr().err


def test_the_page_respects_the_umask(capsys, write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    old = os.umask(0o022)
    try:
        assert main(["report", "--html", str(tmp_path / "site" / "drills.html"), "--config", str(config)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "site" / "drills.html").stat().st_mode) == 0o644


def test_history_of_an_unknown_name_is_a_config_error(capsys, write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    assert main(["history", "ordres", "--config", str(config)]) == 2
    assert "no database named 'ordres' (known: orders)" in capsys.readouterr().err
    assert main(["history", "orders", "--config", str(config)]) == 0  # known, never drilled: nothing yet
    assert "no drills recorded yet" in capsys.readouterr().out


def test_catalogue_not_found_says_where_it_looked_and_why_there(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_catalogue()
    assert str(raised.value) == (
        f"{tmp_path / 'drillbook.toml'}: catalogue not found (no --config given and $DRILLBOOK_CONFIG not set: the default "
        "drillbook.toml in the current directory). Create it (see README, 'Catalogue'), pass --config PATH or set $DRILLBOOK_CONFIG."
    )
    monkeypatch.setenv("DRILLBOOK_CONFIG", "conf/drills.toml")
    with pytest.raises(ConfigError) as raised:
        load_catalogue()
    assert str(raised.value) == (
        f"{tmp_path / 'conf' / 'drills.toml'}: catalogue not found ($DRILLBOOK_CONFIG=conf/drills.toml). "
        "Fix $DRILLBOOK_CONFIG or pass --config PATH."
    )


def test_the_store_leaves_no_lock_file_beside_it(write_catalogue, tmp_path):
    from drillbook.tasks.history.store import head_revision, upgrade_store

    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"), settings={"history_url": f"sqlite:///{tmp_path}/h/history.db"})
    assert upgrade_store(load_catalogue(config).history_url) == head_revision()
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["history.db"]


def test_the_demo_page_does_not_name_its_deleted_catalogue(tmp_path, write_catalogue):
    from drillbook.cli.demo import write_demo_page

    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    page = write_demo_page(config, tmp_path / "evidence", echo=lambda line: None)
    text = page.read_text()
    assert str(config) not in text and "catalogue (temporary, removed when the demo ended)" in text


def _in_a_terminal(code: str, home: Path) -> str:
    """What a person at a terminal sees when Python runs `code` (a pty: Prefect shows its notice only to a TTY)."""
    import pty
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DO_NOT_TRACK", "GITHUB_ACTIONS") and not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(leader)
    child.wait(timeout=120)
    return seen.decode("utf-8", "replace")


def test_drillbook_shows_no_telemetry_notice_in_a_terminal(tmp_path):
    notice = "Prefect collects anonymous usage data"
    assert notice in _in_a_terminal("import prefect", tmp_path / "bare")  # what a newcomer saw: Prefect alone shows it
    said = _in_a_terminal("from drillbook.cli.main import main; import prefect; main(['--version'])", tmp_path / "drillbook")
    assert notice not in said and "drillbook" in said


def test_a_chart_of_one_drill_ends_its_time_axis_at_that_drill():
    import re

    from drillbook.tasks.report.svg import AXIS_Y

    svg = render_svg([_point(2, "PASS", 40, 5)], None, now=NOW)
    labels = re.findall(rf'y="{AXIS_Y}" text-anchor="(?:start|middle|end)" fill="#444">([^<]+)</text>', svg)
    drilled = (NOW - timedelta(hours=2)).strftime("%d %b %H:%M")
    assert labels[-1] == drilled, labels  # the axis's last label is the drill, not a day after it
    assert labels[0] == (NOW - timedelta(hours=26)).strftime("%d %b %H:%M")
