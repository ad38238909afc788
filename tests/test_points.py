"""Restore points as plain functions: parsing, planning against a listing, the check after the restore, coverage, freshness."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from drillbook.tasks.config import DatabaseEntry, RestorePoints
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.freshness import as_time, measure_freshness
from drillbook.tasks.outcome import Status
from drillbook.tasks.points import (
    PointCheck,
    PointFile,
    PointKind,
    PointProblem,
    PointRecord,
    PointRequest,
    Timeline,
    choose_random_point,
    coverage,
    parse_at,
    parse_txid,
    plan_point,
    point_due,
    point_request,
    verify_point,
)
from drillbook.tasks.restore import RestoreResult

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=3)


def _entry(**extra) -> DatabaseEntry:
    return DatabaseEntry(name="orders", replica="file:///srv/replica", rto_target=60, rpo_target=600, **extra)


def _file(level: int, low: int, high: int, minutes: float) -> PointFile:
    moment = T0 + timedelta(minutes=minutes)
    return PointFile(level=level, min_txid=low, max_txid=high, time=moment, listed=moment.replace(microsecond=0))


def _timeline(*files: PointFile) -> Timeline:
    return Timeline(files=list(files))


# TXID 1..4 as level-0 files, one a minute.
LINE = _timeline(_file(0, 1, 1, 0), _file(0, 2, 2, 1), _file(0, 3, 3, 2), _file(0, 4, 4, 3))


def _at(minutes: float) -> PointRequest:
    return PointRequest(kind=PointKind.AT, at=T0 + timedelta(minutes=minutes))


def _restored(txid: str | None, status: Status = Status.PASSED) -> RestoreResult:
    return RestoreResult(
        status=status,
        txid=txid,
        path="/tmp/x.db" if txid else None,
        summary="litestream restore exited 1: Error: no matching backup files available",
    )


@pytest.mark.parametrize(
    ("value", "normal"), [("0000000000001a2b", "0000000000001a2b"), ("1A2B", "0000000000001a2b"), ("0x2", "0000000000000002")]
)
def test_txid_is_normalised_to_sixteen_hex_digits(value, normal):
    assert parse_txid(value) == normal


@pytest.mark.parametrize("value", ["zz", "", "0", "00000000000000001", "-1", "1.5"])
def test_malformed_txid_names_the_option(value):
    with pytest.raises(ConfigError) as caught:
        parse_txid(value)
    assert (
        str(caught.value)
        == f"--txid {value!r}: expected a hexadecimal TXID like 0000000000001a2b (1 to 16 hex digits, as `litestream ltx` lists them)"
    )


def test_at_needs_a_zone_and_a_past_time():
    assert parse_at("2026-11-20T10:00:00Z", NOW) == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert parse_at("2026-11-20T11:00:00+01:00", NOW) == datetime(2026, 11, 20, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match=r"^--at '2026-11-20T10:00:00': give a time zone, e.g. 2026-11-20T10:00:00Z for UTC$"):
        parse_at("2026-11-20T10:00:00", NOW)
    with pytest.raises(ConfigError, match=r"^--at 2026-11-26T00:00:00.000Z is in the future \(now is 2026-11-25T12:00:00.000Z\)"):
        parse_at("2026-11-26T00:00:00Z", NOW)
    with pytest.raises(ConfigError, match=r"^--at '2026-11-20': give a time zone, e.g. 2026-11-20T00:00:00Z for UTC$"):
        parse_at("2026-11-20", NOW)
    with pytest.raises(ConfigError, match=r"^--at 'last tuesday': expected an ISO 8601 time"):
        parse_at("last tuesday", NOW)


def test_point_request_keywords_need_their_catalogue_keys():
    assert point_request(None, None, _entry(), NOW) is None
    assert point_request("oldest", None, _entry(), NOW).kind == PointKind.OLDEST
    with pytest.raises(ConfigError, match="give --at or --txid, not both"):
        point_request("oldest", "2", _entry(), NOW)
    with pytest.raises(ConfigError, match=r"--at random: database 'orders' has no restore_points"):
        point_request("random", None, _entry(), NOW)
    with pytest.raises(ConfigError, match=r"--at retention: database 'orders' has no retention_target"):
        point_request("retention", None, _entry(), NOW)


def test_cadence_longer_than_the_window_is_refused():
    with pytest.raises(ValueError, match="every .* is longer than random_within"):
        RestorePoints(random_within="1d", every="7d")
    assert RestorePoints(random_within="30d").every == 86400


def test_a_time_between_two_files_expects_the_earlier_one_and_asks_litestream_for_it():
    check = plan_point(_entry(), _at(2.5), LINE, NOW)
    assert (check.status, check.expected_txid, check.target_args) == (
        Status.PASSED,
        "0000000000000003",
        ["-timestamp", "2026-11-22T12:02:30.000Z"],
    )
    assert verify_point(check, _restored("0000000000000003"), LINE).proven


def test_a_copy_behind_the_point_is_a_fail_naming_both():
    check = verify_point(plan_point(_entry(), _at(2.5), LINE, NOW), _restored("0000000000000002"), LINE)
    assert (check.status, check.problem, check.proven) == (Status.FAILED, PointProblem.BEHIND, False)
    assert check.summary == (
        "the copy is behind the point 2026-11-22T12:02:30.000Z: restored TXID 0000000000000002 (written 2026-11-22T12:01:00.000Z), "
        "the replica lists TXID 0000000000000003 (written 2026-11-22T12:02:00.000Z) for it"
    )


def test_a_copy_ahead_of_the_point_is_a_fail():
    check = verify_point(plan_point(_entry(), _at(2.5), LINE, NOW), _restored("0000000000000004"), LINE)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.AHEAD)


def test_a_missing_file_before_the_point_is_a_gap():
    gapped = _timeline(_file(0, 1, 1, 0), _file(0, 2, 2, 1), _file(0, 4, 4, 3))
    check = plan_point(_entry(), _at(3.5), gapped, NOW)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.GAP)
    assert "missing TXIDs 0000000000000003-0000000000000003" in check.summary
    # Between the last file before the gap and the first after it the point is unprovable, though litestream restores TXID 2 happily.
    check = verify_point(plan_point(_entry(), _at(2.5), gapped, NOW), _restored("0000000000000002"), gapped)
    assert (check.status, check.problem, check.proven) == (Status.FAILED, PointProblem.GAP, False)
    assert "may include them" in check.summary


def test_a_point_before_the_oldest_is_named_and_litestreams_refusal_kept():
    check = verify_point(plan_point(_entry(), _at(-10), LINE, NOW), _restored(None, Status.FAILED), LINE)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.BEFORE_OLDEST)
    assert check.summary.startswith(
        "2026-11-22T11:50:00.000Z is before the oldest restorable point (TXID 0000000000000001 written 2026-11-22T12:00:00.000Z)"
    )
    assert "no matching backup files available" in check.summary


def test_a_time_after_the_newest_change_restores_the_newest_txid():
    check = plan_point(_entry(), _at(60), LINE, NOW)
    assert (check.status, check.target_args, check.expected_txid) == (Status.PASSED, ["-txid", "0000000000000004"], "0000000000000004")
    assert "after the newest change" in check.notes[0]


def test_txid_inside_a_compacted_file_or_beyond_the_newest_is_not_a_point():
    compacted = _timeline(_file(9, 1, 2, 1.5), _file(1, 1, 1, 0.5), _file(1, 2, 4, 3.5), _file(0, 5, 5, 4))
    check = plan_point(_entry(), PointRequest(kind=PointKind.TXID, txid="0000000000000003"), compacted, NOW)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.NOT_A_POINT)
    assert "inside the compacted file L1 0000000000000002-0000000000000004" in check.summary
    assert "nearest restorable TXIDs: 0000000000000002 and 0000000000000004" in check.summary
    check = plan_point(_entry(), PointRequest(kind=PointKind.TXID, txid="00000000000000ff"), compacted, NOW)
    assert check.problem == PointProblem.BEYOND_NEWEST
    # A time inside the compacted range: the state before it, with a note saying how much earlier.
    check = plan_point(_entry(), _at(1.0), compacted, NOW)
    assert (check.status, check.expected_txid) == (Status.PASSED, "0000000000000001")
    assert "kept only compacted" in check.notes[0]


def test_litestream_refusing_a_listed_point_is_a_fail():
    check = verify_point(plan_point(_entry(), PointRequest(kind=PointKind.TXID, txid="3"), LINE, NOW), _restored(None, Status.FAILED), LINE)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.REFUSED)


def test_retention_short_names_the_oldest_point():
    check = plan_point(_entry(retention_target="14d"), PointRequest(kind=PointKind.RETENTION), LINE, NOW)
    assert (check.status, check.problem, check.target_args) == (Status.FAILED, PointProblem.RETENTION_SHORT, ["-txid", "0000000000000001"])
    assert check.summary == (
        "retention window short: the oldest restorable point is TXID 0000000000000001 written 2026-11-22T12:00:00.000Z (3d 00h ago), "
        "short of retention_target 14d 00h by 11d 00h"
    )
    ok = plan_point(_entry(retention_target="2d"), PointRequest(kind=PointKind.RETENTION), LINE, NOW)
    assert ok.status == Status.PASSED and ok.request.at == NOW - timedelta(days=2)
    # No file starts at TXID 1 any more: nothing is restorable, and the retention drill says so in its own words.
    pruned = _timeline(_file(0, 3, 3, 2), _file(0, 4, 4, 3))
    check = plan_point(_entry(retention_target="1d"), PointRequest(kind=PointKind.RETENTION), pruned, NOW)
    assert (check.problem, check.summary) == (
        PointProblem.RETENTION_SHORT,
        "retention window short: the replica lists no file starting at TXID 1 (no snapshot): no point of it is restorable",
    )


def _proven(moment: datetime, started: datetime, *, proven: bool = True) -> PointRecord:
    return PointRecord.from_summary(
        {
            "drill_id": "x",
            "started_at": started.isoformat(),
            "verdict": "PASS" if proven else "FAIL",
            "failure_mode": None if proven else "point not restorable",
            "phases": {"integrity": {"status": "passed"}},
            "point": {"kind": "random", "requested_at": moment.isoformat().replace("+00:00", "Z"), "proven": proven, "oldest_time": None},
        }
    )


def test_random_points_favour_slots_never_proven():
    long_line = _timeline(_file(0, 1, 1, 0), _file(0, 2, 2, 3000))  # restorable from T0 (Nov 22 12:00) to Nov 24 14:00
    every = 86400.0
    history = [_proven(T0 + timedelta(hours=1), NOW - timedelta(days=1)), _proven(T0 + timedelta(days=1, hours=1), NOW - timedelta(days=1))]
    for seed in range(20):
        moment, slot, _ = choose_random_point(long_line, 30 * 86400, every, history, NOW, random.Random(seed))
        assert slot == datetime(2026, 11, 24, tzinfo=UTC)  # the only slot never proven
        assert slot <= moment < slot + timedelta(days=1) and moment <= long_line.restorable_until


def test_random_point_stays_inside_what_the_replica_holds_and_says_when_the_window_is_longer():
    check = plan_point(
        _entry(restore_points={"random_within": "30d", "every": "1d"}), PointRequest(kind=PointKind.RANDOM), LINE, NOW, rng=random.Random(1)
    )
    assert check.status == Status.PASSED
    assert T0 < check.request.at <= T0 + timedelta(minutes=3)
    assert "reaches before the replica's first backup" in check.notes[0]


def test_cadence_and_coverage_from_history():
    every = 7 * 86400.0
    assert point_due([], every, NOW)
    assert not point_due([_proven(NOW - timedelta(days=20), NOW - timedelta(days=2))], every, NOW)
    assert point_due([_proven(NOW - timedelta(days=20), NOW - timedelta(days=7))], every, NOW)
    rows = coverage(
        [
            _proven(NOW - timedelta(days=20), NOW - timedelta(days=2)),
            _proven(NOW - timedelta(days=6), NOW - timedelta(days=1), proven=False),
        ],
        30 * 86400.0,
        every,
        NOW,
    )
    states = [row.state for row in rows]
    assert states.count("proven") == 1 and states.count("failed") == 1 and states.count("not drilled") == len(rows) - 2


def _live(path, rows: list[str]) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, updated_at TEXT)")
    connection.executemany("INSERT INTO orders (updated_at) VALUES (?)", [(r,) for r in rows])
    connection.commit()
    connection.close()


def test_freshness_measures_the_data_loss_window_and_never_writes_the_live_database(tmp_path):
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    _live(copy, ["2026-11-25T10:00:00"])
    _live(live, ["2026-11-25T10:00:00", "2026-11-25T10:05:00Z"])
    before = hashlib.sha256(live.read_bytes()).hexdigest(), sorted(p.name for p in tmp_path.iterdir())
    report = measure_freshness(_entry(live_path=str(live), freshness_query="SELECT max(updated_at) FROM orders"), copy)
    assert (report.status, report.data_loss_seconds) == (Status.PASSED, 300.0)
    assert (hashlib.sha256(live.read_bytes()).hexdigest(), sorted(p.name for p in tmp_path.iterdir())) == before


def test_freshness_without_the_live_database_reports_the_copy_with_a_note(tmp_path):
    copy = tmp_path / "copy.db"
    _live(copy, ["2026-11-25T10:00:00"])
    report = measure_freshness(_entry(live_path=str(tmp_path / "elsewhere.db"), freshness_query="SELECT max(updated_at) FROM orders"), copy)
    assert (report.status, report.data_loss_seconds, report.copy_newest) == (Status.PASSED, None, datetime(2026, 11, 25, 10, tzinfo=UTC))
    assert report.notes == [f"the live database {tmp_path / 'elsewhere.db'} is not on this machine: data-loss window not measured"]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT 'soon'", "returned 'soon', not an ISO 8601 time or Unix seconds"),
        ("SELECT 1, 2", "returned 2 columns; it must return one value"),
    ],
)
def test_a_freshness_query_that_fails_or_returns_no_time_is_an_error_naming_the_field(tmp_path, query, problem):
    copy = tmp_path / "copy.db"
    _live(copy, ["2026-11-25T10:00:00"])
    report = measure_freshness(_entry(freshness_query=query), copy)
    assert report.status == Status.ERROR
    assert (
        report.summary == f"database 'orders': field freshness_query {problem} on the restored copy: fix the query (one value: a timestamp)"
    )


def test_a_freshness_query_naming_what_the_copy_lacks_is_the_copys_finding(tmp_path):
    copy = tmp_path / "copy.db"
    _live(copy, ["2026-11-25T10:00:00"])
    report = measure_freshness(_entry(freshness_query="SELECT max(updated) FROM orders"), copy)
    assert (report.status, report.copy_lacks) == (Status.FAILED, "the restored copy has no column updated (its tables: orders)")
    assert report.summary == "freshness_query cannot run: the restored copy has no column updated (its tables: orders)"


def test_freshness_values():
    assert as_time(1_764_064_800) == as_time(1_764_064_800_000) == datetime(2025, 11, 25, 10, tzinfo=UTC)
    assert as_time("2026-11-25 10:00:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)


def test_verdict_names_point_and_retention_and_data_loss():
    from drillbook.tasks.freshness import FreshnessReport
    from drillbook.tasks.integrity import IntegrityReport
    from drillbook.tasks.replica import ReplicaState
    from tests.verdicts import judged

    ok = dict(status=Status.PASSED, seconds=0.1)
    common = dict(
        drill_id="d",
        started_at=NOW,
        finished_at=NOW,
        replica=ReplicaState(**ok),
        restore=RestoreResult(**ok),
        integrity=IntegrityReport(**ok),
    )
    behind = PointCheck(status=Status.FAILED, problem=PointProblem.BEHIND, summary="the copy is behind")
    short = PointCheck(status=Status.FAILED, problem=PointProblem.RETENTION_SHORT, summary="retention window short: ...")
    assert judged(_entry(), point=behind, **common).failure_mode.value == "point not restorable"
    assert judged(_entry(), point=short, **common).failure_mode.value == "retention window short"
    lossy = FreshnessReport(status=Status.PASSED, data_loss_seconds=900.0)
    result = judged(_entry(), freshness=lossy, **common)
    assert (result.failure_mode.value, result.findings[0].detail) == (
        "replica lag",
        "data-loss window (freshness_query) is 900s, over the 600s RPO target by 300s",
    )
    assert result.summary()["data_loss_seconds"] == 900.0
    broken = FreshnessReport(status=Status.ERROR, summary="database 'orders': field freshness_query failed")
    assert judged(_entry(), freshness=broken, **common).verdict.value == "ERROR"


def test_a_time_inside_the_newest_files_listing_second_is_asked_by_txid():
    # S3 lists whole seconds: litestream refuses 12:03:00.500 ("after" its listing) though TXID 4 was written at 12:03:00.800.
    line = _timeline(_file(0, 1, 1, 0), _file(0, 2, 2, 1), _file(0, 3, 3, 2.5), _file(0, 4, 4, 3.0 + 0.8 / 60))
    check = plan_point(_entry(), _at(3.0 + 0.5 / 60), line, NOW)
    assert (check.status, check.target_args, check.expected_txid) == (Status.PASSED, ["-txid", "0000000000000003"], "0000000000000003")


def test_reading_a_closed_wal_database_creates_no_sidecars(tmp_path):
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    for path in (live, copy):
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
        _live(path, ["2026-11-25T10:00:00Z"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "live.db"]
    report = measure_freshness(_entry(live_path=str(live), freshness_query="SELECT max(updated_at) FROM orders"), copy)
    assert report.data_loss_seconds == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "live.db"]  # mode=ro alone would add -wal and -shm


def test_a_copied_replica_whose_store_times_are_later_is_named():
    copied_at = T0 + timedelta(days=2)
    files = [PointFile(level=0, min_txid=i, max_txid=i, time=T0 + timedelta(minutes=i), listed=copied_at) for i in (1, 2, 3)]
    check = plan_point(_entry(), _at(2.5), Timeline(files=files), NOW)
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.BEFORE_OLDEST)
    assert "was the replica copied? Restore by --txid instead" in check.summary
    assert plan_point(_entry(), PointRequest(kind=PointKind.TXID, txid="2"), Timeline(files=files), NOW).status == Status.PASSED


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'restore_points = { random_within = "1d", every = "7d" }',
            "field restore_points: every (604800s) is longer than random_within (86400s)",
        ),
        ('restore_points = { every = "1d" }', "field restore_points.random_within: required field is missing"),
        (
            'restore_points = { random_within = "30d", every = "10m" }',
            "field restore_points.every: Input should be greater than or equal to 3600",
        ),
        ('retention_target = "two weeks"', "field retention_target: expected a number of seconds or a string like"),
        ('freshness_query = ""', "field freshness_query: String should have at least 1 character"),
    ],
)
def test_catalogue_errors_name_entry_and_field(tmp_path, line, message):
    from drillbook.tasks.config import load_catalogue

    path = tmp_path / "drillbook.toml"
    path.write_text(f'[[database]]\nname = "orders"\nreplica = "file:///srv/r"\nrto_target = "1m"\nrpo_target = "1m"\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert f"database[0] 'orders': {message}" in str(caught.value)


def test_reports_show_both_rpo_figures_and_the_point():
    from drillbook.tasks.freshness import FreshnessReport
    from drillbook.tasks.integrity import IntegrityReport
    from drillbook.tasks.replica import ReplicaState
    from drillbook.tasks.report.drill import headline
    from drillbook.tasks.report.slack import drill_blocks
    from tests.verdicts import judged

    ok = dict(status=Status.PASSED, seconds=0.1)
    common = dict(
        drill_id="d",
        started_at=NOW,
        finished_at=NOW,
        replica=ReplicaState(**ok),
        restore=RestoreResult(**ok),
        integrity=IntegrityReport(**ok),
    )
    result = judged(_entry(), freshness=FreshnessReport(status=Status.PASSED, data_loss_seconds=30.0), **common)
    assert "*Data loss* 30s (target 10m 00s" in str(drill_blocks(result))
    point = plan_point(_entry(), _at(2.5), LINE, NOW)
    assert headline(judged(_entry(), point=point, **common)).startswith("PASS orders at the point 2026-11-22T12:02:30.000Z: restorable in")


def test_the_live_path_guard_covers_point_restores(tmp_path):
    from drillbook.tasks.replica import ReplicaState
    from drillbook.tasks.restore import RestoreProblem, restore_database

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "orders.db").write_bytes(b"live")
    restored = restore_database(
        _entry(live_path=str(scratch / "orders.db")), ReplicaState(status=Status.PASSED), scratch, ["-txid", "0000000000000002"]
    )
    assert (restored.status, restored.problem) == (Status.ERROR, RestoreProblem.GUARD)
    assert (scratch / "orders.db").read_bytes() == b"live"


def test_a_later_snapshot_does_not_hide_a_gap_before_it():
    gapped = _timeline(_file(9, 1, 2, 1), _file(0, 3, 3, 2), _file(0, 6, 6, 5), _file(9, 1, 6, 6))
    check = plan_point(_entry(), _at(3.5), gapped, NOW)  # TXIDs 4-5 are gone; the snapshot holding them came later
    assert (check.status, check.problem) == (Status.FAILED, PointProblem.GAP)
    assert "missing TXIDs 0000000000000004-0000000000000005" in check.summary
    assert plan_point(_entry(), _at(7), gapped, NOW).status == Status.PASSED  # after the snapshot: restorable
