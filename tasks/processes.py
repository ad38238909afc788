"""Child processes drillbook starts (litestream, smoke-test commands) run in their own process group.

Every such group is tracked while it runs, so that an interrupted drill
(SIGTERM, Ctrl-C: the CLI's handler calls `interrupt`) stops them all at once
and the steps can tell "killed because we were interrupted" from a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

# Process group ids of running children. No lock: a signal handler reads this in
# the main thread, possibly while the main thread is inside `tracked`; single set
# operations are atomic under the GIL and the handler iterates over a copy.
_running: set[int] = set()
_interrupted: list[str] = []


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
