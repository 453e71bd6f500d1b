"""A deliberately broken ACME server on loopback, for the answers real CAs give on a
bad day: a directory of `{}`, HTML instead of JSON, 503 and 429 with a plain-text body
and a Retry-After, to every request or only the first few. It speaks no more ACME than
needed to reach the request that fails (directory, nonces); it counts what it was sent.

Optionally it passes the directory through from a real CA (`upstream`), so that a
client that retried the directory goes on to a real pebble for the rest.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class BrokenCA:
    mode: str  # "empty-directory", "html", "busy-post", "busy-directory"
    status: int = 503
    retry_after: str = "0"
    fail_first: int = 10**9  # answer busy this many times, then normally
    upstream: str | None = None  # a real directory URL to pass through when not failing
    upstream_ctx: ssl.SSLContext | None = None
    hits: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/dir"

    def start(self) -> BrokenCA:
        ca = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _count(self) -> int:
                with lock:
                    ca.hits[self.path] = ca.hits.get(self.path, 0) + 1
                    return ca.hits[self.path]

            def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Replay-Nonce", f"nonce{self._count_nonce()}")
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _count_nonce(self) -> int:
                with lock:
                    ca.hits["nonces"] = ca.hits.get("nonces", 0) + 1
                    return ca.hits["nonces"]

            def _busy(self) -> None:
                self._send(ca.status, b"Service Unavailable: maintenance\n", "text/plain",
                           Retry_After=ca.retry_after)  # fmt: skip

            def do_GET(self) -> None:
                n = self._count()
                if self.path == "/dir":
                    if ca.mode == "empty-directory":
                        return self._send(200, b"{}", "application/json")
                    if ca.mode == "html":
                        return self._send(200, b"<html>not ACME</html>", "text/html")
                    if ca.mode == "busy-directory" and n <= ca.fail_first:
                        return self._busy()
                    if ca.upstream is not None:
                        with urllib.request.urlopen(ca.upstream, context=ca.upstream_ctx) as r:  # noqa: S310
                            return self._send(200, r.read(), "application/json")
                    base = ca.url.removesuffix("/dir")
                    directory = {"newNonce": f"{base}/nonce", "newAccount": f"{base}/account",
                                 "newOrder": f"{base}/order"}  # fmt: skip
                    return self._send(200, json.dumps(directory).encode(), "application/json")
                return self._send(204, b"", "text/plain")

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                n = self._count()
                if n <= ca.fail_first:
                    return self._busy()
                return self._send(500, b"unexpected", "text/plain")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
