"""A counting, fault-injecting HTTPS proxy in front of a real pebble, on loopback.

It terminates TLS with pebble's own listener certificate (so the client's trust roots
stay pebble's) and forwards every request to pebble with the proxy's Host header:
pebble builds its URLs from the Host it is asked on, so the directory, orders and JWS
`url`s all name the proxy, and every request the client sends passes here. It counts
requests per kind (directory, nonce, account, order, ...), so a test can say how many
orders reached the CA, and it can answer in the CA's place:

- `busy`: every request gets `status` (429 or 503) with `Retry-After: retry_after`
  and a problem document (rateLimited / serverInternal);
- `broken`: every request gets HTTP 500 with a serverInternal problem;
- `busy_paths`: only requests of those kinds are answered `status` (e.g. {"order"});
- `ari`: the directory offers `renewalInfo` (pebble 2.4 has none), answered here with
  a window that has passed (renew now); with `already_replaced`, a newOrder carrying
  `replaces` gets 409 and an alreadyReplaced problem document (RFC 9773 section 5).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .pebble import Pebble

KINDS = (
    ("/dir", "directory"),
    ("/nonce-plz", "nonce"),
    ("/sign-me-up", "account"),
    ("/order-plz", "order"),
    ("/authZ/", "authz"),
    ("/chalZ/", "challenge"),
    ("/finalize-order/", "finalize"),
    ("/my-order/", "order-status"),
    ("/certZ/", "certificate"),
    ("/draft-ietf-acme-ari", "renewal-info"),
    ("/renewal-info", "renewal-info"),
    ("/my-account/", "account-url"),
)


def kind_of(path: str) -> str:
    return next((k for prefix, k in KINDS if path.startswith(prefix)), "other")


@dataclass
class CAProxy:
    pebble: Pebble
    mode: str = "pass"  # pass | busy | broken
    status: int = 503
    retry_after: str = "60"
    busy_paths: frozenset[str] = frozenset()
    ari: bool = False
    already_replaced: bool = False
    hits: Counter[str] = field(default_factory=Counter)
    replaces_seen: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def orders(self) -> int:
        """Orders the CA created (201): a POST refused for a bad nonce and sent again
        is one order, as the CA counts it."""
        return self.hits["order-created"]

    @property
    def total(self) -> int:
        """Requests received (an order created is counted once, as its request)."""
        return sum(v for k, v in self.hits.items() if k != "order-created")

    def reset(self) -> None:
        with self._lock:
            self.hits.clear()

    def start(self) -> CAProxy:
        proxy = self
        upstream = ssl.create_default_context(cafile=str(self.pebble.tls_root))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _problem(self, status: int, typ: str, detail: str, **extra: str) -> None:
                doc = {"type": f"urn:ietf:params:acme:error:{typ}", "detail": detail,
                       "status": status}  # fmt: skip
                headers = {"Content-Type": "application/problem+json",
                           "Replay-Nonce": "proxy-nonce-" + str(proxy.total), **extra}  # fmt: skip
                self._answer(status, json.dumps(doc).encode(), headers)

            def _handle(self) -> None:
                body = self._body() if self.command == "POST" else b""
                kind = kind_of(self.path)
                with proxy._lock:
                    proxy.hits[kind] += 1
                if proxy.mode == "broken":
                    return self._problem(500, "serverInternal", "the CA is broken")
                if proxy.mode == "busy" or kind in proxy.busy_paths:
                    typ = "rateLimited" if proxy.status == 429 else "serverInternal"
                    return self._problem(proxy.status, typ, "come back later",
                                         **{"Retry-After": proxy.retry_after})  # fmt: skip
                if kind == "renewal-info" and proxy.ari:
                    now = dt.datetime.now(dt.UTC)
                    window = {"suggestedWindow": {
                        "start": (now - dt.timedelta(hours=2)).isoformat(),
                        "end": (now - dt.timedelta(minutes=1)).isoformat()}}  # fmt: skip
                    return self._answer(200, json.dumps(window).encode(),
                                        {"Content-Type": "application/json",
                                         "Retry-After": "21600"})  # fmt: skip
                if kind == "order" and body:
                    replaces = _payload(body).get("replaces")
                    if replaces:
                        proxy.replaces_seen.append(str(replaces))
                        if proxy.already_replaced:
                            return self._problem(409, "alreadyReplaced",
                                                 f"{replaces} was already replaced")  # fmt: skip
                self._forward(body, upstream)

            def _forward(self, body: bytes, ctx: ssl.SSLContext) -> None:
                conn = http.client.HTTPSConnection(
                    proxy.pebble.host, proxy.pebble.port, context=ctx, timeout=30
                )
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "content-length")}  # fmt: skip
                headers["Host"] = f"127.0.0.1:{proxy.port}"
                try:
                    conn.request(self.command, self.path, body or None, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders()
                           if k.lower() not in ("connection", "content-length",
                                                "transfer-encoding")}  # fmt: skip
                finally:
                    conn.close()
                if kind_of(self.path) == "order" and resp.status == 201:
                    with proxy._lock:
                        proxy.hits["order-created"] += 1
                if proxy.ari and kind_of(self.path) == "directory" and resp.status == 200:
                    directory = json.loads(data)
                    directory["renewalInfo"] = f"https://127.0.0.1:{proxy.port}/renewal-info"
                    data = json.dumps(directory).encode()
                self._answer(resp.status, data, out)

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        workdir = Path(self.pebble.workdir)
        tls.load_cert_chain(workdir / "listener.pem", workdir / "listener.key")
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _payload(body: bytes) -> dict[str, Any]:
    """The decoded payload of a flattened JWS (what the client asked for)."""
    try:
        raw = json.loads(body)["payload"]
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)) or b"{}")
    except (ValueError, KeyError, TypeError):
        return {}
    return decoded if isinstance(decoded, dict) else {}
