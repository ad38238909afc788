"""What was asked: a time (`--at`), a TXID (`--txid`), oldest, random or retention; checked whole before anything runs."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.text import iso

KEYWORDS = ("oldest", "random", "retention")
TXID_HINT = "a hexadecimal TXID like 0000000000001a2b (1 to 16 hex digits, as `litestream ltx` lists them)"
AT_HINT = "an ISO 8601 time with a zone like 2026-11-20T10:00:00Z, or one of oldest, random, retention"


class PointKind(StrEnum):
    AT = "at"  # a time
    TXID = "txid"
    OLDEST = "oldest"
    RANDOM = "random"  # a random time inside restore_points.random_within, favouring uncovered parts
    RETENTION = "retention"  # the retention_target boundary (or the oldest point when the window is short)


class PointProblem(StrEnum):
    BEFORE_OLDEST = "before_oldest"  # the point predates every restorable file
    BEYOND_NEWEST = "beyond_newest"  # a TXID the replica never held
    NOT_A_POINT = "not_a_point"  # a TXID inside a compacted file: no restore ends there
    GAP = "gap"  # TXIDs missing from the replica at or after the point's chain
    RETENTION_SHORT = "retention_short"
    BEHIND = "behind"  # the copy is earlier than the point
    AHEAD = "ahead"  # the copy holds changes after the point
    REFUSED = "refused"  # litestream did not restore the point
    NO_HISTORY = "no_history"  # the listing could not be read


class PointRequest(BaseModel):
    """What was asked: `--at`, `--txid`, or a point drillbook chooses."""

    kind: PointKind
    at: datetime | None = None
    txid: str | None = None

    def describe(self) -> str:
        if self.kind == PointKind.TXID:
            return f"TXID {self.txid}"
        if self.kind == PointKind.AT:
            return f"the point {iso(self.at)}"
        return f"the {self.kind.value} point" + (f" {iso(self.at)}" if self.at else "")


def parse_txid(value: str) -> str:
    """'1a2b' or '0000000000001a2b' -> '0000000000001a2b'; anything else is a ConfigError naming --txid."""
    text = value.strip().lower().removeprefix("0x")
    try:
        number = int(text, 16) if 0 < len(text) <= 16 else -1
    except ValueError:
        number = -1
    if number <= 0:
        raise ConfigError(f"--txid {value!r}: expected {TXID_HINT}", field="txid")
    return f"{number:016x}"


def parse_at(value: str, now: datetime) -> datetime:
    """An ISO 8601 time with a zone, not in the future."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at {value!r}: expected {AT_HINT}", field="at") from None
    if moment.tzinfo is None:
        example = text + ("Z" if "T" in text or " " in text else "T00:00:00Z")
        raise ConfigError(f"--at {value!r}: give a time zone, e.g. {example} for UTC", field="at")
    moment = moment.astimezone(UTC)
    if moment > now:
        raise ConfigError(f"--at {iso(moment)} is in the future (now is {iso(now)}): give a point that has already happened", field="at")
    return moment


def point_request(at: str | None, txid: str | None, entry: DatabaseEntry, now: datetime) -> PointRequest | None:
    """The point a drill restores, from `--at` / `--txid` (None: the newest). Bad input is a ConfigError (exit 2)."""
    if at is not None and txid is not None:
        raise ConfigError("give --at or --txid, not both (litestream restores to one point)", field="at")
    if txid is not None:
        return PointRequest(kind=PointKind.TXID, txid=parse_txid(txid))
    if at is None:
        return None
    keyword = at.strip().lower()
    if keyword == PointKind.RANDOM and entry.restore_points is None:
        raise ConfigError(
            f'--at random: database {entry.name!r} has no restore_points; add restore_points = {{ random_within = "30d", every = "7d" }}',
            entry=entry.name,
            field="restore_points",
        )
    if keyword == PointKind.RETENTION and entry.retention_target is None:
        raise ConfigError(
            f'--at retention: database {entry.name!r} has no retention_target; add e.g. retention_target = "14d"',
            entry=entry.name,
            field="retention_target",
        )
    if keyword in KEYWORDS:
        return PointRequest(kind=PointKind(keyword))
    return PointRequest(kind=PointKind.AT, at=parse_at(at, now))
