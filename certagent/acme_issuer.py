"""The ACME adapter: the only module that imports `acme` and `josepy`.

It turns a CSR into a certificate chain against one CA (RFC 8555): account
(created once, key 0600, reused), order, http-01 challenges for the
authorizations that are not already valid, our own polling (honouring
Retry-After), finalize and download. Foreign exceptions are translated into
`OrderFailed` at this border; josepy types never leave this module.

Side effects: network (the CA), filesystem (the account under the state dir).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, errors, jws, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.interfaces import JSONDeSerializable
from josepy.json_util import field as jose_field
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from . import __version__, crypto, layout
from .castate import breaker_open, close_breaker, open_breaker, read_hold, write_hold
from .challenges import Solver, SolverFor
from .errors import CABusy, CAUnavailable, CAUnreachable, OrderFailed
from .model import CASpec, OrderOptions, Policy, RenewalWindow
from .store import atomic_write

log = logging.getLogger(__name__)

USER_AGENT = f"certagent/{__version__} acme-python"
BAD_NONCE_RETRIES = 10  # pebble rejects 5 % of nonces by default; the library retries once
BUSY_RETRIES = 3  # 429 and 503 with a Retry-After we are willing to wait for
CLOCK_TOLERANCE = 120.0  # seconds of skew against the CA's Date header that we name
POLL_DELAYS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # a local CA: at once
BREAKER_AFTER = 3  # consecutive 5xx answers in a run before nothing more is sent to the CA


class _NewOrder(messages.NewOrder):
    """newOrder with ARI's `replaces` (RFC 9773 section 5)."""

    replaces: str | None = jose_field("replaces", omitempty=True)


class _Raw(JSONDeSerializable):
    """A JSON object posted as it is (the inner JWS of a keyChange)."""

    def __init__(self, jobj: dict[str, Any]) -> None:
        self.jobj = jobj

    def to_partial_json(self) -> dict[str, Any]:
        return self.jobj

    @classmethod
    def from_json(cls, jobj: Any) -> _Raw:
        return cls(jobj)


class ProfileUnknown(OrderFailed):
    """The configured profile is not among the CA's `meta.profiles`."""

    code = "profile"


class TermsNotAgreed(OrderFailed):
    """The CA has terms of service and the configuration does not agree to them."""

    code = "terms-of-service"


class _Network(client.ClientNetwork):
    """ClientNetwork that retries bad nonces in a loop and honours Retry-After on 429/503."""

    def __init__(
        self,
        key: JWK,
        ca_bundle: str | None,
        timeout: float,
        sleep: Callable[[float], None],
        max_wait: float,
    ) -> None:
        super().__init__(key, alg=_alg(key), user_agent=USER_AGENT, timeout=math.ceil(timeout))
        if ca_bundle is not None:
            # requests accepts a CA bundle path wherever it accepts verify=True;
            # verification stays on, with the configured roots added.
            self.verify_ssl = ca_bundle  # type: ignore[assignment]
        self.last_response: requests.Response | None = None
        self.clock_skew: float | None = None  # our clock minus the CA's, from its Date
        self._sleep = sleep
        self._max_wait = max_wait

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        """As the library's, except that a 409 carrying a problem document (RFC 9773
        section 5's alreadyReplaced, RFC 8555 section 6.7) is that problem: the library
        raises ConflictError for every 409 before reading its body. A 409 with a
        Location and no problem (an account that exists) stays a ConflictError."""
        if response.status_code == 409 and "Location" not in response.headers:
            problem = _problem_of(response)
            if problem is not None:
                raise problem
        checked: requests.Response = super()._check_response(response, content_type)
        return checked

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = super()._send_request(method, url, *args, **kwargs)
        self._note_clock(self.last_response)
        return self.last_response

    def _note_clock(self, resp: requests.Response) -> None:
        """The CA's Date header against our clock (RFC 9110 section 6.6.1): a skew of
        minutes makes new certificates look not yet valid here, so it is named."""
        try:
            theirs = email.utils.parsedate_to_datetime(resp.headers["Date"])
        except (KeyError, TypeError, ValueError, IndexError):
            return
        if theirs.tzinfo is None:
            return
        self.clock_skew = (dt.datetime.now(dt.UTC) - theirs).total_seconds()

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        nonce_failures = busy = 0
        while True:
            try:
                return self._post_once(*args, **kwargs)
            except (messages.Error, errors.ClientError) as error:
                code = _code(error) if isinstance(error, messages.Error) else None
                if code == "badNonce" and nonce_failures < BAD_NONCE_RETRIES:
                    nonce_failures += 1
                    continue
                # 429/503 are retried whatever the body says (a problem document, plain
                # text or HTML from a proxy), waiting out Retry-After up to the bound.
                wait = self._busy_wait()
                if wait is None or busy >= BUSY_RETRIES:
                    raise
                busy += 1
                self._sleep(wait)

    def get(
        self, url: str, content_type: str = client.ClientNetwork.JSON_CONTENT_TYPE, **kwargs: Any
    ) -> requests.Response:
        for _ in range(BUSY_RETRIES):
            try:
                return super().get(url, content_type, **kwargs)
            except (messages.Error, errors.ClientError):
                wait = self._busy_wait()
                if wait is None:
                    raise
                self._sleep(wait)
        return super().get(url, content_type, **kwargs)

    def _busy_wait(self) -> float | None:
        """Seconds to wait when the CA said 429/503 with an acceptable Retry-After."""
        resp = self.last_response
        if resp is None or resp.status_code not in (429, 503):
            return None
        wait = _retry_after_seconds(resp, default=1.0)
        return wait if wait <= self._max_wait else None


