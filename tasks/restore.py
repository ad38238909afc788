"""Step 2: `litestream restore -json` into a fresh scratch directory, timed.

Never `-if-replica-exists` (it turns "no backup" into success) and never
`-force` (we only ever restore into a directory we just created).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from uuid import uuid4

from pydantic import Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import LiveDatabaseGuard, ToolMissing
from drillbook.tasks.litestream import RestoreTool, run_litestream
from drillbook.tasks.litestream_config import restore_source
from drillbook.tasks.outcome import Status
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.runner import CommandRecord
from drillbook.tasks.scratch import claim
from drillbook.tasks.scratch import remove as remove_scratch
from drillbook.tasks.steps import StepResult

KEPT_MARKER = ".drillbook-kept"


class RestoreProblem(StrEnum):
    FAILED = "failed"  # litestream exited non-zero
    TIMEOUT = "timeout"
    STALLED = "stalled"  # no progress for stall_timeout: object GETs failing or hanging
    INTERRUPTED = "interrupted"  # drillbook was stopped (SIGTERM, SIGINT)
    NO_OUTPUT = "no_output"  # exit 0 but no database file
    TOOL_MISSING = "tool_missing"
    DISK_FULL = "disk_full"
    GUARD = "guard"  # refused: the live database is in the way


class RestoreResult(StepResult):
    """The restored copy, modelled on litestream's own `restore -json` fields."""

    path: str | None = None
    scratch_dir: str | None = None
    txid: str | None = None
    duration_ms: int | None = Field(default=None, description="litestream's own measure of the restore.")
    litestream: dict | None = Field(default=None, description="litestream's JSON summary, as printed.")
    problem: RestoreProblem | None = None
    command: CommandRecord | None = None


def is_within(path: Path, container: Path) -> bool:
    path, container = path.resolve(), container.resolve()
    return path == container or path.is_relative_to(container)


def guard_live(entry: DatabaseEntry, *paths: Path) -> None:
    """Refuse any path that is, or contains, the live database (or its sidecars)."""
    if not entry.live_path:
        return
    live = Path(entry.live_path).expanduser().resolve()
    for path in paths:
        resolved = path.resolve()
        same_file = resolved.exists() and live.exists() and os.path.samefile(resolved, live)
        if same_file or is_within(live, resolved) or resolved.name.startswith(live.name) and resolved.parent == live.parent:
            raise LiveDatabaseGuard(
                f"refusing to restore {entry.name!r} to {resolved}: it is, or contains, the live database {live}. "
                "Set [drillbook] scratch_dir to a directory that holds no live database."
            )


