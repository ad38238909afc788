"""Pruning at fleet scale: drill history rows and Prefect flow runs older than `[drillbook] history_retention`.

Ten thousand databases drilled nightly add 3.65 million history rows a year, and
Prefect's server slows down with very large run tables. `drillbook prune`
(dry run unless `--apply`) and the daily `drillbook-prune` deployment (which
applies) delete:

- history rows (drillbook_drills) that started before the cutoff, except, per
  database, its newest drill and its newest PASS of the newest position: stale
  detection, the metrics' last PASS and the runbook's "last restore drill" line
  stay true however old they are;
- the evidence bundle files of the deleted rows, when they lie in the evidence_dir;
- runs of drillbook's own flows (by flow name) that ended (completed, failed,
  cancelled, crashed) and started before the cutoff; their task runs, logs and
  artifacts go with them on the server. Runs of other flows are never touched.

The alert state (drillbook_alerts, drillbook_watch) is one row per database and
is not pruned.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import and_, delete, func, select

from drillbook.tasks.config.catalogue import Catalogue
from drillbook.tasks.errors import ConfigError, PrefectUnavailable
from drillbook.tasks.history.store import DrillRecord, _store

# Every @flow(name=...) of drillbook.flows, and this module's own.
DRILLBOOK_FLOWS = (
    "nightly-drills",
    "release-drills",
    "drill-database",
    "drill-batch",
    "stale-drills",
    "replication-watch",
    "prune-history",
)
PAGE = 200  # flow runs read per request


class PruneCounts(BaseModel):
    """What a prune deleted, or would delete on a dry run."""

    cutoff: datetime = Field(description="Drills and flow runs that started before this are pruned.")
    applied: bool = Field(description="False for a dry run: the counts are what would be deleted.")
    drills: int = Field(description="History rows deleted (or to delete).")
    kept: int = Field(description="History rows older than the cutoff kept: each database's newest drill and newest PASS.")
    evidence_files: int = Field(description="Evidence bundle files of the deleted rows removed (or to remove).")
    flow_runs: int | None = Field(default=None, description="Runs of drillbook's flows deleted (or to delete); None: not asked.")

    def line(self) -> str:
        verb = "deleted" if self.applied else "would delete"
        runs = "" if self.flow_runs is None else f", {self.flow_runs} Prefect flow run(s)"
        return (
            f"{verb} {self.drills} drill(s) from the history, {self.evidence_files} evidence file(s){runs} "
            f"started before {self.cutoff:%Y-%m-%d %H:%M} UTC; kept {self.kept} older drill(s), each database's newest drill and newest PASS"
        )


def _kept_ids():
    """Per database, the ids of its newest drill and of its newest PASS of the newest position."""
    newest = select(DrillRecord.database, func.max(DrillRecord.started_at).label("at")).group_by(DrillRecord.database).subquery()
    passes = (
        select(DrillRecord.database, func.max(DrillRecord.started_at).label("at"))
        .where(DrillRecord.verdict == "PASS", DrillRecord.point_kind.is_(None))
        .group_by(DrillRecord.database)
        .subquery()
    )
    of_newest = select(DrillRecord.id).join(newest, and_(DrillRecord.database == newest.c.database, DrillRecord.started_at == newest.c.at))
    of_pass = (
        select(DrillRecord.id)
        .join(passes, and_(DrillRecord.database == passes.c.database, DrillRecord.started_at == passes.c.at))
        .where(DrillRecord.verdict == "PASS", DrillRecord.point_kind.is_(None))
    )
    return of_newest.union(of_pass)


def prune_history(url: str, cutoff: datetime, evidence_dir: Path, *, apply: bool) -> PruneCounts:
    """Delete (or count) the history rows before `cutoff` but each database's newest drill and newest PASS, and their evidence files."""
    with _store(url, "prune") as engine, engine.begin() as connection:
        kept_ids = {row[0] for row in connection.execute(_kept_ids())}
        old = DrillRecord.started_at < cutoff
        kept = len(kept_ids & {row[0] for row in connection.execute(select(DrillRecord.id).where(old))})
        doomed = [(row.id, row.evidence) for row in connection.execute(select(DrillRecord.id, DrillRecord.evidence).where(old))]
        doomed = [(row_id, evidence) for row_id, evidence in doomed if row_id not in kept_ids]
        root = evidence_dir.resolve()
        files = [path for path in (_inside(evidence, root) for _, evidence in doomed) if path is not None]
        if apply:
            ids = [row_id for row_id, _ in doomed]
            for start in range(0, len(ids), 500):  # bounded statements: SQLite's variable limit, PostgreSQL's packet size
                connection.execute(delete(DrillRecord).where(DrillRecord.id.in_(ids[start : start + 500])))
    if apply:
        for path in files:
            path.unlink(missing_ok=True)
    return PruneCounts(cutoff=cutoff, applied=apply, drills=len(doomed), kept=kept, evidence_files=len(files))


def _inside(evidence: str | None, root: Path) -> Path | None:
    """The evidence file, when it exists inside the evidence_dir (a path elsewhere is never deleted)."""
    if not evidence or "://" in evidence:
        return None
    path = Path(evidence).resolve()
    return path if path.is_file() and path.is_relative_to(root) else None


def prune_flow_runs(cutoff: datetime, *, apply: bool, flow_names: tuple[str, ...] = DRILLBOOK_FLOWS) -> int:
    """Delete (or count) the runs of drillbook's flows (`flow_names`) that ended and started before `cutoff`, through the Prefect client."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    flows = FlowFilter(name=FlowFilterName(any_=list(flow_names)))
    ended = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    runs = FlowRunFilter(
        start_time=FlowRunFilterStartTime(before_=cutoff), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ended))
    )
    try:
        with get_client(sync_client=True) as client:
            if not apply:
                return client.count_flow_runs(flow_filter=flows, flow_run_filter=runs)
            deleted: set = set()
            while True:
                page = [run for run in client.read_flow_runs(flow_filter=flows, flow_run_filter=runs, limit=PAGE) if run.id not in deleted]
                if not page:
                    return len(deleted)
                for run in page:
                    try:
                        client.delete_flow_run(run.id)
                    except ObjectNotFound:  # deleted meanwhile (another prune, the UI)
                        pass
                    deleted.add(run.id)
    except (httpx.HTTPError, OSError) as exc:
        raise PrefectUnavailable(
            f"pruning flow runs: Prefect's API did not answer ({type(exc).__name__}: {exc}); check PREFECT_API_URL and that the server runs"
        ) from None


def prune(catalogue: Catalogue, *, apply: bool, older_than: float | None = None, flow_runs: bool = True) -> PruneCounts:
    """Prune by `older_than` seconds, else the catalogue's history_retention (a ConfigError when neither is set)."""
    retention = older_than or catalogue.drillbook.history_retention
    if retention is None:
        raise ConfigError(
            f"{catalogue.path or 'catalogue'}: [drillbook] field history_retention is not set, so nothing is pruned; "
            'set it (e.g. history_retention = "90d") or pass --older-than'
        )
    cutoff = datetime.now(UTC) - timedelta(seconds=retention)
    counts = prune_history(catalogue.history_url, cutoff, catalogue.evidence_dir, apply=apply)
    if flow_runs:
        try:
            counts.flow_runs = prune_flow_runs(cutoff, apply=apply)
        except PrefectUnavailable as exc:  # the history part is done: say so, in the same line
            raise PrefectUnavailable(f"{counts.line()}; but {exc}") from None
    return counts
