"""Smoke tests on real SQLite files and real processes; one through the whole drill."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry, SmokeCheck
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.smoke import run_command_check, run_http_check, run_smoke_tests, run_sql_check
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry

PY = sys.executable


@pytest.fixture
def db(tmp_path) -> Path:
    return make_sample_database(tmp_path / "orders.db", customers=100)


def sql(name: str = "check", **fields) -> SmokeCheck:
    return SmokeCheck(name=name, **fields)


@pytest.mark.parametrize(
    "fields, success, observed",
    [
        ({"sql": "SELECT count(*) FROM customers", "min": 100}, True, 100),
        ({"sql": "SELECT count(*) FROM customers", "min": 101}, False, 100),
        ({"sql": "SELECT count(*) FROM orders", "equals": 300}, True, 300),
        ({"sql": "SELECT count(*) FROM orders", "equals": 299}, False, 300),
        ({"sql": "SELECT max(id) FROM customers", "between": [50, 150]}, True, 100),
        ({"sql": "SELECT max(id) FROM customers", "between": [1, 99]}, False, 100),
        ({"sql": "SELECT id FROM customers WHERE id <= 10", "min_rows": 10}, True, 10),
        ({"sql": "SELECT id FROM customers WHERE id <= 10", "min_rows": 11}, False, 10),
        ({"sql": "SELECT 'ok'", "equals": "ok"}, True, "ok"),
        ({"sql": "SELECT 1 FROM customers LIMIT 1"}, True, "ran"),
    ],
)
def test_sql_checks_pass_and_fail(db, fields, success, observed):
    result = run_sql_check(db, sql(**fields))
    assert (result.success, result.observed, result.error) == (success, observed, None)


def test_sql_error_and_wrong_shape_are_failures_with_reasons(db):
    # A query that parses but names a table the copy does not have is the copy's finding (a FAIL), naming what it has.
    missing = run_sql_check(db, sql(sql="SELECT count(*) FROM invoices", min=1))
    assert (missing.success, missing.config_error) == (False, False)
    assert missing.error == "the restored copy has no table invoices (its tables: customers, order_items, orders)"
    column = run_sql_check(db, sql(sql="SELECT count(nickname) FROM customers", min=1))
    assert (column.success, column.config_error) == (False, False)
    assert column.error == "the restored copy has no column nickname (its tables: customers, order_items, orders)"
    shape = run_sql_check(db, sql(sql="SELECT id, email FROM customers", equals=1))
    assert shape.error == "expected the query to return one value, got 2 columns"


def test_sql_check_cannot_write_to_the_copy(db):
    result = run_sql_check(db, sql(sql="DELETE FROM customers"))
    assert not result.success and "readonly" in result.error.replace(" ", "").lower()


def test_hanging_query_is_interrupted_at_its_timeout(db):
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    started = time.monotonic()
    result = run_sql_check(db, sql(sql=forever, min=1, timeout=1))
    assert time.monotonic() - started < 5
    assert (result.success, result.timed_out, result.error) == (False, True, "query interrupted at its 1s timeout")


def test_command_check_gets_the_copy_and_a_built_environment(db, monkeypatch):
    monkeypatch.setenv("APP_SECRET", "s3cret")
    monkeypatch.setenv("UNRELATED", "x")
    code = (
        "import os, sqlite3; p = os.environ['DRILLBOOK_DB_PATH'];"
        "n = sqlite3.connect(f'file:{p}?mode=ro', uri=True).execute('SELECT count(*) FROM customers').fetchone()[0];"
        "print(n, os.environ.get('APP_SECRET'), os.environ.get('UNRELATED'), os.environ.get('MODE'))"
    )
    result = run_command_check(db, sql(command=[PY, "-c", code], pass_env=["APP_SECRET"], env={"MODE": "check"}))
    assert result.success and result.observed == 0
    assert result.stdout == "100 s3cret None check\n"
    assert result.argv == [PY, "-c", code]


def test_failing_command_keeps_its_stderr_tail(db):
    code = "import sys; print('x' * 10000, file=sys.stderr); print('migration 42 missing', file=sys.stderr); sys.exit(3)"
    result = run_command_check(db, sql(command=[PY, "-c", code]))
    assert (result.success, result.observed) == (False, 3)
    assert result.error == "exit 3: migration 42 missing"
    assert result.stderr.startswith("[... 6,022 characters cut ...]\n") and result.stderr.endswith("migration 42 missing\n")


def test_missing_program_is_named(db, tmp_path):
    result = run_command_check(db, sql(command=[str(tmp_path / "no-such-app"), "check"]))
    assert result.error == f"cannot start '{tmp_path / 'no-such-app'}': No such file or directory"


def test_hanging_command_is_killed_with_its_children(db, tmp_path):
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}');"
        "print('started', flush=True); time.sleep(300)"
    )
    started = time.monotonic()
    result = run_command_check(db, sql(command=[PY, "-c", code], timeout=2))
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 10
    assert (result.success, result.timed_out, result.error) == (False, True, "killed at its 2s timeout")
    assert result.stdout == "started\n"
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"process {pid} outlived the check"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_check_starts_polls_and_stops_the_app(db, tmp_path):
    port = _free_port()
    pidfile = tmp_path / "pid"
    app = f"import os, http.server; open({str(pidfile)!r}, 'w').write(str(os.getpid())); http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')"
    check = sql(command=[PY, "-c", app], url=f"http://127.0.0.1:{port}/", timeout=20, cwd=str(tmp_path))
    result = run_http_check(db, check)
    assert (result.success, result.observed, result.error) == (True, 200, None)
    assert not _alive(int(pidfile.read_text()))


def test_http_check_fails_when_the_app_never_answers(db):
    port = _free_port()
    check = sql(command=[PY, "-c", "import time; time.sleep(60)"], url=f"http://127.0.0.1:{port}/health", timeout=1.5)
    started = time.monotonic()
    result = run_http_check(db, check)
    assert time.monotonic() - started < 10
    assert not result.success and result.timed_out
    assert result.error.startswith(f"http://127.0.0.1:{port}/health did not answer 2xx within its 1.5s timeout: no answer")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"sql": "SELECT 1", "command": ["true"]}, "check 'c': give exactly one of sql or command"),
        ({}, "check 'c': give exactly one of sql or command"),
        ({"command": ["true"], "min": 1}, "check 'c': min apply to sql checks only (a command passes on exit 0)"),
        ({"sql": "SELECT 1", "min": 1, "equals": 1}, "check 'c': give at most one of min, equals, between, min_rows (got min, equals)"),
        ({"sql": "SELECT 1", "url": "http://x/"}, "check 'c': an HTTP check (url) needs the command that starts the app"),
        ({"sql": "SELECT 1", "between": [5, 1]}, "check 'c': between's low 5 is above its high 1"),
    ],
)
def test_smoke_config_errors(fields, message):
    with pytest.raises(ValidationError) as caught:
        SmokeCheck(name="c", **fields)
    assert message in str(caught.value)


def test_catalogue_error_names_the_smoke_field(write_catalogue, capsys):
    config = write_catalogue(entry("orders", "s3://b/orders.db", smoke=[{"name": "count", "sql": "SELECT 1", "timeout": "soon"}]))
    assert main(["check-config", "--config", str(config)]) == 2
    assert "database[0] 'orders': field smoke.0.timeout: expected a number of seconds" in capsys.readouterr().err


def test_row_counts_and_checks_run_in_order_and_all_run(db):
    checks = DatabaseEntry(
        name="orders",
        replica="s3://b/orders.db",
        rto_target=60,
        rpo_target=60,
        row_counts={"customers": 100, "orders": 1000},
        smoke=[{"name": "app", "command": [PY, "-c", "pass"]}],
    )
    report = run_smoke_tests(db, checks)
    assert [(c.name, c.kind, c.success) for c in report.checks] == [
        ("row count customers", "row_count", True),
        ("row count orders", "row_count", False),
        ("app", "command", True),
    ]
    assert report.summary == "1 of 3 smoke checks failed: row count orders: got 300, expected at least 1000"


def test_failing_smoke_fails_the_drill_and_counts_in_rto(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(
        entry(
            "orders",
            replicated.replica,
            row_counts={"customers": 200},
            smoke=[{"name": "app starts", "command": [PY, "-c", "import sys; sys.exit('cannot find table invoices')"]}],
        )
    )
    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["failure_mode"]) == (1, "smoke test")
    assert [f["detail"] for f in result["findings"]] == ["app starts: exit 1: cannot find table invoices"]
    phases = result["phases"]
    assert result["rto_seconds"] == pytest.approx(sum(phases[p]["seconds"] for p in ("restore", "integrity", "smoke")), abs=0.01)
    bundle = read_bundle(Path(result["evidence"]))
    assert bundle.smoke.checks[1].stderr == "cannot find table invoices\n"
    assert bundle.smoke.checks[0].observed == 200
