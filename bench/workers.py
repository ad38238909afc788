"""The nightly across 1, 2 and 4 `prefect worker start` processes on a process work pool (issue 31).

    python bench/workers.py                       # 200 small databases, 1, 2 and 4 workers
    python bench/workers.py --databases 1000      # the issue's fleet
    python bench/workers.py --databases 40 --workers 1,2   # minutes, not tens of minutes

A Prefect server on PostgreSQL (a database of its own on 127.0.0.1:5432, user postgres: `bash .ci/postgres`; SQLite
when PostgreSQL is not there, said in the output), the history store in PostgreSQL too, moto's S3 server, and
`deployments/prefect.yaml`'s nightly and batch deployments. The N databases are copies of one small replica written by
`litestream replicate -once` (server-side copies: the fleet is built in seconds). Each worker runs in a working
directory of its own with its own PREFECT_HOME, the catalogue in DRILLBOOK_CONFIG and the shared result storage.

Per worker count, one nightly (`max_concurrent` = `--per-worker` (2) per worker: that many batch runs each, beside the nightly):
wall, drills per second, the Prefect server's CPU per drill, PostgreSQL bytes per drill (Prefect's database and the
history's), the workers' CPU per drill (the workers and every flow run process they ran), the object store's requests per drill, the workers' peak RSS (each worker's
process tree: the worker and the flow runs it started) and the scaling against one worker. On a 2-core machine
the cores bound the scaling: the table says what they allow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: moto, the Prefect server, the small database, the catalogue)

PG = "postgres@127.0.0.1:5432"


def _pg(sql: str, database: str = "postgres") -> list[tuple]:
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/{database}", autocommit=True, connect_timeout=3) as connection:
        cursor = connection.execute(sql)
        return cursor.fetchall() if cursor.description else []


def _pg_up() -> bool:
    try:
        _pg("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - not there: SQLite instead, said in the output
        return False


def _size(database: str) -> int:
    return int(_pg(f"SELECT pg_database_size('{database}')")[0][0])


def start_server(work: Path, database: str | None) -> tuple[subprocess.Popen, str]:
    extra = {"PREFECT_HOME": str(work / "server-home"), "PREFECT_UI_ENABLED": "false"}
    if database:
        extra["PREFECT_API_DATABASE_CONNECTION_URL"] = f"postgresql+asyncpg://{PG}/{database}"
    return bench.start_prefect_server(work, extra_env=extra, log=work / "server.log", timeout=180)


def build_fleet(endpoint: str, work: Path, count: int) -> list[tuple[str, str]]:
    """`count` replicas: one small database replicated once, its objects copied server-side under each name."""
    import boto3

    (work / "template").mkdir()
    db = bench.generate(work / "template" / "app.db", 0.2)
    template = "template/app.db"
    subprocess.run(
        [bench.LITESTREAM, "replicate", "-once", str(db), bench.replica_url(endpoint, template)],
        env=bench.litestream_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **bench._boto_credentials())
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bench.BUCKET, Prefix=template + "/").get("Contents", [])]
    entries = []
    for index in range(count):
        name = f"tenant-{index:05d}"
        bench.copy_replica(client, keys, template, f"fleet/{name}/app.db")
        entries.append((name, bench.replica_url(endpoint, f"fleet/{name}/app.db")))
    return entries


class Sampler(threading.Thread):
    """Peak RSS of each worker's process tree, sampled every 0.1 s."""

    def __init__(self, workers: list[subprocess.Popen]):
        super().__init__(daemon=True)
        self.workers = workers
        self.peaks = [0] * len(workers)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for index, worker in enumerate(self.workers):
                try:
                    root = psutil.Process(worker.pid)
                    total = root.memory_info().rss + sum(child.memory_info().rss for child in root.children(recursive=True))
                    self.peaks[index] = max(self.peaks[index], total)
                except psutil.Error:
                    pass
            self.done.wait(0.1)


