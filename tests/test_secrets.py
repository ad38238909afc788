"""A password never shows, in whole or in part, in any shape: every output stream, every file, Prefect's database.

The password is what a generator or a secret manager hands out, with `@ : / # % ? & = + space` in it, given
URL-encoded through `${VAR}` in `history_url` (PostgreSQL takes it); the replica's secret key is in the
environment, the Slack token too. Every command an operator runs is run; then every stream, every file under
the work folder and Prefect's database are searched for each secret and every 6-character fragment of it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

from drillbook.cli.main import main
from tests.conftest import entry
from tests.test_slack import TOKEN, slack, slack_catalogue  # noqa: F401 (the slack fixture)

PASSWORD = "k9Q@x7:Lm/2#p%Q?z&w=r+s tU8"
REPLICA_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYq3"
FRAGMENT = 6


def fragments(secret: str) -> set[str]:
    return {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}


def secrets_and_fragments() -> dict[str, str]:
    """Each secret, its URL-encoded form, and every 6-character piece of either, mapped to what it came from."""
    found: dict[str, str] = {}
    for name, secret in (("password", PASSWORD), ("replica key", REPLICA_SECRET), ("slack token", TOKEN)):
        for form in (secret, quote(secret, safe="")):
            found[form] = name
            if name == "slack token":  # the stand-in's token is made of words ('-test-'): whole only, its pieces are words
                continue
            for piece in fragments(form):
                found.setdefault(piece, f"{name} (fragment)")
    return found


def leaks(where: str, text: str, needles: dict[str, str]) -> list[str]:
    return [f"{where}: {what} {needle!r}" for needle, what in needles.items() if needle in text]


def prefect_database() -> Path | None:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite") and "///" in url else None


@pytest.mark.slow
def test_no_secret_or_fragment_in_any_output_file_or_prefects_database(
    capsys,
    monkeypatch,
    replicate,
    write_catalogue,
    postgres_url,
    slack,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", REPLICA_SECRET)  # moto takes any key; litestream and boto3 both read it
    monkeypatch.setenv("DRILLBOOK_TEST_PW", quote(PASSWORD, safe=""))
    history_url = postgres_url.replace("postgres@", "postgres:${DRILLBOOK_TEST_PW}@")
    good, bad = replicate(), replicate()
    failing = {"name": "paid orders", "sql": "SELECT count(*) FROM orders", "min": 10**9}
    config = slack_catalogue(
        write_catalogue,
        slack,
        entry("orders", good.replica, live_path=str(good.live), freshness_query="SELECT max(created_at) FROM orders"),
        entry("invoices", bad.replica, smoke=[failing]),
        tmp_path=tmp_path,
    )
    text = config.read_text().replace("[drillbook]", f'[drillbook]\nhistory_url = "{history_url}"', 1)
    config.write_text(text)
    html = tmp_path / "site" / "drills.html"
    commands = [
        ["run", "orders"],
        ["run", "invoices"],
        ["nightly"],
        ["history", "orders"],
        ["stale"],
        ["metrics", "--output", str(tmp_path / "drillbook.prom")],
        ["watch", "--notify"],
        ["report", "--html", str(html)],
        ["runbook", "orders"],
        ["check-config", "--json"],
    ]
    needles = secrets_and_fragments()
    found: list[str] = []
    codes = {}
    for command in commands:
        codes[command[0] + (f" {command[1]}" if command[0] == "run" else "")] = main([*command, "--config", str(config)])
        out, err = capsys.readouterr()
        found += leaks(f"{command[0]} stdout", out, needles) + leaks(f"{command[0]} stderr", err, needles)
    assert codes["run orders"] == 0 and codes["run invoices"] == 1, codes  # the drills ran and used the history
    assert html.is_file() and (tmp_path / "drillbook.prom").is_file()

    for path in tmp_path.rglob("*"):
        if path.is_file():
            found += leaks(str(path.relative_to(tmp_path)), path.read_bytes().decode("utf-8", "replace"), needles)
    for request in slack.requests:
        body = request.path + request.body.decode("utf-8", "replace")
        found += leaks(f"slack {request.path}", body, needles)
    database = prefect_database()
    assert database is not None and database.is_file(), "Prefect's database was not found to search"
    for path in (database, Path(f"{database}-wal")):
        if path.is_file():
            found += leaks(f"prefect database {path.name}", path.read_bytes().decode("utf-8", "replace"), needles)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        stored = " ".join(
            str(row) for table in ("flow_run", "log", "artifact", "task_run") for row in connection.execute(f"SELECT * FROM {table}")
        )
    finally:
        connection.close()
    found += leaks("prefect tables", stored, needles)
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize(
    "password, said",
    [
        ("k9Q@x7Lm2pQz", "the password holds '@' unencoded"),
        ("k9Q/x7Lm2pQz", "the password holds '/', '?' or '#' unencoded"),
        ("k9Q#x7Lm2pQz", "the password holds '/', '?' or '#' unencoded"),
        ("k9Q x7Lm2pQz", "the password holds a space or line break"),
        ("k9Q%x7Lm2pQz", "the password holds a '%' that is not a %XX escape"),
    ],
)
def test_a_url_read_two_ways_is_a_config_error_naming_the_field_without_the_secret(
    capsys, monkeypatch, write_catalogue, tmp_path, password, said
):
    monkeypatch.setenv("DRILLBOOK_TEST_PW", password)
    config = write_catalogue(
        entry("orders", f"file://{tmp_path}/replica"),
        settings={"history_url": "postgresql+psycopg://drill:${DRILLBOOK_TEST_PW}@db.internal:5432/drills"},
    )
    for command in (["check-config"], ["run", "orders"], ["history", "orders"]):
        assert main([*command, "--config", str(config)]) == 2
        out, err = capsys.readouterr()
        assert f"[drillbook] field history_url: {said}" in err and "URL-encode the password (@ as %40" in err
        assert not leaks(command[0], out + err, dict.fromkeys(fragments(password), "fragment"))
