"""A small ACME server in the test's own process (RFC 8555, with RFC 9773's renewal
information and `replaces`, and profiles), answering certagent's ACME client through
its transport port (`acmeclient.transport.Wire`): no socket, no thread, no clock of
its own. As lego tests its services against an in-process server, the client's
behaviour (nonces, Retry-After, problem documents, the breaker, ARI) is tested here
beside the real-server tests against pebble, step-ca and acme2certifier.

The JWS is read (protected header, payload, nonce, url) but not verified: what is
tested is the client, not the fake. Challenges are valid as soon as they are answered,
after `solver.present` was called with the key authorization; `faults` lets a test
answer a request its own way first.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from testbed import pki

BASE = "https://acme.test"
DIRECTORY = f"{BASE}/directory"

Answer = tuple[int, dict[str, str], bytes]
Fault = Callable[[str, str, "Request"], Answer | None]  # (method, path, request) -> answer


@dataclass
class Request:
    """One request as the fake read it."""

    method: str
    path: str
    protected: dict[str, Any] = field(default_factory=dict)
    payload: Any = None  # None: a POST-as-GET (empty payload) or a GET


def problem(status: int, kind: str, detail: str, **headers: str) -> Answer:
    body = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail, "status": status}
    return (
        status,
        {"Content-Type": "application/problem+json", **headers},
        json.dumps(body).encode(),
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeAcme:
    """The server: call it as the client's wire, `fake(method, url, headers, body)`."""

    def __init__(
        self,
        *,
        ari: bool = True,
        profiles: Mapping[str, str] | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=90),
        terms: str | None = None,
    ) -> None:
        self.ca = pki.make_ca("fake ACME CA")
        self.ari = ari
        self.profiles = dict(profiles or {})
        self.lifetime = lifetime
        self.terms = terms
        self.faults: list[Fault] = []  # asked first, in order; None lets the request through
        self.log: list[Request] = []
        self.window: tuple[dt.datetime, dt.datetime] | None = None  # ARI's suggestion
        self.ari_retry_after = 21600
        self.replaced: set[str] = set()  # ARI ids already replaced by an order
        self.revoked: list[int] = []
        self.date: dt.datetime | None = None  # the CA's clock in its Date header
        self._ids = itertools.count(1)
        self._nonces: set[str] = set()
        self.accounts: dict[str, dict[str, Any]] = {}  # url -> account
        self._by_key: dict[str, str] = {}  # JWK thumbprint -> account url
        self.orders: dict[str, dict[str, Any]] = {}
        self.authzs: dict[str, dict[str, Any]] = {}
        self.challenges: dict[str, tuple[str, dict[str, Any]]] = {}  # url -> (authz, chall)
        self.certs: dict[str, bytes] = {}

    # -- the wire --------------------------------------------------------------------

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        path = url.removeprefix(BASE)
        request = Request(method, path)
        if method == "POST":
            jws = json.loads(body or b"{}")
            request.protected = json.loads(_unb64(jws["protected"]))
            raw = _unb64(jws["payload"])
            request.payload = json.loads(raw) if raw else None
        self.log.append(request)
        for fault in list(self.faults):
            answer = fault(method, path, request)
            if answer is not None:
                return self._nonced(answer)
        return self._nonced(self._route(request))

    def count(self, path_start: str, method: str = "POST") -> int:
        return sum(1 for r in self.log if r.method == method and r.path.startswith(path_start))

    def _nonced(self, answer: Answer) -> Answer:
        status, headers, body = answer
        nonce = _b64(next(self._ids).to_bytes(8, "big") + b"nonce")
        self._nonces.add(nonce)
        dated = {"Date": email.utils.format_datetime(self.date, usegmt=True)} if self.date else {}
        return status, {"Replay-Nonce": nonce, "Cache-Control": "no-store", **dated,
                        **headers}, body  # fmt: skip

    def _route(self, r: Request) -> Answer:
        if r.path == "/directory":
            return self._json(200, self.directory())
        if r.path == "/new-nonce":
            return 200 if r.method == "HEAD" else 204, {}, b""
        if r.path.startswith("/renewal-info/") and r.method == "GET":
            return self._renewal_info(r.path.rsplit("/", 1)[1])
        if r.method != "POST":
            return problem(405, "malformed", f"{r.method} {r.path}")
        nonce = r.protected.get("nonce")
        if nonce not in self._nonces:
            return problem(400, "badNonce", "unknown nonce")
        self._nonces.discard(nonce)
        if r.protected.get("url") != BASE + r.path:
            return problem(400, "unauthorized", "the JWS url is not the request's")
        if r.path == "/new-account":
            return self._new_account(r)
        account = self.accounts.get(r.protected.get("kid", ""))
        if account is None:
            return problem(400, "accountDoesNotExist", "no such account")
        if account["status"] != "valid":
            return problem(401, "unauthorized", "the account is deactivated")
        route = r.path.split("/")[1]
        handler = {
            "acct": self._account,
            "new-order": self._new_order,
            "order": self._order,
            "authz": self._authz,
            "chall": self._challenge,
            "cert": self._cert,
            "revoke-cert": self._revoke,
            "key-change": self._key_change,
        }.get(route)
        if handler is None:
            return problem(404, "malformed", f"no resource {r.path}")
        return handler(r, account)

    # -- resources ---------------------------------------------------------------------

    def directory(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "newNonce": f"{BASE}/new-nonce",
            "newAccount": f"{BASE}/new-account",
            "newOrder": f"{BASE}/new-order",
            "revokeCert": f"{BASE}/revoke-cert",
            "keyChange": f"{BASE}/key-change",
        }
        if self.ari:
            d["renewalInfo"] = f"{BASE}/renewal-info"
        meta: dict[str, Any] = {}
        if self.terms:
            meta["termsOfService"] = self.terms
        if self.profiles:
            meta["profiles"] = self.profiles
        if meta:
            d["meta"] = meta
        return d

    def _new_account(self, r: Request) -> Answer:
        jwk = r.protected.get("jwk")
        if not isinstance(jwk, dict):
            return problem(400, "malformed", "newAccount needs a jwk")
        thumb = _thumb(jwk)
        payload = r.payload or {}
        url = self._by_key.get(thumb)
        if url is not None:
            return self._json(200, self.accounts[url], Location=url)
        if payload.get("onlyReturnExisting"):
            return problem(400, "accountDoesNotExist", "no account for this key")
        if self.terms and not payload.get("termsOfServiceAgreed"):
            return problem(403, "userActionRequired", "agree to the terms of service")
        url = f"{BASE}/acct/{next(self._ids)}"
        self.accounts[url] = {"status": "valid", "contact": payload.get("contact", []),
                              "orders": f"{url}/orders", "key": jwk}  # fmt: skip
        self._by_key[thumb] = url
        return self._json(201, self._public(url), Location=url)

    def _public(self, url: str) -> dict[str, Any]:
        return {k: v for k, v in self.accounts[url].items() if k != "key"}

    def _account(self, r: Request, account: dict[str, Any]) -> Answer:
        url = BASE + r.path
        if r.payload and r.payload.get("status") == "deactivated":
            account["status"] = "deactivated"
        elif r.payload and "contact" in r.payload:
            account["contact"] = r.payload["contact"]
        return self._json(200, self._public(url), Location=url)

    def _key_change(self, r: Request, account: dict[str, Any]) -> Answer:
        inner = r.payload or {}
        protected = json.loads(_unb64(inner["protected"]))
        new_key = protected["jwk"]
        old_url = r.protected["kid"]
        thumb = _thumb(new_key)
        if thumb in self._by_key:
            return problem(
                409, "malformed", "that key has an account", Location=self._by_key[thumb]
            )
        self._by_key = {k: v for k, v in self._by_key.items() if v != old_url}
        self._by_key[thumb] = old_url
        account["key"] = new_key
        return self._json(200, self._public(old_url))

    def _new_order(self, r: Request, account: dict[str, Any]) -> Answer:
        payload = r.payload or {}
        replaces = payload.get("replaces")
        if replaces is not None and replaces in self.replaced:
            return problem(409, "alreadyReplaced", f"{replaces} was already replaced")
        profile = payload.get("profile")
        if profile and profile not in self.profiles:
            return problem(400, "invalidProfile", f"no profile {profile}")
        url = f"{BASE}/order/{next(self._ids)}"
        authzs = [self._new_authz(ident) for ident in payload.get("identifiers", [])]
        self.orders[url] = {
            "status": "pending",
            "expires": _time(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
            "identifiers": payload.get("identifiers", []),
            "authorizations": authzs,
            "finalize": f"{url}/finalize",
            **({"profile": profile} if profile else {}),
            **({"replaces": replaces} if replaces else {}),
        }
        return self._json(201, self.orders[url], Location=url)

    def _new_authz(self, ident: dict[str, str]) -> str:
        url = f"{BASE}/authz/{next(self._ids)}"
        challenges = []
        kinds = ("http-01", "tls-alpn-01") if ident["type"] == "ip" else (
            "http-01", "dns-01", "tls-alpn-01")  # fmt: skip
        for kind in kinds:
            chall_url = f"{BASE}/chall/{next(self._ids)}"
            token = _b64(hashlib.sha256(chall_url.encode()).digest())
            chall = {"type": kind, "url": chall_url, "token": token, "status": "pending"}
            challenges.append(chall)
            self.challenges[chall_url] = (url, chall)
        self.authzs[url] = {
            "status": "pending",
            "identifier": ident,
            "challenges": challenges,
            "expires": _time(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
        }
        return url

    def _authz(self, r: Request, account: dict[str, Any]) -> Answer:
        authz = self.authzs.get(BASE + r.path)
        return problem(404, "malformed", "no authz") if authz is None else self._json(200, authz)

    def _challenge(self, r: Request, account: dict[str, Any]) -> Answer:
        found = self.challenges.get(BASE + r.path)
        if found is None:
            return problem(404, "malformed", "no challenge")
        authz_url, chall = found
        if r.payload is not None:  # answered ({}): valid at once
            chall["status"] = "valid"
            self.authzs[authz_url]["status"] = "valid"
            for order in self.orders.values():
                if order["status"] == "pending" and all(
                    self.authzs[a]["status"] == "valid" for a in order["authorizations"]
                ):
                    order["status"] = "ready"
        return self._json(200, chall, Link=f'<{authz_url}>;rel="up"')

    def _order(self, r: Request, account: dict[str, Any]) -> Answer:
        if r.path.endswith("/finalize"):
            return self._finalize(BASE + r.path.removesuffix("/finalize"), r)
        order = self.orders.get(BASE + r.path)
        if order is None:
            return problem(404, "malformed", "no order")
        return self._json(200, order, Location=BASE + r.path)

    def _finalize(self, url: str, r: Request) -> Answer:
        order = self.orders[url]
        if order["status"] != "ready":
            return problem(403, "orderNotReady", f"the order is {order['status']}")
        csr = x509.load_der_x509_csr(_unb64((r.payload or {})["csr"]))
        now = dt.datetime.now(dt.UTC)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + self.lifetime)
            .add_extension(san, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key()),
                critical=False,
            )
            .sign(self.ca.key, hashes.SHA256())
        )
        cert_url = f"{BASE}/cert/{next(self._ids)}"
        self.certs[cert_url] = cert.public_bytes(serialization.Encoding.PEM) + self.ca.pem()
        order.update(status="valid", certificate=cert_url)
        if "replaces" in order:
            self.replaced.add(order["replaces"])
        return self._json(200, order, Location=url)

    def _cert(self, r: Request, account: dict[str, Any]) -> Answer:
        chain = self.certs.get(BASE + r.path)
        if chain is None:
            return problem(404, "malformed", "no certificate")
        return 200, {"Content-Type": "application/pem-certificate-chain"}, chain

    def _revoke(self, r: Request, account: dict[str, Any]) -> Answer:
        der = _unb64((r.payload or {})["certificate"])
        self.revoked.append(x509.load_der_x509_certificate(der).serial_number)
        return 200, {}, b""

    def _renewal_info(self, cert_id: str) -> Answer:
        if not self.ari:
            return problem(404, "malformed", "no renewal information here")
        now = dt.datetime.now(dt.UTC)
        start, end = self.window or (now + dt.timedelta(days=30), now + dt.timedelta(days=32))
        body = {"suggestedWindow": {"start": _time(start), "end": _time(end)}}
        return self._json(200, body, **{"Retry-After": str(self.ari_retry_after)})

    @staticmethod
    def _json(status: int, body: Any, **headers: str) -> Answer:
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


def _thumb(jwk: Mapping[str, Any]) -> str:
    return json.dumps({k: jwk[k] for k in sorted(jwk)}, sort_keys=True)


def _time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def once(path_start: str, answer: Answer, method: str = "POST") -> Fault:
    """A fault that answers the first matching request with `answer`, then lets go."""
    fired = False

    def fault(m: str, path: str, request: Request) -> Answer | None:
        nonlocal fired
        if fired or m != method or not path.startswith(path_start):
            return None
        fired = True
        return answer

    return fault


def always(path_start: str, answer: Answer, method: str | None = None) -> Fault:
    """A fault that answers every matching request with `answer`."""

    def fault(m: str, path: str, request: Request) -> Answer | None:
        if (method is None or m == method) and path.startswith(path_start):
            return answer
        return None

    return fault
