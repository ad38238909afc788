"""Step 8 (Slack): delivering drill reports, with retries and an outbox so no report is lost or sent twice.

Every report is written to the outbox on disk (one JSON file per drill, keyed
by its drill ID) before it is sent, and its progress is saved after each call:
the message, then each file in its thread. A report Slack does not take stays
there with the reason; `drillbook outbox send` (and the next drill) sends the
rest of it. A delivered report moves to `sent/`, and a key found there is never
sent again.

slack-sdk's retry handlers take care of rate limits (429 with Retry-After),
connection errors and 5xx answers. The token is read once per run (environment
variable, else a Prefect Secret block) and never reaches a log line, an outbox
file or an error message: slack-sdk's own logger is filtered, and its
exceptions are turned into reasons built here, not passed on.

The package, one module per concern:

    credentials.py  the bot token / webhook URL, read once, never shown
    transport.py    Web API and incoming-webhook transports over slack-sdk, retries, error reasons
    outbox.py       one JSON file per report on disk, progress saved after each call
    delivery.py     notify_slack / post_nightly_summary / send_outbox: the outbox first, then the report
"""

from drillbook.tasks.slack.credentials import SlackCredentials, read_credentials
from drillbook.tasks.slack.delivery import (
    SlackDelivery,
    list_outbox,
    notify_slack,
    outbox_json,
    post_alert,
    post_nightly_summary,
    send_outbox,
)
from drillbook.tasks.slack.outbox import Outbox, OutboxEntry

__all__ = [
    "Outbox",
    "OutboxEntry",
    "SlackCredentials",
    "SlackDelivery",
    "list_outbox",
    "notify_slack",
    "outbox_json",
    "post_alert",
    "post_nightly_summary",
    "read_credentials",
    "send_outbox",
]
