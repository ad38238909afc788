"""A loopback HTTP proxy in front of an S3 server that injects faults per request type.

The fault corpus (tests/test_faults.py) puts this between litestream / boto3 and
moto's S3 server: the replica URL names the proxy as its endpoint, the proxy
forwards to moto, unless a rule says otherwise for that kind of request:

    with FaultProxy(s3_endpoint) as proxy:
        proxy.fail("get", "500")                 # every object GET answers 500
        proxy.fail("get", "stall", after=1)      # the first GET passes, later ones hang
        proxy.fail("get", "slow", rate=20_000)   # bodies trickle at 20 kB/s
        proxy.fail("get", "503", first_try=True) # each object's first GET answers 503 SlowDown, its retry passes (throttling)
        url = s3_replica_url(proxy.url, "drills", key)

Kinds: list (a bucket listing), get (an object GET, ranged or not), head, put,
delete, other. Actions: 500, 503, 403 (S3 XML error bodies), stall (never answer
until the proxy stops), slow (forward, then send the body at `rate` bytes a
second), reset (close the connection with a TCP RST), drop (answer 200 with an
ETag and store nothing: a gateway that acknowledges writes it loses). Loopback only; optional
TLS with a caller's certificate (the private-CA test).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = ("list", "get", "head", "put", "delete", "other")
ACTIONS = ("500", "503", "403", "stall", "slow", "reset", "drop")

_ERROR_BODIES = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
    "403": ("AccessDenied", "Access Denied"),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade", "content-length"}


@dataclass
class Rule:
    action: str
    after: int = 0  # this many requests of the kind pass first
    rate: int = 0  # bytes per second, for "slow"
    first_try: bool = False  # only each path's first request meets the action; a retry of it passes (throttling backoff gets through)
    tried: set[str] = field(default_factory=set)
    seen: int = 0


@dataclass
class Seen:
    kind: str
    method: str
    path: str
    outcome: str  # "passed" or the action applied


@dataclass
class _State:
    upstream: tuple[str, int]
    rules: dict[str, Rule] = field(default_factory=dict)
    log: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def request_kind(method: str, path: str) -> str:
    """What an S3 request does, from its method and path-style URL (/bucket/key?query)."""
    parts = urlsplit(path)
    segments = [s for s in parts.path.split("/") if s]
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET":
        if len(segments) <= 1 or "list-type" in query:
            return "list"
        return "get"
    return {"HEAD": "head", "PUT": "put", "DELETE": "delete"}.get(method, "other")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass per proxy

    def log_message(self, format: str, *args) -> None:  # quiet: the log list is the record
        pass

    def _handle(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (killed, timed out): nothing to answer
            self.close_connection = True

    def _answer(self) -> None:
        kind = request_kind(self.command, self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.state.lock:
            rule = self.state.rules.get(kind)
            action = None
            if rule is not None:
                rule.seen += 1
                if rule.seen > rule.after and not (rule.first_try and self.path in rule.tried):
                    action = rule.action
                    rule.tried.add(self.path)
            self.state.log.append(Seen(kind, self.command, self.path, action or "passed"))
        if action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if action == "stall":
            self.state.stopping.wait()
            self.close_connection = True
            return
        if action == "drop":
            self.send_response(200)
            self.send_header("ETag", '"d41d8cd98f00b204e9800998ecf8427e"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action in _ERROR_BODIES:
            code, message = _ERROR_BODIES[action]
            payload = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'.encode()
            self.send_response(int(action))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        status, headers, payload = self._forward(body)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if action == "slow" and rule is not None and rule.rate > 0:
            step = max(1, rule.rate // 10)
            for start in range(0, len(payload), step):
                if self.state.stopping.is_set():
                    return
                self.wfile.write(payload[start : start + step])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.state.upstream
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "proxy-connection")}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class FaultProxy:
    """The proxy; a context manager. `url` is its endpoint for a replica URL."""

    def __init__(self, upstream: str, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        parts = urlsplit(upstream)
        self._state = _State(upstream=(parts.hostname or "127.0.0.1", parts.port or 80))
        handler = type("FaultHandler", (_Handler,), {"state": self._state})
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    def fail(self, kind: str, action: str, *, after: int = 0, rate: int = 0, first_try: bool = False) -> None:
        if kind not in KINDS or action not in ACTIONS:
            raise ValueError(f"kind must be one of {KINDS}, action one of {ACTIONS}; got {kind!r}, {action!r}")
        with self._state.lock:
            self._state.rules[kind] = Rule(action=action, after=after, rate=rate, first_try=first_try)

    def heal(self, kind: str | None = None) -> None:
        with self._state.lock:
            if kind is None:
                self._state.rules.clear()
            else:
                self._state.rules.pop(kind, None)

    def seen(self, kind: str | None = None) -> list[Seen]:
        with self._state.lock:
            return [s for s in self._state.log if kind is None or s.kind == kind]

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.stopping.set()  # stalled handlers return
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
