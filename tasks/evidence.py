"""Step 7: the evidence bundle, one JSON file per drill, written so a crash never leaves half a file."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

from drillbook.tasks.files import write_atomic
from drillbook.tasks.result import DrillResult
from drillbook.tasks.text import file_part, redact_data


def evidence_stem(evidence_dir: Path, database: str, started_at: datetime, drill_id: str) -> Path:
    """The drill's evidence files share this stem: <stem>.json (the bundle), <stem>.integrity.txt (every integrity row)."""
    return evidence_dir / file_part(database) / f"{started_at:%Y%m%dT%H%M%SZ}-{file_part(drill_id)}"


def bundle_path(evidence_dir: Path, result: DrillResult) -> Path:
    return evidence_stem(evidence_dir, result.database, result.started_at, result.drill_id).with_suffix(".json")


def write_bundle(result: DrillResult, evidence_dir: Path) -> Path:
    """Write the bundle atomically; if `evidence_dir` is unusable, fall back to the temp dir and say so."""
    try:
        return _write(bundle_path(evidence_dir, result), result)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "drillbook-evidence"
        result.notes.append(f"evidence could not be written to {evidence_dir} ({exc.strerror}); written to {fallback} instead")
        return _write(bundle_path(fallback, result), result)


def _write(path: Path, result: DrillResult) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    result.evidence = str(path)
    # Credentials in any note or error text (a history URL in a HistoryError, a replica URL in stderr) are masked;
    # JSON's own escaping (ensure_ascii) writes control characters and U+2028 as \u escapes.
    data = redact_data({"drillbook_evidence": 1, **result.model_dump(mode="json")}, emails=False)
    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=True))


def read_bundle(path: Path) -> DrillResult:
    data = json.loads(Path(path).read_text())
    data.pop("drillbook_evidence", None)
    return DrillResult.model_validate(data)
