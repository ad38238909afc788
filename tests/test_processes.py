"""Nothing drillbook starts is left running: every child goes through the runner, which owns its process group.

Each role (litestream restore, dry-run plan, version, replicate; a smoke command;
an HTTP smoke app) meets a stand-in that hangs and forks a child of its own into
its group; afterwards no process of that group is left, read from /proc. A child
that starts its own session escapes the group: drillbook still returns at its
timeout. Under SIGTERM / SIGINT the `drillbook run` process stops every group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drillbook.tasks import processes
from drillbook.tasks.config import DatabaseEntry, SmokeCheck
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import find_litestream, run_litestream
from drillbook.tasks.lookahead import litestream_version
from drillbook.tasks.outcome import Status
from drillbook.tasks.plan import dry_run
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.restore import RestoreProblem, restore_database
from drillbook.tasks.runner import OUTPUT_KEEP, run_command
from drillbook.tasks.smoke import run_command_check, run_http_check
from drillbook.testing.s3 import replicate_once

# A stand-in for litestream or an app: records its pid, forks a child into its group (or, with
# SETSID, into a session of its own), then does what MODE says. Both ignore SIGTERM when told to.
STAND_IN = """#!{python}
import os, signal, subprocess, sys, time

RECORD, MODE, SETSID, DEAF = {record!r}, {mode!r}, {setsid!r}, {deaf!r}
if DEAF:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) if %r else None; time.sleep(300)" % DEAF],
    start_new_session=SETSID,
)
with open(RECORD, "a") as f:
    f.write("%d %d %d\\n" % (os.getpid(), os.getpgid(0), child.pid))
if MODE == "version":  # answer, exit, and leave the child behind in the group, holding stdout
    print("v0.5.17-standin", flush=True)
    sys.exit(0)
