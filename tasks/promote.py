"""The promotion drill (warm standby, fail-forward): the restored copy becomes a primary, and its writes must come back.

1. A promotion copy of the restored copy in scratch (the restored copy stays as the other checks saw it).
2. `litestream replicate` from it to a sub-prefix of `promote.replica` of this drill's own (a config file
   written in scratch; litestream's default intervals, as a promoted primary would run).
3. The listed writes, in order: SQL (each in its own transaction) or an application command with
   DRILLBOOK_DB_PATH (run as a smoke command is: tasks/smoke.py).
4. Restores from the new prefix, each time its newest TXID moves, until one holds the promoted copy's
   data after the writes (the same content digest): the failover RTO is the time from the promotion's
   start until then, against `failover_rto_target`.

A failing write, writes that no restore brings back, or an RTO over the target is a FAIL ("promotion
failure"). The replicate process group is gone when the step returns, whatever happened; after a PASS
the drill's sub-prefix is deleted (its objects only). The live database and live replica are never
opened for writing: the copy comes from scratch, and the prefix is apart from the live replica (checked
when the catalogue loads, tasks/config/replicas.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry, SmokeCheck
from drillbook.tasks.config.replicas import PromoteCommand, PromoteSettings
from drillbook.tasks.errors import LiveDatabaseGuard, ToolMissing
from drillbook.tasks.litestream import find_litestream, litestream_env, run_litestream
from drillbook.tasks.litestream_config import litestream_config_text, restore_source
from drillbook.tasks.ltx import newest_file
from drillbook.tasks.outcome import Status
from drillbook.tasks.replica import ReplicaReader
from drillbook.tasks.restore import guard_live
from drillbook.tasks.runner import Child, CommandRecord, started
from drillbook.tasks.smoke import run_command_check
from drillbook.tasks.steps import StepResult
from drillbook.tasks.storage import StorageError, backend_for, litestream_replica
from drillbook.tasks.text import redact_url

POLL_EVERY = 0.25  # seconds between listings of the new prefix
STOP_GRACE = 5.0  # seconds litestream replicate has to stop on SIGTERM before its group is killed
WRITE_BUSY_MS = 10_000  # a write waits this long for litestream's checkpoint


class PromoteProblem(StrEnum):
    WRITE_FAILED = "write_failed"
    WRITES_LOST = "writes_lost"
    RTO_OVER = "rto_over"
    REPLICATE_EXITED = "replicate_exited"


class WriteResult(BaseModel):
    write: str = Field(description="How the report names it: 'write 2 (INSERT ...)'.")
    ok: bool = False
    seconds: float = 0.0
    error: str | None = None


class PromoteReport(StepResult):
    """What the promoted copy did as a primary, and how long until its writes were restorable."""

    replica: str | None = Field(default=None, description="The drill's own prefix below promote.replica (redacted).")
    writes: list[WriteResult] = Field(default_factory=list)
    failover_rto_seconds: float | None = None
    failover_rto_target: float | None = None
    restored_txid: str | None = None
    restores: int = Field(default=0, description="Restores from the new prefix until one held the writes.")
    problem: PromoteProblem | None = None
    cleaned: bool = Field(default=False, description="The drill's prefix was deleted (after a PASS).")
    replicate: CommandRecord | None = None
    restore: CommandRecord | None = Field(default=None, description="The last restore from the new prefix.")
    notes: list[str] = Field(default_factory=list)

    def record(self) -> dict:
        return {
            "status": self.status.value,
            "failover_rto_seconds": self.failover_rto_seconds,
            "failover_rto_target": self.failover_rto_target,
            "writes": len(self.writes),
            "problem": self.problem.value if self.problem else None,
        }


def content_digest(path: Path) -> str:
    """sha256 over the schema and every table's rows (rowid order, or all columns for WITHOUT ROWID tables), read-only.

    litestream's own tables (_litestream_seq, _litestream_lock: it writes them in the database it replicates) are left out.
    """
    connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10)
    try:
        digest = hashlib.sha256()
        schema = connection.execute(
            "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' AND tbl_name NOT LIKE '\\_litestream\\_%' ESCAPE '\\' "
            "ORDER BY type, name"
        )
        tables = []
        for kind, name, sql in schema.fetchall():
            digest.update(repr((kind, name, sql)).encode())
            if kind == "table" and sql and not sql.upper().startswith("CREATE VIRTUAL"):
                tables.append(name)
        for name in tables:
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                rows = connection.execute(f"SELECT * FROM {quoted} ORDER BY rowid")  # noqa: S608 - a name from the file's own schema
            except sqlite3.OperationalError:  # WITHOUT ROWID
                width = len(connection.execute(f"SELECT * FROM {quoted} LIMIT 0").description)  # noqa: S608
                rows = connection.execute(f"SELECT * FROM {quoted} ORDER BY {', '.join(str(i) for i in range(1, width + 1))}")  # noqa: S608
            for row in rows:
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        connection.close()


def drill_prefix(url: str, name: str) -> str:
    """This drill's own place under the promotion replica: its path plus `name` (NATS: a bucket named after both)."""
    return backend_for(url).drill_url(url, name)


