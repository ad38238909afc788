"""Every store litestream replicates to, against a real server on loopback: real litestream, real SQLite, nothing mocked.

For each backend: `litestream replicate -once` pushes a small database to the server;
drillbook's storage finds the LTX files where litestream laid them out and reads an
LTX header; `litestream restore` gives the rows back. Then the faults: a missing
root, refused credentials, a server that is not running, a truncated LTX file.
litestream's stderr for each fault is printed (run with -s to read it).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.runner import CommandRecord
from drillbook.tasks.storage import StorageError, StorageProblem, check_replica_url, open_storage
from drillbook.testing import oss as oss_standin
from drillbook.testing import servers

pytestmark = pytest.mark.slow

# litestream's clients lay levels out two ways: ltx/<level>/ (Azure, GCS, SFTP, WebDAV, NATS) and <level, 4 hex>/ (OSS, as S3).
LTX_KEY = re.compile(r"^(ltx/\d+|[0-9a-f]{4})/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
TIMEOUT = 10.0


# --- one adapter per backend: how to make a root, spoil a credential, truncate an object -------------


class Backend:
    scheme: str
    module: str

    def __init__(self, served: servers.Served):
        self.served = served

    def url(self, name: str) -> str:
        raise NotImplementedError

    def create_root(self, name: str) -> None:
        raise NotImplementedError

    def truncate(self, name: str, key: str, size: int) -> None:
        raise NotImplementedError

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        raise NotImplementedError

    def unreachable_url(self, monkeypatch, name: str) -> str:
        raise NotImplementedError


class Azure(Backend):
    scheme, module = "abs", "abs"
    container = "drills"

    def _container(self, name: str):
        from azure.storage.blob import ContainerClient

        return ContainerClient(
            account_url=self.served.endpoint,
            container_name=name,
            credential={"account_name": servers.AZURITE_ACCOUNT, "account_key": servers.AZURITE_KEY},
        )

    def url(self, name: str, *, endpoint: str | None = None, container: str | None = None) -> str:
        return f"abs://{servers.AZURITE_ACCOUNT}@{container or self.container}/{name}?endpoint={endpoint or self.served.endpoint}"

    def create_root(self, name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self._container(self.container).create_container()

    def truncate(self, name: str, key: str, size: int) -> None:
        blob = self._container(self.container).get_blob_client(f"{name}/{key}")
        data = blob.download_blob().readall()
        metadata = blob.get_blob_properties().metadata
        blob.upload_blob(data[:size], overwrite=True, metadata=metadata)

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        monkeypatch.setenv("LITESTREAM_AZURE_ACCOUNT_KEY", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==")

    def unreachable_url(self, monkeypatch, name: str) -> str:
        return self.url(name, endpoint=f"http://{servers.HOST}:{servers.free_port()}/{servers.AZURITE_ACCOUNT}")

    def missing_url(self) -> str:
        return self.url("app", container=f"absent-{uuid.uuid4().hex[:8]}")


class GCS(Backend):
    scheme, module = "gs", "gcs"
    bucket = "drills"

    def _client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="drillbook", credentials=AnonymousCredentials())

    def url(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    def create_root(self, name: str) -> None:
        from google.api_core.exceptions import Conflict

        with contextlib.suppress(Conflict):
            self._client().create_bucket(self.bucket)

    def truncate(self, name: str, key: str, size: int) -> None:
        blob = self._client().bucket(self.bucket).get_blob(f"{name}/{key}")
        data = blob.download_as_bytes()
        blob.upload_from_string(data[:size])

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        # The emulator accepts every request, so refused credentials cannot be staged against it; missing ones can,
        # without the network: both clients fail while looking for Application Default Credentials.
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))

    def unreachable_url(self, monkeypatch, name: str) -> str:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{servers.HOST}:{servers.free_port()}")
        return self.url(name)

    def missing_url(self) -> str:
        return f"gs://absent-{uuid.uuid4().hex[:8]}/app"


class SFTP(Backend):
    scheme, module = "sftp", "sftp"

    def url(self, name: str, *, endpoint: str | None = None) -> str:
        return f"sftp://{self.served.extra['user']}@{endpoint or self.served.endpoint}/{name}"

    def create_root(self, name: str) -> None:
        (self.served.root / name).mkdir(parents=True, exist_ok=True)

    def truncate(self, name: str, key: str, size: int) -> None:
        with open(self.served.root / name / key, "r+b") as handle:
            handle.truncate(size)

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        import asyncssh

        other = tmp_path / "not-authorized_ed25519"
        other.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
        other.chmod(0o600)
        monkeypatch.setenv("LITESTREAM_SFTP_KEY_PATH", str(other))

    def unreachable_url(self, monkeypatch, name: str) -> str:
        return self.url(name, endpoint=f"{servers.HOST}:{servers.free_port()}")

    def missing_url(self) -> str:
        return self.url(f"absent-{uuid.uuid4().hex[:8]}")


class WebDAV(Backend):
    scheme, module = "webdav", "webdav"

    def url(self, name: str, *, endpoint: str | None = None) -> str:
        return f"webdav://{(endpoint or self.served.endpoint).removeprefix('http://')}/{name}"

    def create_root(self, name: str) -> None:
        (self.served.root / name).mkdir(parents=True, exist_ok=True)

    def truncate(self, name: str, key: str, size: int) -> None:
        with open(self.served.root / name / key, "r+b") as handle:
            handle.truncate(size)

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        monkeypatch.setenv("LITESTREAM_WEBDAV_PASSWORD", "not-the-password")

    def unreachable_url(self, monkeypatch, name: str) -> str:
        return self.url(name, endpoint=f"{servers.HOST}:{servers.free_port()}")

    def missing_url(self) -> str:
        return self.url(f"absent-{uuid.uuid4().hex[:8]}")


class NATS(Backend):
    scheme, module = "nats", "nats"

    async def _js(self, work):
        import nats

        nc = await nats.connect(self.served.endpoint, user=self.served.extra["user"], password=self.served.env["LITESTREAM_NATS_PASSWORD"])
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    def url(self, name: str, *, endpoint: str | None = None) -> str:
        return f"{endpoint or self.served.endpoint}/{name}"

    def create_root(self, name: str) -> None:
        import asyncio

        async def create(js):
            await js.create_object_store(name)

        asyncio.run(self._js(create))

    def truncate(self, name: str, key: str, size: int) -> None:
        import asyncio

        async def rewrite(js):
            store = await js.object_store(name)
            found = await store.get(key)
            # Without litestream's timestamp header (nats-py's put() fails on an ObjectMeta name): not what the restore reads.
            await store.put(key, found.data[:size])

        asyncio.run(self._js(rewrite))

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        monkeypatch.setenv("LITESTREAM_NATS_PASSWORD", "not-the-password")

    def unreachable_url(self, monkeypatch, name: str) -> str:
        return self.url(name, endpoint=f"nats://{servers.HOST}:{servers.free_port()}")

    def missing_url(self) -> str:
        return self.url(f"absent-{uuid.uuid4().hex[:8]}")


class OSS(Backend):
    """Alibaba OSS through its stand-in (servers.oss_standin: moto's S3 app, checking the key id, not the signature)."""

    scheme, module = "oss", "oss"
    bucket = "oss-drills"

    def _s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.served.endpoint,
            aws_access_key_id=oss_standin.OSS_KEY_ID,
            aws_secret_access_key="y",
            region_name="us-east-1",
        )

    def url(self, name: str, *, endpoint: str | None = None, bucket: str | None = None) -> str:
        return f"oss://{bucket or self.bucket}/{name}?endpoint={endpoint or self.served.endpoint}"

    def create_root(self, name: str) -> None:
        with contextlib.suppress(self._s3().exceptions.BucketAlreadyOwnedByYou):
            self._s3().create_bucket(Bucket=self.bucket)

    def truncate(self, name: str, key: str, size: int) -> None:
        found = self._s3().get_object(Bucket=self.bucket, Key=f"{name}/{key}")
        self._s3().put_object(Bucket=self.bucket, Key=f"{name}/{key}", Body=found["Body"].read()[:size], Metadata=found["Metadata"])

    def wrong_credentials(self, monkeypatch, tmp_path: Path) -> None:
        monkeypatch.setenv("OSS_ACCESS_KEY_ID", "not-the-key-id")  # the stand-in refuses any other key id

    def unreachable_url(self, monkeypatch, name: str) -> str:
        return self.url(name, endpoint=f"http://{servers.HOST}:{servers.free_port()}")

    def missing_url(self) -> str:
        return self.url("app", bucket=f"absent-{uuid.uuid4().hex[:8]}")


