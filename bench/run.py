"""drillbook against the bare commands, side by side.

    python bench/run.py                      # 10 MB and 100 MB, 3 repeats, fleet of 20
    python bench/run.py --sizes 10,100,1000  # add the 1 GB case (or --large)
    python bench/run.py --quick              # seconds: a smoke run of the harness itself

Per size: a realistic WAL-mode database (customers, orders, order_items with
indexes) is replicated with the real `litestream replicate -once` to a local S3
endpoint (moto's server, its own process). Then, alternating, repeated:

- baseline: `litestream restore` + `sqlite3` running PRAGMA integrity_check,
  PRAGMA foreign_key_check and the same SQL the drill's checks run, timed as
  one process tree;
- drillbook: `drillbook run NAME --json` on the same replica, whole process,
  plus the phase seconds drillbook itself reports.

Peak RSS is sampled over each whole process tree with psutil. The fleet cases
drill N databases with `drillbook nightly` (concurrency 2) against the bare
commands under `xargs -P 2`, on two kinds of replica: 1 MB written once, and
copies of a replica `litestream replicate` wrote under a write workload (L0
files, compacted levels, snapshots). CPU per drill is split by process: the
client tree, the object store (moto) and the Prefect server (--api server);
the server's share says how many workers one server core can feed. One table is printed; JSON and Markdown are
written under bench/results/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LITESTREAM = str(BIN / "litestream") if (BIN / "litestream").exists() else shutil.which("litestream")
DRILLBOOK = str(BIN / "drillbook") if (BIN / "drillbook").exists() else shutil.which("drillbook")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "drillbook-bench"

# The SQL the drill's own checks run beyond integrity: row counts per table.
CHECK_SQL = "SELECT count(*) FROM customers; SELECT count(*) FROM orders; SELECT count(*) FROM order_items;"
WORKLOAD_CHECK_SQL = "SELECT count(*) FROM accounts; SELECT count(*) FROM events; SELECT count(*) FROM seq;"

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), status TEXT NOT NULL,
                     total_cents INTEGER NOT NULL, created_at TEXT NOT NULL, notes TEXT);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX orders_created ON orders(created_at);
CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), sku TEXT NOT NULL,
                          quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE INDEX order_items_order ON order_items(order_id);
PRAGMA user_version=3;
"""


def generate(path: Path, megabytes: float) -> Path:
    """Grow a realistic database to about `megabytes`, in SQLite's own speed (recursive CTEs)."""
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    # About 850 bytes a customer with its orders and items: small targets get small batches.
    batch, customers, orders = int(min(20000, max(100, megabytes * 1e6 / 850 / 4))), 0, 0
    while True:
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO customers SELECT ? + i, 'customer' || (? + i) || '@example.com', 'Name ' || abs(random() % 100000), "
            "datetime('now', '-' || abs(random() % 900) || ' days') FROM n",
            (batch, customers, customers),
        )
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO orders SELECT ? + i, ? + 1 + abs(random() % ?), 'paid', abs(random() % 100000), "
            "datetime('now', '-' || abs(random() % 500000) || ' minutes'), hex(randomblob(60)) FROM n",
            (batch * 3, orders, customers, batch),
        )
        connection.execute(
            "INSERT INTO order_items (order_id, sku, quantity, price_cents) "
            "SELECT id, 'SKU-' || abs(random() % 400), 1 + abs(random() % 5), abs(random() % 9000) FROM orders WHERE id > ?",
            (orders,),
        )
        connection.commit()
        customers += batch
        orders += batch * 3
        size = connection.execute("PRAGMA page_count").fetchone()[0] * connection.execute("PRAGMA page_size").fetchone()[0]
        if size >= megabytes * 1e6:
            break
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3(log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server with the bench's bucket; with `log`, its access log (one line a request) goes there."""
    port = free_port()
    output = log.open("w") if log else subprocess.DEVNULL
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=output,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                **_boto_credentials(),
            ).create_bucket(Bucket=BUCKET)
            return server, endpoint
        except Exception:  # not listening yet
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_prefect_server(
    work: Path, *, extra_env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 120
) -> tuple[subprocess.Popen, str]:
    """A persistent Prefect server, as a fleet runs drillbook (no temporary server per drill).

    `extra_env`: more server settings (bench/workers.py: its database on PostgreSQL); `log`: its output, quoted if it fails.
    """
    import urllib.request

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(extra_env or {})}
    env.pop("PREFECT_API_URL", None)
    output = log.open("w") if log else subprocess.DEVNULL
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).read()
            return server, url
        except OSError:  # not listening yet
            if time.monotonic() > deadline or server.poll() is not None:
                stop(server)
                said = f": {log.read_text()[-2000:]}" if log else f" within {timeout:g} s"
                raise RuntimeError(f"the Prefect server did not start{said}") from None
            time.sleep(0.5)


