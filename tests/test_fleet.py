"""A fleet: a real Prefect server on PostgreSQL, a process work pool, two workers, the deployments from
deployments/prefect.yaml, a nightly over seven databases in the local S3, the release CLI and its event.

Every process started here runs in its own process group and is stopped at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import S3_CREDENTIALS, corrupt_index, entry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class Fleet:
    def __init__(self, api_url: str, env: dict[str, str], logs: dict[str, Path]):
        self.api_url = api_url
        self.env = env
        self.logs = logs
        self.worker_config = Path()

    def run(self, *argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, s3_endpoint):
    base = tmp_path_factory.mktemp("fleet")
    database = f"drillbook_fleet_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    common = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(base)),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **S3_CREDENTIALS,
    }
    server_env = {
        **common,
        "PREFECT_HOME": str(base / "server-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{database}",
        "PREFECT_UI_ENABLED": "false",
    }
    client_env = {
        **common,
        "PREFECT_HOME": str(base / "client-home"),
        "PREFECT_API_URL": api_url,
        # Drill runs on either worker write results where the nightly (on either worker) reads them.
        "PREFECT_LOCAL_STORAGE_PATH": str(base / "results"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    logs: dict[str, Path] = {}
    processes: list[subprocess.Popen] = []
    with ExitStack() as stack:
        _psql(f"CREATE DATABASE {database}")
        stack.callback(_psql, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

        def start(name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
            logs[name] = base / f"{name}.log"
            handle = stack.enter_context(logs[name].open("w"))
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(process)
            stack.callback(_stop, process)
            return process

        server = start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the Prefect server did not start:\n{logs['server'].read_text()[-3000:]}")
            time.sleep(0.5)

        fleet = Fleet(api_url, client_env, logs)
        fleet.worker_config = base / "worker-drillbook.toml"
        fleet.run(str(BIN / "prefect"), "work-pool", "create", "drillbook", "--type", "process")
        # The README's deploy command, exactly.
        fleet.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
        # The workers run in an application's folder, not the checkout: its own tasks.py and flows/
        # (which fail loudly if imported) on PYTHONPATH, as in a Docker image with PYTHONPATH=/app.
        # The deployments name module paths, so the installed drillbook runs from there.
        app = base / "app"
        (app / "flows").mkdir(parents=True)
        (app / "tasks.py").write_text("raise ImportError('the application tasks.py was imported instead of drillbook.tasks')\n")
        (app / "flows" / "__init__.py").write_text("raise ImportError('the application flows/ was imported instead of drillbook.flows')\n")
        for name in ("worker-a", "worker-b"):
            # DRILLBOOK_CONFIG: what an event's release run reads (the event names no catalogue); written by the test that needs it.
            worker_env = {
                **client_env,
                "PREFECT_HOME": str(base / name),
                "PYTHONPATH": str(app),
                "DRILLBOOK_CONFIG": str(fleet.worker_config),
            }
            # --limit 3: at most three runs at once per worker (a nightly and its four batches need both).
            start(
                name, [str(BIN / "prefect"), "worker", "start", "--pool", "drillbook", "--name", name, "--limit", "3"], worker_env, cwd=app
            )
        yield fleet
        assert all(p.poll() is None for p in processes[1:]), "a worker died during the test"


def _catalogue(tmp_path: Path, replicate, count: int) -> tuple[Path, list[str]]:
    from tests.conftest import _toml

    lines = ["[drillbook]", f"evidence_dir = {_toml(str(tmp_path / 'evidence'))}", f"scratch_dir = {_toml(str(tmp_path / 'scratch'))}"]
    names = []
    for index in range(count):
        replicated = replicate()
        names.append(f"fleet{index}")
        lines += ["", "[[database]]"] + [
            f"{k} = {_toml(v)}" for k, v in entry(f"fleet{index}", replicated.replica, schema_version=3).items()
        ]
    broken = replicate(corrupt_index)
    lines += ["", "[[database]]"] + [f"{k} = {_toml(v)}" for k, v in entry("fleet-broken", broken.replica).items()]
    path = tmp_path / "drillbook.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, names


def test_nightly_over_two_workers(fleet, replicate, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config, names = _catalogue(tmp_path, replicate, 6)
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: fleet.api_url}):
        nightly = run_deployment(
            "nightly-drills/drillbook-nightly",
            parameters={"config_path": str(config), "max_concurrent": 4},
            timeout=600,
            poll_interval=1,
            as_subflow=False,
        )
        wall = time.monotonic() - started
        assert nightly.state.is_failed(), nightly.state  # one database is broken: the nightly says so
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts()
            summary = next(a for a in artifacts if a.key == "nightly-drills" and a.flow_run_id == nightly.id)
            batch_runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["drillbook-batch"])),
            )
    rows = {row["database"]: row for row in (json.loads(summary.data) if isinstance(summary.data, str) else summary.data)}
    assert {name: rows[name]["verdict"] for name in names} == dict.fromkeys(names, "PASS")
    assert (rows["fleet-broken"]["verdict"], rows["fleet-broken"]["failure mode"]) == ("FAIL", "integrity failure")

    # The databases went to the workers as four batches (the drills limit), not one run each.
    mine = [run for run in batch_runs if all(d.get("config_path") == str(config) for d in run.parameters["drills"])]
    assert len(mine) == 4
    batched = [d["name"] for run in mine for d in run.parameters["drills"]]
    assert sorted(batched) == sorted([*names, "fleet-broken"])
    assert all(run.state.is_final() for run in mine)
    # Which worker ran each batch, from the workers' own logs: both took some.
    by_worker = {w: [run for run in mine if str(run.id) in fleet.logs[w].read_text()] for w in ("worker-a", "worker-b")}
    assert by_worker["worker-a"] and by_worker["worker-b"], {w: len(r) for w, r in by_worker.items()}
    assert len(by_worker["worker-a"]) + len(by_worker["worker-b"]) >= len(mine)

    # The bound held across batches and workers: never more than 4 restores at once (from the evidence).
    from drillbook.tasks.evidence import read_bundle
    from tests.test_nightly import _peak

    bundles = [read_bundle(path) for path in (tmp_path / "evidence").rglob("*.json")]
    assert sorted(b.database for b in bundles) == sorted(batched)
    assert _peak([(b.restore.started_at, b.restore.finished_at) for b in bundles]) <= 4

    # Prefect's overhead per drill: each batch run's wall time minus its drills' own step seconds.
    overheads = []
    for run in mine:
        drilled = [b for b in bundles if b.database in {d["name"] for d in run.parameters["drills"]}]
        steps = sum(phase.seconds for b in drilled for phase in b.phases.values())
        overheads.append(round(((run.end_time - run.start_time).total_seconds() - steps) / len(drilled), 2))
    report = {
        "fleet_nightly_wall_seconds": round(wall, 1),
        "batch_runs": len(mine),
        "prefect_overhead_seconds_per_drill": sorted(overheads),
    }
    print("FLEET-MEASURE " + json.dumps(report))


def test_release_cli_is_idempotent_and_exits_with_the_verdict(fleet, replicate, tmp_path):
    replicated = replicate()
    config = tmp_path / "release.toml"
    from tests.conftest import _toml

    config.write_text(
        "\n".join(
            [
                "[drillbook]",
                f"evidence_dir = {_toml(str(tmp_path / 'ev'))}",
                f"scratch_dir = {_toml(str(tmp_path / 'sc'))}",
                "",
                "[[database]]",
            ]
            + [f"{k} = {_toml(v)}" for k, v in entry("orders", replicated.replica).items()]
        )
        + "\n"
    )
    release = f"v9.{uuid.uuid4().hex[:6]}"
    argv = [
        str(BIN / "drillbook"),
        "release",
        "--release",
        release,
        "--schema-version",
        "3",
        "--config",
        str(config),
        "--wait-seconds",
        "30",
    ]
    first = fleet.run(*argv, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    second = fleet.run(*argv, check=False)  # a retried CI job
    assert second.returncode == 0, second.stdout + second.stderr
    run_line = [line for line in first.stdout.splitlines() if "flow run" in line][0]
    assert run_line == [line for line in second.stdout.splitlines() if "flow run" in line][0]  # the same run, not a second drill

    failing = fleet.run(*argv[:3], f"{release}-bad", "--schema-version", "99", "--config", str(config), "--wait-seconds", "1", check=False)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "replica lag" in failing.stdout


def test_release_event_triggers_a_release_run(fleet, replicate, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    release = f"v8.{uuid.uuid4().hex[:6]}"
    sent = fleet.run(str(BIN / "drillbook"), "release", "--release", release, "--schema-version", "3", "--db", "orders", "--emit")
    assert f"sent event drillbook.release.deployed for {release}" in sent.stdout
    deadline = time.monotonic() + 120
    with temporary_settings(updates={PREFECT_API_URL: fleet.api_url}), get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["drillbook-release"])))
            mine = [r for r in runs if r.parameters.get("release") == release]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert mine, "the trigger did not start a release run"
    (run,) = mine
    assert run.parameters["schema_version"] == 3
    assert run.parameters["databases"] == ["orders"]


def test_a_release_storm_drills_each_database_once(fleet, replicate, tmp_path):
    """200 drillbook.release.deployed events for one release within a minute: one release run, one drill per database."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.events.clients import get_events_client
    from prefect.events.schemas.events import Event, Resource
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from drillbook.flows.release import RELEASE_EVENT
    from drillbook.tasks.history.store import recent_drills
    from tests.conftest import _toml

    names = ["storm-a", "storm-b"]
    history = f"sqlite:///{tmp_path / 'evidence' / 'history.db'}"
    lines = ["[drillbook]", f"evidence_dir = {_toml(str(tmp_path / 'evidence'))}", f"scratch_dir = {_toml(str(tmp_path / 'scratch'))}"]
    for name in names:
        lines += ["", "[[database]]"] + [f"{k} = {_toml(v)}" for k, v in entry(name, replicate().replica).items()]
    fleet.worker_config.write_text("\n".join(lines) + "\n")
    release = f"v7.{uuid.uuid4().hex[:6]}"

    async def storm() -> None:
        async with get_events_client(checkpoint_every=1) as client:
            for _ in range(200):
                resource = Resource({"prefect.resource.id": f"drillbook.release.{release}", "prefect.resource.name": release})
                await client.emit(
                    Event(event=RELEASE_EVENT, resource=resource, payload={"release": release, "schema_version": 3, "databases": names})
                )

    def release_runs(client) -> list:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["drillbook-release"])))
        return [r for r in runs if r.parameters.get("release") == release]

    with temporary_settings(updates={PREFECT_API_URL: fleet.api_url}):
        began = time.monotonic()
        asyncio.run(storm())
        sent = time.monotonic() - began
        assert sent < 60, f"the storm took {sent:.0f}s to send, not a minute"
        deadline = time.monotonic() + 240
        with get_client(sync_client=True) as client:
            while not ((mine := release_runs(client)) and all(r.state.is_final() for r in mine)) and time.monotonic() < deadline:
                time.sleep(1)
            time.sleep(5)  # the rest of the storm has reached the triggers by now: no late second run
            mine = release_runs(client)
    assert len(mine) == 1, [(r.name, r.state.type) for r in mine]
    assert mine[0].state.is_completed(), (
        mine[0].state,
        fleet.logs["worker-a"].read_text()[-2000:],
        fleet.logs["worker-b"].read_text()[-2000:],
    )
    drilled = [(row.database, row.release) for row in recent_drills(history, None, 1000)]
    assert sorted(drilled) == [(name, release) for name in names]  # one drill per database, not 200


