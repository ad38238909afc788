"""`report --html`, `stale` and `metrics` for one [[directories]] entry of 10,000 tenants: time, page size, sections.

    python bench/fleet_page.py [--tenants 10000] [--nights 7] [--failing 50] [--repeats 3]

The fleet is hand-made (a listing and history benchmark: one folder per tenant with a one-byte `ltx/` file, never
restored) and its history is seeded through the store's own API: `--nights` nightly PASS drills per tenant, the newest
drill of `--failing` of them a FAIL and a tenth of a percent never drilled. Each command runs as a whole `drillbook`
process; the table shows the median wall seconds and CPU seconds (the CPU is what a shared machine does not blur).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from history import timed  # noqa: E402 - bench/history.py's runner: the same measurement

from drillbook.tasks.history.store import record_drills  # noqa: E402
from drillbook.tasks.result import DrillResult  # noqa: E402


def seed(url: str, tenants: int, nights: int, failing: int, now: datetime) -> int:
    rows = 0
    batch = []
    for index in range(tenants):
        if index % 1000 == 999:  # never drilled
            continue
        for night in range(nights):
            started = now - timedelta(days=nights - 1 - night, hours=1)
            verdict = "FAIL" if night == nights - 1 and index < failing else "PASS"
            batch.append(
                DrillResult.model_validate(
                    {
                        "drill_id": f"t{index:05d}n{night:03d}",
                        "database": f"tenants.t{index:05d}.db",
                        "started_at": started,
                        "finished_at": started + timedelta(seconds=3),
                        "verdict": verdict,
                        "failure_mode": None if verdict == "PASS" else "restore lag",
                        "rto_seconds": 2.0 + (index % 7) / 10,
                        "rto_target_seconds": 120.0,
                        "rpo_seconds": 4.0,
                        "rpo_target_seconds": 600.0,
                    }
                )
            )
        if len(batch) > 5000:
            rows += record_drills(url, batch)
            batch = []
    return rows + record_drills(url, batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--failing", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="drillbook-bench-fleet-page-"))
    for index in range(args.tenants):
        ltx = root / "replica" / f"t{index:05d}.db" / "ltx" / "0"
        ltx.mkdir(parents=True)
        (ltx / "0000000000000001-0000000000000001.ltx").write_bytes(b"x")
    config = root / "drillbook.toml"
    config.write_text(
        f'[drillbook]\nevidence_dir = "{root / "evidence"}"\nscratch_dir = "{root / "scratch"}"\n\n'
        f'[[directories]]\nname = "tenants"\nreplica = "{(root / "replica").as_uri()}"\nrto_target = "2m"\nrpo_target = "10m"\n'
    )
    (root / "evidence").mkdir()
    rows = seed(f"sqlite:///{root / 'evidence' / 'history.db'}", args.tenants, args.nights, args.failing, datetime.now(UTC))
    drillbook = [sys.executable, "-m", "drillbook.cli"]
    page = root / "drills.html"
    cases = {
        "report --html": [*drillbook, "report", "--config", str(config), "--html", str(page)],
        "stale": [*drillbook, "stale", "--config", str(config)],
        "metrics": [*drillbook, "metrics", "--config", str(config), "--output", str(root / "drillbook.prom")],
    }
    results = {name: timed(argv, args.repeats) for name, argv in cases.items()}
    html = page.read_text()
    sections = len(re.findall(r'<section class="db"', html))
    print(f"\n{args.tenants} tenants, {rows} history rows ({args.nights} nights), newest drill FAIL for {args.failing}\n")
    print("| command | wall s (median) | CPU s (median) |")
    print("|---|---:|---:|")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(w for w, _ in runs):.2f} | {statistics.median(c for _, c in runs):.2f} |")
    print(f"\npage: {len(html.encode()) // 1024} KB, {sections} database sections, {html.count('<svg')} charts")
    print(f"metrics file: {(root / 'drillbook.prom').stat().st_size // 1024} KB")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
