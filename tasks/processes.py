"""Child processes drillbook starts (litestream, smoke-test commands) run in their own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time


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