def postgres_database(name: str) -> str:
    """A new, empty PostgreSQL database for the Prefect server (127.0.0.1:5432, user postgres, as `bash .ci/postgres` sets up)."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def litestream_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(CREDENTIALS)
    return env


def replica_url(endpoint: str, key: str) -> str:
    return f"s3://{BUCKET}/{key}?endpoint={endpoint}&region=us-east-1&forcePathStyle=true"


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float  # the whole process tree
    peak_rss_own_mb: float = 0.0  # the tree without a temporary Prefect server child
    peak_rss_process_mb: float = 0.0  # drillbook's own process alone (a fleet worker's figure: its litestream children come and go)
    phases: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None
    cpu_s: float = 0.0  # user + system CPU of the whole process tree (every process it reaped), from getrusage
    server_cpu_s: float = 0.0  # CPU the running Prefect server spent meanwhile (--api server)
    store_cpu_s: float = 0.0  # CPU the object store (moto's S3 server) spent meanwhile


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PREFECT_SERVER: psutil.Process | None = None  # set when the bench runs its own Prefect server
OBJECT_STORE: psutil.Process | None = None  # the moto S3 server
# The server's own output (PREFECT_SERVER_LOG_RETRYABLE_ERRORS): each request it answered 503 (SQLite "database is locked":
# Prefect's client waits 2 s before trying again) is logged once there, counted per fleet.
SERVER_LOG: Path | None = None
RETRYABLE = "Encountered retryable exception in request"


def _server_cpu(root: psutil.Process | None = None) -> float:
    """CPU seconds of a server's process tree so far (the Prefect server by default; 0 without one)."""
    root = root or PREFECT_SERVER
    if root is None:
        return 0.0
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[Run, str]:
    """Run a process tree to completion; wall seconds and peak RSS of the whole tree."""
    peak = peak_own = peak_process = 0
    cpu_before, server_before, store_before = _children_cpu(), _server_cpu(), _server_cpu(OBJECT_STORE)
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_own, peak_process
        try:
            root = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                total = own = alone = root.memory_info().rss
                for child in root.children(recursive=True):
                    rss = child.memory_info().rss
                    total += rss
                    if not _is_prefect_server(child):
                        own += rss
                peak, peak_own, peak_process = max(peak, total), max(peak_own, own), max(peak_process, alone)
            except psutil.Error:
                pass
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    if process.returncode not in (0,) and "drillbook" not in argv[0]:
        raise RuntimeError(f"{argv} exited {process.returncode}: {err[-2000:]}")
    cpu = _children_cpu() - cpu_before  # the tree, reaped by communicate(): every descendant its parents waited for
    return Run(
        seconds=seconds,
        peak_rss_mb=peak / 1e6,
        peak_rss_own_mb=peak_own / 1e6,
        peak_rss_process_mb=peak_process / 1e6,
        cpu_s=cpu,
        server_cpu_s=_server_cpu() - server_before,
        store_cpu_s=_server_cpu(OBJECT_STORE) - store_before,
    ), out


def _is_prefect_server(process: psutil.Process) -> bool:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "prefect" in cmdline and ("server" in cmdline or "uvicorn" in cmdline)


