"""Challenge solvers (one `Solver` contract: present, ready, cleanup, finish) and the
run's set of them: http-01 (RFC 8555 section 8.3) from a webroot or a standalone
listener, tls-alpn-01 (RFC 8737) from a TLS listener; dns-01 lives in dns01.py.

Side effects: the webroot solver writes and removes files; the listeners bind TCP ports
for the run (before ordering, `Solvers.bind`). None imports `acme`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ChallengeFailed

if TYPE_CHECKING:
    import http.server
from .model import (
    CertSpec,
    ChallengeSpec,
    Dns01Hook,
    Dns01Persist,
    Dns01Rfc2136,
    Http01Standalone,
    Http01Webroot,
    TlsAlpn01Standalone,
)

log = logging.getLogger(__name__)
Runner = Callable[[Sequence[str], float, Mapping[str, str]], Any]  # system.run
SolverFor = Callable[[str], "Solver"]  # a name of the order ("*.x" for a wildcard) -> solver

PREFIX = "/.well-known/acme-challenge/"


class Solver(Protocol):
    """Publishes the validation of one challenge type (`kind`) for one order:
    `present` each, `ready` once all are presented (dns-01 publishes and waits there),
    then the CA is asked; `cleanup` each and `finish` always follow."""

    kind: str

    def present(self, domain: str, token: str, validation: str) -> None: ...

    def ready(self) -> None: ...

    def cleanup(self, domain: str, token: str) -> None: ...

    def finish(self) -> None: ...


class _Http01:
    kind = "http-01"

    def ready(self) -> None:
        """Served as soon as presented."""

    def finish(self) -> None:
        """Each token is removed by its cleanup."""


class WebrootSolver(_Http01):
    """Writes `<webroot>/.well-known/acme-challenge/<token>`.

    Webroots are commonly owned by the web server's user, who could plant a symlink
    at `.well-known` or `acme-challenge` to make root write elsewhere. So below the
    configured webroot nothing is followed: each directory is opened relative to its
    parent's descriptor with O_NOFOLLOW, and the file is created with O_EXCL|O_NOFOLLOW.
    The webroot itself must exist (a misspelled one is an error, not created)."""

    PARTS = (".well-known", "acme-challenge")

    def __init__(self, webroot: Path) -> None:
        self.webroot = webroot
        self.directory = webroot / ".well-known" / "acme-challenge"

    def present(self, domain: str, token: str, validation: str) -> None:
        name = _safe_token(token)
        try:
            folder = self._open_dir(create=True)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(name, flags, 0o644, dir_fd=folder)
                try:
                    os.fchmod(fd, 0o644)  # served by the web server's user
                    os.write(fd, validation.encode("ascii"))
                finally:
                    os.close(fd)
            finally:
                os.close(folder)
        except OSError as exc:
            why = "a symlink is in the way" if exc.errno == errno.ELOOP else exc.strerror
            raise ChallengeFailed(
                f"http-01 for {domain}: cannot write into {self.directory}: {why}"
            ) from exc

    def cleanup(self, domain: str, token: str) -> None:
        try:
            folder = self._open_dir(create=False)
        except (OSError, ChallengeFailed):
            return  # nothing of ours can be there
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_safe_token(token), dir_fd=folder)
        finally:
            os.close(folder)

    def _open_dir(self, create: bool) -> int:
        """A descriptor of the challenge directory, no link followed below the webroot."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(self.webroot, flags)
        except FileNotFoundError:
            raise ChallengeFailed(
                f"the webroot {self.webroot} does not exist (challenge.webroot: a typo?)"
            ) from None
        try:
            for part in self.PARTS:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                sub = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd


