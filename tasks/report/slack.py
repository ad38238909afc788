"""Step 8 (Slack): a drill result as a Block Kit message, its thread, and the nightly summary. Pure: nothing is sent here.

What a person sees at a glance: the verdict, the database, RTO and RPO against
their targets; on a failure the failure mode, the next action, the failing
checks and the owners. Everything longer goes into files in the message's
thread. Text is cut to Slack's limits (50 blocks, 3000 characters a section,
150 a header) with a pointer to the file, which holds the whole.

Nothing from the database's rows may reach Slack: findings and summaries are
rendered, never row values, and every outgoing text passes `redact`, which
masks e-mail addresses (the most common personal value in a failing check)
and anything token-like.

Every text from outside (names, releases, error text, summaries) is escaped
here, at the sink: `escape` for mrkdwn (sections, context, the notification
`text`), `plain` for plain_text (headers, file titles), `file_part` for file
names. Control characters and bidi overrides are shown, not sent. Mentions and
links appear only where drillbook writes them (owners, the flow run's link),
and every mrkdwn object is `verbatim`, so Slack does not auto-link or parse
mentions in what it was given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from drillbook.tasks.outcome import Status, Verdict, tally
from drillbook.tasks.report.drill import compat_lines, compat_rows, compat_title, headline, measure_line, outlook_lines, replica_measures
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import duration_text, file_part, redact, redact_data, redact_url, visible

if TYPE_CHECKING:
    from slack_sdk.models.blocks import Block, ContextBlock, SectionBlock


MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_CONTEXT_TEXT = 2000
MAX_FALLBACK = 300
MAX_FINDINGS_SHOWN = 10
CUT_MARK = "… (cut; the whole is in the evidence file in the thread)"

_EMOJI = {Verdict.PASS: ":white_check_mark:", Verdict.FAIL: ":red_circle:", Verdict.ERROR: ":warning:"}
_PHASE_MARK = {Status.PASSED: ":white_check_mark:", Status.FAILED: ":x:", Status.SKIPPED: ":heavy_minus_sign:", Status.ERROR: ":warning:"}


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so a detail never turns into a link or mention; control characters shown."""
    return visible(text, lines=True).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> str:
    """Text for a plain_text object (a header, a file title): Slack shows it as it is, on one line, controls shown."""
    return visible(" ".join(text.split()))


def notification(text: str) -> str:
    """The message's top-level `text` (notifications, the fallback): redacted, cut, then escaped as mrkdwn."""
    return escape(cut(redact(" ".join(text.split())), MAX_FALLBACK, "…"))


def cut(text: str, limit: int, mark: str = CUT_MARK) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(mark))].rstrip() + mark


def mention(owner: str) -> str:
    """<@U123> for a user, <!subteam^S123> for a user group."""
    return f"<!subteam^{owner}>" if owner.startswith("S") else f"<@{owner}>"


class SlackFile(BaseModel):
    filename: str
    title: str
    content: str = ""
    content_base64: str | None = Field(default=None, description="Binary content (a chart PNG), base64 so the outbox stays JSON.")

    def payload(self) -> bytes:
        import base64

        return base64.b64decode(self.content_base64) if self.content_base64 is not None else self.content.encode()


class ThreadItem(BaseModel):
    kind: Literal["message", "file"]
    text: str = ""
    blocks: list[dict[str, Any]] = Field(default_factory=list)
    file: SlackFile | None = None


class SlackMessage(BaseModel):
    """One message: the plain-text fallback, the blocks (as Slack takes them), and what goes into its thread."""

    text: str
    blocks: list[dict[str, Any]]
    thread: list[ThreadItem] = Field(default_factory=list)


# slack-sdk is imported when a message is built, not by every module that imports this one (a drill with no Slack
# channel, the alerts): bench/profile.py charged it 0.10-0.14 s of every `drillbook run` and nightly.
def section_block(text: str) -> SectionBlock:
    from slack_sdk.models.blocks import SectionBlock
    from slack_sdk.models.blocks.basic_components import MarkdownTextObject

    return SectionBlock(text=MarkdownTextObject(text=cut(text, MAX_SECTION), verbatim=True))


def context_block(*texts: str) -> ContextBlock:
    from slack_sdk.models.blocks import ContextBlock
    from slack_sdk.models.blocks.basic_components import MarkdownTextObject

    return ContextBlock(elements=[MarkdownTextObject(text=cut(t, MAX_CONTEXT_TEXT), verbatim=True) for t in texts[:10]])


