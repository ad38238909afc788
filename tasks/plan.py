"""What a restore would fetch, and how long it should take, before anything is restored.

The plan is computed from the listing the inspection already made, the way
litestream 0.5.16/0.5.17 computes it (`CalcRestorePlan` in replica.go): the
newest snapshot, then, from every level, the file that extends the contiguous
TXID range furthest, until none does. `litestream restore -dry-run -json` prints
the same plan and writes nothing; `drillbook plan NAME --litestream` asks it
(a test holds the two together on every replica of the corpus). Divided
by the throughput measured on this database's past drills (bytes fetched per
second of restore), or the fleet's when it has none, that is the expected
restore time; plus the checks' usual seconds, the expected RTO. Every drill
records its plan beside what it measured, so the plan's own error shows over
time (`drillbook plan NAME`).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.litestream_config import restore_source
from drillbook.tasks.ltx import LtxFile
from drillbook.tasks.outcome import Status
from drillbook.tasks.runner import CommandRecord
from drillbook.tasks.steps import StepResult
from drillbook.tasks.text import duration_text

THROUGHPUT_DRILLS = 10  # past passing drills whose throughput is the estimate (median)


class PlannedFile(BaseModel):
    level: int
    name: str = ""
    min_txid: str = ""
    max_txid: str = ""
    size: int = 0


class RestorePlan(StepResult):
    """litestream's dry-run plan and the RTO it predicts."""

    files: list[PlannedFile] = Field(default_factory=list)
    bytes_to_fetch: int | None = None
    min_txid: str | None = None
    max_txid: str | None = None
    throughput_bytes_per_second: float | None = None
    throughput_source: str | None = Field(default=None, description="Whose past drills the throughput comes from.")
    check_seconds: float | None = Field(default=None, description="Usual integrity + smoke seconds of this database's drills.")
    expected_rto_seconds: float | None = None
    command: CommandRecord | None = None

    @property
    def levels(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for planned in self.files:
            counts[str(planned.level)] = counts.get(str(planned.level), 0) + 1
        return counts

    def line(self) -> str:
        """'plan: fetch 1,065,915 bytes in 1 LTX file; expected RTO 4.2s (throughput 12.3 MB/s from ...)'."""
        if self.status != Status.PASSED:
            return f"plan: {self.summary}"
        fetch = f"fetch {self.bytes_to_fetch or 0:,} bytes in {len(self.files)} LTX file(s)"
        if self.expected_rto_seconds is None:
            return f"plan: {fetch}; expected RTO unknown ({self.summary})"

        rate = f"{(self.throughput_bytes_per_second or 0) / 1e6:.1f} MB/s from {self.throughput_source}"
        checks = f" + {duration_text(self.check_seconds)} of checks" if self.check_seconds else ""
        return f"plan: {fetch}; expected RTO {duration_text(self.expected_rto_seconds)} (restore at {rate}{checks})"


SNAPSHOT_LEVEL = 9


def plan_files(files: Iterable[LtxFile]) -> list[LtxFile]:
    """The LTX files a restore of the newest position fetches, in order (litestream's CalcRestorePlan, no TXID or time).

    ValueError when the files after the chain do not continue it (litestream: "non-contiguous ltx files"),
    or when there is nothing to restore.
    """
    by_level: dict[int, list[LtxFile]] = {}
    for f in files:
        by_level.setdefault(f.level, []).append(f)
    for level_files in by_level.values():
        level_files.sort(key=lambda f: (f.low, f.high))  # litestream iterates a level in file name order
    chain: list[LtxFile] = []
    snapshots = by_level.get(SNAPSHOT_LEVEL, [])
    if snapshots:
        chain.append(snapshots[-1])
    current = chain[-1].high if chain else 0
    # One cursor per level, highest level first: the position of the next file not yet looked at, and the best candidate.
    levels = [level for level in range(SNAPSHOT_LEVEL - 1, -1, -1) if level in by_level]
    position = dict.fromkeys(levels, 0)
    candidate: dict[int, LtxFile | None] = dict.fromkeys(levels)

    def better(now: LtxFile, other: LtxFile) -> bool:
        if other.high != now.high:
            return other.high > now.high
        if other.low != now.low:
            return other.low < now.low
        return other.level > now.level  # (litestream's last tie-break, the earlier creation, needs headers; levels differ here)

    while True:
        best: LtxFile | None = None
        best_level = None
        for level in levels:
            if candidate[level] is not None and candidate[level].high <= current:
                candidate[level] = None
            level_files = by_level[level]
            while position[level] < len(level_files) and level_files[position[level]].low <= current + 1:
                info = level_files[position[level]]
                position[level] += 1
                if info.high <= current:
                    continue
                if candidate[level] is None or better(candidate[level], info):
                    candidate[level] = info
            if candidate[level] is not None and (best is None or better(best, candidate[level])):
                best, best_level = candidate[level], level
        if best is None:
            break
        chain.append(best)
        current = best.high
        candidate[best_level] = None
    for level in levels:
        level_files = by_level[level]
        if position[level] < len(level_files) and level_files[position[level]].low > current + 1:
            following = level_files[position[level]]
            raise ValueError(f"non-contiguous ltx files: have up to {current:016x} but next file starts at {following.min_txid}")
    if not chain:
        raise ValueError("no LTX file to restore from")
    return chain


def plan_from_listing(files: list[LtxFile]) -> RestorePlan:
    """The restore plan from the inspection's listing: no litestream process, no second listing."""
    try:
        chain = plan_files(files)
    except ValueError as exc:
        return RestorePlan(status=Status.FAILED, summary=f"no restore plan from the listing: {exc}")
    total = sum(f.size for f in chain)
    return RestorePlan(
        status=Status.PASSED,
        files=[PlannedFile(level=f.level, name=f.key, min_txid=f.min_txid, max_txid=f.max_txid, size=f.size) for f in chain],
        bytes_to_fetch=total,
        min_txid=chain[0].min_txid,
        max_txid=chain[-1].max_txid,
        summary=f"{len(chain)} LTX file(s), {total:,} bytes (from the listing)",
    )


def dry_run(entry: DatabaseEntry) -> RestorePlan:
    """Ask litestream what restoring `entry` would fetch; nothing is written (the output path, in an empty temp dir, is only named)."""
    with tempfile.TemporaryDirectory(prefix="drillbook-plan-") as spare:
        target = Path(spare) / f"{entry.name}.db"
        try:
            source = restore_source(entry.replica, Path(spare), entry.name)
            ran = run_litestream(["restore", "-dry-run", "-json", "-o", str(target), *source], timeout=entry.inspect_timeout)
        except (ToolMissing, OSError) as exc:
            return RestorePlan(status=Status.ERROR, summary=str(exc))
    command = ran.record
    if command.timed_out:
        return RestorePlan(
            status=Status.FAILED, summary=f"litestream restore -dry-run did not answer within {entry.inspect_timeout:g}s", command=command
        )
    if not command.ok:
        return RestorePlan(
            status=Status.FAILED,
            summary=f"litestream restore -dry-run exited {command.exit_code}: {command.stderr_tail(300)}",
            command=command,
        )
    try:
        data = json.loads(ran.stdout)  # parsed whole: the record keeps only a tail
        files = [PlannedFile.model_validate(item) for item in data.get("files") or []]
    except ValueError:
        return RestorePlan(
            status=Status.FAILED, summary="litestream restore -dry-run printed no plan JSON (is this litestream 0.5.17?)", command=command
        )
    total = sum(f.size for f in files)
    return RestorePlan(
        status=Status.PASSED,
        seconds=command.seconds,
        files=files,
        bytes_to_fetch=total,
        min_txid=data.get("min_txid"),
        max_txid=data.get("max_txid"),
        summary=f"{len(files)} LTX file(s), {total:,} bytes",
        command=command,
    )


def _fetched(point) -> int | None:
    return point.planned_bytes or point.ltx_bytes


def _rates(points: Iterable) -> list[float]:
    rates = []
    for point in points:
        fetched = _fetched(point)
        if point.verdict == "PASS" and fetched and point.restore_seconds and point.restore_seconds > 0:
            rates.append(fetched / point.restore_seconds)
    return rates


def estimate(plan: RestorePlan, own: list, fleet: Iterable = ()) -> RestorePlan:
    """The plan with its expected RTO, from this database's past drills (`own`, oldest first) or the fleet's."""
    if plan.status != Status.PASSED or not plan.bytes_to_fetch:
        return plan
    rates = _rates(own)[-THROUGHPUT_DRILLS:]
    source = f"this database's last {len(rates)} drill(s)"
    if not rates:
        rates = _rates(fleet)
        source = f"{len(rates)} drill(s) across the fleet"
    if not rates:
        return plan.model_copy(update={"summary": plan.summary + "; no drill with a measured throughput yet, so no estimate"})
    throughput = statistics.median(rates)
    checks = [
        p.rto_seconds - p.restore_seconds
        for p in own
        if p.verdict == "PASS" and p.rto_seconds is not None and p.restore_seconds is not None
    ][-THROUGHPUT_DRILLS:]
    check_seconds = round(statistics.median(checks), 3) if checks else None
    expected = round(plan.bytes_to_fetch / throughput + (check_seconds or 0.0), 3)
    return plan.model_copy(
        update={
            "throughput_bytes_per_second": round(throughput, 1),
            "throughput_source": source,
            "check_seconds": check_seconds,
            "expected_rto_seconds": expected,
        }
    )


def plan_errors(own: list) -> list[float]:
    """Past drills' plan error, (measured - planned) / planned, oldest first."""
    return [
        (p.rto_seconds - p.planned_rto_seconds) / p.planned_rto_seconds
        for p in own
        if p.rto_seconds is not None and p.planned_rto_seconds and p.verdict == "PASS"
    ]
