"""SQL from the catalogue run on a restored copy: whose mistake is a query that will not compile?

One rule for every place that runs catalogue SQL on the copy (smoke checks, row counts,
``freshness_query``, ``schema_version_query``, expectation suites' tables): a query that does
not parse is the catalogue's to fix (ERROR, exit 2); a query that parses but names a table or
column the copy does not have is the copy's finding (FAIL, exit 1), the restores a drill exists
to catch (an empty database, another application's prefix, a dropped or renamed table).

SQLite's ``EXPLAIN`` fails alike for both, so the syntax is judged apart, on an empty in-memory
database: there every name resolves to "no such table", and any other error is the query's own.
Findings name what the copy lacks and the tables it does have: schema names, never rows.
"""

from __future__ import annotations

import re
import sqlite3

# What a query that parses can still meet on a copy with another schema: names SQLite cannot resolve.
_MISSING = re.compile(r"^(?:no such (table|column|view|index)|ambiguous column name): (.+)$", re.IGNORECASE)
MAX_TABLES_NAMED = 20


def syntax_problem(sql: str) -> str | None:
    """Why `sql` is not one statement SQLite can parse, or None (names are not resolved: that is the copy's part)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(f"EXPLAIN {sql}")
    except sqlite3.Error as exc:  # ProgrammingError for two statements, OperationalError for the parser's own words
        message = str(exc)
        return None if _MISSING.match(message) else message
    finally:
        connection.close()
    return None


def missing_name(exc: BaseException | str) -> str | None:
    """'table invoices' / 'column orders.email' when `exc` is SQLite failing to resolve a name, else None."""
    found = _MISSING.match(str(exc).strip())
    if not found:
        return None
    kind = found.group(1) or "column"
    return f"{kind.lower()} {found.group(2)}"


def copy_tables(connection: sqlite3.Connection) -> list[str]:
    """The copy's tables and views, by name (the schema only; an unreadable schema reads as none).

    SQLite's own tables and litestream's (``_litestream_seq``, ``_litestream_lock``, which it adds to every
    database it replicates) are not the application's: a wiped database holding only them reads as empty.
    """
    try:
        rows = connection.execute(
            "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' AND name NOT LIKE '!_litestream!_%' ESCAPE '!' ORDER BY name"
        ).fetchall()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows]


def has_table(connection: sqlite3.Connection, table: str) -> bool:
    """True when the copy has a table or view of this name (SQLite compares names without case)."""
    row = connection.execute("SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE", (table,)).fetchone()
    return row is not None


def lacks(missing: str, tables: list[str]) -> str:
    """'the restored copy has no table invoices (its tables: customers, orders)': what a finding says."""
    if not tables:
        held = "it has no tables at all: an empty database"
    else:
        shown = ", ".join(tables[:MAX_TABLES_NAMED]) + (
            f" and {len(tables) - MAX_TABLES_NAMED} more" if len(tables) > MAX_TABLES_NAMED else ""
        )
        held = f"its tables: {shown}"
    return f"the restored copy has no {missing} ({held})"


class CopyLacks(Exception):
    """A catalogue query parses but names what the copy does not have: the copy's finding."""

    def __init__(self, missing: str, tables: list[str]):
        self.missing, self.tables = missing, tables
        super().__init__(lacks(missing, tables))


class QueryBroken(Exception):
    """A catalogue query does not parse: the catalogue's to fix."""


def check_on_copy(connection: sqlite3.Connection, sql: str) -> None:
    """Compile `sql` on the copy without running it; raise QueryBroken (the catalogue's) or CopyLacks (the copy's)."""
    try:
        connection.execute(f"EXPLAIN {sql}")
    except sqlite3.Error as exc:
        problem = syntax_problem(sql)
        if problem is not None:
            raise QueryBroken(problem) from None
        missing = missing_name(exc)
        if missing is None:  # parses, resolves nowhere else either: e.g. a function this SQLite lacks
            raise QueryBroken(str(exc)) from None
        raise CopyLacks(missing, copy_tables(connection)) from None
