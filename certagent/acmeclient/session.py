"""What the services share for one CA in one run: the configuration, the account key,
the directory and the account (each found once under one lock), one ACME client per
thread (its connection pool, nonces and last response are its own, so concurrent
orders never read each other's answers), and the CA's health.

Side effects: network (the directory), filesystem (the account key, created 0600).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import requests
from acme import client, messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwk import JWK, JWKEC, JWKRSA

from .. import crypto, layout
from ..castate import note_ari
from ..errors import OrderFailed
from ..model import CASpec, Policy
from ..store import atomic_write
from .health import CAHealth
from .problems import translated
from .transport import Network, Wire

CLOCK_TOLERANCE = 120.0  # seconds of skew against the CA's Date header that we name


class Session:
    def __init__(
        self,
        ca: CASpec,
        policy: Policy,
        folder: Path,
        ca_bundle: Path | None,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
        wire: Wire | None = None,
    ) -> None:
        self.ca = ca
        self.wire = wire  # None: the network
        self.policy = policy
        self.folder = folder  # the CA's: account key and record, hold, breaker
        self.bundle = str(ca_bundle) if ca_bundle else None
        self.sleep = sleep
        self.monotonic = monotonic
        self.lock = threading.RLock()
        self.health = CAHealth(ca.directory, folder, self.lock)
        self.directory: messages.Directory | None = None
        self.regr: messages.RegistrationResource | None = None
        self._key: JWK | None = None
        self.new_key = False  # made in this run: no account at any CA can have it yet
        self._local = threading.local()

    @property
    def label(self) -> str:
        return self.ca.directory

    @property
    def thread_client(self) -> client.ClientV2 | None:
        """This thread's ACME client, if it has one yet."""
        acme: client.ClientV2 | None = getattr(self._local, "client", None)
        return acme

    def forget(self) -> None:
        """After a key rollover: key, account and this thread's client are found again."""
        self._key = None
        self.regr = None
        self._local.client = None

    def directory_client(self) -> client.ClientV2:
        """This thread's client, made with the directory (fetched once, under the lock,
        so that a CA found down is seen by every thread waiting for it)."""
        acme = self.thread_client
        if acme is None:
            net = Network(self.account_key(), self.bundle, self.ca.timeout, self.sleep,
                          self.policy.max_retry_after, self.wire)  # fmt: skip
            with self.lock:
                self.health.still_up()
                if self.directory is None:
                    try:
                        with self.translated("directory", net):
                            self.directory = client.ClientV2.get_directory(self.ca.directory, net)
                        self._note_ari()
                    except OrderFailed as exc:
                        self.health.trip(exc, self.ca_wide)
                        raise
            acme = client.ClientV2(self.directory, net)
            if self.regr is not None:
                acme.net.account = self.regr
            self._local.client = acme
        return acme

    def _note_ari(self) -> None:
        """Whether this CA offers renewal information, learnt once per CA: a no-op run
        then asks no certificate's window of a CA that has none (castate.py)."""
        assert self.directory is not None  # noqa: S101 - just fetched
        try:
            self.directory["renewalInfo"]
            offered = True
        except KeyError:
            offered = False
        with suppress(OSError):  # a cache: the next run learns it again
            note_ari(self.folder, offered, dt.datetime.now(dt.UTC))

    def translated(self, what: str, net: Network | None = None) -> AbstractContextManager[None]:
        """Foreign exceptions as OrderFailed with the CA's words (problems.translated)."""
        return translated(self.label, self.ca.timeout, what, lambda: self.last_response(net))

    def last_response(self, net: Network | None = None) -> requests.Response | None:
        """The last answer this thread had from the CA."""
        if net is None and self.thread_client is not None:
            net = self.thread_client.net  # type: ignore[assignment]
        return net.last_response if net is not None else None

    def post_as_get(self, acme: client.ClientV2, url: str) -> requests.Response:
        # RFC 8555 section 6.3: an empty payload; the library's helper is private.
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])

    def ca_wide(self, exc: OrderFailed) -> bool:
        """Is a Retry-After about the CA as a whole, not one certificate's order? On the
        directory, a nonce or the account, or a 503 (the whole service is down)."""
        if exc.status == 503 or self.directory is None:
            return True  # (no directory: it could not be had itself)
        resp = self.last_response()
        url = resp.url if resp is not None else ""
        shared = [self.ca.directory]
        for key in ("newNonce", "newAccount"):
            with suppress(KeyError):
                shared.append(str(self.directory[key]))
        return any(url == u or url.startswith(u + "?") for u in shared)

    def clock_problem(self) -> str | None:
        """A word about this machine's clock when the CA's differs by minutes, else None."""
        acme = self.thread_client
        skew = acme.net.clock_skew if acme is not None else None  # type: ignore[attr-defined]
        if skew is None or abs(skew) < CLOCK_TOLERANCE:
            return None
        side = "ahead of" if skew > 0 else "behind"
        return f"this machine's clock is {abs(skew):.0f} s {side} the CA's (check NTP)"

    def account_key(self) -> JWK:
        """The account key, made (0600) on first use."""
        with self.lock:
            if self._key is None:
                path = self.folder / layout.ACCOUNT_KEY
                if path.exists():
                    key = crypto.load_key(path.read_bytes())
                else:
                    key = ec.generate_private_key(ec.SECP256R1())
                    atomic_write(path, crypto.key_pem(key), 0o600)
                    self.new_key = True
                ec_key = isinstance(key, ec.EllipticCurvePrivateKey)
                self._key = JWKEC(key=key) if ec_key else JWKRSA(key=key)
            return self._key
