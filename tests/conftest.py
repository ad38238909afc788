"""Real parts: moto's S3 server on loopback, the real litestream, real SQLite, one Prefect harness."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
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


def _build_wheel() -> Path:
    import subprocess
    import sys

    out = warm.temporary("drillbook-test-wheel-")
    # Built from a copy: an in-tree build writes build/ and *.egg-info into the checkout.
    source = warm.temporary("drillbook-test-source-") / "drillbook"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*cache")
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and any(sign in built.stderr for sign in _OFFLINE):
        pytest.skip("pip could not fetch the build backend (setuptools>=68) from the package index to build the wheel")
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("drillbook-*.whl")
    return path


@pytest.fixture(scope="session")
def wheel() -> Path:
    """drillbook's wheel, built once per test session as pip builds it (the packaging and migration tests share it)."""
    return warm.result("wheel")


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


CORPUS_PREFIX = "drillbook-corpus-"  # the corpus's litestream processes run from below it (tests/test_faults.py tells them apart)


def _start_corpus():
    """The session's corpus on an S3 server in its own process (started once, by whichever thread asks first)."""
    from drillbook.testing.corpus import Corpus, s3_client
    from drillbook.testing.s3 import moto_process

    endpoint = warm.enter(moto_process())
    s3_client(endpoint).create_bucket(Bucket="drills")  # not through os.environ: this may run beside a test changing it
    return Corpus(endpoint, "drills", warm.temporary(CORPUS_PREFIX))


def _build_corpus():
    """Every replica the corpus tests use, the busy one first (its few minutes of writing are the suite's longest wait)."""
    from drillbook.testing.corpus import OTHER_VERSIONS

    corpus = warm.result("corpus-server")
    corpus.busy()
    for version in OTHER_VERSIONS:
        corpus.written_by(version)


@pytest.fixture(scope="session")
def corpus():
    """The session's corpus of real replicas, each built once (in the background from the start, when tests need it)."""
    return warm.result("corpus-server")


class Warm:
    """Slow session resources, started as soon as collection shows a test needs them, beside the first tests.

    Their waits (minutes of `litestream replicate` under writes for the busy
    replica, a pip install into a fresh venv) overlap the rest of the suite
    instead of adding to it. A fixture asks `result(name)`: it waits for the
    background work, or does it itself when nothing started it. Background work
    that failed is done again in the foreground, so the failing test shows the
    real error.
    """

    def __init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="warm")
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._values: dict = {}
        self._builders = {
            "wheel": _build_wheel,
            "corpus-server": _start_corpus,
            "corpus": _build_corpus,
            "installed": _install_wheel,
            "litefs": _litefs_binary,
            "azurite": _azurite_binary,
        }

    def start(self, name: str, *, after: str | None = None) -> None:
        """Make `name` in the background; with `after`, only once that is made (or failed): two heavy builds at once
        on two cores slowed the corpus's writers, and a replica litestream 0.5.5 wrote then restored with a row missing
        from an index."""
        self._pool.submit(self._quietly, name, after)

    def _quietly(self, name: str, after: str | None = None) -> None:
        for each in filter(None, (after, name)):
            # A failure is left: the fixture that needs it does it again and fails with the reason.
            with contextlib.suppress(BaseException):
                self.result(each)

    def result(self, name: str):
        with self._lock:
            entry = self._values.setdefault(name, {"lock": threading.Lock()})
        with entry["lock"]:
            if "value" not in entry:
                entry["value"] = self._builders[name]()
            return entry["value"]

    def enter(self, context):
        with self._lock:
            return self._stack.enter_context(context)

    def temporary(self, prefix: str) -> Path:
        """A directory removed when the session ends."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        with self._lock:
            self._stack.callback(shutil.rmtree, path, ignore_errors=True)
        return path

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._stack.close()


def _litefs_binary() -> Path:
    """LiteFS from drillbook's build cache: `go install` on a clean machine, about a minute of compiling."""
    from drillbook.tasks import litefs_bin

    return litefs_bin.find_litefs()


def _azurite_binary() -> Path:
    """Azurite from the npm cache: `npm install` on a clean machine, about half a minute."""
    from drillbook.testing import servers

    return servers.azurite_bin()


@pytest.fixture(scope="session")
def litefs_binary() -> Path:
    return warm.result("litefs")


def _install_wheel() -> Path:
    """A fresh venv with the wheel (and the demo's extra) installed from it, as a user installs drillbook; returns its bin/."""
    import subprocess
    import sys

    venv = warm.temporary("drillbook-test-venv-")
    wheel = warm.result("wheel")
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[demo]"],
    ):
        done = subprocess.run(argv, cwd=venv, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return venv / "bin"


warm = Warm()


def pytest_collection_finish(session):
    """Start what the selected tests will need and is slow to make (DRILLBOOK_TEST_WARM=0: make it when first asked)."""
    if os.environ.get("DRILLBOOK_TEST_WARM", "1") == "0" or session.config.option.collectonly:
        return
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "corpus" in needed:
        warm.start("corpus")
    if "installed" in needed:
        warm.start("installed")
    if "litefs_binary" in needed:  # go install compiles on both cores: after the corpus's writers are done
        warm.start("litefs", after="corpus" if "corpus" in needed else None)
    if any("[abs" in item.nodeid or "azurite" in getattr(item, "fixturenames", ()) for item in session.items):
        warm.start("azurite")


def pytest_sessionfinish(session, exitstatus):
    warm.close()
