"""A write workload and its oracle: which commit a restored copy equals, or why it equals none.

A `Workload` writes to a SQLite database in WAL mode (inserts, updates and
deletes in three tables, one `seq` row per commit with the commit's wall-clock
time). Every commit is drawn from a seeded generator, so the database's exact
content after any commit is replayed in memory: `Workload.identify(copy)`.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from drillbook.tasks.errors import DrillbookError

ACCOUNTS = 40
_SCHEMA = (
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)",
    "CREATE TABLE events (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL)",
    "CREATE INDEX events_account ON events(account_id)",
    "CREATE TABLE seq (n INTEGER PRIMARY KEY, committed_at REAL NOT NULL)",
)
_TABLES = {"accounts": "id", "events": "id", "seq": "n"}


@dataclass(frozen=True)
class Commit:
    """One committed transaction of the workload: its number (0 is the schema) and wall-clock time (epoch seconds)."""

    n: int
    at: float


def _apply(connection: sqlite3.Connection, seed: int, n: int, at: float) -> None:
    """Commit n's statements (not the COMMIT): the same for the live database and the oracle's replay."""
    rng = random.Random(seed * 1_000_003 + n)
    if n == 0:
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.executemany(
            "INSERT INTO accounts (id, owner, balance) VALUES (?, ?, ?)", [(i, f"owner-{i}", 1000) for i in range(1, ACCOUNTS + 1)]
        )
    else:
        for _ in range(rng.randint(1, 3)):
            connection.execute(
                "INSERT INTO events (account_id, kind, payload) VALUES (?, ?, ?)",
                (rng.randint(1, ACCOUNTS), rng.choice(("deposit", "withdrawal", "note")), rng.randbytes(rng.randint(40, 600)).hex()),
            )
        for _ in range(rng.randint(1, 2)):
            connection.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (rng.randint(-50, 50), rng.randint(1, ACCOUNTS)))
        if rng.random() < 0.4:
            connection.execute("DELETE FROM events WHERE id = (SELECT min(id) FROM events)")
        if rng.random() < 0.1:
            connection.execute("DELETE FROM events WHERE account_id = ? AND kind = 'note'", (rng.randint(1, ACCOUNTS),))
    connection.execute("INSERT INTO seq (n, committed_at) VALUES (?, ?)", (n, at))


def content_digest(connection: sqlite3.Connection) -> str:
    """sha256 over every row of the workload's tables, in key order."""
    digest = hashlib.sha256()
    for table, key in _TABLES.items():
        for row in connection.execute(f"SELECT * FROM {table} ORDER BY {key}"):
            digest.update(repr(row).encode())
    return digest.hexdigest()


class Workload:
    """Writes commits to `path` (WAL mode) from a thread, at most `rate` per second, and keeps the oracle of them."""

    def __init__(self, path: Path, *, seed: int = 1, rate: float = 200.0):
        self.path = Path(path)
        self.seed = seed
        self.rate = rate
        self.commits: list[Commit] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA busy_timeout=10000")
        self.commit()  # the schema exists before anyone replicates the file

    def commit(self) -> Commit:
        """Write the next commit; a busy database (litestream checkpointing) is waited for by busy_timeout."""
        n = len(self.commits)
        at = time.time()
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            _apply(self._connection, self.seed, n, at)
            self._connection.execute("COMMIT")
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        done = Commit(n, at)
        self.commits.append(done)
        return done

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="corpus-workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing; a failure of the writer thread is raised here."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise DrillbookError(f"the corpus workload on {self.path} failed after commit {len(self.commits) - 1}: {self._error!r}")

    def close(self) -> None:
        self.stop()
        self._connection.close()

    def _run(self) -> None:
        pause = 1.0 / self.rate
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.commit()
                self._stop.wait(max(0.0, pause - (time.monotonic() - started)))
        except BaseException as error:  # raised to the caller by stop()
            self._error = error

    @property
    def newest(self) -> Commit:
        return self.commits[-1]

    def digest_after(self, n: int) -> str:
        """The content digest of the database right after commit n, replayed in memory from the seed and the recorded times."""
        replay = sqlite3.connect(":memory:", isolation_level=None)
        try:
            for commit in self.commits[: n + 1]:
                replay.execute("BEGIN")
                _apply(replay, self.seed, commit.n, commit.at)
                replay.execute("COMMIT")
            return content_digest(replay)
        finally:
            replay.close()

    def identify(self, copy: Path) -> Commit:
        """The commit a (restored) copy of the database equals; DrillbookError saying why when it equals none."""
        connection = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            (n,) = connection.execute("SELECT max(n) FROM seq").fetchone()
            digest = content_digest(connection)
        except sqlite3.Error as error:
            raise DrillbookError(f"{copy} cannot be read as the workload's database: {error}") from None
        finally:
            connection.close()
        if n is None or not 0 <= n < len(self.commits):
            raise DrillbookError(f"{copy} has seq {n}, but the workload committed 0..{len(self.commits) - 1}")
        if digest != self.digest_after(n):
            raise DrillbookError(f"{copy} has seq {n}, but its rows differ from the workload's state after commit {n}")
        return self.commits[n]

    def commit_at(self, when: float) -> Commit | None:
        """The newest commit made at or before `when` (epoch seconds)."""
        found = None
        for commit in self.commits:
            if commit.at > when:
                break
            found = commit
        return found


# --- replicas -------------------------------------------------------------------------------------------------------
