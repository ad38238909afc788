"""Pruning at fleet scale (issue 35): history rows, evidence files and drillbook's Prefect runs older than the retention."""

from __future__ import annotations

import ast
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.history.prune import DRILLBOOK_FLOWS, prune_flow_runs
from drillbook.tasks.history.store import recent_drills, record_drills
from drillbook.tasks.result import DrillResult
from tests.conftest import entry

ROOT = Path(__file__).resolve().parent.parent


def _drill(evidence_dir: Path, database: str, days_ago: float, verdict: str = "PASS") -> DrillResult:
    started = datetime.now(UTC) - timedelta(days=days_ago)
    drill_id = f"{database[:4]}{int(days_ago * 10):04d}{verdict[0]}"
    evidence = evidence_dir / database / f"{drill_id}.json"
    evidence.parent.mkdir(parents=True, exist_ok=True)
    evidence.write_text("{}")
    return DrillResult.model_validate(
        {
            "drill_id": drill_id,
            "database": database,
            "started_at": started,
            "finished_at": started + timedelta(seconds=20),
            "verdict": verdict,
            "failure_mode": None if verdict == "PASS" else "restore lag",
            "rto_seconds": 12.0,
            "rto_target_seconds": 120.0,
            "rpo_seconds": 3.0,
            "rpo_target_seconds": 600.0,
            "evidence": str(evidence),
        }
    )


def test_prune_keeps_each_databases_newest_drill_and_newest_pass(tmp_path, write_catalogue, capsys):
    evidence = tmp_path / "evidence"
    config = write_catalogue(
        entry("orders", (tmp_path / "r1").as_uri()), entry("users", (tmp_path / "r2").as_uri()), settings={"history_retention": "30d"}
    )
    url = f"sqlite:///{evidence / 'history.db'}"
    # orders: passes 100, 90 and 1 day ago (the two old ones go); users: a PASS 80 days ago, then only FAILs, the newest 40 days ago
    drills = [_drill(evidence, "orders", days) for days in (100, 90, 1)]
    drills += [_drill(evidence, "users", 80), _drill(evidence, "users", 60, "FAIL"), _drill(evidence, "users", 40, "FAIL")]
    record_drills(url, drills)

    assert main(["prune", "--config", str(config)]) == 0  # a dry run: counts, nothing deleted
    out = capsys.readouterr().out
    assert "would delete 3 drill(s) from the history, 3 evidence file(s), 0 Prefect flow run(s)" in out, out
    assert "kept 2 older drill(s)" in out and "dry run: pass --apply to delete" in out, out
    assert len(recent_drills(url, limit=50)) == 6

    assert main(["prune", "--config", str(config), "--apply", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["applied"], counts["drills"], counts["kept"], counts["evidence_files"]) == (True, 3, 2, 3)
    left = {(row.database, row.drill_id) for row in recent_drills(url, limit=50)}
    assert left == {("orders", drills[2].drill_id), ("users", drills[3].drill_id), ("users", drills[5].drill_id)}
    assert sorted(p.name for p in evidence.rglob("*.json")) == sorted(f"{d}.json" for _, d in left)

    assert main(["stale", "--config", str(config)]) == 1  # users' last PASS survived: stale by its age, not "never passed"
    out = capsys.readouterr().out
    assert "STALE users: last PASS" in out and "ok    orders: last PASS" in out, out


def test_prune_without_a_retention_is_one_error_line(tmp_path, write_catalogue, capsys):
    config = write_catalogue(entry("orders", (tmp_path / "r1").as_uri()))
    assert main(["prune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "history_retention is not set" in err and "--older-than" in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exited:  # argparse: a day or more
        main(["prune", "--config", str(config), "--older-than", "1h"])
    assert exited.value.code == 2 and "a duration of a day or more" in capsys.readouterr().err


def test_prune_deletes_ended_runs_of_the_named_flows_before_the_cutoff_only():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Completed, Failed, Running

    @flow(name="prune-test-drillbook")
    def ours() -> None: ...

    @flow(name="prune-test-someone-else")
    def theirs() -> None: ...

    with get_client(sync_client=True) as client:
        old_done = client.create_flow_run(ours, state=Completed())
        old_failed = client.create_flow_run(ours, state=Failed())
        client.set_flow_run_state(old_done.id, Running(), force=True)  # a start time, then the end
        client.set_flow_run_state(old_done.id, Completed(), force=True)
        client.set_flow_run_state(old_failed.id, Running(), force=True)
        client.set_flow_run_state(old_failed.id, Failed(), force=True)
        running = client.create_flow_run(ours, state=Running())
        other = client.create_flow_run(theirs, state=Running())
        client.set_flow_run_state(other.id, Completed(), force=True)
        time.sleep(0.05)
        cutoff = datetime.now(UTC)
        time.sleep(0.05)
        new = client.create_flow_run(ours, state=Running())
        client.set_flow_run_state(new.id, Completed(), force=True)

        names = ("prune-test-drillbook",)
        assert prune_flow_runs(cutoff, apply=False, flow_names=names) == 2
        assert prune_flow_runs(cutoff, apply=True, flow_names=names) == 2
        for gone in (old_done, old_failed):
            try:
                client.read_flow_run(gone.id)
            except ObjectNotFound:
                continue
            raise AssertionError(f"flow run {gone.id} was not deleted")
        for kept in (running, other, new):
            assert client.read_flow_run(kept.id).id == kept.id
        assert prune_flow_runs(cutoff, apply=False, flow_names=names) == 0


def test_every_drillbook_flow_is_named_for_pruning():
    names = set()
    for path in (ROOT / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "flow":
                names |= {k.value.value for k in node.keywords if k.arg == "name"}
    assert names == set(DRILLBOOK_FLOWS)


def test_prune_on_postgresql_keeps_the_same_rows(postgres_url, tmp_path):
    from drillbook.tasks.history.prune import prune_history

    evidence = tmp_path / "evidence"
    drills = [_drill(evidence, "orders", days) for days in (100, 90, 1)] + [
        _drill(evidence, "users", 80),
        _drill(evidence, "users", 40, "FAIL"),
    ]
    record_drills(postgres_url, drills)
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert prune_history(postgres_url, cutoff, evidence, apply=False).drills == 2
    counts = prune_history(postgres_url, cutoff, evidence, apply=True)
    assert (counts.drills, counts.kept, counts.evidence_files) == (2, 2, 2)
    assert {row.drill_id for row in recent_drills(postgres_url, limit=50)} == {drills[2].drill_id, drills[3].drill_id, drills[4].drill_id}
