"""A real LiteFS cluster on loopback: `litefs mount` nodes, each with its own FUSE mount, data directory and config.

    with litefs_cluster(tmp_path, nodes=2) as cluster:   # node1 the static primary, node2.. replicas
        write(cluster.primary.db("app.db"))              # through FUSE, with sqlite3
        cluster.wait_replicated("app.db")                # every running replica at the primary's TXID
        cluster.stop(cluster.replicas[0])                # SIGTERM: LiteFS unmounts itself
        cluster.start(cluster.replicas[0])               # ready again, catching up from node1
        cluster.switch_primary(cluster.node("node2"))     # the operator's switch: every config names node2

The lease is static (`lease.type: static`): node1 is the `candidate` and
primary; every other node names node1's hostname and `advertise-url` in its
own lease section, which is how a static replica finds its primary (LiteFS's
`StaticLeaser` returns that pair as the primary's info). Static leasing has no
failover and no handoff (a Consul lease would): `switch_primary` rewrites every
config and restarts the nodes, which is how an operator moves a static primary.
A node that wrote as a primary of its own and rejoins is reset to the primary's
snapshot: its own writes are gone, without an error anywhere.

What LiteFS shows, read here (v0.5.14, `fuse/*_node.go`, `http/server.go`):

    <mount>/<db>-pos   "<TXID 16 hex>/<post-apply checksum 16 hex>\\n" on every node
    <mount>/.primary   the primary's hostname, on a replica connected to it (absent on the primary)
    <mount>/.lag       "+0000000013\\n": milliseconds behind the primary (0 on the primary)
    GET /info          {"clusterID", "isPrimary", "candidate", "path", "primary": {"hostname"}}
    <data>/dbs/<db>/ltx/<min>-<max>.ltx   the transactions a node holds, readable while it is stopped

A write on a replica fails in SQLite: `attempt to write a readonly database`
(SQLITE_READONLY_DIRECTORY: LiteFS refuses the rollback journal with EACCES) in
the rollback journal modes, `disk I/O error` (SQLITE_IOERR_WRITE) in WAL mode;
LiteFS logs "read only replica" either way.

Each node runs in a process group of its own and gets SIGTERM if the test
process dies (it then unmounts itself); `close` stops every node and unmounts
whatever is still mounted with `fusermount3 -u`, on failure too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litefs_bin import check_fuse, find_litefs

HOST = "127.0.0.1"  # the drill cluster never leaves loopback


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


READY_LINE = "connected to cluster, ready"
START_TIMEOUT = 30.0  # seconds for a node to mount and reach the cluster (well under 1 s on loopback)
STOP_GRACE = 10.0  # seconds a node has after SIGTERM to unmount itself before SIGKILL
PROBE_DB = "drillbook-ready.db"
_LTX = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


class ClusterUnavailable(DrillbookError):
    """A LiteFS node did not start or a cluster did not become ready; the message has the node's last log lines."""


@dataclass(frozen=True)
class Position:
    """A database's replication position on one node: LiteFS's `<db>-pos` file."""

    txid: int
    checksum: str

    @classmethod
    def parse(cls, text: str) -> Position:
        txid, _, checksum = text.strip().partition("/")
        return cls(int(txid, 16), checksum)


@dataclass
class Node:
    """One `litefs mount`: its directories, ports and, while it runs, its process."""

    name: str
    root: Path
    http_port: int
    candidate: bool
    proxy_port: int | None = None  # LiteFS's HTTP proxy, in front of the application on app_port
    app_port: int | None = None  # where this node's application listens (the test starts it), the proxy's target
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float | None = None
    ready_seconds: float | None = None  # from the start of `litefs mount` to READY_LINE, last start
    log_offset: int = 0  # where the last start's lines begin in `log`

    @property
    def mount(self) -> Path:
        return self.root / "mnt"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "litefs.yml"

    @property
    def log(self) -> Path:
        return self.root / "litefs.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def proxy_url(self) -> str | None:
        return None if self.proxy_port is None else f"http://{HOST}:{self.proxy_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def db(self, name: str) -> Path:
        """The database's path in this node's FUSE mount (what the application opens)."""
        return self.mount / name

    def position(self, db: str) -> Position | None:
        """The `<db>-pos` file through FUSE; None when the node has no such database yet (or is not mounted)."""
        try:
            return Position.parse((self.mount / f"{db}-pos").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def stored_txid(self, db: str) -> int:
        """The newest TXID among the LTX files in the data directory: readable while the node is stopped (0 when none)."""
        ltx = self.data / "dbs" / db / "ltx"
        found = [int(m.group(2), 16) for p in (ltx.iterdir() if ltx.is_dir() else ()) if (m := _LTX.match(p.name))]
        return max(found, default=0)

    def primary_hostname(self) -> str | None:
        """The `.primary` file: the primary's hostname on a connected replica, None on the primary (or with no primary)."""
        try:
            return (self.mount / ".primary").read_text().strip()
        except FileNotFoundError:
            return None

    def lag_ms(self) -> int:
        """The `.lag` file: milliseconds this node is behind the primary as LiteFS sees it."""
        return int((self.mount / ".lag").read_text().strip())

    def info(self, timeout: float = 5.0) -> dict:
        """LiteFS's `GET /info` for this node."""
        with urllib.request.urlopen(f"{self.url}/info", timeout=timeout) as response:
            return json.loads(response.read())

    def log_text(self, last: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-last:])
        except FileNotFoundError:
            return "(no log)"


