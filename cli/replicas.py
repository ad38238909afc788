"""`drillbook follow NAME` and `drillbook promote NAME`: the read-replica or promotion drill alone, as a rehearsal.

Each restores into scratch exactly as a drill does (the promotion needs its copy;
the follower restores its own), runs the one step, prints its line, and cleans
up. Nothing is recorded: `drillbook run` and the nightly run both steps with the
drill and keep them in the history.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.outcome import Status

_EXIT = {Status.PASSED: 0, Status.FAILED: 1, Status.ERROR: 2, Status.SKIPPED: 2}


def _rehearse(args: argparse.Namespace, kind: str) -> int:
    from drillbook.tasks.follow import follow_replica  # boto3, litestream: off the path of the other commands
    from drillbook.tasks.integrity import check_integrity
    from drillbook.tasks.promote import promote_copy
    from drillbook.tasks.replica import inspect_replica
    from drillbook.tasks.restore import make_scratch, restore_database

    catalogue = load_catalogue(args.config)
    entry = catalogue.get(args.name)
    if getattr(entry, kind) is None:
        raise DrillbookError(
            f"database {entry.name!r} has no {kind} = {{ ... }} in {catalogue.path}: add one (README, 'Read replicas and promotion')"
        )
    scratch = make_scratch(catalogue.scratch_dir, entry, f"{kind}-{uuid4().hex}")
    try:
        replica = inspect_replica(entry)
        if not replica.ok:
            step: Any = None
            status, line = (Status.FAILED if replica.status == Status.FAILED else Status.ERROR), f"replica: {replica.summary}"
        elif kind == "follow":
            step = follow_replica(entry, replica, scratch)
            status, line = step.status, step.summary
        else:
            restored = restore_database(entry, replica, scratch)
            integrity = check_integrity(restored.path, schema_query=entry.schema_version_query) if restored.ok and restored.path else None
            if integrity is None or not integrity.intact:
                step, status = None, Status.FAILED if restored.status == Status.FAILED or integrity else Status.ERROR
                line = f"no intact restored copy to promote: {(integrity or restored).summary}"
            else:
                step = promote_copy(entry, Path(restored.path), scratch, base_dir=catalogue.base_dir)
                status, line = step.status, step.summary
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                {"database": entry.name, "status": status.value, "summary": line, kind: step.model_dump(mode="json") if step else None},
                indent=2,
            )
        )
    else:
        print(f"{status.value.upper()} {entry.name} {kind}: {line}")
    return _EXIT[status]


def cmd_follow(args: argparse.Namespace) -> int:
    return _rehearse(args, "follow")


def cmd_promote(args: argparse.Namespace) -> int:
    return _rehearse(args, "promote")


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    for name, func, help_text in (
        ("follow", cmd_follow, "run the read-replica drill alone: a follower sampled for staleness (the catalogue's follow = {...})"),
        (
            "promote",
            cmd_promote,
            "run the promotion drill alone: a restored copy replicates to a scratch prefix, takes writes, restores again",
        ),
    ):
        parser = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + "; nothing is recorded.")
        parser.add_argument("name", help="the database's name in the catalogue")
        config_option(parser)
        parser.add_argument("--json", action="store_true", help="print the step's result as one JSON object")
        parser.set_defaults(func=func)
