"""A nightly within a budget: which databases to drill tonight, chosen by risk, and what the night left and why.

Pure: the fleet's figures and its history's points in, a plan and a night's account out (no database, no clock
but the one passed in, no storage: the replicas' listings are read by tasks/change.py and handed in as `Change`);
only `save_night` / `load_night` touch a file (the page and the metrics read the last night).

Risk order, highest first:

1. never drilled;
2. the newest drill of the newest position did not PASS;
3. a release since the last PASS (a drill carrying a release started after it: the history's `release` column);
4. closest to its max_drill_age (hours of it left, so drills of the same night tie);
5. the most change since its last drill: the TXIDs and LTX bytes the replica's listing shows past the TXID the
   last drill of the newest position restored (the history's `restored_txid`); a change that cannot be known
   (the listing failed, no TXID on record, the TXIDs started again) ranks as the most;
6. the RTO forecast closest to its target (the fitted RTO now, else the newest measured one, over the target).

Only the candidates not already due are listed (one listing each, no restore, no header read): a due one is in
whatever it changed.

A database whose max_drill_age lapses before the next nightly (`horizon`, a day), or has lapsed, or that never
passed, is due: it is always in, ahead of the rest, and a due one the budget cannot hold is named before the
drills start (the night then ends with exit 1: that database goes stale). The budget is wall time for `slots`
drills at once; each drill is expected to cost the median of its newest drills' wall time, a never-drilled one
the fleet's median (or DEFAULT_COST). The plan fills it greedily in risk order; while the drills run, none starts
once the budget's wall time is spent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, Field

from drillbook.tasks.files import write_atomic
from drillbook.tasks.forecast import forecast_rto
from drillbook.tasks.history.store import TrendPoint
from drillbook.tasks.text import duration_text

NEXT_NIGHTLY = 86400.0  # a max_drill_age lapsing within this long lapses before the next nightly: due tonight
DEFAULT_COST = 60.0  # seconds a drill is expected to take when neither it nor the fleet has a drill on record
COST_WINDOW = 5  # a database's expected cost: the median wall time of this many of its newest drills
NIGHT_FILE = "nightly-budget.json"  # in the evidence_dir: the last budgeted night, for the page and the metrics
SHOWN = 10  # names listed per reason in a line (the rest counted)


class Risk(StrEnum):
    """Why a database ranks where it does (the first that applies)."""

    NEVER = "never drilled"
    NOT_PASS = "last verdict not PASS"
    RELEASED = "release since its last PASS"
    AGING = "max_drill_age"


RANK = {risk: index for index, risk in enumerate(Risk)}


class Left(StrEnum):
    """Why a database was not drilled tonight: a bounded set (a metric label)."""

    NOT_FITTING = "does not fit the budget"
    BUDGET_SPENT = "budget spent"


class Change(BaseModel):
    """What a replica's listing shows past the TXID its last drill restored (tasks/change.py reads it)."""

    transactions: int | None = Field(default=None, description="TXIDs past the last drilled one; None: unknown.")
    bytes: int | None = Field(default=None, description="Bytes of the LTX files holding them; None: unknown.")
    unknown: str | None = Field(default=None, description="Why the change is unknown ('listing failed: ...'): ranked as the most.")

    def weight(self) -> tuple[float, float]:
        """Larger: more change. Unknown outranks any known change (the safer guess)."""
        if self.transactions is None:
            return (math.inf, math.inf)
        return (float(self.transactions), float(self.bytes or 0))

    def short(self) -> str:
        """'412 transactions, 3.1 MB', 'no change', or why it is unknown."""
        if self.transactions is None:
            return self.unknown or "change unknown"
        if self.transactions == 0:
            return "no change"
        return f"{self.transactions:,} transaction{'s' if self.transactions != 1 else ''}, {bytes_text(self.bytes or 0)}"

    def text(self) -> str:
        """'412 transactions, 3.1 MB since its last drill', 'no change since its last drill', 'listing failed: ...'."""
        return self.short() if self.transactions is None else f"{self.short()} since its last drill"


