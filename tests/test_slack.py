"""Slack reports: what a person sees, retries, the outbox, and nothing leaking. slack-sdk talks to a real HTTP stand-in."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.outcome import ACTIONS, FailureMode, Finding, Phase, Status, Verdict
from drillbook.tasks.report.slack import MAX_BLOCKS, MAX_HEADER, MAX_SECTION, render_drill_message
from drillbook.tasks.result import DrillResult
from drillbook.tasks.slack import Outbox, notify_slack, post_nightly_summary, send_outbox
from drillbook.testing.sample import make_sample_database
from drillbook.testing.slack_standin import SlackStandIn
from tests.conftest import entry

TOKEN = "xoxb-1111-2222-drillbook-test-token"
SEEDED_EMAIL = "ada@example.com"
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@pytest.fixture
def slack(monkeypatch):
    with SlackStandIn(token=TOKEN, hang_seconds=4) as standin:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        yield standin


def with_slack(config: Path, **values) -> Path:
    """Append a [slack] table to a catalogue written by `write_catalogue`."""
    lines = ["", "[slack]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    config.write_text(config.read_text() + "\n".join(lines) + "\n")
    return config


def slack_catalogue(write_catalogue, slack, *entries, tmp_path, **values):
    config = write_catalogue(*entries)
    settings = {"channel": "#drills", "api_url": slack.api_url, "outbox_dir": str(tmp_path / "outbox"), "timeout": "2s", **values}
    return with_slack(config, **settings)


def assert_nothing_leaked(slack: SlackStandIn, *also: str) -> None:
    """The token travels only in the Authorization header; no e-mail address travels at all."""
    assert slack.requests, "nothing reached the stand-in"
    for request in slack.requests:
        headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        raw = json.dumps(headers) + request.path + request.body.decode("utf-8", "replace")
        assert TOKEN not in raw, f"token in {request.path}"
        assert not EMAIL.findall(raw), f"an e-mail address in {request.path}: {EMAIL.findall(raw)[:3]}"
    for text in also:
        assert TOKEN not in text


def flat(terminal: str) -> str:
    """Terminal output without the panel's borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", terminal).split())


def section_texts(blocks: list[dict]) -> str:
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] in ("section", "header"))


# ------------------------------------------------------------------------------------------ real drills


def test_pass_drill_posts_verdict_and_rto_with_the_evidence_in_its_thread(slack, replicate, write_catalogue, tmp_path, capsys):
    replicated = replicate()
    config = slack_catalogue(write_catalogue, slack, entry("orders", replicated.replica, owners=["U0ADA1"]), tmp_path=tmp_path)

    assert main(["run", "orders", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "Slack report sent to #drills" in flat(out)
    [message] = slack.messages
    assert message["channel"] == "#drills" and message["channel_id"] == "C0DRILLS"
    assert message["text"].startswith("PASS orders: restorable in ")
    blocks = message["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": ":white_check_mark: PASS · orders", "emoji": True}}
    text = section_texts(blocks)
    assert re.search(r"\*RTO\* [\d.]+s \(target 2m 00s, [\dm ]+s to spare\)", text), text
    assert re.search(r"\*RPO\* [\d.]+s \(target 10m 00s, ", text), text
    assert ":white_check_mark: *restore* passed in " in text
    assert "<@U0ADA1>" not in text  # owners are called only when something is wrong
    [upload] = slack.files
    assert (upload["channel_id"], upload["thread_ts"]) == ("C0DRILLS", message["ts"])
    bundle = json.loads(upload["content"])
    assert upload["filename"] == f"drill-orders-{bundle['drill_id']}.json"
    assert bundle["verdict"] == "PASS" and bundle["database"] == "orders"
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in slack.requests if r.path.startswith("/api/"))
    assert_nothing_leaked(slack, out)
    assert list_outbox_files(tmp_path) == []


def list_outbox_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "outbox").glob("*.json"))


def _orders_with_seeded_email(path: Path) -> None:
    make_sample_database(path, customers=50)
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO customers VALUES (9999, ?, 'Ada Lovelace', '2020-01-01')", (SEEDED_EMAIL,))
    connection.commit()
    connection.close()


