"""Step 8: rendering a drill result for people. Pure: rendering never sends anything.

Each renderer escapes for itself: the terminal panel is built of `Text` (never parsed as rich markup) from
`shown` text (credentials masked, control characters and escape sequences written out); the Markdown
artifact backslash-escapes Markdown's punctuation in every text from outside.
"""

from __future__ import annotations

import re

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from drillbook.tasks.outcome import Status, Verdict
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import duration_text, redact, visible

_COLOURS = {Verdict.PASS: "green", Verdict.FAIL: "red", Verdict.ERROR: "yellow"}
_STATUS_MARK = {Status.PASSED: "ok", Status.FAILED: "FAILED", Status.SKIPPED: "skipped", Status.ERROR: "ERROR"}


def measure_line(label: str, measured: float | None, target: float) -> str:
    """'RTO 12.3s (target 5m 00s, 4m 48s to spare)' or '... 3.0s over'."""
    if measured is None:
        return f"{label} not measured (target {duration_text(target)})"
    delta = target - measured
    relation = f"{duration_text(delta)} to spare" if delta >= 0 else f"{duration_text(-delta)} over"
    return f"{label} {duration_text(measured)} (target {duration_text(target)}, {relation})"


def headline(result: DrillResult) -> str:
    """One line that says it all (Slack's fallback text, logs, the terminal title)."""
    release = f" after {result.release}" if result.release else ""
    if result.point is not None and result.point.request is not None:  # a point-in-time drill says which point
        release += f" at {result.point.request.describe()}"
    if result.verdict == Verdict.PASS:
        return (
            f"PASS {result.database}{release}: restorable in {duration_text(result.rto_seconds)} "
            f"(RTO target {duration_text(result.rto_target_seconds)}), replica {duration_text(result.rpo_seconds)} behind "
            f"(RPO target {duration_text(result.rpo_target_seconds)})"
        )
    mode = result.failure_mode.value if result.failure_mode else "unknown"
    return f"{result.verdict.value} {result.database}{release}: {mode}: {result.findings[0].detail if result.findings else ''}".rstrip(": ")


def plan_line(result: DrillResult) -> str | None:
    """'Plan: expected RTO 4.0s for 1,065,915 bytes, measured 4.4s (+10%)': the forecast made before restoring, against what happened."""
    plan = result.plan
    if plan is None or plan.status != Status.PASSED:
        return None
    fetched = f"{plan.bytes_to_fetch or 0:,} bytes in {len(plan.files)} LTX file(s)"
    if plan.expected_rto_seconds is None:
        return f"Plan: {fetched}; no expected RTO yet (no drill with a measured throughput)"
    line = f"Plan: expected RTO {duration_text(plan.expected_rto_seconds)} for {fetched}"
    if result.rto_seconds is not None and plan.expected_rto_seconds > 0:
        error = (result.rto_seconds - plan.expected_rto_seconds) / plan.expected_rto_seconds
        line += f", measured {duration_text(result.rto_seconds)} ({error:+.0%})"
    return line


def outlook_lines(result: DrillResult) -> list[str]:
    """The forecast line (WARNING inside the horizon), the no-go advice and the plan against the measured RTO."""
    lines = result.outlook.lines() if result.outlook is not None else []
    plan = plan_line(result)
    return lines + ([plan] if plan else [])


def replica_measures(result: DrillResult) -> list[tuple[str, str]]:
    """(label, line) of the read-replica and promotion drills' figures, shown beside RTO and RPO."""
    lines = []
    follow = result.follow
    if follow is not None and follow.p95 is not None and follow.freshness_target is not None:
        label = "Follower staleness p95"
        lines.append(
            (
                label,
                measure_line(label, follow.p95, follow.freshness_target)
                + f"; p50 {duration_text(follow.p50)}, max {duration_text(follow.max)} over {follow.samples} samples"
                + (", against the primary" if follow.measured_against == "primary" else ", against the replica only"),
            )
        )
    promote = result.promote
    if promote is not None and promote.failover_rto_target is not None and promote.status != Status.SKIPPED:
        label = "Failover RTO (promotion)"
        lines.append((label, measure_line(label, promote.failover_rto_seconds, promote.failover_rto_target)))
    return lines


