"""Two writers on one replica: the real litestream's takeovers found and named; a clean busy replica not flagged."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.lineage import carry, judged_now, marks_of, recorded_next
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.ltx import LtxFile, LtxLineage
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.writers import SHORT_HISTORY, check_writers, find_forks, overlapping_compactions, read_plan
from drillbook.testing.corpus import S3Target
from drillbook.testing.takeover import Replicating, Writer, build_takeover
from tests.conftest import entry

SALT = 0x57A0CF3B


def header(txid: int, *, salt1: int = SALT, salt2: int = 7, offset: int = 0, size: int = 8240, commit: int = 20, ms: int = 0):
    return LtxLineage(2, commit, txid, txid, 1_700_000_000_000 + (ms or txid * 100), 0, offset or 32 + txid * 8240, size, salt1, salt2)


# --- the rules, on headers as litestream 0.5.17 writes them ---------------------------------------------------------


def test_one_writer_through_checkpoints_and_a_restart_is_not_a_fork():
    headers = [header(n) for n in range(1, 20)]
    headers += [header(n, salt1=SALT + 1, salt2=99) for n in range(20, 30)]  # a checkpoint restarted the WAL: salt-1 + 1
    headers += [header(n, salt1=0x12345678, salt2=5, commit=21) for n in range(30, 35)]  # restarted after every connection closed
    forks, notes, lineages = find_forks(headers)
    assert forks == [] and lineages == 3
    assert notes == [
        "TXID 000000000000001e starts a new WAL (litestream lost its WAL position: restarted after every connection closed, "
        "or another writer took over from the same position); no second writer shows in the headers"
    ]


def test_forks_are_named_by_txid():
    takeover = [header(n) for n in range(1, 10)] + [header(10, salt1=0x0BADF00D, commit=15)] + [header(11, salt1=0x0BADF00D, commit=15)]
    returned = takeover + [header(12, commit=22)]  # the first writer's WAL again
    forks, _, _ = find_forks(returned)
    assert [(f.kind, f.txid) for f in forks] == [("older copy took over", "000000000000000a"), ("lineage returned", "000000000000000c")]
    assert "a whole database of 15 pages after 20 pages at TXID 0000000000000009" in forks[0].detail
    assert (
        "continues the WAL that wrote up to TXID 0000000000000009, after another WAL wrote TXIDs up to 000000000000000b" in forks[1].detail
    )

    interleaved = [header(1), header(2, ms=5000), LtxLineage(2, 20, 2, 3, 1_700_000_000_100, 0, 40000, 8240, SALT, 7)]
    kinds = [f.kind for f in find_forks(interleaved)[0]]
    assert kinds == ["TXIDs overlap", "time went backwards"]


# --- across drills: the lineage each drill records, set before the next drill's headers --------------------------------


def _across(recorded, headers, newest=None):
    carried = carry(recorded, headers, newest if newest is not None else max(h.max_txid for h in headers))
    forks, _notes, _lineages = find_forks(carried.sequence, gaps=carried.gaps(frozenset()))
    return judged_now(forks, carried), carried


def test_an_old_primary_returning_after_retention_removed_the_other_writers_files_is_seen_across_drills():
    a = [header(n) for n in range(1, 11)]
    b = [header(n, salt1=0x0BADF00D, salt2=3) for n in range(11, 21)]
    recorded = marks_of(a + b)  # what the drills of last night and this morning saw, before L0 retention removed B's files
    assert [(m.salts, m.first_txid, m.last_txid) for m in recorded] == [(f"{SALT:08x}-00000007", 1, 10), ("0badf00d-00000003", 11, 20)]

    forks, carried = _across(recorded, [header(n) for n in range(21, 26)])  # tonight only A's new files are left at L0
    assert [(f.kind, f.txid) for f in forks] == [("lineage returned", "0000000000000015")]

    assert _across(marks_of(a), [header(n) for n in range(11, 16)])[0] == []  # one writer, seen by two drills: no fork
    checkpointed = [header(n, salt1=SALT + 1, salt2=99) for n in range(11, 16)]
    assert _across(marks_of(a), checkpointed)[0] == []  # a checkpoint between the drills: no fork
    again, _ = _across(marks_of(a + b + [header(n) for n in range(21, 26)]), [header(n) for n in range(26, 30)])
    assert again == []  # a fork among the recorded runs alone was named by the drill that saw it, not every night after
    assert [(m.first_txid, m.last_txid) for m in recorded_next(carried, recorded, 25)] == [(1, 10), (11, 20), (21, 25)]


def test_a_replica_that_went_back_or_was_rewritten_is_named_and_the_next_drill_starts_from_it():
    recorded = marks_of([header(n) for n in range(1, 51)])
    carried = carry(recorded, [header(n, salt1=0x0BADF00D) for n in range(1, 21)], 20)  # the prefix replicated anew
    assert "history went back" not in carried.rewritten[0] and "the history was rewritten" in carried.rewritten[0]
    assert carried.went_back.startswith("the replica ends at TXID 0000000000000014, and an earlier drill saw TXID 0000000000000032")
    following = recorded_next(carried, recorded, 20)
    assert max(m.last_txid for m in following) == 20  # tomorrow's drill judges from tonight's state, once
    assert carry(following, [header(n, salt1=0x0BADF00D) for n in range(21, 25)], 24).went_back is None


def test_the_read_plan_reads_a_short_history_whole_and_of_a_long_one_the_whole_database_files():
    def l0(txid: int, size: int) -> LtxFile:
        return LtxFile(level=0, min_txid=f"{txid:016x}", max_txid=f"{txid:016x}", size=size, timestamp=datetime.now(UTC))

    short = [l0(n, 4000) for n in range(1, SHORT_HISTORY + 1)]
    assert read_plan(short) == (short, frozenset())
    busy = [l0(n, 4000 + n % 7) for n in range(1, 501)]
    busy[199] = l0(200, 60_000)  # a WAL started anew with a whole database (a takeover, a return, a restart)
    chosen, gaps = read_plan(busy)
    assert [int(f.min_txid, 16) for f in chosen] == [199, 200, 500] and gaps == frozenset({2})
    assert [int(f.min_txid, 16) for f in read_plan(busy, limit=2)[0]] == [200, 500]

    # Across a gap a new WAL is a checkpoint's business, not a takeover: only the returning WAL is still a fork.
    headers = [header(199), header(200, salt1=0x0BADF00D, commit=25), header(500, salt1=0x0BADF00D + 3, commit=19)]
    assert find_forks(headers, gaps=frozenset({2}))[0] == []
    returned = [header(199), header(200, salt1=0x0BADF00D, commit=25), header(500, commit=19)]
    assert [f.kind for f in find_forks(returned, gaps=frozenset({2}))[0]] == ["lineage returned"]


def test_compactions_that_overlap_are_two_writers_but_snapshots_are_not():
    def f(level: int, low: int, high: int) -> LtxFile:
        return LtxFile(level=level, min_txid=f"{low:016x}", max_txid=f"{high:016x}", size=1, timestamp=datetime.now(UTC))

    clean = [f(1, 1, 10), f(1, 11, 56), f(1, 57, 93), f(2, 1, 56), f(9, 1, 10), f(9, 1, 93)]
    assert overlapping_compactions(clean) == []
    (fork,) = overlapping_compactions([*clean, f(1, 57, 106)])
    assert (fork.kind, fork.txid) == ("compactions overlap", "0000000000000039")
    assert fork.detail.startswith("L1 files 0000000000000039-000000000000005d and 0000000000000039-000000000000006a overlap")


# --- the real litestream ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_writer_and_the_old_primary_returning_are_writer_lease_confusion(capsys, s3_endpoint, write_catalogue, tmp_path):
    target = S3Target(s3_endpoint, "drills", f"takeover-{uuid.uuid4().hex[:8]}/app.db")
    made = build_takeover(target, tmp_path / "writers")
    config = write_catalogue(entry("orders", target.url, rpo_target="1h"))

    code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 1, result
    assert result["failure_mode"] == "writer lease confusion"
    assert "fence the old writer" in result["action"]
    details = " | ".join(f["detail"] for f in result["findings"] if f["mode"] == "writer lease confusion")
    assert f"TXID {made.copy_took_over} starts a new WAL with a whole database" in details  # B, restored older, took over
    assert f"TXID {made.old_primary_returned} continues the WAL that wrote up to TXID" in details  # A came back
    assert result["phases"]["writers"]["status"] == "failed"
    assert made.copy_took_over in result["phases"]["writers"]["summary"]
    assert result["phases"]["restore"]["status"] == "passed"  # the restore itself works: it silently holds A's state


@pytest.mark.slow
def test_a_clean_busy_replica_with_compaction_and_retention_is_not_flagged(corpus):
    busy = corpus.busy()
    database = DatabaseEntry(name="busy", replica=busy.url, rto_target=600, rpo_target=86400, inspect_timeout=300)
    replica = inspect_replica(database)
    assert replica.ok, replica.summary
    started = time.monotonic()
    check = check_writers(database, replica)
    took = time.monotonic() - started
    assert check.status == "passed", [f.detail for f in check.forks[:5]]
    assert check.forks == [] and check.lineages >= 1
    assert check.l0_files >= 500 and 1 <= check.headers_read < check.l0_files  # the read plan, not one read per file
    assert int(replica.listing and min(int(f.key.rsplit("/", 1)[-1][:16], 16) for f in replica.listing if f.key.startswith("0000/"))) > 1
    assert took < 120, f"reading {check.headers_read} L0 headers took {took:.0f}s"


@pytest.mark.slow
def test_an_old_primary_returning_is_seen_across_drills_after_l0_retention_removed_the_takeover(
    capsys, s3_endpoint, write_catalogue, tmp_path
):
    """Real litestream with a 2-second l0-retention: by the third drill the takeover's L0 files are gone, and only the
    lineage the drills between recorded in the history shows that the old primary's WAL came back."""
    target = S3Target(s3_endpoint, "drills", f"across-{uuid.uuid4().hex[:8]}/app.db")
    workdir = tmp_path / "writers"
    workdir.mkdir()
    quick_retention = "l0-retention: 2s\nl0-retention-check-interval: 1s\n"
    config = write_catalogue(entry("orders", target.url, rpo_target="1h"))

    def drill() -> dict:
        code = main(["run", "orders", "--config", str(config), "--json"])
        said = capsys.readouterr()
        assert code in (0, 1), (code, said.out[:300], said.err[-1500:])
        return json.loads(said.out)

    a = Writer(workdir / "a.db", "A")
    try:
        with Replicating("a1", workdir / "a.db", target, workdir, settings=quick_retention):
            a.write_for(3)
        first = drill()
        assert first["phases"]["writers"]["status"] == "passed", first["phases"]["writers"]
        restored = run_litestream(["restore", "-o", str(workdir / "b.db"), target.url], timeout=120).record
        assert restored.ok, restored.stderr_tail()
        b = Writer(workdir / "b.db", "B")
        try:
            with Replicating("b", workdir / "b.db", target, workdir, settings=quick_retention):
                b.write_for(3)
        finally:
            b.close()
        second = drill()
        assert second["phases"]["writers"]["status"] == "passed", second["phases"]["writers"]  # a new WAL from the same position
        recorded = second["writer_lineage"]["runs"]
        assert len({mark["salts"] for mark in recorded}) >= 2, recorded  # A's and B's, A's carried from the first drill
        with Replicating("a2", workdir / "a.db", target, workdir, settings=quick_retention):
            a.write_for(4)
        time.sleep(3)  # retention: what is left at L0 is A's newest
    finally:
        a.close()

    third = drill()

    writers = third["phases"]["writers"]
    assert writers["status"] == "failed", (writers, third["notes"])
    assert third["failure_mode"] == "writer lease confusion"
    details = " | ".join(f["detail"] for f in third["findings"] if f["mode"] == "writer lease confusion")
    assert "continues the WAL that wrote up to TXID" in details, details
    assert any("earlier drills recorded, whose L0 files are gone" in note for note in third["notes"]), third["notes"]
