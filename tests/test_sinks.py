"""Every sink escapes for itself: each one is fed the markup of every other sink, control characters and secrets.

Text from outside (release names from CI, check names, error text from litestream, SQLite, the object store,
Slack) reaches the terminal, Slack, the Markdown artifact, the evidence JSON, Prometheus and file names. Each
test below feeds one sink every category and asserts on what a person (or a parser) would get.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from drillbook.tasks.config import check_release
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.evidence import bundle_path, read_bundle, write_bundle
from drillbook.tasks.notify import TerminalNotifier
from drillbook.tasks.outcome import ACTIONS, FailureMode, Finding, Phase, Status, Verdict
from drillbook.tasks.report.drill import code, md, render_markdown, render_terminal
from drillbook.tasks.report.slack import render_drill_message, render_nightly_summary
from drillbook.tasks.report.slack_alerts import render_stale_alert
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import check_label, file_part, one_line, redact, redact_data, redact_url, slug, visible

# One sample per category; people outside the project will write others, so the assertions are on the categories.
HOSTILE = {
    "rich": "v1.2 [bold]x[/bold] [/] [link=http://evil.example]click[/link] [red",
    "slack": "<!channel> <!here> <@U123> <#C123> <http://x.example|y> *bold* _it_ ~s~ `c` &lt; &amp;",
    "html": "<script>alert(1)</script> <img src=x onerror=alert(1)> \" ' &",
    "json": "nul\x00 bell\x07 \u2028line\u2029para",
    "prometheus": 'quote" back\\slash new\nline',
    "file": "../../etc/passwd /abs\x00nul",
    "ansi": "\x1b[31mred\x1b[0m \x1b]8;;http://evil.example\x07link\x1b]8;;\x07 \x9b31m",
    "cr": "ok\rFAIL\x08\x7f",
    "bidi": "abc\u202edcba\u2066iso\u2069 \u200bzw \ufeffbom",
}
SECRET_URL = "postgresql://drill:p@ss/w#rd%40x:y@db.internal:5432/history"
SECRET_PARTS = ("p@ss", "w#rd", "%40x", "ss/w")
# What must never arrive as itself in a human-facing sink: terminal controls, line separators, bidi controls.
RAW_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def hostile_result(verdict: Verdict = Verdict.FAIL, *, database: str = "orders", text: str | None = None) -> DrillResult:
    """A drill result carrying outside text everywhere outside text goes: release, findings, phases, notes."""
    everything = text if text is not None else " | ".join(HOSTILE.values())
    started = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    mode = None if verdict == Verdict.PASS else FailureMode.SMOKE
    return DrillResult(
        drill_id="d" * 32,
        database=database,
        release=everything,
        started_at=started,
        finished_at=started + timedelta(seconds=20),
        verdict=verdict,
        failure_mode=mode,
        action=ACTIONS[mode] if mode else None,
        findings=[] if mode is None else [Finding(mode=mode, detail=f"check {everything} failed: {SECRET_URL}")],
        rto_seconds=12.0,
        rto_target_seconds=120.0,
        rpo_seconds=3.0,
        rpo_target_seconds=600.0,
        phases={
            "replica": Phase(status=Status.PASSED, seconds=0.4, summary=f"listed {everything}"),
            "smoke": Phase(status=Status.FAILED, seconds=1.0, summary=f"stderr: {everything} {SECRET_URL}"),
        },
        notes=[f"cannot write the drill history at {SECRET_URL}: {everything}"],
    )


def terminal_text(renderable) -> str:
    console = Console(file=io.StringIO(), width=240, color_system=None, force_terminal=False, soft_wrap=False)
    console.print(renderable)
    return console.file.getvalue()


def assert_no_secret(text: str, where: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"{part!r} of the password in the {where}"


# ------------------------------------------------------------------------------------------ the terminal


@pytest.mark.parametrize("category", sorted(HOSTILE))
@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_terminal_report_shows_every_category_literally_and_sends_no_control(category, verdict):
    text = HOSTILE[category]
    out = terminal_text(render_terminal(hostile_result(verdict, text=text)))  # the rich markup ones raised MarkupError here

    assert not RAW_CONTROLS.search(out), f"a raw control character of {category!r} reached the terminal: {out!r}"
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    assert " ".join(visible(text).split())[:30] in flat, f"the {category} text is not shown as written: {flat!r}"
    assert_no_secret(out, "terminal")


def test_a_release_with_rich_markup_is_shown_whole_in_the_panel_title():
    release = "v1.2 [bold] [/] [link=http://x]"
    out = terminal_text(render_terminal(hostile_result(Verdict.PASS, text=release)))

    assert f"drillbook · orders · {release}" in out
    assert "PASS orders after v1.2 [bold] [/] [link=http://x]: restorable" in " ".join(out.split())


def test_terminal_notifier_summary_and_escape_sequences():
    console = Console(file=io.StringIO(), width=200, color_system=None)
    TerminalNotifier(console).summary([hostile_result()], "release \x1b[2J[bold]v1[/]")
    out = console.file.getvalue()
    assert "\x1b" not in out and "release \\x1b[2J[bold]v1[/]: 1 FAIL" in out


# ------------------------------------------------------------------------------------------ Slack


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _mrkdwn_and_plain(message) -> tuple[list[str], list[str]]:
    """(mrkdwn texts, plain_text texts) of a message, its blocks and its thread's messages."""
    mrkdwn, plain = [message.text], []
    blocks = list(message.blocks)
    for item in message.thread:
        if item.kind == "message":
            mrkdwn.append(item.text)
            blocks += item.blocks

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                mrkdwn.append(node["text"])
                assert node.get("verbatim") is True, "a mrkdwn object Slack would auto-link"
            elif node.get("type") == "plain_text":
                plain.append(node["text"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(blocks)
    return mrkdwn, plain


DRILLBOOK_MENTIONS = {"<@U0ADA1>"}


def assert_slack_safe(message) -> None:
    mrkdwn, plain = _mrkdwn_and_plain(message)
    for text in mrkdwn:
        links = set(re.findall(r"<[^>]*>", text))
        assert links <= DRILLBOOK_MENTIONS | {"<http://prefect.local/runs/1|Prefect flow run>"}, (
            f"outside text became {links - DRILLBOOK_MENTIONS}"
        )
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), f"an unescaped '&' in {text!r}"
        assert not RAW_CONTROLS.search(text.replace("\n", "")), f"a control character in {text!r}"
        assert_no_secret(text, "Slack message")
    for text in plain:
        assert not RAW_CONTROLS.search(text), f"a control character in the plain text {text!r}"
        assert_no_secret(text, "Slack header")
    for item in message.thread:
        if item.file is not None:
            assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", item.file.filename), item.file.filename
            assert not RAW_CONTROLS.search(item.file.title)
            assert_no_secret(item.file.content + item.file.title, f"file {item.file.filename}")


@pytest.mark.parametrize("category", sorted(HOSTILE))
@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_slack_drill_message_escapes_every_text_field(category, verdict):
    result = hostile_result(verdict, text=HOSTILE[category])
    result.flow_run_url = "http://prefect.local/runs/1"
    message = render_drill_message(result, owners=["U0ADA1"])

    assert_slack_safe(message)
    if verdict == Verdict.FAIL:
        assert "<@U0ADA1>" in json.dumps(message.blocks)  # drillbook's own mention survives the escaping


def test_slack_top_level_text_cannot_broadcast():
    message = render_drill_message(hostile_result(text="<!channel> <@U999> <http://evil|click>"))
    assert message.text.startswith("FAIL orders after &lt;!channel&gt; &lt;@U999&gt; &lt;http://evil|click&gt;")


def test_slack_flow_run_link_with_markup_is_left_out():
    result = hostile_result(text="v1")
    result.flow_run_url = "http://prefect.local/x|<!channel>"
    assert "<!channel" not in json.dumps(render_drill_message(result).blocks)


def test_slack_nightly_summary_and_stale_alert_escape_names_and_titles():
    from drillbook.tasks.history.stale import StaleStatus

    odd = hostile_result(database="orders<!channel>")
    message = render_nightly_summary([odd, hostile_result(Verdict.PASS)], title="release <!here> \x1b[31m *x*", owners={})
    assert_slack_safe(message)
    status = StaleStatus(database="a<!channel>&b\u202e", max_age_seconds=3600, age_seconds=7200, last_pass_at=None, stale=True)
    assert_slack_safe(render_stale_alert("stale", status, owners=["U0ADA1"]))


# ------------------------------------------------------------------------------------------ Markdown (Prefect artifact)


@pytest.mark.parametrize("category", sorted(HOSTILE))
def test_markdown_artifact_escapes_markdown_html_and_controls(category):
    out = render_markdown(hostile_result(text=HOSTILE[category]))

    assert not RAW_CONTROLS.search(out.replace("\n", ""))
    prose = re.sub(r"(`+).*?\1", "", out)  # code spans show their content literally
    assert not re.search(r"(?<!\\)<", prose), "an unescaped '<' would be HTML in the artifact"
    assert not re.search(r"(?<!\\)\[", prose), "an unescaped '[' would be a link"
    for line in out.splitlines():
        if line.startswith("| ") and "smoke" in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == 5, f"the table row was split by outside text: {line}"
    assert_no_secret(out, "Markdown artifact")


def test_md_escapes_what_would_format_link_or_open_html():
    assert md("a*b*_c_ [x](y) <b> `c` | # 1. &amp;") == r"a\*b\*\_c\_ \[x\](y) \<b\> \`c\` \| # 1. \&amp;"
    assert [md(t) for t in ("# h", "- item", "12. item", "> quote", "2026-03-01")] == [
        r"\# h",
        r"\- item",
        r"12\. item",
        r"\> quote",
        "2026-03-01",
    ]


@pytest.mark.parametrize("text", ["v1.2", "a`b", "``x``", "<script>", "[x](y)"])
def test_code_spans_hold_any_name_literally(text):
    span = code(text)
    fence = re.match(r"`+", span).group()
    assert span.endswith(fence) and fence not in span[len(fence) : -len(fence)].strip()
    assert span[len(fence) : -len(fence)].strip() == text


# ------------------------------------------------------------------------------------------ JSON (evidence bundle)


def test_evidence_bundle_is_valid_json_ascii_and_redacted(tmp_path):
    result = hostile_result()
    path = write_bundle(result, tmp_path)
    raw = path.read_bytes()

    assert raw.isascii(), "\\u2028 and control characters are written as \\u escapes"
    assert b"\x00" not in raw and b"\x1b" not in raw
    assert_no_secret(raw.decode(), "evidence bundle")
    back = read_bundle(path)
    assert back.release == result.release  # stored as it came (only credentials masked)
    assert "postgresql://REDACTED@db.internal:5432/history" in back.notes[0]


def test_evidence_file_name_stays_inside_the_evidence_dir(tmp_path):
    result = hostile_result(database="../../escape\x00/x")
    path = bundle_path(tmp_path / "evidence", result)
    assert path.resolve().is_relative_to((tmp_path / "evidence").resolve())
    assert "\x00" not in str(path) and ".." not in path.relative_to(tmp_path / "evidence").parts


# ------------------------------------------------------------------------------------------ Prometheus, names


@pytest.mark.parametrize("category", sorted(HOSTILE))
def test_prometheus_label_values_round_trip(category):
    """prometheus_client escapes label values; a value from outside comes back as it went in, one sample per line."""
    registry = CollectorRegistry()
    gauge = Gauge("drillbook_test", "x", ["database"], registry=registry)
    value = HOSTILE[category].replace("\x00", "")
    gauge.labels(value).set(1)
    [family] = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert [s.labels["database"] for s in family.samples] == [value]


@pytest.mark.parametrize("category", sorted(HOSTILE))
def test_file_names_and_keys_are_never_paths(category):
    for name in (file_part(HOSTILE[category]), file_part(".."), file_part(""), slug(HOSTILE[category])):
        assert name and "/" not in name and "\x00" not in name and not name.startswith(".")
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
    assert re.fullmatch(r"[a-z0-9-]+", slug(HOSTILE[category]))


# ------------------------------------------------------------------------------------------ names checked whole


@pytest.mark.parametrize(
    "value",
    ["v1\n", "v1\r", "v1\u2028", "v1\u2029", "\x1b[31mv1", "v1\x00", "a\u202eb", "", "   ", "x" * 201, "x" * 1_000_000],
)
def test_release_is_one_printable_line_of_bounded_length(value):
    with pytest.raises(ConfigError) as caught:
        check_release(value)
    message = str(caught.value)
    assert "release" in message and "\n" not in message and len(message) < 400


@pytest.mark.parametrize("value", ["v1.2.3", "v1.2 [bold]", "2026-03-01 <@U1> release", "é-ü 日本"])
def test_release_with_markup_of_other_sinks_is_accepted_as_text(value):
    assert check_release(value) == value


def test_check_label_does_not_echo_a_megabyte():
    with pytest.raises(ValueError) as caught:
        check_label("x" * 1_000_000, "release")
    assert str(caught.value) == "release is 1,000,000 characters long; at most 200 are allowed"


# ------------------------------------------------------------------------------------------ secrets in odd shapes


@pytest.mark.parametrize(
    "url, host",
    [
        ("postgresql://user:p@ss/w#rd@host/db", "host/db"),
        ("postgresql://user:p%40ss%2Fw@host:5432/db", "host:5432/db"),
        ("postgresql://user:a:b:c@host/db", "host/db"),
        ("s3://AKIA:sec/ret+key@bucket/path?endpoint=http://127.0.0.1:9000", "bucket/path"),
        ("https://user:pa%23ss#frag@host/x", "host/x"),
    ],
)
def test_url_credentials_are_masked_whole(url, host):
    for shown in (redact_url(url), redact(f"error: cannot reach {url} now"), redact_data({"k": [url]})["k"][0]):
        assert "REDACTED@" + host in shown, shown
        for piece in ("user", "p@ss", "w#rd", "p%40ss", "a:b:c", "AKIA", "sec/ret", "pa%23ss"):
            assert piece not in shown.replace("REDACTED", ""), (piece, shown)


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("connect to postgresql://user:p ss word@host/db failed", ("p ss", "ss word")),
        ("postgresql://user:secretpw", ("secretpw",)),
        ("postgresql://user:secretpw and more", ("secretpw",)),
    ],
)
def test_a_password_that_cannot_be_parsed_is_never_half_printed(text, leaked):
    shown = redact(text)
    for piece in leaked:
        assert piece not in shown, shown


