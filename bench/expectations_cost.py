"""What the expectations stage costs: the demo suite on the demo database, and per expectation on ~1M rows.

    .venv/bin/python bench/expectations_cost.py [--orders 1000000] [--keep DIR]

Prints a table; results are not committed (bench/results/ is ignored).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from drillbook.testing.sample import make_sample_database

ROOT = Path(__file__).resolve().parent.parent


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000, help="rows in orders for the large database (default 1,000,000)")
    parser.add_argument("--keep", help="directory for the databases (reused when present)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="drillbook-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    _, import_seconds = timed(lambda: __import__("great_expectations"))
    from drillbook.tasks.expectations import load_suite, run_expectations

    suite_paths = sorted((ROOT / "expectations" / "demo-orders").glob("*.json"))
    demo_db = work / "demo.db"
    if not demo_db.exists():
        make_sample_database(demo_db)
    suites, load_seconds = timed(lambda: [load_suite(p) for p in suite_paths])
    report, run_seconds = timed(lambda: run_expectations(demo_db, suites))
    count = sum(len(s) for s in suites)
    print(f"demo suite ({count} expectations, {demo_db.stat().st_size / 1e6:.1f} MB database): status {report.status.value}")
    print(f"  import great_expectations  {import_seconds:7.2f}s  (once per process)")
    print(f"  load suites                {load_seconds:7.2f}s")
    print(f"  run (stage 'seconds')      {run_seconds:7.2f}s  (reported {report.seconds:.2f}s)")

    big = work / f"orders-{args.orders}.db"
    if not big.exists():
        customers = max(1, args.orders // 3)
        _, build = timed(lambda: make_sample_database(big, customers=customers, orders_per_customer=3))
        print(f"\nbuilt {big} in {build:.0f}s")
    import sqlite3

    with sqlite3.connect(f"file:{big}?mode=ro", uri=True) as connection:
        counts = {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("customers", "orders", "order_items")}
    print(f"\nlarge database: {big.stat().st_size / 1e6:.0f} MB, rows {json.dumps(counts)}")
    print(f"{'expectation':<68} {'table':<12} {'rows':>10} {'seconds':>8}")
    total = 0.0
    for suite in suites:
        for raw, table in zip(suite.expectations, suite.tables):
            single = type(suite)(path=suite.path, name=suite.name, expectations=[raw], tables=[table])
            one, seconds = timed(lambda single=single: run_expectations(big, [single]))
            total += seconds
            column = raw["kwargs"].get("column")
            label = raw["type"] + (f"({column})" if column else "")
            flag = "" if one.status.value == "passed" else f"  [{one.status.value}]"
            print(f"{label:<68} {table:<12} {counts[table]:>10,} {seconds:>8.2f}{flag}")
    whole, whole_seconds = timed(lambda: run_expectations(big, suites))
    print(f"{'sum of the above, one at a time':<92} {total:>8.2f}")
    print(f"{'whole suite in one stage (one batch per table)':<92} {whole_seconds:>8.2f}  [{whole.status.value}]")


if __name__ == "__main__":
    main()
