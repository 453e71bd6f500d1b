"""Keys, CSRs and certificate facts, through `cryptography`.

Side effects: none (pure functions over bytes).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .model import KeyType

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = int(key_type.value.split("-")[1])
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_type_of(key: PrivateKey) -> KeyType | None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}.get(key.curve.name)
    return {2048: KeyType.RSA_2048, 3072: KeyType.RSA_3072, 4096: KeyType.RSA_4096}.get(
        key.key_size
    )


def jwk_to_pem(text: str) -> bytes:
    """A private JWK (RFC 7517; certbot's private_key.json) as PKCS#8 PEM."""
    import base64
    import json

    jwk = json.loads(text)

    def num(name: str) -> int:
        raw = str(jwk[name])
        return int.from_bytes(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), "big")

    key: PrivateKey
    if jwk.get("kty") == "RSA":
        public = rsa.RSAPublicNumbers(num("e"), num("n"))
        key = rsa.RSAPrivateNumbers(
            num("p"), num("q"), num("d"), num("dp"), num("dq"), num("qi"), public
        ).private_key()
    elif jwk.get("kty") == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[str(jwk["crv"])]
        point = ec.EllipticCurvePublicNumbers(num("x"), num("y"), curve)
        key = ec.EllipticCurvePrivateNumbers(num("d"), point).private_key()
    else:
        raise ValueError(f"unsupported JWK key type {jwk.get('kty')!r}")
    return key_pem(key)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return key


def ip_of(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a name is, when it is an IP address (RFC 8738), else None."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def san(name: str) -> x509.GeneralName:
    """A name as a subjectAltName: an iPAddress for an IP address, else a dNSName."""
    ip = ip_of(name)
    return x509.IPAddress(ip) if ip is not None else x509.DNSName(name)


def make_csr(key: PrivateKey, names: tuple[str, ...]) -> bytes:
    """A CSR with every name as a SAN (IP addresses as iPAddress, RFC 8738 section 3);
    the first DNS name is also the CN (RFC 8555 section 7.4; an IP gets none)."""
    builder = x509.CertificateSigningRequestBuilder()
    cn = next((n for n in names if ip_of(n) is None), None)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn and len(cn) <= 64 else []
    builder = builder.subject_name(x509.Name(subject))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([san(n) for n in names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertFacts:
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    issuer: str
    serial: int


def facts(cert_pem: bytes) -> CertFacts:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return facts_of(cert)


def facts_of(cert: x509.Certificate) -> CertFacts:
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = (str(ip) for ip in alt.get_values_for_type(x509.IPAddress))
        names = (*alt.get_values_for_type(x509.DNSName), *ips)
    except x509.ExtensionNotFound:
        names = ()
    return CertFacts(
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=fingerprint(cert),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
    )


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def split_pem_chain(fullchain: bytes) -> list[bytes]:
    """Split a PEM bundle into its certificates, leaf first (RFC 8555 section 9.1)."""
    certs = x509.load_pem_x509_certificates(fullchain)
    return [c.public_bytes(serialization.Encoding.PEM) for c in certs]


def key_matches(key: PrivateKey, cert_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, spki) == cert.public_key().public_bytes(enc, spki)


ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier


def alpn_certificate(domain: str, key_authorization: str) -> tuple[bytes, bytes]:
    """The tls-alpn-01 validation certificate (RFC 8737 section 3): self-signed, the one
    name (an iPAddress for an IP identifier, RFC 8738 section 6), and the critical
    acmeIdentifier extension holding the SHA-256 of the key
    authorization as a DER OCTET STRING. Returns (certificate, key) in PEM."""
    import hashlib

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    identifier = x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest)
    return _self_signed(key, domain[:64], (domain,), identifier), key_pem(key)


def placeholder_certificate(key: PrivateKey, names: tuple[str, ...]) -> bytes:
    """A throwaway self-signed certificate for `names` with `key` (PEM): what a config
    test reads before the first issuance. It is never deployed or served."""
    return _self_signed(key, "certagent config test", names)


def _self_signed(
    key: PrivateKey,
    common_name: str,
    names: tuple[str, ...],
    critical: x509.ExtensionType | None = None,
) -> bytes:
    """A self-signed certificate valid for a day (PEM), with `names` as SANs and an
    optional critical extension."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san(n) for n in names]), critical=False)
    )
    if critical is not None:
        builder = builder.add_extension(critical, critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