def prepare_drill(url: str, timeout: float = 30.0) -> None:
    """Make the drill's own place where the store needs it made first (a NATS bucket); nothing elsewhere."""
    prepare = backend_for(url).prepare_drill
    if prepare is not None:
        prepare(url, timeout)


def delete_prefix(url: str, timeout: float = 60.0) -> int:
    """Delete every object below `url` (a promotable backend's: storage/<backend>.py): the drill's own prefix only."""
    return backend_for(url).delete_prefix(url, timeout)


def newest_txid(url: str, timeout: float = 15.0) -> str | None:
    files = ReplicaReader(url, timeout=timeout).ltx_files()
    return newest_file(files).max_txid if files else None


def apply_write(path: Path, write: str | PromoteCommand, label: str, base_dir: Path | None) -> WriteResult:
    """One write on the promoted copy: SQL in a transaction of its own, or a command run as a smoke command is."""
    started_at = time.monotonic()
    result = WriteResult(write=label)
    if isinstance(write, str):
        connection = sqlite3.connect(path, isolation_level=None, timeout=WRITE_BUSY_MS / 1000)
        try:
            connection.executescript(f"BEGIN IMMEDIATE;\n{write}\n;\nCOMMIT;")
            result.ok = True
        except sqlite3.Error as exc:
            result.error = str(exc)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        finally:
            connection.close()
    else:
        check = SmokeCheck(
            name=label[:80], command=write.command, timeout=write.timeout, env=write.env, pass_env=write.pass_env, cwd=write.cwd
        )
        ran = run_command_check(path, check, base_dir=base_dir)
        result.ok, result.error = ran.success, ran.error
    result.seconds = round(time.monotonic() - started_at, 3)
    return result