def _bold_label(line: str, label: str) -> str:
    return f"*{label}*{escape(line[len(label) :])}" if line.startswith(label) else escape(line)


def header_text(result: DrillResult) -> str:
    release = f" · {result.release}" if result.release else ""
    return cut(f"{_EMOJI[result.verdict]} {result.verdict.value} · {plain(redact(result.database + release))}", MAX_HEADER, "…")


def fallback_text(result: DrillResult) -> str:
    """The one line Slack shows in notifications and where blocks cannot be shown."""
    return notification(headline(result))


def _findings_lines(result: DrillResult) -> list[str]:
    """Failing checks by name, with counts; details are summaries, never row values (and redacted)."""
    counts: dict[str, int] = {}
    for finding in result.findings:
        counts[finding.mode.value] = counts.get(finding.mode.value, 0) + 1
    lines = []
    for finding in result.findings[:MAX_FINDINGS_SHOWN]:
        lines.append(f"• *{escape(finding.mode.value)}*: {escape(cut(redact(finding.detail), 400, '…'))}")
    if len(result.findings) > MAX_FINDINGS_SHOWN:
        lines.append(f"• …and {len(result.findings) - MAX_FINDINGS_SHOWN} more in the evidence file")
    if len(result.findings) > 1:
        lines.insert(0, "_" + ", ".join(f"{mode} ×{count}" for mode, count in counts.items()) + "_")
    return lines


def _phase_lines(result: DrillResult) -> list[str]:
    lines = []
    said = {finding.detail for finding in result.findings}
    for name, phase in result.phases.items():
        took = "" if phase.status == Status.SKIPPED else f" in {duration_text(phase.seconds)}"
        line = f"{_PHASE_MARK[phase.status]} *{escape(name)}* {phase.status.value}{took}"
        if phase.status in (Status.FAILED, Status.ERROR) and phase.summary and phase.summary not in said:
            line += f" — {escape(cut(redact(phase.summary), 300, '…'))}"
        lines.append(line)
    return lines


def _outlook_mrkdwn(line: str) -> str:
    if line.startswith("WARNING forecast: "):
        return ":warning: *Forecast:* " + escape(line.removeprefix("WARNING forecast: "))
    if line.startswith("  "):
        return escape(line.strip())
    return _bold_label(line, line.split(":", 1)[0])


def chart_file(result: DrillResult) -> SlackFile | None:
    """The RTO / RPO chart with its forecast, when the forecast crosses inside the horizon (written beside the evidence)."""
    import base64
    from pathlib import Path

    outlook = result.outlook
    if outlook is None or not outlook.forecast.warning or not outlook.chart:
        return None
    try:
        data = Path(outlook.chart).read_bytes()
    except OSError:
        return None
    return SlackFile(
        filename=file_part(f"rto-{result.database}-{result.drill_id}.png"),
        title=f"{plain(result.database)}: RTO forecast crosses its target in about {outlook.forecast.days_to_target:.0f} days",
        content_base64=base64.b64encode(data).decode(),
    )


def drill_blocks(result: DrillResult, *, owners: Iterable[str] = (), evidence_in_thread: bool = True) -> list[dict[str, Any]]:
    """The Block Kit blocks for one drill (validated against Slack's limits by slack_sdk)."""
    from slack_sdk.models.blocks import HeaderBlock

    blocks: list[Block] = [HeaderBlock(text=header_text(result))]
    measures = [
        _bold_label(measure_line("RTO", result.rto_seconds, result.rto_target_seconds), "RTO"),
        _bold_label(measure_line("RPO", result.rpo_seconds, result.rpo_target_seconds), "RPO"),
    ]
    if result.data_loss_seconds is not None:  # RPO from the data (the worst seen), beside the replica's
        measures.append(_bold_label(measure_line("Data loss", result.data_loss_seconds, result.rpo_target_seconds), "Data loss"))
    measures += [_bold_label(line, label) for label, line in replica_measures(result)]
    blocks.append(section_block("\n".join(measures)))
    looking_ahead = outlook_lines(result)
    if looking_ahead:
        blocks.append(section_block("\n".join(_outlook_mrkdwn(line) for line in looking_ahead)))
    if result.verdict != Verdict.PASS:
        mode = result.failure_mode.value if result.failure_mode else "unknown"
        lines = [f"*Failure mode:* {escape(mode)}"]
        if result.action:
            lines.append(f"*Next:* {escape(result.action)}")
        blocks.append(section_block("\n".join(lines)))
        if result.findings:
            blocks.append(section_block("*Failing checks*\n" + "\n".join(_findings_lines(result))))
        mentions = " ".join(mention(o) for o in owners)
        if mentions:
            blocks.append(section_block(f"*Owners:* {mentions}"))
    blocks.append(section_block("*Phases*\n" + "\n".join(_phase_lines(result))))
    matrix = compat_lines(result)
    if matrix:  # the restore-tool matrix: which litestream versions restore this replica
        lines = [
            f"{':white_check_mark:' if ok else ':x:'} `{escape(row[0])}` {escape(cut(redact(said), 300, '…'))}" for ok, said, row in matrix
        ]
        blocks.append(section_block(f"*{escape(compat_title(result))}*\n" + "\n".join(lines)))
    context = [f"drill `{result.short_id}` · {result.finished_at:%Y-%m-%d %H:%M} UTC"]
    if result.flow_run_url and result.flow_run_url.startswith(("http://", "https://")) and not set("<>| ") & set(result.flow_run_url):
        context.append(f"<{result.flow_run_url}|Prefect flow run>")
    if evidence_in_thread:
        context.append("evidence bundle in the thread")
    elif result.evidence:
        context.append(f"evidence: `{escape(result.evidence)}`")
    blocks.append(context_block(*context))
    return [block.to_dict() for block in blocks[:MAX_BLOCKS]]


