"""Nightly drills: every database its own drill run, bounded by Prefect global concurrency limits."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from drillbook.flows.fleet import DRILLS_LIMIT, bucket_limit_name
from drillbook.flows.nightly import nightly_drills
from drillbook.flows.summary import shown_in_artifact, summary_rows
from drillbook.tasks.errors import ConfigError, DrillsFailed
from tests.conftest import corrupt_index, entry


def _artifact_rows(key: str) -> list[dict]:
    import json

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()  # newest per key
    matches = [a for a in artifact if a.key == key]
    assert matches, f"no artifact {key!r}"
    data = matches[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_one_bad_database_never_stops_the_others(replicate, write_catalogue):
    good = [replicate() for _ in range(3)]
    bad = replicate(corrupt_index)
    config = write_catalogue(
        *(entry(f"app{i}", r.replica, tags=["nightly"]) for i, r in enumerate(good)),
        entry("broken", bad.replica, tags=["nightly"]),
        entry("untagged", good[0].replica),
    )
    with pytest.raises(DrillsFailed) as caught:
        nightly_drills(config_path=str(config), tags=["nightly"], max_concurrent=2)
    results = {r.database: r for r in caught.value.results}
    assert set(results) == {"app0", "app1", "app2", "broken"}
    assert [results[f"app{i}"].verdict.value for i in range(3)] == ["PASS"] * 3
    assert (results["broken"].verdict.value, results["broken"].failure_mode.value) == ("FAIL", "integrity failure")
    assert str(caught.value) == "nightly drills: 1 FAIL, 3 PASS; not passed: broken FAIL (integrity failure)"

    rows = {row["database"]: row for row in _artifact_rows("nightly-drills")}
    assert set(rows) == {"app0", "app1", "app2", "broken"}
    assert rows["broken"]["verdict"] == "FAIL" and rows["broken"]["failure mode"] == "integrity failure"
    assert rows["app0"]["verdict"] == "PASS" and rows["app0"]["failure mode"] == ""
    assert rows["app0"]["RTO / target"].endswith("s / 120s") and rows["app0"]["RPO / target"].endswith("s / 600s")

    # Inside a fleet the drills are no runs of their own: their record is the evidence, the history and the table
    # above. Only the drill that did not pass leaves its Markdown artifact in the UI.
    with get_client(sync_client=True) as client:
        run_id = next(a for a in client.read_latest_artifacts() if a.key == "nightly-drills").flow_run_id
        names = {run.name for run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))}
        # Filtered by the server: the session's other tests leave more artifacts than one page holds.
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        keys = {a.key for a in artifacts if a.key}  # a keyless, typeless one is Prefect's own
    assert names and all(name.startswith(("drill-worker-", "ensure-", "record-", "publish-")) for name in names), sorted(names)
    assert keys == {"nightly-drills", "drill-broken", "drills-progress"}, [(a.key, a.type, a.description) for a in artifacts]
    # The progress artifact the UI showed as the drills ended: at 100 %, with the tally.
    [progress] = [a for a in artifacts if a.key == "drills-progress"]
    assert (progress.type, progress.data) == ("progress", 100.0)
    assert progress.description.startswith("4 of 4 done (1 FAIL, 3 PASS)"), progress.description


def test_all_passing_nightly_returns_every_result(replicate, write_catalogue):
    replicated = [replicate() for _ in range(2)]
    config = write_catalogue(*(entry(f"db{i}", r.replica) for i, r in enumerate(replicated)))
    results = nightly_drills(config_path=str(config))
    assert [(r.database, r.verdict.value) for r in results] == [("db0", "PASS"), ("db1", "PASS")]
    assert summary_rows(results)[0]["verdict"] == "PASS"


def test_the_table_artifact_is_bounded_and_shows_what_did_not_pass_first():
    from types import SimpleNamespace

    from drillbook.tasks.outcome import Verdict

    fleet = [SimpleNamespace(name=f"t{n}", verdict=Verdict.FAIL if n % 1000 == 7 else Verdict.PASS) for n in range(10_000)]
    shown = shown_in_artifact(fleet, limit=500)
    assert len(shown) == 500
    assert [r.name for r in shown if r.verdict != Verdict.PASS] == [f"t{n}" for n in range(10_000) if n % 1000 == 7]  # all ten
    assert [r.name for r in shown[:3]] == ["t0", "t1", "t2"]  # the run's order kept
    small = fleet[:20]
    assert shown_in_artifact(small, limit=500) == small


def test_concurrency_limit_holds_across_two_nightlies(replicate, write_catalogue, tmp_path):
    """Two nightlies at once start four workers between them; the global drills limit of 2 still bounds the restores.

    Each nightly alone starts only as many workers as the limit, so one nightly would pass even if the limit
    were never applied: two are what make this test able to fail.
    """
    import concurrent.futures

    configs = []
    for night in range(2):
        replicated = [replicate() for _ in range(3)]
        configs.append(write_catalogue(*(entry(f"n{night}c{i}", r.replica) for i, r in enumerate(replicated)), name=f"night{night}.toml"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(nightly_drills, config_path=str(config), max_concurrent=2) for config in configs]
        results = [result for run in runs for result in run.result()]
    assert len(results) == 6
    assert all(r.passed for r in results), [(r.database, r.verdict.value, r.findings) for r in results]
    restores = [(r.restore.started_at, r.restore.finished_at) for r in results]
    assert all(start and end for start, end in restores)
    assert _peak(restores) <= 2
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(DRILLS_LIMIT).limit == 2
        assert client.read_global_concurrency_limit_by_name(bucket_limit_name(_entry(configs[0], "n0c0"))).limit >= 1


def _peak(intervals) -> int:
    """The most intervals open at any instant (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _entry(config, name):
    from drillbook.tasks.config import load_catalogue

    return load_catalogue(config).get(name)


def test_unknown_tag_and_unknown_database_are_named(replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica, tags=["payments"]))
    with pytest.raises(ConfigError, match=r"no database carries the tag\(s\) nightly \(tags in use: payments\)"):
        nightly_drills.fn(config_path=str(config), tags=["nightly"])
    with pytest.raises(ConfigError, match=r"no database named 'ordrs' \(known: orders\)"):
        nightly_drills.fn(config_path=str(config), databases=["ordrs"])
