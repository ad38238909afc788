"""The benchmark is not a test; this only keeps its harness from rotting (`--quick`, seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_bench_prints_its_table_and_writes_results(tmp_path):
    from prefect.settings import get_current_settings

    api = str(get_current_settings().api.url)  # the session's server: a temporary one per drill would be most of this test's time
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--fleet", "0", "--prefect-api", api, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| case | baseline s" in run.stdout
    assert "| single 1 MB (Prefect server) |" in run.stdout
    (written,) = tmp_path.glob("bench-*.json")
    rows = json.loads(written.read_text())["rows"]
    assert rows[0]["verdicts"] == ["PASS"]  # drillbook's side really drilled
    assert rows[0]["baseline_s"]["median"] > 0 and rows[0]["ratio_excl_fixed"] > 0


@pytest.mark.slow
def test_the_truth_bench_restores_its_points_and_compares_them_with_the_oracle(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "truth.py"), "--points", "3", "--seconds", "8"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PREFECT_HOME": str(tmp_path / "prefect")},
    )
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert "3 points: " in run.stdout and " 0 wrong;" in run.stdout, run.stdout
    assert run.stdout.count("MATCHES the oracle") + run.stdout.count("not restorable, said:") == 3, run.stdout


def test_the_discovery_bench_finds_every_tenant_both_ways(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "discovery.py"), "--tenants", "40", "--dir", str(tmp_path / "fleet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| file://") or line.startswith("| s3")]
    assert [(store.strip(), way.strip(), found.strip()) for store, way, _, _, found in rows] == [
        ("file://", "folders", "40"),
        ("file://", "every object", "40"),
        ("s3 (moto)", "folders", "40"),
        ("s3 (moto)", "every object", "40"),
    ], run.stdout


def test_the_fleet_page_bench_renders_the_attention_sections_only():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fleet_page.py"), "--tenants", "30", "--nights", "2", "--failing", "3", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| report --html |" in run.stdout and "| metrics |" in run.stdout
    assert "3 database sections, 3 charts" in run.stdout, run.stdout
