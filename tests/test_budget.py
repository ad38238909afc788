"""The nightly's budget on plain data (tasks/history/budget.py): the risk order, the greedy fill, due databases, the night's account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drillbook.tasks.change import change_bytes, change_of
from drillbook.tasks.history.budget import (
    DEFAULT_COST,
    Change,
    Left,
    Member,
    Risk,
    candidates,
    choose,
    last_drilled_txid,
    load_night,
    night_of,
    save_night,
    to_list,
    with_changes,
)
from drillbook.tasks.history.store import TrendPoint
from drillbook.tasks.ltx import LtxFile

NOW = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
DAY = 86400.0


def point(database: str, hours_ago: float, verdict: str = "PASS", *, wall: float = 30.0, rto: float = 10.0, **extra) -> TrendPoint:
    return TrendPoint(
        database=database,
        drill_id=f"{database}-{hours_ago}",
        started_at=NOW - timedelta(hours=hours_ago),
        verdict=verdict,
        failure_mode=None if verdict == "PASS" else "integrity failure",
        rto_seconds=rto,
        rto_target_seconds=120.0,
        rpo_seconds=1.0,
        rpo_target_seconds=600.0,
        restored_bytes=None,
        ltx_bytes=None,
        planned_bytes=None,
        planned_rto_seconds=None,
        restore_seconds=rto,
        evidence=None,
        wall_seconds=wall,
        **extra,
    )


def fleet(max_age: float = 7 * DAY) -> tuple[list[Member], dict[str, list[TrendPoint]]]:
    points = {
        "fresh": [point("fresh", 24)],
        "failing": [point("failing", 48), point("failing", 24, "FAIL")],
        "released": [point("released", 48), point("released", 24, "PASS", release="v2", point_kind="random")],
        "aging": [point("aging", 7 * 24 - 6)],  # lapses in 6 hours
        "slow-rto": [point("slow-rto", 24, rto=110.0)],
    }
    names = ["fresh", "failing", "released", "aging", "slow-rto", "new"]
    return [Member(name, max_age, 120.0) for name in names], points


def test_the_risk_order_is_due_first_then_never_failing_released_aging_then_rto():
    members, points = fleet()
    found = {c.database: c for c in candidates(members, points, NOW)}
    assert found["new"].risk == Risk.NEVER and found["new"].due and found["new"].why() == "never drilled"
    assert found["failing"].risk == Risk.NOT_PASS and found["failing"].why() == "last verdict FAIL"
    assert found["released"].risk == Risk.RELEASED and found["released"].why() == "release v2 since its last PASS"
    assert found["aging"].due and found["aging"].why() == "max_drill_age lapses in 6h 00m"
    assert not found["fresh"].due and found["slow-rto"].rto_ratio == pytest.approx(110 / 120)
    plan = choose(found.values(), budget_seconds=1000)
    assert [c.database for c in plan.ranked] == ["new", "aging", "failing", "released", "slow-rto", "fresh"]
    assert plan.chosen == [c.database for c in plan.ranked] and plan.left == []


def test_the_budget_fills_greedily_in_risk_order_and_names_the_rest():
    members, points = fleet()
    plan = choose(candidates(members, points, NOW), budget_seconds=100)  # 3 drills of 30 s; "new" costs the fleet's median, 30 s
    assert plan.chosen == ["new", "aging", "failing"] and plan.planned_seconds == 90
    assert [(out.database, out.reason, out.why) for out in plan.left] == [
        ("released", Left.NOT_FITTING, "release v2 since its last PASS"),
        ("slow-rto", Left.NOT_FITTING, "max_drill_age lapses in 6d 00h"),
        ("fresh", Left.NOT_FITTING, "max_drill_age lapses in 6d 00h"),
    ]
    assert plan.due_left() == []
    assert plan.upfront() == [
        "budget 1m 40s for 1 drill(s) at once: drilling 3 of 6 databases in risk order (expected 1m 30s of wall), leaving 3"
    ]


def test_slots_multiply_the_wall_and_a_smaller_drill_still_fits_after_a_big_one_does_not():
    members = [Member(name, 7 * DAY, 120.0) for name in ("big", "small", "other")]
    points = {
        "big": [point("big", 24, "FAIL", wall=500)],
        "small": [point("small", 30, wall=20)],
        "other": [point("other", 24, wall=20)],
    }
    found = candidates(members, points, NOW)
    assert choose(found, budget_seconds=100).chosen == ["small", "other"]  # big alone is longer than the budget
    assert choose(found, budget_seconds=30, slots=2).chosen == ["small", "other"]
    assert choose(found, budget_seconds=600, slots=1).chosen == ["big", "small", "other"]


def test_a_due_database_that_does_not_fit_is_said_up_front():
    members = [Member(f"db{i}", 2 * DAY, 120.0) for i in range(4)]
    points = {f"db{i}": [point(f"db{i}", 40, wall=60)] for i in range(4)}  # every one lapses in 8 hours
    plan = choose(candidates(members, points, NOW), budget_seconds=130)
    assert plan.chosen == ["db0", "db1"] and [out.database for out in plan.due_left()] == ["db2", "db3"]
    assert plan.upfront()[1] == (
        "2 database(s) whose max_drill_age lapses before the next nightly do not fit the 2m 10s budget and will go stale: db2, db3"
    )
    night = night_of(plan, {"db0": NOW, "db1": NOW}, [], NOW)
    assert night.going_stale == ["db2", "db3"] and night.proven == 4
    assert night.coverage() == "4 databases, 100 % proven within 2d 00h, 2 tonight"


def test_costs_come_from_the_history_the_fleet_or_the_default():
    members = [Member("a", DAY, 120.0), Member("b", DAY, 120.0)]
    points = {"a": [point("a", h, wall=w) for h, w in ((60, 10), (50, 1000), (40, 12), (30, 14), (20, 16), (10, 18))]}
    found = {c.database: c for c in candidates(members, points, NOW)}
    assert (found["a"].cost_seconds, found["a"].cost_from) == (16, "its drills")  # median of the newest five
    assert (found["b"].cost_seconds, found["b"].cost_from) == (16, "the fleet")
    alone = candidates([Member("c", DAY, 120.0)], {}, NOW)[0]
    assert (alone.cost_seconds, alone.cost_from) == (DEFAULT_COST, "default")


def test_the_night_counts_what_the_spent_budget_stopped_and_the_coverage(tmp_path):
    members, points = fleet(max_age=2.5 * DAY)
    plan = choose(candidates(members, points, NOW), budget_seconds=1000)
    assert plan.chosen == ["new", "failing", "released", "aging", "slow-rto", "fresh"]
    later = NOW + timedelta(minutes=20)
    night = night_of(plan, {"new": later, "aging": later}, ["released", "slow-rto", "fresh"], later)  # failing FAILed again
    assert night.drilled == ["new", "failing", "aging"]
    assert [(out.database, out.reason) for out in night.left] == [
        ("released", Left.BUDGET_SPENT),
        ("slow-rto", Left.BUDGET_SPENT),
        ("fresh", Left.BUDGET_SPENT),
    ]
    # Everyone is proven now; failing and released passed 48 h ago, so their 60 h lapse before the next nightly.
    assert night.proven == 6 and night.going_stale == ["failing", "released"]
    assert night.lines() == [
        "6 databases, 100 % proven within 2d 12h, 3 tonight",
        "left, budget spent: 3 (released, slow-rto, fresh)",
        "going stale before the next nightly: 2 (failing, released)",
    ]
    fewer = night_of(plan, {}, [], NOW + timedelta(hours=13))
    assert fewer.proven == 2 and fewer.coverage() == "6 databases, 33.3 % proven within 2d 12h, 6 tonight"  # fresh, slow-rto
    save_night(tmp_path, night)
    assert load_night(tmp_path) == night
    assert load_night(tmp_path / "none") is None


def test_long_lists_are_cut_and_counted():
    members = [Member(f"db{i:02d}", 7 * DAY, 120.0) for i in range(25)]
    plan = choose(candidates(members, {}, NOW), budget_seconds=DEFAULT_COST)
    assert plan.chosen == ["db00"] and len(plan.due_left()) == 24
    assert plan.upfront()[1].endswith("db01, db02, db03, db04, db05, db06, db07, db08, db09, db10 and 14 more")


def test_more_change_since_the_last_drill_ranks_first_after_the_hours_left_and_before_the_rto():
    members = [Member(name, 7 * DAY, 120.0) for name in ("calm", "written", "slow-rto", "unlisted", "older")]
    points = {name: [point(name, 24, rto=110.0 if name == "slow-rto" else 10.0)] for name in ("calm", "written", "slow-rto", "unlisted")}
    points["older"] = [point("older", 30)]  # six hours closer to its max_drill_age: ahead whatever the others changed
    changes = {
        "calm": Change(transactions=0, bytes=0),
        "written": Change(transactions=412, bytes=3_100_000),
        "slow-rto": Change(transactions=3, bytes=2_000),
        "unlisted": Change(unknown="listing failed: replica directory /nowhere does not exist"),
        "older": Change(transactions=0, bytes=0),
    }
    found = with_changes(candidates(members, points, NOW), changes)
    plan = choose(found, budget_seconds=60)
    assert [c.database for c in plan.ranked] == ["older", "unlisted", "written", "slow-rto", "calm"]
    assert plan.chosen == ["older", "unlisted"]
    assert [(out.database, out.why) for out in plan.left] == [
        ("written", "max_drill_age lapses in 6d 00h; 412 transactions, 3.1 MB since its last drill"),
        ("slow-rto", "max_drill_age lapses in 6d 00h; 3 transactions, 2.0 kB since its last drill"),
        ("calm", "max_drill_age lapses in 6d 00h; no change since its last drill"),
    ]
    assert {c.database: c.why() for c in plan.ranked}["unlisted"] == (
        "max_drill_age lapses in 6d 00h; listing failed: replica directory /nowhere does not exist"
    )
    # Without the listing the RTO decides among those of the same hour, then the name.
    assert [c.database for c in choose(candidates(members, points, NOW), 60).ranked] == ["older", "slow-rto", "calm", "unlisted", "written"]
    night = night_of(plan, dict.fromkeys(plan.chosen, NOW), [], NOW)
    assert night.lines()[2] == (
        "change since the last drill (listed): drilled older (no change), unlisted (listing failed: replica directory /nowhere does not exist); "
        "left written (412 transactions, 3.1 MB), slow-rto (3 transactions, 2.0 kB), calm (no change)"
    )


def test_only_those_not_due_are_listed_and_the_last_drilled_txid_is_the_newest_positions():
    members, points = fleet()
    points["fresh"] = [
        point("fresh", 30, restored_txid="0000000000000010"),
        point("fresh", 26, "FAIL"),  # stopped before a restore: no TXID
        point("fresh", 24, restored_txid="0000000000000004", point_kind="random"),  # an older point, not the newest position
    ]
    found = candidates(members, points, NOW)
    assert sorted(to_list(found)) == ["failing", "fresh", "released", "slow-rto"]  # new never passed, aging lapses tonight
    assert last_drilled_txid(points["fresh"]) == "0000000000000010" and last_drilled_txid(points["slow-rto"]) is None
    listed = with_changes(found, {"fresh": Change(transactions=1, bytes=812)})
    assert {c.database: c.why() for c in listed}["fresh"] == "last verdict FAIL; 1 transaction, 812 bytes since its last drill"


def test_the_change_is_read_from_the_listings_names_and_sizes():
    def ltx(level: int, low: int, high: int, size: int) -> LtxFile:
        return LtxFile(level, f"{low:016x}", f"{high:016x}", size, NOW)

    files = [ltx(9, 1, 40, 10_000), ltx(1, 1, 20, 900), ltx(1, 21, 40, 800), ltx(0, 31, 35, 50), ltx(0, 36, 40, 60)]
    assert change_bytes(files, 30, 40) == 50 + 60  # level 0, as litestream wrote it, while it is kept
    assert change_bytes(files, 25, 40) == 800  # 26 is only in the L1 file 21-40, which holds the rest too
    assert change_of(files, f"{25:016x}") == Change(transactions=15, bytes=800)
    assert change_of(files, f"{40:016x}") == Change(transactions=0, bytes=0)
    assert change_of(files, f"{50:016x}").unknown == (
        "change unknown: the newest TXID 0000000000000028 is below the last drilled 0000000000000032 (a new lineage)"
    )
    assert change_of([], f"{1:016x}").unknown == "change unknown: the listing holds no LTX files"
    assert change_bytes([ltx(0, 1, 5, 10), ltx(0, 9, 12, 20)], 2, 12) == 30  # a gap (retention): the next file past it


def test_a_listing_that_fails_is_said_in_one_line_and_counted(tmp_path):
    from drillbook.tasks.change import read_changes
    from drillbook.tasks.config import DatabaseEntry

    (tmp_path / "quiet" / "ltx" / "0").mkdir(parents=True)
    (tmp_path / "quiet" / "ltx" / "0" / f"{1:016x}-{7:016x}.ltx").write_bytes(b"\0" * 812)
    entries = [
        DatabaseEntry(name=name, replica=(tmp_path / name).as_uri(), rto_target=120, rpo_target=600)
        for name in ("quiet", "gone", "unknown")
    ]
    listed = read_changes(entries, {"quiet": f"{5:016x}", "gone": f"{5:016x}"}, workers=2)
    assert listed.changes["quiet"] == Change(transactions=2, bytes=812)
    assert listed.changes["gone"].unknown == f"listing failed: replica directory {tmp_path / 'gone'} does not exist"
    assert listed.changes["unknown"].unknown == "change unknown: no drilled TXID on record"  # not listed: nothing to count from
    assert listed.failed == 1
