"""`drillbook demo`: a full drill on a fresh machine with nothing configured.

Creates a sample application database, starts a local S3 endpoint (moto's
server mode) on a free loopback port, replicates with the real `litestream
replicate`, writes a demo catalogue, drills it, and removes all of that again.
The evidence bundle stays (under ./drill-evidence/) as the proof.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from drillbook.tasks.errors import DrillbookError
from drillbook.testing.s3 import create_bucket, environment, local_s3, replicate_once, s3_replica_url
from drillbook.testing.sample import make_sample_database

DEMO_BUCKET = "drillbook-demo"
# Local credentials for the local endpoint: never the caller's real ones.
DEMO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "drillbook-demo", "AWS_SECRET_ACCESS_KEY": "drillbook-demo", "AWS_DEFAULT_REGION": "us-east-1"}


DEMO_CATALOGUE = """\
# Written by `drillbook demo`; a real catalogue looks the same (see README, "Catalogue").
[drillbook]
evidence_dir = "{evidence}"
scratch_dir = "{scratch}"
expectations_dir = "{expectations}"      # the demo suite shipped with drillbook: demo-orders/orders.json

[[database]]
name = "demo-orders"
replica = "{replica}"
rto_target = "2m"
rpo_target = "5m"
schema_version = 3
live_path = "{live}"
restore_timeout = "5m"
row_counts = {{ customers = 1000, orders = 1000, order_items = 1000 }}

[[database.smoke]]
name = "no order without its customer"
sql = "SELECT count(*) FROM orders LEFT JOIN customers ON customers.id = orders.customer_id WHERE customers.id IS NULL"
equals = 0

