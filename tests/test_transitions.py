"""One transitions module and one broadcast serve the stale check and the replication watch."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.history.stale import stale_status
from drillbook.tasks.notify import TerminalNotifier
from drillbook.tasks.transitions import Alert, stale_transitions, watch_transitions
from drillbook.tasks.watch import Replication, WatchStatus
from tests.conftest import entry


def test_both_checks_hand_one_rendered_alert_to_the_channels_once_per_change(write_catalogue):
    catalogue = load_catalogue(write_catalogue(entry("orders", "s3://b/orders.db", owners=["U0ADA1"])))
    sent: list[Alert] = []

    def send(alert: Alert) -> str:
        sent.append(alert)
        return "sent"

    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    (stale,) = stale_transitions(catalogue, stale_status(catalogue, now), send, now)
    assert stale_transitions(catalogue, stale_status(catalogue, now), send, now) == []  # remembered: once per change
    stopped = WatchStatus(database="orders", replication=Replication.STOPPED, grace_seconds=600, detail="no change for 2h", checked_at=now)
    (watch,) = watch_transitions(catalogue, [stopped], send)
    assert watch_transitions(catalogue, [stopped], send) == []

    assert [(t.kind, t.delivery) for t in (stale, watch)] == [("stale", "sent"), ("stopped", "sent")]
    assert [a.key for a in sent] == [stale.key, watch.key] and watch.key.startswith("replication-stopped-orders-")
    assert sent[0].line.startswith("stale: orders: no passing drill recorded")
    assert sent[1].line == "stopped: orders: no change for 2h"
    assert all("<@U0ADA1>" in str(a.slack.blocks) for a in sent)  # owners mentioned, rendered once for every channel

    console = Console(record=True, width=200)
    assert TerminalNotifier(console).alert(sent[1]) == "printed"
    assert "stopped: orders: no change for 2h" in console.export_text()
