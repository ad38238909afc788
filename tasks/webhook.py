"""A second channel: drill reports, run summaries and alerts POSTed as JSON to a webhook, through an outbox.

The `[webhook]` table names the variable holding the URL (`url_env`): the URL
is a credential (it carries a token or is one), so it is never in the
catalogue, a Prefect parameter, a log or a report. Each report is saved in the
webhook's outbox before it is sent and moved to `sent/` once the endpoint
answers 2xx; a key in `sent/` is never sent again, so a re-run or
`drillbook outbox send` does not post a report twice. Anything else (refused,
unreachable, 429, 5xx, a timeout) leaves it waiting, with the reason, and the
verdict stands. What is sent is what a person reads: the headline, the
failure mode, the action, the figures and where the evidence is; no row value.

    {"drillbook_webhook": 1, "kind": "drill", "key": "<drill id>", "database": "orders", "verdict": "FAIL",
     "failure_mode": "replica lag", "text": "FAIL orders: replica lag: ...", "action": "...", ...}
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from drillbook.tasks.config import Catalogue
from drillbook.tasks.outcome import tally
from drillbook.tasks.report.drill import headline
from drillbook.tasks.result import DrillResult
from drillbook.tasks.slack.outbox import Outbox
from drillbook.tasks.text import one_line, redact, remember_secret, visible
from drillbook.tasks.transitions import Alert

WEBHOOK_FORMAT = 1


class WebhookEntry(BaseModel):
    """One report on its way to the webhook, with how far it got."""

    key: str
    kind: Literal["drill", "summary", "alert"]
    created_at: datetime
    payload: dict[str, Any]
    attempts: int = 0
    last_attempt_at: datetime | None = None
    reason: str | None = None
    delivered_at: datetime | None = None


def drill_payload(result: DrillResult) -> dict[str, Any]:
    return {
        "kind": "drill",
        "key": result.drill_id,
        "database": result.database,
        "release": result.release,
        "verdict": result.verdict.value,
        "failure_mode": result.failure_mode.value if result.failure_mode else None,
        "text": headline(result),
        "action": result.action,
        "findings": [{"mode": f.mode.value, "detail": f.detail} for f in result.findings],
        "rto_seconds": result.rto_seconds,
        "rto_target_seconds": result.rto_target_seconds,
        "rpo_seconds": result.rpo_seconds,
        "rpo_target_seconds": result.rpo_target_seconds,
        "started_at": result.started_at.isoformat(),
        "evidence": result.evidence,
    }


def summary_payload(results: list[DrillResult], title: str, notes: Sequence[str] = ()) -> dict[str, Any]:
    drills = sorted((r.database, r.drill_id, r.verdict.value, r.failure_mode.value if r.failure_mode else None) for r in results)
    key = "summary-" + hashlib.sha256(" ".join(sorted(d[1] for d in drills)).encode()).hexdigest()[:16]
    return {
        "kind": "summary",
        "key": key,
        "title": title,
        "text": f"{title}: {tally(r.verdict for r in results)}",
        "drills": [{"database": d[0], "drill_id": d[1], "verdict": d[2], "failure_mode": d[3]} for d in drills],
        "notes": list(notes),  # a budgeted nightly: its coverage, what it left and why
    }


def alert_payload(alert: Alert) -> dict[str, Any]:
    return {"kind": "alert", "key": alert.key, "database": alert.database, "text": alert.line}


class WebhookNotifier:
    """The `[webhook]` channel (tasks/notify.py's `channels` lists it when the catalogue has the table)."""

    name = "webhook"

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.settings = catalogue.webhook
        self.outbox = Outbox(catalogue.resolve(self.settings.outbox_dir), WebhookEntry)
        remember_secret(os.environ.get(self.settings.url_env))  # masked in every output from here on

    def drill(self, result: DrillResult) -> str:
        return self.send(drill_payload(result))

    def summary(self, results: list[DrillResult], title: str, notes: Sequence[str] = ()) -> str:
        return self.send(summary_payload(results, title, notes))

    def alert(self, alert: Alert) -> str:
        return self.send(alert_payload(alert))

    def send(self, payload: dict[str, Any]) -> str:
        """Queue the report, then try every waiting one (oldest first): one line on this report's delivery."""
        key = payload["key"]
        if self.outbox.already_sent(key):
            return f"webhook: {key} already sent"
        if self.outbox.get(key) is None:
            clean = _clean(payload)
            self.outbox.save(WebhookEntry(key=key, kind=clean["kind"], created_at=datetime.now(UTC), payload=clean))
        said = {entry.key: self._try(entry) for entry in self.outbox.pending()}
        return said.get(key, f"webhook: {key} sent by another process")

    def send_waiting(self) -> list[WebhookEntry]:
        """`drillbook outbox send`: every waiting report tried once; those still waiting are returned."""
        for entry in self.outbox.pending():
            self._try(entry)
        return self.outbox.pending()

    def _try(self, entry: WebhookEntry) -> str:
        with self.outbox.lock(entry.key) as mine:
            if not mine or self.outbox.already_sent(entry.key):
                return f"webhook: {entry.key} being sent by another process"
            url = os.environ.get(self.settings.url_env)
            entry.attempts += 1
            entry.last_attempt_at = datetime.now(UTC)
            reason = _post(url, entry.payload, self.settings.timeout) if url else f"{self.settings.url_env} is not set"
            if reason is None:
                self.outbox.mark_sent(entry)
                return "webhook: delivered"
            entry.reason = one_line(redact(reason, url), 300)
            self.outbox.save(entry)
            return f"webhook: not delivered ({entry.reason}); kept in {self.outbox.directory} for `drillbook outbox send`"


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    """Text from outside (details, names) without control characters, and with every known secret masked."""
    if isinstance(payload, dict):
        return {k: _clean(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_clean(v) for v in payload]
    if isinstance(payload, str):
        return redact(visible(payload), emails=False)
    return payload


def _post(url: str, payload: dict[str, Any], timeout: float) -> str | None:
    """None when the endpoint took it (2xx), else why not (never the URL: it is a credential)."""
    import httpx  # here: a drill without a webhook never loads it

    body = {"drillbook_webhook": WEBHOOK_FORMAT, **payload}
    try:
        answer = httpx.post(url, json=body, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        return f"no answer within {timeout:g}s"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    if 200 <= answer.status_code < 300:
        return None
    if answer.status_code == 429:
        return f"rate limited (HTTP 429, retry after {answer.headers.get('retry-after', '?')}s)"
    if answer.status_code >= 500:
        return f"the endpoint failed (HTTP {answer.status_code})"
    return f"the endpoint refused the report (HTTP {answer.status_code}): check the URL in the variable it is read from"
