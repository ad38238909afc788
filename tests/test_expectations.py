"""Data expectations: real Great Expectations on real SQLite copies, restored by the real litestream where it matters."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from drillbook.cli.main import main
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.expectations import load_suite, run_expectations
from drillbook.tasks.report.drill import render_markdown, render_terminal
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry

ROOT = Path(__file__).resolve().parent.parent
SECRET_DOMAIN = "private-mail.test"


def people(path: Path, rows: int = 300) -> Path:
    """A table of personal data: the values must never reach evidence or reports."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, score REAL)")
    connection.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?)",
        ((i, f"person{i}@{SECRET_DOMAIN}", f"Person Number{i}", i * 1.5) for i in range(1, rows + 1)),
    )
    connection.commit()
    connection.close()
    return path


def write_suite(directory: Path, name: str, expectations: list[dict], table: str | None = "customers") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    suite = {"name": name, "expectations": expectations}
    if table:
        suite["meta"] = {"table": table}
    path.write_text(json.dumps(suite))
    return path


def expect(kind: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs}


EMAIL_BREAKERS = [
    expect("expect_table_row_count_to_be_between", min_value=1),
    expect("expect_column_values_to_match_regex", column="email", regex="^nobody@"),
    expect("expect_column_most_common_value_to_be_in_set", column="email", value_set=["x"]),
    expect("expect_column_distinct_values_to_be_in_set", column="name", value_set=["x"]),
    expect("expect_column_values_to_not_match_regex", column="email", regex=SECRET_DOMAIN.replace(".", r"\.")),
]


# --- through the whole drill -------------------------------------------------------------------------