STARTERS = {
    "abs": (Azure, lambda tmp: servers.azurite(tmp)),
    "gs": (GCS, lambda tmp: servers.gcs_emulator()),
    "sftp": (SFTP, lambda tmp: servers.sftp_server(tmp)),
    "webdav": (WebDAV, lambda tmp: servers.webdav_server(tmp)),
    "nats": (NATS, lambda tmp: servers.nats_server(tmp)),
    "oss": (OSS, lambda tmp: oss_standin.oss_standin()),
}


@pytest.fixture(scope="module", params=sorted(STARTERS))
def server(request, tmp_path_factory) -> Iterator[Backend]:
    cls, start = STARTERS[request.param]
    with start(tmp_path_factory.mktemp(f"server-{request.param}")) as served:
        yield cls(served)


@pytest.fixture
def backend(server, monkeypatch) -> Backend:
    for key, value in server.served.env.items():
        monkeypatch.setenv(key, value)
    return server


# --- helpers ---------------------------------------------------------------------------------


def make_database(path: Path, rows: int = 200) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        connection.executemany("INSERT INTO notes (body) VALUES (?)", ((f"note {i} " + "x" * (i % 50),) for i in range(rows)))
        connection.commit()
        return connection.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    finally:
        connection.close()


def rows_of(path: Path) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    finally:
        connection.close()


