"""`drillbook server start|stop|status`: one background Prefect server the drill commands use while it runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import S3_CREDENTIALS, entry

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(tmp_path: Path) -> dict[str, str]:
    """drillbook's commands in a subprocess with their own background server's state, Prefect home and S3 credentials."""
    return {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DRILLBOOK_SERVER_HOME": str(tmp_path / "server-home"),
        "PREFECT_HOME": str(tmp_path / "client-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **S3_CREDENTIALS,
    }


def test_drills_use_the_background_server_and_stop_leaves_nothing(replicate, write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", replicate().replica))
    port = _free_port()
    env = server_env(tmp_path)

    def drillbook(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "drillbook"), *argv], env=env, capture_output=True, text=True, timeout=timeout)

    assert drillbook("server", "status").returncode == 1
    try:
        started = drillbook("server", "start", "--port", str(port))
        assert started.returncode == 0, started.stdout + started.stderr
        api_url = f"http://127.0.0.1:{port}/api"
        assert f"Prefect server running at {api_url}" in started.stdout
        assert drillbook("server", "start", "--port", str(port)).stdout.startswith("a drillbook Prefect server is already running")
        status = drillbook("server", "status")
        assert (status.returncode, status.stdout.split()[:3]) == (0, ["running", "at", api_url])

        ran = drillbook("run", "orders", "--config", str(config), "--json")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"drillbook: using the local Prefect server at {api_url}" in ran.stderr
        assert json.loads(ran.stdout)["verdict"] == "PASS"
        # The drill ran on that server: its flow run is there.
        body = json.dumps({"flows": {"name": {"any_": ["drill-database"]}}}).encode()
        request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert [run["name"] for run in json.loads(answer.read())] == ["drill-orders"]
    finally:
        stopped = drillbook("server", "stop")
    assert stopped.returncode == 0 and "stopped the Prefect server" in stopped.stdout
    assert drillbook("server", "status").returncode == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
