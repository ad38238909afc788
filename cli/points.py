"""`drillbook coverage NAME`: which parts of a database's restore window have been proven restorable.

Read from the drill history only (the summaries of point-in-time drills): no
replica is listed, nothing is restored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime

from drillbook.cli.fleet import print_rows
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.points import coverage, point_records
from drillbook.tasks.text import duration_text, iso

HISTORY_ROWS = 5000


def _when(value: str | None) -> str:
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


def cmd_coverage(args: argparse.Namespace) -> int:
    from drillbook.tasks.history.store import recent_drills

    catalogue = load_catalogue(args.config)
    entry = catalogue.get(args.name)
    if entry.restore_points is None:
        raise ConfigError(
            f"{catalogue.path}: database {entry.name!r} has no restore_points, so there is no window to cover; "
            'add restore_points = { random_within = "30d", every = "7d" }',
            path=str(catalogue.path),
            entry=entry.name,
            field="restore_points",
        )
    window, every = entry.restore_points.random_within, entry.restore_points.every
    summaries = [row.summary for row in recent_drills(catalogue.history_url, entry.name, HISTORY_ROWS)]
    now = datetime.now(UTC)
    slots = coverage(point_records(summaries), window, every, now)
    retention = [s for s in summaries if (s.get("point") or {}).get("kind") == "retention"]
    if args.json:
        print(
            json.dumps(
                {
                    "database": entry.name,
                    "random_within_seconds": window,
                    "every_seconds": every,
                    "slots": [slot.model_dump() for slot in slots],
                    "retention": [s["point"] | {"drill_id": s["drill_id"], "verdict": s["verdict"]} for s in retention[:1]],
                },
                indent=2,
                default=iso,
            )
        )
        return 0
    proven = sum(1 for slot in slots if slot.state == "proven")
    rows = [
        {
            "slot (UTC)": f"{slot.slot_start:%Y-%m-%d %H:%M} .. {slot.slot_end:%Y-%m-%d %H:%M}",
            "state": slot.state,
            "point restored": f"{slot.point.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if slot.point else "",
            "drilled": f"{slot.last.astimezone(UTC):%Y-%m-%d %H:%M}" if slot.last else "",
            "drills": str(slot.drills),
            "why not": slot.detail or "",
        }
        for slot in slots
    ]
    print_rows(
        rows,
        f"{entry.name}: {proven} of {len(slots)} slots of the last {duration_text(window)} proven restorable (slots of {duration_text(every)})",
    )
    if retention:
        last = retention[0]
        point = last["point"]
        print(
            f"retention: last drilled {_when(last['started_at'])}: {last['verdict']}"
            + (f" ({last['failure_mode']})" if last.get("failure_mode") else "")
            + (f"; oldest restorable point TXID {point['oldest_txid']} written {point['oldest_time']}" if point.get("oldest_txid") else "")
        )
    elif entry.retention_target:
        print("retention: not drilled yet (the nightly drills it, or `drillbook run NAME --at retention`)")
    return 0


def add_commands(commands: argparse._SubParsersAction, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    cover = commands.add_parser(
        "coverage",
        help="which parts of a database's restore window are proven restorable",
        description="Per slot of restore_points.random_within (each restore_points.every long): proven restorable by a "
        "point-in-time drill, failed, or not drilled yet. Read from the drill history; nothing is restored.",
    )
    cover.add_argument("name", help="the database's name in the catalogue")
    cover.add_argument("--json", action="store_true", help="print the slots as JSON")
    config_option(cover)
    cover.set_defaults(func=cmd_coverage)
