"""A Slack stand-in on loopback: the Web API methods drillbook uses, recording every request.

Speaks `auth.test`, `chat.postMessage`, `files.getUploadURLExternal`, the
upload URL it hands out, `files.completeUploadExternal`, and an incoming
webhook (`/services/...`). It can be told to answer the next requests with a
429 and Retry-After, a 500, `invalid_auth`, `channel_not_found`, or to hang.
`drillbook demo --slack-preview` and the tests point slack-sdk at it with
`base_url`; it never talks to the network.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

FAULTS = ("ratelimit", "server_error", "html_error", "invalid_auth", "channel_not_found", "hang", "down")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def api_method(self) -> str:
        return self.path.split("/api/", 1)[-1].split("?")[0] if "/api/" in self.path else self.path

    @property
    def params(self) -> dict[str, Any]:
        """The body as Slack reads it: JSON or form fields (JSON-valued fields decoded)."""
        text = self.body.decode("utf-8", "replace")
        if self.headers.get("content-type", "").startswith("application/json"):
            return json.loads(text or "{}")
        params: dict[str, Any] = dict(parse_qsl(urlsplit(self.path).query))
        params.update(parse_qsl(text))
        for key in ("blocks", "files"):
            if isinstance(params.get(key), str) and params[key][:1] in "[{":
                params[key] = json.loads(params[key])
        return params

    def raw(self) -> str:
        """Everything the request carried, as one string to scan."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return f"{self.method} {self.path}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


@dataclass
class Fault:
    kind: str
    count: int
    method: str | None = None  # only requests to this API method (None: any)


@dataclass
class SlackStandIn:
    """Start with `with SlackStandIn() as slack:`; `slack.api_url` is the base URL for WebClient."""

    token: str | None = None  # when set, any other bearer token gets invalid_auth
    channels: dict[str, str] = field(default_factory=lambda: {"#drills": "C0DRILLS", "#nightly": "C0NIGHTLY", "#orders-team": "C0ORDERS"})
    retry_after: int = 1
    hang_seconds: float = 10.0
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._files: dict[str, dict[str, Any]] = {}
        self._release = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------
    def fail(self, kind: str, count: int = 1, *, method: str | None = None) -> None:
        """The next `count` matching requests get fault `kind` (one of FAULTS)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.append(Fault(kind, count, method))

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()
        self._release.set()

    # -- what was received ---------------------------------------------------
    def calls(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.api_method == method]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """chat.postMessage payloads that were accepted (with the ts and channel ID they got)."""
        return [
            {**r.params, "ts": r.ts, "channel_id": r.channel_id}  # type: ignore[attr-defined]
            for r in self.requests
            if r.api_method == "chat.postMessage" and getattr(r, "accepted", False)
        ]

    @property
    def webhook_messages(self) -> list[dict[str, Any]]:
        return [r.params for r in self.requests if r.path.startswith("/services/") and getattr(r, "accepted", False)]

    @property
    def files(self) -> list[dict[str, Any]]:
        """Completed uploads: filename, title, content, channel_id, thread_ts."""
        return [f for f in self._files.values() if f.get("completed")]

    @property
    def api_url(self) -> str:
        assert self.server is not None, "start the stand-in first"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/"

    @property
    def webhook_url(self) -> str:
        return self.api_url.replace("/api/", "/services/T0DRILL/B0DRILL/standin")

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> SlackStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: the requests are recorded instead
                pass

            def do_POST(self) -> None:
                standin._handle(self)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="slack-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the protocol --------------------------------------------------------
    def _take_fault(self, method: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.method in (None, method):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault.kind
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length),
        )
        with self._lock:
            self.requests.append(request)
        method = request.api_method
        fault = self._take_fault(method)
        if fault == "hang":
            self._release.wait(self.hang_seconds)
            return self._send(handler, 200, {"ok": False, "error": "request_timeout"})
        if fault == "down":
            handler.close_connection = True
            handler.connection.close()
            return None
        if fault == "ratelimit":
            return self._send(handler, 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.retry_after)})
        if fault == "server_error":
            return self._send(handler, 500, {"ok": False, "error": "internal_error"})
        if fault == "html_error":  # what a proxy or load balancer in front of Slack answers
            page = (
                "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n"
            )
            return self._send(handler, 502, page, {"Content-Type": "text/html"})
        if fault in ("invalid_auth", "channel_not_found"):
            return self._send(handler, 200, {"ok": False, "error": fault})
        if request.path.startswith("/services/"):
            request.accepted = True  # type: ignore[attr-defined]
            return self._send(handler, 200, "ok")
        if request.path.startswith("/upload/"):
            file_id = request.path.rsplit("/", 1)[-1]
            if file_id not in self._files:
                return self._send(handler, 404, "unknown upload")
            self._files[file_id]["content"] = request.body.decode("utf-8", "replace")
            self._files[file_id]["raw"] = request.body  # binary uploads (a chart PNG) as sent
            return self._send(handler, 200, f"OK - {length}")
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return self._send(handler, 200, {"ok": False, "error": "invalid_auth"})
        params = request.params
        if method == "auth.test":
            return self._send(handler, 200, {"ok": True, "team": "drillbook", "user": "drillbook", "bot_id": "B0DRILL"})
        if method == "chat.postMessage":
            channel = self._channel(params.get("channel"))
            if channel is None:
                return self._send(handler, 200, {"ok": False, "error": "channel_not_found"})
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            request.accepted = True  # type: ignore[attr-defined]
            request.ts = ts  # type: ignore[attr-defined]
            request.channel_id = channel  # type: ignore[attr-defined]
            return self._send(handler, 200, {"ok": True, "channel": channel, "ts": ts, "message": {"text": params.get("text"), "ts": ts}})
        if method == "files.getUploadURLExternal":
            file_id = f"F{len(self._files) + 1:07d}"
            self._files[file_id] = {"id": file_id, "filename": params.get("filename"), "length": params.get("length")}
            base = self.api_url.replace("/api/", "/upload/")
            return self._send(handler, 200, {"ok": True, "upload_url": base + file_id, "file_id": file_id})
        if method == "files.completeUploadExternal":
            done = []
            for item in params.get("files") or []:
                record = self._files.get(item.get("id"))
                if record is None or "content" not in record:
                    return self._send(handler, 200, {"ok": False, "error": "file_not_found"})
                channel = params.get("channel_id")
                if channel and channel not in self.channels.values():
                    return self._send(handler, 200, {"ok": False, "error": "channel_not_found"})
                record.update(title=item.get("title"), channel_id=channel, thread_ts=params.get("thread_ts"), completed=True)
                done.append({"id": record["id"], "title": record["title"], "name": record["filename"]})
            return self._send(handler, 200, {"ok": True, "files": done})
        return self._send(handler, 200, {"ok": False, "error": "unknown_method"})

    def _channel(self, name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        if name in self.channels.values():
            return name
        return self.channels.get(name if name.startswith("#") else f"#{name}")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", "application/json; charset=utf-8" if not isinstance(body, str) else "text/plain; charset=utf-8"
            )
            handler.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to answer
            pass
