"""Judging in tests: keyword arguments in, the verdict's two models (steps, context) built from them."""

from __future__ import annotations

from datetime import datetime

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.result import DrillResult, DrillSteps
from drillbook.tasks.verdict import DrillContext, judge

_CONTEXT = set(DrillContext.model_fields)


def judged(
    entry: DatabaseEntry, *, started_at: datetime, finished_at: datetime | None = None, drill_id: str = "d", **fields
) -> DrillResult:
    context = {k: fields.pop(k) for k in list(fields) if k in _CONTEXT}
    return judge(
        entry,
        DrillSteps(**fields),
        DrillContext(drill_id=drill_id, started_at=started_at, finished_at=finished_at or started_at, **context),
    )