class StandaloneSolver(_Http01):
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
        self._lock = threading.Lock()  # concurrent orders start one listener

    def present(self, domain: str, token: str, validation: str) -> None:
        self._tokens[_safe_token(token)] = validation
        self.bind(domain)

    def bind(self, domain: str) -> None:
        """Listen now (before ordering: a port in use must not cost an issuance)."""
        with self._lock:
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
        import http.server  # deferred: only a standalone listener needs it

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

        class Server(http.server.ThreadingHTTPServer):
            # a CA validates every name of a run at once, from several vantage points:
            # the default backlog of 5 drops connections under such a burst
            request_queue_size = 128

        try:
            server = Server((self.address, self.port), Handler)
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


class AlpnSolver:
    """tls-alpn-01 (RFC 8737): a TLS listener on address:port that answers the
    `acme-tls/1` protocol with each name's validation certificate, chosen by SNI. It
    starts with the first name and stays up until `close` (one listener per run)."""

    kind = "tls-alpn-01"
    ALPN = "acme-tls/1"

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self._contexts: dict[str, Any] = {}  # name -> ssl.SSLContext with its certificate
        self._lock = threading.Lock()
        self._sock: Any = None
        self._base: Any = None  # ssl.SSLContext of the first name: handshakes start there
        self._thread: threading.Thread | None = None
        self._scratch: Path | None = None

    def present(self, domain: str, token: str, validation: str) -> None:
        import ssl
        import tempfile

        from . import crypto

        cert, key = crypto.alpn_certificate(domain, validation)
        with self._lock:
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="certagent-alpn-"))  # 0700
            pem = self._scratch / f"{_safe_token(token)}.pem"
            fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert + key)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8737: TLS 1.2 or later
            ctx.set_alpn_protocols([self.ALPN])
            ctx.load_cert_chain(pem)
            self._contexts[domain.lower()] = ctx
            reverse = _reverse_name(domain)
            if reverse is not None:  # an IP identifier: the CA's SNI is its reverse name
                self._contexts[reverse] = ctx
            if self._sock is None:
                self._listen(domain)
            if self._base is None:  # the context every handshake starts in (SNI picks)
                ctx.sni_callback = self._choose
                self._base = ctx

    def bind(self, domain: str) -> None:
        """Listen now (before ordering: a port in use must not cost an issuance)."""
        with self._lock:
            if self._sock is None:
                self._listen(domain)

    def _choose(self, tls: Any, name: str | None, _ctx: Any) -> None:
        chosen = self._contexts.get((name or "").lower())
        if chosen is not None:
            tls.context = chosen
        return None  # no context for that name: the handshake fails, nothing is said

    def ready(self) -> None:
        """Served as soon as presented."""

    def cleanup(self, domain: str, token: str) -> None:
        with self._lock:
            self._contexts.pop(domain.lower(), None)
            self._contexts.pop(_reverse_name(domain) or "", None)
            if self._scratch is not None:
                with contextlib.suppress(OSError, ChallengeFailed):
                    (self._scratch / f"{_safe_token(token)}.pem").unlink()

    def finish(self) -> None:
        """Each certificate is removed by its cleanup."""

    def _listen(self, domain: str) -> None:
        import socket

        try:
            sock = socket.create_server((self.address, self.port), reuse_port=False)
        except OSError as exc:
            raise ChallengeFailed(
                f"tls-alpn-01 for {domain}: cannot listen on {self.address}:{self.port}: "
                f"{exc.strerror} (is a web server already on that port?)"
            ) from exc
        self._sock = sock

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return  # closed
                base = self._base
                if base is None:  # bound before any name was presented: nothing to say
                    conn.close()
                    continue
                threading.Thread(target=self._answer, args=(conn, base), daemon=True).start()

        self._thread = threading.Thread(target=serve, daemon=True, name="tls-alpn-01")
        self._thread.start()

    def _answer(self, conn: Any, ctx: Any) -> None:
        conn.settimeout(10)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
            tls.close()
        except OSError as exc:
            log.debug("tls-alpn-01: %s", exc)
            conn.close()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(2)  # SHUT_RDWR: wakes the accept() waiting on it
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        self._base = None


