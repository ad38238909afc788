"""Child processes drillbook starts (litestream, smoke-test commands) run in their own process group; signals stop them.

Every such group is tracked while it runs, so that an interrupted drill
(SIGTERM, Ctrl-C: the CLI's handler calls `interrupt`) stops them all at once
and the steps can tell "killed because we were interrupted" from a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# Process group ids of running children. No lock: a signal handler reads this in
# the main thread, possibly while the main thread is inside `tracked`; single set
# operations are atomic under the GIL and the handler iterates over a copy.
_running: set[int] = set()
_interrupted: list[str] = []
GRACE = 10.0  # seconds an interrupted drill has to record itself before the process leaves anyway


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group started with `start_new_session=True`: children go too."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_group_gone(pgid: int, timeout: float = 2.0) -> bool:
    """After the group leader is reaped: wait until the kernel has finished off the rest of the group.

    SIGKILL is delivered asynchronously; a grandchild can still be running for a moment
    after `killpg` returns. True when the group is gone within `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@contextlib.contextmanager
def tracked(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Track a child's process group while it runs; a process started after an interrupt is killed at once."""
    _running.add(process.pid)
    if _interrupted:
        kill_group(process)
    try:
        yield process
    finally:
        _running.discard(process.pid)


def interrupt(reason: str) -> None:
    """Record why the drill stops and kill every tracked process group (safe in a signal handler)."""
    if not _interrupted:
        _interrupted.append(reason)
    for pgid in list(_running):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def interrupted() -> str | None:
    """The reason given to `interrupt` ("SIGTERM", "SIGINT"), or None."""
    return _interrupted[0] if _interrupted else None


def running_groups() -> list[int]:
    return sorted(_running)


_handler: list[Callable[..., None]] = []  # the CLI's handler, while installed


def reclaim_signals() -> None:
    """Inside a flow run started by the CLI: put drillbook's SIGTERM handler back.

    Prefect's flow engine swaps in its own for the run (it crashes the run and re-sends the
    signal), which would lose the drill's record. Under a worker (no CLI handler) Prefect's
    stays: the runner cancels flow runs with SIGTERM.
    """
    if _handler and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler[0])


def install_signal_handlers(say: Callable[[str], None], on_leave: Callable[[], None] = lambda: None) -> Callable[[], None]:
    """SIGTERM / SIGINT interrupt the drill (see module docstring); returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def leave(name: str) -> None:
        say(f"{name}: the drill did not finish in {GRACE:g}s after it; stopped (exit 2)")
        try:
            interrupt(name)
            on_leave()  # the CLI stops Prefect's temporary server here
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if interrupted():
            leave(name)
        interrupt(name)
        say(f"{name}: stopping litestream and smoke commands, recording the drill as ERROR (a second {name} leaves at once)")
        timer = threading.Timer(GRACE, leave, args=(name,))
        timer.daemon = True
        timer.start()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    _handler[:] = [handle]

    def restore() -> None:
        _handler.clear()
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
