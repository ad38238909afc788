"""`drillbook nightly --budget` through the CLI: a small fleet on file replicas with a seeded history, under a budget that
holds only some; the riskiest are drilled, the rest named with why, a due one left is said up front and costs exit 1.

History fixtures go in through the store's own API (record_drills), as tests/test_looking_ahead.py does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from drillbook.cli.main import main
from drillbook.flows.fleet import DEFAULT_MAX_CONCURRENT, DRILLS_LIMIT, ensure_limits, error_result
from drillbook.flows.queue import DrillQueue
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.history.budget import load_night
from drillbook.tasks.history.store import recent_drills, record_drills
from drillbook.tasks.outcome import Verdict
from drillbook.testing.s3 import replicate_once
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry

NAMES = ["new", "failing", "released", "aging", "calm", "fresh"]


@pytest.fixture
def one_drill_at_once():
    """The session server's drillbook-drills limit at 1 for the test (the plan's slots), as it was afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            before = client.read_global_concurrency_limit_by_name(DRILLS_LIMIT).limit
        except ObjectNotFound:
            before = DEFAULT_MAX_CONCURRENT
    yield 1
    ensure_limits([], before)


def file_replica(tmp_path, name: str) -> str:
    live = make_sample_database(tmp_path / f"{name}.db", customers=20, orders_per_customer=1)
    url = f"file://{tmp_path / 'replicas' / name}"
    replicate_once(live, url)
    return url


def seed(catalogue, name: str, days_ago: float, verdict: Verdict, *, wall: float = 20.0, rto: float = 5.0, release: str | None = None):
    result = error_result(catalogue.get(name), "seeded")
    result.drill_id = uuid4().hex
    result.started_at = datetime.now(UTC) - timedelta(days=days_ago)
    result.finished_at = result.started_at + timedelta(seconds=wall)
    result.verdict, result.release, result.rto_seconds = verdict, release, rto
    if verdict == Verdict.PASS:
        result.failure_mode, result.findings = None, []
    return result


