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
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Literal

from pydantic import BaseModel, Field
from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, SectionBlock
from slack_sdk.models.blocks.basic_components import MarkdownTextObject

from drillbook.tasks.config import redact_url
from drillbook.tasks.report import headline, measure_line, seconds_text
from drillbook.tasks.steps import Status
from drillbook.tasks.verdict import DrillResult, Verdict, tally

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_CONTEXT_TEXT = 2000
MAX_FALLBACK = 300
MAX_FINDINGS_SHOWN = 10
CUT_MARK = "… (cut; the whole is in the evidence file in the thread)"

_EMOJI = {Verdict.PASS: ":white_check_mark:", Verdict.FAIL: ":red_circle:", Verdict.ERROR: ":warning:"}
_PHASE_MARK = {Status.PASSED: ":white_check_mark:", Status.FAILED: ":x:", Status.SKIPPED: ":heavy_minus_sign:", Status.ERROR: ":warning:"}
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_TOKENISH = re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+|(hooks\.slack\.com/services/)[A-Za-z0-9/]+")
EMAIL_MASK = "[email redacted]"


def redact(text: str, *secrets: str | None) -> str:
    """`text` with e-mail addresses, Slack tokens, webhook paths and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret redacted]")
    text = _TOKENISH.sub(lambda m: (m.group(1) or "") + "[secret redacted]", text)
    return _EMAIL.sub(EMAIL_MASK, text)


def redact_data(value: Any, *secrets: str | None) -> Any:
    """`redact` applied to every string in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, dict):
        return {redact(str(k), *secrets): redact_data(v, *secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v, *secrets) for v in value]
    return value


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so a detail never turns into a link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int, mark: str = CUT_MARK) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(mark))].rstrip() + mark


def mention(owner: str) -> str:
    """<@U123> for a user, <!subteam^S123> for a user group."""
    return f"<!subteam^{owner}>" if owner.startswith("S") else f"<@{owner}>"


class SlackFile(BaseModel):
    filename: str
    title: str
    content: str


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


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=cut(text, MAX_SECTION)))


def _context(*texts: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=cut(t, MAX_CONTEXT_TEXT)) for t in texts[:10]])


def _bold_label(line: str, label: str) -> str:
    return f"*{label}*{escape(line[len(label):])}" if line.startswith(label) else escape(line)


def header_text(result: DrillResult) -> str:
    release = f" · {result.release}" if result.release else ""
    return cut(f"{_EMOJI[result.verdict]} {result.verdict.value} · {result.database}{release}", MAX_HEADER, "…")


def fallback_text(result: DrillResult) -> str:
    """The one line Slack shows in notifications and where blocks cannot be shown."""
    return cut(redact(headline(result)), MAX_FALLBACK, "…")


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
        took = "" if phase.status == Status.SKIPPED else f" in {seconds_text(phase.seconds)}"
        line = f"{_PHASE_MARK[phase.status]} *{escape(name)}* {phase.status.value}{took}"
        if phase.status in (Status.FAILED, Status.ERROR) and phase.summary and phase.summary not in said:
            line += f" — {escape(cut(redact(phase.summary), 300, '…'))}"
        lines.append(line)
    return lines


def drill_blocks(result: DrillResult, *, owners: Iterable[str] = (), evidence_in_thread: bool = True) -> list[dict[str, Any]]:
    """The Block Kit blocks for one drill (validated against Slack's limits by slack_sdk)."""
    blocks: list[Block] = [HeaderBlock(text=header_text(result))]
    measures = [
        _bold_label(measure_line("RTO", result.rto_seconds, result.rto_target_seconds), "RTO"),
        _bold_label(measure_line("RPO", result.rpo_seconds, result.rpo_target_seconds), "RPO"),
    ]
    blocks.append(_section("\n".join(measures)))
    if result.verdict != Verdict.PASS:
        mode = result.failure_mode.value if result.failure_mode else "unknown"
        lines = [f"*Failure mode:* {escape(mode)}"]
        if result.action:
            lines.append(f"*Next:* {escape(result.action)}")
        blocks.append(_section("\n".join(lines)))
        if result.findings:
            blocks.append(_section("*Failing checks*\n" + "\n".join(_findings_lines(result))))
        mentions = " ".join(mention(o) for o in owners)
        if mentions:
            blocks.append(_section(f"*Owners:* {mentions}"))
    blocks.append(_section("*Phases*\n" + "\n".join(_phase_lines(result))))
    context = [f"drill `{result.short_id}` · {result.finished_at:%Y-%m-%d %H:%M} UTC"]
    if result.flow_run_url and result.flow_run_url.startswith(("http://", "https://")):
        context.append(f"<{result.flow_run_url}|Prefect flow run>")
    if evidence_in_thread:
        context.append("evidence bundle in the thread")
    elif result.evidence:
        context.append(f"evidence: `{escape(result.evidence)}`")
    blocks.append(_context(*context))
    return [block.to_dict() for block in blocks[:MAX_BLOCKS]]


