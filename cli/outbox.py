"""`drillbook outbox [list|send]`: reports a channel (Slack, the webhook) did not take."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.outcome import EXIT_CODES, Verdict
from drillbook.tasks.text import one_line

EXIT_FAIL = EXIT_CODES[Verdict.FAIL]


def cmd_outbox(args: argparse.Namespace) -> int:
    catalogue = load_catalogue(args.config)
    if args.json:
        return _outbox_json(catalogue, args.action)
    code = _slack_outbox(catalogue, args.action)
    for channel in _other_outboxes(catalogue):
        code = max(code, _channel_outbox(channel, args.action))
    return code


def _other_outboxes(catalogue: Any) -> list[Any]:
    """Every channel but Slack (listed above, in more detail) that keeps an outbox: `send_waiting()` and `outbox`."""
    from drillbook.tasks.notify import SlackNotifier, channels

    return [c for c in channels(catalogue) if not isinstance(c, SlackNotifier) and hasattr(c, "send_waiting")]


def _channel_outbox(channel: Any, action: str) -> int:
    waiting = channel.send_waiting() if action == "send" else channel.outbox.pending()
    print(f"{channel.outbox.directory}: {len(waiting)} {channel.name} report(s) waiting")
    for entry in waiting:
        print(f"  {entry.key}  {entry.kind}  queued {entry.created_at:%Y-%m-%d %H:%M:%S}Z  tries {entry.attempts}")
        if entry.reason:
            print(f"      reason: {one_line(entry.reason)}")
    return EXIT_FAIL if action == "send" and waiting else 0


def _slack_outbox(catalogue: Any, action: str) -> int:
    from drillbook.tasks.slack import list_outbox, send_outbox

    if catalogue.slack is None and _other_outboxes(catalogue):
        return 0
    if catalogue.slack is None:
        print(f"{catalogue.path}: Slack is not configured (no [slack] table), so there is no outbox")
        return 0
    if action == "send":
        deliveries = send_outbox(catalogue)
        if not deliveries:
            print(f"{catalogue.outbox_dir}: nothing waiting")
            return 0
        for delivery in deliveries:
            print(
                f"  {delivery.key}: {delivery.status}: {one_line(delivery.note if delivery.status != 'queued' else delivery.reason, 1000)}"
            )
        waiting = sum(1 for d in deliveries if d.status in ("queued", "busy"))
        print(f"{len(deliveries) - waiting} sent, {waiting} still waiting in {catalogue.outbox_dir}")
        return EXIT_FAIL if waiting else 0
    entries = list_outbox(catalogue)
    print(f"{catalogue.outbox_dir}: {len(entries)} report(s) waiting" + (" (`drillbook outbox send` re-sends them)" if entries else ""))
    for entry in entries:
        what = f"{entry.kind} {entry.database or ''} {entry.verdict or ''}".replace("  ", " ").strip()
        progress = " (message posted, thread incomplete)" if entry.posted_ts else ""
        print(f"  {entry.key}  {what}  queued {entry.created_at:%Y-%m-%d %H:%M:%S}Z  tries {entry.attempts}{progress}")
        if entry.reason:
            print(f"      reason: {one_line(entry.reason)}")  # entries queued before reasons were kept to one line
    return 0


def _outbox_json(catalogue: Any, action: str) -> int:
    from drillbook.tasks.slack import list_outbox, send_outbox

    out: dict[str, Any] = {
        "configured": catalogue.slack is not None,
        "outbox_dir": str(catalogue.outbox_dir) if catalogue.outbox_dir else None,
    }
    code = 0
    for channel in _other_outboxes(catalogue):
        waiting = channel.send_waiting() if action == "send" else channel.outbox.pending()
        out[f"{channel.name}_waiting"] = [e.model_dump(mode="json", exclude={"payload"}) for e in waiting]
        code = EXIT_FAIL if action == "send" and waiting else code
    if action == "send" and catalogue.slack is not None:
        deliveries = send_outbox(catalogue)
        out["deliveries"] = [d.model_dump(mode="json") for d in deliveries]
        code = EXIT_FAIL if any(d.status in ("queued", "busy") for d in deliveries) else code
    entries = list_outbox(catalogue) if catalogue.slack is not None else []
    out["waiting"] = [
        {
            "key": e.key,
            "kind": e.kind,
            "database": e.database,
            "verdict": e.verdict,
            "created_at": e.created_at.isoformat(),
            "attempts": e.attempts,
            "reason": e.reason,
        }
        for e in entries
    ]
    print(json.dumps(out, indent=2))
    return code


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    outbox = commands.add_parser(
        "outbox",
        help="list (or send) reports Slack or the webhook did not take",
        description="Reports a channel did not take wait in its outbox ([slack] / [webhook] outbox_dir) with the reason. 'send' re-sends them; a report is never sent twice.",
    )
    outbox.add_argument("action", nargs="?", choices=["list", "send"], default="list", help="list (default) or send")
    config_option(outbox)
    outbox.add_argument("--json", action="store_true", help="print what waits (and, with send, what happened to each) as JSON")
    outbox.set_defaults(func=cmd_outbox)
