"""A recording webhook endpoint on loopback: what drillbook POSTed, and answers to give (500, 429, a hang)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookStandIn:
    """`with WebhookStandIn() as hook:`; `hook.url` is the endpoint (with a token in its path, as real ones have)."""

    def __init__(self, token: str = "T0KEN-drillbook-webhook-secret"):
        self.token = token
        self.received: list[dict[str, Any]] = []
        self.answers: list[int] = []  # status codes for the next requests, then 200
        self.hang = 0.0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if standin.hang:
                    time.sleep(standin.hang)
                with standin._lock:
                    status = standin.answers.pop(0) if standin.answers else 200
                    if self.path != f"/hooks/{standin.token}":
                        status = 404
                    elif status == 200:
                        standin.received.append(json.loads(body))
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "30")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{token}"

    def __enter__(self) -> WebhookStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