def bytes_text(size: float) -> str:
    """'812 bytes', '26.4 kB', '3.1 MB', '2.0 GB' (decimal units, as the object stores bill)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size:,.0f} bytes"


class Member(NamedTuple):
    """A database as the budget reads it from the catalogue."""

    name: str
    max_age_seconds: float
    rto_target_seconds: float


class Candidate(BaseModel):
    """One database's risk tonight and what its drill is expected to cost."""

    database: str = Field(description="The catalogue's name.")
    risk: Risk = Field(description="The highest-ranking reason that applies.")
    due: bool = Field(description="Its max_drill_age lapses before the next nightly (or has, or it never passed): always in.")
    last_verdict: str | None = Field(default=None, description="The newest drill of the newest position.")
    last_pass_at: datetime | None = Field(default=None, description="The newest PASS of the newest position.")
    release: str | None = Field(default=None, description="A release drilled since the last PASS.")
    max_age_seconds: float = Field(description="Its max_drill_age.")
    seconds_left: float | None = Field(default=None, description="Until its max_drill_age lapses (negative: lapsed); None: never passed.")
    rto_ratio: float | None = Field(default=None, description="RTO (forecast now, else newest) over its target.")
    cost_seconds: float = Field(description="Expected wall time of its drill.")
    cost_from: str = Field(description="'its drills', 'the fleet' or 'default'.")
    change: Change | None = Field(default=None, description="Since its last drill, from its listing; None: not listed (a due one).")

    def key(self) -> tuple:
        hours_left = math.floor(self.seconds_left / 3600) if self.seconds_left is not None else -math.inf  # one night's drills tie
        transactions, size = self.change.weight() if self.change is not None else (0.0, 0.0)
        return (not self.due, RANK[self.risk], hours_left, -transactions, -size, -(self.rto_ratio or 0.0), self.database)

    def why(self) -> str:
        """Its risk, then what its listing showed: 'max_drill_age lapses in 5d 23h; 412 transactions, 3.1 MB since its last drill'."""
        risk = self._risk()
        return f"{risk}; {self.change.text()}" if self.change is not None else risk

    def _risk(self) -> str:
        """'never drilled', 'last verdict FAIL', 'release v2 since its last PASS', 'max_drill_age lapses in 3h 00m'."""
        if self.risk == Risk.NEVER:
            return "never drilled"
        if self.risk == Risk.NOT_PASS:
            return f"last verdict {self.last_verdict}" + (f" (release {self.release})" if self.release else "")
        if self.risk == Risk.RELEASED:
            return f"release {self.release} since its last PASS"
        if self.seconds_left is None:
            return "never passed"
        if self.seconds_left <= 0:
            return f"max_drill_age lapsed {duration_text(-self.seconds_left)} ago"
        return f"max_drill_age lapses in {duration_text(self.seconds_left)}"


def expected_seconds(points: Sequence[TrendPoint]) -> float | None:
    """A drill's expected wall time: the median of its newest drills' (not point drills); None for one never drilled."""
    return _cost(points)


def _cost(points: Sequence[TrendPoint]) -> float | None:
    walls = [p.wall_seconds for p in points if p.point_kind is None and p.wall_seconds is not None][-COST_WINDOW:]
    return statistics.median(walls) if walls else None


def _rto_ratio(points: Sequence[TrendPoint], target: float, now: datetime, min_drills: int, window: int) -> float | None:
    newest = [p for p in points if p.point_kind is None]
    if not newest or target <= 0:
        return None
    forecast = forecast_rto("", newest, target_seconds=target, now=now, min_drills=min_drills, window=window)
    rto = forecast.fitted_now_seconds if forecast.known else forecast.rto_seconds
    return None if rto is None else rto / target


def last_drilled_txid(points: Sequence[TrendPoint]) -> str | None:
    """The TXID the newest drill of the newest position restored (point drills restore older ones); None: none on record."""
    return next((p.restored_txid for p in reversed(points) if p.point_kind is None and p.restored_txid), None)


def to_list(found: Iterable[Candidate]) -> list[str]:
    """The candidates whose listing the plan reads: those not due (a due one is in whatever it changed)."""
    return [c.database for c in found if not c.due]


def with_changes(found: Iterable[Candidate], changes: dict[str, Change]) -> list[Candidate]:
    """The candidates with what their listings showed (`changes`, per database; the rest as they were)."""
    return [c.model_copy(update={"change": changes[c.database]}) if c.database in changes else c for c in found]


