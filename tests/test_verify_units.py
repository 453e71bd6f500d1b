"""Unit: what an endpoint serves is confirmed in rounds (issue #28: 100 certificates
deployed to one server are verified in about three rounds, not 100 waits), and the
rounds keep every promise of the one-endpoint wait: CONFIRMATIONS handshakes in a row,
never closer than CONFIRM_DELAY; a stale first answer (an old worker) is waited out; a
lucky single match is not enough; a refused endpoint fails alone, naming itself.

Real TLS servers on loopback (threads with Python's ssl), a real trust store."""

from __future__ import annotations

import hashlib
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certagent.model import Endpoint
from certagent.system import SystemClock
from certagent.verify import CONFIRM_DELAY, CONFIRMATIONS, TlsProber
from testbed import pki


class TlsServer:
    """Serves `pick(n)`'s certificate on its n-th connection; records when each came."""

    def __init__(self, contexts: list[ssl.SSLContext], pick: Callable[[int], int]) -> None:
        self.contexts, self.pick = contexts, pick
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n = len(self.accepted)
            self.accepted.append(time.monotonic())
            try:
                with self.contexts[self.pick(n)].wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # the client closes after the handshake
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def pkix(tmp_path: Path) -> Iterator[tuple[Path, list[tuple[ssl.SSLContext, str]]]]:
    """A root on disk and two certificates for `site.test`: (context, fingerprint) each."""
    root = pki.make_ca("verify unit root")
    pki.write(tmp_path / "root.pem", root.pem())
    made = []
    for i in range(2):
        cert, key = pki.issue(root, ["site.test"])
        pki.write(tmp_path / f"{i}.pem", cert)
        pki.write(tmp_path / f"{i}.key", key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / f"{i}.pem", tmp_path / f"{i}.key")
        der = ssl.PEM_cert_to_DER_cert(cert.decode())
        made.append((ctx, hashlib.sha256(der).hexdigest()))
    yield tmp_path / "root.pem", made


def test_many_endpoints_are_confirmed_together_and_each_confirmation_is_spaced(
    pkix: tuple[Path, list[tuple[ssl.SSLContext, str]]],
) -> None:
    root, ((new_ctx, new_fp), (old_ctx, _)) = pkix
    servers = [TlsServer([new_ctx, old_ctx], lambda n: 0) for _ in range(20)]
    stale = TlsServer([new_ctx, old_ctx], lambda n: 1 if n < 2 else 0)  # an old worker first
    try:
        prober = TlsProber(SystemClock(), [root])
        jobs = [((Endpoint("127.0.0.1", s.port, "site.test"),), new_fp, 20.0)
                for s in [*servers, stale]]  # fmt: skip
        assert prober.wait_all(jobs) == [[] for _ in jobs]
        for s in servers:
            assert len(s.accepted) == CONFIRMATIONS
        assert len(stale.accepted) == 2 + CONFIRMATIONS  # waited out, then confirmed
        for s in [*servers, stale]:  # between confirmations (after a mismatch: sooner)
            matched = s.accepted[-CONFIRMATIONS:]
            gaps = [b - a for a, b in itertools.pairwise(matched)]
            assert all(g >= CONFIRM_DELAY * 0.9 for g in gaps), gaps
    finally:
        for s in [*servers, stale]:
            s.close()


def test_a_single_lucky_match_fails_and_a_refused_endpoint_fails_alone(
    pkix: tuple[Path, list[tuple[ssl.SSLContext, str]]],
) -> None:
    root, ((new_ctx, new_fp), (old_ctx, _)) = pkix
    flapping = TlsServer([new_ctx, old_ctx], lambda n: 0 if n % 2 == 0 else 1)
    good = TlsServer([new_ctx, old_ctx], lambda n: 0)
    closed = socket.create_server(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    try:
        prober = TlsProber(SystemClock(), [root])
        ends = [Endpoint("127.0.0.1", p, "site.test")
                for p in (flapping.port, good.port, refused_port)]  # fmt: skip
        flap, ok, refused = prober.wait_all([((e,), new_fp, 1.5) for e in ends])
        assert ok == []
        assert len(flap) == 1 and str(ends[0]) in flap[0]
        assert len(refused) == 1 and str(ends[2]) in refused[0] and "refused" in refused[0]
        # the one-endpoint form says the same
        assert prober.wait_for([ends[1]], new_fp, 5.0) == []
        (why,) = prober.wait_for([ends[2]], new_fp, 0.5)
        assert "refused" in why
    finally:
        flapping.close()
        good.close()


def test_a_silent_endpoint_does_not_hold_back_the_others(
    pkix: tuple[Path, list[tuple[ssl.SSLContext, str]]],
) -> None:
    """One endpoint answers TCP and never TLS (each handshake waits out its 3 s): the
    others confirm at their own pace, well inside a 4 s deadline they would miss if
    each of their three confirmations waited for the silent one's handshake."""
    root, ((new_ctx, new_fp), (old_ctx, _)) = pkix
    good = [TlsServer([new_ctx, old_ctx], lambda n: 0) for _ in range(3)]
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never accepts
    try:
        prober = TlsProber(SystemClock(), [root])
        ends = [Endpoint("127.0.0.1", s.port, "site.test") for s in good]
        ends.append(Endpoint("127.0.0.1", silent.getsockname()[1], "site.test"))
        results = prober.wait_all([((e,), new_fp, 4.0) for e in ends])
        assert results[:3] == [[], [], []]
        assert len(results[3]) == 1 and str(ends[3]) in results[3][0]
    finally:
        silent.close()
        for s in good:
            s.close()
