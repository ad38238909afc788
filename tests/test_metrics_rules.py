"""The README's alert rules (deployments/prometheus-rules.yml) fire on a metrics file nobody rewrites: `promtool test rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from drillbook.cli.main import main
from tests.conftest import entry

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deployments" / "prometheus-rules.yml"


def _frozen_series(text: str, *, minutes: int) -> list[dict]:
    """Every sample of a real metrics file as a promtool input series that never changes (the file froze).

    promtool's clock starts at 0: times are shifted so the moment the file was written is 0,
    and `eval_time` is then how long ago it was written.
    """
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    written = next(s.value for s in samples if s.name == "drillbook_metrics_timestamp_seconds")
    series = []
    for sample in samples:
        value = sample.value - written if sample.name.endswith("_timestamp_seconds") else sample.value
        labels = ",".join(f'{key}="{val}"' for key, val in sorted(sample.labels.items()))
        series.append({"series": f"{sample.name}{{{labels}}}", "values": f"{value:.3f}+0x{minutes}"})
    return series


def _alert(name: str, database: str, summary: str, **labels: str) -> dict:
    return {"exp_labels": {"database": database, **labels}, "exp_annotations": {"summary": summary}}


def test_a_frozen_metrics_file_still_raises_the_stale_and_watch_alerts(capsys, replicate, write_catalogue, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus (.ci/run does)"
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), entry("never", replicated.replica, schema_version=99))
    assert main(["run", "orders", "--config", str(config)]) == 0
    assert main(["run", "never", "--config", str(config)]) == 1
    assert main(["watch", "--notify", "--config", str(config)]) == 0  # as the drillbook-watch deployment runs it: the state is kept
    metrics = tmp_path / "drillbook.prom"
    assert main(["metrics", "--config", str(config), "--output", str(metrics)]) == 0
    capsys.readouterr()

    stale = "no passing restore drill within max_drill_age"
    failing = {"severity": "warning", "verdict": "FAIL"}
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _frozen_series(metrics.read_text(), minutes=5000),
                "alert_rule_test": [
                    # Just written: only the database that never passed is stale; the FAIL is reported.
                    {
                        "eval_time": "20m",
                        "alertname": "RestoreDrillStale",
                        "exp_alerts": [_alert("", "never", f"never: {stale}", severity="warning")],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "RestoreDrillFailing",
                        "exp_alerts": [_alert("", "never", "never: last restore drill FAIL", **failing)],
                    },
                    {"eval_time": "20m", "alertname": "ReplicationWatchNotRunning", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "ReplicationStopped", "exp_alerts": []},
                    # Three days on, nothing rewrote the file (the nightly and the watch stopped): the alerts come anyway.
                    {
                        "eval_time": "3d",
                        "alertname": "RestoreDrillStale",
                        "exp_alerts": [
                            _alert("", "never", f"never: {stale}", severity="warning"),
                            _alert("", "orders", f"orders: {stale}", severity="warning"),
                        ],
                    },
                    {
                        "eval_time": "3d",
                        "alertname": "ReplicationWatchNotRunning",
                        "exp_alerts": [
                            _alert("", db, f"{db}: drillbook watch has not checked the replica for over 30 minutes", severity="warning")
                            for db in ("never", "orders")
                        ],
                    },
                    {
                        "eval_time": "3d",
                        "alertname": "ReplicaNotChanging",
                        "exp_alerts": [
                            _alert(
                                "", db, f"{db}: the replica has not changed for over rpo_target + 1h (stopped, or idle)", severity="info"
                            )
                            for db in ("never", "orders")
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