def test_a_batch_run_killed_mid_drill_is_an_error_naming_its_worker(fleet, replicate, s3_endpoint, write_catalogue, tmp_path):
    """SIGKILL to the batch run's process mid-restore: that database is the nightly's ERROR naming the run and its worker."""
    import threading

    import psutil
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from drillbook.flows.nightly import nightly_drills
    from drillbook.flows.runs import drill_results_of
    from drillbook.tasks.history.store import recent_drills
    from drillbook.testing.faultproxy import FaultProxy
    from drillbook.testing.s3 import s3_replica_url

    key = f"{uuid.uuid4().hex[:10]}/app.db"
    replicate(key=key)
    fine = replicate()
    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("get", "stall", after=1)  # the header read passes, the restore hangs: killed while it runs
        victim = entry("victim", s3_replica_url(proxy.url, "drills", key), stall_timeout="10m", restore_timeout="10m")
        config = write_catalogue(victim, entry("bystander", fine.replica))
        settings = {PREFECT_API_URL: fleet.api_url, PREFECT_LOCAL_STORAGE_PATH: fleet.env["PREFECT_LOCAL_STORAGE_PATH"]}
        done: list = []

        def night() -> None:  # Prefect's settings are a context variable: set in the thread that runs the nightly
            with temporary_settings(updates=settings):
                done.append(
                    nightly_drills(
                        config_path=str(config), max_concurrent=2, batch_deployment="drill-batch/drillbook-batch", return_state=True
                    )
                )

        nightly = threading.Thread(target=night)
        nightly.start()
        deadline, restore = time.monotonic() + 180, None
        while restore is None and time.monotonic() < deadline:
            restore = next((p for p in psutil.process_iter(["cmdline"]) if key in " ".join(p.info["cmdline"] or ())), None)
            time.sleep(0.5)
        assert restore is not None, "the victim's restore never started"
        batch = restore.parent()
        batch.kill()  # the batch run's process, on its worker
        restore.kill()  # its litestream, left restoring (the next drill of victim would reclaim it)
        nightly.join(300)
    assert done, "the nightly did not end"
    results = {r.database: r for r in drill_results_of(done[0])}
    assert (results["bystander"].verdict.value, results["victim"].verdict.value) == ("PASS", "ERROR")
    detail = results["victim"].findings[0].detail
    assert "batch run drill-batch-victim" in detail and " on worker worker-" in detail and f"process {batch.pid}" in detail, detail
    assert "ended CRASHED" in detail, detail
    history = f"sqlite:///{tmp_path / 'evidence' / 'history.db'}"
    assert [row.database for row in recent_drills(history, None, 10)] == ["bystander"]  # nothing of the killed drill recorded
