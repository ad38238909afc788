"""The second channel: every report also POSTed as JSON to a webhook, through its own outbox, never showing its URL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.evidence import read_bundle
from drillbook.testing.webhook_standin import WebhookStandIn
from tests.conftest import entry


@pytest.fixture
def hook(monkeypatch):
    with WebhookStandIn() as standin:
        monkeypatch.setenv("DRILLBOOK_WEBHOOK_URL", standin.url)
        yield standin


def with_webhook(config: Path, tmp_path: Path) -> Path:
    config.write_text(
        config.read_text() + f'\n[webhook]\nurl_env = "DRILLBOOK_WEBHOOK_URL"\noutbox_dir = "{tmp_path / "hook-outbox"}"\ntimeout = "2s"\n'
    )
    return config


def flat(terminal: str) -> str:
    """Terminal output without the panel's borders and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", terminal).split())


def everything_written(tmp_path: Path, *also: str) -> str:
    files = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".txt", ".toml")]
    return "\n".join(files + list(also))


def test_a_failed_drill_reaches_the_webhook_with_its_failure_mode_and_action(hook, replicate, write_catalogue, tmp_path, capsys):
    replicated = replicate()
    config = with_webhook(write_catalogue(entry("orders", replicated.replica, rto_target="1ms")), tmp_path)
    assert main(["run", "orders", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    [report] = hook.received
    bundle = read_bundle(next((tmp_path / "evidence" / "orders").glob("*.json")))
    assert report["drillbook_webhook"] == 1
    assert (report["kind"], report["key"], report["database"], report["verdict"]) == ("drill", bundle.drill_id, "orders", "FAIL")
    assert report["failure_mode"] == "restore lag"
    assert report["text"].startswith("FAIL orders: restore lag")
    assert report["action"] == bundle.action and report["action"]
    assert report["rto_target_seconds"] == 0.001 and report["evidence"] == bundle.evidence
    assert "webhook: delivered" in bundle.notes or "webhook: delivered" in out
    assert hook.token not in everything_written(tmp_path, out, json.dumps(report))


@pytest.mark.parametrize("answer, says", [(500, "the endpoint failed (HTTP 500)"), (429, "rate limited (HTTP 429, retry after 30s)")])
def test_an_endpoint_that_does_not_take_it_keeps_the_report_until_outbox_send_delivers_it_once(
    answer, says, hook, replicate, write_catalogue, tmp_path, capsys
):
    replicated = replicate()
    config = with_webhook(write_catalogue(entry("orders", replicated.replica)), tmp_path)
    hook.answers = [answer] * 5
    assert main(["run", "orders", "--config", str(config)]) == 0  # the verdict stands
    out = flat(capsys.readouterr().out)
    assert f"webhook: not delivered ({says}); kept in {tmp_path / 'hook-outbox'}" in out
    assert hook.received == []

    assert main(["outbox", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert f"{tmp_path / 'hook-outbox'}: 1 webhook report(s) waiting" in listing
    assert f"reason: {says}" in listing

    assert main(["outbox", "--config", str(config), "--json"]) == 0
    [waiting] = json.loads(capsys.readouterr().out)["webhook_waiting"]
    assert (waiting["kind"], waiting["reason"], waiting["attempts"]) == ("drill", says, 1)

    hook.answers = []
    assert main(["outbox", "send", "--config", str(config)]) == 0
    assert "0 webhook report(s) waiting" in capsys.readouterr().out
    assert main(["outbox", "send", "--config", str(config)]) == 0
    [report] = hook.received  # once, not twice
    assert report["verdict"] == "PASS"
    assert hook.token not in everything_written(tmp_path, listing, out)


def test_a_wrong_or_missing_webhook_url_is_a_note_naming_the_variable(hook, replicate, write_catalogue, tmp_path, capsys, monkeypatch):
    replicated = replicate()
    config = with_webhook(write_catalogue(entry("orders", replicated.replica)), tmp_path)
    monkeypatch.setenv("DRILLBOOK_WEBHOOK_URL", hook.url.replace(hook.token, "wrong-" + hook.token))
    assert main(["run", "orders", "--config", str(config)]) == 0
    out = flat(capsys.readouterr().out)
    assert "the endpoint refused the report (HTTP 404): check the URL in the variable it is read from" in out
    assert hook.token not in everything_written(tmp_path, out)

    monkeypatch.delenv("DRILLBOOK_WEBHOOK_URL")
    assert main(["outbox", "send", "--config", str(config)]) == 1  # still waiting
    assert "reason: DRILLBOOK_WEBHOOK_URL is not set" in capsys.readouterr().out


def test_a_url_in_place_of_the_variable_name_is_refused_at_check_config(write_catalogue, tmp_path, capsys):
    config = write_catalogue(entry("orders", "file:///srv/replicas/orders"))
    config.write_text(config.read_text() + '\n[webhook]\nurl_env = "https://hooks.example/T0KEN-secret"\n')
    assert main(["check-config", "--config", str(config)]) == 2
    said = capsys.readouterr()
    assert "url_env names an environment variable holding the URL" in said.out + said.err
    assert "T0KEN-secret" not in said.out + said.err