def candidates(
    members: Iterable[Member],
    points: dict[str, list[TrendPoint]],
    now: datetime,
    *,
    horizon: float = NEXT_NIGHTLY,
    min_drills: int = 5,
    window: int = 30,
) -> list[Candidate]:
    """Each member's risk and expected cost from its drills (`points`: per database, oldest first); `with_changes` adds
    what the listings showed."""
    members = list(members)
    costs = {m.name: _cost(points.get(m.name, [])) for m in members}
    known = [c for c in costs.values() if c is not None]
    fleet = statistics.median(known) if known else None
    out = []
    for member in members:
        mine = points.get(member.name, [])
        newest = [p for p in mine if p.point_kind is None]
        last_pass = next((p.started_at for p in reversed(newest) if p.verdict == "PASS"), None)
        release = next((p.release for p in reversed(mine) if p.release and (last_pass is None or p.started_at > last_pass)), None)
        left = (last_pass + timedelta(seconds=member.max_age_seconds) - now).total_seconds() if last_pass else None
        last_verdict = newest[-1].verdict if newest else None
        if not newest:  # point drills alone never drilled its newest position
            risk = Risk.NEVER
        elif last_verdict != "PASS":
            risk = Risk.NOT_PASS
        elif release:
            risk = Risk.RELEASED
        else:
            risk = Risk.AGING
        cost = costs[member.name]
        out.append(
            Candidate(
                database=member.name,
                risk=risk,
                due=left is None or left <= horizon,
                last_verdict=last_verdict,
                last_pass_at=last_pass,
                release=release,
                max_age_seconds=member.max_age_seconds,
                seconds_left=left,
                rto_ratio=_rto_ratio(mine, member.rto_target_seconds, now, min_drills, window),
                cost_seconds=cost if cost is not None else fleet if fleet is not None else DEFAULT_COST,
                cost_from="its drills" if cost is not None else "the fleet" if fleet is not None else "default",
            )
        )
    return out


class LeftOut(BaseModel):
    """A database the night did not drill, and why."""

    database: str = Field(description="The catalogue's name.")
    reason: Left = Field(description="Not fitting the budget, or the budget's wall time spent before it started.")
    due: bool = Field(description="Its max_drill_age lapses before the next nightly: left, it goes stale.")
    why: str = Field(description="Its risk, as Candidate.why says it.")


def _left(candidate: Candidate, reason: Left) -> LeftOut:
    return LeftOut(database=candidate.database, reason=reason, due=candidate.due, why=candidate.why())


class BudgetPlan(BaseModel):
    """The night's choice under `budget_seconds` for `slots` drills at once: every candidate in risk order, which are drilled, which left."""

    budget_seconds: float = Field(description="Wall time of the night's drills.")
    slots: int = Field(ge=1, description="Drills at once (the drillbook-drills limit).")
    ranked: list[Candidate] = Field(description="Every database of the selection, in risk order (due ones first).")
    chosen: list[str] = Field(description="The databases to drill, in risk order.")
    left: list[LeftOut] = Field(description="The databases left, in risk order.")
    planned_seconds: float = Field(description="The chosen drills' expected cost, summed.")

    def due_left(self) -> list[LeftOut]:
        return [out for out in self.left if out.due]

    def upfront(self) -> list[str]:
        """What the nightly says before the first drill starts."""
        budget = duration_text(self.budget_seconds)
        lines = [
            f"budget {budget} for {self.slots} drill(s) at once: drilling {len(self.chosen):,} of {len(self.ranked):,} databases "
            f"in risk order (expected {duration_text(self.planned_seconds / self.slots)} of wall), leaving {len(self.left):,}"
        ]
        due = self.due_left()
        if due:
            lines.append(
                f"{len(due):,} database(s) whose max_drill_age lapses before the next nightly do not fit the {budget} budget "
                f"and will go stale: {_names(due)}"
            )
        return lines


def _names(items: Sequence[LeftOut] | Sequence[str]) -> str:
    names = [item if isinstance(item, str) else item.database for item in items]
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN:,} more" if len(names) > SHOWN else "")


def choose(found: Sequence[Candidate], budget_seconds: float, slots: int = 1) -> BudgetPlan:
    """Greedy in risk order (due ones first): a drill is in while the expected costs fit `budget_seconds` x `slots`.

    One drill longer than the whole budget never fits: started, it would run past the budget by itself.
    """
    capacity, used = budget_seconds * slots, 0.0
    ranked = sorted(found, key=Candidate.key)
    chosen, left = [], []
    for candidate in ranked:
        if candidate.cost_seconds <= budget_seconds and used + candidate.cost_seconds <= capacity:
            chosen.append(candidate.database)
            used += candidate.cost_seconds
        else:
            left.append(_left(candidate, Left.NOT_FITTING))
    return BudgetPlan(budget_seconds=budget_seconds, slots=slots, ranked=ranked, chosen=chosen, left=left, planned_seconds=used)