def evidence_file(result: DrillResult) -> SlackFile:
    """The whole evidence bundle as JSON, redacted like everything else that leaves."""
    data = redact_data({"drillbook_evidence": 1, **result.model_dump(mode="json")})
    return SlackFile(
        filename=file_part(f"drill-{result.database}-{result.drill_id}.json"),
        title=plain(f"Evidence bundle: {result.database} {result.verdict.value} ({result.short_id})"),
        content=json.dumps(data, indent=2) + "\n",
    )


def _command_lines(label: str, command: Any) -> list[str]:
    if command is None:
        return []
    argv = " ".join(redact_url(a) if a.startswith("s3://") else a for a in command.argv)
    lines = [f"## {label}: exit {command.exit_code}{' (timed out)' if command.timed_out else ''} in {command.seconds:.2f}s", f"$ {argv}"]
    if command.stderr.strip():
        lines += ["stderr:", command.stderr.strip()]
    return lines + [""]


def details_file(result: DrillResult) -> SlackFile:
    """On failure: the longer evidence a person triages with (findings, integrity rows, stderr)."""
    lines = [headline(result), ""]
    lines += ["# Findings"] + [f"- {f.mode.value}: {f.detail}" for f in result.findings] + [""]
    if result.action:
        lines += [f"Next: {result.action}", ""]
    lines += ["# Phases"] + [f"- {n}: {p.status.value} in {p.seconds:.2f}s: {p.summary}" for n, p in result.phases.items()] + [""]
    integrity = result.integrity
    if integrity is not None and integrity.status != Status.SKIPPED:
        lines += [f"# Integrity ({integrity.integrity_problems} problem(s))"] + [f"  {row}" for row in integrity.integrity_rows]
        if integrity.foreign_key_rows:
            lines += [f"# Foreign key violations ({integrity.foreign_key_problems})"] + [
                f"  {json.dumps(r)}" for r in integrity.foreign_key_rows
            ]
        for label, value in (("sidecars", integrity.sidecar_problem), ("schema", integrity.schema_problem), ("open", integrity.open_error)):
            if value:
                lines.append(f"{label}: {value}")
        lines.append("")
    matrix = compat_rows(result)
    if matrix:
        lines += [f"# {compat_title(result)}"] + [
            f"- {v}: restores {r}, same data {d}, {sec}s{': ' + e if e else ''}" for v, r, d, sec, e in matrix
        ]
        lines.append("")
    if result.replica is not None and result.replica.files:
        levels = ", ".join(f"L{level}: {count}" for level, count in sorted(result.replica.levels.items()))
        lines += [f"# Replica listing: {result.replica.files} LTX files ({levels}), newest {result.replica.newest_file}", ""]
    if result.restore is not None:
        lines += _command_lines("litestream restore", result.restore.command)
    if result.scratch_kept:
        lines.append(f"restored copy kept for triage: {result.scratch_kept}")
    if result.evidence:
        lines.append(f"evidence bundle on disk: {result.evidence}")
    return SlackFile(
        filename=file_part(f"drill-{result.database}-{result.drill_id}-details.txt"),
        title=plain(f"Details: {result.database} {result.verdict.value}"),
        content=visible(redact("\n".join(lines).rstrip() + "\n"), lines=True),
    )


