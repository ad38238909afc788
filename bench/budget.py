"""What choosing a budgeted nightly costs at fleet size (tasks/history/budget.py): ranking, the greedy fill, the night's account,
and the listing step before them (tasks/change.py: one listing per database not due, LISTING_WORKERS at once).

The ranking is in memory, no store: the history read itself is one query (tasks/lookahead.py's HistorySnapshot), measured by
bench/history.py. The listing step reads real replicas: synthetic file:// ones (a snapshot and a few level-0 LTX files each;
requests: directory reads), and with --s3 the same keys in moto's S3 server in its own process (requests: ListObjectsV2
calls, counted from botocore's events).

    python bench/budget.py                    # 1,000 and 10,000 databases, 30 drills each, file:// listings
    python bench/budget.py --fleet 300 --s3   # also on moto
    python bench/budget.py --fleet 10000 --drills 90
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drillbook.tasks.change import read_changes
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.history.budget import Member, candidates, choose, last_drilled_txid, night_of, to_list, with_changes
from drillbook.tasks.history.store import TrendPoint
from drillbook.tasks.storage import open_storage
from drillbook.testing.corpus import CREDENTIALS, s3_client
from drillbook.testing.s3 import environment, moto_process, s3_replica_url

NOW = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
LAST_DRILLED = 40  # the TXID every drill in the history restored; each replica holds a snapshot to it and a few L0 files past it


def replica_keys(index: int, level0: Callable[[int], str], snapshot: str) -> list[tuple[str, int]]:
    """One replica's LTX keys and sizes: a snapshot to LAST_DRILLED, then 0 to 6 level-0 files past it."""
    keys = [(f"{snapshot}/{1:016x}-{LAST_DRILLED:016x}.ltx", 40_000)]
    keys += [(f"{level0(0)}/{txid:016x}-{txid:016x}.ltx", 4_096) for txid in range(LAST_DRILLED + 1, LAST_DRILLED + 1 + index % 7)]
    return keys


def make_file_replicas(root: Path, names: list[str]) -> dict[str, str]:
    for index, name in enumerate(names):
        for key, size in replica_keys(index, lambda level: f"ltx/{level}", "ltx/9"):
            path = root / name / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * size)
    return {name: (root / name).as_uri() for name in names}


def make_s3_replicas(endpoint: str, names: list[str]) -> dict[str, str]:
    client = s3_client(endpoint)
    client.create_bucket(Bucket="bench")
    puts = [
        (f"{name}/{key}", size) for index, name in enumerate(names) for key, size in replica_keys(index, lambda lv: f"{lv:04x}", "0009")
    ]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda put: client.put_object(Bucket="bench", Key=put[0], Body=b"\0" * put[1]), puts))
    return {name: s3_replica_url(endpoint, "bench", name) for name in names}


def counted_scandir() -> list[int]:
    """os.scandir counted: a file:// listing's requests are its directory reads."""
    calls, real = [0], os.scandir

    def scandir(path=".", _real=real):
        calls[0] += 1
        return _real(path)

    os.scandir = scandir
    return calls


def counted_listings(client) -> list[int]:
    """ListObjectsV2 calls on this (cached) client: an S3 listing's requests, a page each."""
    calls = [0]
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.__setitem__(0, calls[0] + 1))
    return calls


def listing_step(found, points, urls: dict[str, str], counter: list[int]):
    """The plan's listing step on these replicas: (candidates with their change, seconds, requests, listed, failed)."""
    wanted = set(to_list(found))
    entries = [DatabaseEntry(name=name, replica=urls[name], rto_target=120, rpo_target=600) for name in sorted(wanted)]
    before = counter[0]
    listed = read_changes(entries, {name: last_drilled_txid(points.get(name, [])) for name in wanted})
    return with_changes(found, listed.changes), listed.seconds, counter[0] - before, len(wanted), listed.failed


def history(fleet: int, drills: int, rng: random.Random) -> dict[str, list[TrendPoint]]:
    out = {}
    for index in range(fleet):
        name = f"app-{index:05d}"
        if index % 50 == 0:  # one in fifty never drilled
            continue
        points = []
        for night in range(drills, 0, -1):
            started = NOW - timedelta(days=night * rng.uniform(0.9, 1.1))
            rto = 5 + 0.05 * (drills - night) + rng.uniform(0, 2)
            verdict = "FAIL" if night == 1 and index % 97 == 0 else "PASS"
            points.append(
                TrendPoint(name, f"{name}-{night}", started, verdict, None, rto, 120.0, 1.0, 600.0, None, None, None, None, rto, None,
                           wall_seconds=rto + rng.uniform(1, 4), restored_txid=f"{LAST_DRILLED:016x}")
            )  # fmt: skip
        out[name] = points
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--drills", type=int, default=30, help="drills per database in the history")
    parser.add_argument("--budget", type=float, default=45 * 60)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--s3", action="store_true", help="also list the replicas in moto's S3 server")
    parser.add_argument("--dir", default=None, help="where the file:// replicas are written (default: a temporary folder)")
    args = parser.parse_args()
    rows = []
    work = Path(args.dir or tempfile.mkdtemp(prefix="drillbook-bench-budget-"))
    calls = counted_scandir()
    for fleet in args.fleet:
        points = history(fleet, args.drills, random.Random(fleet))
        names = [f"app-{i:05d}" for i in range(fleet)]
        members = [Member(name, 7 * 86400.0, 120.0) for name in names]
        shutil.rmtree(work / str(fleet), ignore_errors=True)
        urls = make_file_replicas(work / str(fleet), names)
        rows.append(measure("file://", fleet, args, members, points, urls, calls))
        if args.s3:
            with environment(CREDENTIALS), moto_process() as endpoint:
                urls = make_s3_replicas(endpoint, names)
                client = open_storage(urls[names[0]], timeout=60.0)._client()  # the cached client the listings use
                listings = counted_listings(client)
                rows.append(measure("s3 (moto)", fleet, args, members, points, urls, listings))
        shutil.rmtree(work / str(fleet), ignore_errors=True)
    print(
        f"| databases | store | drills each | rank s | listed | listing s | listing requests | failed | choose s | account s "
        f"| chosen | left | due left | coverage (budget {args.budget:g}s x {args.slots}) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def measure(store: str, fleet: int, args, members, points, urls, counter: list[int]) -> list[str]:
    start = time.perf_counter()
    found = candidates(members, points, NOW)
    ranked = time.perf_counter()
    found, seconds, requests, listed, failed = listing_step(found, points, urls, counter)
    start_choose = time.perf_counter()
    plan = choose(found, args.budget, args.slots)
    chose = time.perf_counter()
    night = night_of(plan, dict.fromkeys(plan.chosen, NOW), [], NOW + timedelta(seconds=args.budget))
    done = time.perf_counter()
    return [
        f"{fleet:,}", store, str(args.drills), f"{ranked - start:.2f}", f"{listed:,}", f"{seconds:.2f}", f"{requests:,}", str(failed),
        f"{chose - start_choose:.3f}", f"{done - chose:.3f}", f"{len(plan.chosen):,}", f"{len(plan.left):,}", f"{len(plan.due_left()):,}",
        night.coverage(),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
