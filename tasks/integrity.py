"""Step 3: is the restored copy an intact, self-contained database of the expected schema?

Our own checks, not litestream's `-integrity-check` (which deletes the copy on
failure and so leaves no evidence). The copy is opened read-only.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import Field

from drillbook.tasks.catalogue_sql import CopyLacks, QueryBroken, check_on_copy
from drillbook.tasks.files import write_atomic
from drillbook.tasks.outcome import Status
from drillbook.tasks.steps import StepResult

MAX_ROWS_KEPT = 1000  # integrity / foreign-key rows kept in the bundle; every row goes to rows_file, the count is always exact
_INTEGRITY_LIMIT = 1_000_000  # PRAGMA integrity_check(N): stop only after this many problems


class IntegrityReport(StepResult):
    path: str | None = None
    integrity_rows: list[str] = Field(default_factory=list, description="PRAGMA integrity_check output; ['ok'] when intact.")
    integrity_problems: int = 0
    foreign_key_rows: list[dict] = Field(default_factory=list)
    foreign_key_problems: int = 0
    sidecars: dict[str, int] = Field(default_factory=dict, description="Sidecar files beside the copy after restore: suffix -> bytes.")
    sidecar_problem: str | None = None
    page_size: int | None = None
    page_count: int | None = None
    file_bytes: int | None = None
    sha256: str | None = None
    journal_mode: str | None = None
    tables: int | None = None
    schema_version: str | None = None
    expected_schema_version: str | None = None
    schema_problem: str | None = None
    query_error: str | None = Field(default=None, description="schema_version_query does not parse: the catalogue's, an ERROR.")
    open_error: str | None = None
    rows_file: str | None = Field(
        default=None, description="Every integrity_check and foreign_key_check row, one a line, when there were problems."
    )

    @property
    def intact(self) -> bool:
        return self.open_error is None and self.integrity_problems == 0 and self.foreign_key_problems == 0 and not self._size_mismatch

    @property
    def _size_mismatch(self) -> bool:
        return None not in (self.page_size, self.page_count, self.file_bytes) and self.page_size * self.page_count != self.file_bytes


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def find_sidecars(path: Path) -> dict[str, int]:
    found = {}
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            found[suffix] = sidecar.stat().st_size
    return found


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; a wrong path is an error, never a new empty database."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def check_integrity(
    path: str | Path,
    *,
    expected_schema: int | str | None = None,
    schema_query: str = "PRAGMA user_version",
    rows_file: Path | None = None,
) -> IntegrityReport:
    """Run every check on the copy at `path` and say which failed; with problems, write every row to `rows_file`."""
    started = time.monotonic()
    path = Path(path)
    report = IntegrityReport(path=str(path), expected_schema_version=None if expected_schema is None else str(expected_schema))

    # Before SQLite opens the file (opening creates -shm / -wal of its own).
    report.sidecars = find_sidecars(path)
    if report.sidecars.get("-journal"):
        report.sidecar_problem = "a hot rollback journal (-journal) lies beside the restored copy"
    elif report.sidecars.get("-wal"):
        report.sidecar_problem = f"the restored copy depends on a {report.sidecars['-wal']:,}-byte -wal file: it is not self-contained"
    try:
        report.file_bytes = path.stat().st_size
    except OSError as exc:
        report.open_error = f"cannot read {path}: {exc.strerror}"
        return _finish(report, started)

    # The checksum reads the file while SQLite checks it: both release the GIL,
    # so on two cores the second full read costs (almost) no wall time.
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(sha256_file, path)
        try:
            connection = open_read_only(path)
            try:
                _run_checks(connection, report, schema_query, rows_file)
            finally:
                connection.close()
        except sqlite3.Error as exc:
            report.open_error = f"SQLite cannot read the copy: {exc}"
        try:
            report.sha256 = digest.result()
        except OSError as exc:
            report.open_error = report.open_error or f"cannot read {path}: {exc.strerror}"
    return _finish(report, started)


def _run_checks(connection: sqlite3.Connection, report: IntegrityReport, schema_query: str, rows_file: Path | None = None) -> None:
    report.page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    report.page_count = connection.execute("PRAGMA page_count").fetchone()[0]
    report.journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    report.tables = connection.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]

    rows = [row[0] for row in connection.execute(f"PRAGMA integrity_check({_INTEGRITY_LIMIT})")]
    report.integrity_problems = 0 if rows == ["ok"] else len(rows)
    report.integrity_rows = rows[:MAX_ROWS_KEPT]

    fk_rows = connection.execute("PRAGMA foreign_key_check").fetchall()
    report.foreign_key_problems = len(fk_rows)
    report.foreign_key_rows = [
        {"table": table, "rowid": rowid, "parent": parent, "fk_index": fkid} for table, rowid, parent, fkid in fk_rows[:MAX_ROWS_KEPT]
    ]
    if rows_file is not None and (report.integrity_problems or report.foreign_key_problems):
        lines = [f"integrity_check: {row}" for row in rows] if report.integrity_problems else []
        lines += [f"foreign_key_check: table={t} rowid={r} parent={p} fk_index={f}" for t, r, p, f in fk_rows]
        try:
            write_atomic(rows_file, "\n".join(lines))
            report.rows_file = str(rows_file)
        except OSError:  # the check and its counts stand; the bundle keeps the first MAX_ROWS_KEPT rows
            report.rows_file = None

    try:
        check_on_copy(connection, schema_query)
        value = connection.execute(schema_query).fetchone()
    except QueryBroken as exc:  # the catalogue's, whatever the copy holds
        report.query_error = f"field schema_version_query does not parse ({exc}): fix the query in the catalogue"
        return
    except (CopyLacks, sqlite3.Error) as exc:
        if report.expected_schema_version is not None:
            lacking = isinstance(exc, CopyLacks)
            report.schema_problem = f"schema_version_query {'cannot run' if lacking else 'failed'} ({schema_query}): {exc}"
        return
    report.schema_version = None if value is None or value[0] is None else str(value[0])
    if report.expected_schema_version is not None and report.schema_version != report.expected_schema_version:
        report.schema_problem = f"schema version is {report.schema_version}, expected {report.expected_schema_version}"


def _finish(report: IntegrityReport, started: float) -> IntegrityReport:
    report.seconds = round(time.monotonic() - started, 3)
    problems = []
    if report.open_error:
        problems.append(report.open_error)
    if report.integrity_problems:
        problems.append(f"integrity_check: {report.integrity_problems} problem(s), first: {report.integrity_rows[0]}")
    if report.foreign_key_problems:
        problems.append(f"foreign_key_check: {report.foreign_key_problems} violation(s)")
    if report._size_mismatch:
        problems.append(f"file is {report.file_bytes:,} bytes but page_size × page_count is {report.page_size * report.page_count:,}")
    if report.sidecar_problem:
        problems.append(report.sidecar_problem)
    if report.schema_problem:
        problems.append(report.schema_problem)
    report.status = Status.FAILED if problems else Status.PASSED
    if report.query_error:  # the drill could not check the schema: ours to fix, whatever else it saw
        report.status, report.summary = Status.ERROR, "; ".join([report.query_error, *problems])
    elif problems:
        report.summary = "; ".join(problems)
    else:
        version = f", schema version {report.schema_version}" if report.schema_version is not None else ""
        report.summary = f"intact: {report.page_count:,} pages of {report.page_size} bytes, {report.tables} tables{version}"
    return report