def evidence_file(result: DrillResult) -> SlackFile:
    """The whole evidence bundle as JSON, redacted like everything else that leaves."""
    data = redact_data({"drillbook_evidence": 1, **result.model_dump(mode="json")})
    return SlackFile(
        filename=f"drill-{result.database}-{result.drill_id}.json",
        title=f"Evidence bundle: {result.database} {result.verdict.value} ({result.short_id})",
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
            lines += [f"# Foreign key violations ({integrity.foreign_key_problems})"] + [f"  {json.dumps(r)}" for r in integrity.foreign_key_rows]
        for label, value in (("sidecars", integrity.sidecar_problem), ("schema", integrity.schema_problem), ("open", integrity.open_error)):
            if value:
                lines.append(f"{label}: {value}")
        lines.append("")
    if result.replica is not None:
        lines += _command_lines("litestream ltx", result.replica.command)
    if result.restore is not None:
        lines += _command_lines("litestream restore", result.restore.command)
    if result.scratch_kept:
        lines.append(f"restored copy kept for triage: {result.scratch_kept}")
    if result.evidence:
        lines.append(f"evidence bundle on disk: {result.evidence}")
    return SlackFile(
        filename=f"drill-{result.database}-{result.drill_id}-details.txt",
        title=f"Details: {result.database} {result.verdict.value}",
        content=redact("\n".join(lines).rstrip() + "\n"),
    )


def render_drill_message(result: DrillResult, *, owners: Iterable[str] = (), thread: bool = True) -> SlackMessage:
    """The whole Slack report of one drill: message, and (with `thread`) the evidence files for its thread."""
    owners = list(owners)
    items: list[ThreadItem] = []
    if thread:
        items.append(ThreadItem(kind="file", file=evidence_file(result)))
        if result.verdict != Verdict.PASS:
            items.append(ThreadItem(kind="file", file=details_file(result)))
    return SlackMessage(text=fallback_text(result), blocks=drill_blocks(result, owners=owners, evidence_in_thread=thread), thread=items)


_ORDER = {Verdict.ERROR: 0, Verdict.FAIL: 1, Verdict.PASS: 2}


def _summary_line(result: DrillResult, owners: Iterable[str]) -> str:
    line = f"{_EMOJI[result.verdict]} *{escape(result.database)}* {result.verdict.value}"
    if result.verdict != Verdict.PASS:
        line += f" · {escape(result.failure_mode.value if result.failure_mode else 'unknown')}"
    line += f" · RTO {seconds_text(result.rto_seconds)}/{seconds_text(result.rto_target_seconds)}"
    line += f" · RPO {seconds_text(result.rpo_seconds)}/{seconds_text(result.rpo_target_seconds)}"
    if result.verdict != Verdict.PASS:
        line += "".join(f" {mention(o)}" for o in owners)
    return line


def render_nightly_summary(
    results: list[DrillResult], *, owners: dict[str, list[str]] | None = None, thread: bool = True, title: str = "Nightly restore drills"
) -> SlackMessage:
    """One message for many drills: a line per database, failures first; each failure's detail in the thread."""
    owners = owners or {}
    ordered = sorted(results, key=lambda r: (_ORDER[r.verdict], r.database))
    counts = tally((r.verdict for r in results), empty="no databases")
    worst = ordered[0].verdict if ordered else Verdict.PASS
    blocks: list[Block] = [HeaderBlock(text=cut(f"{_EMOJI[worst]} {title}: {counts}", MAX_HEADER, "…"))]
    lines = [_summary_line(r, owners.get(r.database, [])) for r in ordered]
    # Lines are packed into sections; past the block limit, the rest is counted, not shown.
    chunk: list[str] = []
    room = MAX_BLOCKS - 3
    shown = 0
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > MAX_SECTION - 100:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
            if len(blocks) >= room:
                break
        chunk.append(line)
        shown += 1
    else:
        if chunk:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
    if shown < len(lines):
        blocks.append(_section(f"…and {len(lines) - shown} more databases; see the evidence folder"))
    failures = [r for r in ordered if r.verdict != Verdict.PASS]
    if failures and thread:
        blocks.append(_context("each failure's detail and evidence is in the thread"))
    text = cut(redact(f"{title}: {counts}" + "".join(f"; {r.verdict.value} {r.database}" for r in failures[:10])), MAX_FALLBACK, "…")
    items: list[ThreadItem] = []
    if thread:
        for result in failures:
            detail = render_drill_message(result, owners=owners.get(result.database, []))
            items.append(ThreadItem(kind="message", text=detail.text, blocks=detail.blocks))
            items.extend(detail.thread)
    return SlackMessage(text=text, blocks=[b.to_dict() for b in blocks[:MAX_BLOCKS]], thread=items)


def preview_json(message: SlackMessage) -> str:
    """What to paste into Slack's Block Kit Builder."""
    return json.dumps({"blocks": message.blocks}, indent=2, ensure_ascii=False)

