"""A copy that lacks what a check needs is the copy's finding (FAIL, exit 1); SQL that does not parse is ours (exit 2).

Each case is a restore a drill exists to catch, made by real litestream from a real database and drilled
through the CLI: an empty database, another application's database under the prefix, a migration that
dropped or renamed a table, a column gone. Findings name the check, what the copy lacks and the tables it
has: names only, never a row.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry
from tests.test_expectations import expect, write_suite
from tests.test_slack import slack, slack_catalogue  # noqa: F401 (slack: the fixture)

ORDERS_CHECK = {"name": "open orders", "sql": "SELECT count(*) FROM orders WHERE status = 'pending'", "min": 1}
EMAIL = "customer1@example.com"  # a row value of the sample database: never in a report


def wiped(path: Path) -> None:
    """What an application that wiped its database (or a primary that started from nothing) replicates."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE scratch (x)")
    connection.execute("DROP TABLE scratch")
    connection.commit()
    connection.close()


def other_application(path: Path) -> None:
    """A copy-paste in the litestream config: this prefix holds another application's database."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript("CREATE TABLE sessions (id INTEGER PRIMARY KEY, token TEXT); CREATE TABLE users (id INTEGER PRIMARY KEY);")
    connection.execute("INSERT INTO sessions (token) VALUES ('tok-secret-row-value')")
    connection.commit()
    connection.close()


def migrated(statement: str):
    def build(path: Path) -> None:
        make_sample_database(path, customers=50)
        connection = sqlite3.connect(path)
        connection.execute(statement)
        connection.commit()
        connection.close()

    return build


def drill(capsys, config: Path, name: str = "orders") -> tuple[int, dict, str]:
    code = main(["run", name, "--config", str(config), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.out + captured.err


def details(result: dict) -> list[str]:
    return [finding["detail"] for finding in result["findings"]]


@pytest.mark.parametrize(
    "builder, smoke, row_counts, lacking, has",
    [
        (wiped, [ORDERS_CHECK], {}, "the restored copy has no table orders", "it has no tables at all: an empty database"),
        (other_application, [ORDERS_CHECK], {"orders": 1}, "the restored copy has no table orders", "its tables: sessions, users"),
        (
            migrated("ALTER TABLE orders RENAME TO purchases"),
            [ORDERS_CHECK],
            {},
            "the restored copy has no table orders",
            "its tables: customers, order_items, purchases",
        ),
        (
            migrated("ALTER TABLE customers DROP COLUMN name"),
            [{"name": "customers reachable", "sql": "SELECT count(name) FROM customers", "min": 1}],
            {},
            "the restored copy has no column name",
            "its tables: customers, order_items, orders",
        ),
    ],
    ids=["empty-database", "another-application", "table-renamed", "column-dropped"],
)
def test_a_copy_lacking_what_a_smoke_check_names_is_a_fail_naming_it(
    capsys, replicate, write_catalogue, builder, smoke, row_counts, lacking, has
):
    replicated = replicate(builder)
    config = write_catalogue(entry("orders", replicated.replica, smoke=smoke, row_counts=row_counts))
    code, result, text = drill(capsys, config)
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "smoke test"), details(result)
    said = details(result)
    check = smoke[0]["name"]
    assert f"{check}: {lacking} ({has})" in said
    if row_counts:
        assert f"row count orders: {lacking} ({has})" in said
    assert "tok-secret-row-value" not in text and EMAIL not in text


def test_a_migration_that_dropped_a_table_and_moved_the_schema_names_the_schema_mismatch(capsys, replicate, write_catalogue):
    def dropped(path: Path) -> None:
        migrated("DROP TABLE order_items")(path)
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA user_version = 4")
        connection.commit()
        connection.close()

    replicated = replicate(dropped)
    items = {"name": "order lines", "sql": "SELECT count(*) FROM order_items", "min": 1}
    config = write_catalogue(entry("orders", replicated.replica, smoke=[items], schema_version=3))
    code, result, _ = drill(capsys, config)
    assert (code, result["failure_mode"]) == (1, "schema mismatch")
    said = details(result)
    assert "schema version is 4, expected 3" in said
    assert "order lines: the restored copy has no table order_items (its tables: customers, orders)" in said


def test_schema_version_query_freshness_query_and_a_suite_naming_what_the_copy_lacks_are_fails(
    capsys, replicate, write_catalogue, tmp_path
):
    replicated = replicate(other_application)
    write_suite(
        tmp_path / "expectations" / "orders", "orders", [expect("expect_table_row_count_to_be_between", min_value=1)], table="orders"
    )
    config = write_catalogue(
        entry(
            "orders",
            replicated.replica,
            schema_version=7,
            schema_version_query="SELECT max(version) FROM schema_migrations",
            freshness_query="SELECT max(created_at) FROM orders",
        )
    )
    code, result, _ = drill(capsys, config)
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "schema mismatch"), details(result)
    said = details(result)
    has = "(its tables: sessions, users)"
    assert (
        "schema_version_query cannot run (SELECT max(version) FROM schema_migrations): "
        f"the restored copy has no table schema_migrations {has}" in said
    )
    assert f"freshness_query cannot run: the restored copy has no table orders {has}" in said
    assert f"orders.json: orders expect_table_row_count_to_be_between: error: the restored copy has no table orders {has}" in said
    assert result["phases"]["expectations"]["status"] == "failed"


def test_freshness_query_naming_what_the_live_database_lacks_too_is_the_catalogues(capsys, replicate, write_catalogue):
    replicated = replicate(other_application)
    config = write_catalogue(
        entry("orders", replicated.replica, live_path=str(replicated.live), freshness_query="SELECT max(at) FROM events")
    )
    code, result, _ = drill(capsys, config)
    assert (code, result["verdict"]) == (2, "ERROR")
    assert "field freshness_query names what the live database lacks too (table events)" in details(result)[0]


@pytest.mark.parametrize(
    "field, value, said",
    [
        (
            "smoke",
            [{"name": "open orders", "sql": "SELEC count(*) FROM orders", "min": 1}],
            'field sql does not parse (near "SELEC": syntax error)',
        ),
        ("smoke", [{"name": "open orders", "sql": "SELECT count(*) FROM order WHERE", "min": 1}], 'near "order": syntax error'),
        ("smoke", [{"name": "by name", "sql": "SELECT count(*) FROM customers WHERE name = 'Ada", "min": 1}], "unrecognized token"),
        ("smoke", [{"name": "two", "sql": "SELECT 1; SELECT 2"}], "You can only execute one statement at a time"),
        ("freshness_query", "SELECT max(created_at FROM orders", 'field freshness_query: does not parse (near "FROM": syntax error)'),
        ("schema_version_query", "SELECT version FROM", "field schema_version_query: does not parse (incomplete input)"),
    ],
)
def test_sql_that_does_not_parse_is_a_config_error_naming_the_check_and_field(capsys, write_catalogue, tmp_path, field, value, said):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica", **{field: value}))
    for command in (["check-config"], ["run", "orders"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "invalid catalogue" in err and said in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the catalogue, then the field
        if field == "smoke":
            assert f"check {value[0]['name']!r}" in err


HOSTILE_TABLE = "<script>alert(1)</script>[bold red]x[/bold red]\x1b[31m*boom*<!channel>"


def hostile_schema(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f'CREATE TABLE "{HOSTILE_TABLE}" (id INTEGER)')
    connection.commit()
    connection.close()


def test_a_hostile_table_name_in_the_finding_reaches_slack_the_terminal_and_the_page_escaped(
    capsys,
    replicate,
    write_catalogue,
    slack,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    replicated = replicate(hostile_schema)
    config = slack_catalogue(write_catalogue, slack, entry("orders", replicated.replica, smoke=[ORDERS_CHECK]), tmp_path=tmp_path)
    assert main(["run", "orders", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "\x1b[31m" not in out + err and "\\x1b" in out  # the escape sequence is shown, not sent to the terminal
    assert "[bold red]" in out  # rich markup from the copy is printed as text, not applied
    # What Slack renders as mrkdwn (the messages; the evidence file uploaded beside them is JSON, shown as a file)
    bodies = " ".join(request.body.decode("utf-8", "replace") for request in slack.requests if "chat." in request.path)
    assert bodies, [request.path for request in slack.requests]
    assert "<script>" not in bodies and "<!channel>" not in bodies and "&lt;script&gt;" in bodies
    page = tmp_path / "drills.html"
    assert main(["report", "--html", str(page), "--config", str(config)]) == 0
    html = page.read_text()
    assert "<script>alert(1)" not in html and "\x1b" not in html
