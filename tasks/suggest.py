"""`drillbook expectations suggest NAME`: a starter suite written from what a database holds today.

For every table: row count near today's (at least 90%, at most twice), so
non-empty when it is non-empty today; primary key columns unique and not null;
NOT NULL columns not null. One plain Great Expectations suite, each
expectation naming its table in ``meta.table``. The operator edits it and
commits it; nothing here reads a row value.
"""

from __future__ import annotations

import json
import math
import sqlite3
from importlib.metadata import version
from pathlib import Path
from typing import Any

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.restore import throwaway_copy


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def suggest_suite(db_path: str | Path, name: str) -> dict[str, Any]:
    """The starter suite for the database at `db_path` (opened read-only), as a JSON-ready dict."""
    path = Path(db_path)
    if not path.is_file():
        raise DrillbookError(f"{path}: no such database file")
    try:
        connection = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DrillbookError(f"{path}: SQLite cannot open it read-only: {exc}") from None
    expectations: list[dict[str, Any]] = []
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND name NOT LIKE '\\_litestream\\_%' ESCAPE '\\' ORDER BY name"  # litestream's own bookkeeping tables
            )
        ]
        for table in tables:
            expectations.extend(_table_expectations(connection, table))
    except sqlite3.Error as exc:
        raise DrillbookError(f"{path}: cannot read its schema: {exc}") from None
    finally:
        connection.close()
    return {
        "name": name,
        "meta": {
            "great_expectations_version": version("great_expectations"),
            "drillbook": f"suggested from {path.name} by `drillbook expectations suggest`; edit the bounds, then commit",
        },
        "expectations": expectations,
    }


def _table_expectations(connection: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    rows = connection.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
    low = max(1, math.floor(rows * 0.9)) if rows else 0
    out = [_expect("expect_table_row_count_to_be_between", table, min_value=low, max_value=max(rows * 2, 10))]
    columns = connection.execute(f"PRAGMA table_info({_quote(table)})").fetchall()  # cid, name, type, notnull, default, pk
    keys = [c[1] for c in sorted((c for c in columns if c[5]), key=lambda c: c[5])]
    if len(keys) == 1:
        out.append(_expect("expect_column_values_to_be_unique", table, column=keys[0]))
    elif len(keys) > 1:
        out.append(_expect("expect_compound_columns_to_be_unique", table, column_list=keys))
    for _cid, column, _type, notnull, _default, pk in columns:
        if notnull or pk:
            out.append(_expect("expect_column_values_to_not_be_null", table, column=column))
    return out


def _expect(kind: str, table: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"table": table}}


def write_suite(suite: dict[str, Any], output: Path) -> Path:
    """Write the suite; never over an existing file (the operator's edits live there)."""
    if output.exists():
        raise DrillbookError(f"{output} already exists; move it away or pass --output with another path")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(suite, indent=2) + "\n")
    return output


def suggest_from_replica(entry: Any, scratch_root: Path) -> dict[str, Any]:
    """Restore `entry` into a fresh scratch directory, suggest from the copy, remove the copy."""
    replica = inspect_replica(entry)
    if not replica.ok:
        raise DrillbookError(f"cannot read the replica of {entry.name!r}: {replica.summary}")
    with throwaway_copy(entry, replica, scratch_root, "suggest") as restored:
        if not restored.ok or restored.path is None:
            raise DrillbookError(f"cannot restore {entry.name!r}: {restored.summary}")
        return suggest_suite(restored.path, entry.name)
