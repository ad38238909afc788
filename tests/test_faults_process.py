"""Faults that need a `drillbook` process of its own: signals mid-restore, Prefect's temporary server, PREFECT_HOME.

Each runs the installed `drillbook run` as a subprocess without PREFECT_API_URL
(so it starts Prefect's temporary server, as on a fresh CI runner) and checks
the contract: exit 2, one line, a JSON ERROR under --json, nothing left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from prefect.settings import get_current_settings

from drillbook.testing.faultproxy import FaultProxy
from drillbook.testing.s3 import s3_replica_url
from tests.conftest import entry

DRILLBOOK = str(Path(sys.executable).parent / "drillbook")


def drillbook_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), **extra})
    return env


def session_server() -> dict[str, str]:
    """The environment that points a drillbook process at the session's Prefect server (no temporary server of its own)."""
    return {"PREFECT_API_URL": str(get_current_settings().api.url)}


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_for_restore(process: subprocess.Popen, timeout: float = 120) -> list[psutil.Process]:
    """Wait until the drill's `litestream restore` runs; return every descendant seen then (server, litestream)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"drillbook ended before the restore started (exit {process.returncode}): {err[-2000:]}")
        children = descendants(process.pid)
        for child in children:
            try:
                if "restore" in child.cmdline() and "litestream" in " ".join(child.cmdline()):
                    return children
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("the restore never started")


def assert_all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == [], f"left running: {[(p.pid, p.cmdline()) for p in alive]}"


def stalled_entry(proxy: FaultProxy, key: str, live: Path) -> dict:
    """The catalogue entry of a replica behind `proxy`, with timeouts long enough that only a signal ends the stall."""
    return entry("orders", s3_replica_url(proxy.url, "drills", key), live_path=str(live), stall_timeout="10m", restore_timeout="10m")


def start_drillbook(argv: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    """The installed `drillbook` in a process group of its own: SIGINT to the group is what Ctrl-C in a terminal sends."""
    environ = drillbook_env(tmp_path, **env)
    return subprocess.Popen(
        [DRILLBOOK, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, start_new_session=True
    )


def interrupt(process: subprocess.Popen, sig: int, whole_group: bool) -> tuple[str, str]:
    """Send `sig` to drillbook (or its whole group); its output once it ended (only at EOF: no child still holds the pipes)."""
    if whole_group:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    return process.communicate(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "whole_group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_mid_restore_stops_everything_records_error_and_exits_2(sig, whole_group, replicate, s3_endpoint, write_catalogue, tmp_path):
    key = f"{os.urandom(5).hex()}/app.db"
    replicated = replicate(key=key)
    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("get", "stall", after=1)  # the header read passes, the restore hangs on its GETs
        config = write_catalogue(stalled_entry(proxy, key, replicated.live))
        before = replicated.live.read_bytes()
        # SIGTERM to drillbook alone: its temporary Prefect server must be stopped by it too. Ctrl-C reaches the whole
        # group, so that case runs against the session's server (a temporary one costs 15 s a test).
        server = session_server() if whole_group else {}
        process = start_drillbook(["run", "orders", "--config", str(config), "--json"], tmp_path, **server)
        seen = wait_for_restore(process)
        if not whole_group:
            assert any("uvicorn" in " ".join(p.cmdline()) for p in seen), "expected Prefect's temporary server among the children"
        started = time.monotonic()
        out, err = interrupt(process, sig, whole_group)
        took = time.monotonic() - started

    name = signal.Signals(sig).name
    assert process.returncode == 2, err
    assert took < 30, f"took {took:.1f}s to stop"
    assert "Traceback" not in err
    assert f"drillbook: {name}: stopping litestream and smoke commands, recording the drill as ERROR" in err
    result = json.loads(out)
    assert (result["verdict"], result["failure_mode"]) == ("ERROR", "drill error")
    assert f"interrupted by {name}: the drill did not finish" in result["findings"][0]["detail"]
    assert Path(result["evidence"]).is_file()
    assert_all_gone(seen)
    assert replicated.live.read_bytes() == before


@pytest.mark.slow
def test_prefect_temporary_server_slower_than_its_timeout_is_one_line_exit_2(replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    process = subprocess.Popen(
        [DRILLBOOK, "run", "orders", "--config", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=drillbook_env(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"),
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        "drillbook: Prefect's temporary server did not start within 1s; set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
        "higher, or PREFECT_API_URL to a running Prefect server"
    ]
    assert json.loads(out)["verdict"] == "ERROR"
    assert descendants(process.pid) == []


def test_unwritable_prefect_home_is_one_line_exit_2(write_catalogue, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = write_catalogue(entry("orders", "file:///nowhere/orders.db"))
    done = subprocess.run(
        [DRILLBOOK, "run", "orders", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env=drillbook_env(tmp_path, PREFECT_HOME=str(blocker / "home")),
        timeout=120,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"drillbook: PREFECT_HOME {blocker / 'home'} is not writable (Not a directory)")
    assert json.loads(done.stdout) == {"verdict": "ERROR", "exit_code": 2, "database": "orders", "error": line.removeprefix("drillbook: ")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["run", "orders"], ["release", "--release", "v9", "--schema-version", "99", "--db", "orders", "--in-process", "--wait-seconds", "1"]],
    ids=["run", "release"],
)
def test_a_fail_prints_the_report_not_a_traceback(command, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, schema_version=99))
    # The session's Prefect server (a temporary one per process is what the other tests here cover): the output is the same.
    env = drillbook_env(tmp_path, **session_server())
    done = subprocess.run([DRILLBOOK, *command, "--config", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "Encountered exception" not in output, output
    assert "FAIL" in output


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "whole_group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_signal_mid_search_of_recover_leaves_nothing_running_and_no_output(
    sig, whole_group, replicate, s3_endpoint, write_catalogue, tmp_path
):
    key = f"{os.urandom(5).hex()}/app.db"
    replicated = replicate(key=key)
    output = tmp_path / "clean.db"
    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("get", "stall", after=2)  # drillbook's two header reads pass, the search's first restore hangs on its GETs
        config = write_catalogue(stalled_entry(proxy, key, replicated.live))
        before = replicated.live.read_bytes()
        argv = ["recover", "orders", "--config", str(config), "--find-clean", "--output", str(output), "--checks", "smoke"]
        process = start_drillbook(argv, tmp_path)
        seen = wait_for_restore(process)
        out, err = interrupt(process, sig, whole_group)

    assert process.returncode == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert signal.Signals(sig).name in err, err
    assert_all_gone(seen)
    assert not output.exists() and not list(tmp_path.glob("clean.db*")), "a partial output file was left"
    assert [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()] == [], "the search's scratch copies were left"
    assert replicated.live.read_bytes() == before