def config_for(backend: Backend, tmp_path: Path, url: str, db: Path) -> Path:
    return servers.litestream_config(tmp_path / "litestream.yml", db, servers.litestream_replica_for(url))


def replicate(config: Path) -> CommandRecord:
    record = run_litestream(["replicate", "-config", str(config), "-once"], timeout=120).record
    assert record.ok, f"litestream replicate failed (exit {record.exit_code}): {record.stderr_tail()}\n{record.stdout[-1500:]}"
    return record


def restore(config: Path, db: Path, out: Path, timeout: float = 60) -> CommandRecord:
    return run_litestream(["restore", "-config", str(config), "-o", str(out), str(db)], timeout=timeout).record


@pytest.fixture
def replicated(backend, tmp_path):
    """A database replicated once to a fresh root on the backend: (url, config, db path, rows)."""
    name = f"app-{uuid.uuid4().hex[:8]}"
    backend.create_root(name)
    url = backend.url(name)
    db = tmp_path / "app.db"
    rows = make_database(db)
    config = config_for(backend, tmp_path, url, db)
    replicate(config)
    return name, url, config, db, rows


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("abs:///app", "no container"),
        ("abs://backups/app", "no storage account"),
        ("gs:///app", "no bucket"),
        ("sftp:///backups/app", "no host"),
        ("sftp://host.example/backups/app", "no user"),
        ("sftp://drill:hunter2@host.example/backups/app", "set LITESTREAM_SFTP_PASSWORD instead"),
        ("sftp://drill@host.example/", "no path"),
        ("sftp://drill@host.example/backups/app", "set LITESTREAM_SFTP_KEY_PATH"),
        ("webdav:///app", "no host"),
        ("webdavs://drill:hunter2@dav.example/app", "set LITESTREAM_WEBDAV_USERNAME and LITESTREAM_WEBDAV_PASSWORD instead"),
        ("nats://127.0.0.1:4222/", "no object store bucket"),
        ("nats://drill:hunter2@127.0.0.1:4222/app", "set LITESTREAM_NATS_USERNAME and LITESTREAM_NATS_PASSWORD instead"),
        ("oss://drills", "needs a bucket and a path"),
        ("oss://drills.oss-eu-central-1.aliyuncs.com/app", "set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET"),
    ],
)
def test_check_url_says_what_is_missing(url, says, monkeypatch):
    for name in ("LITESTREAM_SFTP_KEY_PATH", "LITESTREAM_SFTP_PASSWORD", "OSS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    problem = check_replica_url(url)
    assert problem is not None and says in problem
    assert "hunter2" not in problem


def test_check_url_passes_complete_urls(monkeypatch, tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    monkeypatch.setenv("LITESTREAM_SFTP_KEY_PATH", str(key))
    from drillbook.tasks.storage import abs, gcs, nats, sftp, webdav

    assert abs.check_url("abs://acct@backups/app") is None
    assert gcs.check_url("gs://backups/app") is None
    assert sftp.check_url("sftp://drill@host.example:2222/backups/app") is None
    assert webdav.check_url("webdavs://dav.example/backups/app") is None
    assert nats.check_url("nats://127.0.0.1:4222/app") is None


def test_url_is_complete(backend):
    module = __import__(f"drillbook.tasks.storage.{backend.module}", fromlist=["check_url"])
    assert module.check_url(backend.url("app")) is None


def test_storage_lists_and_reads_what_litestream_wrote_and_restore_gives_the_rows_back(backend, replicated, tmp_path):
    name, url, config, db, rows = replicated
    storage = open_storage(url, timeout=TIMEOUT)
    storage.probe()
    listed = list(storage.list())
    ltx = [item for item in listed if LTX_KEY.match(item.key)]
    assert ltx, f"no LTX files in the layout litestream uses, listed: {[item.key for item in listed]}"
    assert all(item.size > 100 and item.modified.tzinfo is not None for item in ltx)
    print(f"\n{backend.scheme} listing: {[(item.key, item.size, item.modified.isoformat()) for item in ltx]}")
    level_zero = "0000/" if ltx[0].key[0] != "l" else "ltx/0/"
    assert {item.key for item in storage.list(level_zero)} == {item.key for item in listed if item.key.startswith(level_zero)}
    header = storage.read(ltx[0].key, 0, 100)
    assert len(header) == 100 and header[:4] == b"LTX1"
    assert storage.read(ltx[0].key, 4, 4) == header[4:8]

    out = tmp_path / "restored" / "app.db"
    out.parent.mkdir()
    record = restore(config, db, out)
    assert record.ok, f"litestream restore failed (exit {record.exit_code}): {record.stderr_tail()}"
    assert rows_of(out) == rows


def test_an_existing_empty_root_lists_nothing(backend):
    name = f"empty-{uuid.uuid4().hex[:8]}"
    backend.create_root(name)
    storage = open_storage(backend.url(name), timeout=TIMEOUT)
    storage.probe()
    assert list(storage.list()) == []


def test_a_missing_root_is_missing(backend):
    with pytest.raises(StorageError) as caught:
        open_storage(backend.missing_url(), timeout=TIMEOUT).probe()
    assert caught.value.problem is StorageProblem.MISSING, str(caught.value)
    print(f"\n{backend.scheme} missing: {caught.value}")


def test_wrong_credentials_are_access_denied_for_drillbook_and_fail_litestream(backend, replicated, monkeypatch, tmp_path):
    name, url, config, db, _rows = replicated
    backend.wrong_credentials(monkeypatch, tmp_path)
    with pytest.raises(StorageError) as caught:
        open_storage(url, timeout=TIMEOUT).probe()
    assert caught.value.problem is StorageProblem.ACCESS_DENIED, str(caught.value)
    assert "not-the-password" not in str(caught.value)
    record = restore(config, db, tmp_path / "denied.db", timeout=90)
    print(
        f"\n{backend.scheme} wrong credentials: drillbook: {caught.value}\nlitestream (exit {record.exit_code}, {record.seconds}s): {record.stderr_tail(800)}"
    )
    assert not record.ok
    assert not (tmp_path / "denied.db").exists()


def test_a_server_that_is_not_running_is_unreachable(backend, monkeypatch, tmp_path):
    url = backend.unreachable_url(monkeypatch, "app")
    with pytest.raises(StorageError) as caught:
        open_storage(url, timeout=TIMEOUT).probe()
    assert caught.value.problem is StorageProblem.UNREACHABLE, str(caught.value)
    db = tmp_path / "app.db"
    config = config_for(backend, tmp_path, url, db)
    # litestream's Azure client retries a refused connection for minutes (10 retries up to 30 s apart), silently.
    record = restore(config, db, tmp_path / "unreachable.db", timeout=8)
    print(
        f"\n{backend.scheme} unreachable: drillbook: {caught.value}\nlitestream (exit {record.exit_code}, {record.seconds}s, timed out {record.timed_out}): {record.stderr_tail(800)}"
    )
    assert not record.ok


def test_a_truncated_ltx_file_fails_the_restore(backend, replicated, tmp_path):
    name, url, config, db, _rows = replicated
    storage = open_storage(url, timeout=TIMEOUT)
    biggest = max((item for item in storage.list() if LTX_KEY.match(item.key)), key=lambda item: item.size)
    backend.truncate(name, biggest.key, biggest.size // 2)
    assert storage.read(biggest.key, 0, 4) == b"LTX1"
    out = tmp_path / "truncated.db"
    record = restore(config, db, out, timeout=90)
    print(
        f"\n{backend.scheme} truncated {biggest.key} to {biggest.size // 2} of {biggest.size} bytes: litestream (exit {record.exit_code}, {record.seconds}s): {record.stderr_tail(800)}"
    )
    assert not record.ok
