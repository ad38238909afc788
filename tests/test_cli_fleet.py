"""`drillbook nightly` / `drillbook release` in-process: exit codes, and no emit-and-forget without a server."""

from __future__ import annotations

import re

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from drillbook.cli.main import main
from tests.conftest import corrupt_index, entry


def test_nightly_exit_codes(capsys, replicate, write_catalogue):
    good, bad = replicate(), replicate(corrupt_index)
    config = write_catalogue(entry("good", good.replica, tags=["ok"]), entry("bad", bad.replica))
    assert main(["nightly", "--config", str(config), "--tag", "ok"]) == 0
    assert "nightly drills: 1 PASS" in capsys.readouterr().out
    assert main(["nightly", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "nightly drills: 1 FAIL, 1 PASS" in out and "integrity failure" in out
    from drillbook.flows.progress import PROGRESS

    # What the progress line said as the drills ended: no drill running, no time left to guess.
    assert re.fullmatch(r"2 of 2 done \(1 FAIL, 1 PASS\); [0-9dhms. ]+ elapsed", PROGRESS.line(2)), PROGRESS.line(2)


def test_the_progress_line_says_how_many_are_done(monkeypatch):
    import time

    from drillbook.cli import fleet

    said: list[str] = []
    counts = iter(range(100))
    with fleet.progress("nightly drills", True, lambda: said.append(f"{next(counts)} of 5 done") or said[-1]):
        time.sleep(1.3)
    assert said[:2] == ["0 of 5 done", "1 of 5 done"]


def test_the_progress_line_names_the_running_drills_and_an_eta_from_those_done():
    from drillbook.flows.progress import FleetProgress

    progress = FleetProgress()
    progress.begin(5, artifact=False)
    assert progress.line() == "0 of 5 done"
    for name in ("orders", "ledger", "[bold]tenant-7[/bold]\x1b[2J", "audit", "billing"):
        progress.started(name)
    # A control character is shown escaped, never sent to the terminal; markup is not read (the column has markup off).
    assert "running orders, ledger, [bold]tenant-7[/bold]\\x1b[2J and 2 more" in progress.line()
    progress.ended("PASS", "orders")
    progress.ended("FAIL", "ledger")
    line = progress.line()
    assert line.startswith("2 of 5 done (1 FAIL, 1 PASS); running [bold]tenant-7[/bold]\\x1b[2J, audit, billing; "), line
    assert re.search(r"elapsed, about [0-9dhms. ]+ left$", line), line  # three to go at the pace of the two done


def test_the_eta_comes_from_the_plan_before_any_drill_ends_and_follows_the_pace_after(monkeypatch):
    from drillbook.flows import progress as progress_module

    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = progress_module.FleetProgress()
    # From the history: orders takes 60 s, ledger 120 s, and tenant-9 was never drilled (the fleet's median: 120 s); two at once.
    progress.begin(3, artifact=False, expected={"orders": 60.0, "ledger": 120.0, "tenant-9": None}, at_once=2)
    assert progress.line() == "0 of 3 done; 0.0s elapsed, about 2m 30s left"  # (60 + 120 + 120) / 2, before anything ran
    progress.started("orders")
    progress.started("ledger")
    clock[0] += 30
    assert progress.line().endswith("30s elapsed, about 2m 00s left"), progress.line()  # (30 + 90 + 120) / 2
    clock[0] += 90  # orders took 120 s, twice its plan: what is left is expected at twice its time
    progress.ended("PASS", "orders")
    assert progress.line().endswith("2m 00s elapsed, about 3m 00s left"), progress.line()  # (240 - 120 + 240) / 2


def test_nightly_config_error_exits_2(capsys, tmp_path):
    assert main(["nightly", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "catalogue not found" in capsys.readouterr().err


def test_release_in_process_exit_codes(capsys, replicate, write_catalogue):
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica))
    base = ["release", "--in-process", "--config", str(config), "--wait-seconds", "1"]
    assert main([*base, "--release", "v1", "--schema-version", "3"]) == 0
    assert main([*base, "--release", "v2", "--schema-version", "4"]) == 1
    assert "replica lag" in capsys.readouterr().out
    assert main([*base, "--release", "v3", "--db", "nope"]) == 2
    assert "no database named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, what", [(["--emit"], "the event"), (["--no-wait"], "a run nobody waits for")])
def test_release_refuses_to_emit_and_forget_without_a_server(capsys, extra, what, write_catalogue):
    config = write_catalogue(entry("orders", "file:///r/orders.db"))  # a valid catalogue: the refusal is about the server
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["release", "--release", "v1.2.3", "--config", str(config), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"drillbook: no Prefect server is configured (PREFECT_API_URL is not set), so {what} would go to a temporary in-process server and be lost."
    )
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in err
