"""`drillbook server start|stop|status`: a Prefect server in the background, so each drill does not start its own.

Without a server, every `drillbook run` / `nightly` / `release` starts Prefect's
temporary server in its own process (about 8-9 s, more on a fresh home) and
stops it again. `drillbook server start` runs `prefect server start
--background` once, with its home (and SQLite database) under
`$DRILLBOOK_SERVER_HOME` (default `~/.drillbook/prefect`); while it answers,
the drill commands use it and say so. An explicit `PREFECT_API_URL` always wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.runner import run_command

DEFAULT_PORT = 4200
STATE_FILE = "drillbook-server.json"
START_TIMEOUT = 120.0  # a first start migrates the database; a loaded CI runner needs the margin


def server_home() -> Path:
    return Path(os.environ.get("DRILLBOOK_SERVER_HOME") or Path.home() / ".drillbook" / "prefect")


def _state_path() -> Path:
    return server_home() / STATE_FILE


def answers(api_url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def local_server_url() -> str | None:
    """The API URL of the server `drillbook server start` left running, if it answers now."""
    try:
        state = json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None
    url = state.get("api_url")
    return url if isinstance(url, str) and answers(url) else None


def use_local_server(echo: Callable[[str], None]) -> str | None:
    """Point this process at the local background server when no server is configured; returns its URL.

    Called before Prefect is imported (its settings are read then).
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = local_server_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
        echo(f"using the local Prefect server at {url} (`drillbook server stop` to stop it)")
    return url


def _prefect_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK=os.environ.get("DO_NOT_TRACK", "1"))
    return env


def _prefect() -> str:
    here = Path(sys.executable).parent / "prefect"
    return str(here) if here.exists() else "prefect"


def start(port: int, echo: Callable[[str], None] = print) -> int:
    home = server_home()
    running = local_server_url()
    if running:
        echo(f"a drillbook Prefect server is already running at {running}")
        return 0
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    if answers(api_url):
        raise DrillbookError(
            f"port {port} already has a Prefect server that drillbook did not start: use it with PREFECT_API_URL={api_url}, or pick --port"
        )
    (home / "server.pid").unlink(missing_ok=True)  # a stale PID file from a server that died makes Prefect refuse to start
    argv = [_prefect(), "server", "start", "--background", "--host", "127.0.0.1", "--port", str(port)]
    # Prefect leaves the server it starts in the command's process group: on a clean exit that group stays;
    # at the timeout, Ctrl-C or an error, the runner kills it whole.
    done = run_command(argv, env=_prefect_env(home), timeout=START_TIMEOUT, leave_group=True)
    if not done.record.ok:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        how = f"did not finish within {START_TIMEOUT:g}s" if done.record.timed_out else f"exited {done.record.exit_code}"
        raise DrillbookError(f"`prefect server start --background` {how}: {tail[0]}")
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(api_url, timeout=2):
        if time.monotonic() > deadline:
            stop(echo=lambda _: None)
            raise DrillbookError(f"the Prefect server did not answer at {api_url} within {START_TIMEOUT:g}s; its log is under {home}")
        time.sleep(0.5)
    _state_path().write_text(json.dumps({"api_url": api_url, "port": port, "home": str(home)}))
    echo(f"Prefect server running at {api_url} (home {home})")
    echo("drillbook run / nightly / release use it while it runs; other tools: export PREFECT_API_URL=" + api_url)
    return 0


def stop(echo: Callable[[str], None] = print) -> int:
    home = server_home()
    if not (home / "server.pid").exists() and not _state_path().exists():
        echo("no drillbook Prefect server is running")
        return 0
    run_command([_prefect(), "server", "stop"], env=_prefect_env(home), timeout=60)
    _state_path().unlink(missing_ok=True)
    echo(f"stopped the Prefect server (home {home})")
    return 0


def status(echo: Callable[[str], None] = print) -> int:
    url = local_server_url()
    if url:
        echo(f"running at {url} (home {server_home()})")
        return 0
    echo(f"not running (home {server_home()}); `drillbook server start` starts it")
    return 1


def cmd_server(args: argparse.Namespace) -> int:
    if args.json and args.action == "status":
        import json

        url = local_server_url()
        print(json.dumps({"running": url is not None, "url": url, "home": str(server_home())}, indent=2))
        return 0 if url else 1
    if args.action == "start":
        return start(args.port)
    if args.action == "stop":
        return stop()
    return status()


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    server = commands.add_parser(
        "server",
        help="run a Prefect server in the background for faster drills (start | stop | status)",
        description="A local Prefect server in the background (home: $DRILLBOOK_SERVER_HOME or ~/.drillbook/prefect). "
        "While it runs, drillbook run / nightly / release use it instead of starting a temporary one each time.",
        epilog="status exits 0 when the server answers, 1 when it does not.",
    )
    server.add_argument("action", choices=["start", "stop", "status"], help="start, stop, or status")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    server.add_argument("--json", action="store_true", help="status as JSON: running, url, home")
    server.set_defaults(func=cmd_server)