def baseline_script(url: str, out: Path) -> list[str]:
    sql = f"PRAGMA integrity_check; PRAGMA foreign_key_check; {CHECK_SQL}"
    return ["sh", "-c", f'"{LITESTREAM}" restore -o "{out}" "{url}" >/dev/null && sqlite3 -readonly "{out}" "{sql}" >/dev/null']


def run_baseline(url: str, scratch: Path) -> Run:
    out = scratch / f"baseline-{time.monotonic_ns()}.db"
    run, _ = timed(baseline_script(url, out), litestream_env())
    for p in scratch.glob(out.name + "*"):
        p.unlink()
    return run


def run_drillbook(name: str, config: Path, env: dict[str, str]) -> Run:
    run, out = timed([DRILLBOOK, "run", name, "--config", str(config), "--json"], env)
    result = json.loads(out)
    run.verdict = result["verdict"]
    run.phases = {k: v["seconds"] for k, v in result["phases"].items()}
    return run


CATALOGUE_ENTRY = """
[[database]]
name = "{name}"
replica = "{url}"
rto_target = "1h"
rpo_target = "1d"
schema_version = {schema}
"""


def write_catalogue(path: Path, work: Path, entries: list[tuple[str, str]], extra: str = "", schema: int = 3) -> Path:
    text = f'[drillbook]\nevidence_dir = "{work / "evidence"}"\nscratch_dir = "{work / "scratch"}"\n{extra}'
    text += "".join(CATALOGUE_ENTRY.format(name=n, url=u, schema=schema) for n, u in entries)
    path.write_text(text)
    return path


