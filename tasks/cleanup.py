"""Step 9: scratch removed after a PASS, kept (bounded) after a FAIL or ERROR for triage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from drillbook.tasks.restore import KEPT_MARKER
from drillbook.tasks.result import DrillResult
from drillbook.tasks.scratch import release


def clean_up(result: DrillResult, scratch: Path, keep_failed: int) -> str | None:
    """Remove or keep this drill's scratch; prune older kept copies. Returns the kept path, if any."""
    release(scratch)  # the drill ended: its owner file goes, whatever happens to the scratch
    if not scratch.exists():
        return None
    if result.passed or keep_failed == 0 or not any(scratch.iterdir()):
        shutil.rmtree(scratch, ignore_errors=True)
        return None
    marker = {"database": result.database, "drill_id": result.drill_id, "verdict": result.verdict.value, "evidence": result.evidence}
    (scratch / KEPT_MARKER).write_text(json.dumps(marker) + "\n")
    prune_kept(scratch.parent, keep_failed)
    return str(scratch)


def prune_kept(database_dir: Path, keep: int) -> list[Path]:
    """Delete kept copies beyond the newest `keep`. Only marked directories: a running drill's is never touched."""
    kept = sorted(
        (d for d in database_dir.iterdir() if d.is_dir() and (d / KEPT_MARKER).exists()),
        key=lambda d: (d / KEPT_MARKER).stat().st_mtime,
        reverse=True,
    )
    removed = kept[keep:]
    for directory in removed:
        shutil.rmtree(directory, ignore_errors=True)
    return removed