@pytest.mark.parametrize("text", ["http://127.0.0.1:9000/bucket", "s3://bucket/app.db", "file:///srv/a@b/app.db", "http://[::1]:8080/x"])
def test_urls_without_credentials_are_left_alone(text):
    assert redact(text, emails=False) == text


# The password holds '@', '/', '#' and ':'; SQLAlchemy reads it only to its first '@' (host 127.0.0.1, port 1: refused at once).
HISTORY_URL = "postgresql+psycopg://drill:x@127.0.0.1:1/w#rd@127.0.0.1:1/db"
HISTORY_PASSWORD_PARTS = ("x@127.0.0.1:1/w", "w#rd", "drill:x")


def test_history_error_names_the_store_without_its_password():
    from drillbook.tasks.errors import HistoryError
    from drillbook.tasks.history.store import recent_drills

    with pytest.raises(HistoryError) as caught:
        recent_drills(HISTORY_URL, None, 5)
    message = str(caught.value)
    assert message.startswith("cannot read the drill history at postgresql+psycopg://REDACTED@127.0.0.1:1/db: OperationalError")
    for piece in HISTORY_PASSWORD_PARTS:
        assert piece not in message, message


def test_drillbook_history_with_such_a_url_is_one_line_without_the_password(write_catalogue, capsys):
    from drillbook.cli.main import main
    from tests.conftest import entry

    config = write_catalogue(entry("orders", "file:///r/orders.db"), settings={"history_url": HISTORY_URL})
    assert main(["history", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "REDACTED@127.0.0.1:1/db" in captured.err
    for piece in HISTORY_PASSWORD_PARTS:
        assert piece not in captured.out + captured.err


# ------------------------------------------------------------------------------------------ large and odd input


def test_one_line_bounds_a_megabyte_and_shows_controls():
    line = one_line("<html><body>" + "\x1b[31m" + "x" * 1_000_000 + "\r\n</body></html>", 300)
    assert len(line) == 300 and "\x1b" not in line and "\\x1b[31m" in line


def test_visible_keeps_lines_only_when_asked():
    assert visible("a\nb\tc\x1b") == "a\\x0ab\\x09c\\x1b"
    assert visible("a\nb\tc\x1b\r", lines=True) == "a\nb\tc\\x1b\\x0d"
    assert visible("\u202e\u2028") == "\\u202e\\u2028"


BINARY_NOISE = (
    "import sys; sys.stderr.buffer.write(b'<html>' * 200000 + b'\\xff\\xfe\\x00 not utf-8 \\x1b[2J\\x1b]0;title\\x07 \\r\\xc3')"
    "; sys.stdout.buffer.write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(range(256)) * 4); sys.exit(3)"
)


def test_a_child_printing_binary_and_a_megabyte_is_decoded_with_replacement_and_bounded(tmp_path, monkeypatch):
    import sys

    from drillbook.tasks.litestream import run_litestream
    from drillbook.tasks.runner import OUTPUT_KEEP

    fake = tmp_path / "litestream"
    fake.write_text(f"#!{sys.executable}\n{BINARY_NOISE}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(fake))

    ran = run_litestream(["restore"], timeout=30)  # text=True alone raised UnicodeDecodeError here
    record = ran.record

    assert record.exit_code == 3 and len(record.stderr) <= OUTPUT_KEEP + 100 and ran.stderr.endswith("\ufffd")
    assert record.stderr.endswith("\ufffd")
    line = one_line(record.stderr)
    assert len(line) <= 300 and not RAW_CONTROLS.search(line)


def test_a_smoke_command_printing_binary_is_shown_not_sent(tmp_path):
    import sys

    from drillbook.tasks.config import SmokeCheck
    from drillbook.tasks.smoke import run_command_check

    check = SmokeCheck(name="prints binary", command=[sys.executable, "-c", BINARY_NOISE])
    result = run_command_check(tmp_path / "copy.db", check)

    assert not result.success and "\ufffd" in (result.stderr or "")
    assert len(result.stderr) < 5000 and len(result.stdout) < 5000
    finding = hostile_result(text=result.describe() + " " + (result.stderr or "")[-200:])
    out = terminal_text(render_terminal(finding))
    assert not RAW_CONTROLS.search(out) and "\\x1b[2J" in out


# ------------------------------------------------------------------------------------------ end to end


def test_a_release_full_of_other_sinks_markup_passes_through_the_cli_and_is_shown_whole(replicate, write_catalogue, capsys):
    """Before: rich's MarkupError after the drill recorded PASS, so exit 2 on a healthy database."""
    from drillbook.cli.main import main
    from tests.conftest import entry

    release = "v1.2 [/] [bold] [link=http://x] <!channel> *b* ../x"
    config = write_catalogue(entry("orders", replicate().replica))

    assert main(["run", "orders", "--config", str(config), "--release", release, "--json"]) == 0

    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["verdict"], summary["release"]) == ("PASS", release)
    assert f"drillbook · orders · {release}" in captured.err
    assert read_bundle(Path(summary["evidence"])).release == release


def test_the_release_flow_and_the_drill_check_a_release_from_an_event_whole(write_catalogue):
    """The deployment's trigger passes `{{ event.payload.release }}` straight in: the flow checks it before anything runs."""
    from drillbook.flows.drill import drill
    from drillbook.flows.release import release_drills
    from drillbook.tasks.config import load_catalogue
    from tests.conftest import entry

    config = write_catalogue(entry("orders", "file:///r/orders.db"))
    with pytest.raises(ConfigError, match=r"^release holds a control character or line break \(\\u2028 at position 2\)"):
        release_drills.fn("v1\u2028", config_path=str(config))
    catalogue = load_catalogue(config)
    with pytest.raises(ConfigError, match=r"^release is 1,000,000 characters long; at most 200 are allowed$"):
        drill(catalogue.get("orders"), catalogue, release="x" * 1_000_000)


def test_check_config_shows_a_replica_url_with_escape_sequences(write_catalogue, capsys):
    from drillbook.cli.main import main
    from tests.conftest import entry

    config = write_catalogue(entry("orders", "file:///r/\x1b[2J/orders.db"))
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "file:///r/\\x1b[2J/orders.db" in out