def make_scratch(root: Path, entry: DatabaseEntry, drill_id: str) -> Path:
    """A new, empty directory for this drill alone (concurrent drills never share one)."""
    base = root / entry.name
    guard_live(entry, root, base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scratch = base / f"{stamp}-{drill_id}"
    scratch.mkdir(mode=0o700)  # fails if it exists: never reuse a directory
    claim(scratch, drill_id)  # whose it is while it runs (tasks/scratch.py reclaims it if its process is killed)
    guard_live(entry, scratch)
    return scratch


@contextlib.contextmanager
def throwaway_copy(entry: DatabaseEntry, replica: ReplicaState, scratch_root: Path, purpose: str) -> Iterator[RestoreResult]:
    """Restore into a scratch directory of its own, removed on exit (a drill keeps a failed copy; this never does)."""
    scratch = make_scratch(scratch_root, entry, f"{purpose}-{uuid4().hex[:8]}")
    try:
        yield restore_database(entry, replica, scratch)
    finally:
        remove_scratch(scratch)  # and its owner file (tasks/scratch.py)


def restore_database(
    entry: DatabaseEntry, replica: ReplicaState, scratch: Path, point: list[str] | None = None, tool: RestoreTool | None = None
) -> RestoreResult:
    """Restore the newest position of the replica into `scratch` (or the point `point` names: ["-timestamp", T] / ["-txid", X]).

    `tool`: another litestream release (the compatibility drill), run the same way; without `-json` where it has none.
    """
    if not replica.ok:
        return RestoreResult.skipped("not attempted: the replica inspection did not pass")
    output = scratch / f"{entry.name}.db"
    try:
        guard_live(entry, scratch, output)
    except LiveDatabaseGuard as exc:
        return RestoreResult(status=Status.ERROR, problem=RestoreProblem.GUARD, summary=str(exc), scratch_dir=str(scratch))
    try:
        source = restore_source(entry.replica, scratch, entry.name)  # the URL, or a config file in scratch for the backends that need one
    except OSError as exc:
        return RestoreResult(
            status=Status.ERROR, summary=f"cannot write litestream's config into {scratch}: {exc.strerror or exc}", scratch_dir=str(scratch)
        )
    started, started_at = time.monotonic(), datetime.now(UTC)
    try:
        ran = run_litestream(
            ["restore", *(["-json"] if tool is None or tool.json else []), *(point or []), "-o", str(output), *source],
            timeout=entry.restore_timeout,
            stall_timeout=entry.stall_timeout,
            progress=lambda: _bytes_in(scratch),
            binary=tool.path if tool else None,
        )
    except ToolMissing as exc:
        return RestoreResult(status=Status.ERROR, problem=RestoreProblem.TOOL_MISSING, summary=str(exc), scratch_dir=str(scratch))
    command = ran.record
    seconds = round(time.monotonic() - started, 3)
    common = dict(seconds=seconds, command=command, scratch_dir=str(scratch), started_at=started_at, finished_at=datetime.now(UTC))
    if command.interrupted:
        return RestoreResult(
            status=Status.ERROR,
            problem=RestoreProblem.INTERRUPTED,
            summary=f"interrupted by {command.interrupted}: litestream restore was stopped after {seconds:.1f}s",
            **common,
        )
    if command.stalled:
        return RestoreResult(
            status=Status.FAILED,
            problem=RestoreProblem.STALLED,
            summary=(
                f"the restore made no progress for {entry.stall_timeout:g}s and was killed after {seconds:.1f}s: object GETs from "
                f"{entry.replica_redacted} fail or hang (litestream retries them silently), or litestream itself hangs; "
                f"{_bytes_in(scratch):,} bytes written to {scratch}"
                + (f"; stderr: {command.stderr_tail(200)}" if command.stderr.strip() else "")
            ),
            **common,
        )
    if command.timed_out:
        return RestoreResult(
            status=Status.FAILED,
            problem=RestoreProblem.TIMEOUT,
            summary=f"restore did not finish within {entry.restore_timeout:g}s and was killed",
            **common,
        )
    if not command.ok:
        if _disk_full(scratch) or _NO_SPACE in ran.stderr.lower():
            return RestoreResult(
                status=Status.ERROR,
                problem=RestoreProblem.DISK_FULL,
                summary=f"the scratch disk is full ({scratch}): free space there or point [drillbook] scratch_dir at a bigger disk",
                **common,
            )
        return RestoreResult(
            status=Status.FAILED,
            problem=RestoreProblem.FAILED,
            summary=f"litestream restore exited {command.exit_code}: {command.stderr_tail(300)}",
            **common,
        )
    try:
        summary = json.loads(ran.stdout)
    except ValueError:
        summary = None
    if not output.is_file():
        return RestoreResult(
            status=Status.FAILED,
            problem=RestoreProblem.NO_OUTPUT,
            summary="litestream reported success but wrote no database",
            litestream=summary,
            **common,
        )
    txid = (summary or {}).get("txid") or None  # "" from a litestream 0.3 replica: it has no TXIDs
    return RestoreResult(
        status=Status.PASSED,
        path=str(output),
        txid=txid,
        duration_ms=(summary or {}).get("duration_ms"),
        litestream=summary,
        summary=f"restored {f'TXID {txid}' if txid else 'the newest position'} in {seconds:.2f}s ({output.stat().st_size:,} bytes)",
        **common,
    )


_NO_SPACE = "no space left on device"  # Go's text for ENOSPC; litestream removes its temp file before we can look


def _bytes_in(directory: Path) -> int:
    """Bytes in the files of `directory` (the restore's output and litestream's temp file)."""
    total = 0
    try:
        for item in directory.iterdir():
            try:
                total += item.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


def _disk_full(path: Path, floor: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(path).free < floor
    except OSError as exc:
        return exc.errno == errno.ENOSPC
