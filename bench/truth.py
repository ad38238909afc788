"""The truth over twenty random points: a busy replica written by the real litestream, each point restored and compared.

    .venv/bin/python bench/truth.py [--points 20] [--seconds 170] [--seed 20261201]

A workload writes commits (and keeps their oracle: the time and content of each) while `litestream replicate`
ships them with the corpus's shortened intervals (testing/corpus.py busy_config: L0 files every 15 ms, L1-L3
compaction, L9 snapshots, retention deleting the oldest) to a file replica: the store that answers a
`-timestamp` restore's metadata reads fast, where moto takes a minute per point on a loaded runner (the suite
keeps its version of this small: tests/test_real_replicas.py). Then `--points` random points are planned by
drillbook from the listing and the LTX headers, restored with `litestream restore -timestamp`, checked by the
point phase, and the copy compared with the oracle: it must equal one commit exactly, made at or before the
point, with no commit that an earlier file already held missing. Prints a row per point and the totals.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=170.0, help="how long the workload writes (past l0-retention: 150 s)")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()

    from drillbook.tasks.config import DatabaseEntry, RestorePoints
    from drillbook.tasks.points import PointKind, PointRequest, plan_point, read_timeline, verify_point
    from drillbook.tasks.replica import inspect_replica
    from drillbook.tasks.restore import restore_database
    from drillbook.tasks.versions import litestream_binary
    from drillbook.testing.corpus import FileTarget, build_replica, busy_config

    work = Path(tempfile.mkdtemp(prefix="drillbook-truth-"))
    target = FileTarget(work / "replica")
    began = time.monotonic()
    replica = build_replica(
        "0.5.17", litestream_binary("0.5.17"), work / "live", target, config=busy_config, seconds=args.seconds, rate=30.0
    )
    built = time.monotonic() - began
    entry = DatabaseEntry(
        name="busy", replica=target.url, rto_target=300, rpo_target=86400, restore_points=RestorePoints(random_within="1d", every="1h")
    )
    state = inspect_replica(entry)
    if not state.ok:
        print(f"the replica cannot be inspected: {state.summary}")
        return 2
    timeline, _ = read_timeline(entry)
    levels = ", ".join(f"L{level} {count}" for level, count in sorted(state.levels.items()))
    print(f"replica: {state.files:,} LTX files ({levels}), {len(replica.workload.commits):,} commits, built in {built:.0f}s")
    print(f"{'point':>5}  {'asked':<26}  {'expected TXID':<16}  {'copy = commit':>13}  {'seconds':>7}  result")
    rng = random.Random(args.seed)
    matched = unprovable = wrong = 0
    spent = 0.0
    for number in range(args.points):
        check = plan_point(entry, PointRequest(kind=PointKind.RANDOM), timeline, datetime.now(UTC), rng=rng)
        asked = check.request.at.isoformat(timespec="milliseconds") if check.request.at else "-"
        if check.status.value != "passed":
            unprovable += 1
            print(f"{number + 1:>5}  {asked:<26}  {'-':<16}  {'-':>13}  {'-':>7}  not restorable, said: {check.summary[:80]}")
            continue
        scratch = work / f"point-{number}"
        scratch.mkdir()
        started = time.monotonic()
        restored = restore_database(entry, state, scratch, check.target_args)
        seconds = time.monotonic() - started
        spent += seconds
        verified = verify_point(check, restored, timeline)
        verdict, landed = "MATCHES the oracle", None
        try:
            landed = replica.workload.identify(Path(restored.path))
            if verified.status.value != "passed":
                verdict = f"point phase {verified.status.value}: {verified.summary[:60]}"
            elif landed.at > check.request.at.timestamp():
                verdict = f"WRONG: commit {landed.n} was made after the point"
            elif _missing_next(replica.workload, landed, timeline, check):
                verdict = f"WRONG: the copy stops at commit {landed.n}, but the next was already in an earlier file"
        except Exception as exc:  # noqa: BLE001 - a copy that equals no commit is the finding this bench exists for
            verdict = f"WRONG: {exc}"
        matched += verdict == "MATCHES the oracle"
        wrong += verdict != "MATCHES the oracle"
        shown = f"#{landed.n:,}" if landed else "-"
        print(f"{number + 1:>5}  {asked:<26}  {check.expected_txid or '-':<16}  {shown:>13}  {seconds:>7.2f}  {verdict}")
    print(
        f"{args.points} points: {matched} restored and equal to the oracle's commit, {unprovable} refused as not provable, "
        f"{wrong} wrong; {spent:.0f}s of restores, {time.monotonic() - began:.0f}s in all"
    )
    return 1 if wrong else 0


def _missing_next(workload, landed, timeline, check) -> bool:
    """Whether the commit after the copy's was already in an L0 file before the one the plan chose (then it should be there).

    L0 files only: a compacted file's header carries when it was compacted, later than what it holds."""
    following = next((c for c in workload.commits if c.n == landed.n + 1), None)
    earlier = [f.time for f in timeline.files if f.level == 0 and f.max_txid < int(check.expected_txid, 16)]
    return following is not None and bool(earlier) and following.at <= max(earlier).timestamp() - 0.001


if __name__ == "__main__":
    sys.exit(main())
