"""The catalogue: bad input gets a message naming file, entry and field."""

from __future__ import annotations

import json

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue, parse_duration
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.text import redact_url
from tests.conftest import entry

S3 = "s3://drills/orders.db?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("250ms", 0.25), (" 2m ", 120.0)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m5", "", "-3s", 0, True, "1w"])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_a_valid_catalogue_loads(write_catalogue):
    path = write_catalogue(
        {
            "name": "orders",
            "replica": S3,
            "rto_target": "5m",
            "rpo_target": "1m",
            "schema_version": 42,
            "live_path": "/var/lib/app/orders.db",
        }
    )
    catalogue = load_catalogue(path)
    orders = catalogue.get("orders")
    assert (orders.rto_target, orders.rpo_target, orders.schema_version) == (300.0, 60.0, 42)


def _error(path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    return str(caught.value)


def test_bad_duration_names_file_entry_and_field(write_catalogue):
    path = write_catalogue({"name": "orders", "replica": S3, "rto_target": "5 minutes", "rpo_target": "1m"})
    assert _error(path) == (
        f"{path}: invalid catalogue:\n"
        '  database[0] \'orders\': field rto_target: expected a number of seconds or a string like "90s", "5m", "1h", got \'5 minutes\''
    )


def test_missing_and_unknown_fields(write_catalogue):
    path = write_catalogue({"name": "orders", "replica": S3, "rto_target": "5m", "rpo_targte": "1m"})
    message = _error(path)
    assert "database[0] 'orders': field rpo_target: required field is missing" in message
    assert "database[0] 'orders': field rpo_targte: unknown field (check the spelling; see README, 'Catalogue')" in message


def test_bad_replica_url(write_catalogue):
    path = write_catalogue({"name": "orders", "replica": "http://example/orders.db", "rto_target": "5m", "rpo_target": "1m"})
    assert (
        "database[0] 'orders': field replica: use a replica URL litestream replicates to "
        "(abs://, file://, gs://, nats://, oss://, s3://, sftp://, webdav://, webdavs://); got 'http://example/orders.db'"
    ) in _error(path)


def test_duplicate_names(write_catalogue):
    one = {"name": "orders", "replica": S3, "rto_target": "5m", "rpo_target": "1m"}
    assert "database[1] name 'orders' is used twice" in _error(write_catalogue(one, one))


def test_not_toml(tmp_path):
    path = tmp_path / "drillbook.toml"
    path.write_text("[[database]\nname = ")
    assert _error(path).startswith(f"{path}: not valid TOML:")


def test_missing_file(tmp_path):
    assert (
        _error(tmp_path / "nope.toml")
        == f"{tmp_path / 'nope.toml'}: catalogue not found. Create it (see README, 'Catalogue') or pass --config PATH."
    )


def test_unknown_database(write_catalogue):
    path = write_catalogue({"name": "orders", "replica": S3, "rto_target": "5m", "rpo_target": "1m"})
    with pytest.raises(ConfigError, match=r"no database named 'invoices' \(known: orders\)"):
        load_catalogue(path).get("invoices")


def test_cli_config_error_exits_2_with_the_message(write_catalogue, capsys):
    path = write_catalogue({"name": "orders", "replica": S3, "rto_target": "soon", "rpo_target": "1m"})
    assert main(["run", "orders", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"drillbook: {path}: invalid catalogue:" in err
    assert "database[0] 'orders': field rto_target:" in err
    assert main(["check-config", "--config", str(path)]) == 2


def test_check_config_ok(write_catalogue, capsys):
    path = write_catalogue({"name": "orders", "replica": S3 + "&accessKeyId=AKIA123", "rto_target": "5m", "rpo_target": "1m"})
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 database(s) OK" in out and "orders" in out
    assert "AKIA123" not in out


def test_check_config_warns_of_databases_sharing_one_replica_or_nesting_one_in_another(write_catalogue, capsys):
    path = write_catalogue(
        entry("orders", "s3://backups/prod/orders?endpoint=http://127.0.0.1:9000&secretAccessKey=SECRET"),
        entry("orders-copy", "s3://backups/prod/orders?endpoint=http://127.0.0.1:9000/"),
        entry("orders-old", "s3://backups/prod/orders/old?endpoint=http://127.0.0.1:9000"),
        entry("orders-2", "s3://backups/prod/orders-2?endpoint=http://127.0.0.1:9000"),  # a sibling: whole segments
        entry("elsewhere", "s3://backups/prod/orders?endpoint=http://10.0.0.9:9000"),  # another store
        entry("files", "file:///srv/replicas/a"),
        entry("files-inner", "file:///srv/replicas/a/b"),
    )
    assert main(["check-config", "--config", str(path)]) == 0  # a warning, not an error: a second entry may drill it on purpose
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: orders-copy uses the same replica as orders (s3://backups/prod/orders" in out
    assert "warning: orders-old uses a replica inside the one of orders (" in out
    assert "warning: files-inner uses a replica inside the one of files (file:///srv/replicas/a/b)" in out
    assert out.count("warning:") == 3 and "SECRET" not in out
    assert main(["check-config", "--config", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["warnings"]) == 3


def test_redact_url():
    assert "SECRET" not in redact_url("s3://b/p?endpoint=http://x:9&secretAccessKey=SECRET&region=r")
    assert redact_url(S3) == S3


# --- names and identifiers checked whole (a '$' in a pattern lets a trailing newline through) ------------------


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("name", "orders\n", "field name: use letters, digits"),
        ("owners", ["U0ADA1\n"], "is not a Slack user ID"),
        ("tags", ["nightly\n"], "field tags: tag 'nightly\\n' holds a control character or line break (\\x0a"),
        ("tags", ["x" * 64], "at most 63 are allowed"),
        ("expectations", ["orders\u2028.json"], "holds a control character or line break (\\u2028"),
    ],
)
def test_names_with_a_trailing_newline_or_a_line_separator_are_refused(write_catalogue, field, value, said):
    database = {"name": "orders", "replica": S3, "rto_target": "5m", "rpo_target": "1m", field: value}
    assert said in _error(write_catalogue(database))


@pytest.mark.parametrize("name", ["ok\n", "a\u202eb", "a\u2028b", "\x1b[31mred"])
def test_smoke_check_names_are_one_printable_line(write_catalogue, name):
    database = {"name": "orders", "replica": S3, "rto_target": "5m", "rpo_target": "1m", "smoke": [{"name": name, "sql": "SELECT 1"}]}
    assert "use 1 to 80 printable characters" in _error(write_catalogue(database))


@pytest.mark.parametrize(
    "release, said",
    [
        ("v1.2\n", "--release holds a control character or line break (\\x0a at position 4): 'v1.2\\\\x0a'"),
        ("v1.2\u2028", "--release holds a control character or line break (\\u2028 at position 4)"),
        ("x" * 1_000_000, "--release is 1,000,000 characters long; at most 200 are allowed"),
    ],
)
@pytest.mark.parametrize("command", ["run", "release"])
def test_a_bad_release_is_a_one_line_error_naming_the_option(write_catalogue, capsys, release, said, command):
    path = write_catalogue({"name": "orders", "replica": S3, "rto_target": "5m", "rpo_target": "1m"})
    argv = ["run", "orders"] if command == "run" else ["release", "--in-process", "--wait"]
    assert main([*argv, "--config", str(path), "--release", release]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"drillbook: {said}"), err[:300]
