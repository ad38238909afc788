"""`drillbook run` end to end on every store litestream replicates to, each against its real server on loopback.

Per backend (Azure Blob on Azurite, GCS on gcp-storage-emulator, SFTP on asyncssh,
WebDAV on WsgiDAV, NATS JetStream on nats-server): a replicated database drills to
PASS; an empty root is FAIL "no backup"; refused credentials, a server that is not
running, and a server that goes away between the inspection and the restore are FAIL
"object storage failure"; a truncated LTX file is FAIL "restore failure". The drill
runs through `drillbook.cli.main.main`, exactly as an operator's `drillbook run` does.
Each verdict's seconds are printed (run with -s to read them).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.flows.fleet import bucket_limit_name
from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.evidence import read_bundle
from drillbook.tasks.litestream import litestream_env, run_litestream
from drillbook.tasks.litestream_config import CONFIG_NAME, litestream_config_text
from drillbook.tasks.storage import litestream_replica, open_storage
from drillbook.testing import servers
from drillbook.testing.sample import make_sample_database
from tests.conftest import entry
from tests.test_backends import LTX_KEY, STARTERS, Backend

pytestmark = pytest.mark.slow

# Short enough to keep the file quick, long enough for a loopback restore on a busy machine.
TIMEOUTS = {"inspect_timeout": "8s", "restore_timeout": "60s", "stall_timeout": "4s"}


@pytest.fixture(scope="module", params=sorted(STARTERS))
def server(request, tmp_path_factory) -> Iterator[Backend]:
    cls, start = STARTERS[request.param]
    with start(tmp_path_factory.mktemp(f"drill-server-{request.param}")) as served:
        yield cls(served)


@pytest.fixture
def backend(server, monkeypatch) -> Backend:
    for key, value in server.served.env.items():
        monkeypatch.setenv(key, value)
    return server


def replicate_to(backend: Backend, url: str, live: Path, tmp_path: Path) -> None:
    """`litestream replicate -once` of `live` to `url`, through the config the backend needs."""
    config = tmp_path / f"replicate-{uuid.uuid4().hex[:6]}.yml"
    config.write_text(litestream_config_text(live, litestream_replica(url)))
    record = run_litestream(["replicate", "-config", str(config), "-once"], timeout=120).record
    assert record.ok, f"litestream replicate failed (exit {record.exit_code}): {record.stderr_tail()}"


@pytest.fixture
def replicated(backend, tmp_path) -> tuple[str, str, Path]:
    """A sample database replicated once to a fresh root: (root name, replica URL, live path)."""
    name = f"app-{uuid.uuid4().hex[:8]}"
    backend.create_root(name)
    url = backend.url(name)
    live = tmp_path / "live.db"
    make_sample_database(live, customers=200)
    replicate_to(backend, url, live, tmp_path)
    return name, url, live


def drill(capsys, write_catalogue, url: str, label: str, **extra) -> tuple[int, dict]:
    config = write_catalogue(entry("app", url, **TIMEOUTS, **extra))
    started = time.monotonic()
    code = main(["run", "app", "--config", str(config), "--json"])
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    with capsys.disabled():
        print(f"\n[{label}] {result['verdict']} ({result['failure_mode']}) exit {code} in {seconds:.1f}s: {_first_detail(result)}")
    return code, result


def _first_detail(result: dict) -> str:
    findings = result.get("findings") or []
    return findings[0]["detail"][:300] if findings else result.get("headline", "")


def assert_nothing_secret(result: dict, backend: Backend) -> None:
    text = json.dumps(result)
    for name, value in backend.served.env.items():
        if "KEY_PATH" not in name and len(value) >= 8:
            assert value not in text, f"{name}'s value is in the drill result"


# --- PASS ---------------------------------------------------------------------------------------


def test_a_replicated_database_drills_to_pass(backend, replicated, capsys, write_catalogue, tmp_path):
    name, url, live = replicated
    code, result = drill(capsys, write_catalogue, url, f"{backend.scheme} pass", schema_version=3, row_counts={"customers": 200})
    assert (code, result["verdict"], result["failure_mode"]) == (0, "PASS", None), _first_detail(result)
    assert all(result["phases"][step]["status"] == "passed" for step in ("replica", "restore", "integrity", "smoke"))
    bundle = read_bundle(Path(result["evidence"]))
    argv = bundle.restore.command.argv
    # litestream is told where the replica is by a config in the drill's scratch directory, which went with it.
    assert argv[argv.index("-config") + 1].endswith(f"/{CONFIG_NAME}")
    assert not Path(argv[argv.index("-config") + 1]).exists()
    assert not any((tmp_path / "scratch" / "app").iterdir())
    assert bundle.integrity.schema_version == "3"
    assert_nothing_secret(result, backend)
    with sqlite3.connect(live) as connection:
        assert connection.execute("SELECT count(*) FROM customers").fetchone() == (200,)


# --- FAIL: no backup ----------------------------------------------------------------------------


def test_an_empty_root_is_no_backup(backend, capsys, write_catalogue):
    name = f"empty-{uuid.uuid4().hex[:8]}"
    backend.create_root(name)
    code, result = drill(capsys, write_catalogue, backend.url(name), f"{backend.scheme} empty root")
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "no backup"), _first_detail(result)
    assert result["phases"]["restore"]["status"] == "skipped"


# --- FAIL: object storage failure ---------------------------------------------------------------


def _refuse_credentials(backend: Backend, monkeypatch, tmp_path: Path) -> str:
    """Credentials the server refuses; for GCS (the emulator accepts anything) a key file Google's client cannot use."""
    if backend.scheme == "gs":
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")
        key = tmp_path / "service-account.json"
        key.write_text('{"type": "service_account", "project_id": "drillbook"')  # cut short: not a key
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        return "Google credentials"
    backend.wrong_credentials(monkeypatch, tmp_path)
    return {
        "abs": "LITESTREAM_AZURE",
        "sftp": "LITESTREAM_SFTP_KEY_PATH",
        "webdav": "LITESTREAM_WEBDAV",
        "nats": "LITESTREAM_NATS",
        "oss": "OSS_ACCESS_KEY",
    }[backend.scheme]