class AcmeIssuer:
    """Issues certificates from one CA; satisfies pipeline.Issuer."""

    def __init__(
        self,
        ca: CASpec,
        policy: Policy,
        account_dir: Path,
        ca_bundle: Path | None,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.ca = ca
        self._policy = policy
        self._account_dir = account_dir
        self._bundle = str(ca_bundle) if ca_bundle else None
        self._sleep = sleep
        self._monotonic = monotonic
        # One ACME client (connection pool, nonces, last response) per thread, so that
        # concurrent orders never read each other's responses; the directory, the
        # account key and the account are shared, each found once under the lock.
        self._local = threading.local()
        self._lock = threading.RLock()
        self._directory: messages.Directory | None = None
        self._regr: messages.RegistrationResource | None = None
        self._key: JWK | None = None
        self._down: str | None = None  # why the CA is not asked again in this run
        self._hold: dt.datetime | None = None  # until when (the CA's Retry-After)
        self._outages = 0  # consecutive 5xx answers in this run (the breaker's count)
        # An earlier run left the breaker open: the first request is a probe, and one
        # more outage answer stops the run's requests at once.
        self._probing = breaker_open(account_dir) is not None

    @property
    def label(self) -> str:
        return self.ca.directory

    @property
    def _client(self) -> client.ClientV2 | None:
        acme: client.ClientV2 | None = getattr(self._local, "client", None)
        return acme

    @_client.setter
    def _client(self, acme: client.ClientV2 | None) -> None:
        self._local.client = acme

    # -- public --------------------------------------------------------------------

    def issue(
        self,
        csr_pem: bytes,
        solver: SolverFor,
        options: OrderOptions = OrderOptions(),  # noqa: B008
    ) -> bytes:
        """Order, validate and download; returns the full chain in PEM, leaf first.

        Once the CA was unreachable or kept answering 429/503 in this run, the next
        certificates do not send their own orders into the outage: they fail at once."""
        self._refuse_if_down()
        try:
            chain = self._issue(csr_pem, solver, options)
        except OrderFailed as exc:
            clock = self.clock_problem()
            if clock is not None:  # say it where the operator looks: in the error itself
                exc.args = (f"{exc.args[0]} ({clock})", *exc.args[1:])
            self._trip(exc)
            raise
        self._healthy()
        clock = self.clock_problem()
        if clock is not None:
            log.warning("%s: %s", self.label, clock)
        return chain

    def _still_up(self) -> None:
        """Raise when another thread found the CA down while this one waited its turn."""
        if self._down is not None:
            repeat = CAUnavailable(self.label, f"not sent: {self._down}")
            repeat.repeated = True  # said once already in this run
            repeat.retry_at = self._hold
            raise repeat

    def _refuse_if_down(self) -> None:
        """Nothing goes to a CA whose Retry-After for every client holds (hold.json, kept
        across runs) or that this run found down (the breaker)."""
        with self._lock:
            if self._down is None:
                self._down = self._held()
        if self._down is not None:
            refused = CAUnavailable(self.label, f"not sent: {self._down}")
            refused.retry_at = self._hold
            raise refused

    def _trip(self, exc: OrderFailed) -> None:
        """Count what says the CA itself is in trouble, and stop sending it anything in
        this run when it is: no answer at all (at once), a CA-wide Retry-After (at once,
        and kept across runs in hold.json), or BREAKER_AFTER consecutive 5xx answers (one,
        when this run is probing a breaker an earlier run left open). The breaker is kept
        open across runs (breaker.json) so the next run sends one request first."""
        if getattr(exc, "counted", False) or isinstance(exc, CAUnavailable):
            return
        exc.counted = True  # type: ignore[attr-defined]
        with self._lock:
            if self._down is not None:  # said by the request that found it first
                return
            if exc.retry_at is not None and self._ca_wide(exc):
                until = f" until {exc.retry_at:%Y-%m-%d %H:%M:%S} UTC"
                self._down = f"the CA answered {exc.status or 'busy'} and asked every client " \
                    f"to wait{until}"  # fmt: skip
                self._hold = exc.retry_at
                self._remember(lambda: write_hold(self._account_dir, exc.retry_at or _utcnow(),
                                                  str(exc)))  # fmt: skip
                return
            if isinstance(exc, CAUnreachable):
                self._down = f"the CA was unreachable earlier in this run ({exc})"
            elif exc.status is not None and exc.status >= 500:
                self._outages += 1
                if self._outages >= (1 if self._probing else BREAKER_AFTER):
                    probe = "the probe of a CA found down by an earlier run failed: " if (
                        self._probing) else ""  # fmt: skip
                    self._down = f"{probe}{self._outages} answer(s) of HTTP {exc.status} " \
                        "in a row from the CA (circuit breaker)"  # fmt: skip
            else:
                self._outages = 0  # an answer that is the CA working (a refusal, a 4xx)
                return
            if self._down is not None:
                why = self._down
                self._remember(lambda: open_breaker(self._account_dir, _utcnow(), why))

    def _ca_wide(self, exc: OrderFailed) -> bool:
        """A Retry-After about the CA as a whole, not one certificate's order: on the
        directory, a nonce or the account, or a 503 (the whole service is down)."""
        if exc.status == 503:
            return True
        resp = self._client.net.last_response if self._client is not None else None  # type: ignore[attr-defined]
        url = resp.url if resp is not None else ""
        directory = self._directory
        if directory is None:
            return True  # the directory itself could not be had
        shared = [self.ca.directory]
        for key in ("newNonce", "newAccount"):
            with suppress(KeyError):
                shared.append(str(directory[key]))
        return any(url == u or url.startswith(u + "?") for u in shared)

    def _healthy(self) -> None:
        """An answer that shows the CA working: the breaker's count starts again, and a
        breaker an earlier run left open is closed."""
        with self._lock:
            self._outages = 0
            if self._probing:
                self._probing = False
                self._remember(lambda: close_breaker(self._account_dir))

    def _remember(self, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # a full disk: this run still stops; the next asks again
            log.warning("%s: cannot record what the CA said: %s", self.label, exc.strerror)

    def _held(self) -> str | None:
        """Why nothing may go to this CA now (its Retry-After from an earlier run)."""
        held = read_hold(self._account_dir, _utcnow())
        if held is None:
            return None
        self._hold = held[0]
        return held[1]

    def clock_problem(self) -> str | None:
        """A word about this machine's clock when the CA's differs by minutes, else None."""
        skew = self._client.net.clock_skew if self._client is not None else None  # type: ignore[attr-defined]
        if skew is None or abs(skew) < CLOCK_TOLERANCE:
            return None
        side = "ahead of" if skew > 0 else "behind"
        return f"this machine's clock is {abs(skew):.0f} s {side} the CA's (check NTP)"

    def _issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes:
        with self._translated("order"):
            acme = self._account()
            profile = self._profile(acme, options.profile)
            replaces = self._replaces(acme, options.replaces)
            try:
                orderr = self._new_order(acme, csr_pem, profile, replaces)
            except messages.Error as exc:
                if _code(exc) == "accountDoesNotExist":
                    # The CA forgot us (a test CA restarted, an account purged): again.
                    acme = self._account(register=True)
                elif replaces is not None and _about_replaces(exc):
                    # alreadyReplaced, or a CA that does not take the field (RFC 9773
                    # section 5): the renewal goes on as a plain order.
                    log.info("%s: ordering without `replaces`: %s", self.label, exc)
                    replaces = None
                else:
                    raise
                orderr = self._new_order(acme, csr_pem, profile, replaces)
            deadline = self._monotonic() + self._policy.order_timeout
            self._authorize(acme, orderr, solver, deadline)
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
                self.label, f"the CA offers no profile {wanted!r} (it offers: {names})"
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
            return _ari_cert_id(x509.load_pem_x509_certificate(cert_pem))
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
        ]
        order = _NewOrder(identifiers=identifiers, profile=profile or "", replaces=replaces)
        resp = acme.net.post(acme.directory["newOrder"], order,
                             new_nonce_url=acme.directory["newNonce"])  # fmt: skip
        body = messages.Order.from_json(resp.json())
        authorizations = []
        for url in body.authorizations:
            authz = messages.Authorization.from_json(self._post_as_get(acme, url).json())
            authorizations.append(messages.AuthorizationResource(body=authz, uri=url))
        return messages.OrderResource(
            body=body,
            uri=resp.headers.get("Location"),
            authorizations=authorizations,
            csr_pem=csr_pem,
        )

    def _choose_chain(self, acme: client.ClientV2, resp: requests.Response) -> bytes:
        """The default chain, or with `ca.preferred_chain` the first of the default and
        its `alternate` links (RFC 8555 section 7.4.2) whose topmost certificate was
        issued by (or is) that name."""
        default = resp.text.encode()
        wanted = self.ca.preferred_chain
        if not wanted or _top_names(default) & {wanted}:
            return default
        links = requests.utils.parse_header_links(resp.headers.get("Link", "")) if (
            "Link" in resp.headers) else []  # fmt: skip
        for link in links:
            if link.get("rel") != "alternate" or not link.get("url"):
                continue
            other = self._post_as_get(acme, link["url"]).text.encode()
            if wanted in _top_names(other):
                log.info("%s: using the alternate chain to %s", self.label, wanted)
                return other
        log.warning("%s: no chain leads to %r; keeping the default", self.label, wanted)
        return default

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None:
        """The CA's suggested window from ARI (RFC 9773), or None if it offers none.
        A CA found unreachable is not asked again in this run (a thousand certificates
        must not wait out a thousand timeouts)."""
        with self._lock:
            if self._down is None:
                self._down = self._held()
        if self._down is not None:
            repeat = CAUnavailable(self.label, f"not asking: {self._down}")
            repeat.repeated = True  # said once already in this run (or by the hold)
            repeat.retry_at = self._hold
            raise repeat
        try:
            window = self._renewal_window(cert_pem)
        except OrderFailed as exc:
            self._trip(exc)
            raise
        self._healthy()
        return window

    def _renewal_window(self, cert_pem: bytes) -> RenewalWindow | None:
        with self._translated("renewal info"):
            acme = self._directory_client()
            try:
                base = acme.directory["renewalInfo"]
            except KeyError:
                return None
            cert = x509.load_pem_x509_certificate(cert_pem)
            resp = acme.net.get(f"{base.rstrip('/')}/{_ari_cert_id(cert)}")
            info = messages.RenewalInfo.from_json(resp.json())
            window = info.suggested_window
            wait = _retry_after_seconds(resp, 0.0)
            next_check = _utcnow() + dt.timedelta(seconds=wait) if wait > 0 else None
            url = getattr(info, "explanation_url", None)
            return RenewalWindow(
                _aware(window.start), _aware(window.end), str(url) if url else None, next_check
            )

    # -- account -------------------------------------------------------------------

    def _directory_client(self) -> client.ClientV2:
        acme = self._client
        if acme is None:
            key = self._account_key()
            net = _Network(
                key, self._bundle, self.ca.timeout, self._sleep, self._policy.max_retry_after
            )
            with self._lock:
                self._still_up()
                if self._directory is None:
                    try:
                        with self._translated("directory", net):
                            self._directory = client.ClientV2.get_directory(
                                self.ca.directory, net
                            )
                    except OrderFailed as exc:
                        self._trip(exc)  # the RLock is ours: the others see it at once
                        raise
            acme = client.ClientV2(self._directory, net)
            if self._regr is not None:
                acme.net.account = self._regr
            self._client = acme
        return acme

    def _account(self, register: bool = False) -> client.ClientV2:
        """The ACME account of our key: from account.json when it is sound, else found at
        the CA (onlyReturnExisting, RFC 8555 section 7.3.1), else registered. A record
        with an empty or foreign URL is repaired, never used."""
        acme = self._directory_client()
        if acme.net.account is not None and not register:
            return acme
        with self._lock:  # one thread finds or registers the account; the others use it
            self._still_up()
            # (after the CA forgot the account, a thread that finds it registered anew
            # by another since its own order was refused uses that one)
            if self._regr is not None and (not register or self._regr is not acme.net.account):
                acme.net.account = self._regr
                return acme
            try:
                with self._translated("account"):
                    return self._found_account(acme, register)
            except OrderFailed as exc:
                self._trip(exc)  # under the lock: the threads waiting for it send nothing
                raise

    def _found_account(self, acme: client.ClientV2, register: bool) -> client.ClientV2:
        regr_file = self._account_dir / layout.ACCOUNT
        if not register:
            stored = self._stored_account(regr_file)
            if stored is not None:
                acme.net.account = self._regr = stored
                return acme
        acme.net.account = None
        existed = (self._account_dir / layout.ACCOUNT_KEY).exists()
        regr = self._find_existing(acme) if existed else None
        if regr is None:
            regr = self._register(acme)
            log.info("registered ACME account %s", regr.uri)
        else:
            log.warning("recovered the ACME account %s of our key from the CA", regr.uri)
        acme.net.account = self._regr = regr
        record = {"directory": self.ca.directory, "registration": regr.to_json()}
        atomic_write(regr_file, json.dumps(record, indent=2).encode(), 0o600)
        return acme

    def _stored_account(self, path: Path) -> messages.RegistrationResource | None:
        """account.json if it is for this CA and names an account URL on its host."""
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("directory") != self.ca.directory:
                return None
            regr: messages.RegistrationResource = messages.RegistrationResource.from_json(
                stored["registration"]
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError,
                DeserializationError) as exc:  # fmt: skip
            log.warning("%s is unreadable (%s): looking the account up at the CA", path, exc)
            return None
        if not _same_origin(regr.uri or "", self.ca.directory):
            log.warning("%s names no account URL of this CA (%r): looking it up", path, regr.uri)
            return None
        return regr

    def _find_existing(self, acme: client.ClientV2) -> messages.RegistrationResource | None:
        """The account our key already has at this CA, or None (accountDoesNotExist)."""
        query = messages.NewRegistration.from_data(only_return_existing=True)
        try:
            acme.new_account(query)
        except errors.ConflictError as exc:  # 200 + Location: it exists
            return self._located(exc)
        except messages.Error as exc:
            if _code(exc) == "accountDoesNotExist":
                return None
            raise
        # A CA that ignored onlyReturnExisting created or returned the account: use it.
        account: messages.RegistrationResource | None = acme.net.account
        return account if account is not None and account.uri else None

    def _located(self, exc: errors.ConflictError) -> messages.RegistrationResource:
        location = getattr(exc, "location", "") or ""
        if not _same_origin(location, self.ca.directory):
            raise OrderFailed(self.label, f"the CA named no usable account URL ({location!r})")
        return messages.RegistrationResource(body=messages.Registration(), uri=location)

    def _register(self, acme: client.ClientV2) -> messages.RegistrationResource:
        key = self._account_key()
        eab = None
        if self.ca.eab is not None:
            eab = messages.ExternalAccountBinding.from_data(
                key.public_key(), self.ca.eab.kid, self.ca.eab.hmac_key, acme.directory
            )
        meta = getattr(acme.directory, "meta", None)
        tos = getattr(meta, "terms_of_service", None)
        if tos and not self.ca.agree_tos:
            raise TermsNotAgreed(
                self.label,
                f"registering an account needs the CA's terms of service, {tos}: read them, "
                "then set ca.agree_tos: true (nothing was registered)",
            )
        new = messages.NewRegistration.from_data(
            contact=self.ca.contact,
            terms_of_service_agreed=True if tos else None,
            external_account_binding=eab,
        )
        try:
            return acme.new_account(new)
        except errors.ConflictError as exc:
            # The key already has an account (RFC 8555 section 7.3.1): its URL is the
            # Location header, which the library keeps in `location`.
            return self._located(exc)

    def _account_key(self) -> JWK:
        with self._lock:
            return self._loaded_key()

    def _loaded_key(self) -> JWK:
        if self._key is None:
            path = self._account_dir / layout.ACCOUNT_KEY
            if path.exists():
                key = crypto.load_key(path.read_bytes())
            else:
                key = ec.generate_private_key(ec.SECP256R1())
                atomic_write(path, crypto.key_pem(key), 0o600)
            self._key = (
                JWKEC(key=key) if isinstance(key, ec.EllipticCurvePrivateKey) else JWKRSA(key=key)
            )
        return self._key

    # -- lifecycle: revoke, account (RFC 8555 sections 7.6, 7.3.5, 7.3.6) -----------

    def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Revoke a certificate we were issued, signed with our account key."""
        self._refuse_if_down()  # the CA's Retry-After holds for every request
        with self._translated("revocation"):
            acme = self._account()
            acme.revoke(x509.load_pem_x509_certificate(cert_pem), reason)

    def account(self) -> dict[str, object]:
        """The account as the CA holds it: URL, status, contacts (no key material)."""
        self._refuse_if_down()  # the CA's Retry-After holds for every request
        with self._translated("account"):
            acme = self._account()
            regr = _registered(acme)
            try:  # POST-as-GET (RFC 8555 section 6.3); some servers want an empty update
                resp = self._post_as_get(acme, regr.uri)
            except messages.Error:
                resp = acme.net.post(regr.uri, _Raw({}),
                                     new_nonce_url=acme.directory["newNonce"])  # fmt: skip
            body = resp.json()
            return {
                "url": regr.uri,
                "status": body.get("status"),
                "contact": list(body.get("contact") or []),
                "orders": body.get("orders"),
                "key_thumbprint": _thumbprint(self._account_key()),
            }

    def deactivate(self) -> str:
        """Deactivate the account for good; returns its URL. Our key is kept."""
        self._refuse_if_down()  # the CA's Retry-After holds for every request
        with self._translated("account deactivation"):
            acme = self._account()
            regr = _registered(acme)
            acme.deactivate_registration(regr)
            (self._account_dir / layout.ACCOUNT).rename(
                self._account_dir / f"account.json.deactivated-{_utcnow():%Y%m%dT%H%M%SZ}"
            )
            return str(regr.uri)

    def rollover(self) -> str:
        """Replace the account key (keyChange): the new key is written aside first, the CA
        is told, then it takes the old one's place (which is kept as key.pem.old-<time>)."""
        self._refuse_if_down()  # the CA's Retry-After holds for every request
        with self._translated("account key rollover"):
            acme = self._account()
            old_key = self._account_key()
            new_pem = crypto.key_pem(ec.generate_private_key(ec.SECP256R1()))
            pending = self._account_dir / "key.pem.new"
            atomic_write(pending, new_pem, 0o600)  # a kill from here keeps both keys
            new_key = JWKEC(key=crypto.load_key(new_pem))
            url = acme.directory["keyChange"]
            inner = jws.JWS.sign(
                json.dumps({"account": _registered(acme).uri,
                            "oldKey": old_key.public_key().to_partial_json()}).encode(),
                key=new_key, alg=ES256, nonce=None, url=url,
            )  # fmt: skip
            acme.net.post(url, _Raw(inner.to_partial_json()),
                          new_nonce_url=acme.directory["newNonce"])  # fmt: skip
            key_file = self._account_dir / layout.ACCOUNT_KEY
            key_file.rename(self._account_dir / f"key.pem.old-{_utcnow():%Y%m%dT%H%M%SZ}")
            pending.rename(key_file)
            self._key = None
            self._client = None
            self._regr = None
            return _thumbprint(new_key)

    # -- order ---------------------------------------------------------------------

    def _authorize(
        self,
        acme: client.ClientV2,
        orderr: messages.OrderResource,
        solver_for: SolverFor,
        deadline: float,
    ) -> None:
        presented: list[tuple[Solver, str, str]] = []
        used: list[Solver] = []  # each solver once, in the order first used
        try:
            pending: list[tuple[messages.AuthorizationResource, messages.ChallengeBody, Any]] = []
            for authzr in orderr.authorizations:
                domain = authzr.body.identifier.value
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # reused authorization: nothing to answer
                if authzr.body.status != messages.STATUS_PENDING:
                    raise OrderFailed(
                        self.label, f"authorization for {domain} is {authzr.body.status}"
                    )
                name = f"*.{domain}" if authzr.body.wildcard else domain
                solver = solver_for(name)
                if solver not in used:
                    used.append(solver)
                challb = _challenge(authzr, solver.kind)
                if challb is None:
                    offered = ", ".join(str(_typ(c)) for c in authzr.body.challenges)
                    raise OrderFailed(
                        self.label,
                        f"the CA offers no {solver.kind} challenge for {name} "
                        f"(offered: {offered or 'none'})",
                    )
                if solver.kind == "tls-alpn-01":
                    # The acme library no longer knows tls-alpn-01 (RFC 8737): the key
                    # authorization is made here, the solver makes the certificate, and
                    # the challenge is answered with an empty object (RFC 8555 7.5.1).
                    token = str(challb.chall.jobj.get("token", ""))
                    validation = f"{token}.{_thumbprint(self._account_key())}"
                    response: Any = _Raw({})
                else:
                    response, validation = challb.response_and_validation(self._account_key())
                    token = challb.chall.encode("token")
                presented.append((solver, domain, token))
                solver.present(domain, token, validation)
                pending.append((authzr, challb, response))
            # All presented: dns-01 publishes every record of the order at once and
            # waits for them; only then is the CA asked to validate.
            for solver in used:
                solver.ready()
            for _, challb, response in pending:
                acme.answer_challenge(challb, response)
            for authzr, _, _ in pending:
                self._await_authorization(acme, authzr, deadline)
        finally:
            for solver, domain, token in presented:
                try:
                    solver.cleanup(domain, token)
                except Exception as exc:  # cleanup must not hide the order's own outcome
                    log.warning("challenge cleanup for %s failed: %s", domain, exc)
            for solver in used:
                try:
                    solver.finish()
                except Exception as exc:  # the journal keeps them: the next run removes them
                    log.warning("%s cleanup failed: %s", solver.kind, exc)

    def _await_authorization(
        self, acme: client.ClientV2, authzr: messages.AuthorizationResource, deadline: float
    ) -> None:
        domain = authzr.body.identifier.value
        for delay in self._delays(deadline, f"validation of {domain}"):
            resp = self._post_as_get(acme, authzr.uri)
            body = messages.Authorization.from_json(resp.json())
            if body.status == messages.STATUS_VALID:
                return
            problems = [c.error for c in body.challenges if c.error is not None]
            if body.status != messages.STATUS_PENDING or problems:
                # step-ca leaves a failed authorization pending with an error on the challenge.
                detail = "; ".join(_problem_text(p) for p in problems) or str(body.status)
                ptype = problems[0].typ if problems else None
                raise OrderFailed(
                    self.label,
                    f"validation of {domain} failed: {detail}",
                    ptype,
                    problems[0].detail if problems else None,
                )
            self._sleep(max(delay, _retry_after_seconds(resp, 0.0)))

    def _finalize(
        self, acme: client.ClientV2, orderr: messages.OrderResource, deadline: float
    ) -> requests.Response:
        try:
            body = acme.begin_finalization(orderr).body
        except messages.Error as exc:
            if _code(exc) != "orderNotReady":
                raise
            body = orderr.body
        resp: requests.Response | None = None
        for delay in self._delays(deadline, "issuance"):
            if body.status == messages.STATUS_VALID and body.certificate:
                return self._post_as_get(acme, body.certificate)
            if body.status == messages.STATUS_INVALID:
                raise OrderFailed(
                    self.label,
                    f"the order became invalid: "
                    f"{_problem_text(body.error) if body.error else 'no reason given'}",
                )
            if body.status == messages.STATUS_READY:
                body = acme.begin_finalization(orderr).body
                continue
            wait = _retry_after_seconds(resp, 0.0) if resp is not None else 0.0
            self._sleep(max(delay, wait))
            resp = self._post_as_get(acme, orderr.uri)
            body = messages.Order.from_json(resp.json())
        raise AssertionError("unreachable: _delays raises at the deadline")

    def _delays(self, deadline: float, what: str) -> Iterator[float]:
        """Short delays first (a local CA answers in milliseconds), then at most 2 s."""
        i = 0
        while self._monotonic() < deadline:
            yield POLL_DELAYS[min(i, len(POLL_DELAYS) - 1)]
            i += 1
        raise OrderFailed(
            self.label,
            f"{what} did not finish within {self._policy.order_timeout:g} s (policy.order_timeout)",
        )

    def _post_as_get(self, acme: client.ClientV2, url: str) -> requests.Response:
        # RFC 8555 section 6.3: an empty payload; the library's helper is private.
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])

    @contextmanager
    def _translated(self, what: str, net: _Network | None = None) -> Iterator[None]:
        """Translate foreign exceptions into OrderFailed with the CA's own words, the
        HTTP status that carried them and the CA's Retry-After. A problem document is
        read by its type whatever the status and whether or not the acme library knows
        the type (RFC 8555 section 6.7); 429/503 and rateLimited are CABusy."""
        try:
            yield
        except OrderFailed:
            raise
        except messages.Error as exc:
            resp = self._last_response(net)
            status = resp.status_code if resp is not None else None
            message = f"{what} refused: {_problem_text(exc)}"
            if status is not None and status >= 500:
                message += f" (HTTP {status})"
            failed: OrderFailed
            if _code(exc) == "rateLimited" or status in (429, 503):
                failed = CABusy(self.label, message, exc.typ, exc.detail, status=status)
            else:
                failed = OrderFailed(self.label, message, exc.typ, exc.detail)
            failed.status = status
            failed.retry_at = _retry_at(resp)
            raise failed from exc
        except requests.exceptions.SSLError as exc:
            raise OrderFailed(
                self.label,
                f"TLS verification of the CA failed ({_root_cause(exc)}); "
                "add its root under ca.trust_roots",
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise CAUnreachable(
                self.label, f"{what}: the CA did not answer within {self.ca.timeout:g} s"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise CAUnreachable(self.label, f"cannot reach the CA: {_root_cause(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise OrderFailed(self.label, f"request to the CA failed: {_root_cause(exc)}") from exc
        except errors.Error as exc:
            text = _client_error_text(exc)
            resp = _response(exc) or self._last_response(net)
            status = resp.status_code if resp is not None else None
            if status in (429, 503):
                failed = CABusy(self.label, f"{what}: the CA is busy: {text}", status=status)
            else:
                failed = OrderFailed(self.label, f"{what} failed: {text}")
            failed.status = status
            failed.retry_at = _retry_at(resp)
            raise failed from exc
        except KeyError as exc:  # a directory without newNonce, newAccount or newOrder
            raise OrderFailed(
                self.label, f"{what}: the CA's directory does not offer {exc} (not ACME?)"
            ) from exc
        except (ValueError, TypeError, DeserializationError) as exc:
            raise OrderFailed(self.label, f"{what}: unexpected answer from the CA: {exc}") from exc

    def _last_response(self, net: _Network | None = None) -> requests.Response | None:
        """The last answer this thread had from the CA."""
        if net is None and self._client is not None:
            net = self._client.net  # type: ignore[assignment]
        return net.last_response if net is not None else None


def _challenge(authzr: messages.AuthorizationResource, kind: str) -> messages.ChallengeBody | None:
    for challb in authzr.body.challenges:
        if _typ(challb) == kind:
            return challb
    return None


def _typ(challb: messages.ChallengeBody) -> object:
    """The challenge's type, also for those the acme library no longer parses."""
    if isinstance(challb.chall, challenges.UnrecognizedChallenge):
        return challb.chall.jobj.get("type")
    return challb.chall.typ


def _alg(key: JWK) -> JWASignature:
    if isinstance(key, JWKEC):
        return ES256
    return RS256


def _code(problem: messages.Error) -> str | None:
    """The ACME error type's name (`alreadyReplaced`), also for types the acme library
    does not list (its own `code` is None for those)."""
    typ = str(problem.typ or "")
    prefix = messages.ERROR_PREFIX
    return typ[len(prefix) :] if typ.startswith(prefix) else None


def _problem_of(response: requests.Response) -> messages.Error | None:
    """The problem document a response carries (RFC 7807), or None."""
    try:
        jobj = response.json()
    except ValueError:
        return None
    if not isinstance(jobj, dict) or "type" not in jobj:
        return None
    try:
        problem: messages.Error = messages.Error.from_json(jobj)
    except (DeserializationError, TypeError, ValueError):
        return None
    return problem


def _retry_at(resp: requests.Response | None) -> dt.datetime | None:
    """The CA's Retry-After as a time, when the answer carried one."""
    if resp is None or "Retry-After" not in resp.headers:
        return None
    return _utcnow() + dt.timedelta(seconds=_retry_after_seconds(resp, 0.0))


def _problem_text(problem: messages.Error) -> str:
    text = f"{problem.typ}: {problem.detail or problem.title or 'no detail'}"
    for sub in problem.subproblems or ():
        ident = sub.identifier.value if sub.identifier else "?"
        text += f"; {ident}: {sub.typ}: {sub.detail}"
    return text


def _response(exc: errors.Error) -> requests.Response | None:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, tuple) and arg and isinstance(arg[0], requests.Response):
        arg = arg[0]
    return arg if isinstance(arg, requests.Response) else None


def _status(exc: errors.Error) -> int | None:
    resp = _response(exc)
    return resp.status_code if resp is not None else None


def _client_error_text(exc: errors.Error) -> str:
    resp = _response(exc)
    if resp is not None:
        text = f"HTTP {resp.status_code} from {resp.url}"
        if "Retry-After" in resp.headers:
            text += f" (Retry-After: {resp.headers['Retry-After']}, beyond what this run waits)"
        return text
    return str(exc) or type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. 'Connection refused'), not urllib3's wrapper prose."""
    reason, todo, seen = str(exc), [exc], set()
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        links = (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args)
        todo.extend(x for x in links if isinstance(x, BaseException))
    return reason


def _retry_after_seconds(resp: requests.Response | None, default: float) -> float:
    """Retry-After as seconds (RFC 9110 section 10.2.3): delta-seconds or an HTTP date."""
    if resp is None or "Retry-After" not in resp.headers:
        return default
    when = client.ClientV2.retry_after(resp, int(default))
    return max(0.0, (when - dt.datetime.now()).total_seconds())


def _ari_cert_id(cert: x509.Certificate) -> str:
    """The ARI certificate identifier (RFC 9773 section 4.1): AKI '.' serial, base64url."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise ValueError("the certificate has no authority key identifier")
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    b64 = base64.urlsafe_b64encode
    return (
        f"{b64(aki.key_identifier).decode().rstrip('=')}.{b64(serial_bytes).decode().rstrip('=')}"
    )


def _registered(acme: client.ClientV2) -> messages.RegistrationResource:
    account: messages.RegistrationResource | None = acme.net.account
    if account is None or not account.uri:
        raise OrderFailed("ACME", "no account")  # _account() always sets one
    return account


def _thumbprint(key: JWK) -> str:
    """RFC 7638 thumbprint of the public key, base64url: names the key, reveals nothing."""
    return base64.urlsafe_b64encode(key.thumbprint()).decode().rstrip("=")


def _about_replaces(exc: messages.Error) -> bool:
    """alreadyReplaced, or a CA that refuses the `replaces` field itself."""
    code = _code(exc)
    return code == "alreadyReplaced" or (
        code in ("malformed", "badRequest") and "replaces" in (exc.detail or "")
    )


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _same_origin(url: str, directory: str) -> bool:
    """An account URL must be an http(s) URL on the directory's own scheme and host."""
    from urllib.parse import urlsplit

    a, b = urlsplit(url), urlsplit(directory)
    return (
        bool(url)
        and a.scheme in ("http", "https")
        and (a.scheme, a.netloc)
        == (
            b.scheme,
            b.netloc,
        )
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