def test_the_budget_drills_the_riskiest_and_names_the_rest(capsys, caplog, write_catalogue, tmp_path, one_drill_at_once):
    config = write_catalogue(
        *(entry(name, file_replica(tmp_path, name)) for name in NAMES),
        settings={"max_drill_age": "7d", "metrics_file": str(tmp_path / "drillbook.prom")},
    )
    catalogue = load_catalogue(config)
    seeded = [
        seed(catalogue, "failing", 2, Verdict.PASS),
        seed(catalogue, "failing", 1, Verdict.FAIL),
        seed(catalogue, "released", 2, Verdict.PASS),
        seed(catalogue, "released", 1, Verdict.ERROR, release="v2"),  # the release's drill, not passed since
        seed(catalogue, "aging", 6.5 - 120 / 86400, Verdict.PASS, wall=70.0),  # lapses in 12 h, longer than the whole budget
        seed(catalogue, "calm", 1.02, Verdict.PASS, rto=110.0),  # RTO near its 2m target: ahead of fresh
        seed(catalogue, "fresh", 1.02, Verdict.PASS),  # a day and half an hour ago: "5d 23h" whatever the test takes
    ]
    record_drills(catalogue.history_url, seeded)
    # 1 minute, one drill at once, 20 s a drill: never drilled, then the two not passing; aging does not fit at all.
    assert main(["nightly", "--config", str(config), "--budget", "1m", "--max-concurrent", str(one_drill_at_once)]) == 1
    said = caplog.messages  # the flow run's log: on stderr at a terminal, in the UI for a deployment's run
    assert said[:2] == [
        "budget 1m 00s for 1 drill(s) at once: drilling 3 of 6 databases in risk order (expected 1m 00s of wall), leaving 3",
        "1 database(s) whose max_drill_age lapses before the next nightly do not fit the 1m 00s budget and will go stale: aging",
    ]  # up front: before any drill's line
    out, unknown = capsys.readouterr().out.splitlines(), "change unknown: no drilled TXID on record"
    assert out[0] == "nightly drills: 3 PASS"
    assert sorted(line.split()[0] for line in out[2:5]) == ["failing", "new", "released"]
    assert out[5:] == [
        "6 databases, 100 % proven within 7d 00h, 3 tonight",
        "left, does not fit the budget: 3 (aging, calm, fresh)",
        f"change since the last drill (listed): drilled failing ({unknown}), released ({unknown}); left calm ({unknown}), fresh ({unknown})",
        "going stale before the next nightly: 1 (aging)",
    ]  # the seeded drills restored nothing: no TXID to count the change from, so it ranks as the most (calm ahead on its RTO)
    night = load_night(catalogue.evidence_dir)
    assert re.fullmatch(r"max_drill_age lapses in 12h 0[0-2]m", night.left[0].why), night.left[0].why
    assert [(out.database, out.why) for out in night.left[1:]] == [
        ("calm", f"max_drill_age lapses in 5d 23h; {unknown}"),
        ("fresh", f"max_drill_age lapses in 5d 23h; {unknown}"),
    ]
    old = {result.drill_id for result in seeded}
    tonight = [row.database for row in recent_drills(catalogue.history_url, limit=50) if row.drill_id not in old]
    assert sorted(tonight) == ["failing", "new", "released"]  # only the chosen three are new in the history
    metrics = (tmp_path / "drillbook.prom").read_text()
    assert "drillbook_fleet_databases 6.0" in metrics and "drillbook_fleet_proven_ratio 1.0" in metrics
    assert 'drillbook_nightly_left_databases{reason="not_fitting"} 3.0' in metrics
    assert "drillbook_nightly_going_stale_databases 1.0" in metrics
    assert main(["report", "--html", str(tmp_path / "page.html"), "--config", str(config)]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "6 databases, 100 % proven within 7d 00h." in page
    assert "<li>left, does not fit the budget: 3 (aging, calm, fresh)</li>" in page and '<div class="night" data-left="3">' in page


def test_the_summary_channels_carry_the_nights_lines():
    from io import StringIO

    from rich.console import Console

    from drillbook.tasks.notify import TerminalNotifier
    from drillbook.tasks.report.slack import render_nightly_summary
    from drillbook.tasks.webhook import summary_payload

    lines = ["6 databases, 100 % proven within 7d 00h, 3 tonight", "left, does not fit the budget: 1 (<aging>)"]
    message = render_nightly_summary([], notes=lines)
    assert (
        message.blocks[1]["text"]["text"]
        == "6 databases, 100 % proven within 7d 00h, 3 tonight\nleft, does not fit the budget: 1 (&lt;aging&gt;)"
    )
    assert message.text == "Nightly restore drills: no databases; 6 databases, 100 % proven within 7d 00h, 3 tonight"
    assert summary_payload([], "Nightly restore drills", lines)["notes"] == lines
    console = Console(file=StringIO(), width=200)
    TerminalNotifier(console).summary([], "Nightly restore drills", lines)
    assert console.file.getvalue().splitlines()[1:] == [f"  {line}" for line in lines]


def test_a_spent_budget_starts_no_more_drills_and_names_them(write_catalogue, tmp_path, one_drill_at_once, monkeypatch):
    import time

    from drillbook.flows import fleet
    from drillbook.flows.nightly import nightly_drills

    config = write_catalogue(*(entry(name, file_replica(tmp_path, name)) for name in ("a", "b", "c")), settings={"max_drill_age": "7d"})
    catalogue = load_catalogue(config)
    record_drills(catalogue.history_url, [seed(catalogue, name, 1, Verdict.PASS, wall=1.0) for name in ("a", "b", "c")])
    real = fleet.drill_one

    def slow(*args, **kwargs):  # the first drill runs past the budget (a real drill, then the rest of the 4 s)
        result = real(*args, **kwargs)
        time.sleep(4)
        return result

    monkeypatch.setattr(fleet, "drill_one", slow)
    # The plan holds all three (1 s each in the history, 4 s of budget); once the first drill ends, the wall time is spent.
    results = nightly_drills(config_path=str(config), budget=4, max_concurrent=one_drill_at_once)
    assert [r.database for r in results] == ["a"]
    night = load_night(catalogue.evidence_dir)
    assert night.drilled == ["a"] and [(out.database, out.reason.value) for out in night.left] == [
        ("b", "budget spent"),
        ("c", "budget spent"),
    ]
    assert night.going_stale == [] and night.lines()[1] == "left, budget spent: 2 (b, c)"


def test_no_drill_starts_once_the_budget_is_spent(write_catalogue, tmp_path):
    config = write_catalogue(*(entry(name, f"file://{tmp_path}/{name}") for name in ("a", "b")))
    entries = load_catalogue(config).databases()
    queue = DrillQueue(entries, {e.name: "one" for e in entries}, deadline=datetime.now(UTC) - timedelta(seconds=1))
    assert queue.take(None) is None and queue.stopped == ["a", "b"]
    running = DrillQueue(entries, {"a": "x", "b": "y"}, deadline=datetime.now(UTC) + timedelta(hours=1))
    assert running.take("y").name == "a"  # under a budget, the risk order beats the held bucket


def test_under_a_deadline_batches_are_dealt_in_risk_order_and_a_spent_batch_drills_nothing(write_catalogue, tmp_path):
    from drillbook.flows.fleet import batches_of, drill_batch

    config = write_catalogue(*(entry(name, f"file://{tmp_path}/{name}") for name in ("a", "b", "c", "d", "e")))
    entries = load_catalogue(config).databases()
    buckets = {"a": "z", "b": "y", "c": "z", "d": "y", "e": "x"}
    assert [[e.name for e in batch] for batch in batches_of(entries, buckets, 2, by_risk=True)] == [["a", "c", "e"], ["b", "d"]]
    assert [[e.name for e in batch] for batch in batches_of(entries, buckets, 2)] == [["e", "b", "d"], ["a", "c"]]  # by bucket
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert drill_batch([{"name": "a", "config_path": str(config)}], deadline=past) == []


def test_of_two_alike_the_budget_drills_the_one_written_since_its_last_drill(capsys, caplog, write_catalogue, tmp_path, one_drill_at_once):
    import logging
    import sqlite3

    from drillbook.tasks.ltx import newest_file
    from drillbook.tasks.outcome import Status
    from drillbook.tasks.replica import ReplicaReader
    from drillbook.tasks.restore import RestoreResult

    urls = {name: file_replica(tmp_path, name) for name in ("calm", "written")}  # "calm" first by name: the old tie-break
    config = write_catalogue(*(entry(name, url) for name, url in urls.items()), settings={"max_drill_age": "7d"})
    catalogue = load_catalogue(config)
    seeded = []
    for name, url in urls.items():  # both passed a day ago, alike in cost and RTO, at the replica's newest TXID then
        result = seed(catalogue, name, 1.02, Verdict.PASS, wall=40.0)
        result.restore = RestoreResult(status=Status.PASSED, txid=newest_file(ReplicaReader(url, timeout=10).ltx_files()).max_txid)
        seeded.append(result)
    record_drills(catalogue.history_url, seeded)
    with sqlite3.connect(tmp_path / "written.db") as live:  # then "written" changes: three syncs of new rows
        for round in range(3):
            live.execute(f"INSERT INTO customers (email, name, created_at) SELECT email || '+{round}', name, created_at FROM customers")
            live.commit()
            replicate_once(tmp_path / "written.db", urls["written"])
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    # 1 minute, one drill at once, 40 s a drill: one fits.
    assert main(["nightly", "--config", str(config), "--budget", "1m", "--max-concurrent", str(one_drill_at_once)]) == 0
    assert "listed 2 replica(s) not due tonight for their change since the last drill in" in "\n".join(caplog.messages)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "nightly drills: 1 PASS" and out[2].split()[0] == "written"
    night = load_night(catalogue.evidence_dir)
    assert night.drilled == ["written"] and [(o.database, o.why) for o in night.left] == [
        ("calm", "max_drill_age lapses in 5d 23h; no change since its last drill")
    ]
    assert re.fullmatch(r"3 transactions, [0-9.]+ kB", night.changes["written"]), night.changes
    assert out[3:] == [
        "2 databases, 100 % proven within 7d 00h, 1 tonight",
        "left, does not fit the budget: 1 (calm)",
        f"change since the last drill (listed): drilled written ({night.changes['written']}); left calm (no change)",
    ]
    # Tonight's drill recorded the TXID it restored as the listing names it: the next night counts from there.
    tonight = recent_drills(catalogue.history_url, "written", 1)[0]
    assert tonight.restored_txid == newest_file(ReplicaReader(urls["written"], timeout=10).ltx_files()).max_txid
