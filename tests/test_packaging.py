"""The wheel as a user gets it: one import name, data shipped inside, runnable from an application's own folder.

Builds the wheel, installs it (no editable install) into a fresh venv, and runs
drillbook from a folder that holds the application's own `tasks.py` and
`flows/`, the names a Prefect shop's repository usually has.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def installed() -> Path:
    """A fresh venv with the wheel (and the demo's extra) installed from it (tests/conftest.py: made from the start); returns its bin/."""
    from tests.conftest import warm

    return warm.result("installed")


@pytest.fixture
def app_folder(tmp_path) -> Path:
    """An application repository: its own tasks.py and flows/ package, and a catalogue."""
    (tmp_path / "tasks.py").write_text("WHO = 'the application'\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("WHO = 'the application'\n")
    (tmp_path / "drillbook.toml").write_text(
        '[drillbook]\nevidence_dir = "evidence"\n\n[[database]]\nname = "orders"\n'
        'replica = "s3://drills/orders.db?endpoint=http://127.0.0.1:9&region=us-east-1&forcePathStyle=true"\n'
        'rto_target = "5m"\nrpo_target = "1m"\n'
    )
    return tmp_path


def _user_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """As a user's shell: the venv's bin first, PYTHONPATH at the app folder, no test settings."""
    keep = ("HOME", "LANG", "TMPDIR", "AWS_CA_BUNDLE")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PYTHONPATH=".", PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_the_wheel_installs_one_import_name_and_ships_the_demo_suite(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"drillbook"}
    assert "drillbook/expectations/demo-orders/orders.json" in names
    assert {"drillbook/tasks/report/templates/page.html.j2", "drillbook/tasks/report/templates/page.css"} <= set(names)  # the HTML page
    assert not any(name.startswith("drillbook/__init__") for name in names)  # a namespace: nothing at the top to shadow


def test_from_an_application_folder_help_check_config_and_demo(installed, app_folder, tmp_path_factory):
    env = _user_env(installed, tmp_path_factory.mktemp("prefect-home"))
    python = str(installed / "python")

    # The application's own modules win for their names; drillbook works beside them.
    both = _run(
        [python, "-c", "import tasks, flows, drillbook.cli.main; print(tasks.WHO, '|', flows.WHO, '|', drillbook.cli.main.__name__)"],
        app_folder,
        env,
    )
    assert both.stdout.strip() == "the application | the application | drillbook.cli.main"

    assert "Exit codes: 0 PASS" in _run([str(installed / "drillbook"), "--help"], app_folder, env).stdout
    assert "Exit codes: 0 PASS" in _run([python, "-m", "drillbook.cli", "--help"], app_folder, env).stdout
    checked = _run([str(installed / "drillbook"), "check-config"], app_folder, env)
    assert "1 database(s) OK" in checked.stdout and "orders" in checked.stdout

    demo = _run([str(installed / "drillbook"), "demo"], app_folder, env)
    out = demo.stdout
    assert "PASS demo-orders" in out
    assert "11 expectations in 1 suite passed" in out  # the suite came out of the wheel and was evaluated
    assert list((app_folder / "drill-evidence" / "demo-orders").glob("*.json"))
