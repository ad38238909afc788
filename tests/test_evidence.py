"""Evidence is never lost: the bundle, its fallback, and the Prefect artifact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from drillbook.cli.main import main
from tests.conftest import entry


def test_unwritable_evidence_dir_falls_back_and_says_so(capsys, replicate, write_catalogue, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the evidence folder should be")
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), settings={"evidence_dir": str(blocker)})
    code = main(["run", "orders", "--config", str(config), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # drillbook's environment broke, not the database: ERROR, before anything is restored, and still recorded.
    assert (code, result["verdict"], result["failure_mode"]) == (2, "ERROR", "drill error")
    assert result["findings"][0]["detail"] == (
        f"setup: the evidence directory {blocker} is not writable (File exists); fix it or set [drillbook] evidence_dir"
    )
    assert result["phases"]["restore"]["status"] == "skipped"
    assert Path(result["evidence"]).is_file()
    assert "drillbook-evidence" in result["evidence"]
    assert (
        f"evidence could not be written to {blocker} (Not a directory); written to {Path(result['evidence']).parents[1]} instead"
        in result["notes"]
    )


def test_prefect_artifact_carries_the_summary(capsys, replicate, write_catalogue):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    replicated = replicate()
    config = write_catalogue(entry("artifact-db", replicated.replica, schema_version=9))
    assert main(["run", "artifact-db", "--config", str(config)]) == 1
    capsys.readouterr()

    async def latest():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drill-artifact-db"])))

    artifacts = asyncio.run(latest())
    assert artifacts, "no drill-artifact-db artifact"
    markdown = artifacts[0].data
    assert "## FAIL: `artifact-db`" in markdown
    assert "**Failure mode:** schema mismatch" in markdown
    assert "schema version is 3, expected 9" in markdown