def test_refused_credentials_are_an_object_storage_failure(backend, replicated, capsys, write_catalogue, monkeypatch, tmp_path):
    name, url, live = replicated
    names = _refuse_credentials(backend, monkeypatch, tmp_path)
    code, result = drill(capsys, write_catalogue, url, f"{backend.scheme} wrong credentials")
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "object storage failure"), _first_detail(result)
    assert names in _first_detail(result)  # says which setting to check
    assert "not-the-password" not in json.dumps(result)


def test_a_server_that_is_not_running_is_an_object_storage_failure(backend, capsys, write_catalogue, monkeypatch):
    url = backend.unreachable_url(monkeypatch, f"app-{uuid.uuid4().hex[:8]}")
    code, result = drill(capsys, write_catalogue, url, f"{backend.scheme} unreachable")
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "object storage failure"), _first_detail(result)
    assert "unreachable" in _first_detail(result) or "refused" in _first_detail(result)


class Cuttable:
    """A loopback TCP forwarder to a server; `cut()` closes it: new connections are refused, open ones dropped."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server((servers.HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the blocked accept(): close() alone leaves the port listening on Linux
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _through(backend: Backend, name: str, port: int, monkeypatch) -> str:
    """The replica URL of root `name`, reaching the server through loopback port `port`."""
    endpoint = f"{servers.HOST}:{port}"
    if backend.scheme == "abs":
        return backend.url(name, endpoint=f"http://{endpoint}/{servers.AZURITE_ACCOUNT}")
    if backend.scheme == "oss":
        return backend.url(name, endpoint=f"http://{endpoint}")
    if backend.scheme == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{endpoint}")
        return backend.url(name)
    if backend.scheme == "nats":
        return backend.url(name, endpoint=f"nats://{endpoint}")
    return backend.url(name, endpoint=endpoint)


def test_a_server_gone_between_inspection_and_restore(backend, replicated, capsys, write_catalogue, monkeypatch):
    """The inspection lists the replica, then the server goes away: litestream's Azure and GCS clients retry silently, forever."""
    from drillbook.tasks import restore as restore_module

    name, _url, _live = replicated
    host, _, port = backend.served.endpoint.split("://")[-1].split("/")[0].rpartition(":")
    switch = Cuttable(host, int(port))
    url = _through(backend, name, switch.port, monkeypatch)
    real = restore_module.restore_source

    def cut_then_source(*args):
        switch.cut()
        return real(*args)

    monkeypatch.setattr(restore_module, "restore_source", cut_then_source)
    code, result = drill(capsys, write_catalogue, url, f"{backend.scheme} gone before the restore")
    assert code == 1 and result["verdict"] == "FAIL", _first_detail(result)
    assert result["phases"]["replica"]["status"] == "passed"
    bundle = read_bundle(Path(result["evidence"]))
    print(
        f"  litestream: exit {bundle.restore.command.exit_code}, stalled {bundle.restore.command.stalled}, "
        f"{bundle.restore.command.seconds}s: {bundle.restore.command.stderr_tail(300)}"
    )
    if backend.scheme in ("abs", "gs"):  # retried silently until the stall timeout killed it
        assert bundle.restore.command.stalled and result["failure_mode"] == "object storage failure", _first_detail(result)
        assert bundle.restore.command.seconds < 30
    else:
        assert result["failure_mode"] in ("object storage failure", "restore failure"), _first_detail(result)


