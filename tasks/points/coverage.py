"""Which slots of a restore window have been proven restorable, from the history's point records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from drillbook.tasks.outcome import Status


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class PointRecord(BaseModel):
    """One point-in-time drill as the history keeps it (its summary's `point`), typed."""

    drill_id: str | None = None
    started_at: datetime
    kind: str | None = None
    requested_at: datetime | None = None
    expected_time: datetime | None = None
    restored_time: datetime | None = None
    proven: bool = False
    integrity_passed: bool = False
    oldest_time: datetime | None = None
    failure_mode: str | None = None
    problem: str | None = None

    @property
    def at(self) -> datetime | None:
        """The point this drill restored: the time asked for, else (`--at oldest`, `--txid`) the time of the TXID it expected or restored."""
        return self.requested_at or self.expected_time or self.restored_time

    @property
    def proven_restorable(self) -> bool:
        return self.proven and self.integrity_passed

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> PointRecord | None:
        """The record of a history row's summary; None for a drill of the newest position."""
        point = summary.get("point") or {}
        if not point:
            return None
        return cls(
            drill_id=summary.get("drill_id"),
            started_at=datetime.fromisoformat(summary["started_at"]),
            kind=point.get("kind"),
            requested_at=_time(point.get("requested_at")),
            expected_time=_time(point.get("expected_time")),
            restored_time=_time(point.get("restored_time")),
            proven=bool(point.get("proven")),
            integrity_passed=(summary.get("phases") or {}).get("integrity", {}).get("status") == Status.PASSED.value,
            oldest_time=_time(point.get("oldest_time")),
            failure_mode=summary.get("failure_mode"),
            problem=point.get("problem"),
        )


def point_records(summaries: Iterable[dict[str, Any]]) -> list[PointRecord]:
    """The point drills among history summaries, oldest first."""
    records = [r for r in map(PointRecord.from_summary, summaries) if r is not None]
    return sorted(records, key=lambda r: r.started_at)


class CoverageSlot(BaseModel):
    """One slot of the window: proven (when, by which drill), failed, never drilled, or before the oldest point."""

    slot_start: datetime
    slot_end: datetime
    state: str = "not drilled"
    drills: int = 0
    last: datetime | None = None
    point: datetime | None = None
    drill_id: str | None = None
    detail: str | None = None


def slot_of(moment: datetime, every: float) -> datetime:
    """Slots are `every` long, anchored at the Unix epoch, so they stay put as the window slides."""
    stamp = moment.timestamp()
    return datetime.fromtimestamp(stamp - (stamp % every), UTC)


def proven_slots(records: Iterable[PointRecord], every: float) -> dict[datetime, datetime]:
    """slot start -> when it was last proven restorable."""
    proven: dict[datetime, datetime] = {}
    for record in records:
        if not record.proven_restorable or record.at is None:
            continue
        slot = slot_of(record.at, every)
        if slot not in proven or proven[slot] < record.started_at:
            proven[slot] = record.started_at
    return proven


def point_due(records: Iterable[PointRecord], every: float, now: datetime) -> bool:
    """The nightly's cadence: a random-point drill when none ran in the last `every` (less a little slack for schedule jitter)."""
    slack = min(3600.0, every * 0.1)
    return not any(r.kind == "random" and (now - r.started_at).total_seconds() < every - slack for r in records)


def coverage(records: Iterable[PointRecord], window: float, every: float, now: datetime) -> list[CoverageSlot]:
    """One row per slot of the window, oldest first."""
    ordered = sorted(records, key=lambda r: r.started_at)
    rows: dict[datetime, CoverageSlot] = {}
    slot = slot_of(now - timedelta(seconds=window), every)
    while slot <= now:
        rows[slot] = CoverageSlot(slot_start=slot, slot_end=min(now, slot + timedelta(seconds=every)))
        slot += timedelta(seconds=every)
    oldest = next((r.oldest_time for r in reversed(ordered) if r.oldest_time), None)
    if oldest is not None:  # the newest listing seen says nothing before this is restorable
        for row in rows.values():
            if row.slot_end <= oldest:
                row.state, row.detail = "before oldest point", f"the oldest restorable point was {oldest.isoformat()}"
    for record in ordered:
        if record.at is None:
            continue
        row = rows.get(slot_of(record.at, every))
        if row is None:
            continue
        row.drills += 1
        ok = record.proven_restorable
        if ok or row.state != "proven":
            row.state = "proven" if ok else "failed"
            row.last, row.point, row.drill_id = record.started_at, record.at, record.drill_id
            row.detail = None if ok else (record.failure_mode or record.problem)
    return list(rows.values())
