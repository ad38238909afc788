"""Where reports go: every channel behind one small protocol, called by the drill, the nightly and the stale check.

    drill(result)              one drill's report
    summary(results, title, notes)    one message for a nightly or release run (notes: a budgeted night's coverage and what it left)
    alert(alert)               a database became stale or recovered, its replication stopped or resumed:
                               one Alert rendered once (tasks/transitions.py), delivered as it is

Each returns one line for the drill's notes or the run's log (what happened to
the report), and never raises into the caller: a channel that fails says so in
that line, and the verdict stands. Another channel is its module (like
webhook.py: a class with these three methods, and `outbox` / `send_waiting()`
when it keeps an outbox, which `drillbook outbox` then lists and sends), its
settings table in config/catalogue.py, and one more entry in `channels`;
`broadcast` sends an alert to every channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rich.console import Console
from rich.text import Text

from drillbook.tasks.config import Catalogue
from drillbook.tasks.outcome import tally
from drillbook.tasks.report.drill import render_terminal
from drillbook.tasks.result import DrillResult
from drillbook.tasks.slack import notify_slack, post_alert, post_nightly_summary
from drillbook.tasks.text import visible
from drillbook.tasks.transitions import Alert
from drillbook.tasks.webhook import WebhookNotifier


class Notifier(Protocol):
    name: str

    def drill(self, result: DrillResult) -> str: ...

    def summary(self, results: list[DrillResult], title: str, notes: Sequence[str] = ()) -> str: ...

    def alert(self, alert: Alert) -> str: ...


class SlackNotifier:
    """Slack through the outbox: a report Slack does not take waits there, and no key is sent twice."""

    name = "Slack"

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def drill(self, result: DrillResult) -> str:
        return notify_slack(result, self.catalogue).note

    def summary(self, results: list[DrillResult], title: str, notes: Sequence[str] = ()) -> str:
        delivery = post_nightly_summary(results, self.catalogue, title=title, notes=notes)
        return delivery.note or delivery.status

    def alert(self, alert: Alert) -> str:
        return post_alert(self.catalogue, alert.key, alert.database, alert.slack).note


class TerminalNotifier:
    """A person at a terminal: the report panel, a tally, an alert line (text from outside is never read as markup)."""

    name = "terminal"

    def __init__(self, console: Console | None = None):
        self.console = console or Console(soft_wrap=False)

    def drill(self, result: DrillResult) -> str:
        self.console.print(render_terminal(result))
        return "printed"

    def summary(self, results: list[DrillResult], title: str, notes: Sequence[str] = ()) -> str:
        self.console.print(Text(visible(f"{title}: {tally(r.verdict for r in results)}")), highlight=False)
        for note in notes:
            self.console.print(Text(visible(f"  {note}")), highlight=False)
        return "printed"

    def alert(self, alert: Alert) -> str:
        self.console.print(Text(visible(alert.line)), highlight=False)
        return "printed"


def channels(catalogue: Catalogue) -> list[Notifier]:
    """The channels a flow reports to (Slack says 'not configured' in its note when the catalogue has no [slack])."""
    return [SlackNotifier(catalogue)] + ([WebhookNotifier(catalogue)] if catalogue.webhook is not None else [])


def deliver(send, what: str, channel: Notifier) -> str:
    """One channel's delivery as a note; a crash of the channel is a note too, never the caller's exception."""
    try:
        return send()
    except Exception as exc:  # noqa: BLE001 - a report channel never hides the verdict
        return f"{channel.name} delivery of the {what} crashed ({type(exc).__name__}); the report is in the evidence bundle"


def broadcast(catalogue: Catalogue, alert: Alert) -> str:
    """One alert to every channel (Slack's outbox sends a key once); the notes say what happened."""
    return "; ".join(deliver(lambda c=channel: c.alert(alert), "alert", channel) for channel in channels(catalogue))