def test_fail_drill_names_mode_action_checks_and_owners_and_leaks_no_row_value(slack, replicate, write_catalogue, tmp_path, capsys, caplog):
    # A schema query that returns a row value: the failing finding carries an e-mail address from the data.
    replicated = replicate(_orders_with_seeded_email)
    config = slack_catalogue(
        write_catalogue,
        slack,
        entry(
            "orders",
            replicated.replica,
            schema_version=3,
            schema_version_query="SELECT email FROM customers WHERE id = 9999",
            owners=["U0ADA1", "S0DBA"],
            slack_channel="#orders-team",
        ),
        tmp_path=tmp_path,
    )

    assert main(["run", "orders", "--config", str(config), "--release", "v1.2.3"]) == 1

    out, err = capsys.readouterr()
    bundle = read_bundle(Path(next((tmp_path / "evidence" / "orders").glob("*.json"))))
    assert SEEDED_EMAIL in bundle.findings[0].detail  # the seed really reached a finding
    [message] = slack.messages
    assert message["channel_id"] == "C0ORDERS"
    assert message["text"] == "FAIL orders after v1.2.3: schema mismatch: schema version is [email redacted], expected 3"
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == ":red_circle: FAIL · orders · v1.2.3"
    text = section_texts(blocks)
    assert "*Failure mode:* schema mismatch" in text
    assert f"*Next:* {ACTIONS[FailureMode.SCHEMA]}" in text
    assert "*Failing checks*\n• *schema mismatch*: schema version is [email redacted], expected 3" in text
    assert "*Owners:* <@U0ADA1> <!subteam^S0DBA>" in text
    assert ":x: *integrity* failed in " in text
    evidence, details = slack.files
    assert evidence["thread_ts"] == details["thread_ts"] == message["ts"]
    assert json.loads(evidence["content"])["failure_mode"] == "schema mismatch"
    assert details["filename"] == f"drill-orders-{bundle.drill_id}-details.txt"
    assert "- schema mismatch: schema version is [email redacted], expected 3" in details["content"]
    assert "## litestream restore: exit 0" in details["content"]
    assert_nothing_leaked(slack, out, err, caplog.text)