def _reverse_name(name: str) -> str | None:
    """The reverse-DNS name of an IP address (`1.0.0.127.in-addr.arpa`), the SNI a CA
    sends for an IP identifier in tls-alpn-01 (RFC 8738 section 6), else None."""
    import ipaddress

    try:
        return ipaddress.ip_address(name).reverse_pointer
    except ValueError:
        return None


def _safe_token(token: str) -> str:
    # Tokens are base64url (RFC 8555 section 8.1); anything else could escape the directory.
    if not token or not all(c.isalnum() or c in "-_" for c in token):
        raise ChallengeFailed(f"refusing a challenge token with unexpected characters: {token!r}")
    return token


class Solvers:
    """One solver per distinct challenge spec for the length of a run."""

    def __init__(self, state_dir: Path | None = None, run: Runner | None = None) -> None:
        """`state_dir`: where dns-01 keeps its journal of records not yet removed;
        `run`: how a dns-01 hook is run (system.run)."""
        self._by_spec: dict[ChallengeSpec, Any] = {}
        self._lock = threading.Lock()
        self.state_dir = state_dir
        self.run = run

    def for_spec(self, spec: ChallengeSpec) -> Solver:
        with self._lock:
            return self._solver(spec)

    def bind(self, cert: CertSpec) -> list[str]:
        """Bind the listeners a certificate's challenges answer from (standalone http-01,
        tls-alpn-01) before its order; ChallengeFailed when a port is taken. Notes."""
        notes = []
        for spec in dict.fromkeys((cert.challenge, *cert.challenges.values())):
            if isinstance(spec, Http01Standalone | TlsAlpn01Standalone):
                solver = self.for_spec(spec)
                solver.bind(cert.names[0])  # type: ignore[attr-defined]
                notes.append(f"{solver.kind} listening on {spec.address}:{spec.port}")
        return notes

    def chooser(self, cert: CertSpec) -> SolverFor:
        """The solver of each name of a certificate (`challenges`, else `challenge`)."""
        return lambda name: self.for_spec(cert.challenge_for(name))

    def _solver(self, spec: ChallengeSpec) -> Solver:
        if spec not in self._by_spec:
            if isinstance(spec, Http01Webroot):
                self._by_spec[spec] = WebrootSolver(spec.webroot)
            elif isinstance(spec, Http01Standalone):
                self._by_spec[spec] = StandaloneSolver(spec.address, spec.port)
            elif isinstance(spec, TlsAlpn01Standalone):
                self._by_spec[spec] = AlpnSolver(spec.address, spec.port)
            else:  # dns-01: dnspython only when a certificate uses it
                from . import dns01

                journal = dns01.Journal(self.state_dir)
                if isinstance(spec, Dns01Persist):
                    self._by_spec[spec] = dns01.PersistSolver(spec)
                elif isinstance(spec, Dns01Rfc2136):
                    self._by_spec[spec] = dns01.Rfc2136Solver(spec, journal)
                else:
                    if self.run is None:
                        from .system import run as system_run

                        self.run = system_run
                    self._by_spec[spec] = dns01.HookSolver(spec, journal, self.run)
        solver: Solver = self._by_spec[spec]
        return solver

    def sweep(self, specs: Sequence[ChallengeSpec]) -> None:
        """Remove dns-01 records a killed run left (its journal lists them), for each
        dns-01 way configured; a run with an empty journal imports nothing for it."""
        if self.state_dir is None or not (self.state_dir / "dns-records.json").is_file():
            return
        for spec in dict.fromkeys(specs):
            if isinstance(spec, Dns01Rfc2136 | Dns01Hook):
                try:
                    self.for_spec(spec)  # made once per run; it sweeps when made
                except Exception as exc:  # this certificate's order will say it again
                    log.warning("dns-01 leftovers not removed: %s", exc)

    def close(self) -> None:
        for solver in self._by_spec.values():
            if hasattr(solver, "close"):
                try:
                    solver.close()
                except Exception as exc:  # closing must not hide the run's outcome
                    log.warning("closing the %s solver: %s", solver.kind, exc)
