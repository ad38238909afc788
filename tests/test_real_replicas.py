"""Real replicas drilled by drillbook: busy, compacted, retention-pruned, and written by other litestream versions.

The corpus (drillbook.testing.corpus) is made by the real binaries under a write
workload whose own record is the oracle. No false PASS, no false FAIL: every
replica drills PASS with smoke checks that hold the copy to the workload's newest
commit, and every random point of the busy replica is planned, restored and
checked by drillbook's own steps, the copy then compared with the oracle.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import DatabaseEntry, RestorePoints
from drillbook.tasks.points import PointKind, PointRequest, plan_point, read_timeline, verify_point
from drillbook.tasks.replica import inspect_replica
from drillbook.tasks.restore import restore_database
from drillbook.testing.corpus import OTHER_VERSIONS
from tests.conftest import entry

pytestmark = pytest.mark.slow
POINTS = int(os.environ.get("DRILLBOOK_TRUTH_POINTS", "2"))


def _oracle_checks(workload) -> list[dict]:
    """Smoke checks that pass only on a copy equal to the workload's newest commit (its seq rows are one per commit)."""
    newest = workload.newest.n
    return [
        {"name": "newest commit", "sql": "SELECT max(n) FROM seq", "equals": newest},
        {"name": "every commit", "sql": "SELECT count(*) FROM seq", "equals": newest + 1},
    ]


@pytest.mark.parametrize("which", ["busy-0.5.17", *OTHER_VERSIONS])
def test_every_corpus_replica_drills_pass_with_the_newest_commit(corpus, which, write_catalogue, capsys):
    replica = corpus.busy() if which.startswith("busy") else corpus.written_by(which)
    config = write_catalogue(entry("corpus", replica.url, rpo_target="1d", rto_target="5m", smoke=_oracle_checks(replica.workload)))
    code = main(["run", "corpus", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["verdict"]) == (0, "PASS"), result.get("findings") or result.get("error")
    notes = " ".join(result["notes"])
    if which == "0.3.13":
        assert "litestream 0.3 replica: its newest position is" in notes and "object store's clock" in notes
    else:
        assert result["point"] is None and result["rpo_seconds"] is not None


def test_random_points_of_a_busy_replica_hold_exactly_what_was_committed_by_then(corpus, tmp_path):
    """Random points: each planned from the listing, restored, checked by drillbook, and the copy compared with the oracle.

    POINTS is kept small for the suite's time: a -timestamp restore makes litestream read every listed file's
    metadata (a HEAD per file: over 2,000 on this replica, a minute each against moto on a loaded runner).
    `DRILLBOOK_TRUTH_POINTS=20` runs the issue's twenty.
    """
    replica = corpus.busy()
    workload = replica.workload
    entry_ = DatabaseEntry(
        name="busy", replica=replica.url, rto_target=300, rpo_target=86400, restore_points=RestorePoints(random_within="1d", every="1h")
    )
    state = inspect_replica(entry_)
    assert state.ok, state.summary
    assert state.files >= 1000 and {"0", "1", "9"} <= set(state.levels), state.levels
    timeline, _ = read_timeline(entry_)
    now = datetime.now(UTC)
    rng = random.Random(20261201)
    passed = 0
    for number in range(POINTS):
        check = plan_point(entry_, PointRequest(kind=PointKind.RANDOM), timeline, now, rng=rng)
        if check.status.value != "passed":
            # A point the listing already shows as unprovable (a gap) must be FAILED with a reason, never restored as a PASS.
            assert check.summary and check.problem is not None, check
            continue
        scratch = tmp_path / f"point-{number}"
        scratch.mkdir()
        restored = restore_database(entry_, state, scratch, check.target_args)
        verified = verify_point(check, restored, timeline)
        assert verified.status.value == "passed", (check.target_args, verified.summary)
        landed = workload.identify(restored.path)  # the copy equals one commit exactly, or this raises naming why
        point = check.request.at.timestamp()
        expected = check.expected_time.timestamp()
        assert landed.at <= point, f"point {number}: commit {landed.n} made at {landed.at} is after the point {point}"
        assert landed.at <= expected + 0.001, f"point {number}: commit {landed.n} is after the file the plan chose ({expected})"
        following = next((c for c in workload.commits if c.n == landed.n + 1), None)
        # L0 files only: a compacted file's header carries when it was compacted, later than what it holds.
        previous_file = max((f.time for f in timeline.files if f.level == 0 and f.max_txid < int(check.expected_txid, 16)), default=None)
        if following is not None and previous_file is not None:
            assert following.at > previous_file.timestamp() - 0.001, (
                f"point {number}: the copy stops at commit {landed.n}, but commit {following.n} was already in an earlier file"
            )
        passed += 1
    assert passed >= POINTS * 3 // 4, f"only {passed} of {POINTS} random points were restorable"


@pytest.mark.parametrize("which", ["busy-0.5.17", "0.5.5", "0.5.16"])
def test_the_plan_from_the_listing_is_litestreams_own(corpus, which):
    """The files drillbook plans from its one listing are the files `litestream restore -dry-run` would fetch."""
    from drillbook.tasks.ltx import ltx_files
    from drillbook.tasks.plan import dry_run, plan_from_listing

    replica = corpus.busy() if which.startswith("busy") else corpus.written_by(which)
    entry_ = DatabaseEntry(name="plan", replica=replica.url, rto_target=300, rpo_target=86400)
    state = inspect_replica(entry_)
    ours = plan_from_listing(ltx_files(state.listing))
    theirs = dry_run(entry_)
    assert ours.status.value == theirs.status.value == "passed", (ours.summary, theirs.summary)
    assert [(f.level, f.min_txid, f.max_txid) for f in ours.files] == [(f.level, f.min_txid, f.max_txid) for f in theirs.files]
    assert ours.bytes_to_fetch == theirs.bytes_to_fetch
