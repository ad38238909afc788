"""Discovery of a tenant fleet ([[directories]]): time and listing requests for 10,000 tenant prefixes, moto and file://.

    python bench/discovery.py [--tenants 10000] [--files 3] [--dir /tmp/drillbook-bench-discovery]

A listing benchmark: the tenants are hand-written minimal objects in litestream 0.5's layout (`t00001.db/0000/<min>-<max>.ltx`
on S3, `ltx/0/` on disk; a byte each, `--files` per tenant, a tenth of them one folder down in seven `team-N/`), not
replicas; discovery never opens them. Compared:
drillbook's discovery as it runs (the folders below the prefix: S3 `Delimiter='/'` with CommonPrefixes, os.scandir of
one directory level), and the listing of every object it replaced (what a store without folders still gets). S3 runs
against moto's server in its own process on loopback; requests are counted from botocore's events, file:// requests as
os.scandir calls. Each way is run three times on a warm store; the table shows the median.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from drillbook.tasks.config.directory import DirectoryEntry, discovery, forget_discoveries, tenant_prefixes
from drillbook.tasks.storage import open_storage
from drillbook.testing.corpus import CREDENTIALS, s3_client
from drillbook.testing.s3 import environment, moto_process, s3_replica_url


def tenant_keys(tenants: int, files: int, level: str) -> list[str]:
    """The keys litestream 0.5 writes: `<tenant>/<level>/<min>-<max>.ltx`, the level `ltx/0` on disk, `0000` on S3."""
    keys = []
    for number in range(1, tenants + 1):
        folder = f"team-{number % 7}/" if number % 10 == 0 else ""
        keys += [f"{folder}t{number:05d}.db/{level}/{index:016x}-{index:016x}.ltx" for index in range(1, files + 1)]
    return keys


def make_s3(endpoint: str, keys: list[str]) -> None:
    client = s3_client(endpoint)
    client.create_bucket(Bucket="bench")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket="bench", Key=f"fleet/{key}", Body=b"x"), keys))


def make_files(root: Path, keys: list[str]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def counted_scandir() -> list[int]:
    calls = [0]
    real = os.scandir

    def scandir(path=".", _real=real):
        calls[0] += 1
        return _real(path)

    os.scandir = scandir
    return calls


def measure(url: str, count_requests) -> dict[str, tuple[float, int, int]]:
    """way -> (median seconds, requests of one run, databases found)."""
    directory = DirectoryEntry(name="bench", replica=url, rto_target=60, rpo_target=60, recursive=True)
    out = {}
    for way in ("folders", "every object"):
        times, found, requests = [], 0, 0
        for _ in range(3):
            forget_discoveries()
            before = count_requests()
            started = time.perf_counter()
            if way == "folders":
                result = discovery(directory, "bench")
                assert result.problem is None, result.problem
                found = len(result.entries)
            else:
                found = len(tenant_prefixes(item.key for item in open_storage(url, timeout=120).list("")))
            times.append(time.perf_counter() - started)
            requests = count_requests() - before
        out[way] = (statistics.median(times), requests, found)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=3, help="ltx objects per tenant (default 3)")
    parser.add_argument("--dir", default="/tmp/drillbook-bench-discovery", help="where the file:// fleet is written")
    args = parser.parse_args()
    keys = tenant_keys(args.tenants, args.files, "ltx/0")
    rows = []

    root = Path(args.dir)
    started = time.perf_counter()
    make_files(root, keys)
    print(f"file://: {len(keys)} files written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    calls = counted_scandir()
    for way, (seconds, requests, found) in measure(root.as_uri(), lambda: calls[0]).items():
        rows.append(("file://", way, seconds, requests, found))

    keys = tenant_keys(args.tenants, args.files, "0000")
    with environment(CREDENTIALS), moto_process() as endpoint:
        started = time.perf_counter()
        make_s3(endpoint, keys)
        print(f"moto: {len(keys)} objects written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        url = s3_replica_url(endpoint, "bench", "fleet")
        listings = [0]
        client = open_storage(url, timeout=120)._client()  # the cached client discovery uses
        client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: listings.__setitem__(0, listings[0] + 1))
        for way, (seconds, requests, found) in measure(url, lambda: listings[0]).items():
            rows.append(("s3 (moto)", way, seconds, requests, found))
    shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.tenants} tenants, {args.files} ltx object(s) each ({len(keys)} objects)\n")
    print("| store | listing | seconds (median of 3) | requests | databases |")
    print("|---|---|---:|---:|---:|")
    for store, way, seconds, requests, found in rows:
        print(f"| {store} | {way} | {seconds:.3f} | {requests} | {found} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
