"""The two-writer check with what earlier drills recorded of the lineage (lineage.py), read from the history store.

Apart from writers.py because the history store's module imports the drill result, which holds the writer check.
"""

from __future__ import annotations

import hashlib

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import HistoryError
from drillbook.tasks.history.store import recent_drills
from drillbook.tasks.lineage import LineageMark
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.writers import WriterCheck, check_writers

LOOK_BACK = 10  # drills read for the newest recorded lineage (a drill that did not reach the check records none)


def replica_digest(url: str) -> str:
    """Which replica a lineage is of, without its URL (which may hold a secret) in the history."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def recorded_lineage(history_url: str, entry: DatabaseEntry) -> tuple[list[LineageMark], str | None]:
    """The newest lineage an earlier drill of this replica recorded, and a note when the history could not be read."""
    digest = replica_digest(entry.replica)
    try:
        rows = recent_drills(history_url, entry.name, LOOK_BACK)
    except HistoryError as exc:
        return [], f"earlier drills' lineage not read ({exc}): only tonight's L0 headers were compared"
    for row in rows:
        lineage = (row.summary or {}).get("writer_lineage") or {}
        if lineage.get("runs") and lineage.get("replica_digest") == digest:
            return [LineageMark.model_validate(mark) for mark in lineage["runs"]], None
    return [], None


def check_writers_across(entry: DatabaseEntry, replica: ReplicaState, history_url: str) -> WriterCheck:
    """check_writers with the lineage earlier drills of the same replica recorded; this drill records its own for the next."""
    recorded, problem = recorded_lineage(history_url, entry)
    check = check_writers(entry, replica, recorded=recorded)
    check.replica_digest = replica_digest(entry.replica)
    if problem:
        check.notes.append(problem)
    return check
