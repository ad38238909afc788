"""What a point-in-time drill does not run, and why: the phases that only mean something at the newest position.

A point drill restores a past position. The data's own RPO (`freshness_query`
against the live database), the follower (`restore -f`), the
promotion (a copy that becomes the primary) and the LiteFS cluster all start
from the newest position: at a past point they would rehearse a state nobody
would fail over to. They are recorded as skipped, with the reason, so the report
of a point drill says which configured phases ran and which did not. The
two-writer check and the restore-tool compatibility run at any point (the
replica's history is the same, and the other versions are asked for the copy's
own TXID).
"""

from __future__ import annotations

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.litefs.drill import LITEFS_PHASES
from drillbook.tasks.points.request import PointRequest
from drillbook.tasks.result import phase_kind
from drillbook.tasks.steps import StepResult


def newest_only_skips(entry: DatabaseEntry, request: PointRequest) -> dict[str, StepResult]:
    """The configured phases a drill at `request` leaves out, each a skipped result saying why."""
    at = request.describe()
    skipped = {}
    if entry.freshness_query:
        skipped["freshness"] = f"not run at {at}: freshness_query measures the newest position's RPO; a past point is old by design"
    if entry.follow is not None:
        skipped["follow"] = f"not run at {at}: a follower follows the newest position (run the drill without a point)"
    if entry.promote is not None:
        skipped["promote"] = f"not run at {at}: a promotion starts from the newest position (run the drill without a point)"
    if entry.litefs is not None:
        for phase in LITEFS_PHASES:
            skipped[phase] = f"not run at {at}: the LiteFS cluster starts from the newest position (run the drill without a point)"
    return {phase: phase_kind(phase).skipped(why) for phase, why in skipped.items()}
