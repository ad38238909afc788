"""Two writers on one replica: the real litestream's takeovers found and named; a clean busy replica not flagged."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.ltx import LtxFile, LtxLineage
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.writers import SHORT_HISTORY, check_writers, find_forks, overlapping_compactions, read_plan
from drillbook.testing.corpus import S3Target
from drillbook.testing.takeover import build_takeover
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