# --- FAIL: restore failure ----------------------------------------------------------------------


def test_a_truncated_ltx_file_is_a_restore_failure(backend, replicated, capsys, write_catalogue):
    name, url, _live = replicated
    storage = open_storage(url, timeout=10)
    biggest = max((item for item in storage.list() if LTX_KEY.match(item.key)), key=lambda item: item.size)
    backend.truncate(name, biggest.key, biggest.size // 2)
    code, result = drill(capsys, write_catalogue, url, f"{backend.scheme} truncated LTX")
    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "restore failure"), _first_detail(result)


# --- configuration, limits, environment ---------------------------------------------------------


def test_check_config_names_what_is_missing_in_one_line(backend, capsys, write_catalogue, monkeypatch, tmp_path):
    """A setting litestream needs but lacks stops the catalogue (exit 2), one line naming the entry and the field."""
    missing = {
        "abs": ("abs:///app", "no container"),
        "gs": ("gs://drills/app", "GOOGLE_APPLICATION_CREDENTIALS"),
        "sftp": (backend.url("app"), "LITESTREAM_SFTP_KEY_PATH"),
        "webdav": ("webdav:///app", "no host"),
        "nats": (backend.url("") if backend.scheme == "nats" else "", "no object store bucket"),
        "oss": (backend.url("app"), "set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET"),
    }
    url, says = missing[backend.scheme]
    if backend.scheme == "gs":  # against Google itself, not the emulator (which needs no key)
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    if backend.scheme == "sftp":
        monkeypatch.setenv("LITESTREAM_SFTP_KEY_PATH", str(tmp_path / "no-such-key"))
    if backend.scheme == "oss":
        monkeypatch.delenv("OSS_ACCESS_KEY_SECRET")
    config = write_catalogue(entry("app", url))
    code = main(["check-config", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    line = next(line for line in err.splitlines() if "field replica" in line)
    assert "database[0] 'app': field replica:" in line and says in line, err


def test_each_store_gets_its_own_concurrency_limit(backend):
    one = DatabaseEntry(name="one", replica=backend.url("app"), rto_target=60, rpo_target=60)
    other = DatabaseEntry(name="other", replica=backend.url("other"), rto_target=60, rpo_target=60)
    name = bucket_limit_name(one)
    assert name.startswith("drillbook-bucket-") and name != "drillbook-bucket-local-files"
    port = backend.served.endpoint.rsplit(":", 1)[-1].split("/")[0]
    assert port in name, name  # the endpoint is part of it
    if backend.scheme in ("sftp", "webdav"):  # one server, one limit, whatever the path
        assert bucket_limit_name(other) == name
    elif backend.scheme == "nats":  # the object store bucket is the root
        assert bucket_limit_name(other) != name
    print(f"\n{backend.scheme}: {name}")


def test_litestream_gets_the_variables_its_config_refers_to(backend):
    text = litestream_config_text(Path("/scratch/replica-of/app.db"), litestream_replica(backend.url("app")))
    env = litestream_env()
    wanted = servers.litestream_variables_for(backend.url("app"))
    assert litestream_env(dict.fromkeys(wanted, "x")).keys() == set(wanted)  # every variable the backend reads passes through
    for variable, value in backend.served.env.items():
        assert value not in text, f"{variable}'s value is in the generated config"  # only ${VAR} references
        assert env.get(variable) == value, f"{variable} does not reach litestream"
