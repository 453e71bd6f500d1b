"""Small fakes behind certagent's own ports, for socket-free unit tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certagent.challenges import SolverFor
from certagent.model import OrderOptions, RenewalWindow
from testbed import pki


class LocalIssuer:
    """Signs CSRs with a throw-away CA; satisfies context.Issuer."""

    label = "https://ca.invalid/dir"  # the directory of the unit tests' configs

    def __init__(self, lifetime: dt.timedelta = dt.timedelta(days=90)) -> None:
        self.ca = pki.make_ca("fake issuing CA")
        self.lifetime = lifetime
        self.orders = 0
        self.window: RenewalWindow | None = None

    def issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes:
        self.orders += 1
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + self.lifetime)
            .add_extension(san, critical=False)
            .sign(self.ca.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.ca.pem()

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None:
        return self.window


def minimal_yaml(tmp_path: Path, top: str = "", cert: str = "") -> str:
    """One certificate `www` on a webroot, a CA nobody calls, state under tmp_path;
    `top` adds top-level lines, `cert` lines under `www` (each ending in a newline)."""
    return (
        f"state_dir: {tmp_path / 'state'}\n"
        "ca: {directory: https://ca.invalid/dir}\n"
        f"{top}"
        "certificates:\n"
        "  www:\n"
        "    names: [www.example.test]\n"
        f"    challenge: {{type: http-01, webroot: {tmp_path}}}\n"
        f"{cert}"
    )


def fleet_file(tmp_path: Path, count: int) -> Path:
    """A configuration of `count` certificates c0..c<count-1> (http-01 webroot from
    `defaults`, state under tmp_path/state), written to tmp_path/c.yaml."""
    lines = [f"state_dir: {tmp_path / 'state'}", "ca: {directory: https://ca.invalid/dir}",
             f"defaults: {{challenge: {{type: http-01, webroot: {tmp_path}}}}}",
             "certificates:"]  # fmt: skip
    lines += [f"  c{i}: {{names: [c{i}.example.test]}}" for i in range(count)]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
