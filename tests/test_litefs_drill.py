"""The LiteFS drill through the CLI: a real cluster on FUSE started from the restored copy, drilled to PASS, and each
phase FAILing for its own cause (a replica stopped, a write lost across the switch, an old primary that writes again).

The faults come from outside the drill, as they would: a test thread watches the drill's `phase` file and stops
or pauses a node's real `litefs` process; the old primary's return "unchanged" is the catalogue's own choice.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from drillbook.cli.main import main
from drillbook.testing.corpus import S3Target
from drillbook.testing.primary import running_primary
from tests.conftest import entry
from tests.test_follow import processes_with

pytestmark = pytest.mark.slow


@pytest.fixture
def replica_url(s3_endpoint, tmp_path):
    key = f"{uuid.uuid4().hex[:10]}/app.db"
    with running_primary(tmp_path / "primary", S3Target(s3_endpoint, "drills", key)) as primary:
        time.sleep(1.5)  # a few uploads under writes
    return primary.url


def _litefs(replica: str, litefs_binary: Path, **litefs) -> dict:
    settings = {"nodes": ["node1", "node2"], "primary": "node1", "freshness_target": "1s", "seconds": "3s", "binary": str(litefs_binary)}
    return entry("orders", replica, rpo_target="1h", failover_rto_target="30s", litefs=settings | litefs)


def _node_process(scratch: Path, node: str) -> psutil.Process | None:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(scratch) in cmdline and f"/{node}/litefs.yml" in cmdline:
            return process
    return None


def _on_phase(scratch: Path, phase: str, act) -> threading.Thread:
    """Run `act()` once the drill's LiteFS cluster says it is in `phase`."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for marker in scratch.glob("**/litefs/phase"):
                try:
                    if marker.read_text().strip() == phase:
                        act()
                        return
                except FileNotFoundError:
                    pass
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _run(config: Path, capsys) -> tuple[int, dict]:
    code = main(["run", "orders", "--config", str(config), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_litefs_cluster_from_the_restored_copy_passes_every_phase(write_catalogue, replica_url, litefs_binary, capsys, tmp_path):
    code, result = _run(write_catalogue(_litefs(replica_url, litefs_binary)), capsys)
    assert code == 0, (result["findings"], result["phases"])
    phases = result["phases"]
    for name in ("restore", "read_freshness", "primary_switch", "write_retry", "degraded"):
        assert phases[name]["status"] == "passed", (name, phases[name])
    assert "staleness against the primary (target 1s): node2 p50 " in phases["read_freshness"]["summary"]
    assert "crash of node1: node2 took writes after " in phases["primary_switch"]["summary"]
    assert "old primary refused writes" in phases["primary_switch"]["summary"]
    assert ", 0 silently lost" in phases["write_retry"]["summary"]
    assert phases["degraded"]["summary"].startswith("read-only for ") and "a write failed in " in phases["degraded"]["summary"]
    assert processes_with(str(tmp_path / "scratch")) == []  # every litefs node stopped
    assert not any("fuse" in line and str(tmp_path) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_a_stopped_replica_is_a_stale_read(write_catalogue, replica_url, litefs_binary, capsys, tmp_path):
    config = write_catalogue(_litefs(replica_url, litefs_binary, nodes=["node1", "node2", "node3"], candidates=["node2"]))
    _on_phase(tmp_path / "scratch", "read freshness", lambda: _node_process(tmp_path / "scratch", "node3").send_signal(signal.SIGSTOP))
    code, result = _run(config, capsys)
    assert code == 1, result
    assert result["failure_mode"] == "stale read"
    assert result["phases"]["read_freshness"]["status"] == "failed"
    assert any("LiteFS replica node3: p95 staleness" in f["detail"] for f in result["findings"])
    assert result["action"].startswith("A LiteFS replica served stale reads")
    assert processes_with(str(tmp_path / "scratch")) == []


def test_a_write_lost_across_the_switch_is_a_promotion_failure(write_catalogue, replica_url, litefs_binary, capsys, tmp_path):
    config = write_catalogue(_litefs(replica_url, litefs_binary) | {"rpo_target": "0.3s"})
    paused = []  # the candidate crashes unnoticed while the primary takes writes: they never reach it
    _on_phase(
        tmp_path / "scratch",
        "primary switch",
        lambda: paused.append(_node_process(tmp_path / "scratch", "node2").send_signal(signal.SIGKILL)),
    )
    code, result = _run(config, capsys)
    assert paused, "the candidate was never paused"
    assert code == 1, result
    switch = result["phases"]["primary_switch"]
    assert switch["status"] == "failed", switch
    lost = [f for f in result["findings"] if f["mode"] == "promotion failure" and "before the switch are missing on node2" in f["detail"]]
    assert lost, result["findings"]
    assert processes_with(str(tmp_path / "scratch")) == []


def test_an_old_primary_back_unchanged_is_writer_lease_confusion(write_catalogue, replica_url, litefs_binary, capsys, tmp_path):
    code, result = _run(write_catalogue(_litefs(replica_url, litefs_binary, old_primary="unchanged")), capsys)
    assert code == 1, result
    assert result["failure_mode"] == "writer lease confusion"
    assert any("the old primary node1 came back (unchanged configuration) and took a write" in f["detail"] for f in result["findings"])
    assert result["action"].startswith("The old primary took writes again")
    assert processes_with(str(tmp_path / "scratch")) == []


@pytest.mark.parametrize(
    ("litefs", "says"),
    [
        (
            {"nodes": ["db1.internal:20202", "db2.internal:20202"], "primary": "db1.internal:20202"},
            "refused without allow_live_failover = true",
        ),
        ({"nodes": ["db1.internal", "node2"], "primary": "node2", "allow_live_failover": True}, "is not built"),
        ({"nodes": ["node1", "node2"], "primary": "node1", "lease": "consul"}, 'use lease = "static"'),
        ({"nodes": ["node1", "node2"], "primary": "node3"}, "primary 'node3' is not one of the nodes"),
    ],
)
def test_a_litefs_entry_naming_production_nodes_or_no_topology_is_refused(write_catalogue, litefs, says, capsys):
    config = write_catalogue(entry("orders", "s3://drills/app.db", litefs={"freshness_target": "1s"} | litefs))
    assert main(["check-config", "--config", str(config)]) == 2
    out = capsys.readouterr()
    assert says in out.out + out.err
    assert "Traceback" not in out.out + out.err
