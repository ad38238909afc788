"""The Prefect server restarting in the middle of a nightly: nothing recorded is lost, nothing is counted twice,
and what was not drilled is named; the nightly never ends in a traceback or a PASS it did not earn.

A real background server (`drillbook server start`), a real nightly in its own process drilling real replicas one
at a time, and the server stopped and started again on the same port and state while the drills run.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import entry
from tests.test_server import _free_port, server_env

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DATABASES = 8


def _drilled(history: Path) -> list[str]:
    if not history.exists():
        return []
    try:
        with sqlite3.connect(f"file:{history}?mode=ro", uri=True, timeout=5) as connection:
            return [row[0] for row in connection.execute("SELECT database FROM drillbook_drills")]
    except sqlite3.Error:
        return []


def test_a_server_restart_mid_nightly_loses_no_drill_and_names_the_rest(replicate, write_catalogue, tmp_path):
    names = [f"tenant-{n}" for n in range(DATABASES)]
    config = write_catalogue(*(entry(name, replicate().replica) for name in names))
    history = tmp_path / "evidence" / "history.db"
    port = _free_port()
    env = server_env(tmp_path)

    def drillbook(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "drillbook"), *argv], env=env, capture_output=True, text=True, timeout=180)

    started = drillbook("server", "start", "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    nightly = None
    try:
        nightly = subprocess.Popen(
            [str(BIN / "drillbook"), "nightly", "--config", str(config), "--max-concurrent", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while len(_drilled(history)) < 2 and nightly.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        before = _drilled(history)
        assert len(before) >= 2, f"the nightly did not get going: {before}"
        assert nightly.poll() is None and len(before) < DATABASES, "the nightly ended before the server stopped"
        stopped = drillbook("server", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        time.sleep(3)  # the nightly meets a server that is not there
        again = drillbook("server", "start", "--port", str(port))
        assert again.returncode == 0, again.stdout + again.stderr
        out, err = nightly.communicate(timeout=300)
    finally:
        if nightly is not None and nightly.poll() is None:
            nightly.kill()
        drillbook("server", "stop")

    after = _drilled(history)
    print(f"\nexit {nightly.returncode}; drilled {len(after)} of {DATABASES}\nstdout: {out[-1500:]}\nstderr: {err[-2500:]}")
    assert "Traceback" not in err and "Traceback" not in out
    assert set(before) <= set(after)  # nothing recorded is lost
    assert len(after) == len(set(after))  # nothing counted twice
    assert nightly.returncode in (0, 1, 2)
    if nightly.returncode == 0:
        assert sorted(after) == sorted(names)  # a PASS only when every database was drilled and passed
    else:
        for name in set(names) - set(after):  # what was not drilled is named
            assert name in out + err, name