def test_slack_down_during_a_drill_keeps_the_report_until_outbox_send_delivers_it_once(slack, replicate, write_catalogue, tmp_path, capsys):
    replicated = replicate()
    config = slack_catalogue(write_catalogue, slack, entry("orders", replicated.replica), tmp_path=tmp_path)
    slack.fail("server_error", count=100)

    assert main(["run", "orders", "--config", str(config)]) == 0  # the verdict stands

    out = flat(capsys.readouterr().out)
    assert (
        "Slack did not take the report (chat.postMessage: Slack answered internal_error: HTTP 500 from Slack even after the retries; "
        f"try again later); it waits in the outbox {tmp_path / 'outbox'} (`drillbook outbox send` re-sends it)"
    ) in out
    assert len(slack.calls("chat.postMessage")) == 3  # one try and ServerErrorRetryHandler's two retries
    assert slack.messages == []
    [evidence] = (tmp_path / "evidence" / "orders").glob("*.json")
    drill_id = read_bundle(evidence).drill_id
    assert list_outbox_files(tmp_path) == [f"{drill_id}.json"]

    assert main(["outbox", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"{tmp_path / 'outbox'}: 1 report(s) waiting" in listing
    assert f"  {drill_id}  drill orders PASS  queued " in listing
    assert "reason: chat.postMessage: Slack answered internal_error" in listing

    slack.heal()
    assert main(["outbox", "send", "--config", str(config)]) == 0
    assert f"  {drill_id}: sent: Slack report sent to #drills" in capsys.readouterr().out
    assert main(["outbox", "send", "--config", str(config)]) == 0
    assert "nothing waiting" in capsys.readouterr().out
    [message] = slack.messages
    assert message["text"].startswith("PASS orders")
    [upload] = slack.files
    assert upload["thread_ts"] == message["ts"]
    assert list_outbox_files(tmp_path) == []
    assert (tmp_path / "outbox" / "sent" / f"{drill_id}.json").is_file()
    assert_nothing_leaked(slack)


def test_the_next_drill_sends_the_waiting_report_first(slack, replicate, write_catalogue, tmp_path, capsys):
    replicated = replicate()
    config = slack_catalogue(write_catalogue, slack, entry("orders", replicated.replica, rto_target="1ms"), tmp_path=tmp_path)
    slack.fail("invalid_auth", count=1)
    assert main(["run", "orders", "--config", str(config)]) == 1
    assert "chat.postMessage: Slack answered invalid_auth: Slack refused the bot token" in flat(capsys.readouterr().out)
    assert slack.messages == []

    assert main(["run", "orders", "--config", str(config)]) == 1

    out = flat(capsys.readouterr().out)
    assert "1 earlier report(s) from the outbox sent first" in out
    first, second = slack.messages
    assert first["ts"] < second["ts"]
    assert [f["thread_ts"] for f in slack.files] == [first["ts"], first["ts"], second["ts"], second["ts"]]
    assert main(["outbox", "send", "--config", str(config)]) == 0
    assert len(slack.messages) == 2
    assert_nothing_leaked(slack, out)


def test_without_slack_the_drill_says_so_once(replicate, write_catalogue, capsys):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    assert main(["run", "orders", "--config", str(config)]) == 0
    out = flat(capsys.readouterr().out)
    assert out.count("Slack is not configured") == 1
    assert "(no [slack] table in" in out


# ------------------------------------------------------------------------------------------ delivery, on a built result


def built_result(
    database: str = "orders", verdict: Verdict = Verdict.FAIL, *, drill_id: str | None = None, findings=None, release=None
) -> DrillResult:
    started = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    mode = None if verdict == Verdict.PASS else (FailureMode.DRILL_ERROR if verdict == Verdict.ERROR else FailureMode.RESTORE_LAG)
    if findings is None:
        findings = [] if mode is None else [Finding(mode=mode, detail="measured RTO 190.0s is over the 120s target by 70.0s")]
    return DrillResult(
        drill_id=drill_id or f"{database[:4]}{verdict.value.lower()}",
        database=database,
        release=release,
        started_at=started,
        finished_at=started + timedelta(seconds=200),
        verdict=verdict,
        failure_mode=mode,
        action=ACTIONS[mode] if mode else None,
        findings=findings,
        rto_seconds=190.0,
        rto_target_seconds=120.0,
        rpo_seconds=12.0,
        rpo_target_seconds=600.0,
        phases={
            "replica": Phase(status=Status.PASSED, seconds=0.4, summary="1 LTX files"),
            "restore": Phase(status=Status.PASSED, seconds=185.0, summary="restored"),
            "integrity": Phase(status=Status.PASSED, seconds=5.0, summary="intact"),
        },
    )


def catalogue_for(write_catalogue, slack, tmp_path, *entries, **values):
    entries = entries or (entry("orders", "file:///nowhere/orders.db", owners=["U0ADA1"]),)
    return load_catalogue(slack_catalogue(write_catalogue, slack, *entries, tmp_path=tmp_path, **values))


def test_rate_limit_is_waited_out_with_retry_after(slack, write_catalogue, tmp_path):
    catalogue = catalogue_for(write_catalogue, slack, tmp_path)
    slack.fail("ratelimit", count=1, method="chat.postMessage")
    started = time.monotonic()
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "sent", delivery
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert len(slack.calls("chat.postMessage")) == 2 and len(slack.messages) == 1


@pytest.mark.parametrize("fault", ["server_error", "down"])
def test_one_server_or_connection_error_is_retried(slack, write_catalogue, tmp_path, fault):
    catalogue = catalogue_for(write_catalogue, slack, tmp_path)
    slack.fail(fault, count=1)
    assert notify_slack(built_result(), catalogue).status == "sent"
    assert len(slack.messages) == 1 and len(slack.files) == 2


def test_channel_not_found_waits_until_the_catalogue_names_a_real_channel(slack, write_catalogue, tmp_path):
    catalogue = catalogue_for(
        write_catalogue, slack, tmp_path, entry("orders", "file:///nowhere/orders.db", slack_channel="#no-such-channel")
    )
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "queued"
    assert delivery.reason == (
        "chat.postMessage: Slack answered channel_not_found: Slack has no channel by that name the bot can see: "
        "check [slack] channel / the database's slack_channel, and invite the app to a private channel"
    )
    fixed = catalogue_for(write_catalogue, slack, tmp_path, entry("orders", "file:///nowhere/orders.db", slack_channel="#orders-team"))
    [sent] = send_outbox(fixed)
    assert sent.status == "sent" and slack.messages[0]["channel_id"] == "C0ORDERS"


def test_a_hanging_slack_times_out_without_posting_twice(slack, write_catalogue, tmp_path):
    catalogue = catalogue_for(write_catalogue, slack, tmp_path, timeout="1s")
    slack.fail("hang", count=1)
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "queued"
    assert "no answer from " in delivery.reason and "within the timeout" in delivery.reason
    assert len(slack.calls("chat.postMessage")) == 1  # a timeout after sending is not retried


def test_a_failed_upload_resumes_the_thread_without_posting_the_message_again(slack, write_catalogue, tmp_path):
    catalogue = catalogue_for(write_catalogue, slack, tmp_path)
    slack.fail("invalid_auth", count=1, method="files.getUploadURLExternal")
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "queued" and "files_upload_v2: Slack answered invalid_auth" in delivery.reason
    [waiting] = Outbox(catalogue.outbox_dir).pending()
    assert waiting.posted_ts == slack.messages[0]["ts"] and waiting.thread_sent == 0
    assert [d.status for d in send_outbox(catalogue)] == ["sent"]
    assert len(slack.messages) == 1
    assert [f["thread_ts"] for f in slack.files] == [slack.messages[0]["ts"]] * 2


def test_invalid_token_never_shows_up_in_the_reason_outbox_or_logs(slack, write_catalogue, tmp_path, monkeypatch, caplog):
    caplog.set_level("DEBUG")
    wrong = "xoxb-9999-wrong-token-value"
    monkeypatch.setenv("SLACK_BOT_TOKEN", wrong)
    catalogue = catalogue_for(write_catalogue, slack, tmp_path)
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "queued" and "invalid_auth" in delivery.reason
    outbox_text = "".join(p.read_text() for p in (tmp_path / "outbox").rglob("*.json"))
    for text in (delivery.model_dump_json(), outbox_text, caplog.text):
        assert wrong not in text and "wrong-token" not in text


def test_token_from_a_prefect_secret_block(slack, write_catalogue, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value=TOKEN).save("drillbook-slack-test", overwrite=True)
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    catalogue = catalogue_for(write_catalogue, slack, tmp_path, token_secret_block="drillbook-slack-test")
    assert notify_slack(built_result(), catalogue).status == "sent"


def test_missing_token_queues_with_what_to_set(slack, write_catalogue, tmp_path, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    catalogue = catalogue_for(write_catalogue, slack, tmp_path)
    delivery = notify_slack(built_result(), catalogue)
    assert (delivery.status, delivery.reason) == ("queued", "no Slack credentials: set SLACK_BOT_TOKEN")
    assert slack.requests == []


def test_incoming_webhook_posts_the_message_without_a_thread(slack, write_catalogue, tmp_path, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    config = write_catalogue(entry("orders", "file:///nowhere/orders.db"))
    catalogue = load_catalogue(with_slack(config, webhook_url_env="SLACK_WEBHOOK_URL", outbox_dir=str(tmp_path / "outbox")))
    delivery = notify_slack(built_result(), catalogue)
    assert delivery.status == "sent"
    [posted] = slack.webhook_messages
    assert posted["text"].startswith("FAIL orders: restore lag")
    assert posted["blocks"][0]["text"]["text"] == ":red_circle: FAIL · orders"
    assert slack.files == [] and slack.calls("chat.postMessage") == []


def test_nightly_summary_is_one_message_failures_first_with_details_in_the_thread(slack, write_catalogue, tmp_path):
    catalogue = catalogue_for(
        write_catalogue,
        slack,
        tmp_path,
        entry("billing", "file:///nowhere/billing.db"),
        entry("orders", "file:///nowhere/orders.db", owners=["U0ADA1"]),
        entry("users", "file:///nowhere/users.db"),
    )
    results = [built_result("billing", Verdict.PASS), built_result("users", Verdict.ERROR), built_result("orders", Verdict.FAIL)]

    delivery = post_nightly_summary(results, catalogue)

    assert delivery.status == "sent"
    summary, *thread = slack.messages
    assert summary["text"] == "Nightly restore drills: 1 FAIL, 1 ERROR, 1 PASS; ERROR users; FAIL orders"
    lines = summary["blocks"][1]["text"]["text"].splitlines()
    assert [line.split("*")[1] for line in lines] == ["users", "orders", "billing"]
    assert "<@U0ADA1>" in lines[1] and "restore lag" in lines[1]
    assert [m["thread_ts"] for m in thread] == [summary["ts"]] * 2
    assert [m["blocks"][0]["text"]["text"] for m in thread] == [":warning: ERROR · users", ":red_circle: FAIL · orders"]
    assert {f["thread_ts"] for f in slack.files} == {summary["ts"]} and len(slack.files) == 4
    assert post_nightly_summary(results, catalogue).status == "already sent"
    assert len(slack.calls("chat.postMessage")) == 3


# ------------------------------------------------------------------------------------------ rendering and configuration


def test_long_content_is_cut_to_slack_limits_and_kept_whole_in_the_file():
    findings = [Finding(mode=FailureMode.EXPECTATIONS, detail=f"expectation {i} failed: " + "x" * 900) for i in range(200)]
    result = built_result("o" * 200, findings=findings, release="r" * 200)
    message = render_drill_message(result, owners=["U0ADA1"])
    assert len(message.blocks) <= MAX_BLOCKS
    assert len(message.blocks[0]["text"]["text"]) <= MAX_HEADER
    assert all(len(b["text"]["text"]) <= MAX_SECTION for b in message.blocks if b["type"] == "section")
    checks = next(b["text"]["text"] for b in message.blocks if b["type"] == "section" and b["text"]["text"].startswith("*Failing checks*"))
    assert checks.startswith("*Failing checks*\n_data expectations ×200_")
    assert "…and 190 more in the evidence file" in checks or "(cut; the whole is in the evidence file" in checks
    assert len(json.loads(message.thread[0].file.content)["findings"]) == 200


def test_details_cannot_mention_or_link():
    result = built_result(findings=[Finding(mode=FailureMode.SMOKE, detail="check <!channel> failed for <https://evil|x> & more")])
    text = section_texts(render_drill_message(result).blocks)
    assert "check &lt;!channel&gt; failed for &lt;https://evil|x&gt; &amp; more" in text


def test_owners_must_be_slack_ids(write_catalogue):
    config = write_catalogue(entry("orders", "file:///nowhere/orders.db", owners=["@ada"]))
    with pytest.raises(ConfigError) as caught:
        load_catalogue(config)
    assert "database[0] 'orders': field owners: '@ada' is not a Slack user ID (U0123ABCD, W0123ABCD) or user-group ID (S0123ABCD)" in str(
        caught.value
    )


def test_slack_table_needs_a_channel_or_a_webhook(write_catalogue):
    config = with_slack(write_catalogue(entry("orders", "file:///nowhere/orders.db")), api_url="http://127.0.0.1:1/api")
    with pytest.raises(ConfigError) as caught:
        load_catalogue(config)
    assert "field slack: set channel (with a bot token) or webhook_url_env (an incoming webhook), or remove the [slack] table" in str(
        caught.value
    )


def test_demo_slack_preview_posts_to_its_own_stand_in_and_prints_block_kit_json(tmp_path, capsys):
    assert main(["demo", "--slack-preview", "--evidence-dir", str(tmp_path / "evidence")]) == 0
    out = capsys.readouterr().out
    assert "demo: Slack stand-in (records what it receives) at http://127.0.0.1:" in out
    assert "demo: posted to #drills (fallback text: 'PASS demo-orders: restorable in " in out
    assert "demo: in the thread: drill-demo-orders-" in out
    preview = json.loads(out[out.index('{\n  "blocks"') :])
    assert preview["blocks"][0]["text"]["text"] == ":white_check_mark: PASS · demo-orders"


def test_a_real_nightly_posts_one_summary_and_no_message_per_database(slack, replicate, write_catalogue, tmp_path):
    from drillbook.flows.nightly import nightly_drills
    from drillbook.tasks.errors import DrillsFailed
    from tests.conftest import corrupt_index

    good, bad = replicate(), replicate(corrupt_index)
    config = slack_catalogue(
        write_catalogue, slack, entry("orders", good.replica), entry("billing", bad.replica, owners=["U0ADA1"]), tmp_path=tmp_path
    )

    with pytest.raises(DrillsFailed):
        nightly_drills(config_path=str(config), max_concurrent=2)

    summary, *thread = slack.messages
    assert summary["text"].startswith("Nightly restore drills: 1 FAIL, 1 PASS; FAIL billing")
    assert [m["thread_ts"] for m in thread] == [summary["ts"]]  # only the failure gets detail, in the thread
    assert "integrity failure" in section_texts(thread[0]["blocks"])
    assert len(slack.calls("chat.postMessage")) == 2
    assert_nothing_leaked(slack)


def test_skipped_phases_carry_no_time():
    result = built_result("orders", Verdict.FAIL)
    result.phases["smoke"] = Phase(status=Status.SKIPPED, seconds=0.0, summary="not run")
    text = section_texts(render_drill_message(result).blocks)
    assert ":heavy_minus_sign: *smoke* skipped\n" in text + "\n"
    assert "skipped in" not in text
