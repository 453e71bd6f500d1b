"""What an endpoint actually serves: a TLS handshake with SNI, chain and hostname checked.

Verification is never disabled: a private CA is trusted by adding its roots to
the system store. Side effects: network (TCP + TLS to the given endpoints).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
        deadline = self.clock.monotonic() + timeout
        if len(endpoints) > 1:  # each endpoint waited for at once: one deadline, not N
            with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(endpoints))) as pool:
                results = list(pool.map(lambda e: self._await_one(e, fingerprint, deadline),
                                        endpoints))  # fmt: skip
        else:
            results = [self._await_one(e, fingerprint, deadline) for e in endpoints]
        failures = []
        for endpoint, last in zip(endpoints, results, strict=True):
            if last.fingerprint != fingerprint:
                served = (last.fingerprint or "?")[:16]
                why = last.error or f"serves {served}… instead of {fingerprint[:16]}…"
                failures.append(f"{endpoint}: {why}")
        return failures

    def _await_one(self, endpoint: Endpoint, fingerprint: str, deadline: float) -> Served:
        """Probe until CONFIRMATIONS handshakes in a row serve `fingerprint`.

        One match is not proof: after a graceful reload, old workers keep accepting
        connections for a moment, so a lucky first handshake can hide a stale one.
        """
        attempt = matches = 0
        while True:
            left = deadline - self.clock.monotonic()
            served = probe(endpoint, self.ctx, max(0.2, min(3.0, left)))
            matches = matches + 1 if served.fingerprint == fingerprint else 0
            if matches >= CONFIRMATIONS:
                return served
            if self.clock.monotonic() >= deadline:
                return (
                    served
                    if matches == 0
                    else Served(
                        endpoint,
                        None,
                        f"served {fingerprint[:16]}… only {matches} time(s) in a row",
                    )
                )
            self.clock.sleep(CONFIRM_DELAY if matches else DELAYS[min(attempt, len(DELAYS) - 1)])
            attempt += 1
