"""Inspection and point planning on replicas of 100 to 100,000 LTX files, beside litestream's own listing.

    python bench/replicas.py [--sizes 100,1000,10000,100000] [--dir /tmp/drillbook-bench-replicas]

Synthetic file:// replicas (valid 100-byte LTX headers, levels 0-3 and 9 in the
proportions of a compacted replica; synthetic keys are fine for a listing and
header benchmark). Each measurement runs in a fresh process, so its peak RSS is
its own. Targets (issue "Real replicas"): inspection + plan within 1.5x of
`litestream ltx -level all` on the same replica; a `--at` plan under 1 s at
100,000 files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, resource
from datetime import UTC, datetime, timedelta
what, url = sys.argv[1], sys.argv[2]
from drillbook.tasks.config import DatabaseEntry
entry = DatabaseEntry(name="bench", replica=url, rto_target=60, rpo_target=60)
started = time.perf_counter()
if what == "inspect":
    from drillbook.tasks.replica import inspect_replica
    state = inspect_replica(entry)
    extra = {"files": state.files, "ok": state.ok}
else:
    from drillbook.tasks.points import PointKind, PointRequest, plan_point, read_timeline
    timeline, _ = read_timeline(entry)
    reads = [0]
    for f in timeline.files:
        reader = f._reader
        def counted(p, reader=reader):
            reads[0] += 1
            return reader(p)
        f._reader = counted
    newest = timeline.newest
    moment = newest.listed - (newest.listed - min(f.listed for f in timeline.files)) / 3
    check = plan_point(entry, PointRequest(kind=PointKind.AT, at=moment), timeline, datetime.now(UTC))
    extra = {"status": check.status.value, "header_reads": reads[0]}
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def make_replica(root: Path, count: int) -> None:
    """`count` LTX files: a level-0 file per TXID, every 10 compacted into L1, every 100 into L2, 1,000 into L3, a snapshot per 5,000."""
    if root.exists():
        shutil.rmtree(root)
    start = 1_700_000_000_000
    made = 0

    def write(level: int, low: int, high: int, millis: int) -> None:
        nonlocal made
        folder = root / "ltx" / str(level)
        folder.mkdir(parents=True, exist_ok=True)
        header = b"LTX1" + struct.pack(">IIIQQq", 0, 4096, 1, low, high, millis)
        path = folder / f"{low:016x}-{high:016x}.ltx"
        path.write_bytes(header.ljust(100, b"\0"))
        os.utime(path, (millis / 1000, millis / 1000))
        made += 1

    txid = 0
    while made < count:
        txid += 1
        write(0, txid, txid, start + txid * 1000)
        for level, span in ((1, 10), (2, 100), (3, 1000)):
            if txid % span == 0 and made < count:
                write(level, txid - span + 1, txid, start + txid * 1000 + 500 * level)
        if txid % 5000 == 1 and made < count:
            write(9, 1, txid, start + txid * 1000 + 900)


def run_child(what: str, url: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, what, url], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def litestream_listing(url: str) -> tuple[float, float]:
    from drillbook.tasks.litestream import find_litestream, litestream_env

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [find_litestream(), "ltx", "-level", "all", url], capture_output=True, text=True, env=litestream_env(), timeout=1800
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"litestream ltx failed: {done.stderr[-500:]}")
    return seconds, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--dir", default="/tmp/drillbook-bench-replicas")
    args = parser.parse_args()
    rows = []
    for count in [int(s) for s in args.sizes.split(",")]:
        root = Path(args.dir) / f"r{count}"
        make_replica(root, count)
        url = f"file://{root}"
        ltx_seconds, ltx_rss = litestream_listing(url)
        inspect = run_child("inspect", url)
        plan = run_child("plan", url)
        rows.append((count, ltx_seconds, ltx_rss, inspect, plan))
    print(
        f"{'LTX files':>10} | {'litestream ltx':>14} | {'inspect':>8} | {'--at plan':>9} | {'header reads':>12} | {'inspect+plan':>12} | {'ratio':>6} | {'peak RSS (inspect / plan)':>25}"
    )
    print("-" * 118)
    for count, ltx_seconds, _rss, inspect, plan in rows:
        both = inspect["seconds"] + plan["seconds"]
        print(
            f"{count:>10,} | {ltx_seconds:>13.2f}s | {inspect['seconds']:>7.2f}s | {plan['seconds']:>8.2f}s | {plan['header_reads']:>12} | "
            f"{both:>11.2f}s | {both / ltx_seconds:>5.2f}x | {inspect['rss_mb']:>11.0f} MB / {plan['rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