def replica_lines(result: DrillResult) -> list[str]:
    return [line for _label, line in replica_measures(result)]


COMPAT_COLUMNS = ("version", "restores", "same data", "seconds", "error")


def compat_rows(result: DrillResult) -> list[tuple[str, str, str, str, str]]:
    """The restore-tool matrix (restore_with), one row per litestream version, as text: empty when the phase did not run."""
    compat = result.compat
    if compat is None or not compat.rows:
        return []
    same = {True: "yes", False: "NO", None: "-"}
    return [
        (row.version, "yes" if row.restored else "NO", same[row.same_data], f"{row.seconds:.2f}", row.error or "") for row in compat.rows
    ]


def compat_lines(result: DrillResult) -> list[tuple[bool, str, tuple[str, str, str, str, str]]]:
    """Each version as (compatible, what it did in words, its row): for reports that speak in sentences (Slack)."""
    out = []
    for row in compat_rows(result):
        version, restores, same, seconds, error = row
        ok = restores == "yes" and same == "yes"
        said = {("yes", "yes"): "restores the same data", ("yes", "NO"): "restores different data", ("yes", "-"): "restored, not compared"}
        text = f"{said.get((restores, same), 'cannot restore')} in {seconds}s" + (f": {error}" if error and not ok else "")
        out.append((ok, text, row))
    return out


def compat_title(result: DrillResult) -> str:
    compat = result.compat
    where = f"TXID {compat.txid}" if compat is not None and compat.txid else "the newest position"
    return f"litestream versions restoring {where} against the pinned {compat.pinned if compat else ''}".rstrip()


def shown(text: str, style: str = "", *, lines: bool = False) -> Text:
    """Text for the terminal: credentials masked, control characters shown, and never read as rich markup."""
    return Text(visible(redact(text, emails=False), lines=lines), style=style)


def render_terminal(result: DrillResult) -> Panel:
    colour = _COLOURS[result.verdict]
    lines = [
        shown(headline(result), f"bold {colour}"),
        shown(measure_line("RTO", result.rto_seconds, result.rto_target_seconds)),
        shown(measure_line("RPO", result.rpo_seconds, result.rpo_target_seconds)),
    ]
    if result.data_loss_seconds is not None:  # the worst seen: at the copy (freshness_query) or during the follower's window
        lines.append(shown(measure_line("Data loss (freshness_query)", result.data_loss_seconds, result.rpo_target_seconds)))
    lines.extend(shown(line) for line in replica_lines(result))
    phases = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    phases.add_column("phase")
    phases.add_column("status")
    phases.add_column("seconds", justify="right")
    phases.add_column("detail", overflow="fold")
    for name, phase in result.phases.items():
        style = {Status.FAILED: "red", Status.ERROR: "yellow"}.get(phase.status, "")
        phases.add_row(shown(name), Text(_STATUS_MARK[phase.status], style=style), f"{phase.seconds:.2f}", shown(phase.summary, lines=True))
    for line in outlook_lines(result):
        lines.append(shown(line, "bold yellow" if line.startswith(("WARNING", "No-go")) else ""))
    parts: list = [*lines, Text(""), phases]
    matrix = compat_rows(result)
    if matrix:
        versions = Table(box=None, pad_edge=False, show_header=True, header_style="bold", title=None)
        for column in COMPAT_COLUMNS:
            versions.add_column(column, justify="right" if column == "seconds" else "left", overflow="fold")
        for row in matrix:
            versions.add_row(*(shown(cell, "red" if cell == "NO" else "", lines=True) for cell in row))
        parts += [Text(""), shown(compat_title(result), "bold"), versions]
    if result.verdict != Verdict.PASS:
        parts.append(Text(""))
        for finding in result.findings:
            parts.append(shown(f"- {finding.mode.value}: {finding.detail}", colour, lines=True))
        if result.action:
            parts.append(shown(f"Next: {result.action}", "bold"))
    tail = []
    if result.scratch_kept:
        tail.append(f"restored copy kept for triage: {result.scratch_kept}")
    if result.evidence:
        tail.append(f"evidence: {result.evidence}")
    tail.extend(result.notes)
    if tail:
        parts.append(Text(""))
        parts.extend(shown(line, "dim", lines=True) for line in tail)
    title = shown(f"drillbook · {result.database}" + (f" · {result.release}" if result.release else ""))
    return Panel(Group(*parts), title=title, border_style=colour, expand=False)