def node_config(node: Node, primary: Node, *, proxy_db: str | None = None) -> str:
    """The YAML a node mounts with (JSON is YAML): static lease on `primary`, HTTP API and, with `proxy_db`, the HTTP proxy
    (TXID tracking on that database) in front of the node's application, all on loopback."""
    config: dict = {
        "exit-on-error": False,  # a validation problem is logged, not a restart loop
        "fuse": {"dir": str(node.mount)},
        "data": {"dir": str(node.data)},
        "http": {"addr": f"{HOST}:{node.http_port}"},
        "lease": {
            "type": "static",
            "candidate": node is primary,
            # A static replica reaches the primary through these two: they name the primary on every node.
            "hostname": primary.name,
            "advertise-url": primary.url,
        },
    }
    if proxy_db is not None and node.proxy_port is not None:
        config["proxy"] = {"addr": f"{HOST}:{node.proxy_port}", "target": f"{HOST}:{node.app_port}", "db": proxy_db}
    return json.dumps(config, indent=2) + "\n"


def _litefs_child() -> None:
    """In a node's child before exec: SIGTERM when the test process dies (LiteFS then unmounts itself)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def mounted(path: Path) -> bool:
    """Whether `path` is a mount point now (from /proc/self/mountinfo: no stat, which hangs on a stuck FUSE mount)."""
    target = str(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4].replace("\\040", " ") == target for line in info)


def unmount(path: Path) -> None:
    """`fusermount3 -u`, and a lazy `-uz` when the mount is busy; nothing when it is not mounted."""
    for argv in (["fusermount3", "-u", str(path)], ["fusermount3", "-uz", str(path)]):
        if not mounted(path):
            return
        subprocess.run(argv, capture_output=True, timeout=30)


class LiteFSCluster:
    """Nodes node1..nodeN of one static-lease cluster under `workdir`; node1 is the primary."""

    def __init__(
        self, workdir: Path, *, nodes: int = 2, binary: Path | None = None, proxy_db: str | None = None, names: list[str] | None = None
    ):
        names = names or [f"node{i}" for i in range(1, nodes + 1)]  # the first is the primary
        if not names:
            raise ValueError("a cluster has at least one node")
        check_fuse()
        self.binary = Path(binary) if binary is not None else find_litefs()
        self.workdir = Path(workdir)
        self.nodes = [
            Node(
                name,
                self.workdir / name,
                free_port(),
                candidate=i == 0,
                proxy_port=free_port() if proxy_db else None,
                app_port=free_port() if proxy_db else None,
            )
            for i, name in enumerate(names)
        ]
        self.proxy_db = proxy_db
        for node in self.nodes:
            node.mount.mkdir(parents=True, exist_ok=True)
            node.data.mkdir(parents=True, exist_ok=True)
        self.assign_primary(self.nodes[0])

    @property
    def primary(self) -> Node:
        return self._primary

    @property
    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n is not self._primary]

    def assign_primary(self, primary: Node) -> None:
        """Write every node's config with `primary` as the static lease's primary (the only candidate): the operator's
        switch under a static lease, which has no election and no handoff. A running node reads it on its next start."""
        self._primary = primary
        for node in self.nodes:
            node.candidate = node is primary
            node.config.write_text(node_config(node, primary, proxy_db=self.proxy_db))

    def switch_primary(self, primary: Node, *, timeout: float = START_TIMEOUT) -> float:
        """Stop every node, make `primary` the static primary, start it and then the replicas that were running; the old
        primary stays stopped (`start` brings it back, as a replica). Seconds from the old primary's stop until the new one is ready."""
        old = self._primary
        running = [n for n in self.nodes if n.running and n is not primary and n is not old]
        started = time.monotonic()
        for node in [old, *running, primary]:
            self.stop(node)
        self.assign_primary(primary)
        self.start(primary, timeout=timeout)
        switched = time.monotonic() - started
        for node in running:
            self.start(node, timeout=timeout)
        return switched

    def start_as_it_was(self, node: Node, *, timeout: float = START_TIMEOUT) -> None:
        """Start `node` with a lease naming itself the primary, as a machine that reboots before its configuration changed:
        under a static lease nothing fences it, and it takes writes beside the real primary."""
        node.config.write_text(node_config(node, node, proxy_db=self.proxy_db))
        self.start(node, timeout=timeout)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start_all(self, *, probe: bool = True, timeout: float = START_TIMEOUT) -> float:
        """Start every node (primary first) and wait until all are ready; with `probe`, until a write on the
        primary is seen on every replica too. Returns the seconds it took."""
        started = time.monotonic()
        # The primary first: a replica that finds its HTTP port closed waits out LiteFS's reconnect delay (1 s).
        self.start(self.primary, timeout=timeout)
        for node in self.replicas:
            self.start(node, wait=False)
        for node in self.replicas:
            self.wait_ready(node, timeout)
        if probe:
            self.probe(timeout)
        return time.monotonic() - started

    def start(self, node: Node, *, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        """`litefs mount -config <node>/litefs.yml` in a process group of its own; with `wait`, until it is ready."""
        if node.running:
            raise ClusterUnavailable(f"{node.name} is already running (pid {node.process.pid})")
        unmount(node.mount)  # a mount a killed node left behind ("Transport endpoint is not connected")
        with open(node.log, "a") as log:
            log.write(f"--- drillbook: start {time.strftime('%H:%M:%S')} ---\n")
            log.flush()
            node.log_offset = log.tell()
            node.started_at = time.monotonic()
            node.ready_seconds = None
            node.process = subprocess.Popen(
                [str(self.binary), "mount", "-config", str(node.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.root,
                env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(node.root)},
                start_new_session=True,
                preexec_fn=_litefs_child,
            )
        if wait:
            self.wait_ready(node, timeout)

    def wait_ready(self, node: Node, timeout: float = START_TIMEOUT) -> float:
        """Until the node logged READY_LINE since its start and its mount is there; seconds since its start."""
        deadline = time.monotonic() + timeout
        while True:
            if node.process is None or node.process.poll() is not None:
                code = None if node.process is None else node.process.returncode
                raise ClusterUnavailable(f"litefs {node.name} exited ({code}) while starting:\n{node.log_text()}")
            with open(node.log, errors="replace") as log:
                log.seek(node.log_offset)
                ready = READY_LINE in log.read()
            if ready and mounted(node.mount):
                node.ready_seconds = time.monotonic() - (node.started_at or time.monotonic())
                return node.ready_seconds
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"litefs {node.name} was not ready within {timeout:g}s:\n{node.log_text()}")
            time.sleep(0.05)

    def probe(self, timeout: float = START_TIMEOUT) -> float:
        """Write a row on the primary (PROBE_DB) and wait until every running replica has it; the seconds that took."""
        connection = sqlite3.connect(self.primary.db(PROBE_DB), isolation_level=None, timeout=10)
        try:
            connection.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
            connection.execute("INSERT INTO probe (at) VALUES (?)", (time.time(),))
        finally:
            connection.close()
        return self.wait_replicated(PROBE_DB, timeout)

    def wait_replicated(self, db: str, timeout: float = 10.0) -> float:
        """Until every running replica's position equals the primary's; the seconds that took."""
        started = time.monotonic()
        while True:
            target = self.primary.position(db)
            behind = [n.name for n in self.replicas if n.running and (target is None or n.position(db) != target)]
            if not behind:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                seen = {n.name: n.position(db) for n in self.replicas if n.running}
                raise ClusterUnavailable(f"{db}: {', '.join(behind)} not at the primary's {target} within {timeout:g}s (seen {seen})")
            time.sleep(0.01)

    def stop(self, node: Node, *, hard: bool = False, grace: float = STOP_GRACE) -> None:
        """Stop a node: SIGTERM (LiteFS unmounts itself) and SIGKILL after `grace`; `hard` is SIGKILL at once (a crash).
        Its process group is gone and its mount unmounted when this returns."""
        process = node.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
                os.killpg(process.pid, signal.SIGCONT)  # a node someone paused (SIGSTOP) handles its SIGTERM now
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever it left in its group
            process.wait()
            node.process = None
        unmount(node.mount)

    def restart(self, node: Node, *, hard: bool = False, timeout: float = START_TIMEOUT) -> float:
        """Stop and start a node again (its data directory kept); seconds from its start until ready."""
        self.stop(node, hard=hard)
        self.start(node, timeout=timeout)
        return node.ready_seconds or 0.0

    def close(self) -> None:
        """Stop every node (replicas first) and unmount every mount; errors in one node do not spare the others."""
        errors = []
        for node in reversed(self.nodes):
            try:
                self.stop(node)
            except Exception as exc:  # noqa: BLE001 - every node is stopped; the first error is raised after
                errors.append(exc)
            with contextlib.suppress(Exception):
                unmount(node.mount)
        if errors:
            raise errors[0]


@contextlib.contextmanager
def litefs_cluster(workdir: Path, *, nodes: int = 2, binary: Path | None = None, probe: bool = True, **options) -> Iterator[LiteFSCluster]:
    """A started, ready cluster for the block; every node stopped and unmounted after it, on failure too."""
    cluster = LiteFSCluster(workdir, nodes=nodes, binary=binary, **options)
    try:
        cluster.start_all(probe=probe)
        yield cluster
    finally:
        cluster.close()
