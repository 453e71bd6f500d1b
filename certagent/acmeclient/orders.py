"""Orders (RFC 8555 section 7.4): newOrder with the CA's profile and ARI's `replaces`
(falling back to an order without it when the CA answers alreadyReplaced, RFC 9773
section 5, or forgot our account), the authorizations, finalize with our own polling
(honouring Retry-After; the library's sleeps a whole second first), the download, and
the chain the operator prefers among the CA's alternates (section 7.4.2).

Side effects: network (the CA).
"""

from __future__ import annotations

import logging

import requests
from acme import client, messages
from cryptography import x509

from ..challenges import SolverFor
from ..errors import OrderFailed
from ..model import OrderOptions
from .account import Accounts
from .authz import Authorizations, delays
from .problems import ProfileUnknown, about_replaces, code, problem_text, retry_after_seconds
from .renewal import ari_cert_id
from .session import Session
from .transport import NewOrder

log = logging.getLogger(__name__)


class Orders:
    def __init__(self, session: Session, accounts: Accounts) -> None:
        self.s = session
        self.accounts = accounts
        self.authz = Authorizations(session)

    def issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes:
        """Order, validate and download; the full chain in PEM, leaf first. A CA that
        refuses an IP identifier is answered with what it takes to get one."""
        try:
            return self._issue(csr_pem, solver, options)
        except OrderFailed as exc:
            if _has_ip(csr_pem) and (exc.problem_type or "").endswith(IP_REFUSALS):
                exc.notes.append(
                    "IP address certificates (RFC 8738) are issued only under a profile that "
                    "allows them at most CAs: at Let's Encrypt, `profile: shortlived` "
                    f"(profile asked for: {options.profile or 'none'})"
                )
            raise

    def _issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes:
        s = self.s
        with s.translated("order"):
            acme = self.accounts.signed_in()
            profile = self._profile(acme, options.profile)
            replaces = self._replaces(acme, options.replaces)
            try:
                orderr = self._new_order(acme, csr_pem, profile, replaces)
            except messages.Error as exc:
                if code(exc) == "accountDoesNotExist":
                    # The CA forgot us (a test CA restarted, an account purged): again.
                    acme = self.accounts.signed_in(register=True)
                elif replaces is not None and about_replaces(exc):
                    # alreadyReplaced, or a CA that does not take the field (RFC 9773
                    # section 5): the renewal goes on as a plain order.
                    log.info("%s: ordering without `replaces`: %s", s.label, exc)
                    replaces = None
                else:
                    raise
                orderr = self._new_order(acme, csr_pem, profile, replaces)
            deadline = s.monotonic() + s.policy.order_timeout
            self.authz.authorize(acme, orderr, solver, deadline)
            return self._choose_chain(acme, self._finalize(acme, orderr, deadline))

    def _profile(self, acme: client.ClientV2, wanted: str | None) -> str | None:
        """The profile to order, checked against what the directory advertises."""
        if wanted is None:
            return None
        meta = getattr(acme.directory, "meta", None)
        offered = dict(getattr(meta, "profiles", None) or {})
        if wanted not in offered:
            names = ", ".join(sorted(offered)) or "none"
            raise ProfileUnknown(
                self.s.label, f"the CA offers no profile {wanted!r} (it offers: {names})"
            )
        return wanted

    def _replaces(self, acme: client.ClientV2, cert_pem: bytes | None) -> str | None:
        """The ARI id of the certificate a renewal replaces, when the CA speaks ARI."""
        if cert_pem is None:
            return None
        try:
            acme.directory["renewalInfo"]
        except KeyError:
            return None
        try:
            return ari_cert_id(x509.load_pem_x509_certificate(cert_pem))
        except ValueError:
            return None

    def _new_order(
        self, acme: client.ClientV2, csr_pem: bytes, profile: str | None, replaces: str | None
    ) -> messages.OrderResource:
        """newOrder (RFC 8555 section 7.4) with `profile` and ARI's `replaces`, which the
        library's new_order cannot send."""
        csr = x509.load_pem_x509_csr(csr_pem)
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identifiers = [
            messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n)
            for n in names.get_values_for_type(x509.DNSName)
        ] + [  # RFC 8738: an IP address is an `ip` identifier, never a DNS name
            messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip))
            for ip in names.get_values_for_type(x509.IPAddress)
        ]
        order = NewOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
        resp = acme.net.post(acme.directory["newOrder"], order,
                             new_nonce_url=acme.directory["newNonce"])  # fmt: skip
        body = messages.Order.from_json(resp.json())
        authorizations = []
        for url in body.authorizations:
            authz = messages.Authorization.from_json(self.s.post_as_get(acme, url).json())
            authorizations.append(messages.AuthorizationResource(body=authz, uri=url))
        return messages.OrderResource(
            body=body,
            uri=resp.headers.get("Location"),
            authorizations=authorizations,
            csr_pem=csr_pem,
        )

    def _finalize(
        self, acme: client.ClientV2, orderr: messages.OrderResource, deadline: float
    ) -> requests.Response:
        try:
            body = acme.begin_finalization(orderr).body
        except messages.Error as exc:
            if code(exc) != "orderNotReady":
                raise
            body = orderr.body
        resp: requests.Response | None = None
        for delay in delays(self.s, deadline, "issuance"):
            if body.status == messages.STATUS_VALID and body.certificate:
                return self.s.post_as_get(acme, body.certificate)
            if body.status == messages.STATUS_INVALID:
                raise OrderFailed(
                    self.s.label,
                    f"the order became invalid: "
                    f"{problem_text(body.error) if body.error else 'no reason given'}",
                )
            if body.status == messages.STATUS_READY:
                body = acme.begin_finalization(orderr).body
                continue
            wait = retry_after_seconds(resp, 0.0) if resp is not None else 0.0
            self.s.sleep(max(delay, wait))
            resp = self.s.post_as_get(acme, orderr.uri)
            body = messages.Order.from_json(resp.json())
        raise AssertionError("unreachable: _delays raises at the deadline")

    def _choose_chain(self, acme: client.ClientV2, resp: requests.Response) -> bytes:
        """The default chain, or with `ca.preferred_chain` the first of the default and
        its `alternate` links (RFC 8555 section 7.4.2) whose topmost certificate was
        issued by (or is) that name."""
        default = resp.text.encode()
        wanted = self.s.ca.preferred_chain
        if not wanted or _top_names(default) & {wanted}:
            return default
        links = requests.utils.parse_header_links(resp.headers.get("Link", "")) if (
            "Link" in resp.headers) else []  # fmt: skip
        for link in links:
            if link.get("rel") != "alternate" or not link.get("url"):
                continue
            other = self.s.post_as_get(acme, link["url"]).text.encode()
            if wanted in _top_names(other):
                log.info("%s: using the alternate chain to %s", self.s.label, wanted)
                return other
        log.warning("%s: no chain leads to %r; keeping the default", self.s.label, wanted)
        return default


IP_REFUSALS = (":rejectedIdentifier", ":unsupportedIdentifier", ":malformed",
               ":invalidProfile")  # fmt: skip


def _has_ip(csr_pem: bytes) -> bool:
    csr = x509.load_pem_x509_csr(csr_pem)
    try:
        alt = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return bool(alt.get_values_for_type(x509.IPAddress))


def _top_names(fullchain: bytes) -> set[str]:
    """The issuer CN and subject CN of the topmost certificate of a chain."""
    try:
        top = x509.load_pem_x509_certificates(fullchain)[-1]
    except (ValueError, IndexError):
        return set()
    names = set()
    for name in (top.issuer, top.subject):
        for attr in name.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
            names.add(str(attr.value))
    return names
