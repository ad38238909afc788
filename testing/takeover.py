"""Two writers on one replica, made by the real litestream: a restored copy takes over, then the old primary comes back.

    A writes and replicates to PATH; B is restored from PATH while A goes on writing;
    A's litestream and writes stop; B writes and replicates to PATH ("detected database
    behind replica": B continues the TXIDs with a full database of its older state);
    B stops; A writes and replicates again ("behind replica" once more: A's state becomes
    "latest" and B's rows are gone from every later restore).

The TXIDs where each writer took over are read from litestream's own log lines.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import litestream_env
from drillbook.tasks.versions import PINNED, litestream_binary
from drillbook.testing.corpus import S3Target

_BEHIND = re.compile(r'msg="detected database behind replica".*replica_txid=([0-9a-f]{16})')


class Writer:
    """Inserts one row a commit into `t` (who wrote it, when), from a thread, in WAL mode."""

    def __init__(self, path: Path, who: str, rate: float = 20.0):
        self.who, self.rate, self.count = who, rate, 0
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA busy_timeout=10000")
        self.connection.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who TEXT, at REAL, pad BLOB)")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.connection.execute("INSERT INTO t (who, at, pad) VALUES (?, ?, randomblob(300))", (self.who, time.time()))
            self.count += 1
            self._stop.wait(1 / self.rate)

    def write_for(self, seconds: float) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(seconds)
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self.connection.close()


def _config(db: Path, target: S3Target, settings: str = "") -> str:
    return (
        settings + "snapshot:\n  interval: 1h\n  retention: 24h\nlevels:\n  - interval: 5s\n  - interval: 30s\n"
        f"dbs:\n  - path: {db}\n    monitor-interval: 100ms\n    replica:\n" + target.yaml("      ") + "      sync-interval: 100ms\n"
    )


@dataclass
class Replicating:
    """`litestream replicate` of one database, in its own process group, logging to a file."""

    name: str
    db: Path
    target: S3Target
    workdir: Path
    settings: str = ""  # top-level config lines before the rest (`l0-retention: 2s`)
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def __enter__(self) -> Replicating:
        config = self.workdir / f"{self.name}.yml"
        config.write_text(_config(self.db, self.target, self.settings))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(litestream_binary(PINNED)), "replicate", "-config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=litestream_env(),
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc) -> None:
        assert self.process is not None
        time.sleep(1.0)  # a few sync intervals: the last commits reach the replica
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def behind_at(self) -> str:
        """The replica's TXID when this litestream found its database behind it (it continues at the next TXID)."""
        match = _BEHIND.search(self.log.read_text(errors="replace"))
        if match is None:
            raise DrillbookError(f"litestream {self.name} did not log 'detected database behind replica': {self.log}")
        return match.group(1)


@dataclass
class Takeover:
    """The replica two writers left, and where each took over (16-hex TXIDs: the first TXID each wrote)."""

    target: S3Target
    copy_took_over: str
    old_primary_returned: str
    rows: dict[str, int]


def _next(txid: str) -> str:
    return f"{int(txid, 16) + 1:016x}"


def build_takeover(target: S3Target, workdir: Path, *, seconds: float = 4.0) -> Takeover:
    """A replica whose history forks twice (see the module's docstring); each phase writes for about `seconds`."""
    workdir.mkdir(parents=True, exist_ok=True)
    a_path, b_path = workdir / "a.db", workdir / "b.db"
    a = Writer(a_path, "A")
    try:
        with Replicating("a1", a_path, target, workdir):
            a.write_for(seconds)
            restored = subprocess.run(
                [str(litestream_binary(PINNED)), "restore", "-o", str(b_path), target.url],
                capture_output=True,
                text=True,
                env=litestream_env(),
                timeout=120,
            )
            if restored.returncode != 0:
                raise DrillbookError(f"restoring the second writer's copy failed: {restored.stderr.strip()[-300:]}")
            a.write_for(seconds)  # A moves on: B's copy is now older than the replica
        b = Writer(b_path, "B")
        try:
            with Replicating("b", b_path, target, workdir) as b_replicating:
                b.write_for(seconds)
        finally:
            b.close()
        with Replicating("a2", a_path, target, workdir) as a_returning:
            a.write_for(seconds)
    finally:
        a.close()
    return Takeover(
        target=target,
        copy_took_over=_next(b_replicating.behind_at()),
        old_primary_returned=_next(a_returning.behind_at()),
        rows={"A": a.count, "B": b.count},
    )
