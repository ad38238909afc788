"""The application behind LiteFS's HTTP proxy in the tests: one tiny HTTP server per node, on the node's `app_port`.

    POST /orders/<id>   inserts order <id> into the node's <db> through its FUSE mount: 201, or 503 with SQLite's error
    GET  /orders        "<node> <count> <max id>": what this node's copy holds

Ids come from the caller, so the caller keeps the oracle (which writes it was
told succeeded) and can check any node against it.

What LiteFS's proxy does in front of it (v0.5.14, `http/proxy_server.go`):
a write (any method but GET / HEAD) on the primary reaches the application and
the answer carries a `__txid` cookie; a GET with that cookie on a replica waits
until the replica has that TXID (5 s, then 504); a write on a replica never
reaches the application: the proxy answers **200 with an empty body** and a
`Fly-Replay: instance=<primary hostname>` header, which only Fly.io's edge acts
on. Off Fly, a client that reads only the status would count that write as
done: it must see `Fly-Replay` as "not written, send it to that primary".
"""

from __future__ import annotations

import contextlib
import http.server
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from drillbook.tasks.litefs.cluster import HOST, Node


@dataclass(frozen=True)
class Answer:
    """One HTTP answer through a proxy."""

    status: int
    body: str
    replay: str | None  # the Fly-Replay header: the write was not done, the proxy names the primary
    cookie: str | None  # the __txid cookie LiteFS set, as a Cookie header value

    @property
    def written(self) -> bool:
        return self.status == 201 and self.replay is None


def _handler(node: Node, db: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Orders(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the tests assert on answers
            pass

        def _send(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            order = int(self.path.rsplit("/", 1)[-1])
            try:
                connection = sqlite3.connect(node.db(db), isolation_level=None, timeout=5)
                try:
                    connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, node TEXT)")
                    connection.execute("INSERT INTO orders (id, node) VALUES (?, ?)", (order, node.name))
                finally:
                    connection.close()
            except sqlite3.Error as exc:
                self._send(503, f"{node.name}: {exc}\n")
                return
            self._send(201, f"{node.name} wrote {order}\n")

        def do_GET(self) -> None:
            try:
                connection = sqlite3.connect(f"file:{node.db(db)}?mode=ro", uri=True, timeout=5)
                try:
                    count, top = connection.execute("SELECT count(*), coalesce(max(id), 0) FROM orders").fetchone()
                finally:
                    connection.close()
            except sqlite3.Error as exc:
                self._send(503, f"{node.name}: {exc}\n")
                return
            self._send(200, f"{node.name} {count} {top}\n")

    return Orders


@contextlib.contextmanager
def node_apps(nodes: list[Node], db: str) -> Iterator[None]:
    """The application on every node's `app_port` (a thread each) for the block."""
    servers = []
    try:
        for node in nodes:
            if node.app_port is None:
                raise ValueError(f"{node.name} has no app_port: start the cluster with proxy_db")
            server = http.server.ThreadingHTTPServer((HOST, node.app_port), _handler(node, db))
            threading.Thread(target=server.serve_forever, name=f"app-{node.name}", daemon=True).start()
            servers.append(server)
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def call(node: Node, method: str, path: str, *, cookie: str | None = None, timeout: float = 10.0) -> Answer:
    """One request to the node's LiteFS proxy."""
    request = urllib.request.Request(f"{node.proxy_url}{path}", method=method, data=b"" if method != "GET" else None)
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    set_cookie = headers.get("Set-Cookie")
    return Answer(status, body.decode(errors="replace"), headers.get("Fly-Replay"), set_cookie.split(";", 1)[0] if set_cookie else None)
