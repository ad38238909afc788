"""The `drillbook` process's life: Prefect's temporary server, signals, and what a verdict logs.

- Prefect starts a temporary API server when no PREFECT_API_URL is set. drillbook
  runs it in a session of its own with no inherited stdout / stderr, so that a
  Ctrl-C in the terminal does not kill it mid-drill and a caller reading
  drillbook's output to EOF is not kept waiting by it; a start slower than the
  timeout is a PrefectUnavailable (exit 2, one line), not a traceback.
- SIGTERM / SIGINT: the first stops litestream and smoke commands at once and
  lets the drill record itself as ERROR (the handlers live in tasks/processes.py,
  since flows put them back); if that takes longer than GRACE
  seconds, or a second signal comes, the process stops the temporary server and
  leaves with exit 2.
- A drill that ends FAIL or ERROR is an expected outcome: Prefect's "Encountered
  exception during execution" traceback for it is dropped (the report says it all).
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from drillbook.tasks.errors import DrillFailed, DrillsFailed, PrefectUnavailable
from drillbook.tasks.processes import interrupted
from drillbook.tasks.runner import exit_code, start_server_process, stop_group


def prefect_home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()).expanduser()


def prefect_home_problem() -> str | None:
    """When drillbook would start Prefect's temporary server: the one line saying PREFECT_HOME is unusable, else None."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    home = prefect_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".drillbook-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return (
            f"PREFECT_HOME {home} is not writable ({exc.strerror}): Prefect's temporary server keeps its database there; "
            "set PREFECT_HOME to a writable directory, or PREFECT_API_URL to a running Prefect server"
        )
    return None


def startup_timeout() -> float:
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    return float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())


class _DetachedPopen:
    """Stands in for the `subprocess` module inside Prefect's server module while it starts uvicorn."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
        return start_server_process(*args, **kwargs)


def use_detached_temporary_server() -> None:
    """Make the temporary server Prefect starts on demand (the None-port instance) a detached one. Idempotent.

    Nothing to do when a server is configured: importing Prefect's server code
    costs about 1.9 s and 150 MB, which a drill against a running server (a
    fleet, `drillbook server start`) never needs.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api import server as server_module

    class DetachedServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect's own command line, started through the runner: a session of its own, no inherited output.
            real = server_module.subprocess
            server_module.subprocess = _DetachedPopen()
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess = real

        def start(self, timeout: int | None = None) -> None:
            # Prefect's own start() waits out its whole timeout when the server process dies at once
            # (an unwritable PREFECT_HOME) and leaves it running when it gives up; this one does neither.
            if self.running:
                return
            limit = float(timeout or startup_timeout())
            self.port = self.port or self.find_available_port()
            self.running = True
            self.server_process = self._run_uvicorn_command()
            atexit.register(self.stop)
            import httpx  # not on the path of the commands that start no server

            deadline = time.monotonic() + limit
            with httpx.Client() as client:
                while True:
                    code = exit_code(self.server_process)
                    if code == 3:  # its port was taken meanwhile: Prefect's convention, try another
                        stop_group(self.server_process)
                        self.port = self.find_available_port()
                        self.server_process = self._run_uvicorn_command()
                        continue
                    if code is not None:
                        self.stop()
                        raise PrefectUnavailable(
                            f"Prefect's temporary server exited with code {code} while starting; check that PREFECT_HOME "
                            f"({prefect_home()}) is writable, or set PREFECT_API_URL to a running Prefect server"
                        )
                    stop = interrupted()
                    if stop:
                        self.stop()
                        raise PrefectUnavailable(f"interrupted by {stop} while Prefect's temporary server was starting")
                    try:
                        if client.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() >= deadline:
                        self.stop()
                        raise PrefectUnavailable(
                            f"Prefect's temporary server did not start within {limit:g}s; set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                            "higher, or PREFECT_API_URL to a running Prefect server"
                        )
                    time.sleep(0.1)

        def stop(self) -> None:
            # Prefect's own stop() signals the server process alone; this stops its whole group and waits until it is gone.
            if self.server_process is not None:
                stop_group(self.server_process, grace=5.0)
            super().stop()  # the process is reaped by now: Prefect's terminate() and wait() find nothing to do

    existing = server_module.SubprocessASGIServer._instances.get(None)
    if existing is None:
        DetachedServer()  # registers itself under the None key, which Prefect's get_client uses


def stop_temporary_server() -> None:
    from prefect.server.api import server as server_module

    server = server_module.SubprocessASGIServer._instances.get(None)
    if server is not None and getattr(server, "server_process", None) is not None:
        server.stop()


class _VerdictTracebacks(logging.Filter):
    """Drop Prefect's exception log for a drill that ended with its verdict (DrillFailed / DrillsFailed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (DrillFailed, DrillsFailed))


def quiet_verdict_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _VerdictTracebacks) for f in logger.filters):
            logger.addFilter(_VerdictTracebacks())