time.sleep(300)
"""


def stand_in(tmp_path: Path, *, mode: str = "hang", setsid: bool = False, deaf: bool = False) -> tuple[Path, Path]:
    """Write the stand-in; returns (its path, the file it records `pid pgid child-pid` lines in)."""
    record = tmp_path / f"standin-{mode}-{setsid}-{deaf}.pids"
    script = tmp_path / f"standin-{mode}-{setsid}-{deaf}"
    script.write_text(STAND_IN.format(python=sys.executable, record=str(record), mode=mode, setsid=setsid, deaf=deaf))
    script.chmod(0o755)
    return script, record


def recorded(record: Path) -> list[tuple[int, int, int]]:
    if not record.exists():
        return []
    return [tuple(int(n) for n in line.split()) for line in record.read_text().splitlines() if line.strip()]  # type: ignore[misc]


def group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes whose process group is `pgid`, read from /proc/*/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def assert_nothing_left(record: Path) -> None:
    rows = recorded(record)
    assert rows, "the stand-in never ran"
    for pid, pgid, child in rows:
        assert pgid == pid, "the stand-in should lead its own process group"
        assert group_members(pgid) == [], f"left running in group {pgid}"
        assert not alive(child), f"the stand-in's child {child} is still running"


@pytest.fixture
def litestream_stand_in(tmp_path, monkeypatch):
    def use(**kwargs) -> Path:
        script, record = stand_in(tmp_path, **kwargs)
        monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(script))
        return record

    return use


def quick_entry(**extra) -> DatabaseEntry:
    fields = dict(name="orders", replica="file:///nowhere/orders.db", rto_target=60, rpo_target=60, inspect_timeout=2, restore_timeout=2)
    return DatabaseEntry(**{**fields, **extra})


# --- each role ------------------------------------------------------------------------------------------


def test_restore_kills_the_hanging_litestream_and_its_child(litestream_stand_in, tmp_path):
    record = litestream_stand_in()
    started = time.monotonic()
    result = restore_database(quick_entry(), ReplicaState(status=Status.PASSED), tmp_path / "scratch-dir")
    assert time.monotonic() - started < 10
    assert (result.status, result.problem) == (Status.FAILED, RestoreProblem.TIMEOUT)
    assert result.summary == "restore did not finish within 2s and was killed"
    assert_nothing_left(record)


def test_restore_stalled_kills_the_group(litestream_stand_in, tmp_path):
    record = litestream_stand_in()
    (tmp_path / "scratch").mkdir()
    result = restore_database(quick_entry(restore_timeout=60, stall_timeout=1), ReplicaState(status=Status.PASSED), tmp_path / "scratch")
    assert result.problem == RestoreProblem.STALLED, result.summary
    assert_nothing_left(record)


def test_dry_run_plan_kills_the_hanging_litestream_and_its_child(litestream_stand_in):
    record = litestream_stand_in()
    plan = dry_run(quick_entry())
    assert (plan.status, plan.summary) == (Status.FAILED, "litestream restore -dry-run did not answer within 2s")
    assert_nothing_left(record)


def test_version_that_leaves_a_child_holding_its_output_returns_at_once(litestream_stand_in):
    record = litestream_stand_in(mode="version")
    litestream_version.cache_clear()
    try:
        started = time.monotonic()
        assert litestream_version() == "v0.5.17-standin"
        assert time.monotonic() - started < 5, "waited for the child holding stdout"
    finally:
        litestream_version.cache_clear()
    assert_nothing_left(record)


def test_replicate_in_testing_kills_the_hanging_litestream_and_its_child(litestream_stand_in, tmp_path):
    record = litestream_stand_in()
    with pytest.raises(DrillbookError, match=r"litestream replicate failed \(exit None\)"):
        replicate_once(tmp_path / "app.db", "file:///nowhere/replica", timeout=2)
    assert_nothing_left(record)


def test_smoke_command_kills_the_hanging_command_and_its_child(tmp_path):
    script, record = stand_in(tmp_path)
    check = SmokeCheck(name="app boots", command=[str(script)], timeout=2)
    result = run_command_check(tmp_path / "copy.db", check)
    assert (result.success, result.timed_out, result.error) == (False, True, "killed at its 2s timeout")
    assert_nothing_left(record)


def test_http_smoke_app_that_ignores_sigterm_is_killed_with_its_child(tmp_path):
    script, record = stand_in(tmp_path, deaf=True)
    check = SmokeCheck(name="app answers", command=[str(script)], url="http://127.0.0.1:9/health", timeout=2)
    started = time.monotonic()
    result = run_http_check(tmp_path / "copy.db", check)
    assert time.monotonic() - started < 2 + 5 + 5  # timeout + SIGTERM grace + margin
    assert not result.success and result.timed_out
    assert_nothing_left(record)


# --- what the runner promises besides ----------------------------------------------------------------------


def test_a_child_in_a_session_of_its_own_escapes_but_drillbook_returns_at_its_timeout(litestream_stand_in):
    record = litestream_stand_in(setsid=True)
    started = time.monotonic()
    ran = run_litestream(["restore", "-o", "/nowhere", "file:///nowhere"], timeout=2)
    took = time.monotonic() - started
    [(pid, pgid, child)] = recorded(record)
    try:
        assert ran.record.timed_out and took < 6
        assert group_members(pgid) == [] and not alive(pid)
        assert alive(child), "the setsid child left the group: drillbook cannot reach it (README says so)"
    finally:
        os.kill(child, signal.SIGKILL)


def test_output_is_read_whole_bounded_in_the_record_and_never_crashes_on_bytes():
    code = "import sys; sys.stdout.write('x' * 100000 + 'END'); sys.stderr.buffer.write(b'bad \\xff\\xfe bytes\\n')"
    ran = run_command([sys.executable, "-c", code], timeout=30, env={})
    assert ran.record.ok
    assert len(ran.stdout) == 100003 and ran.stdout.endswith("END")
    assert (len(ran.record.stdout), ran.record.stdout_cut) == (OUTPUT_KEEP, 100003 - OUTPUT_KEEP)
    assert ran.stderr == "bad \ufffd\ufffd bytes\n" and ran.record.stderr_cut == 0


def test_interrupt_kills_a_running_group_and_the_record_says_why(tmp_path):
    script, record = stand_in(tmp_path)
    timer = threading.Timer(2.0, processes.interrupt, args=("SIGTERM",))
    timer.start()
    try:
        ran = run_command([str(script)], timeout=60, env={})
    finally:
        timer.cancel()
        processes._interrupted.clear()
    assert ran.record.interrupted == "SIGTERM" and not ran.record.timed_out
    assert ran.record.seconds < 10
    assert processes.running_groups() == []
    assert_nothing_left(record)


def test_interrupt_stops_an_http_checks_app_and_the_check_says_so(tmp_path):
    script, record = stand_in(tmp_path)
    check = SmokeCheck(name="app answers", command=[str(script)], url="http://127.0.0.1:9/health", timeout=60)
    timer = threading.Timer(2.0, processes.interrupt, args=("SIGINT",))
    timer.start()
    try:
        result = run_http_check(tmp_path / "copy.db", check)
    finally:
        timer.cancel()
        processes._interrupted.clear()
    assert not result.success and result.seconds < 10
    assert result.error == "http://127.0.0.1:9/health did not answer 2xx : stopped: drillbook was interrupted by SIGINT".replace("  ", " ")
    assert_nothing_left(record)


def test_a_missing_litestream_binary_is_tool_missing_not_a_traceback(tmp_path, monkeypatch):
    broken = tmp_path / "litestream"
    broken.write_text("not a program\n")
    broken.chmod(0o755)
    monkeypatch.setenv("DRILLBOOK_LITESTREAM", str(broken))
    plan = dry_run(quick_entry())
    assert plan.status == Status.ERROR and plan.summary.startswith(f"cannot run litestream at {broken}: Exec format error")


# --- signals to `drillbook run` -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_step_stops_every_group_and_exits_2(sig, write_catalogue, tmp_path):
    live = tmp_path / "live.db"
    from drillbook.testing.sample import make_sample_database

    make_sample_database(live, customers=20)
    replica = f"file://{tmp_path / 'replica'}"
    subprocess.run([find_litestream(), "replicate", "-once", str(live), replica], check=True, capture_output=True, timeout=120)
    script, record = stand_in(tmp_path)
    config = write_catalogue(
        {"name": "orders", "replica": replica, "rto_target": "2m", "rpo_target": "10m", "inspect_timeout": "10m", "restore_timeout": "10m"}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), DRILLBOOK_LITESTREAM=str(script))
    if sig == signal.SIGINT:  # Ctrl-C with a running server (the session's); SIGTERM below Prefect's temporary server, which it stops too
        from prefect.settings import get_current_settings

        env["PREFECT_API_URL"] = str(get_current_settings().api.url)
    process = subprocess.Popen(
        [sys.executable, "-m", "drillbook.cli", "run", "orders", "--config", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300  # Prefect's temporary server starts first: slow on a loaded runner
    while not recorded(record):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the drill never reached litestream (exit {process.returncode}): {err[-2000:]}")
        time.sleep(0.2)
    started = time.monotonic()
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    took = time.monotonic() - started

    name = signal.Signals(sig).name
    assert process.returncode == 2, err
    # GRACE (10 s) to record, then the temporary server is stopped: a loaded runner needs the margin
    assert took < 30, f"took {took:.1f}s to stop"
    # drillbook says one line of its own; the rest of stderr is the drill's report (Prefect's log and the terminal panel)
    assert [line for line in err.splitlines() if line.startswith("drillbook:")] == [
        f"drillbook: {name}: stopping litestream and smoke commands, recording the drill as ERROR (a second {name} leaves at once)"
    ]
    assert "Traceback" not in err
    assert json.loads(out)["verdict"] == "ERROR"
    assert_nothing_left(record)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_the_exit_code_timeout_and_stall_hold_with_and_without_a_pidfd(pidfd, monkeypatch):
    """The runner waits on the child's pidfd where the kernel has one, else sleeps between looks: the same record either way."""
    if not pidfd:

        def missing(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", missing)
    env = dict(os.environ)
    done = run_command([sys.executable, "-c", "raise SystemExit(3)"], timeout=30, env=env, stall_timeout=30)
    assert (done.record.exit_code, done.record.timed_out, done.record.stalled) == (3, False, False)
    late = run_command(["sleep", "30"], timeout=0.5, env=env)
    assert late.record.timed_out and late.record.exit_code is None
    quiet = run_command(["sleep", "30"], timeout=30, env=env, stall_timeout=0.5)
    assert quiet.record.stalled and quiet.record.exit_code is None
