"""The one way drillbook starts a child process: its own process group, a timeout, output spooled, nothing left running.

Every child drillbook starts (litestream in every role, smoke commands and the
HTTP smoke app, test servers in `drillbook.testing`) goes through `run_command`
(run to completion) or `started` (run while the caller does something, as an
HTTP check polls its app). Either way:

- the child leads a process group of its own (`start_new_session=True`), tracked
  by `processes` while it runs, so that SIGTERM / Ctrl-C (`interrupt`) kills it;
- at its timeout, on an interrupt or on any exception the whole group is killed;
  when the leader exits by itself, whatever it left in its group is killed too;
- the call returns only once the group is gone (`wait_group_gone`);
- stdout and stderr go to temporary files, not pipes (a chatty child never
  blocks, a grandchild holding the output open never keeps drillbook waiting),
  and are read whole, decoded with `errors="replace"`: the caller parses the
  whole text; only the evidence (`CommandRecord`) keeps bounded tails and says
  what it cut.

A child that starts a session of its own (`setsid`) leaves the group, and
drillbook cannot reach it: the call still returns at its timeout, and the
process is the child's business (README, "Signals and processes").
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, Field

from drillbook.tasks.processes import interrupted, kill_group, tracked, wait_group_gone

OUTPUT_KEEP = 4000  # characters of stdout and of stderr kept as evidence (the tail: errors come last)
PROGRESS_BYTES = 256 * 1024  # what counts as progress within a stall window: retries of a failing GET move far less
GROUP_GONE_TIMEOUT = 5.0  # seconds for the kernel to finish off a killed group


class CommandRecord(BaseModel):
    """One child process, as evidence: what ran, how it ended, the tails of what it printed."""

    argv: list[str]
    exit_code: int | None = Field(description="None when killed at the timeout or for stalling.")
    seconds: float
    timed_out: bool = False
    stalled: bool = Field(default=False, description="Killed because it made no progress for the stall timeout.")
    interrupted: str | None = Field(default=None, description="Killed because drillbook was interrupted (SIGTERM, SIGINT).")
    progress_bytes: int | None = Field(default=None, description="Bytes read and written when it ended, where measured.")
    stdout: str = Field(default="", description=f"The last {OUTPUT_KEEP} characters of stdout.")
    stderr: str = Field(default="", description=f"The last {OUTPUT_KEEP} characters of stderr.")
    stdout_cut: int = Field(default=0, description="Characters of stdout cut from the front of `stdout`.")
    stderr_cut: int = Field(default=0, description="Characters of stderr cut from the front of `stderr`.")
    group_left: bool = Field(default=False, description="Something of its process group was still there after the kill.")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stalled and not self.interrupted

    def stderr_tail(self, limit: int = 600) -> str:
        text = self.stderr.strip()
        return text if len(text) <= limit and not self.stderr_cut else "…" + text[-limit:]


@dataclass(frozen=True)
class Completed:
    """A finished child: the evidence record, and the whole of what it printed for the caller to parse."""

    record: CommandRecord
    stdout: str
    stderr: str


def tail(text: str, keep: int = OUTPUT_KEEP) -> tuple[str, int]:
    """The last `keep` characters of `text` and how many were cut before them."""
    return (text, 0) if len(text) <= keep else (text[-keep:], len(text) - keep)


def tail_marked(text: str, keep: int = OUTPUT_KEEP) -> str:
    """The tail, with a first line saying what was cut (for evidence that is one string)."""
    kept, cut = tail(text, keep)
    return f"[... {cut:,} characters cut ...]\n{kept}" if cut else kept


def process_io_bytes(pid: int) -> int | None:
    """Bytes a process has read and written (sockets included), from /proc; None where not available."""
    try:
        fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines() if ": " in line)
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def _read(spool: IO[bytes]) -> str:
    spool.seek(0)
    return spool.read().decode("utf-8", errors="replace")


def exit_code(process: subprocess.Popen) -> int | None:
    """The leader's exit code once it has exited, else None, without reaping it.

    An exited leader stays a zombie until `stop_group` reaps it: while it does, its pid (the
    group id) cannot go to another process, so `killpg` on the group can never hit a stranger.
    """
    if process.returncode is not None:
        return process.returncode
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return process.poll()
    if info is None:
        return None
    return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status


def stop_group(process: subprocess.Popen, grace: float = 0.0) -> bool:
    """Stop a child's whole process group: SIGTERM and up to `grace` seconds first if given, then SIGKILL;
    reap the leader; True once the group is gone (the kernel finishes off a killed group asynchronously)."""
    if grace > 0 and exit_code(process) is None:
        kill_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while exit_code(process) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    kill_group(process, signal.SIGKILL)  # the leader, and anything it left in its group
    process.wait()
    return wait_group_gone(process.pid, GROUP_GONE_TIMEOUT)


def start_server_process(*args: Any, **kwargs: Any) -> subprocess.Popen:
    """Start a server drillbook stops itself when it leaves (Prefect's temporary server): a session of its own,
    no inherited stdin / stdout / stderr (a caller reading drillbook's output to EOF is not kept waiting by it).

    Not tracked for interrupts: an interrupted drill records itself through that server; the
    CLI stops it (`stop_group`) when it leaves.
    """
    kwargs.update(start_new_session=True)
    for stream in ("stdin", "stdout", "stderr"):
        kwargs.setdefault(stream, subprocess.DEVNULL)
    return subprocess.Popen(*args, **kwargs)


class Child:
    """A running child process group (see `started`)."""

    def __init__(self, process: subprocess.Popen, argv: list[str], out: IO[bytes], err: IO[bytes]):
        self.process = process
        self.argv = argv
        self.pid = process.pid
        self.began = time.monotonic()
        self._out, self._err = out, err
        self.group_left = False
        self.stdout = self.stderr = ""
        self._exited: int | None = None
        self._exit = select.poll()  # poll, not select: no limit on the descriptor's number in a process with many open
        try:  # readable once the leader exits: waiting on it returns then, not at the next look (bench/profile.py)
            exited = os.pidfd_open(process.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: wait() sleeps
            pass
        else:
            self._exit.register(exited, select.POLLIN)
            self._exited = exited

    def exit_code(self) -> int | None:
        return exit_code(self.process)

    def wait(self, seconds: float) -> None:
        """Up to `seconds`, returning as soon as the leader exits."""
        if self._exited is None:
            time.sleep(seconds)
        else:
            self._exit.poll(seconds * 1000)

    def stop(self, grace: float = 0.0, *, leave_group: bool = False) -> None:
        """Stop the whole group (see `stop_group`) and read what it printed.

        With `leave_group`, a leader that exited by itself is only reaped: the rest of its
        group stays (`prefect server start --background` leaves the server it started there).
        """
        if self._exited is not None:
            os.close(self._exited)
            self._exited = None
        if leave_group and self.exit_code() is not None:
            self.process.wait()
        else:
            self.group_left = not stop_group(self.process, grace)
        self.stdout, self.stderr = _read(self._out), _read(self._err)

    def completed(self, *, timed_out: bool = False, stalled: bool = False, progress_bytes: int | None = None) -> Completed:
        """After `stop`: the record and the whole output."""
        code = self.process.returncode
        out, out_cut = tail(self.stdout)
        err, err_cut = tail(self.stderr)
        record = CommandRecord(
            argv=self.argv,
            exit_code=None if (timed_out or stalled) else code,
            seconds=round(time.monotonic() - self.began, 3),
            timed_out=timed_out,
            stalled=stalled,
            interrupted=interrupted() if code is not None and code < 0 and not (timed_out or stalled) else None,
            progress_bytes=progress_bytes,
            stdout=out,
            stderr=err,
            stdout_cut=out_cut,
            stderr_cut=err_cut,
            group_left=self.group_left,
        )
        return Completed(record=record, stdout=self.stdout, stderr=self.stderr)


@contextlib.contextmanager
def started(
    argv: list[str], *, env: dict[str, str], cwd: str | None = None, grace: float = 0.0, leave_group: bool = False
) -> Iterator[Child]:
    """Start `argv` in a process group of its own, tracked for interrupts; on leaving, the group is stopped and gone
    (with `leave_group`, see `Child.stop`). Raises OSError when the program cannot be started (nothing runs then).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        child = Child(process, list(argv), out, err)
        try:
            with tracked(process):  # an interrupted drill (SIGTERM, Ctrl-C) kills the group at once
                yield child
        finally:
            child.stop(grace, leave_group=leave_group)


def run_command(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str],
    cwd: str | None = None,
    stall_timeout: float | None = None,
    progress: Callable[[], int] | None = None,
    leave_group: bool = False,
) -> Completed:
    """Run `argv` to its end, or kill its group at `timeout`; the group is gone when this returns.

    With `stall_timeout`, it is also killed when it moves fewer than PROGRESS_BYTES (its own
    reads and writes, plus `progress()`, e.g. the size of what it writes) within that many
    seconds (litestream 0.5.17 retries failing object GETs silently, forever). `leave_group` is
    for a command whose purpose is to leave a server running (see `Child.stop`); only at its
    timeout, an interrupt or an exception is its group killed.
    """
    timed_out = stalled = False
    moved: int | None = None
    with started(argv, env=env, cwd=cwd, leave_group=leave_group) as child:

        def measure() -> int | None:
            own = process_io_bytes(child.pid)
            extra = progress() if progress else 0
            return None if own is None and progress is None else (own or 0) + extra

        mark_bytes, mark_time = -1, child.began
        pause = 0.005
        while child.exit_code() is None:
            now = time.monotonic()
            if now - child.began >= timeout:
                timed_out = True
                break
            if stall_timeout:
                moved = measure()
                if moved is not None and moved - mark_bytes >= PROGRESS_BYTES:
                    mark_bytes, mark_time = moved, now
                elif moved is not None and now - mark_time >= stall_timeout:
                    stalled = True
                    break
            child.wait(min(pause, max(0.0, timeout - (now - child.began))))
            pause = min(pause * 2, 0.25)  # the exit ends the wait at once; the timeout and stall are looked at four times a second
    return child.completed(timed_out=timed_out, stalled=stalled, progress_bytes=moved)