def promote_copy(entry: DatabaseEntry, restored: Path, scratch: Path, *, base_dir: Path | None = None) -> PromoteReport:
    """Promote a copy of `restored` (never `restored` itself), write, and prove the writes restorable from the new prefix."""
    settings = entry.promote
    if settings is None:
        return PromoteReport.skipped("no promotion drill configured")
    began = time.monotonic()
    target = entry.failover_rto_target or entry.rto_target
    url = drill_prefix(settings.replica, scratch.name)
    report = PromoteReport(replica=redact_url(url), failover_rto_target=target)
    directory = scratch / "promote"
    primary = directory / f"{entry.name}.db"
    try:
        directory.mkdir(mode=0o700)
        guard_live(entry, directory, primary)
        prepare_drill(url)
        shutil.copyfile(restored, primary)
        for suffix in ("-wal",):  # a restored copy has none; copied whole if one is there
            if Path(f"{restored}{suffix}").is_file():
                shutil.copyfile(f"{restored}{suffix}", f"{primary}{suffix}")
        connection = sqlite3.connect(primary, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")  # litestream replicates WAL-mode databases only
        connection.close()
        config = directory / "litestream.yml"
        config.write_text(litestream_config_text(primary, litestream_replica(url) or {"url": url}))  # the backend's entry
        config.chmod(0o600)
        argv = [find_litestream(), "replicate", "-config", str(config)]
    except (LiveDatabaseGuard, ToolMissing) as exc:
        return _done(report, began, Status.ERROR, str(exc))
    except StorageError as exc:
        return _done(report, began, Status.ERROR, f"cannot make the drill's promotion place {report.replica}: {exc}")
    except (OSError, sqlite3.Error) as exc:
        return _done(report, began, Status.ERROR, f"cannot prepare the promotion copy in {directory}: {exc}")
    try:
        with started(argv, env=litestream_env(), grace=STOP_GRACE) as child:
            status, summary = _promote(entry, settings, child, primary, url, report, began, target, base_dir)
    except OSError as exc:
        return _done(report, began, Status.ERROR, f"cannot start litestream replicate ({argv[0]}): {exc.strerror or exc}")
    report.replicate = child.completed().record
    if child.group_left:
        report.notes.append(f"litestream replicate's process group {child.pid} was still there after SIGKILL")
    if status == Status.PASSED:
        try:
            removed = delete_prefix(url)
            report.cleaned = True
            report.notes.append(f"deleted the drill's promotion prefix {report.replica} ({removed} objects)")
        except Exception as exc:  # noqa: BLE001 - the verdict stands; the prefix is a note to clean up
            report.notes.append(f"could not delete the promotion prefix {report.replica} ({type(exc).__name__}: {exc}); delete it by hand")
    elif report.problem in (PromoteProblem.WRITES_LOST, PromoteProblem.REPLICATE_EXITED):
        summary += f"; litestream replicate said: {_said(child)}"
    return _done(report, began, status, summary)


def _done(report: PromoteReport, began: float, status: Status, summary: str) -> PromoteReport:
    report.status, report.summary = status, summary
    report.seconds = round(time.monotonic() - began, 3)
    return report


def _said(child: Child) -> str:
    lines = [line for line in (child.stderr + child.stdout).splitlines() if "level=ERROR" in line or "level=WARN" in line]
    if not lines:
        lines = [line for line in (child.stderr or child.stdout).strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "nothing"


def _promote(
    entry: DatabaseEntry,
    settings: PromoteSettings,
    child: Child,
    primary: Path,
    url: str,
    report: PromoteReport,
    began: float,
    target: float,
    base_dir: Path | None,
) -> tuple[Status, str]:
    before = content_digest(primary)
    for index, write in enumerate(settings.writes):
        result = apply_write(primary, write, settings.describe_write(index), base_dir)
        report.writes.append(result)
        if not result.ok:
            report.problem = PromoteProblem.WRITE_FAILED
            return Status.FAILED, f"{result.write} failed on the promoted copy: {result.error}"
    expected = content_digest(primary)
    if expected == before:
        report.notes.append("the writes changed nothing in the data: a restore without them could not be told apart")
    deadline = began + target + max(5.0, target / 2)
    checked: str | None = None
    last_problem = "nothing was restorable from the new prefix"
    while True:
        if child.exit_code() is not None:
            report.problem = PromoteProblem.REPLICATE_EXITED
            return Status.FAILED, f"litestream replicate exited {child.exit_code()} before the writes were restorable from {report.replica}"
        timed_out = time.monotonic() > deadline
        try:
            txid = newest_txid(url)
        except StorageError as exc:
            txid, last_problem = None, f"listing the new prefix failed: {exc}"
        if txid is not None and (txid != checked or timed_out):
            checked = txid
            holds, last_problem = _restore_holds(entry, url, primary.parent, expected, report)
            if holds:
                report.failover_rto_seconds = round(time.monotonic() - began, 3)
                break
        if timed_out:
            if txid is None:  # one restore still, for litestream's own words
                _holds, last_problem = _restore_holds(entry, url, primary.parent, expected, report)
            report.problem = PromoteProblem.WRITES_LOST
            return Status.FAILED, (
                f"writes lost: {len(settings.writes)} write(s) on the promoted copy were not restorable from {report.replica} "
                f"within {time.monotonic() - began:.0f}s ({last_problem})"
            )
        time.sleep(POLL_EVERY)
    rto = report.failover_rto_seconds
    figures = f"failover RTO {rto:.1f}s (target {target:g}s): {len(settings.writes)} write(s) restorable from the new prefix at TXID {report.restored_txid}"
    if rto > target:
        report.problem = PromoteProblem.RTO_OVER
        return Status.FAILED, f"{figures}, over the target by {rto - target:.1f}s"
    return Status.PASSED, figures


def _restore_holds(entry: DatabaseEntry, url: str, directory: Path, expected: str, report: PromoteReport) -> tuple[bool, str]:
    """Restore from the new prefix into a fresh file; (True, "") when it holds the writes, else (False, why)."""
    report.restores += 1
    output = directory / f"check-{report.restores}.db"
    try:
        (directory / f"check-{report.restores}").mkdir(exist_ok=True)  # its own folder: litestream.yml here is the replicate's
        source = restore_source(url, directory / f"check-{report.restores}", entry.name)  # [URL], or a config of the backend's
        ran = run_litestream(
            ["restore", "-json", "-o", str(output), *source], timeout=entry.restore_timeout, stall_timeout=entry.stall_timeout
        )
    except ToolMissing as exc:
        return False, str(exc)
    report.restore = ran.record
    if not ran.record.ok:
        return False, f"litestream restore exited {ran.record.exit_code}: {ran.record.stderr_tail(200)}"
    try:
        txid = (json.loads(ran.stdout) or {}).get("txid")
    except ValueError:
        txid = None
    report.restored_txid = txid
    try:
        holds = content_digest(output) == expected
    except sqlite3.Error as exc:
        return False, f"the copy restored from the new prefix cannot be read: {exc}"
    return holds, "" if holds else f"the newest restore (TXID {txid}) lacks the writes: its data differs from the promoted copy's"
