"""What a random-point drill adds to a nightly: the same nightly with and without restore_points, on one database.

    .venv/bin/python bench/points_cost.py [--customers 20000] [--files 20] [--repeats 3]

The database (the sample orders schema) is replicated with the real `litestream replicate -once`
to moto's S3 server on loopback, `--files` times with a write in between, so the replica holds
that many LTX files (the point phase reads every LTX header). Prints the nightly's wall time
with and without the random-point drill, the extra drill's own seconds and its point phase.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="drillbook-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.pop("AWS_CA_BUNDLE", None)

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20000, help="sample database size (20,000 customers: about 10 MB)")
    parser.add_argument("--files", type=int, default=20, help="LTX files on the replica")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from drillbook.flows.nightly import nightly_drills
    from drillbook.testing.s3 import create_bucket, environment, local_s3, replicate_once, s3_replica_url
    from drillbook.testing.sample import make_sample_database

    work = Path(tempfile.mkdtemp(prefix="drillbook-bench-points-"))
    with environment(CREDENTIALS), local_s3() as endpoint, prefect_test_harness(server_startup_timeout=120):
        create_bucket(endpoint, "bench")
        live = make_sample_database(work / "live.db", customers=args.customers)
        url = s3_replica_url(endpoint, "bench", "orders/app.db")
        connection = sqlite3.connect(live)
        for step in range(args.files):
            connection.execute("UPDATE customers SET name = name || '.' WHERE id = ?", (step + 1,))
            connection.commit()
            replicate_once(live, url)
            time.sleep(1.05)
        connection.close()

        def catalogue(name: str, extra: str) -> Path:
            path = work / f"{name}.toml"
            path.write_text(
                f'[drillbook]\nevidence_dir = "{work / name}-evidence"\nscratch_dir = "{work / "scratch"}"\n\n'
                f'[[database]]\nname = "orders"\nreplica = "{url}"\nrto_target = "5m"\nrpo_target = "1d"\n{extra}'
            )
            return path

        plain = catalogue("plain", "")
        rows = []
        for repeat in range(args.repeats):
            # A fresh history each time, so the random point is always due.
            points = catalogue(f"points{repeat}", 'restore_points = { random_within = "1d", every = "1d" }\n')
            started = time.perf_counter()
            nightly_drills(config_path=str(plain))
            without = time.perf_counter() - started
            started = time.perf_counter()
            results = nightly_drills(config_path=str(points))
            with_points = time.perf_counter() - started
            extra = results[-1]
            assert extra.point is not None and extra.passed, extra.findings
            rows.append(
                (without, with_points, (extra.finished_at - extra.started_at).total_seconds(), extra.point.seconds, extra.restore.seconds)
            )
        print(
            f"one database, {args.customers:,} customers ({live.stat().st_size / 1e6:.1f} MB), {args.files} LTX files, {args.repeats} repeats (median)"
        )
        names = ("nightly without s", "nightly with random point s", "point drill s", "point phase s", "its restore s")
        for index, name in enumerate(names):
            print(f"  {name:30} {statistics.median(r[index] for r in rows):7.2f}")
        print(f"  {'added to the nightly s':30} {statistics.median(r[1] - r[0] for r in rows):7.2f}")


if __name__ == "__main__":
    main()
