"""What one replication watch costs: CPU per database and wall time for a fleet, in one process.

    .venv/bin/python bench/watch.py [--databases 1000] [--s3 100] [--workers 32]

One sample database is replicated with the real `litestream replicate -once` to a
file:// replica, and that replica directory is copied `--databases` times
(synthetic replicas: the watch reads a listing and one LTX header, so copies cost
what the real thing costs). Every catalogue entry has live_path and
freshness_query set, so each check also runs the read-only query on the live
database. Then `--s3` copies go to moto's S3 server on loopback, run as a process of
its own so that the CPU counted is drillbook's (the listing, the header read, boto3).

Targets: under 50 ms of CPU per database per check; 1,000 databases in one
check under one minute on one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

os.environ.pop("AWS_CA_BUNDLE", None)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def _catalogue(tmp: Path, replicas: list[str], live: Path):
    from drillbook.tasks.config import load_catalogue

    lines = ["[drillbook]", f'evidence_dir = "{tmp / "evidence"}"', f'scratch_dir = "{tmp / "scratch"}"']
    for index, url in enumerate(replicas):
        lines += ["", "[[database]]", f'name = "db{index:04d}"', f'replica = "{url}"', 'rto_target = "5m"', 'rpo_target = "10m"']
        lines += [f'live_path = "{live}"', 'freshness_query = "SELECT max(at) FROM events"']
    path = tmp / f"drillbook-{len(replicas)}.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_catalogue(str(path))


def _measure(label: str, catalogue, workers: int) -> tuple[str, int, float, float, float, dict[str, int]]:
    from drillbook.tasks.watch import watch_database, watch_databases

    sample = catalogue.database[: min(20, len(catalogue.database))]
    watch_database(sample[0])  # warm: imports and the one boto3 client per endpoint, paid once per process
    cpu = time.process_time()
    for entry in sample:  # one after another: the CPU one check costs
        watch_database(entry)
    per_db_sequential = (time.process_time() - cpu) / len(sample)
    cpu, wall = time.process_time(), time.perf_counter()
    statuses = watch_databases(catalogue, workers=workers)
    wall = time.perf_counter() - wall
    per_db_fleet = (time.process_time() - cpu) / len(statuses)
    states: dict[str, int] = {}
    for status in statuses:
        states[status.replication.value] = states.get(status.replication.value, 0) + 1
    return label, len(statuses), per_db_sequential, per_db_fleet, wall, states


@contextlib.contextmanager
def moto_process():
    """moto's S3 server in a process of its own (the in-process server's CPU would count as the watch's)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=1000)
    parser.add_argument("--s3", type=int, default=100, help="replicas on moto's S3 (0: skip)")
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()

    from drillbook.testing.s3 import create_bucket, environment, replicate_once, s3_replica_url

    rows = []
    with tempfile.TemporaryDirectory(prefix="drillbook-bench-watch-") as tmp_name:
        tmp = Path(tmp_name)
        live = tmp / "live.db"
        connection = sqlite3.connect(live)
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
        connection.executemany("INSERT INTO events (at) VALUES (?)", [(datetime.now(UTC).isoformat(),)] * 1000)
        connection.commit()
        connection.close()
        seed = tmp / "replicas" / "seed"
        replicate_once(live, f"file://{seed}")
        urls = []
        for index in range(args.databases):
            target = tmp / "replicas" / f"r{index:04d}"
            shutil.copytree(seed, target)
            urls.append(f"file://{target}")
        rows.append(_measure("file://", _catalogue(tmp, urls, live), args.workers))

        if args.s3:
            with environment(CREDENTIALS), moto_process() as endpoint:
                create_bucket(endpoint, "bench")
                first = s3_replica_url(endpoint, "bench", "r0000/app.db")
                replicate_once(live, first)
                import boto3

                client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
                keys = [o["Key"] for o in client.list_objects_v2(Bucket="bench", Prefix="r0000/")["Contents"]]
                s3_urls = [first]
                for index in range(1, args.s3):
                    for key in keys:
                        client.copy_object(
                            Bucket="bench", Key=key.replace("r0000/", f"r{index:04d}/", 1), CopySource={"Bucket": "bench", "Key": key}
                        )
                    s3_urls.append(s3_replica_url(endpoint, "bench", f"r{index:04d}/app.db"))
                rows.append(_measure("s3 (moto on loopback)", _catalogue(tmp, s3_urls, live), args.workers))

    print(f"{'replicas':<26} {'databases':>9} {'CPU/db one by one':>18} {'CPU/db in fleet':>16} {'fleet wall':>11}  states")
    for label, count, sequential, fleet, wall, states in rows:
        print(f"{label:<26} {count:>9} {sequential * 1000:>15.1f} ms {fleet * 1000:>13.1f} ms {wall:>9.2f} s  {states}")
    print(f"targets: < 50 ms CPU per database; {args.databases} databases under 60 s (os.cpu_count() = {os.cpu_count()})")


if __name__ == "__main__":
    main()
