"""Before step 1: the drill's own scratch directory, and an evidence directory that takes files.

A drill that cannot make either is an ERROR naming the directory, and still
leaves its record (the evidence falls back to the temp directory).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pydantic import Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import LiveDatabaseGuard
from drillbook.tasks.outcome import Status
from drillbook.tasks.processes import interrupted
from drillbook.tasks.restore import make_scratch
from drillbook.tasks.scratch import reclaim
from drillbook.tasks.steps import StepResult


class Workspace(StepResult):
    scratch: str | None = None
    notes: list[str] = Field(default_factory=list, description="Scratch reclaimed from drills of this database whose process was killed.")


def prepare_workspace(scratch_root: Path, entry: DatabaseEntry, drill_id: str, evidence_dir: Path) -> Workspace:
    """Create this drill's scratch directory and prove the evidence directory is writable; never raises."""
    stop = interrupted()
    if stop:
        return Workspace(status=Status.ERROR, summary=f"not started: interrupted by {stop}")
    try:
        scratch = make_scratch(scratch_root, entry, drill_id)
    except LiveDatabaseGuard as exc:
        return Workspace(status=Status.ERROR, summary=str(exc))
    except OSError as exc:
        where = exc.filename or scratch_root
        return Workspace(
            status=Status.ERROR,
            summary=f"cannot create the scratch directory {where}: {exc.strerror}; make it writable or point [drillbook] scratch_dir elsewhere",
        )
    problem = writable_problem(evidence_dir)
    if problem:
        return Workspace(
            status=Status.ERROR,
            scratch=str(scratch),
            summary=f"the evidence directory {evidence_dir} is not writable ({problem}); fix it or set [drillbook] evidence_dir",
        )
    notes = reclaim(scratch.parent)  # a killed drill's scratch: removed by the next drill of the database
    return Workspace(status=Status.PASSED, scratch=str(scratch), summary=f"scratch {scratch}", notes=notes)


def writable_problem(directory: Path) -> str | None:
    """None when a file can be created in `directory` (made if missing), else the reason."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=directory, prefix=".drillbook-probe-")
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
