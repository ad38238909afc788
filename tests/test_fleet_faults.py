"""Faults at fleet scale (issue 31): a throttled bucket, a worker killed mid-drill.

Real parts: moto behind fault proxies (one per bucket), the real litestream, the nightly flow on the test harness's
Prefect server with two workers.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest

from drillbook.cli.main import main
from drillbook.flows.fleet import bucket_limit_name
from drillbook.flows.nightly import nightly_drills
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.history.store import recent_drills
from drillbook.tasks.scratch import owner_file
from drillbook.tasks.storage import store_scope
from drillbook.tasks.text import slug
from drillbook.testing.faultproxy import FaultProxy
from drillbook.testing.s3 import create_bucket, replicate_once, s3_replica_url
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry
from tests.test_faults_process import assert_all_gone, session_server, stalled_entry, start_drillbook, wait_for_restore
from tests.test_nightly import _peak

THROTTLED = "throttled (503 SlowDown)"


def _replica(tmp_path: Path, s3_endpoint: str, bucket: str, endpoint: str) -> str:
    """A small database replicated once into `bucket` (straight to moto); its replica URL through `endpoint`."""
    key = f"{uuid.uuid4().hex[:10]}/app.db"
    live = tmp_path / f"live-{uuid.uuid4().hex[:6]}.db"
    make_sample_database(live, customers=100)
    replicate_once(live, s3_replica_url(s3_endpoint, bucket, key))
    return s3_replica_url(endpoint, bucket, key)


def _limit(endpoint: str, bucket: str) -> str:
    return f"drillbook-bucket-{slug(store_scope(s3_replica_url(endpoint, bucket, 'x/app.db')))}"


def test_a_throttled_bucket_slows_its_own_drills_not_the_fleet(s3_endpoint, write_catalogue, tmp_path):
    """Each object GET of one bucket first answers 503 SlowDown: its drills get through slower, one at a time, and their reports name
    the throttling; the other bucket's drills run beside them at full speed and pass."""
    create_bucket(s3_endpoint, "drills-quiet")
    with FaultProxy(s3_endpoint) as first, FaultProxy(s3_endpoint) as second:
        # The fleet drills buckets in the order of their limits' names: the throttled one goes first, the worst case.
        pairs = sorted([(first, "drills"), (second, "drills-quiet")], key=lambda pair: _limit(pair[0].url, pair[1]))
        (throttled_proxy, loud_bucket), (quiet_proxy, quiet_bucket) = pairs
        entries = [entry(f"loud{i}", _replica(tmp_path, s3_endpoint, loud_bucket, throttled_proxy.url)) for i in range(4)]
        entries += [entry(f"quiet{i}", _replica(tmp_path, s3_endpoint, quiet_bucket, quiet_proxy.url)) for i in range(2)]
        config = write_catalogue(*entries)
        assert sorted({bucket_limit_name(e) for e in load_catalogue(config).databases()}) == [
            _limit(throttled_proxy.url, loud_bucket),
            _limit(quiet_proxy.url, quiet_bucket),
        ]
        throttled_proxy.fail("get", "503", first_try=True)
        results = nightly_drills(config_path=str(config), max_concurrent=2)
    by_name = {r.database: r for r in results}
    assert {name: r.verdict.value for name, r in by_name.items()} == dict.fromkeys(by_name, "PASS")
    throttled = [r for name, r in by_name.items() if name.startswith("loud")]
    assert all(any(THROTTLED in note for note in r.notes) for r in throttled), [r.notes for r in throttled]
    assert not any(THROTTLED in note for r in by_name.values() if r.database.startswith("quiet") for note in r.notes)
    assert sum(1 for seen in throttled_proxy.seen("get") if seen.outcome == "503") >= 4

    bundles = {b.database: b for b in (read_bundle(path) for path in (tmp_path / "evidence").rglob("*.json"))}
    spans = {name: (b.started_at, b.finished_at) for name, b in bundles.items()}
    loud_spans = sorted(span for name, span in spans.items() if name.startswith("loud"))
    first_throttled_end = min(end for _, end in loud_spans)
    later = [span for span in loud_spans if span[0] >= first_throttled_end]
    assert later and _peak(later) == 1  # once throttled, one drill of that bucket at a time
    quiet_ends = [end for name, (_, end) in spans.items() if name.startswith("quiet")]
    assert max(quiet_ends) < max(end for _, end in loud_spans)  # the quiet bucket did not wait for the throttled one


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie of the killed drill
        return ""


@pytest.mark.slow
def test_a_drill_killed_mid_restore_is_not_recorded_and_the_next_drill_removes_its_scratch(
    capsys, replicate, s3_endpoint, write_catalogue, tmp_path
):
    """SIGKILL to a real `drillbook run` (and its litestream) mid-restore: nothing of it in the history; its scratch,
    which nobody ended, is removed by the next drill of that database, which says whose it was."""
    key = f"{uuid.uuid4().hex[:10]}/app.db"
    replicated = replicate(key=key)
    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("get", "stall", after=1)  # the header read passes, the restore hangs: killed while it runs
        config = write_catalogue(stalled_entry(proxy, key, replicated.live))
        # Against the session's Prefect server, as a fleet's drills run against a real one.
        process = start_drillbook(["run", "orders", "--config", str(config), "--json"], tmp_path, **session_server())
        seen = wait_for_restore(process)
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        # Its litestream leads a group of its own and lives on, restoring into the scratch.
        orphans = [p for p in seen if "litestream" in _command(p)]
        assert orphans, "expected the killed drill's litestream to outlive it"
        (left,) = [d for d in (tmp_path / "scratch" / "orders").iterdir() if d.is_dir()]
        assert json.loads(owner_file(left).read_text())["pid"] == process.pid
        history = f"sqlite:///{tmp_path / 'evidence' / 'history.db'}"
        assert not (tmp_path / "evidence" / "history.db").exists() or recent_drills(history, "orders") == []

        proxy.heal()
        code = main(["run", "orders", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (code, result["verdict"]) == (0, "PASS")
    assert_all_gone(orphans)  # the next drill stopped what the killed one left writing into its scratch
    assert not left.exists() and not owner_file(left).exists()
    assert any(
        f"removed {left}" in note and f"(pid {process.pid} on " in note and "was killed mid-drill" in note for note in result["notes"]
    )
    assert [(row.drill_id, row.verdict) for row in recent_drills(history, "orders")] == [(result["drill_id"], "PASS")]  # counted once
    assert list((tmp_path / "scratch" / "orders").iterdir()) == []  # the new drill's own scratch and owner file are gone too