def drillbook_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CREDENTIALS)
    env.setdefault("PREFECT_HOME", str(work / "prefect"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    return env


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_size(megabytes: float, repeats: int, endpoint: str, work: Path, env: dict[str, str]) -> dict:
    name = f"bench-{int(megabytes)}mb" if megabytes >= 1 else "bench-small"
    db = generate(work / f"{name}.db", megabytes)
    size_mb = db.stat().st_size / 1e6
    url = replica_url(endpoint, f"{name}/app.db")
    subprocess.run([LITESTREAM, "replicate", "-once", str(db), url], env=litestream_env(), check=True, capture_output=True, timeout=3600)
    config = write_catalogue(work / f"{name}.toml", work, [(name, url)])
    scratch = work / "baseline-scratch"
    scratch.mkdir(exist_ok=True)
    base: list[Run] = []
    drill: list[Run] = []
    for r in range(repeats):
        order = (lambda: base.append(run_baseline(url, scratch)), lambda: drill.append(run_drillbook(name, config, env)))
        for step in order if r % 2 == 0 else reversed(order):
            step()
    db.unlink()
    work_seconds = [sum(run.phases.values()) - run.phases.get("replica", 0.0) for run in drill]
    overhead = [run.seconds - sum(run.phases.values()) for run in drill]
    b, d = med([r.seconds for r in base]), med([r.seconds for r in drill])
    return {
        "case": f"single {size_mb:,.0f} MB ({'Prefect server' if 'PREFECT_API_URL' in env else 'ephemeral Prefect'})",
        "size_mb": round(size_mb, 1),
        "repeats": repeats,
        "verdicts": sorted({r.verdict for r in drill}),
        "baseline_s": {"median": b, "min": min(r.seconds for r in base), "max": max(r.seconds for r in base)},
        "drillbook_s": {"median": d, "min": min(r.seconds for r in drill), "max": max(r.seconds for r in drill)},
        "phases_s": {k: med([r.phases[k] for r in drill]) for k in drill[0].phases},
        "ratio_wall": d / b,
        # Restore + checks as drillbook runs them, against the bare commands: the per-size cost.
        "ratio_excl_fixed": med(work_seconds) / b,
        "fixed_overhead_s": med(overhead),
        "drillbook_s_per_gb": med(work_seconds) / (size_mb / 1000),
        "baseline_s_per_gb": b / (size_mb / 1000),
        "peak_rss_mb": {
            "baseline": max(r.peak_rss_mb for r in base),
            "drillbook": max(r.peak_rss_mb for r in drill),
            "drillbook_without_prefect_server": max(r.peak_rss_own_mb for r in drill),
        },
    }


FLEET_TARGETS = {20: 1.4, 100: 1.15, 1000: 1.1}  # issue 30: fleet wall against the bare commands (issue 23's were 1.6 and 1.25)
RSS_TARGET_MB = 400  # issue 30: drillbook's peak RSS over a fleet's nightly, whatever the fleet's size
SERVER_CPU_TARGET = 0.02  # Prefect server CPU seconds per drill


def realistic_template(endpoint: str, work: Path, seconds: float) -> list[str]:
    """A replica written by `litestream replicate` (0.5.17) under a write workload: L0 files, compacted levels, snapshots.

    Returns its keys below `template/app.db/`; each fleet database gets a server-side copy of them (one replica
    made by litestream, copied, instead of a hundred made in turn).
    """
    from drillbook.testing.corpus import Corpus, s3_keys

    replica = Corpus(endpoint, BUCKET, work / "corpus").written_by("0.5.17", seconds=seconds)
    return [f"{replica.target.path}/{key}" for key in s3_keys(replica.target)]


def copy_replica(client, keys: list[str], source_prefix: str, target_prefix: str) -> None:
    for key in keys:
        client.copy_object(Bucket=BUCKET, Key=target_prefix + key[len(source_prefix) :], CopySource={"Bucket": BUCKET, "Key": key})


def bench_fleet(
    count: int, endpoint: str, work: Path, env: dict[str, str], kind: str = "1 MB", template: list[str] | None = None
) -> dict | None:
    """`drillbook nightly` over `count` databases against `litestream restore` + `sqlite3` under `xargs -P 2`.

    kind "1 MB": each database written once with `replicate -once` (one snapshot); kind "realistic": copies of
    `template`, a replica litestream wrote under writes (see realistic_template).
    """
    import boto3

    help_text = subprocess.run([DRILLBOOK, "--help"], capture_output=True, text=True).stdout
    if "nightly" not in help_text:
        print("fleet: `drillbook nightly` is not available in this build; skipped", file=sys.stderr)
        return None
    entries = []
    tag = "real" if template else "small"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_credentials())
    db_template = None if template else generate(work / f"fleet{count}-template.db", 1)  # one database, copied
    for i in range(count):
        name = f"fleet-{tag}-{i:04d}"
        prefix = f"fleet{count}{tag}/{name}/app.db"
        if template:
            copy_replica(client, template, template[0].split("/app.db/")[0] + "/app.db", prefix)
        else:
            db = work / f"fleet{count}{tag}" / f"{name}.db"  # a folder per fleet: litestream keeps state beside the database
            db.parent.mkdir(exist_ok=True)
            shutil.copyfile(db_template, db)
            subprocess.run(
                [LITESTREAM, "replicate", "-once", str(db), replica_url(endpoint, prefix)],
                env=litestream_env(),
                check=True,
                capture_output=True,
                timeout=600,
            )
            shutil.rmtree(db.parent / f".{db.name}-litestream", ignore_errors=True)  # its state: reused, the next replica forks
            for leftover in db.parent.glob(f"{name}.db*"):
                leftover.unlink()
        entries.append((name, replica_url(endpoint, prefix)))
    if db_template:
        db_template.unlink()
    # The workload's database (testing/workload.py) has its own tables and no user_version.
    config = write_catalogue(work / f"fleet{count}{tag}.toml", work, entries, schema=0 if template else 3)
    scratch = work / f"fleet{count}{tag}-scratch"
    scratch.mkdir(exist_ok=True)
    counts = WORKLOAD_CHECK_SQL if template else CHECK_SQL
    sql = f"PRAGMA integrity_check; PRAGMA foreign_key_check; {counts}"
    listed = work / f"fleet{count}{tag}.list"  # a file, not the command line: 1,000 URLs are past the kernel's argument limit
    listed.write_text("".join(f"{url} {scratch / name}.db\n" for name, url in entries))
    script = (
        f"xargs -P 2 -L 1 sh -c "
        f'\'"{LITESTREAM}" restore -o "$1" "$0" >/dev/null && sqlite3 -readonly "$1" "{sql}" >/dev/null\' < "{listed}"'
    )
    base, _ = timed(["sh", "-c", script], litestream_env())
    answered_503 = _server_503s()
    began = time.time()
    drill, out = timed([DRILLBOOK, "nightly", "--config", str(config), "--max-concurrent", "2", "--json"], env)
    answered_503 = _server_503s() - answered_503 if answered_503 is not None else None
    try:
        parsed = json.loads(out)
        first_restore = first_restore_after(parsed, began)
        verdicts = sorted(str(r.get("verdict")) for r in parsed)
        failures = sorted(
            f"{r.get('database')}: {(r.get('findings') or [{}])[0].get('detail', '')[:300]}" for r in parsed if r.get("verdict") != "PASS"
        )
    except (ValueError, AttributeError, TypeError):
        verdicts, failures, first_restore = ["unreadable"], [], None
    if failures:
        print(f"fleet of {count}: {len(failures)} not passed, e.g. {failures[0]}", file=sys.stderr)
    # Orchestration CPU per drill: what drillbook's tree and the Prefect server spent beyond the bare commands.
    orchestration = (drill.cpu_s + drill.server_cpu_s - base.cpu_s) / count
    server_per_drill = drill.server_cpu_s / count
    return {
        "case": f"fleet of {count}, {kind} replica, concurrency 2",
        "count": count,
        "kind": kind,
        "verdicts": {v: verdicts.count(v) for v in set(verdicts)},
        "not_passed": failures,
        "cpu_s": {"baseline": base.cpu_s, "drillbook": drill.cpu_s, "prefect_server": drill.server_cpu_s},
        "per_drill_cpu_s": {
            "baseline_client": base.cpu_s / count,
            "baseline_object_store": base.store_cpu_s / count,
            "drillbook_client": drill.cpu_s / count,
            "drillbook_object_store": drill.store_cpu_s / count,
            "prefect_server": server_per_drill,
        },
        "orchestration_cpu_s_per_drill": orchestration,
        "drill_wall_s_per_database": drill.seconds / count,
        "baseline_s": {"median": base.seconds, "min": base.seconds, "max": base.seconds},
        "drillbook_s": {"median": drill.seconds, "min": drill.seconds, "max": drill.seconds},
        "ratio_wall": drill.seconds / base.seconds,
        "first_restore_s": first_restore,
        "server_503s": answered_503,
        "target_ratio": FLEET_TARGETS.get(count),
        # How many workers (2 drills at once each, as here) one server core keeps fed: its CPU per drill is the ceiling.
        "workers_per_server_core": (drill.seconds / count) / server_per_drill if server_per_drill > 0 else None,
        "peak_rss_mb": {
            "baseline": base.peak_rss_mb,
            "drillbook": drill.peak_rss_mb,
            "drillbook_without_prefect_server": drill.peak_rss_own_mb,
            "drillbook_process": drill.peak_rss_process_mb,
        },
    }


def _server_503s() -> int | None:
    return SERVER_LOG.read_text(errors="replace").count(RETRYABLE) if SERVER_LOG and SERVER_LOG.exists() else None


def first_restore_after(results: list[dict], began: float) -> float | None:
    """Seconds from the nightly's start to its first restore's start: the earliest drill start plus the phases before the
    restore (setup, inspection, writers), from the drills' own records."""
    starts = []
    for r in results:
        phases = r.get("phases") or {}
        if not r.get("started_at") or "restore" not in phases:
            continue
        before = sum((phases.get(name) or {}).get("seconds") or 0.0 for name in ("setup", "replica", "writers"))
        starts.append(datetime.fromisoformat(r["started_at"]).timestamp() + before)
    return min(starts) - began if starts else None


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}


