"""Step 4: smoke tests, does the application work on the restored copy?

Three kinds, declared per database in the catalogue:

- SQL checks (and the one-line ``row_counts``): a query on the copy opened
  read-only, with a real timeout (SQLite's progress handler interrupts the
  query), and what it must return.
- Command checks: an application command (argv list) with the copy's path in
  ``DRILLBOOK_DB_PATH``, a built environment and a timeout; exit 0 passes. It
  runs in its own process group, killed whole at the timeout, so nothing it
  started outlives the check. stdout / stderr are kept, truncated, as evidence.
- HTTP checks: start the app command, poll a URL until it answers 2xx or the
  timeout passes, then stop the app (its whole process group).

Smoke time counts in the measured RTO: it is part of "the application works".
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from drillbook.tasks.catalogue_sql import CopyLacks, QueryBroken, check_on_copy
from drillbook.tasks.config import DatabaseEntry, SmokeCheck
from drillbook.tasks.outcome import Status
from drillbook.tasks.processes import interrupted
from drillbook.tasks.runner import OUTPUT_KEEP, run_command, tail_marked
from drillbook.tasks.runner import started as runner_started
from drillbook.tasks.steps import StepResult

OUTPUT_CHARS = OUTPUT_KEEP  # of stdout / stderr kept per command check (the tail: errors come last)
APP_GRACE = 5.0  # seconds an HTTP check's app has to stop on SIGTERM before its group is killed
_TEXT_CHARS = 200
DB_PATH_ENV = "DRILLBOOK_DB_PATH"
_BASE_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ")


class SmokeCheckResult(BaseModel):
    name: str
    kind: str = Field(description="sql, row_count, command or http")
    success: bool = False
    seconds: float = 0.0
    observed: Any = Field(default=None, description="SQL: the value or row count; command: the exit code; http: the status code.")
    expected: str | None = Field(default=None, description="What the check wanted, in words.")
    error: str | None = None
    config_error: bool = Field(default=False, description="The check's SQL does not parse: the catalogue's mistake, not the copy's.")
    timed_out: bool = False
    argv: list[str] | None = None
    stdout: str | None = None
    stderr: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: {self.error}"
        wanted = f", expected {self.expected}" if self.expected else ""
        return f"{self.name}: got {self.observed}{wanted}"


class SmokeReport(StepResult):
    checks: list[SmokeCheckResult] = Field(default_factory=list)

    @property
    def failures(self) -> list[SmokeCheckResult]:
        return [c for c in self.checks if not c.success]


def row_count_checks(entry: DatabaseEntry) -> list[SmokeCheck]:
    """`row_counts = { customers = 100 }` as SQL checks: 'at least N rows'."""
    return [
        SmokeCheck(name=f"row count {table}", sql=f'SELECT count(*) FROM "{table.replace(chr(34), chr(34) * 2)}"', min=minimum)
        for table, minimum in entry.row_counts.items()
    ]


def run_smoke_tests(path: str | Path, entry: DatabaseEntry, *, base_dir: Path | None = None) -> SmokeReport:
    """Run the entry's row counts, then its [[database.smoke]] checks, in order; every check runs."""
    started = time.monotonic()
    checks = [(check, "row_count") for check in row_count_checks(entry)] + [(check, check.kind) for check in entry.smoke]
    report = SmokeReport()
    if not checks:
        return SmokeReport.skipped("no smoke tests configured")
    for check, kind in checks:
        if check.sql is not None:
            result = run_sql_check(path, check)
        elif check.url is not None:
            result = run_http_check(path, check, base_dir=base_dir)
        else:
            result = run_command_check(path, check, base_dir=base_dir)
        result.kind = kind
        report.checks.append(result)
    report.seconds = round(time.monotonic() - started, 3)
    broken = [c for c in report.checks if c.config_error]
    failures = report.failures
    if broken:  # a query that does not parse says nothing about the copy: the drill could not check it (ERROR, exit 2)
        report.status = Status.ERROR
        report.summary = f"database {entry.name!r}: " + "; ".join(f"smoke check {c.name!r}: {c.error}" for c in broken)
    elif failures:
        report.status = Status.FAILED
        listed = "; ".join(c.describe() for c in failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        report.summary = f"{len(failures)} of {len(report.checks)} smoke checks failed: {listed}"
    else:
        report.status = Status.PASSED
        report.summary = f"{len(report.checks)} smoke check{'s' if len(report.checks) != 1 else ''} passed"
    return report


# --- SQL ---------------------------------------------------------------------------------------------


def _expected(check: SmokeCheck) -> str:
    if check.min_rows is not None:
        return f"at least {check.min_rows:,} row(s)"
    if check.min is not None:
        return f"at least {check.min:g}"
    if check.equals is not None:
        return f"= {check.equals!r}"
    if check.between is not None:
        return f"between {check.between[0]:g} and {check.between[1]:g}"
    return "no error"


def _short(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    if isinstance(value, str) and len(value) > _TEXT_CHARS:
        return value[:_TEXT_CHARS] + "…"
    return value


def run_sql_check(path: str | Path, check: SmokeCheck) -> SmokeCheckResult:
    """Run the query on a read-only connection, interrupted at the check's timeout."""
    started = time.monotonic()
    result = SmokeCheckResult(name=check.name, kind="sql", expected=_expected(check))
    deadline = started + check.timeout
    connection = None
    try:
        connection = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=min(check.timeout, 5))
        connection.execute("PRAGMA query_only = ON")
        # Called every 10,000 SQLite VM steps; a non-zero return aborts the statement ("interrupted").
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            check_on_copy(connection, check.sql)  # compiles the statement without running it
        except QueryBroken as exc:
            result.config_error = True
            result.error = f"field sql does not parse ({exc}): fix the query in the catalogue"
            return result
        except CopyLacks as exc:  # parses, names what the copy does not have: the copy's finding
            result.error = str(exc)
            return result
        cursor = connection.execute(check.sql)
        if check.min_rows is not None:
            count = 0
            while rows := cursor.fetchmany(1000):  # counted, never kept: rows are data
                count += len(rows)
            result.observed = count
            result.success = count >= check.min_rows
        else:
            row = cursor.fetchone()
            if check.min is None and check.equals is None and check.between is None:
                result.observed = "ran"
                result.success = True
            elif row is None or len(row) != 1:
                result.error = f"expected the query to return one value, got {'no rows' if row is None else f'{len(row)} columns'}"
            else:
                value = row[0]
                result.observed = _short(value)
                result.success = _compare(value, check)
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline and "interrupt" in str(exc).lower():
            result.timed_out = True
            result.error = f"query interrupted at its {check.timeout:g}s timeout"
        else:
            result.error = f"query failed: {exc}"
    except sqlite3.Error as exc:
        result.error = f"query failed: {exc}"
    finally:
        if connection is not None:
            connection.close()
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _compare(value: Any, check: SmokeCheck) -> bool:
    if check.equals is not None:
        if isinstance(check.equals, str) or isinstance(value, str):
            return str(value) == str(check.equals)
        return value == check.equals
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if check.min is not None:
        return value >= check.min
    low, high = check.between  # type: ignore[misc]
    return low <= value <= high


# --- commands ----------------------------------------------------------------------------------------


def command_env(path: str | Path, check: SmokeCheck) -> dict[str, str]:
    """A small environment built on purpose: basics, the named pass-throughs, the check's own, the copy's path."""
    env = {key: os.environ[key] for key in _BASE_ENV if key in os.environ}
    env.update({key: os.environ[key] for key in check.pass_env if key in os.environ})
    env.update(check.env)
    env[DB_PATH_ENV] = str(Path(path).resolve())
    return env


def _cwd(check: SmokeCheck, base_dir: Path | None) -> str | None:
    if check.cwd is None:
        return None
    cwd = Path(check.cwd).expanduser()
    return str(cwd if cwd.is_absolute() or base_dir is None else base_dir / cwd)


def run_command_check(path: str | Path, check: SmokeCheck, *, base_dir: Path | None = None) -> SmokeCheckResult:
    """Run the command through the runner (its own process group, killed whole at the timeout); exit 0 passes."""
    started = time.monotonic()
    argv = list(check.command or [])
    result = SmokeCheckResult(name=check.name, kind="command", expected="exit 0", argv=argv)
    try:
        ran = run_command(argv, timeout=check.timeout, env=command_env(path, check), cwd=_cwd(check, base_dir))
    except OSError as exc:
        result.error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        result.seconds = round(time.monotonic() - started, 3)
        return result
    record = ran.record
    result.observed = record.exit_code
    result.stdout, result.stderr = tail_marked(ran.stdout), tail_marked(ran.stderr)
    if record.timed_out:
        result.timed_out = True
        result.error = f"killed at its {check.timeout:g}s timeout"
    elif record.interrupted:
        result.error = f"stopped: drillbook was interrupted by {record.interrupted}"
    else:
        result.success = record.exit_code == 0
        if not result.success:
            last = (ran.stderr or ran.stdout).strip().splitlines()
            result.error = f"exit {record.exit_code}" + (f": {last[-1][:_TEXT_CHARS]}" if last else "")
    result.seconds = round(time.monotonic() - started, 3)
    return result


# --- HTTP --------------------------------------------------------------------------------------------


def run_http_check(path: str | Path, check: SmokeCheck, *, base_dir: Path | None = None, poll_every: float = 0.2) -> SmokeCheckResult:
    """Start the app through the runner, poll its URL until 2xx or the timeout, stop the app's whole process group."""
    started = time.monotonic()
    argv = list(check.command or [])
    result = SmokeCheckResult(name=check.name, kind="http", expected=f"2xx from {check.url}", argv=argv)
    deadline = started + check.timeout
    last_problem = "no answer"
    app = None
    try:
        # SIGTERM first, SIGKILL after APP_GRACE seconds: an app may want to shut down cleanly
        with runner_started(argv, env=command_env(path, check), cwd=_cwd(check, base_dir), grace=APP_GRACE) as app:
            while time.monotonic() < deadline:
                code = app.exit_code()
                if code is not None:
                    stop = interrupted() if code < 0 else None
                    last_problem = f"stopped: drillbook was interrupted by {stop}" if stop else f"the app exited ({code}) before answering"
                    break
                try:
                    with urllib.request.urlopen(check.url, timeout=max(0.1, min(2.0, deadline - time.monotonic()))) as response:
                        result.observed = response.status
                        if 200 <= response.status < 300:
                            result.success = True
                            break
                        last_problem = f"HTTP {response.status}"
                except urllib.error.HTTPError as exc:
                    result.observed = exc.code
                    last_problem = f"HTTP {exc.code}"
                except (urllib.error.URLError, OSError) as exc:
                    last_problem = f"no answer ({getattr(exc, 'reason', exc)})"
                time.sleep(poll_every)
            else:
                result.timed_out = True
    except OSError as exc:
        if app is not None:  # not from starting it
            raise
        result.error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        result.seconds = round(time.monotonic() - started, 3)
        return result
    if not result.success:
        when = f"within its {check.timeout:g}s timeout" if result.timed_out else ""
        result.error = f"{check.url} did not answer 2xx {when}: {last_problem}".replace("  ", " ")
    result.stdout, result.stderr = tail_marked(app.stdout), tail_marked(app.stderr)
    result.seconds = round(time.monotonic() - started, 3)
    return result