def test_passing_suite_and_smoke_on_a_restored_copy(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    write_suite(
        tmp_path / "expectations" / "orders",
        "orders",
        [
            expect("expect_table_row_count_to_be_between", min_value=100),
            expect("expect_column_values_to_be_in_set", column="status", value_set=["pending", "paid", "shipped", "cancelled"]),
            expect("expect_column_values_to_not_be_null", column="customer_id"),
            {**expect("expect_column_values_to_be_unique", column="email"), "meta": {"table": "customers"}},
        ],
        table="orders",
    )
    config = write_catalogue(entry("orders", replicated.replica, row_counts={"customers": 200, "orders": 1}))

    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 0, result
    phases = result["phases"]
    assert phases["smoke"]["summary"] == "2 smoke checks passed"
    assert phases["expectations"]["summary"] == "4 expectations in 1 suite passed"
    # RTO counts the smoke test (the app works on the copy); expectations are reported beside it.
    assert result["rto_seconds"] == pytest.approx(sum(phases[p]["seconds"] for p in ("restore", "integrity", "smoke")), abs=0.01)
    bundle = read_bundle(Path(result["evidence"]))
    assert [r.success for r in bundle.expectations.results] == [True] * 4
    assert bundle.expectations.results[3].table == "customers"
    assert bundle.expectations.results[0].observed_value == 600  # 200 customers × 3 orders
    assert not (tmp_path / "gx").exists() and not (Path.cwd() / "gx").exists()


def test_failing_expectations_leak_no_email(capsys, replicate, write_catalogue, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    replicated = replicate(people)
    write_suite(tmp_path / "expectations" / "people", "customers", EMAIL_BREAKERS)
    config = write_catalogue(entry("people", replicated.replica))

    code = main(["run", "people", "--config", str(config), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)

    assert (code, result["failure_mode"]) == (1, "data expectations")
    details = [f["detail"] for f in result["findings"]]
    assert details[0] == "customers.json: customers.email expect_column_values_to_match_regex: 300 unexpected (100%)"
    assert "customers.json: customers.email expect_column_most_common_value_to_be_in_set: observed (withheld" in details[1]
    assert len(details) == 4
    bundle_text = Path(result["evidence"]).read_text()
    bundle = read_bundle(Path(result["evidence"]))
    terminal = _terminal_text(bundle)
    markdown = render_markdown(bundle)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drill-people"])))
    assert artifacts, "the drill wrote no Prefect artifact"
    artifact_text = "\n".join(str(a.data) for a in artifacts)
    for where, text in {
        "evidence": bundle_text,
        "stdout": captured.out,
        "stderr": captured.err,
        "terminal": terminal,
        "markdown": markdown,
        "artifact": artifact_text,
    }.items():
        assert "@" + SECRET_DOMAIN not in text and "Person Number" not in text, f"row values leaked into the {where}"
    assert "expect_column_values_to_match_regex" in artifact_text  # the check itself is named


def _terminal_text(result) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=200, file=sink)
        console.print(render_terminal(result))
        return console.export_text()


def test_samples_are_kept_only_when_the_entry_opts_in(tmp_path):
    db = people(tmp_path / "people.db")
    suite = load_suite(write_suite(tmp_path / "s", "customers", EMAIL_BREAKERS))
    redacted = run_expectations(db, [suite])
    kept = run_expectations(db, [suite], samples=True)
    assert "@" + SECRET_DOMAIN not in redacted.model_dump_json()
    assert kept.results[1].samples and all(SECRET_DOMAIN in value for value in kept.results[1].samples)
    assert 0 < len(kept.results[2].observed_value) <= 20  # every email is "most common" here; capped at the sample count
    assert all(value.endswith("@" + SECRET_DOMAIN) for value in kept.results[2].observed_value)


def test_raising_expectation_is_isolated(tmp_path):
    db = make_sample_database(tmp_path / "orders.db", customers=100)
    suite = load_suite(
        write_suite(
            tmp_path / "s",
            "mixed",
            [
                expect("expect_table_row_count_to_be_between", min_value=1),
                # Copied from a GX project that supplies suite parameters: raises out of validate().
                expect("expect_table_row_count_to_be_between", min_value={"$PARAMETER": "expected_rows"}),
                expect("expect_column_values_to_not_be_null", column="dropped_by_migration"),
                # Fails to serialize a numpy bool on pandas 3 in GX's own to_json_dict(); read safely here.
                expect(
                    "expect_column_quantile_values_to_be_between",
                    column="id",
                    quantile_ranges={"quantiles": [0.5], "value_ranges": [[0, 1000]]},
                ),
                expect("expect_column_values_to_be_unique", column="email"),
            ],
        )
    )
    report = run_expectations(db, [suite])
    outcome = [(r.index, r.success, r.error) for r in report.results]
    assert outcome == [
        (0, True, None),
        (1, False, "SuiteParameterError: No value found for $PARAMETER expected_rows"),
        (2, False, 'Error: The column "dropped_by_migration" in BatchData does not exist.'),
        (3, True, None),
        (4, True, None),
    ]
    assert report.results[3].observed_value == {"quantiles": [0.5], "values": [50]}
    assert report.status.value == "failed"
    assert report.summary.startswith(
        "2 of 5 expectations failed: customers expect_table_row_count_to_be_between: error: SuiteParameterError"
    )


def test_missing_table_fails_its_expectations_only(tmp_path):
    db = make_sample_database(tmp_path / "orders.db", customers=20)
    suite = load_suite(
        write_suite(
            tmp_path / "s",
            "two",
            [
                expect("expect_table_row_count_to_be_between", min_value=1),
                {**expect("expect_table_row_count_to_be_between", min_value=1), "meta": {"table": "ghost"}},
            ],
        )
    )
    report = run_expectations(db, [suite])
    assert [r.success for r in report.results] == [True, False]
    assert report.results[1].error == "the restored copy has no table ghost (its tables: customers, order_items, orders)"


def test_wrong_path_is_an_error_not_an_empty_database(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s", "one", [expect("expect_table_row_count_to_be_between", min_value=0)]))
    report = run_expectations(tmp_path / "nope.db", [suite])
    assert report.status.value == "error"
    assert report.summary.startswith(f"cannot open the restored copy {tmp_path / 'nope.db'} read-only:")
    assert not (tmp_path / "nope.db").exists()


# --- malformed suites ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ('{"name": "x"}', 'not an expectation suite: expected a JSON object with an "expectations" list'),
        (
            json.dumps(
                {
                    "meta": {"table": "t"},
                    "expectations": [
                        expect("expect_table_row_count_to_be_between", min_value=1),
                        expect("expect_column_values_to_be_nice", column="a"),
                    ],
                }
            ),
            "expectation[1] (expect_column_values_to_be_nice): does not load: unknown expectation type; check the spelling against the Great Expectations 1.x expectation names",
        ),
        (
            json.dumps({"meta": {"table": "t"}, "expectations": [expect("expect_column_values_to_not_be_null")]}),
            "expectation[0] (expect_column_values_to_not_be_null): does not load: 1 validation error for ExpectColumnValuesToNotBeNull column field required (type=value_error.missing)",
        ),
        (
            json.dumps({"expectations": [expect("expect_table_row_count_to_be_between", min_value=1)]}),
            'expectation[0] (expect_table_row_count_to_be_between): no table: set "meta": {"table": "..."} on the suite or on the expectation',
        ),
    ],
)
def test_malformed_suite_is_a_config_error_naming_file_and_expectation(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_suite(path, entry="orders")
    assert str(caught.value) == f"{path}: {message}"
    assert (caught.value.path, caught.value.entry) == (str(path), "orders")


def test_check_config_loads_every_suite(write_catalogue, tmp_path, capsys):
    config = write_catalogue(entry("orders", "s3://b/orders.db"))
    good = write_suite(tmp_path / "expectations" / "orders", "a", [expect("expect_table_row_count_to_be_between", min_value=1)])
    assert main(["check-config", "--config", str(config)]) == 0
    assert f"expectations: 1 in {good}" in capsys.readouterr().out

    bad = write_suite(tmp_path / "expectations" / "orders", "b", [expect("expect_nothing_at_all")])
    assert main(["check-config", "--config", str(config)]) == 2
    assert f"drillbook: {bad}: expectation[0] (expect_nothing_at_all): does not load:" in capsys.readouterr().err


def test_listed_suite_missing_is_named(write_catalogue, tmp_path, capsys):
    config = write_catalogue(entry("orders", "s3://b/orders.db", expectations=["orders.json"]))
    assert main(["check-config", "--config", str(config)]) == 2
    missing = tmp_path / "expectations" / "orders.json"
    assert capsys.readouterr().err.strip() == (
        f"drillbook: {missing}: suite file not found (listed by database 'orders'); create it or fix the catalogue's expectations list"
    )


def test_malformed_suite_makes_the_drill_an_error_naming_the_file(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    bad = write_suite(tmp_path / "expectations" / "orders", "bad", [expect("expect_nothing_at_all")])
    config = write_catalogue(entry("orders", replicated.replica))
    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["verdict"], result["failure_mode"]) == (2, "ERROR", "drill error")
    assert f"expectations: {bad}: expectation[0] (expect_nothing_at_all): does not load" in result["findings"][0]["detail"]


def test_every_committed_suite_loads_completely():
    suites = sorted((ROOT / "expectations").rglob("*.json"))
    assert suites, "the repository has no suites (the demo needs expectations/demo-orders/)"
    for path in suites:
        declared = len(json.loads(path.read_text())["expectations"])
        assert len(load_suite(path)) == declared, path


def test_demo_suite_passes_on_the_demo_database(tmp_path):
    db = make_sample_database(tmp_path / "orders.db")
    suites = [load_suite(p) for p in sorted((ROOT / "expectations" / "demo-orders").glob("*.json"))]
    report = run_expectations(db, suites)
    assert report.status.value == "passed", report.summary


# --- suggest ---------------------------------------------------------------------------------------------


def test_suggest_from_the_replica_loads_and_passes_on_its_source(replicate, write_catalogue, tmp_path, capsys):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    assert main(["expectations", "suggest", "orders", "--config", str(config)]) == 0
    written = tmp_path / "expectations" / "orders" / "suggested.json"
    suite = load_suite(written)
    assert f"wrote {len(suite)} expectations to {written}; edit the bounds, then commit it" in capsys.readouterr().out
    types = [(table, raw["type"], raw["kwargs"].get("column")) for raw, table in zip(suite.expectations, suite.tables)]
    assert ("customers", "expect_column_values_to_be_unique", "id") in types
    assert ("orders", "expect_column_values_to_not_be_null", "status") in types
    assert {table for table, _, _ in types} == {"customers", "orders", "order_items"}  # not litestream's _litestream_* tables
    report = run_expectations(replicated.live, [suite])
    assert report.status.value == "passed", report.summary
    # The scratch copy made for reading the schema is gone.
    assert not any(p.suffix == ".db" for p in (tmp_path / "scratch").rglob("*"))
    # Never over the operator's edited file.
    assert main(["expectations", "suggest", "orders", "--config", str(config)]) == 2
    assert f"{written} already exists" in capsys.readouterr().err


def test_suggest_from_a_file_with_a_compound_key(tmp_path, capsys):
    db = tmp_path / "links.db"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE links (a INTEGER NOT NULL, b INTEGER NOT NULL, note TEXT, PRIMARY KEY (a, b))")
    connection.execute("CREATE TABLE empty (id INTEGER PRIMARY KEY)")
    connection.executemany("INSERT INTO links VALUES (?, ?, NULL)", [(i, i % 3) for i in range(50)])
    connection.commit()
    connection.close()
    assert main(["expectations", "suggest", "links", "--db", str(db), "--output", "-"]) == 0
    suite = json.loads(capsys.readouterr().out)
    assert {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["a", "b"]}, "meta": {"table": "links"}} in suite[
        "expectations"
    ]
    assert {
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": 45, "max_value": 100},
        "meta": {"table": "links"},
    } in suite["expectations"]
    path = tmp_path / "links.json"
    path.write_text(json.dumps(suite))
    assert run_expectations(db, [load_suite(path)]).status.value == "passed"


def test_no_progress_bars_and_no_gx_folder(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    db = make_sample_database(tmp_path / "orders.db", customers=20)
    suite = load_suite(write_suite(tmp_path / "s", "one", [expect("expect_column_values_to_not_be_null", column="email")]))
    assert run_expectations(db, [suite]).status.value == "passed"
    captured = capfd.readouterr()
    # Great Expectations' default context draws "Calculating Metrics: 100%|####|" on stderr.
    assert "Calculating Metrics" not in captured.err + captured.out
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("orders.db")) == ["s"]  # no gx/, no uncommitted/