def nightly(work: Path, env: dict[str, str], config: Path, count: int, workers: int, stores: dict, per_worker: int = 2) -> dict:
    from prefect.deployments import run_deployment

    worker_cpu = bench._children_cpu()  # the workers and every flow run process they reaped, once they are stopped and reaped
    started_workers = []
    for number in range(1, workers + 1):
        home = work / f"worker-{workers}-{number}"
        home.mkdir()
        worker_env = {**env, "PREFECT_HOME": str(home / "prefect"), "DRILLBOOK_CONFIG": str(config)}
        log = (home / "worker.log").open("w")
        argv = [
            str(bench.BIN / "prefect"),
            "worker",
            "start",
            "--pool",
            "drillbook",
            "--name",
            f"w{workers}-{number}",
            "--limit",
            str(per_worker + 1),
        ]
        started_workers.append(
            subprocess.Popen(argv, cwd=home, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
    time.sleep(3)  # the workers poll the pool; the first poll after start
    sampler = Sampler(started_workers)
    sampler.start()
    server_cpu, store_cpu = bench._server_cpu(), bench._server_cpu(bench.OBJECT_STORE)
    requests_before = _requests(work)
    sizes = {name: _size(db) for name, db in stores.items()}
    rows_before = _rows(stores)
    began = time.monotonic()
    try:
        run = run_deployment(
            "nightly-drills/drillbook-nightly",
            parameters={"config_path": str(config), "max_concurrent": per_worker * workers},
            timeout=7200,
            poll_interval=2,
            as_subflow=False,
        )
        wall = time.monotonic() - began
    finally:
        sampler.done.set()
        sampler.join()
        for worker in started_workers:
            bench.stop(worker)
            worker.wait()
    drilled = _rows(stores) - rows_before
    worker_cpu = bench._children_cpu() - worker_cpu
    server_cpu = bench._server_cpu() - server_cpu
    return {
        "workers": workers,
        "state": run.state.type.value,
        "wall_s": wall,
        "drills": drilled,
        "drills_per_s": drilled / wall,
        "server_cpu_per_drill_s": server_cpu / max(1, drilled),
        "worker_cpu_per_drill_s": worker_cpu / max(1, drilled),
        # The machine's share used by the workers and the server (PostgreSQL and moto not counted): near 1, CPU-bound.
        "cpu_share": (worker_cpu + server_cpu) / (wall * (os.cpu_count() or 1)),
        "store_cpu_per_drill_s": (bench._server_cpu(bench.OBJECT_STORE) - store_cpu) / max(1, drilled),
        "requests_per_drill": (_requests(work) - requests_before) / max(1, drilled),
        "bytes_per_drill": {name: (_size(db) - sizes[name]) / max(1, drilled) for name, db in stores.items()},
        "peak_rss_mb": [round(peak / 1e6) for peak in sampler.peaks],
        "count": count,
    }


def _rows(stores: dict) -> int:
    if "history" in stores:
        return int(_pg("SELECT count(*) FROM drillbook_drills", stores["history"])[0][0])
    return 0


def _requests(work: Path) -> int:
    log = work / "s3.log"
    return sum(1 for line in log.open(errors="replace") if 'HTTP/1.1" ' in line) if log.exists() else 0  # one line a request


def table(rows: list[dict], backend: str) -> str:
    base = rows[0]["drills_per_s"] if rows else 0
    lines = [
        f"Prefect server and history store on {backend}; {os.cpu_count()} cores",
        "| workers | databases | wall s | drills/s | × 1 worker | workers' CPU s/drill | server CPU s/drill | CPU share used "
        "| moto CPU s/drill | S3 requests/drill | Prefect PG bytes/drill | history PG bytes/drill | workers' peak RSS MB | nightly |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        size = row["bytes_per_drill"]
        lines.append(
            f"| {row['workers']} | {row['count']} | {row['wall_s']:.1f} | {row['drills_per_s']:.2f} | {row['drills_per_s'] / base:.2f} "
            f"| {row['worker_cpu_per_drill_s']:.3f} | {row['server_cpu_per_drill_s']:.3f} | {row['cpu_share']:.0%} "
            f"| {row['store_cpu_per_drill_s']:.3f} | {row['requests_per_drill']:.1f} "
            f"| {size.get('prefect', 0):,.0f} | {size.get('history', 0):,.0f} | {' / '.join(map(str, row['peak_rss_mb']))} "
            f"| {row['state']} ({row['drills']} drills) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=200, help="small databases in the fleet (default 200; the issue's is 1000)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (default 1,2,4)")
    parser.add_argument("--per-worker", type=int, default=2, help="batch runs (drills at once) per worker (default 2)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",") if n]
    work = Path(tempfile.mkdtemp(prefix="drillbook-bench-workers-"))
    tag = uuid.uuid4().hex[:8]
    stores = {"prefect": f"bench_prefect_{tag}", "history": f"bench_history_{tag}"} if _pg_up() else {}
    for database in stores.values():
        _pg(f"CREATE DATABASE {database}")
    s3, endpoint = bench.start_s3(work / "s3.log")
    bench.OBJECT_STORE = psutil.Process(s3.pid)
    server = None
    rows: list[dict] = []
    try:
        server, api = start_server(work, stores.get("prefect"))
        bench.PREFECT_SERVER = psutil.Process(server.pid)
        env = {**bench.drillbook_env(work), "PREFECT_API_URL": api, "PREFECT_LOCAL_STORAGE_PATH": str(work / "results")}
        env.update({"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5", "PREFECT_LOGGING_LEVEL": "WARNING"})
        os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(work / "client-home")})
        history = f'history_url = "postgresql+psycopg://{PG}/{stores["history"]}"\n' if stores else ""
        if stores:
            from drillbook.tasks.history.store import upgrade_store

            upgrade_store(f"postgresql+psycopg://{PG}/{stores['history']}")  # the schema first: its bytes are not the drills'
        config = bench.write_catalogue(work / "drillbook.toml", work, build_fleet(endpoint, work, args.databases), extra=history)
        prefect = str(bench.BIN / "prefect")
        subprocess.run([prefect, "work-pool", "create", "drillbook", "--type", "process"], env=env, check=True, capture_output=True)
        deploy = [prefect, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "drillbook-nightly"]
        subprocess.run([*deploy, "--name", "drillbook-batch"], env=env, cwd=bench.ROOT, check=True, capture_output=True)
        for workers in counts:
            rows.append(nightly(work, env, config, args.databases, workers, stores, args.per_worker))
            print(f"{workers} worker(s): {rows[-1]['wall_s']:.1f}s, {rows[-1]['drills']} drills", file=sys.stderr)
    finally:
        if server is not None:
            bench.stop(server)
        bench.stop(s3)
        for database in stores.values():
            _pg(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    print(table(rows, "PostgreSQL" if stores else "SQLite (PostgreSQL was not reachable)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
