"""ACME Renewal Information (RFC 9773): the CA's suggested window for a certificate,
and how soon to ask again (its Retry-After). A CA without `renewalInfo` has none.

Side effects: network (the CA).
"""

from __future__ import annotations

import base64
import datetime as dt

from acme import messages
from cryptography import x509

from ..model import RenewalWindow
from .problems import retry_after_seconds
from .session import Session


class RenewalInfo:
    def __init__(self, session: Session) -> None:
        self.s = session

    def window(self, cert_pem: bytes) -> RenewalWindow | None:
        with self.s.translated("renewal info"):
            acme = self.s.directory_client()
            try:
                base = acme.directory["renewalInfo"]
            except KeyError:
                return None
            cert = x509.load_pem_x509_certificate(cert_pem)
            resp = acme.net.get(f"{base.rstrip('/')}/{ari_cert_id(cert)}")
            info = messages.RenewalInfo.from_json(resp.json())
            window = info.suggested_window
            wait = retry_after_seconds(resp, 0.0)
            now = dt.datetime.now(dt.UTC)
            next_check = now + dt.timedelta(seconds=wait) if wait > 0 else None
            url = getattr(info, "explanation_url", None)
            return RenewalWindow(
                _aware(window.start), _aware(window.end), str(url) if url else None, next_check
            )


def ari_cert_id(cert: x509.Certificate) -> str:
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


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
