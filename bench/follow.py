"""The read-replica and promotion drills, measured: a follower's staleness over a minute of writes, the stall a held
reader causes, and the failover RTO of a promotion.

    .venv/bin/python bench/follow.py [--seconds 60] [--rate 10] [--promotions 5]

A database written `--rate` times a second is replicated by the real
`litestream replicate` (litestream's default 1 s intervals) to moto's S3 server
(a process of its own); a follower (`litestream restore -f -follow-interval 1s`)
is sampled once a second for `--seconds` (tasks/follow.py), then again with a
reader holding a read transaction for the window's second half. Then
`--promotions` promotion drills (tasks/promote.py) of a copy restored from that
replica. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

os.environ.pop("AWS_CA_BUNDLE", None)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="commits a second on the primary")
    parser.add_argument("--promotions", type=int, default=5)
    args = parser.parse_args()

    from drillbook.tasks.config import DatabaseEntry
    from drillbook.tasks.follow import follow_replica
    from drillbook.tasks.follow_reads import percentile
    from drillbook.tasks.promote import promote_copy
    from drillbook.tasks.replica import inspect_replica
    from drillbook.tasks.restore import restore_database
    from drillbook.testing.corpus import S3Target
    from drillbook.testing.primary import FRESHNESS_QUERY, running_primary
    from drillbook.testing.s3 import create_bucket, environment, moto_process, s3_replica_url

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="drillbook-bench-follow-") as tmp, environment(CREDENTIALS), moto_process() as endpoint:
        work = Path(tmp)
        create_bucket(endpoint, "bench")
        target = S3Target(endpoint, "bench", "primary/app.db")
        with running_primary(work / "primary", target, rate=args.rate) as primary:

            def entry(**follow) -> DatabaseEntry:
                return DatabaseEntry(
                    name="app",
                    replica=primary.url,
                    rto_target="5m",
                    rpo_target="5m",
                    freshness_query=FRESHNESS_QUERY,
                    follow={"seconds": args.seconds, "freshness_target": "5s", **follow},
                )

            free = entry()
            scratch = work / f"scratch-{uuid.uuid4().hex[:6]}"
            scratch.mkdir()
            report = follow_replica(free, inspect_replica(free), scratch)
            rows.append(
                (
                    f"follower, {args.seconds:g} s of {args.rate:g} commits/s",
                    f"{report.status.value}: p50 {report.p50}s, p95 {report.p95}s, max {report.max}s over {report.samples} samples "
                    f"({sum(1 for s in report.timeline if s.staleness)} behind the replica's newest TXID)",
                )
            )
            held = entry(hold_reader=True)
            scratch = work / f"scratch-{uuid.uuid4().hex[:6]}"
            scratch.mkdir()
            report = follow_replica(held, inspect_replica(held), scratch)
            probe = report.held
            rows.append(
                (
                    f"follower, reader held for the second half ({args.seconds / 2:g} s)",
                    f"{report.status.value}: free half p50 {report.p50}s / p95 {report.p95}s; held: stalled {probe.stalled_seconds if probe else '-'}s "
                    f"at TXID {probe.txid_at_hold if probe else '-'} while the replica reached {probe.replica_txid_at_release if probe else '-'}, "
                    f"{probe.locked_reads if probe else '-'} fresh reads 'database is locked', moved again "
                    f"{probe.caught_up_seconds if probe else '-'}s after release",
                )
            )
            promotion = DatabaseEntry(
                name="app",
                replica=primary.url,
                rto_target="5m",
                rpo_target="5m",
                failover_rto_target="60s",
                promote={
                    "replica": s3_replica_url(endpoint, "bench", "promoted"),
                    "writes": ["INSERT INTO seq (n, committed_at) VALUES (-1, 0)"],
                },
            )
            times = []
            for _ in range(args.promotions):
                scratch = work / f"scratch-{uuid.uuid4().hex[:6]}"
                scratch.mkdir()
                copy = restore_database(promotion, inspect_replica(promotion), scratch)
                result = promote_copy(promotion, Path(copy.path or ""), scratch)
                if result.failover_rto_seconds is None:
                    rows.append(("promotion", f"{result.status.value}: {result.summary}"))
                    continue
                times.append(result.failover_rto_seconds)
            if times:
                rows.append(
                    (
                        f"promotion failover RTO, {len(times)} drills",
                        f"median {percentile(times, 0.5)}s, max {max(times)}s (each: {', '.join(f'{t:.2f}' for t in times)} s)",
                    )
                )
    print("| case | measured |\n|---|---|")
    for case, measured in rows:
        print(f"| {case} | {measured} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