def table(rows: list[dict]) -> str:
    head = (
        "| case | baseline s (med, min–max) | drillbook s (med, min–max) | ratio wall | ratio excl. fixed | fixed overhead s "
        "| s/GB base → drill | peak RSS MB base / drill (without Prefect server) |"
    )
    out = [head, "|" + "---|" * 8]
    for r in rows:
        b, d = r["baseline_s"], r["drillbook_s"]
        per_gb = f"{r['baseline_s_per_gb']:.1f} → {r['drillbook_s_per_gb']:.1f}" if "baseline_s_per_gb" in r else "-"
        out.append(
            f"| {r['case']} | {b['median']:.2f} ({b['min']:.2f}–{b['max']:.2f}) | {d['median']:.2f} ({d['min']:.2f}–{d['max']:.2f}) "
            f"| {r['ratio_wall']:.2f} | {r.get('ratio_excl_fixed', float('nan')):.2f} | {r.get('fixed_overhead_s', float('nan')):.2f} "
            f"| {per_gb} | {r['peak_rss_mb']['baseline']:.0f} / {r['peak_rss_mb']['drillbook']:.0f} "
            f"({r['peak_rss_mb']['drillbook_without_prefect_server']:.0f}) |"
        )
    return "\n".join(out)


def fleet_table(rows: list[dict]) -> str:
    """The fleet cases: wall against `xargs -P 2` (and the target), CPU per drill by process, server capacity."""
    out = [
        "| fleet case | baseline s | drillbook s | ratio wall (target) | CPU s per drill: bare client / store "
        "| drillbook client / store / Prefect server (target 0.02) | workers one server core feeds "
        "| first restore s (target 1.5) | peak RSS MB, drillbook's process (target 400) | verdicts |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        c = r["per_drill_cpu_s"]
        target = (
            f" (≤ {r['target_ratio']:.2f} {'met' if r['ratio_wall'] <= r['target_ratio'] else 'missed'})" if r.get("target_ratio") else ""
        )
        server = f"{c['prefect_server']:.3f} {'met' if c['prefect_server'] <= SERVER_CPU_TARGET else 'missed'}"
        feeds = f"{r['workers_per_server_core']:.0f}" if r.get("workers_per_server_core") else "-"
        first = f"{r['first_restore_s']:.2f}" if r.get("first_restore_s") is not None else "-"
        if r.get("server_503s") is not None:
            first += f" ({r['server_503s']} server 503s)"
        rss = r["peak_rss_mb"].get("drillbook_process", 0.0)
        tree = r["peak_rss_mb"]["drillbook_without_prefect_server"]
        out.append(
            f"| {r['case']} | {r['baseline_s']['median']:.2f} | {r['drillbook_s']['median']:.2f} | {r['ratio_wall']:.2f}{target} "
            f"| {c['baseline_client']:.3f} / {c['baseline_object_store']:.3f} "
            f"| {c['drillbook_client']:.3f} / {c['drillbook_object_store']:.3f} / {server} | {feeds} "
            f"| {first} | {rss:.0f} {'met' if rss < RSS_TARGET_MB else 'missed'} (with litestream: {tree:.0f}) | {r['verdicts']} |"
        )
    for kind in dict.fromkeys(r["kind"] for r in rows):
        step = marginal([r for r in rows if r["kind"] == kind])
        if step:
            out.append(
                f"| one more database ({kind}, {step['from']}) | {step['baseline_wall_s_per_drill']:.2f} | {step['wall_s_per_drill']:.2f} "
                f"| {step['wall_s_per_drill'] / max(step['baseline_wall_s_per_drill'], 1e-9):.2f} "
                f"| CPU {step['baseline_cpu_s_per_drill']:.3f} | CPU {step['cpu_s_per_drill']:.3f} (with server) | - | - | - | - |"
            )
    return "\n".join(out)


def marginal(fleets: list[dict]) -> dict | None:
    """What one more database costs, from the smallest and largest fleet: start-up and the first drill's imports cancel out."""
    if len(fleets) < 2:
        return None
    small, large = min(fleets, key=lambda r: r["count"]), max(fleets, key=lambda r: r["count"])
    extra = large["count"] - small["count"]
    if extra <= 0:
        return None

    def cpu(row: dict, side: str) -> float:
        return row["cpu_s"][side] + (row["cpu_s"]["prefect_server"] if side == "drillbook" else 0.0)

    return {
        "from": f"fleets of {small['count']} and {large['count']}",
        "wall_s_per_drill": (large["drillbook_s"]["median"] - small["drillbook_s"]["median"]) / extra,
        "baseline_wall_s_per_drill": (large["baseline_s"]["median"] - small["baseline_s"]["median"]) / extra,
        "cpu_s_per_drill": (cpu(large, "drillbook") - cpu(small, "drillbook")) / extra,
        "baseline_cpu_s_per_drill": (cpu(large, "baseline") - cpu(small, "baseline")) / extra,
    }


def projection(fleets: list[dict], databases: int = 1000, cores_per_worker: int = 2, concurrency: int = 2) -> str:
    """A fleet of `databases` over N workers, from the measured fleets: each drill costs its (marginal) CPU, and no
    worker runs more than `concurrency` drills at once (a drill mostly waits on the restore when the CPU is free)."""
    step = marginal(fleets)
    if step:
        cpu, wall = step["cpu_s_per_drill"], step["wall_s_per_drill"] * concurrency
        source = f"marginal, {step['from']}"
    else:
        row = max(fleets, key=lambda r: r["count"])
        cpu = (row["cpu_s"]["drillbook"] + row["cpu_s"]["prefect_server"]) / row["count"]
        wall = row["drill_wall_s_per_database"] * concurrency
        source = f"average over the fleet of {row['count']}, start-up included"
    lines = [f"projection for {databases:,} databases ({source}: {cpu:.2f} s CPU and {wall:.2f} s of a drill slot per database):"]
    lines.append("| workers | drills at once | CPU-bound minutes | slot-bound minutes | expected minutes |")
    lines.append("|---|---|---|---|---|")
    for workers in (1, 2, 4, 8, 16):
        cpu_bound = databases * cpu / (workers * cores_per_worker) / 60
        slot_bound = databases * wall / (workers * concurrency) / 60
        lines.append(f"| {workers} | {workers * concurrency} | {cpu_bound:.1f} | {slot_bound:.1f} | {max(cpu_bound, slot_bound):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global PREFECT_SERVER, SERVER_LOG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="database sizes in MB, comma-separated (default 10,100)")
    parser.add_argument("--large", action="store_true", help="add the 1 GB case")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per size (default 3)")
    parser.add_argument(
        "--fleet",
        default="20,100",
        help="databases in each fleet case, comma-separated; 0 skips them (default 20,100; 1000 for the large simulation, by hand)",
    )
    parser.add_argument(
        "--api",
        choices=["ephemeral", "server"],
        default="ephemeral",
        help="ephemeral: no PREFECT_API_URL, each drill starts Prefect's temporary server (a CLI user's case); "
        "server: drills talk to a running Prefect server the bench starts (a fleet's case)",
    )
    parser.add_argument(
        "--prefect-api", metavar="URL", help="use this running Prefect server instead of starting one (its CPU is not measured)"
    )
    parser.add_argument(
        "--prefect-db",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the database of the Prefect server the bench starts: SQLite (prefect server start's default) or a fresh "
        "PostgreSQL database on 127.0.0.1:5432, user postgres (bash .ci/postgres)",
    )
    parser.add_argument(
        "--fleet-kind",
        choices=["small", "realistic", "both"],
        default="both",
        help="fleet replicas: 1 MB written once, copies of a replica litestream wrote under writes (realistic), or both",
    )
    parser.add_argument("--realistic-seconds", type=float, default=30.0, help="seconds of writes for the realistic template replica")
    parser.add_argument("--quick", action="store_true", help="1 MB, one repeat, fleet of 3: checks the harness in seconds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON and Markdown go")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    if args.large:
        sizes.append(1000.0)
    if args.quick:
        sizes, args.repeats, args.fleet, args.fleet_kind = [1.0], 1, "3", "small"
    if not (LITESTREAM and DRILLBOOK and shutil.which("sqlite3")):
        print(
            "bench needs litestream, drillbook (pip install -e '.[test]') and the sqlite3 command line (apt-get install sqlite3)",
            file=sys.stderr,
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="drillbook-bench-"))
    server, endpoint = start_s3()
    global OBJECT_STORE
    OBJECT_STORE = psutil.Process(server.pid)
    prefect_server = None
    rows: list[dict] = []
    fleets: list[dict] = []
    try:
        env = drillbook_env(work)
        if args.prefect_api:
            env["PREFECT_API_URL"] = args.prefect_api
        elif args.api == "server":
            SERVER_LOG = work / "prefect-server.log"
            settings = {"PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}
            if args.prefect_db == "postgres":
                settings["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres_database(f"drillbook_bench_{uuid.uuid4().hex[:8]}")
            prefect_server, env["PREFECT_API_URL"] = start_prefect_server(work, extra_env=settings, log=SERVER_LOG)
            PREFECT_SERVER = psutil.Process(prefect_server.pid)
        # The first drill in a fresh PREFECT_HOME migrates Prefect's database: not what an operator pays nightly.
        if not args.quick:  # --quick checks the harness, not the figures
            warm_db = generate(work / "warmup.db", 0.1)
            warm_url = replica_url(endpoint, "warmup/app.db")
            subprocess.run(
                [LITESTREAM, "replicate", "-once", str(warm_db), warm_url], env=litestream_env(), check=True, capture_output=True
            )
            run_drillbook("warmup", write_catalogue(work / "warmup.toml", work, [("warmup", warm_url)]), env)
        for size in sizes:
            print(f"bench: {size:g} MB, {args.repeats} repeat(s)…", file=sys.stderr)
            rows.append(bench_size(size, args.repeats, endpoint, work, env))
        counts = [int(c) for c in str(args.fleet).split(",") if c.strip() and int(c) > 0]
        template = None
        if counts and args.fleet_kind in ("realistic", "both"):
            print(f"bench: a realistic replica ({args.realistic_seconds:g} s of writes under litestream replicate)…", file=sys.stderr)
            template = realistic_template(endpoint, work, args.realistic_seconds)
        kinds = [("1 MB", None)] if args.fleet_kind == "small" else [("realistic", template)]
        if args.fleet_kind == "both":
            kinds.insert(0, ("1 MB", None))
        for kind, files in kinds:
            for count in counts:
                print(f"bench: fleet of {count}, {kind} replica…", file=sys.stderr)
                fleet = bench_fleet(count, endpoint, work, env, kind=kind + (f" ({len(files)} files)" if files else ""), template=files)
                if fleet:
                    fleet["kind"] = kind
                    fleets.append(fleet)
    finally:
        stop(server)
        if prefect_server:
            stop(prefect_server)
        shutil.rmtree(work, ignore_errors=True)

    rendered = "\n\n".join(part for part in (table(rows) if rows else "", fleet_table(fleets) if fleets else "") if part)
    if fleets:
        rendered += "\n\n" + projection([f for f in fleets if f["kind"] == fleets[0]["kind"]])
    print(rendered)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {
        "when": stamp,
        "api": args.api,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "rows": rows,
        "fleets": fleets,
        "marginal": {kind: marginal([f for f in fleets if f["kind"] == kind]) for kind in dict.fromkeys(f["kind"] for f in fleets)},
    }
    (out / f"bench-{stamp}.json").write_text(json.dumps(meta, indent=2))
    (out / f"bench-{stamp}.md").write_text(f"# drillbook bench {stamp}\n\n{rendered}\n")
    print(f"\nwritten: {out / f'bench-{stamp}.json'} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
