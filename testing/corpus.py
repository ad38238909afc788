"""Realistic replicas for tests and benches: real litestream binaries replicating a database under a write workload.

A `Workload` writes to a SQLite database in WAL mode (inserts, updates and
deletes in three tables, one `seq` row per commit with the commit's wall-clock
time) and keeps the oracle: the time of every commit, and, since every commit
is drawn from a seeded generator, the database's exact content after any
commit (replayed in memory). `Workload.identify(copy)` says which commit a
restored copy equals, or why it equals none.

`build_replica` runs `litestream replicate -config` (any version, see
drillbook.tasks.versions) in its own process group beside a running workload
and stops the group at the end. `busy_config` shortens compaction levels,
snapshot interval and retention so that two minutes of writing leave what weeks
would: thousands of LTX files over L0-L3 and L9, the oldest already deleted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import litestream_env
from drillbook.tasks.versions import litestream_binary
from drillbook.testing.s3 import s3_replica_url
from drillbook.testing.workload import Commit, Workload  # noqa: F401  (re-exported: the corpus's oracle)

SETTLE_SECONDS = 3.0  # after the last commit, where the replica's position cannot be compared (0.3): several sync intervals
CATCH_UP_SECONDS = 120.0  # for a 0.5 replica to upload its backlog after the last commit (a loaded machine uploads slowly)
STOP_SECONDS = 45.0  # for litestream's own shutdown sync after SIGTERM, before the group is killed
# The corpus's own S3 calls and litestream processes take these, not whatever the environment holds when they run:
# a build may run in a background thread while a test takes the credentials away (moto accepts any).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "drillbook-corpus", "AWS_SECRET_ACCESS_KEY": "drillbook-corpus", "AWS_DEFAULT_REGION": "us-east-1"}
UNTIL_POLL = 10.0  # a listing of thousands of keys is work for the S3 server too


@dataclass(frozen=True)
class S3Target:
    """A replica on an S3 endpoint: bucket and key prefix (credentials come from the environment, never the config)."""

    endpoint: str
    bucket: str
    path: str

    @property
    def url(self) -> str:
        return s3_replica_url(self.endpoint, self.bucket, self.path)

    def yaml(self, indent: str) -> str:
        return (
            f"{indent}type: s3\n{indent}bucket: {self.bucket}\n{indent}path: {self.path}\n{indent}endpoint: {self.endpoint}\n"
            f"{indent}region: us-east-1\n{indent}force-path-style: true\n"
        )


@dataclass(frozen=True)
class FileTarget:
    """A replica in a local directory."""

    directory: Path

    @property
    def url(self) -> str:
        return f"file://{self.directory}"

    def yaml(self, indent: str) -> str:
        return f"{indent}type: file\n{indent}path: {self.directory}\n"


Target = S3Target | FileTarget


@dataclass(frozen=True)
class BusySettings:
    """The shortened intervals of `busy_config` (litestream's defaults in brackets)."""

    tick: str = "15ms"  # monitor-interval and sync-interval [1s, 1s]: an L0 file as often as moto takes them (25-35/s here)
    levels: tuple[str, ...] = ("4s", "12s", "36s")  # L1, L2, L3 compaction [30s, 5m, 1h]; each L1 run lists every L0 file
    snapshot: str = "30s"  # L9 snapshot interval [24h]
    snapshot_retention: str = "60s"  # [24h]; also deletes L1-L3 files below the oldest kept snapshot
    l0_retention: str = "150s"  # compacted L0 files kept [5m]: most files present are L0, 150 s of uploads (>= 14/s makes 2,000)
    l0_retention_check: str = "15s"  # [15s]; each check lists every L0 file


BUSY = BusySettings()


def busy_config(db_path: Path, target: Target, settings: BusySettings = BUSY) -> str:
    """litestream 0.5 config for weeks of replica history in about two minutes (keys of cmd/litestream/main.go, 0.5.5-0.5.17)."""
    return (
        f"snapshot:\n  interval: {settings.snapshot}\n  retention: {settings.snapshot_retention}\n"
        f"l0-retention: {settings.l0_retention}\nl0-retention-check-interval: {settings.l0_retention_check}\n"
        "levels:\n"
        + "".join(f"  - interval: {interval}\n" for interval in settings.levels)
        + f"dbs:\n  - path: {db_path}\n    monitor-interval: {settings.tick}\n"
        "    replica:\n" + target.yaml("      ") + f"      sync-interval: {settings.tick}\n"
    )


def plain_config(version: str, db_path: Path, target: Target) -> str:
    """A short-interval config any version reads: 0.3's `replicas:` list, or 0.5's `replica:` with a snapshot every 10 s."""
    if version.startswith("0.3."):
        return (
            f"dbs:\n  - path: {db_path}\n    monitor-interval: 100ms\n    replicas:\n"
            + "      - "
            + target.yaml("        ")[8:]
            + "        sync-interval: 100ms\n        snapshot-interval: 10s\n"
        )
    return (
        "snapshot:\n  interval: 10s\n  retention: 1h\n"
        "levels:\n  - interval: 2s\n  - interval: 10s\n"
        f"dbs:\n  - path: {db_path}\n    monitor-interval: 100ms\n"
        "    replica:\n" + target.yaml("      ") + "      sync-interval: 100ms\n"
    )


@dataclass
class CorpusReplica:
    """A replica made by a real litestream under the workload; `workload` is its oracle."""

    version: str
    url: str
    target: Target
    workload: Workload
    config: str
    seconds: float = field(metadata={"description": "wall-clock seconds to build it"})
    pgid: int = field(default=0, metadata={"description": "litestream's process group, gone once built"})
    log: str = ""


def build_replica(
    version: str,
    binary: Path,
    workdir: Path,
    target: Target,
    *,
    config: Callable[[Path, Target], str],
    seconds: float,
    until: Callable[[], bool] | None = None,
    max_seconds: float | None = None,
    rate: float = 200.0,
    seed: int = 1,
) -> CorpusReplica:
    """Replicate a database under the workload with `binary replicate -config`, then stop the process group.

    The workload writes for `seconds`, and beyond that until `until()` (polled every
    few seconds) holds or `max_seconds` have passed: a loaded machine gets there later.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    db_path = workdir / "app.db"
    workload = Workload(db_path, seed=seed, rate=rate)
    config_text = config(db_path, target)
    config_path = workdir / "litestream.yml"
    config_path.write_text(config_text)
    log_path = workdir / "litestream.log"
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(binary), "replicate", "-config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**litestream_env(), **CREDENTIALS},  # never the caller's AWS_CA_BUNDLE: 0.5 fails every S3 call with it
                start_new_session=True,
            )
    except BaseException:
        workload.close()
        raise
    try:
        workload.start()
        begun = time.monotonic()
        limit = max(seconds, max_seconds or seconds)
        next_poll = begun + seconds
        while process.poll() is None and (now := time.monotonic()) < begun + limit:
            if now >= next_poll:
                if until is None or until():
                    break
                next_poll = now + UNTIL_POLL
            time.sleep(0.2)
        workload.stop()
        if process.poll() is None and not _caught_up(workdir, db_path, target, version):
            time.sleep(SETTLE_SECONDS)
        if process.poll() is not None:
            raise DrillbookError(f"litestream {version} replicate exited {process.returncode} early: {_tail(log_path)}")
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    finally:
        workload.close()
        _kill_group(process)
    return CorpusReplica(
        version=version,
        url=target.url,
        target=target,
        workload=workload,
        config=config_text,
        seconds=round(time.monotonic() - started, 1),
        pgid=process.pid,
        log=_tail(log_path),
    )


def _caught_up(workdir: Path, db_path: Path, target: Target, version: str) -> bool:
    """Wait until the replica holds litestream's newest local L0 file (0.5 only); False where that cannot be told."""
    local = workdir / f".{db_path.name}-litestream" / "ltx" / "0"
    if version.startswith("0.3.") or not local.is_dir():
        return False
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while time.monotonic() < deadline:
        wanted = _max_txid(p.name for p in local.glob("*.ltx"))
        if isinstance(target, S3Target):
            held = _max_txid(key.rsplit("/", 1)[-1] for key in s3_keys(target))
        else:
            held = _max_txid(p.name for p in target.directory.rglob("*.ltx"))
        if wanted and held >= wanted:
            return True
        time.sleep(1.0)
    raise DrillbookError(
        f"litestream {version}'s replica at {target.url} did not catch up within {CATCH_UP_SECONDS:.0f}s after the workload stopped"
    )


def _max_txid(names) -> int:
    """The highest max TXID among LTX file names <min>-<max>.ltx (0 when there are none)."""
    return max((int(name[17:33], 16) for name in names if name.endswith(".ltx") and len(name) == 37), default=0)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the whole group and wait until no member is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    for _ in range(100):
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise DrillbookError(f"litestream's process group {process.pid} is still alive after SIGKILL")


def _tail(path: Path, limit: int = 2000) -> str:
    text = path.read_text(errors="replace").strip()
    return text if len(text) <= limit else "…" + text[-limit:]


BUSY_SECONDS = 165.0  # l0-retention (150 s) and a check: the oldest L0 files are gone by then
BUSY_FILES = 2150  # then write on until this many files are present (the tests ask for 2,000) ...
BUSY_MAX_SECONDS = 260.0  # ... or this long
OTHER_VERSIONS = ("0.3.13", "0.5.5", "0.5.16")


class Corpus:
    """The replicas of one session (one S3 endpoint and bucket), each built on first use and then reused."""

    def __init__(self, endpoint: str, bucket: str, workdir: Path, *, binary: Callable[[str], Path] | None = None):
        self.endpoint = endpoint
        self.bucket = bucket
        self.workdir = Path(workdir)
        self._binary = binary
        self._built: dict[str, CorpusReplica] = {}
        self._lock = threading.Lock()

    def binary(self, version: str) -> Path:
        return (self._binary or litestream_binary)(version)

    def busy(self, version: str = "0.5.17") -> CorpusReplica:
        """A 0.5 replica with thousands of LTX files over L0-L3 and L9, the oldest deleted by retention (on S3)."""
        name = f"busy-{version}"
        target = self._target(name)
        return self._get(
            name,
            version,
            target,
            busy_config,
            BUSY_SECONDS,
            until=lambda: len(s3_keys(target)) >= BUSY_FILES,
            max_seconds=BUSY_MAX_SECONDS,
            rate=30.0,  # about what moto takes in PUTs a second here: more commits only pile up as upload backlog
        )

    def written_by(self, version: str, *, seconds: float = 15.0) -> CorpusReplica:
        """A replica written by litestream VERSION under a smaller workload (on S3); 0.3 writes its generations layout."""
        name = f"plain-{version}"
        return self._get(name, version, self._target(name), lambda db, target: plain_config(version, db, target), seconds, rate=100.0)

    def _target(self, name: str) -> S3Target:
        return S3Target(self.endpoint, self.bucket, f"corpus/{name}/app.db")

    def _get(
        self, name: str, version: str, target: Target, config: Callable[[Path, Target], str], seconds: float, **options
    ) -> CorpusReplica:
        with self._lock:
            if name not in self._built:
                self._built[name] = build_replica(
                    version, self.binary(version), self.workdir / name, target, config=config, seconds=seconds, **options
                )
            return self._built[name]


def s3_client(endpoint: str):
    """A boto3 S3 client with the corpus's own credentials, whatever the environment holds meanwhile."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def s3_keys(target: S3Target) -> list[str]:
    """Every key below the replica's path, relative to it (a boto3 listing)."""
    client = s3_client(target.endpoint)
    prefix = target.path + "/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix)
    return [item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])]
