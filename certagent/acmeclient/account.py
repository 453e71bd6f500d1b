"""The ACME account (RFC 8555 section 7.3): found from account.json when it is sound,
else looked up at the CA by our key (onlyReturnExisting), else registered (contacts,
terms of service, external account binding); and its life cycle: revoke with it,
show it, deactivate it, roll its key over.

Side effects: network (the CA), filesystem (account.json, the key, 0600).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

from acme import client, errors, jws, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from .. import crypto, layout
from ..errors import OrderFailed
from ..store import atomic_write
from .problems import TermsNotAgreed, code
from .session import Session
from .transport import Raw

log = logging.getLogger(__name__)


class Accounts:
    def __init__(self, session: Session) -> None:
        self.s = session

    def signed_in(self, register: bool = False) -> client.ClientV2:
        """This thread's client, signed in with the account of our key. One thread finds
        or registers it (under the lock); the others use it."""
        s = self.s
        acme = s.directory_client()
        if acme.net.account is not None and not register:
            return acme
        with s.lock:
            s.health.still_up()
            # (after the CA forgot the account, a thread that finds it registered anew
            # by another since its own order was refused uses that one)
            if s.regr is not None and (not register or s.regr is not acme.net.account):
                acme.net.account = s.regr
                return acme
            try:
                with s.translated("account"):
                    return self._found(acme, register)
            except OrderFailed as exc:
                s.health.trip(exc, s.ca_wide)  # under the lock: the waiting threads see it
                raise

    def _found(self, acme: client.ClientV2, register: bool) -> client.ClientV2:
        s = self.s
        regr_file = s.folder / layout.ACCOUNT
        if not register:
            stored = self._stored(regr_file)
            if stored is not None:
                acme.net.account = s.regr = stored
                return acme
        acme.net.account = None
        s.account_key()
        # A key made in this run has no account anywhere; one the CA just said it does
        # not know (`register`) is not looked up again.
        regr = None if s.new_key or register else self._find_existing(acme)
        if regr is None:
            regr = self._register(acme)
            log.info("registered ACME account %s", regr.uri)
        else:
            log.warning("recovered the ACME account %s of our key from the CA", regr.uri)
        acme.net.account = s.regr = regr
        record = {"directory": s.ca.directory, "registration": regr.to_json()}
        atomic_write(regr_file, json.dumps(record, indent=2).encode(), 0o600)
        return acme

    def _stored(self, path: Path) -> messages.RegistrationResource | None:
        """account.json if it is for this CA and names an account URL on its host."""
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("directory") != self.s.ca.directory:
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
        if not same_origin(regr.uri or "", self.s.ca.directory):
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
            if code(exc) == "accountDoesNotExist":
                return None
            raise
        # A CA that ignored onlyReturnExisting created or returned the account: use it.
        account: messages.RegistrationResource | None = acme.net.account
        return account if account is not None and account.uri else None

    def _located(self, exc: errors.ConflictError) -> messages.RegistrationResource:
        location = getattr(exc, "location", "") or ""
        if not same_origin(location, self.s.ca.directory):
            raise OrderFailed(self.s.label, f"the CA named no usable account URL ({location!r})")
        return messages.RegistrationResource(body=messages.Registration(), uri=location)

    def _register(self, acme: client.ClientV2) -> messages.RegistrationResource:
        ca = self.s.ca
        key = self.s.account_key()
        eab = None
        if ca.eab is not None:
            eab = messages.ExternalAccountBinding.from_data(
                key.public_key(), ca.eab.kid, ca.eab.hmac_key, acme.directory
            )
        meta = getattr(acme.directory, "meta", None)
        tos = getattr(meta, "terms_of_service", None)
        if tos and not ca.agree_tos:
            raise TermsNotAgreed(
                self.s.label,
                f"registering an account needs the CA's terms of service, {tos}: read them, "
                "then set ca.agree_tos: true (nothing was registered)",
            )
        new = messages.NewRegistration.from_data(
            contact=ca.contact,
            terms_of_service_agreed=True if tos else None,
            external_account_binding=eab,
        )
        try:
            return acme.new_account(new)
        except errors.ConflictError as exc:
            # The key already has an account (RFC 8555 section 7.3.1): its URL is the
            # Location header, which the library keeps in `location`.
            return self._located(exc)

    # -- life cycle: revoke, show, deactivate, roll over (RFC 8555 7.6, 7.3.5, 7.3.6) --

    def revoke(self, cert_pem: bytes, reason: int) -> None:
        """Revoke a certificate we were issued, signed with our account key."""
        with self.s.translated("revocation"):
            acme = self.signed_in()
            acme.revoke(x509.load_pem_x509_certificate(cert_pem), reason)

    def show(self) -> dict[str, object]:
        """The account as the CA holds it: URL, status, contacts (no key material)."""
        with self.s.translated("account"):
            acme = self.signed_in()
            regr = registered(acme)
            try:  # POST-as-GET (RFC 8555 section 6.3); some servers want an empty update
                resp = self.s.post_as_get(acme, regr.uri)
            except messages.Error:
                resp = acme.net.post(regr.uri, Raw({}),
                                     new_nonce_url=acme.directory["newNonce"])  # fmt: skip
            body = resp.json()
            meta = getattr(acme.directory, "meta", None)
            return {
                "url": regr.uri,
                "status": body.get("status"),
                "contact": list(body.get("contact") or []),
                "orders": body.get("orders"),
                "key_thumbprint": thumbprint(self.s.account_key()),
                "caa_identities": list(getattr(meta, "caa_identities", None) or []),
            }

    def deactivate(self) -> str:
        """Deactivate the account for good; returns its URL. Our key is kept."""
        with self.s.translated("account deactivation"):
            acme = self.signed_in()
            regr = registered(acme)
            acme.deactivate_registration(regr)
            folder = self.s.folder
            (folder / layout.ACCOUNT).rename(
                folder / f"{layout.ACCOUNT}.deactivated-{_utcnow():%Y%m%dT%H%M%SZ}"
            )
            return str(regr.uri)

    def rollover(self) -> str:
        """Replace the account key (keyChange): the new key is written aside first, the CA
        is told, then it takes the old one's place (which is kept as key.pem.old-<time>)."""
        with self.s.translated("account key rollover"):
            acme = self.signed_in()
            old_key = self.s.account_key()
            new_pem = crypto.key_pem(ec.generate_private_key(ec.SECP256R1()))
            folder = self.s.folder
            pending = folder / f"{layout.ACCOUNT_KEY}.new"
            atomic_write(pending, new_pem, 0o600)  # a kill from here keeps both keys
            new_key = JWKEC(key=crypto.load_key(new_pem))
            url = acme.directory["keyChange"]
            inner = jws.JWS.sign(
                json.dumps({"account": registered(acme).uri,
                            "oldKey": old_key.public_key().to_partial_json()}).encode(),
                key=new_key, alg=ES256, nonce=None, url=url,
            )  # fmt: skip
            acme.net.post(url, Raw(inner.to_partial_json()),
                          new_nonce_url=acme.directory["newNonce"])  # fmt: skip
            key_file = folder / layout.ACCOUNT_KEY
            key_file.rename(folder / f"{layout.ACCOUNT_KEY}.old-{_utcnow():%Y%m%dT%H%M%SZ}")
            pending.rename(key_file)
            self.s.forget()
            return thumbprint(new_key)

    def thumbprint(self) -> str:
        return thumbprint(self.s.account_key())


def registered(acme: client.ClientV2) -> messages.RegistrationResource:
    account: messages.RegistrationResource | None = acme.net.account
    if account is None or not account.uri:
        raise OrderFailed("ACME", "no account")  # Accounts.client() always sets one
    return account


def thumbprint(key: JWK) -> str:
    """RFC 7638 thumbprint of the public key, base64url: names the key, reveals nothing."""
    return base64.urlsafe_b64encode(key.thumbprint()).decode().rstrip("=")


def same_origin(url: str, directory: str) -> bool:
    """An account URL must be an http(s) URL on the directory's own scheme and host."""
    a, b = urlsplit(url), urlsplit(directory)
    return bool(url) and a.scheme in ("http", "https") and (a.scheme, a.netloc) == (
        b.scheme, b.netloc)  # fmt: skip


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