def render_drill_message(result: DrillResult, *, owners: Iterable[str] = (), thread: bool = True) -> SlackMessage:
    """The whole Slack report of one drill: message, and (with `thread`) the evidence files for its thread."""
    owners = list(owners)
    items: list[ThreadItem] = []
    if thread:
        items.append(ThreadItem(kind="file", file=evidence_file(result)))
        if result.verdict != Verdict.PASS:
            items.append(ThreadItem(kind="file", file=details_file(result)))
        chart = chart_file(result)
        if chart is not None:
            items.append(ThreadItem(kind="file", file=chart))
    return SlackMessage(text=fallback_text(result), blocks=drill_blocks(result, owners=owners, evidence_in_thread=thread), thread=items)


_ORDER = {Verdict.ERROR: 0, Verdict.FAIL: 1, Verdict.PASS: 2}


def _summary_line(result: DrillResult, owners: Iterable[str]) -> str:
    line = f"{_EMOJI[result.verdict]} *{escape(result.database)}* {result.verdict.value}"
    if result.verdict != Verdict.PASS:
        line += f" · {escape(result.failure_mode.value if result.failure_mode else 'unknown')}"
    line += f" · RTO {duration_text(result.rto_seconds)}/{duration_text(result.rto_target_seconds)}"
    line += f" · RPO {duration_text(result.rpo_seconds)}/{duration_text(result.rpo_target_seconds)}"
    if result.outlook is not None and result.outlook.forecast.warning:
        line += f" · :warning: RTO forecast reaches its target in about {result.outlook.forecast.days_to_target:.0f} days"
    if result.verdict != Verdict.PASS:
        line += "".join(f" {mention(o)}" for o in owners)
    return line


def render_nightly_summary(
    results: list[DrillResult],
    *,
    owners: dict[str, list[str]] | None = None,
    thread: bool = True,
    title: str = "Nightly restore drills",
    notes: Sequence[str] = (),
) -> SlackMessage:
    """One message for many drills: a line per database, failures first; each failure's detail in the thread.

    `notes` (a budgeted nightly's coverage, what it left and why) go under the header, before the drills."""
    owners = owners or {}
    ordered = sorted(results, key=lambda r: (_ORDER[r.verdict], r.database))
    counts = tally((r.verdict for r in results), empty="no databases")
    worst = ordered[0].verdict if ordered else Verdict.PASS
    from slack_sdk.models.blocks import HeaderBlock

    blocks: list[Block] = [HeaderBlock(text=cut(f"{_EMOJI[worst]} {plain(redact(title))}: {counts}", MAX_HEADER, "…"))]
    if notes:
        blocks.append(section_block(cut("\n".join(escape(redact(note)) for note in notes), MAX_SECTION)))
    lines = [_summary_line(r, owners.get(r.database, [])) for r in ordered]
    # Lines are packed into sections; past the block limit, the rest is counted, not shown.
    chunk: list[str] = []
    room = MAX_BLOCKS - 3
    shown = 0
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > MAX_SECTION - 100:
            blocks.append(section_block("\n".join(chunk)))
            chunk = []
            if len(blocks) >= room:
                break
        chunk.append(line)
        shown += 1
    else:
        if chunk:
            blocks.append(section_block("\n".join(chunk)))
            chunk = []
    if shown < len(lines):
        blocks.append(section_block(f"…and {len(lines) - shown} more databases; see the evidence folder"))
    failures = [r for r in ordered if r.verdict != Verdict.PASS]
    if failures and thread:
        blocks.append(context_block("each failure's detail and evidence is in the thread"))
    text = notification(
        f"{title}: {counts}"
        + "".join(f"; {note}" for note in notes[:1])
        + "".join(f"; {r.verdict.value} {r.database}" for r in failures[:10])
    )
    items: list[ThreadItem] = []
    if thread:
        for result in failures:
            detail = render_drill_message(result, owners=owners.get(result.database, []))
            items.append(ThreadItem(kind="message", text=detail.text, blocks=detail.blocks))
            items.extend(detail.thread)
        for result in ordered:  # a passing database whose RTO forecast crosses inside the horizon: its chart and line
            chart = chart_file(result) if result.verdict == Verdict.PASS else None
            if chart is not None:
                items.append(ThreadItem(kind="message", text=notification(f"{result.database}: {result.outlook.forecast.line}")))  # type: ignore[union-attr]
                items.append(ThreadItem(kind="file", file=chart))
    return SlackMessage(text=text, blocks=[b.to_dict() for b in blocks[:MAX_BLOCKS]], thread=items)
