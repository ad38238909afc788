"""History that looks ahead, from the CLI with real drills: forecast, plan, stale alerts, metrics, the history table.

History fixtures are real drills, or copies of a real drill's result put in
through the store's own API (record_drills), never rows edited behind its back.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.history.store import recent_drills, record_drills
from drillbook.tasks.outcome import Verdict
from drillbook.tasks.report.drill import render_markdown
from drillbook.tasks.result import DrillResult
from drillbook.testing.slack_standin import SlackStandIn
from tests.conftest import entry

TOKEN = "xoxb-1111-2222-drillbook-test-token"


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def seed(
    url: str,
    template: DrillResult,
    rtos: list[float],
    *,
    days_apart: float = 1.0,
    end: datetime | None = None,
    sizes: list[int] | None = None,
    verdict: Verdict = Verdict.PASS,
) -> list[DrillResult]:
    """Earlier drills: copies of a real drill's result, spread over past days, with the given RTOs (through the store's API)."""
    end = end or template.started_at - timedelta(hours=1)
    made = []
    for index, rto in enumerate(rtos):
        started = end - timedelta(days=days_apart * (len(rtos) - 1 - index))
        copy = template.model_copy(deep=True)
        copy.drill_id = uuid4().hex[:8]
        copy.started_at, copy.finished_at = started, started + timedelta(seconds=rto + 1)
        copy.verdict = verdict
        copy.rto_seconds = rto
        copy.phases["restore"].seconds = max(0.01, rto - 1)
        if sizes is not None and copy.integrity is not None:
            copy.integrity.file_bytes = sizes[index]
        made.append(copy)
    record_drills(url, made)
    return made


@pytest.fixture
def slack(monkeypatch):
    with SlackStandIn(token=TOKEN) as standin:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        yield standin


def with_slack(config: Path, slack: SlackStandIn, tmp_path: Path) -> Path:
    config.write_text(
        config.read_text()
        + f'\n[slack]\nchannel = "#drills"\napi_url = "{slack.api_url}"\noutbox_dir = "{tmp_path / "outbox"}"\ntimeout = "2s"\n'
    )
    return config


def _artifact(key: str) -> str:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def latest():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
            )

    artifacts = asyncio.run(latest())
    assert artifacts, f"no {key} artifact"
    return artifacts[0].data


# ---------------------------------------------------------------------------------------------- forecast and plan


def test_first_drill_does_not_guess_and_the_next_one_plans_from_it(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    code, first = run_json(capsys, "run", "orders", "--config", str(config))
    assert code == 0
    bundle = read_bundle(Path(first["evidence"]))
    assert bundle.outlook.forecast.line.endswith("no forecast yet, 1 of the 5 passing drills it needs (not guessing)")
    assert bundle.plan.status == "passed" and bundle.plan.bytes_to_fetch > 0 and bundle.plan.files
    assert bundle.plan.expected_rto_seconds is None  # nothing measured yet, nowhere (no fleet either)
    assert bundle.versions["litestream"] == "0.5.17" and bundle.versions["drillbook"]

    code, second = run_json(capsys, "run", "orders", "--config", str(config))
    bundle = read_bundle(Path(second["evidence"]))
    assert bundle.plan.expected_rto_seconds > 0 and bundle.plan.throughput_source == "this database's last 1 drill(s)"
    row = recent_drills(load_catalogue(config).history_url, "orders", limit=1)[0]
    assert row.planned_rto_seconds == bundle.plan.expected_rto_seconds and row.planned_bytes == bundle.plan.bytes_to_fetch
    assert row.restored_bytes == bundle.integrity.file_bytes > 0
    assert row.ltx_files == bundle.replica.files and row.ltx_levels == bundle.replica.levels and row.ltx_bytes == bundle.replica.total_bytes
    assert set(row.phase_seconds) == {"replica", "restore", "integrity", "smoke", "expectations", "writers"}
    assert row.litestream_version == "0.5.17"


def test_a_forecast_inside_the_horizon_warns_everywhere_and_never_changes_the_verdict(capsys, replicate, write_catalogue, slack, tmp_path):
    replicated = replicate()
    config = with_slack(write_catalogue(entry("forecast-db", replicated.replica, rto_target="2m")), slack, tmp_path)
    code, first = run_json(capsys, "run", "forecast-db", "--config", str(config))
    assert code == 0
    url = load_catalogue(config).history_url
    # Restores growing 2 s a night for ten nights, to 98 s: the 2 m target is about 11 days away.
    seed(url, read_bundle(Path(first["evidence"])), [80 + 2 * i for i in range(10)], sizes=[10_000_000 + 500_000 * i for i in range(10)])

    code = main(["run", "forecast-db", "--config", str(config)])
    terminal = capsys.readouterr().out
    assert code == 0  # a WARNING, not a FAIL
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", terminal).split())
    assert re.search(
        r"WARNING forecast: RTO \S+, \+14\.0 s/week: crosses the 2m 00s target in about 1[01] days, around \d{4}-\d\d-\d\d \(12 drills over",
        flat,
    ), flat
    assert "(inside the 30-day horizon)" in flat

    # The newest bundle by its own start time: two drills in one second share the file name's timestamp.
    result = max((read_bundle(p) for p in (tmp_path / "evidence" / "forecast-db").glob("*.json")), key=lambda r: r.started_at)
    assert result.verdict == Verdict.PASS and result.outlook.forecast.warning
    assert result.outlook.forecast.method.startswith("Theil-Sen")
    assert result.outlook.advice is not None and "grows by" in result.outlook.advice.reasons[0]
    assert "WARNING forecast:" in render_markdown(result) and "No-go advice" in render_markdown(result)
    artifact = _artifact("drill-forecast-db")
    assert (
        "- **WARNING forecast:** RTO" in artifact and "crosses the 2m 00s target in about" in artifact and "- **No-go advice:**" in artifact
    )
    chart = Path(result.outlook.chart)
    assert chart.read_bytes().startswith(b"\x89PNG")

    message = slack.messages[-1]
    text = json.dumps(message["blocks"])
    assert ":warning: *Forecast:* RTO" in text and "crosses the 2m 00s target in about" in text
    uploads = [f for f in slack.files if f["filename"].endswith(".png")]
    assert len(uploads) == 1 and uploads[0]["raw"] == chart.read_bytes() and uploads[0]["thread_ts"] == message["ts"]


def test_nightly_attaches_the_chart_of_a_database_whose_forecast_is_inside_the_horizon(capsys, replicate, write_catalogue, slack, tmp_path):
    replicated = replicate()
    config = with_slack(write_catalogue(entry("orders", replicated.replica), entry("users", replicated.replica)), slack, tmp_path)
    assert main(["run", "orders", "--config", str(config), "--json"]) == 0
    template = read_bundle(Path(json.loads(capsys.readouterr().out)["evidence"]))
    seed(load_catalogue(config).history_url, template, [80 + 2 * i for i in range(10)])
    slack.requests.clear()

    assert main(["nightly", "--config", str(config)]) == 0
    capsys.readouterr()
    summary = slack.messages[0]
    assert "orders" in json.dumps(summary["blocks"]) and "RTO forecast reaches its target in about" in json.dumps(summary["blocks"])
    pngs = [f for f in slack.files if f["filename"].endswith(".png")]
    assert [f["filename"].split("-")[1] for f in pngs] == ["orders"] and pngs[0]["thread_ts"] == summary["ts"]


def test_plan_prints_what_a_restore_would_fetch_without_restoring(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    config = write_catalogue(
        entry("orders", replicated.replica),
        entry("users", replicated.replica),
        entry("empty", replicated.replica.replace("/app.db", "/none.db")),
    )
    assert main(["plan", "orders", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert re.match(
        r"orders: plan: fetch [\d,]+ bytes in 1 LTX file\(s\); expected RTO unknown \(.*no drill with a measured throughput yet", out
    ), out
    assert "nothing was restored" in out
    assert not (tmp_path / "scratch").exists() or not list((tmp_path / "scratch").rglob("*.db"))

    assert main(["run", "orders", "--config", str(config)]) == 0
    capsys.readouterr()
    code, plan = run_json(capsys, "plan", "users", "--config", str(config))  # users has no drills: the fleet's throughput
    assert code == 0 and plan["throughput_source"] == "1 drill(s) across the fleet" and plan["expected_rto_seconds"] > 0
    assert plan["bytes_to_fetch"] == sum(f["size"] for f in plan["files"])

    assert main(["plan", "empty", "--config", str(config)]) == 1
    assert "not planned: no backup: nothing stored under" in capsys.readouterr().out
    assert main(["plan", "empty", "--litestream", "--config", str(config)]) == 1  # litestream's own plan says the same its way
    assert "litestream restore -dry-run exited 1" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- history table


def test_history_is_a_compact_table_when_piped_and_json_is_unchanged(capsys, replicate, write_catalogue, monkeypatch):
    replicated = replicate()
    config = write_catalogue(entry("a-database-with-a-rather-long-name", replicated.replica))
    assert main(["run", "a-database-with-a-rather-long-name", "--config", str(config)]) == 0
    capsys.readouterr()
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["history", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:4] == ["started", "(UTC)", "database", "verdict"] and "PASS" in lines[1]
    assert "/" not in lines[1].split("PASS")[1].replace(" / ", "")  # no path in the compact table

    monkeypatch.setenv("COLUMNS", "400")  # the evidence path holds the full drill UUID
    assert main(["history", "--config", str(config)]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert "evidence" in wide[0] and str(config.parent / "evidence") in wide[1]

    code, rows = run_json(capsys, "history", "--config", str(config))
    assert [sorted(r) for r in rows] == [sorted(read_bundle(Path(rows[0]["evidence"])).summary())]


# ---------------------------------------------------------------------------------------------- stale


def test_stale_lists_old_and_never_passed_databases_and_alerts_once_per_transition(capsys, replicate, write_catalogue, slack, tmp_path):
    replicated = replicate()
    config = with_slack(
        write_catalogue(
            entry("fresh", replicated.replica),
            entry("old", replicated.replica, max_drill_age="1d", owners=["U0ADA1"]),
            entry("never", replicated.replica),
        ),
        slack,
        tmp_path,
    )
    assert main(["run", "fresh", "--config", str(config), "--json"]) == 0
    template = read_bundle(Path(json.loads(capsys.readouterr().out)["evidence"]))
    old = template.model_copy(update={"database": "old"})
    seed(load_catalogue(config).history_url, old, [5.0], end=datetime.now(UTC) - timedelta(days=3))
    slack.requests.clear()

    assert main(["stale", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "2 of 3 database(s) stale (no PASS within max_drill_age)"
    assert "  STALE never: no passing drill recorded (max_drill_age 2d 00h)" in out
    assert re.search(r"  STALE old: last PASS \S+ \S+ UTC, 3d 00h ago \(max_drill_age 24h 00m\)", out), out
    assert re.search(r"  ok    fresh: last PASS \S+ \S+ UTC, \d+\.\ds ago", out), out
    assert not slack.messages  # listing alone alerts nobody

    assert main(["stale", "--notify", "--config", str(config)]) == 1
    assert main(["stale", "--notify", "--config", str(config)]) == 1  # an hour later: still stale, no second alert
    capsys.readouterr()
    alerts = [m["text"] for m in slack.messages]
    assert sorted(a.split(":")[0] for a in alerts) == ["STALE never", "STALE old"]
    assert "<@U0ADA1>" in json.dumps([m["blocks"] for m in slack.messages if m["text"].startswith("STALE old")])

    # `old` gets a passing drill: one recovery message, then quiet.
    new_config = config.read_text().replace('name = "old"', 'name = "old"')
    config.write_text(new_config)
    assert main(["run", "old", "--config", str(config)]) == 0
    assert main(["stale", "--notify", "--config", str(config)]) == 1
    assert main(["stale", "--notify", "--config", str(config)]) == 1
    capsys.readouterr()
    alerts = [m["text"] for m in slack.messages]
    assert len(alerts) == 4  # 2 stale alerts, the drill's own report, 1 recovery
    assert alerts[-1].startswith("RECOVERED old: passing drill at")

    code, statuses = run_json(capsys, "stale", "--config", str(config))
    assert code == 1 and [s["database"] for s in statuses if s["stale"]] == ["never"]


def test_the_stale_flow_runs_as_the_deployment_would(replicate, write_catalogue):
    from drillbook.flows.stale import stale_drills

    replicated = replicate()
    config = write_catalogue(entry("never", replicated.replica))
    statuses = stale_drills(config_path=str(config))
    assert [(s.database, s.stale) for s in statuses] == [("never", True)]


# ---------------------------------------------------------------------------------------------- metrics


def _families(text: str) -> dict[str, dict[tuple, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_textfile_reads_back_with_prometheus_parser_and_every_drill_refreshes_it(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    metrics_file = tmp_path / "textfile" / "drillbook.prom"
    config = write_catalogue(
        entry("orders", replicated.replica),
        entry("users", replicated.replica, schema_version=99),
        settings={"metrics_file": str(metrics_file)},
    )
    assert main(["run", "orders", "--config", str(config)]) == 0
    assert metrics_file.is_file()  # the drill refreshed it
    assert main(["run", "users", "--config", str(config)]) == 1
    capsys.readouterr()
    metrics = _families(metrics_file.read_text())
    orders, users = (("database", "orders"),), (("database", "users"),)
    now = datetime.now(UTC).timestamp()
    assert 0 <= now - metrics["drillbook_last_pass_timestamp_seconds"][orders] < 120  # a time, not an age: it never freezes
    assert users not in metrics["drillbook_last_pass_timestamp_seconds"]  # never passed
    assert "drillbook_last_pass_age_seconds" not in metrics and "drillbook_stale" not in metrics
    assert metrics["drillbook_rto_target_seconds"][orders] == 120.0 and metrics["drillbook_rpo_target_seconds"][orders] == 600.0
    assert 0 < metrics["drillbook_last_rto_seconds"][orders] < 120
    assert metrics["drillbook_last_verdict"][(("database", "users"), ("verdict", "FAIL"))] == 1.0
    assert metrics["drillbook_last_verdict"][(("database", "users"), ("verdict", "PASS"))] == 0.0
    assert "drillbook_forecast_rto_target_timestamp_seconds" not in metrics  # one drill: no forecast yet

    assert main(["metrics", "--config", str(config), "--output", "-"]) == 0
    out = _families(capsys.readouterr().out)
    assert out["drillbook_last_pass_timestamp_seconds"] == metrics["drillbook_last_pass_timestamp_seconds"]


def test_metrics_push_to_a_pushgateway(capsys, replicate, write_catalogue):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        replicated = replicate()
        config = write_catalogue(entry("orders", replicated.replica))
        gateway = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["metrics", "--config", str(config), "--push", gateway]) == 0
        ((path, body),) = received
        assert path == "/metrics/job/drillbook" and "drillbook_max_drill_age_seconds" in body
    finally:
        server.shutdown()
    assert main(["metrics", "--config", str(config), "--push", "http://127.0.0.1:1"]) == 2
    assert "the Pushgateway at http://127.0.0.1:1 did not take the metrics" in capsys.readouterr().err


def test_history_in_a_narrow_terminal_and_an_empty_store_hides_the_password(capsys, replicate, write_catalogue, monkeypatch):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    assert main(["run", "orders", "--config", str(config)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "50")
    assert main(["history", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 50 for line in lines) and "PASS" in lines[1], lines


def test_an_empty_postgresql_history_never_prints_its_password(capsys, write_catalogue, postgres_url, monkeypatch, tmp_path):
    monkeypatch.setenv("HISTORY_PASSWORD", "s3cret")
    url = postgres_url.replace("postgres@", "postgres:${HISTORY_PASSWORD}@")
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"), settings={"history_url": url})
    assert main(["history", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no drills recorded yet in postgresql+psycopg://postgres:***@127.0.0.1:5432/") and "s3cret" not in out
    assert main(["stale", "--config", str(config)]) == 1
    assert main(["report", "--html", str(tmp_path / "r.html"), "--config", str(config)]) == 0
    assert "s3cret" not in capsys.readouterr().out + (tmp_path / "r.html").read_text()


def test_plan_without_litestream_is_one_line_and_exit_2(capsys, write_catalogue, monkeypatch, tmp_path):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(tmp_path / "no-such-litestream"))
    assert main(["plan", "orders", "--litestream", "--config", str(config)]) == 2  # the plan from the listing needs no litestream
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"drillbook: DRILLBOOK_LITESTREAM={tmp_path / 'no-such-litestream'} is not an executable file; unset it or point it at litestream 0.5.17."
    ]


def test_metrics_carry_the_forecast_once_there_are_enough_drills(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    assert main(["run", "orders", "--config", str(config), "--json"]) == 0
    template = read_bundle(Path(json.loads(capsys.readouterr().out)["evidence"]))
    seed(load_catalogue(config).history_url, template, [60 + 2 * i for i in range(20)], end=datetime.now(UTC) - timedelta(hours=2))
    assert main(["metrics", "--config", str(config)]) == 0
    metrics = _families(capsys.readouterr().out)
    crosses = metrics["drillbook_forecast_rto_target_timestamp_seconds"][(("database", "orders"),)]
    days = (crosses - datetime.now(UTC).timestamp()) / 86400
    assert 10 <= days <= 13  # 98 s now, +2 s a day, target 120 s


def test_report_days_must_be_positive(capsys, write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"))
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--html", str(tmp_path / "r.html"), "--days", "0", "--config", str(config)])
    assert exit_.value.code == 2
    assert "argument --days: expected a number of days between 0 and 3660, got '0'" in capsys.readouterr().err


def test_the_horizon_and_the_minimum_are_the_catalogues(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), settings={"forecast_horizon": "5d", "forecast_min_drills": 30})
    code, first = run_json(capsys, "run", "orders", "--config", str(config))
    seed(load_catalogue(config).history_url, read_bundle(Path(first["evidence"])), [80 + 2 * i for i in range(10)])
    code, second = run_json(capsys, "run", "orders", "--config", str(config))
    forecast = read_bundle(Path(second["evidence"])).outlook.forecast
    assert (
        code == 0 and not forecast.known and forecast.line.endswith("no forecast yet, 12 of the 30 passing drills it needs (not guessing)")
    )

    config.write_text(config.read_text().replace("forecast_min_drills = 30", "forecast_min_drills = 5"))
    code, third = run_json(capsys, "run", "orders", "--config", str(config))
    forecast = read_bundle(Path(third["evidence"])).outlook.forecast
    assert forecast.known and forecast.horizon_days == 5 and 5 < forecast.days_to_target < 15
    assert not forecast.warning  # about ten days away: outside a 5-day horizon


def test_a_bad_forecast_setting_is_a_config_error_naming_the_field(capsys, write_catalogue, tmp_path):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica"), settings={"no_go_over_target": 6, "no_go_window": 5})
    assert main(["stale", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no_go_over_target (6) cannot be more than no_go_window (5)" in err and str(config) in err


def test_an_unwritable_metrics_file_is_a_note_and_the_verdict_stands(capsys, replicate, write_catalogue, tmp_path):
    replicated = replicate()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the metrics folder should be")
    config = write_catalogue(entry("orders", replicated.replica), settings={"metrics_file": str(blocker / "drillbook.prom")})
    code, result = run_json(capsys, "run", "orders", "--config", str(config))
    assert code == 0 and result["verdict"] == "PASS"
    assert any(n.startswith(f"the metrics file {blocker / 'drillbook.prom'} could not be refreshed") for n in result["notes"])
