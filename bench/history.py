"""How fast are `drillbook history`, `stale`, `metrics` and `report --html` over a big history?

Seeds 100 databases x 365 nightly drills (36,500 rows) through the store's own
API (record_drills), then times each command as an operator runs it: a whole
`drillbook` process, best and median of a few runs. Also times what a drill
adds: the forecast (look_ahead's history read + fit) on that store.

    .venv/bin/python bench/history.py                      # SQLite (the default store)
    .venv/bin/python bench/history.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/history.py --databases 10 --days 30 --repeats 1   # quick

Target: each command under 2 s on the 2-core CI machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drillbook.tasks.result import DrillResult


def catalogue_text(root: Path, databases: int, history_url: str | None) -> str:
    lines = ["[drillbook]", f'evidence_dir = "{root / "evidence"}"', f'scratch_dir = "{root / "scratch"}"']
    if history_url:
        lines.append(f'history_url = "{history_url}"')
    for index in range(databases):
        lines += [
            "",
            "[[database]]",
            f'name = "db-{index:03d}"',
            f'replica = "file://{root}/replicas/db-{index:03d}.db"',
            'rto_target = "2m"',
            'rpo_target = "10m"',
        ]
    return "\n".join(lines) + "\n"


def seeded(databases: int, days: int, now: datetime) -> list[list[DrillResult]]:
    """Per database, a year of nightly drills: slowly growing restores with noise, a few failures."""
    rng = random.Random(7)
    batches = []
    for index in range(databases):
        growth = rng.uniform(-0.02, 0.12)  # seconds per day: most flat, some growing toward the 2 m target
        base = rng.uniform(5, 60)
        size = rng.uniform(50e6, 2e9)
        drills = []
        for day in range(days):
            started = now - timedelta(days=days - day, hours=-2, minutes=-rng.randint(0, 50))
            rto = max(0.5, base + growth * day + rng.gauss(0, 2) + (120 if rng.random() < 0.01 else 0))
            verdict = "PASS" if rto <= 120 and rng.random() > 0.03 else "FAIL"
            drills.append(
                DrillResult.model_validate(
                    {
                        "drill_id": f"b{index:03d}d{day:03d}",
                        "database": f"db-{index:03d}",
                        "started_at": started,
                        "finished_at": started + timedelta(seconds=rto + 2),
                        "verdict": verdict,
                        "failure_mode": None if verdict == "PASS" else "restore lag",
                        "rto_seconds": round(rto, 3),
                        "rto_target_seconds": 120.0,
                        "rpo_seconds": round(rng.uniform(1, 30), 3),
                        "rpo_target_seconds": 600.0,
                        "phases": {
                            "restore": {"status": "passed", "seconds": round(rto * 0.8, 3)},
                            "integrity": {"status": "passed", "seconds": round(rto * 0.2, 3)},
                        },
                        "integrity": {"status": "passed", "file_bytes": int(size * (1 + day / 365))},
                        "evidence": f"/var/lib/drillbook/evidence/db-{index:03d}/{started:%Y%m%dT%H%M%SZ}.json",
                    }
                )
            )
        batches.append(drills)
    return batches


def timed(argv: list[str], repeats: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of the process and its children) per run: CPU is what a busy shared machine does not blur."""
    import resource

    runs = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]}")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server URL; a fresh database is created on it and dropped after")
    args = parser.parse_args()

    from drillbook.tasks.config import load_catalogue
    from drillbook.tasks.forecast import TREND_DAYS, outlook_of
    from drillbook.tasks.history.store import record_drills, trend_points

    root = Path(tempfile.mkdtemp(prefix="drillbook-bench-history-"))
    history_url = None
    drop = None
    if args.postgres:
        import psycopg
        from sqlalchemy.engine import make_url

        server = make_url(args.postgres)
        name = f"drillbook_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg.connect(
            host=server.host, port=server.port or 5432, user=server.username, dbname=server.database or "postgres", autocommit=True
        )
        admin.execute(f'CREATE DATABASE "{name}"')
        history_url = server.set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            admin.close()

    try:
        config = root / "drillbook.toml"
        config.write_text(catalogue_text(root, args.databases, history_url))
        catalogue = load_catalogue(config)
        now = datetime.now(UTC)
        started = time.perf_counter()
        batches = seeded(args.databases, args.days, now)
        built = time.perf_counter() - started
        started = time.perf_counter()
        rows = 0
        for batch in batches:
            rows += record_drills(catalogue.history_url, batch)
        seeding = time.perf_counter() - started
        print(
            f"seeded {rows:,} drills of {args.databases} databases ({args.days} days) into {catalogue.history_url.split('@')[-1]}: "
            f"built in {built:.1f}s, recorded through record_drills in {seeding:.1f}s",
            file=sys.stderr,
        )

        drillbook = str(Path(sys.executable).parent / "drillbook")
        cases = {
            "history (newest 20)": [drillbook, "history", "--config", str(config)],
            "history --json --limit 1000": [drillbook, "history", "--json", "--limit", "1000", "--config", str(config)],
            "stale": [drillbook, "stale", "--config", str(config)],
            "metrics (textfile)": [drillbook, "metrics", "--output", str(root / "drillbook.prom"), "--config", str(config)],
            "report --html": [drillbook, "report", "--html", str(root / "report.html"), "--config", str(config)],
            "drillbook --help (process start)": [drillbook, "--help"],
        }
        results = {name: timed(argv, args.repeats) for name, argv in cases.items()}

        # What a drill adds: look_ahead's history read for one database, and the fit.
        per_drill = []
        for _ in range(max(3, args.repeats)):
            started, cpu = time.perf_counter(), time.process_time()
            points = trend_points(catalogue.history_url, ["db-000"], since=now - timedelta(days=TREND_DAYS))["db-000"]
            outlook_of(catalogue, "db-000", points, 120.0, now)
            per_drill.append((time.perf_counter() - started, time.process_time() - cpu))
        results["a drill's forecast (read + fit, in process)"] = per_drill
    finally:
        if drop:
            drop()

    store = "PostgreSQL" if args.postgres else "SQLite"
    load = os.getloadavg()[0]
    print(
        f"\n{args.databases} databases x {args.days} days ({rows:,} drills), {store}, {args.repeats} runs each (whole process), "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end:\n"
    )
    print("| command | wall s best | wall s median | CPU s median | under 2 s (wall median) |")
    print("|---|---:|---:|---:|---|")
    for name, runs in results.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        median = statistics.median(walls)
        print(f"| {name} | {min(walls):.2f} | {median:.2f} | {statistics.median(cpus):.2f} | {'yes' if median < 2 else 'NO'} |")
    report = root / "report.html"
    if report.exists():
        print(f"\nreport.html: {math.ceil(report.stat().st_size / 1024):,} KB at {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
