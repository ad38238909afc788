"""deployments/prefect.yaml: loads as `prefect deploy` loads it, every entrypoint imports, the trigger templates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"


@pytest.fixture
def deployments(monkeypatch):
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions

    monkeypatch.chdir(ROOT)  # `prefect deploy` runs from the repository root
    from rich.console import Console

    configs, _actions = _load_deploy_configs_and_actions(PREFECT_FILE, console=Console(quiet=True))
    return {config["name"]: config for config in configs}


def test_file_validates_with_prefects_model():
    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load(PREFECT_FILE.read_text())
    assert raw["pull"] == []  # no pull step: `prefect deploy` would otherwise record this checkout's path for every worker
    model = PrefectYamlModel.model_validate(raw)
    assert {d.name for d in model.deployments} == {
        "drillbook-nightly",
        "drillbook-release",
        "drillbook-drill",
        "drillbook-batch",
        "drillbook-stale",
        "drillbook-watch",
        "drillbook-prune",
    }


def test_every_entrypoint_imports_and_its_parameters_fit(deployments, monkeypatch, tmp_path):
    """From a folder that is not the checkout (and holds an app's own tasks.py and flows/), as a worker runs."""
    from prefect.flows import load_flow_from_entrypoint

    (tmp_path / "tasks.py").write_text("raise SystemExit('the app module, not drillbook')\n")
    (tmp_path / "flows").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, config in deployments.items():
        assert config["entrypoint"].startswith("drillbook.flows.") and ":" not in config["entrypoint"], name
        flow = load_flow_from_entrypoint(config["entrypoint"])
        flow.validate_parameters({**_required(flow), **(config.get("parameters") or {})})
        assert config["work_pool"]["name"] == "drillbook", name


def _required(flow) -> dict:
    return {"drill-database": {"name": "orders"}, "release-drills": {"release": "v1"}, "drill-batch": {"drills": [{"name": "orders"}]}}.get(
        flow.name, {}
    )


def test_drill_deployment_name_matches_what_the_flows_call(deployments):
    from drillbook.cli.fleet import RELEASE_DEPLOYMENT
    from drillbook.flows.fleet import BATCH_DEPLOYMENT, DRILL_DEPLOYMENT

    assert DRILL_DEPLOYMENT == "drill-database/drillbook-drill"
    assert BATCH_DEPLOYMENT == "drill-batch/drillbook-batch"
    assert deployments["drillbook-nightly"]["parameters"]["batch_deployment"] == BATCH_DEPLOYMENT
    assert deployments["drillbook-release"]["parameters"]["batch_deployment"] == BATCH_DEPLOYMENT
    assert deployments["drillbook-drill"]["entrypoint"] == "drillbook.flows.drill.drill_database"
    assert deployments["drillbook-batch"]["entrypoint"] == "drillbook.flows.fleet.drill_batch"
    assert RELEASE_DEPLOYMENT == "release-drills/drillbook-release"


def test_nightly_schedule_and_concurrency(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    nightly = deployments["drillbook-nightly"]
    (schedule,) = nightly["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.timezone == "Europe/Berlin"
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_release_trigger_templates_parameters_from_the_event(deployments):
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from drillbook.flows.release import RELEASE_EVENT, release_drills

    (raw,) = deployments["drillbook-release"]["triggers"]
    trigger = DeploymentEventTrigger.model_validate({k: v for k, v in raw.items() if k != "type"})
    assert trigger.expect == {RELEASE_EVENT}
    # A release storm (200 events for one release in a minute) is one run: tests/test_fleet.py sends one to a real server.
    assert (trigger.for_each, trigger.posture, trigger.threshold, trigger.within) == (
        {"prefect.resource.id"},
        "Reactive",
        1,
        timedelta(hours=1),
    )
    occurred = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    event = ReceivedEvent(
        occurred=occurred,
        event=RELEASE_EVENT,
        resource={"prefect.resource.id": "drillbook.release.v1.2.3"},
        payload={"release": "v1.2.3", "schema_version": 42, "databases": ["orders", "users"]},
        id="00000000-0000-0000-0000-000000000001",
    )
    assert trigger.match.includes([event.resource])
    parameters = dict(trigger.parameters)
    RunDeployment._upgrade_v1_templates(parameters)  # as the server does before rendering
    rendered = hydrate(parameters, HydrationContext(render_jinja=True, jinja_context={"event": event}, raise_on_error=True))
    assert rendered["release"] == "v1.2.3"
    assert rendered["schema_version"] == 42
    assert rendered["databases"] == ["orders", "users"]
    checked = release_drills.validate_parameters({**rendered, "batch_deployment": "drill-batch/drillbook-batch"})
    assert checked["released_at"] == occurred


def test_stale_check_runs_hourly_and_never_overlaps(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    stale = deployments["drillbook-stale"]
    assert stale["entrypoint"] == "drillbook.flows.stale.stale_drills"
    (schedule,) = stale["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "0 * * * *" and schedule["active"] is True
    assert stale["concurrency_limit"]["limit"] == 1


def test_replication_watch_runs_every_five_minutes_and_never_overlaps(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    watch = deployments["drillbook-watch"]
    assert watch["entrypoint"] == "drillbook.flows.watch.replication_watch"
    (schedule,) = watch["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.cron == "*/5 * * * *" and schedule["active"] is True
    assert watch["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def test_prune_runs_daily_applies_and_never_overlaps(deployments):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    prune = deployments["drillbook-prune"]
    (schedule,) = prune["schedules"]
    assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == "15 4 * * *" and schedule["active"] is True
    assert prune["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    flow = load_flow_from_entrypoint(prune["entrypoint"])
    assert flow.name == "prune-history" and flow.validate_parameters({})["apply"] is True  # the deployment deletes; the CLI asks --apply