[[database.smoke]]
name = "app opens the copy"
command = [{python}, "-c", {app_check}]
timeout = "30s"
"""

# Stands in for `python -m myapp check`: opens the copy the way an app would and reads from it.
DEMO_APP_CHECK = (
    "import os, sqlite3; db = sqlite3.connect(f\"file:{os.environ['DRILLBOOK_DB_PATH']}?mode=ro\", uri=True); "
    "n = db.execute('SELECT count(*) FROM orders').fetchone()[0]; print(f'app check: {n} orders readable')"
)
DEMO_DATABASE = "demo-orders"


def copy_demo_suites(target: Path) -> Path:
    """The demo's expectation suites, shipped as package data, copied into `target`/demo-orders/.

    Read through importlib.resources, so they are found the same from a checkout
    and from an installed wheel; returns `target` (the catalogue's expectations_dir).
    """
    from importlib.resources import files

    source = files("drillbook.expectations") / DEMO_DATABASE
    folder = target / DEMO_DATABASE
    folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for suite in source.iterdir():
        if suite.name.endswith(".json"):
            (folder / suite.name).write_bytes(suite.read_bytes())
            copied += 1
    if not copied:
        raise DrillbookError(
            f"the demo's expectation suites are missing from the installed package (drillbook.expectations/{DEMO_DATABASE}); reinstall drillbook"
        )
    return target


DEMO_SLACK = """
[slack]
channel = "#drills"
api_url = "{api_url}"
outbox_dir = "{outbox}"
"""
DEMO_SLACK_TOKEN = "xoxb-drillbook-demo-not-a-real-token"


@contextlib.contextmanager
def demo_slack_standin(enabled: bool, echo=print) -> Iterator[Any]:
    """The Slack stand-in on loopback with a demo token in the environment, or nothing."""
    if not enabled:
        yield None
        return
    from drillbook.testing.slack_standin import SlackStandIn

    with SlackStandIn(token=DEMO_SLACK_TOKEN) as standin, environment({"SLACK_BOT_TOKEN": DEMO_SLACK_TOKEN}):
        echo(f"demo: Slack stand-in (records what it receives) at {standin.api_url}")
        yield standin


def print_slack_preview(standin: Any, echo=print) -> None:
    """The posted message as Block Kit JSON (paste into Block Kit Builder), and what went into its thread."""
    messages = standin.messages
    if not messages:
        echo("demo: nothing reached the Slack stand-in (see the note above)")
        return
    message = messages[0]
    echo(f"\ndemo: posted to {message['channel']} (fallback text: {message['text']!r})")
    for upload in standin.files:
        echo(f"demo: in the thread: {upload['filename']} ({len(upload['content']):,} bytes) {upload['title']!r}")
    echo("demo: the message's Block Kit JSON (paste into https://app.slack.com/block-kit-builder):\n")
    echo(json.dumps({"blocks": message["blocks"]}, indent=2, ensure_ascii=False))


SAMPLE_RELEASE = "SAMPLE DATA"
SAMPLE_NOTE = "SAMPLE DATA written by `drillbook demo --sample-history`: not a real drill"


def seed_sample_history(catalogue_path: Path, database: str, days: int = 14) -> int:
    """`days` nights of invented drills before today's real one, so the forecast and the page have something to show.

    Marked as sample data everywhere it shows: release "SAMPLE DATA", drill IDs
    "sample-NN", a note saying so, no evidence file. Put in through the store's
    own API; re-running the demo does not add them twice.
    """
    from datetime import UTC, datetime, timedelta

    from drillbook.tasks.config import load_catalogue
    from drillbook.tasks.history.store import record_drills
    from drillbook.tasks.result import DrillResult

    catalogue = load_catalogue(catalogue_path)
    entry = catalogue.get(database)
    today = datetime.now(UTC).replace(hour=2, minute=30, second=0, microsecond=0)
    results = []
    for back in range(days, 0, -1):
        night = days - back
        started = today - timedelta(days=back)
        rto = round(20 + 5.5 * night + (7, -4, 2, -6, 5, -2, 0)[night % 7], 1)  # restores creeping toward the 2 m target
        failed = night == 4
        results.append(
            DrillResult.model_validate(
                {
                    "drill_id": f"sample-{night:02d}",
                    "database": entry.name,
                    "release": SAMPLE_RELEASE,
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=rto + 3),
                    "verdict": "FAIL" if failed else "PASS",
                    "failure_mode": "replica lag" if failed else None,
                    "rto_seconds": rto,
                    "rto_target_seconds": entry.rto_target,
                    "rpo_seconds": 400.0 if failed else round(12 + (night * 7) % 40, 1),
                    "rpo_target_seconds": entry.rpo_target,
                    "phases": {
                        "restore": {"status": "passed", "seconds": round(rto * 0.85, 1)},
                        "integrity": {"status": "passed", "seconds": round(rto * 0.15, 1)},
                    },
                    "integrity": {"status": "passed", "file_bytes": 1_000_000 + 25_000 * night},
                    "notes": [SAMPLE_NOTE],
                }
            )
        )
    return record_drills(catalogue.history_url, results)


def write_demo_page(catalogue_path: Path, evidence_dir: Path, echo=print) -> Path:
    from drillbook.tasks.config import load_catalogue
    from drillbook.tasks.files import write_atomic
    from drillbook.tasks.report.html import render_page

    page = evidence_dir / "report.html"
    # The demo's catalogue lives in a temporary folder removed when the demo ends: the page must not send anyone there.
    write_atomic(page, render_page(load_catalogue(catalogue_path), source="the demo's catalogue (temporary, removed when the demo ended)"))
    echo(f"demo: the history page (`drillbook report --html`): {page.resolve()}")
    return page


def run_demo(evidence_dir: Path, *, echo=print, slack_preview: bool = False, sample_history: bool = False) -> int:
    """Run the whole demo; returns the drill's exit code (0 PASS, 1 FAIL, 2 ERROR)."""
    from drillbook.cli.run import run_drill  # the same path `drillbook run` takes

    workdir = Path(tempfile.mkdtemp(prefix="drillbook-demo-"))
    try:
        live = make_sample_database(workdir / "orders.db")
        echo(f"demo: created a sample application database {live} ({live.stat().st_size:,} bytes, WAL mode)")
        with environment(DEMO_CREDENTIALS), local_s3() as endpoint, demo_slack_standin(slack_preview, echo) as standin:
            echo(f"demo: local S3 endpoint (moto) at {endpoint}")
            create_bucket(endpoint, DEMO_BUCKET)
            replica = s3_replica_url(endpoint, DEMO_BUCKET, "orders.db")
            record = replicate_once(live, replica)
            echo(f"demo: replicated with `litestream replicate -once` in {record.seconds:.2f}s")
            catalogue = workdir / "drillbook.toml"
            text = DEMO_CATALOGUE.format(
                evidence=evidence_dir.resolve(),
                scratch=workdir / "scratch",
                expectations=copy_demo_suites(workdir / "expectations"),
                replica=replica,
                live=live,
                python=json.dumps(sys.executable),
                app_check=json.dumps(DEMO_APP_CHECK),
            )
            if standin is not None:
                text += DEMO_SLACK.format(api_url=standin.api_url, outbox=workdir / "outbox")
            catalogue.write_text(text)
            if sample_history:
                added = seed_sample_history(catalogue, DEMO_DATABASE)
                echo(
                    f"demo: seeded {added} nights of SAMPLE history (release 'SAMPLE DATA', drill IDs sample-NN; not real drills) for the forecast"
                )
            echo(f"demo: drilling with catalogue {catalogue}\n")
            code = run_drill("demo-orders", str(catalogue), as_json=False)
            write_demo_page(catalogue, evidence_dir, echo)
            if standin is not None:
                print_slack_preview(standin, echo)
            else:
                echo("demo: `drillbook demo --slack-preview` also posts the report to a local Slack stand-in and prints its Block Kit JSON")
            return code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from drillbook.cli.demo import run_demo

    return run_demo(Path(args.evidence_dir), slack_preview=args.slack_preview, sample_history=args.sample_history)


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    demo = commands.add_parser(
        "demo",
        help="a full drill on a sample database with a local S3 endpoint",
        description="Create a sample database, replicate it with litestream to a local S3 endpoint, drill it, clean up.",
    )
    demo.add_argument(
        "--evidence-dir", default="drill-evidence", help="where the demo's evidence bundle is kept (default: ./drill-evidence)"
    )
    demo.add_argument(
        "--slack-preview",
        action="store_true",
        help="also post the report to a Slack stand-in started on loopback, and print its Block Kit JSON (for Block Kit Builder)",
    )
    demo.add_argument(
        "--sample-history",
        action="store_true",
        help="first seed two weeks of SAMPLE drills (marked as such) so the forecast and the page have something to show",
    )
    demo.set_defaults(func=cmd_demo)
