"""What an endpoint actually serves: a TLS handshake with SNI, chain and hostname checked.

Verification is never disabled: a private CA is trusted by adding its roots to
the system store. Side effects: network (TCP + TLS to the given endpoints).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path

from . import starttls
from .model import Endpoint
from .system import Clock

DELAYS = (0.02, 0.05, 0.1, 0.2, 0.3)
CONFIRMATIONS = 3
CONFIRM_DELAY = 0.05


@dataclass(frozen=True)
class Served:
    endpoint: Endpoint
    fingerprint: str | None  # SHA-256 of the leaf's DER, when the handshake verified
    error: str | None = None
    timed_out: bool = False  # no answer in time: slowness, not evidence of a bad certificate
    refused_cert: bool = False  # the server answered with a certificate that was not accepted


AT_ONCE = 8  # endpoints probed at once: handshakes are CPU-bound, and each thread costs ~0.5 MiB


def on_address(endpoints: Sequence[Endpoint], address: str) -> tuple[Endpoint, ...]:
    """The same ports and names on one node's own address (not the VIP), once each."""
    seen: dict[tuple[int, str], Endpoint] = {}
    for e in endpoints:
        seen.setdefault((e.port, e.sni), Endpoint(address, e.port, e.sni))
    return tuple(seen.values())


def trust_context(extra_roots: Sequence[Path] = ()) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for root in extra_roots:
        ctx.load_verify_locations(cafile=str(root))
    return ctx  # CERT_REQUIRED and check_hostname, as created


def probe(endpoint: Endpoint, ctx: ssl.SSLContext, timeout: float) -> Served:
    """One handshake; any failure (refused, timeout, untrusted, wrong name) is data."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if endpoint.starttls is not None:  # a database or mail server: its opening first
                starttls.PROTOCOLS[endpoint.starttls](sock)
            with ctx.wrap_socket(sock, server_hostname=endpoint.sni) as tls:
                der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        why = f"certificate not accepted: {exc.verify_message}"
        return Served(endpoint, None, why, refused_cert=True)
    except ssl.SSLError as exc:
        return Served(endpoint, None, f"TLS handshake failed: {exc.reason or exc}")
    except starttls.StartTlsRefused as exc:
        return Served(endpoint, None, f"{endpoint.starttls} STARTTLS: {exc}")
    except TimeoutError:
        return Served(endpoint, None, f"no answer within {timeout:g} s", timed_out=True)
    except OSError as exc:
        return Served(endpoint, None, exc.strerror or str(exc))
    if der is None:
        return Served(endpoint, None, "no certificate presented")
    return Served(endpoint, hashlib.sha256(der).hexdigest())


class TlsProber:
    """Waits until every endpoint serves the expected certificate, or a deadline passes."""

    def __init__(self, clock: Clock, extra_roots: Sequence[Path] = ()) -> None:
        self.clock = clock
        self.ctx = trust_context(extra_roots)

    def wait_for(
        self, endpoints: Sequence[Endpoint], fingerprint: str, timeout: float
    ) -> list[str]:
        """Failures, one per endpoint that never served `fingerprint`; empty when all did."""
        return self.wait_all([(endpoints, fingerprint, timeout)])[0]

    def wait_all(self, jobs: Sequence[tuple[Sequence[Endpoint], str, float]]) -> list[list[str]]:
        """`wait_for` of many certificates at once ((endpoints, fingerprint, timeout)
        each): one pool of AT_ONCE handshakes serves every endpoint, each probed again
        no sooner than its own delay after its last answer and never waiting for
        another's (a silent endpoint holds one slot, not everyone's confirmations), so
        100 endpoints waiting out their confirmations cost about three delays."""
        start = self.clock.monotonic()
        waits = [[_Wait(e, fp, start + timeout) for e in endpoints]
                 for endpoints, fp, timeout in jobs]  # fmt: skip
        pending = [w for ws in waits for w in ws]
        if len(pending) == 1:  # one endpoint: no pool
            w = pending[0]
            while not w.done:
                self.clock.sleep(max(0.0, w.next_at - self.clock.monotonic()))
                w.saw(probe(w.endpoint, self.ctx, w.timeout(self.clock.monotonic())),
                      self.clock.monotonic())  # fmt: skip
        elif pending:
            self._many(pending)
        return [[f for w in ws if (f := w.failure()) is not None] for ws in waits]

    def _many(self, pending: list[_Wait]) -> None:
        flying: dict[Future[Served], _Wait] = {}
        with ThreadPoolExecutor(min(AT_ONCE, len(pending))) as pool:
            while pending or flying:
                now = self.clock.monotonic()
                for w in [w for w in pending if w.next_at <= now][: AT_ONCE - len(flying)]:
                    flying[pool.submit(probe, w.endpoint, self.ctx, w.timeout(now))] = w
                    pending.remove(w)
                due = min((w.next_at for w in pending), default=None)
                if not flying:
                    self.clock.sleep(max(0.0, (due or now) - now))
                    continue
                # every slot busy: only an answer can start anything; else also a due time
                full = len(flying) >= AT_ONCE
                wait = None if due is None or full else max(0.0, due - now)
                done, _ = futures_wait(flying, timeout=wait, return_when=FIRST_COMPLETED)
                for future in done:
                    w = flying.pop(future)
                    w.saw(future.result(), self.clock.monotonic())
                    if not w.done:
                        pending.append(w)


@dataclass
class _Wait:
    """One endpoint awaited: it must serve `fingerprint` CONFIRMATIONS handshakes in a
    row. One match is not proof: after a graceful reload, old workers keep accepting
    connections for a moment, so a lucky first handshake can hide a stale one."""

    endpoint: Endpoint
    fingerprint: str
    deadline: float
    matches: int = 0
    attempt: int = 0
    next_at: float = 0.0  # monotonic time of its next probe
    last: Served | None = None
    done: bool = False

    def saw(self, served: Served, now: float) -> None:
        self.last = served
        self.matches = self.matches + 1 if served.fingerprint == self.fingerprint else 0
        if self.matches >= CONFIRMATIONS:
            self.done = True
        elif now >= self.deadline:
            self.done = True
            if self.matches:
                self.last = Served(self.endpoint, None, f"served {self.fingerprint[:16]}… "
                                   f"only {self.matches} time(s) in a row")  # fmt: skip
        else:
            delay = CONFIRM_DELAY if self.matches else DELAYS[min(self.attempt, len(DELAYS) - 1)]
            self.next_at = now + delay
            self.attempt += 1

    def timeout(self, now: float) -> float:
        """One handshake's: what is left of the deadline, within 0.2 and 3 s."""
        return max(0.2, min(3.0, self.deadline - now))

    def failure(self) -> str | None:
        last = self.last
        if last is None or last.fingerprint == self.fingerprint:
            return None
        served = (last.fingerprint or "?")[:16]
        why = last.error or f"serves {served}… instead of {self.fingerprint[:16]}…"
        return f"{self.endpoint}: {why}"
