"""The drill's application on a LiteFS cluster: a writer with the retry rule an application is given, and node probes.

The writer inserts one numbered row at a time (`_drillbook_litefs(seq, at)`) into
the node it takes for the primary, straight through that node's FUSE mount, and
keeps its own oracle: every write it sent, when, where it was acknowledged, how
many attempts it took and the errors it saw. An error LiteFS or SQLite gives
while there is no primary, or the node is not the primary, is one the
application is told to retry on (RETRY_ON); the writer then asks the nodes which
is primary (their `/metrics`) and tries again until `retry_for` has passed.

Nodes are read over HTTP (`GET /metrics`: `litefs_db_txid`, `litefs_is_primary`)
with a timeout, never through FUSE, so a paused or dead node is "not answering",
never a hung drill. The copy is opened `mode=rw`, never `rwc`: on a node whose
mount is gone the database is missing, and a write must fail rather than
create a new file in the bare directory.
"""

from __future__ import annotations

import contextlib
import http.client
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from drillbook.tasks.litefs.cluster import Node

TABLE = "_drillbook_litefs"
# The errors an application is told to retry on: the node is a replica (rollback journal / WAL), its mount is gone
# (the node stopped or crashed), or the database is busy while LiteFS changes hands.
RETRY_ON = (
    "attempt to write a readonly database",
    "disk I/O error",
    "unable to open database file",
    "database is locked",
    "transport endpoint is not connected",
)
PROBE_TIMEOUT = 0.5  # seconds for a node's /metrics on loopback (it answers in about a millisecond)


def retryable(error: str) -> bool:
    return any(marker.lower() in error.lower() for marker in RETRY_ON)


@dataclass(frozen=True)
class NodeState:
    """What one node said over HTTP at one moment; `answered` False when it did not answer in time."""

    answered: bool
    txid: int | None = None
    primary: bool = False


def node_state(node: Node, db: str, timeout: float = PROBE_TIMEOUT) -> NodeState:
    try:
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException):  # refused, timed out, cut off mid-answer
        return NodeState(answered=False)
    txid, primary = None, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "litefs_db_txid" and sample.labels.get("db") == db:
                txid = int(sample.value)
            elif sample.name == "litefs_is_primary":
                primary = sample.value >= 1
    return NodeState(answered=True, txid=txid, primary=primary)


def cluster_states(nodes: list[Node], db: str, pool: ThreadPoolExecutor) -> dict[str, NodeState]:
    """Every node asked at once: one slow node costs the round its timeout, not the others' answers."""
    futures = {node.name: pool.submit(node_state, node, db) for node in nodes}
    return {name: future.result() for name, future in futures.items()}


def _connect(node: Node, db: str, timeout: float, mode: str) -> sqlite3.Connection:
    """The database in the node's mount: `rw` (never `rwc`: a gone mount must fail, not create a file) or `ro`."""
    return sqlite3.connect(f"file:{quote(str(node.db(db)))}?mode={mode}", uri=True, timeout=timeout, isolation_level=None)


def create_table(node: Node, db: str, timeout: float) -> None:
    with contextlib.closing(_connect(node, db, timeout, "rw")) as connection:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY, at REAL NOT NULL)")


def insert(node: Node, db: str, seq: int, timeout: float) -> None:
    with contextlib.closing(_connect(node, db, timeout, "rw")) as connection:
        connection.execute(f"INSERT INTO {TABLE} (seq, at) VALUES (?, ?)", (seq, time.time()))


def present(node: Node, db: str, timeout: float) -> set[int]:
    """The writes a node holds (read-only)."""
    with contextlib.closing(_connect(node, db, timeout, "ro")) as connection:
        return {row[0] for row in connection.execute(f"SELECT seq FROM {TABLE}")}


@dataclass
class Write:
    """One write the application sent: acknowledged (where, after how many attempts) or given up with its last error."""

    seq: int
    sent: float  # time.monotonic()
    acked: float | None = None
    node: str | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # distinct errors seen on the way, in order

    @property
    def error(self) -> str | None:
        return None if self.acked is not None or not self.errors else self.errors[-1]


class Writer(threading.Thread):
    """Writes `rate` rows a second to the primary until stopped, retrying on RETRY_ON for up to `retry_for` seconds a write."""

    def __init__(self, nodes: list[Node], target: Node, db: str, *, rate: float, retry_for: float, timeout: float):
        super().__init__(name="drillbook-litefs-writer", daemon=True)
        self.nodes, self.target, self.db = nodes, target, db
        self.interval, self.retry_for, self.timeout = 1.0 / rate, retry_for, timeout
        self.writes: list[Write] = []
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def stop(self, timeout: float = 30.0) -> None:
        self._halt.set()
        self.join(timeout)

    def run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._halt.is_set():
            seq += 1
            write = self._write(seq)
            with self.lock:
                self.writes.append(write)
            next_at += self.interval
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def snapshot(self) -> list[Write]:
        with self.lock:
            return list(self.writes)

    def _write(self, seq: int) -> Write:
        write = Write(seq=seq, sent=time.monotonic())
        deadline = write.sent + self.retry_for
        while True:
            write.attempts += 1
            node = self.target
            try:
                insert(node, self.db, seq, self.timeout)
            except sqlite3.Error as exc:
                error = str(exc)
                if error not in write.errors:
                    write.errors.append(error)
                if not retryable(error) or time.monotonic() > deadline or self._halt.is_set():
                    return write
                self.target = self._find_primary() or node
                time.sleep(0.05)
                continue
            write.acked, write.node = time.monotonic(), node.name
            return write

    def _find_primary(self) -> Node | None:
        """The node that says it is primary (the current target first: a second primary is the drill's finding, not the writer's choice)."""
        for node in sorted(self.nodes, key=lambda n: n is not self.target):
            if node.running and node_state(node, self.db).primary:
                return node
        return None
