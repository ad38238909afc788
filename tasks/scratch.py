"""Who owns a scratch directory while its drill runs, and reclaiming the ones whose process was killed.

A drill's scratch (`scratch_dir/<database>/<stamp>-<drill id>`) gets an owner file beside it while the drill runs
(`<name>.owner`: host, pid, drill id, Prefect flow run). A drill that ends removes it with the scratch, or leaves the
scratch kept and marked for triage (tasks/cleanup.py). A process killed mid-drill (SIGKILL, OOM, a lost worker) ends
nothing: the next drill of that database on the same host finds the owner file of a process that is gone, stops what
it left writing there (its litestream leads a process group of its own, so it outlives a SIGKILL of drillbook), removes
that scratch and says so. A scratch whose owner lives on, or on another host, is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path

OWNER_SUFFIX = ".owner"


def owner_file(scratch: Path) -> Path:
    return scratch.with_name(scratch.name + OWNER_SUFFIX)


def claim(scratch: Path, drill_id: str) -> None:
    """Write the owner file beside `scratch` (best effort: a drill never fails for it)."""
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "drill_id": drill_id,
        "flow_run": os.environ.get("PREFECT__FLOW_RUN_ID"),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        owner_file(scratch).write_text(json.dumps(owner) + "\n")
    except OSError:
        pass


def release(scratch: Path) -> None:
    """The drill ended (its scratch removed, or kept and marked): its owner file goes."""
    try:
        owner_file(scratch).unlink(missing_ok=True)
    except OSError:
        pass


def remove(scratch: Path) -> None:
    """A scratch directory whose work is done, and its owner file."""
    shutil.rmtree(scratch, ignore_errors=True)
    release(scratch)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def reclaim(database_dir: Path) -> list[str]:
    """Remove the scratch of drills of this database whose process on this host is gone; a note for each one removed."""
    notes: list[str] = []
    host = socket.gethostname()
    try:
        owners = sorted(database_dir.glob(f"*{OWNER_SUFFIX}"))
    except OSError:
        return notes
    for path in owners:
        try:
            owner = json.loads(path.read_text())
            pid = int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge
        if owner.get("host") != host or not _gone(pid):
            continue
        scratch = path.with_name(path.name.removesuffix(OWNER_SUFFIX))
        existed = scratch.is_dir()
        stopped = _stop_writers(scratch) if existed else 0
        shutil.rmtree(scratch, ignore_errors=True)
        path.unlink(missing_ok=True)
        if existed:
            run = f", flow run {owner['flow_run']}" if owner.get("flow_run") else ""
            notes.append(
                f"removed {scratch}: the scratch of drill {owner.get('drill_id')}, whose process (pid {pid} on {host}{run}) "
                f"was killed mid-drill (it started {owner.get('since')} and never ended: that drill has no record)"
                + (f"; stopped {stopped} process(es) it left running there (its litestream restore)" if stopped else "")
            )
    return notes


def _stop_writers(scratch: Path) -> int:
    """Kill the process groups of processes whose command line names `scratch` (the killed drill's litestream): Linux /proc."""
    needle = str(scratch).encode()
    stopped = 0
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if needle not in handle.read():
                    continue
            os.killpg(os.getpgid(pid), signal.SIGKILL)
            stopped += 1
        except (OSError, ProcessLookupError):
            continue
    return stopped
