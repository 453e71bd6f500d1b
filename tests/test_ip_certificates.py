"""Acceptance: IP address certificates (RFC 8738, issue #25) against a real pebble: an
`ip` identifier validated by http-01 and by tls-alpn-01 (the CA's SNI is the reverse
name), the certificate carrying an iPAddress SAN, and `check` judging an IP endpoint
(no SNI). dns-01 is refused for an IP at config time."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certagent import api, config
from certagent.errors import ConfigError
from certagent.store import Store
from testbed.pebble import Pebble

from .test_deploy_nginx import pebble_root as pebble_root

pytestmark = pytest.mark.integration


def write(tmp_path: Path, pebble: Pebble, names: list[str], challenge: dict[str, object]) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": pebble.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(pebble.tls_root)]},
        "certificates": {"ip": {"names": names, "challenge": challenge}},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def sans(tmp_path: Path) -> tuple[list[str], list[str]]:
    live = Store(tmp_path / "state").current("ip")
    assert live is not None
    cert = x509.load_pem_x509_certificate((live.path / "cert.pem").read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return alt.get_values_for_type(x509.DNSName), [
        str(ip) for ip in alt.get_values_for_type(x509.IPAddress)
    ]


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Serve a release's certificate on 127.0.0.1 (a TLS server that needs no SNI)."""
    servers: list[ssl.SSLSocket] = []

    def start(release: Path) -> int:
        import socket

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(release / "fullchain.pem", release / "privkey.pem")
        sock = socket.create_server(("127.0.0.1", 0))
        tls = ctx.wrap_socket(sock, server_side=True)
        servers.append(tls)

        def serve() -> None:
            while True:
                try:
                    conn, _ = tls.accept()
                except ssl.SSLError:
                    continue  # a client that gave up: serve the next
                except OSError:
                    return  # closed
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return int(tls.getsockname()[1])

    yield start
    for s in servers:
        s.close()


def test_an_ip_certificate_by_http_01_and_checked_without_sni(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, serving, run  # type: ignore[no-untyped-def]
) -> None:
    challenge = {"type": "http-01",
                 "standalone": {"address": "127.0.0.1", "port": pebble.http_port}}  # fmt: skip
    path = write(tmp_path, pebble, ["127.0.0.1", "www.example.test"], challenge)
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 0, result.out + result.err
    dns, ips = sans(tmp_path)
    assert ips == ["127.0.0.1"] and dns == ["www.example.test"]  # an iPAddress SAN
    live = Store(tmp_path / "state").current("ip")
    assert live is not None and set(live.names) == {"127.0.0.1", "www.example.test"}
    port = serving(live.path)
    checked = run("check", "-H", f"127.0.0.1:{port}", "--trust-root", str(pebble_root))
    assert checked.code == 0, checked.out  # verified against the IP SAN, no SNI sent
    assert "CERTAGENT OK" in checked.out
    planned = api.plan_run(api.load_config(str(path)))
    assert not planned.results[0].decision.due  # the renewal window logic as for names


def test_an_ip_certificate_by_tls_alpn_01(tmp_path: Path, pebble: Pebble, run) -> None:  # type: ignore[no-untyped-def]
    challenge = {"type": "tls-alpn-01",
                 "standalone": {"address": "127.0.0.1", "port": pebble.tls_port}}  # fmt: skip
    path = write(tmp_path, pebble, ["127.0.0.1"], challenge)
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 0, result.out + result.err
    assert sans(tmp_path) == ([], ["127.0.0.1"])


def parse(tmp_path: Path, name: str, challenge: str) -> config.Config:
    text = (f"state_dir: {tmp_path / 'state'}\n"
            "ca: {directory: https://ca.invalid/dir}\n"
            "certificates:\n"
            "  ip:\n"
            f"    names: ['{name}']\n"
            f"    challenge: {challenge}\n")  # fmt: skip
    return config.parse(text, tmp_path / "c.yaml")


@pytest.mark.parametrize("given,canonical", [("127.0.0.1", "127.0.0.1"),
                                             ("2001:DB8:0:0::1", "2001:db8::1")])  # fmt: skip
def test_ip_names_are_canonical_and_dns_01_is_refused(
    tmp_path: Path, given: str, canonical: str
) -> None:
    webroot = f"{{type: http-01, webroot: {tmp_path}}}"
    cfg = parse(tmp_path, given, webroot)
    assert cfg.certificates[0].names == (canonical,)
    assert ipaddress.ip_address(canonical)
    key = tmp_path / "tsig.key"
    key.write_text('key "k" { algorithm hmac-sha256; secret "c2VjcmV0"; };\n')
    rfc2136 = f"{{type: dns-01, rfc2136: {{server: 127.0.0.1, tsig_key_file: {key}}}}}"
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, given, rfc2136)
    assert "dns-01 cannot validate it" in str(caught.value)


def test_an_all_numeric_last_label_is_neither(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, "1.2.3", f"{{type: http-01, webroot: {tmp_path}}}")
    assert "all-numeric label" in str(caught.value) and "names[0]" in str(caught.value)