# Emphasis, code, links, HTML, entities, table cells, strike; '_' inside a word never emphasises (snake_case stays).
_MARKDOWN_INLINE = re.compile(r"([\\`*\[\]<>&|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_MARKDOWN_LINE_START = re.compile(r"^()([#>+-])|^(\d+)([.)])")  # a heading, a quote, a list item ('-', '1.')


def _one_line(text: str) -> str:
    return visible(" ".join(redact(text, emails=False).split()))


def md(text: str) -> str:
    """Free text from outside inside Markdown: what would format, link or open HTML backslash-escaped, on one line."""
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", _one_line(text))
    return _MARKDOWN_LINE_START.sub(lambda m: (m.group(3) or "") + "\\" + (m.group(2) or m.group(4)), escaped)


def _cell(text: str) -> str:
    """Text from outside in a table cell: inline Markdown escaped (a cell never starts a list or a heading)."""
    return _MARKDOWN_INLINE.sub(r"\\\1", _one_line(text))


def code(text: str) -> str:
    """A name or path from outside as a Markdown code span: shown literally; the fence is longer than any backtick run in it."""
    flat = _one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def render_markdown(result: DrillResult) -> str:
    """The same summary as Markdown (Prefect artifact)."""
    out = [
        f"## {result.verdict.value}: {code(result.database)}" + (f" after {code(result.release)}" if result.release else ""),
        "",
        f"- **{measure_line('RTO', result.rto_seconds, result.rto_target_seconds)}**",
        f"- **{measure_line('RPO', result.rpo_seconds, result.rpo_target_seconds)}**",
    ]
    out += [f"- **{md(line)}**" for line in replica_lines(result)]
    for line in outlook_lines(result):
        if line.startswith("  "):
            out.append(f"    {line.strip()}")
        else:
            label, _, rest = line.partition(": ")
            out.append(f"- **{label}:** {rest}")
    if result.failure_mode:
        out.append(f"- **Failure mode:** {result.failure_mode.value}")
        out.append(f"- **Next:** {result.action}")
    out += ["", "| phase | status | seconds | detail |", "|---|---|---:|---|"]
    for name, phase in result.phases.items():
        out.append(f"| {md(name)} | {_STATUS_MARK[phase.status]} | {phase.seconds:.2f} | {md(phase.summary)} |")
    matrix = compat_rows(result)
    if matrix:
        out += ["", f"### {md(compat_title(result))}", "", "| " + " | ".join(COMPAT_COLUMNS) + " |", "|---|---|---|---:|---|"]
        out += ["| " + " | ".join(_cell(text) for text in row) + " |" for row in matrix]
    if len(result.findings) > 1 or (result.findings and result.verdict != Verdict.PASS):
        out += ["", "### Findings", ""]
        out += [f"- **{f.mode.value}**: {md(f.detail)}" for f in result.findings]
    out.append("")
    if result.scratch_kept:
        out.append(f"Restored copy kept for triage: {code(result.scratch_kept)}  ")
    if result.evidence:
        out.append(f"Evidence bundle: {code(result.evidence)}  ")
    out += [f"{md(note)}  " for note in result.notes]
    return "\n".join(out).rstrip() + "\n"
