"""http-01 challenge solvers (RFC 8555 section 8.3): present / cleanup.

Side effects: the webroot solver writes and removes files; the standalone
solver listens on a TCP port while it holds tokens. Neither imports `acme`.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import threading
from pathlib import Path
from typing import Protocol

from .errors import ChallengeFailed
from .model import ChallengeSpec, Http01Standalone, Http01Webroot

log = logging.getLogger(__name__)

PREFIX = "/.well-known/acme-challenge/"


class Solver(Protocol):
    """Publishes a key authorization; cleanup always runs after present."""

    def present(self, domain: str, token: str, key_authorization: str) -> None: ...

    def cleanup(self, domain: str, token: str) -> None: ...


class WebrootSolver:
    def __init__(self, webroot: Path) -> None:
        self.directory = webroot / ".well-known" / "acme-challenge"

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            path = self.directory / _safe_token(token)
            path.write_text(key_authorization, encoding="ascii")
            path.chmod(0o644)  # served by the web server's user
        except OSError as exc:
            raise ChallengeFailed(
                f"http-01 for {domain}: cannot write into {self.directory}: {exc.strerror}"
            ) from exc

    def cleanup(self, domain: str, token: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _safe_token(token)).unlink()


class StandaloneSolver:
    """A tiny HTTP server that answers only for tokens it currently holds.

    It starts with the first token and stays up until `close`, so that many
    certificates in one run share one listener.
    """

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self._tokens: dict[str, str] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        self._tokens[_safe_token(token)] = key_authorization
        if self._server is None:
            self._start(domain)

    def cleanup(self, domain: str, token: str) -> None:
        self._tokens.pop(token, None)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _start(self, domain: str) -> None:
        tokens = self._tokens

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    tokens.get(self.path[len(PREFIX) :]) if self.path.startswith(PREFIX) else None
                )
                self.send_response(200 if body is not None else 404)
                payload = (body or "not found").encode()
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http-01 standalone: " + format, *args)

        try:
            server = http.server.ThreadingHTTPServer((self.address, self.port), Handler)
        except OSError as exc:
            raise ChallengeFailed(
                f"http-01 for {domain}: cannot listen on {self.address}:{self.port}: {exc.strerror}"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()


def _safe_token(token: str) -> str:
    # Tokens are base64url (RFC 8555 section 8.1); anything else could escape the directory.
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        raise ChallengeFailed(f"refusing a challenge token with unexpected characters: {token!r}")
    return token


class Solvers:
    """One solver per distinct challenge spec for the length of a run."""

    def __init__(self) -> None:
        self._by_spec: dict[ChallengeSpec, WebrootSolver | StandaloneSolver] = {}

    def for_spec(self, spec: ChallengeSpec) -> Solver:
        if spec not in self._by_spec:
            if isinstance(spec, Http01Webroot):
                self._by_spec[spec] = WebrootSolver(spec.webroot)
            elif isinstance(spec, Http01Standalone):
                self._by_spec[spec] = StandaloneSolver(spec.address, spec.port)
        return self._by_spec[spec]

    def close(self) -> None:
        for solver in self._by_spec.values():
            if isinstance(solver, StandaloneSolver):
                solver.close()