class Night(BaseModel):
    """What a budgeted night did: drilled, left and why, and the fleet's coverage after it (saved for the page and metrics)."""

    at: datetime = Field(description="When the night's drills ended.")
    budget_seconds: float = Field(description="Wall time of the night's drills.")
    databases: int = Field(description="Databases in the selection.")
    drilled: list[str] = Field(description="Databases drilled tonight, in risk order.")
    left: list[LeftOut] = Field(description="Databases not drilled tonight, and why.")
    proven: int = Field(description="Databases whose last PASS lies within their max_drill_age after tonight.")
    within: str = Field(description="'7d 00h', or 'their max_drill_age' when they differ.")
    going_stale: list[str] = Field(description="Databases whose max_drill_age lapses before the next nightly (or has): exit 1.")
    changes: dict[str, str] = Field(
        default_factory=dict,
        description="Per listed database (the ones not due), its change since its last drill: '412 transactions, 3.1 MB'.",
    )

    def proven_ratio(self) -> float:
        return self.proven / self.databases if self.databases else 1.0

    def coverage(self) -> str:
        """'10,000 databases, 100 % proven within 7d 00h, 1,412 tonight'."""
        return coverage_text(self.databases, self.proven, self.within) + f", {len(self.drilled):,} tonight"

    def lines(self) -> list[str]:
        """The coverage, then per reason how many were left and which (the first SHOWN), then which go stale."""
        out = [self.coverage()]
        for reason in Left:
            mine = [item for item in self.left if item.reason == reason]
            if mine:
                out.append(f"left, {reason.value}: {len(mine):,} ({_names(mine)})")
        if self.changes:
            out.append(self.change_line())
        if self.going_stale:
            out.append(f"going stale before the next nightly: {len(self.going_stale):,} ({_names(self.going_stale)})")
        return out

    def change_line(self) -> str:
        """'change since the last drill (listed): drilled busy (412 transactions, 3.1 MB); left calm (no change)'."""
        parts = []
        for said, names in (("drilled", self.drilled), ("left", [out.database for out in self.left])):
            mine = [f"{name} ({self.changes[name]})" for name in names if name in self.changes]
            if mine:
                parts.append(f"{said} " + ", ".join(mine[:SHOWN]) + (f" and {len(mine) - SHOWN:,} more" if len(mine) > SHOWN else ""))
        return "change since the last drill (listed): " + "; ".join(parts)


def coverage_text(databases: int, proven: int, within: str) -> str:
    """'10,000 databases, 99.9 % proven within 7d 00h' (never rounded up to 100 %)."""
    share = 100.0 if proven >= databases else math.floor(1000 * proven / databases) / 10
    return f"{databases:,} databases, {share:g} % proven within {within}"


def within_text(max_ages: Iterable[float]) -> str:
    """'7d 00h' when every database has that max_drill_age, else 'their max_drill_age'."""
    ages = set(max_ages)
    return duration_text(ages.pop()) if len(ages) == 1 else "their max_drill_age"


def night_of(
    plan: BudgetPlan, passed: dict[str, datetime], not_started: Iterable[str], now: datetime, *, horizon: float = NEXT_NIGHTLY
) -> Night:
    """The night's account: `passed` holds tonight's PASSes of the newest position, `not_started` the drills the spent budget stopped."""
    stopped = set(not_started)
    position = {c.database: index for index, c in enumerate(plan.ranked)}
    left = [*plan.left, *(_left(plan.ranked[position[name]], Left.BUDGET_SPENT) for name in plan.chosen if name in stopped)]
    proven, stale = 0, []
    for candidate in plan.ranked:
        last = passed.get(candidate.database, candidate.last_pass_at)
        if last is not None and (now - last).total_seconds() <= candidate.max_age_seconds:
            proven += 1
        # A PASS tonight is the best a night can do, even under a max_drill_age shorter than the nights.
        lapses = last is None or (last - now).total_seconds() + candidate.max_age_seconds <= horizon
        if lapses and candidate.database not in passed:
            stale.append(candidate.database)
    return Night(
        at=now,
        budget_seconds=plan.budget_seconds,
        databases=len(plan.ranked),
        drilled=[name for name in plan.chosen if name not in stopped],
        left=sorted(left, key=lambda out: position[out.database]),
        proven=proven,
        within=within_text(c.max_age_seconds for c in plan.ranked),
        going_stale=stale,
        changes={c.database: c.change.short() for c in plan.ranked if c.change is not None},
    )


def save_night(evidence_dir: Path, night: Night) -> Path:
    """The last budgeted night, beside the evidence (replaced atomically): the page and the metrics read it."""
    return write_atomic(Path(evidence_dir) / NIGHT_FILE, night.model_dump_json(indent=1))


def load_night(evidence_dir: Path) -> Night | None:
    """The last budgeted night, or None when there was none (or its file cannot be read: the page and metrics go on without)."""
    try:
        return Night.model_validate_json((Path(evidence_dir) / NIGHT_FILE).read_text())
    except (OSError, ValueError):
        return None
