"""Real parts: moto's S3 server on loopback, the real litestream, real SQLite, one Prefect harness."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import uuid
from pathlib import Path

import pytest

# Prefect reads its settings at import: point it at a throwaway home first.
_PREFECT_HOME = tempfile.mkdtemp(prefix="drillbook-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
# `drillbook server start` keeps its state here; a developer's own background server stays out of the tests.
os.environ["DRILLBOOK_SERVER_HOME"] = os.path.join(_PREFECT_HOME, "drillbook-server")

from drillbook.testing.s3 import create_bucket, environment, local_s3, replicate_once, s3_replica_url  # noqa: E402
from drillbook.testing.sample import make_sample_database  # noqa: E402

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "drillbook-test",
    "AWS_SECRET_ACCESS_KEY": "drillbook-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_CALLER_KEYS = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "DRILLBOOK_CONFIG",
    "DRILLBOOK_LITESTREAM",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """The caller's environment stays out of tests; local S3 credentials go in."""
    for key in _CALLER_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_endpoint():
    with environment(S3_CREDENTIALS), local_s3() as endpoint:
        create_bucket(endpoint, "drills")
        yield endpoint


class Replicated:
    """A live database and its replica URL."""

    def __init__(self, live: Path, replica: str):
        self.live = live
        self.replica = replica


@pytest.fixture
def replicate(tmp_path, s3_endpoint):
    """Factory: build a database (sample, or by a callback), replicate it once, return paths and URL."""

    def make(builder=None, *, key: str | None = None) -> Replicated:
        live = tmp_path / f"live-{uuid.uuid4().hex[:6]}.db"
        if builder is None:
            make_sample_database(live, customers=200)
        else:
            builder(live)
        url = s3_replica_url(s3_endpoint, "drills", key or f"{uuid.uuid4().hex[:10]}/app.db")
        replicate_once(live, url)
        return Replicated(live, url)

    return make


@pytest.fixture
def write_catalogue(tmp_path):
    """Factory: write a catalogue with [[database]] entries (dicts) and return its path."""

    def write(*entries: dict, settings: dict | None = None, name: str = "drillbook.toml") -> Path:
        settings = {"evidence_dir": str(tmp_path / "evidence"), "scratch_dir": str(tmp_path / "scratch"), **(settings or {})}
        lines = ["[drillbook]"] + [f"{k} = {_toml(v)}" for k, v in settings.items()]
        for entry in entries:
            lines += ["", "[[database]]"] + [f"{k} = {_toml(v)}" for k, v in entry.items()]
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):  # inline table: row_counts = { customers = 1 }, smoke = [{ name = "...", sql = "..." }]
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # JSON string escapes (\n, \u001b, \u2028) are TOML's: a test can write any text


def entry(name: str, replica: str, **extra) -> dict:
    return {"name": name, "replica": replica, "rto_target": "2m", "rpo_target": "10m", **extra}


def corrupt_index(path: Path) -> None:
    """A database whose index no longer matches its table: integrity_check reports rows."""
    make_sample_database(path, customers=50)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA writable_schema=ON")
    connection.execute(
        "UPDATE sqlite_schema SET sql = 'CREATE INDEX orders_customer ON orders(total_cents)' WHERE name = 'orders_customer'"
    )
    connection.commit()
    connection.close()


ROOT = Path(__file__).resolve().parent.parent
_OFFLINE = (
    "NewConnectionError",
    "Network is unreachable",
    "No matching distribution found for setuptools",
    "Could not find a version that satisfies the requirement setuptools",
)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """drillbook's wheel, built once per test session as pip builds it (the packaging and migration tests share it)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and any(sign in built.stderr for sign in _OFFLINE):
        pytest.skip("pip could not fetch the build backend (setuptools>=68) from the package index to build the wheel")
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("drillbook-*.whl")
    return path


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database per test (.ci/run starts the server; in CI its absence is a failure, not a skip)."""
    psycopg = pytest.importorskip("psycopg")
    name = f"drillbook_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc})")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The session's corpus of real replicas, each built once on first use, on an S3 server in its own process."""
    from drillbook.testing.corpus import Corpus
    from drillbook.testing.s3 import moto_process

    with environment(S3_CREDENTIALS), moto_process() as endpoint:
        create_bucket(endpoint, "drills")
        yield Corpus(endpoint, "drills", tmp_path_factory.mktemp("corpus"))
