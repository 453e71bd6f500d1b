"""The ACME adapter's facade: one CA, the issuer port the pipeline consumes (`issue`,
`renewal_window`) and the account's life cycle, over the client in parts
(`certagent.acmeclient`: session, transport, account, orders, authorizations, renewal
information, the CA's health, error translation). Foreign types never leave it: what
the CA said arrives as OrderFailed and its kinds.

Before anything is sent, the CA's health is asked (its Retry-After for every client, a
breaker open in this run or the last); every answer counts for it.

Side effects: network (the CA), filesystem (the account and what the CA said, under
the state dir).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .acmeclient.account import Accounts
from .acmeclient.orders import Orders
from .acmeclient.problems import ProfileUnknown, TermsNotAgreed
from .acmeclient.renewal import RenewalInfo
from .acmeclient.session import Session
from .acmeclient.transport import Wire
from .challenges import SolverFor
from .errors import OrderFailed
from .model import CASpec, OrderOptions, Policy, RenewalWindow

log = logging.getLogger(__name__)

__all__ = ["AcmeIssuer", "ProfileUnknown", "TermsNotAgreed"]


class AcmeIssuer:
    """Issues certificates from one CA; satisfies context.Issuer."""

    def __init__(
        self,
        ca: CASpec,
        policy: Policy,
        account_dir: Path,
        ca_bundle: Path | None,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
        wire: Wire | None = None,
    ) -> None:
        self.ca = ca
        self._s = Session(ca, policy, account_dir, ca_bundle, sleep, monotonic, wire)
        self._accounts = Accounts(self._s)
        self._orders = Orders(self._s, self._accounts)
        self._renewal = RenewalInfo(self._s)

    @property
    def label(self) -> str:
        return self.ca.directory

    def issue(
        self,
        csr_pem: bytes,
        solver: SolverFor,
        options: OrderOptions = OrderOptions(),  # noqa: B008
    ) -> bytes:
        """Order, validate and download; returns the full chain in PEM, leaf first.
        Once the CA was found down in this run (or asked every client to wait), nothing
        more is sent: CAUnavailable at once."""
        self._s.health.refuse()
        try:
            chain = self._orders.issue(csr_pem, solver, options)
        except OrderFailed as exc:
            clock = self._s.clock_problem()
            if clock is not None:  # said where the operator looks: in the error itself
                exc.notes.append(clock)
            self._s.health.trip(exc, self._s.ca_wide)
            raise
        self._s.health.healthy()
        clock = self._s.clock_problem()
        if clock is not None:
            log.warning("%s: %s", self.label, clock)
        return chain

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None:
        """The CA's suggested window from ARI (RFC 9773), or None if it offers none.
        A CA found down is not asked again in this run (a thousand certificates must not
        wait out a thousand timeouts)."""
        self._s.health.refuse("asking")
        try:
            window = self._renewal.window(cert_pem)
        except OrderFailed as exc:
            self._s.health.trip(exc, self._s.ca_wide)
            raise
        self._s.health.healthy()
        return window

    def clock_problem(self) -> str | None:
        return self._s.clock_problem()

    # -- the account's life cycle (RFC 8555 sections 7.6, 7.3.5, 7.3.6) ----------------

    def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Revoke a certificate we were issued, signed with our account key."""
        self._s.health.refuse()  # the CA's Retry-After holds for every request
        self._accounts.revoke(cert_pem, reason)

    def account(self) -> dict[str, object]:
        """The account as the CA holds it: URL, status, contacts (no key material)."""
        self._s.health.refuse()
        return self._accounts.show()

    def deactivate(self) -> str:
        """Deactivate the account for good; returns its URL. Our key is kept."""
        self._s.health.refuse()
        return self._accounts.deactivate()

    def rollover(self) -> str:
        """Replace the account key (keyChange); returns the new key's thumbprint."""
        self._s.health.refuse()
        return self._accounts.rollover()
